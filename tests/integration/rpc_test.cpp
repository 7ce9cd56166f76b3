// The service framework and the bus against a real nats-server: typed request/reply, errors,
// no-responders vs timeout, JSON, bad input, reconnect, and JetStream.

#include <atomic>
#include <catch2/catch.hpp>
#include <future>
#include <thread>

#include "echo_handlers.h"
#include "harness.h"
#include "muon/common/bus.h"
#include "muon/common/log.h"
#include "muon/common/service.h"
#include "muon/echo/v1/echo.pb.h"

using namespace std::chrono_literals;
using muon::bus::BusErrc;

namespace {

struct EchoFixture {
  muon::testing::NatsServer nats;
  std::unique_ptr<muon::bus::Connection> server_conn =
      muon::bus::Connection::Connect({.url = nats.url(), .name = "echo-under-test"});
  std::unique_ptr<muon::bus::Connection> client =
      muon::bus::Connection::Connect({.url = nats.url(), .name = "test-client"});
  std::unique_ptr<muon::Service> service;

  explicit EchoFixture(std::string release = "") {
    REQUIRE(server_conn->WaitConnected(5s));
    REQUIRE(client->WaitConnected(5s));
    auto options = muon::echo::DefaultOptions();
    options.release = std::move(release);
    options.concurrency = 2;
    service = std::make_unique<muon::Service>(*server_conn, options);
    muon::echo::EchoSettings settings;
    settings.max_sleep = 5s;
    muon::echo::RegisterEndpoints(*service, settings);
    service->Start();
  }
};

muon::echo::v1::EchoResponse CallEcho(muon::bus::Connection& conn, const std::string& subject,
                                      const std::string& message) {
  muon::echo::v1::EchoRequest request;
  request.set_message(message);
  muon::echo::v1::EchoResponse response;
  muon::Call(conn, subject, request, response, 2s);
  return response;
}

}  // namespace

TEST_CASE("typed request and reply through the framework", "[rpc]") {
  EchoFixture f;
  auto response = CallEcho(*f.client, "svc.echo.Echo", "hello");
  CHECK(response.message() == "hello");
  CHECK(response.instance() == f.service->id());
}

TEST_CASE("a release label adds ver.<service>.<release> subjects", "[rpc]") {
  EchoFixture f("v7");
  CHECK(CallEcho(*f.client, "ver.echo.v7.Echo", "pinned").message() == "pinned");
  CHECK(CallEcho(*f.client, "svc.echo.Echo", "live").message() == "live");
  muon::bus::Msg reply;
  CHECK(f.client->Request("ver.echo.v8.Echo", "", {}, 1s, reply) == BusErrc::kNoResponders);
}

TEST_CASE("handler errors arrive as the platform error shape with ADR-32 headers", "[rpc]") {
  EchoFixture f;
  muon::echo::v1::SleepRequest request;
  request.set_milliseconds(60000);  // over max_sleep: the handler throws BadRequest

  muon::bus::Msg reply;
  REQUIRE_FALSE(f.client->Request("svc.echo.Sleep", request.SerializeAsString(), {}, 2s, reply));
  REQUIRE(reply.Header("Nats-Service-Error-Code") == std::optional<std::string_view>("400"));
  CHECK(reply.Header("Nats-Service-Error") ==
        std::optional<std::string_view>("milliseconds must be at most 5000"));
  muon::common::v1::Error error;
  REQUIRE(error.ParseFromArray(reply.data().data(), static_cast<int>(reply.data().size())));
  CHECK(error.id() == "echo.Sleep");
  CHECK(error.code() == 400);
  CHECK(error.status() == "Bad Request");
  CHECK(error.detail() == "milliseconds must be at most 5000");

  // The client helper turns the same reply into a muon::Error.
  muon::echo::v1::SleepResponse response;
  try {
    muon::Call(*f.client, "svc.echo.Sleep", request, response, 2s);
    FAIL("expected an error");
  } catch (const muon::Error& e) {
    CHECK(e.code() == 400);
    CHECK(e.detail() == "milliseconds must be at most 5000");
  }
}

TEST_CASE("no responders and timeout are distinct errors", "[rpc]") {
  EchoFixture f;
  muon::bus::Msg reply;
  const auto start = std::chrono::steady_clock::now();
  CHECK(f.client->Request("svc.nobody.Echo", "", {}, 5s, reply) == BusErrc::kNoResponders);
  // No responders is known at once, not after the timeout.
  CHECK(std::chrono::steady_clock::now() - start < 2s);

  muon::echo::v1::SleepRequest slow;
  slow.set_milliseconds(1000);
  CHECK(f.client->Request("svc.echo.Sleep", slow.SerializeAsString(), {}, 100ms, reply) ==
        BusErrc::kTimeout);

  muon::echo::v1::SleepResponse response;
  try {
    muon::Call(*f.client, "svc.nobody.Echo", slow, response, 1s);
    FAIL("expected an error");
  } catch (const muon::Error& e) {
    CHECK(e.code() == 503);
  }
  try {
    muon::Call(*f.client, "svc.echo.Sleep", slow, response, 100ms);
    FAIL("expected an error");
  } catch (const muon::Error& e) {
    CHECK(e.code() == 504);
  }
}

TEST_CASE("an unknown method has no subscription", "[rpc]") {
  EchoFixture f;
  muon::bus::Msg reply;
  CHECK(f.client->Request("svc.echo.NoSuchMethod", "", {}, 2s, reply) == BusErrc::kNoResponders);
}

TEST_CASE("a malformed protobuf request gets a 400 error reply and the service keeps serving",
          "[rpc]") {
  EchoFixture f;
  muon::bus::Msg reply;
  // Field 1 declared as a length-delimited string of 100 bytes, with 2 bytes present.
  const std::string garbage("\x0a\x64\x41\x41", 4);
  REQUIRE_FALSE(f.client->Request("svc.echo.Echo", garbage, {}, 2s, reply));
  CHECK(reply.Header("Nats-Service-Error-Code") == std::optional<std::string_view>("400"));
  CHECK(std::string(reply.Header("Nats-Service-Error").value_or(""))
            .find("muon.echo.v1.EchoRequest") != std::string::npos);
  CHECK(CallEcho(*f.client, "svc.echo.Echo", "still here").message() == "still here");
}

TEST_CASE("JSON requests are answered in proto3 JSON", "[rpc]") {
  EchoFixture f;
  muon::bus::Msg reply;
  REQUIRE_FALSE(f.client->Request("svc.echo.Echo", R"({"message":"hi json"})",
                                  {{"Content-Type", "application/json"}}, 2s, reply));
  CHECK(reply.Header("Content-Type") == std::optional<std::string_view>("application/json"));
  CHECK(std::string(reply.data()) ==
        R"({"message":"hi json","instance":")" + f.service->id() + R"("})");

  REQUIRE_FALSE(f.client->Request("svc.echo.Echo", R"({"message": 12,)",
                                  {{"Content-Type", "application/json"}}, 2s, reply));
  CHECK(reply.Header("Nats-Service-Error-Code") == std::optional<std::string_view>("400"));
  const std::string body(reply.data());
  CHECK(body.find(R"("id":"echo.Echo","code":400,)") != std::string::npos);
  CHECK(body.find(R"("status":"Bad Request")") != std::string::npos);
}

TEST_CASE("a service answers again after nats-server restarts, without being restarted", "[rpc]") {
  EchoFixture f;
  REQUIRE(CallEcho(*f.client, "svc.echo.Echo", "before").message() == "before");
  f.nats.Restart();
  const bool answered = muon::testing::WaitUntil(
      [&] {
        try {
          return CallEcho(*f.client, "svc.echo.Echo", "after").message() == "after";
        } catch (const muon::Error&) {
          return false;
        }
      },
      15s, 50ms);
  CHECK(answered);
  CHECK(f.server_conn->IsConnected());
}

namespace {
// Counts log records with a given message: the echo handler logs "sleep started" when a Sleep
// request is being handled, which tells the test the request is in flight.
class CountingSink : public muon::log::Sink {
 public:
  explicit CountingSink(std::string message) : message_(std::move(message)) {}
  void Write(const muon::log::Record& record) override {
    if (record.message == message_) ++count_;
  }
  int count() const { return count_; }

 private:
  std::string message_;
  std::atomic<int> count_{0};
};
}  // namespace

TEST_CASE("Stop drains: in-flight requests finish, new ones find no responders", "[rpc]") {
  EchoFixture f;
  auto started = std::make_shared<CountingSink>("sleep started");
  muon::log::AddSink(started);
  muon::echo::v1::SleepRequest request;
  request.set_milliseconds(700);
  auto pending = std::async(std::launch::async, [&] {
    muon::echo::v1::SleepResponse response;
    muon::Call(*f.client, "svc.echo.Sleep", request, response, 5s);
    return response.slept_milliseconds();
  });
  REQUIRE(muon::testing::WaitUntil([&] { return started->count() == 1; }, 5s));
  f.service->Stop(5s);
  muon::log::RemoveSink(started);
  CHECK(pending.get() == 700);
  muon::bus::Msg reply;
  CHECK(f.client->Request("svc.echo.Echo", "", {}, 1s, reply) == BusErrc::kNoResponders);
}

TEST_CASE("JetStream: idempotent stream creation, publish dedupe by Nats-Msg-Id, pull consumer",
          "[jetstream]") {
  muon::testing::NatsServer nats;
  auto conn = muon::bus::Connection::Connect({.url = nats.url()});
  REQUIRE(conn->WaitConnected(5s));
  muon::bus::JetStream js(*conn);
  const muon::bus::StreamConfig config{.name = "EVENTS", .subjects = {"muon.evt.>"}};
  REQUIRE_FALSE(js.EnsureStream(config));
  REQUIRE_FALSE(js.EnsureStream(config));  // second replica starting: no error

  muon::bus::PubAck first, second, third;
  REQUIRE_FALSE(js.Publish("muon.evt.build.echo", "payload-1", "delivery-1", first));
  REQUIRE_FALSE(js.Publish("muon.evt.build.echo", "payload-1", "delivery-1", second));
  REQUIRE_FALSE(js.Publish("muon.evt.build.echo", "payload-2", "delivery-2", third));
  CHECK_FALSE(first.duplicate);
  CHECK(second.duplicate);
  CHECK(second.sequence == first.sequence);
  CHECK_FALSE(third.duplicate);
  CHECK(third.sequence == first.sequence + 1);

  muon::bus::PullConsumer consumer;
  REQUIRE_FALSE(js.PullSubscribe(
      "EVENTS",
      {.durable = "reader", .filter_subject = "muon.evt.>", .ack_wait = std::chrono::seconds(1)},
      consumer));
  std::vector<muon::bus::Msg> batch;
  REQUIRE_FALSE(consumer.Fetch(10, 2s, batch));
  REQUIRE(batch.size() == 2);
  CHECK(batch[0].data() == "payload-1");
  CHECK(batch[1].data() == "payload-2");
  REQUIRE_FALSE(consumer.Ack(batch[0]));
  // The second is not acked: it comes back after ack_wait, and only it.
  std::vector<muon::bus::Msg> redelivered;
  REQUIRE(muon::testing::WaitUntil(
      [&] {
        consumer.Fetch(10, 200ms, redelivered);
        return !redelivered.empty();
      },
      5s, 10ms));
  REQUIRE(redelivered.size() == 1);
  CHECK(redelivered[0].data() == "payload-2");
  REQUIRE_FALSE(consumer.Ack(redelivered[0]));
}

TEST_CASE(
    "pull consumer: a fetch takes what is there, else waits for the first message; a "
    "deleted consumer is reported",
    "[jetstream]") {
  muon::testing::NatsServer nats;
  auto conn = muon::bus::Connection::Connect({.url = nats.url()});
  REQUIRE(conn->WaitConnected(5s));
  muon::bus::JetStream js(*conn);
  REQUIRE_FALSE(js.EnsureStream({.name = "WORK", .subjects = {"work.>"}}));
  muon::bus::PullConsumer consumer;
  REQUIRE_FALSE(js.PullSubscribe("WORK", {.durable = "worker"}, consumer));
  // Binding again (a restarted worker) reuses the durable consumer.
  muon::bus::PullConsumer again;
  REQUIRE_FALSE(js.PullSubscribe("WORK", {.durable = "worker"}, again));

  // Nothing there: kTimeout after the wait, with nothing fetched.
  std::vector<muon::bus::Msg> none;
  CHECK(consumer.Fetch(10, 100ms, none) == BusErrc::kTimeout);
  CHECK(none.empty());

  // More than a batch there: exactly a batch, in stream order, without waiting for the timeout.
  muon::bus::PubAck ack;
  for (int i = 0; i < 25; ++i) {
    REQUIRE_FALSE(js.Publish("work.item", "item-" + std::to_string(i), "", ack));
  }
  std::vector<muon::bus::Msg> batch;
  const auto asked = std::chrono::steady_clock::now();
  REQUIRE_FALSE(consumer.Fetch(10, 10s, batch));
  CHECK(std::chrono::steady_clock::now() - asked < 5s);
  REQUIRE(batch.size() == 10);
  for (int i = 0; i < 10; ++i) CHECK(batch[i].data() == "item-" + std::to_string(i));
  REQUIRE_FALSE(consumer.AckAll(batch));
  // Fewer than a batch there: those, at once.
  std::vector<muon::bus::Msg> rest;
  REQUIRE_FALSE(consumer.Fetch(100, 10s, rest));
  CHECK(std::chrono::steady_clock::now() - asked < 5s);
  REQUIRE(rest.size() == 15);
  CHECK(rest.front().data() == "item-10");
  REQUIRE_FALSE(consumer.AckAll(rest));

  // Nothing there yet: the fetch waits and returns the message published meanwhile.
  std::thread later([&] {
    std::this_thread::sleep_for(300ms);  // the fetch below must be waiting by then
    muon::bus::PubAck late_ack;
    js.Publish("work.item", "late", "", late_ack);
  });
  std::vector<muon::bus::Msg> late;
  const auto waiting = std::chrono::steady_clock::now();
  const auto late_ec = consumer.Fetch(10, 10s, late);
  later.join();
  REQUIRE_FALSE(late_ec);
  REQUIRE(late.size() == 1);
  CHECK(late[0].data() == "late");
  CHECK(std::chrono::steady_clock::now() - waiting < 5s);
  REQUIRE_FALSE(consumer.Ack(late[0]));

  // The consumer is deleted under a waiting fetch: kNotFound, and the consumer must be bound
  // again.
  std::thread deleter([&] {
    std::this_thread::sleep_for(300ms);
    jsErrCode code = static_cast<jsErrCode>(0);
    js_DeleteConsumer(js.raw(), "WORK", "worker", nullptr, &code);
  });
  std::vector<muon::bus::Msg> gone;
  const auto gone_ec = consumer.Fetch(10, 5s, gone);
  deleter.join();
  CHECK(gone_ec == BusErrc::kNotFound);
  CHECK_FALSE(consumer.Valid());
  REQUIRE_FALSE(js.PullSubscribe("WORK", {.durable = "worker"}, consumer));
  CHECK(consumer.Valid());
}
