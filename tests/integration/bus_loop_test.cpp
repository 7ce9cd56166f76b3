// The bus on an event loop (bus_loop.h) against a real nats-server: a service whose non-blocking
// endpoint runs on the loop while a blocking one keeps its delivery threads, the loop requester
// (replies, "no responders" named per request among live ones, timeouts, late replies), replies
// larger than one socket read, a server restart, and a drain.

#include "muon/common/bus_loop.h"

#include <atomic>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <catch2/catch.hpp>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "echo_handlers.h"
#include "harness.h"
#include "muon/common/bus.h"
#include "muon/common/service.h"
#include "muon/echo/v1/echo.pb.h"

using namespace std::chrono_literals;
using muon::bus::BusErrc;

namespace {

// A loop-driven connection on a loop thread of its own; the loop stops before the connection
// goes (bus_loop.h's rule).
struct LoopConnection {
  muon::bus::EventLoopThread loop;
  std::unique_ptr<muon::bus::Connection> connection;

  LoopConnection(const std::string& url, const std::string& name)
      : connection(muon::bus::Connection::Connect(
            {.url = url, .name = name, .event_loop = &loop.context()})) {
    REQUIRE(connection->WaitConnected(5s));
  }
  ~LoopConnection() {
    loop.Stop();
    connection.reset();
  }
};

// Collects LoopRequester results from the loop thread.
struct Results {
  std::mutex mu;
  std::vector<std::pair<std::string, std::error_code>> items;  // (tag, ec)
  std::vector<std::string> bodies;

  muon::bus::LoopRequester::Callback Collect(std::string tag) {
    return [this, tag](std::error_code ec, muon::bus::Msg reply) {
      std::lock_guard lock(mu);
      items.emplace_back(tag, ec);
      bodies.emplace_back(ec ? std::string() : std::string(reply.data()));
    };
  }
  size_t size() {
    std::lock_guard lock(mu);
    return items.size();
  }
  bool WaitFor(size_t n, std::chrono::milliseconds deadline) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (size() < n) {
      if (std::chrono::steady_clock::now() > until) return false;
      std::this_thread::sleep_for(2ms);
    }
    return true;
  }
};

muon::echo::v1::EchoResponse CallEcho(muon::bus::Connection& conn, const std::string& message) {
  muon::echo::v1::EchoRequest request;
  request.set_message(message);
  muon::echo::v1::EchoResponse response;
  muon::Call(conn, "svc.echo.Echo", request, response, 5s);
  return response;
}

}  // namespace

TEST_CASE("non-blocking endpoints run on the loop thread, blocking ones on their own threads",
          "[bus_loop]") {
  muon::testing::NatsServer nats;
  LoopConnection server(nats.url(), "on-loop");
  auto client = muon::bus::Connection::Connect({.url = nats.url(), .name = "client"});
  REQUIRE(client->WaitConnected(5s));

  std::promise<std::thread::id> loop_thread;
  boost::asio::post(server.loop.context(),
                    [&] { loop_thread.set_value(std::this_thread::get_id()); });
  const std::thread::id loop_id = loop_thread.get_future().get();

  muon::Service service(
      *server.connection,
      {.name = "mixed", .kind = muon::ServiceKind::kUser, .bus_event_loop = true});
  std::mutex mu;
  std::vector<std::thread::id> fast_threads;
  std::thread::id block_thread;
  std::promise<void> block_entered;
  std::promise<void> release_block;
  auto released = release_block.get_future().share();
  service.AddRawEndpoint("Fast",
                         [&](std::string_view body, muon::RequestContext&) {
                           std::lock_guard lock(mu);
                           fast_threads.push_back(std::this_thread::get_id());
                           return std::string(body);
                         },
                         {.non_blocking = true});
  service.AddRawEndpoint("Block", [&](std::string_view, muon::RequestContext&) {
    {
      std::lock_guard lock(mu);
      block_thread = std::this_thread::get_id();
    }
    block_entered.set_value();
    released.wait();
    return std::string("unblocked");
  });
  service.Start();

  auto blocked = std::async(std::launch::async, [&] {
    muon::bus::Msg reply;
    const auto ec = client->Request("svc.mixed.Block", "", {}, 10s, reply);
    return ec ? ec.message() : std::string(reply.data());
  });
  block_entered.get_future().wait();
  // Block holds its handler; Fast still answers, on the loop thread.
  for (int i = 0; i < 20; ++i) {
    muon::bus::Msg reply;
    REQUIRE_FALSE(client->Request("svc.mixed.Fast", std::to_string(i), {}, 5s, reply));
    CHECK(reply.data() == std::to_string(i));
  }
  release_block.set_value();
  CHECK(blocked.get() == "unblocked");
  {
    std::lock_guard lock(mu);
    REQUIRE(fast_threads.size() == 20);
    for (const auto& id : fast_threads) CHECK(id == loop_id);
    CHECK(block_thread != loop_id);
  }
  service.Stop(5s);
}

TEST_CASE("the echo example runs on the loop, in protobuf and in JSON", "[bus_loop]") {
  muon::testing::NatsServer nats;
  LoopConnection server(nats.url(), "echo-on-loop");
  auto client = muon::bus::Connection::Connect({.url = nats.url(), .name = "client"});
  REQUIRE(client->WaitConnected(5s));
  auto options = muon::echo::DefaultOptions();
  REQUIRE(options.bus_event_loop);
  muon::Service service(*server.connection, options);
  muon::echo::RegisterEndpoints(service);
  service.Start();

  CHECK(CallEcho(*client, "binary").message() == "binary");
  muon::bus::Msg reply;
  REQUIRE_FALSE(client->Request("svc.echo.Echo", R"({"message":"json"})",
                                {{"Content-Type", "application/json"}}, 5s, reply));
  CHECK(std::string(reply.data()).find(R"("message":"json")") != std::string::npos);
  CHECK(reply.Header("Content-Type") == std::optional<std::string_view>("application/json"));
  service.Stop(5s);
}

TEST_CASE("the loop requester matches replies and names each request that had no responders",
          "[bus_loop]") {
  muon::testing::NatsServer nats;
  auto responder = muon::bus::Connection::Connect({.url = nats.url(), .name = "responder"});
  REQUIRE(responder->WaitConnected(5s));
  auto sub = responder->Subscribe("answer.>", [&](muon::bus::Msg& msg) {
    (void)responder->Respond(msg, "re:" + std::string(msg.data()));
  });
  REQUIRE_FALSE(responder->Flush(5s));

  LoopConnection caller(nats.url(), "caller");
  muon::bus::LoopRequester requester(*caller.connection);
  Results results;
  // Interleaved: live subjects and subjects nobody serves, many in flight at once, from the loop
  // thread (as the ingress does) and from this thread (posted).
  constexpr int kCalls = 400;
  std::promise<void> issued;
  boost::asio::post(caller.loop.context(), [&] {
    for (int i = 0; i < kCalls; i += 2) {
      requester.Request("answer." + std::to_string(i), std::to_string(i), {}, 5s,
                        results.Collect("live " + std::to_string(i)));
    }
    issued.set_value();
  });
  for (int i = 1; i < kCalls; i += 2) {
    requester.Request("nobody." + std::to_string(i), std::to_string(i), {}, 5s,
                      results.Collect("missing " + std::to_string(i)));
  }
  issued.get_future().wait();
  REQUIRE(results.WaitFor(kCalls, 10s));

  std::lock_guard lock(results.mu);
  int live = 0;
  int missing = 0;
  for (size_t i = 0; i < results.items.size(); ++i) {
    const auto& [tag, ec] = results.items[i];
    if (tag.rfind("live ", 0) == 0) {
      CHECK_FALSE(ec);
      CHECK(results.bodies[i] == "re:" + tag.substr(5));  // each reply to its own request
      ++live;
    } else {
      CHECK(ec == BusErrc::kNoResponders);
      ++missing;
    }
  }
  CHECK(live == kCalls / 2);
  CHECK(missing == kCalls / 2);
  CHECK(requester.pending() == 0);
  caller.loop.Stop();  // the requester goes after its loop stopped (bus_loop.h)
}

TEST_CASE("the loop requester times out, drops the late reply and reuses the slot", "[bus_loop]") {
  muon::testing::NatsServer nats;
  auto responder = muon::bus::Connection::Connect({.url = nats.url(), .name = "slow"});
  REQUIRE(responder->WaitConnected(5s));
  std::atomic<int> delay_ms{300};
  auto sub = responder->Subscribe("slow", [&](muon::bus::Msg& msg) {
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms.load()));
    (void)responder->Respond(msg, std::string(msg.data()));
  });
  REQUIRE_FALSE(responder->Flush(5s));

  LoopConnection caller(nats.url(), "caller");
  muon::bus::LoopRequester requester(*caller.connection);
  boost::asio::steady_timer sweeper(caller.loop.context());
  std::function<void()> arm = [&] {
    sweeper.expires_after(10ms);
    sweeper.async_wait([&](boost::system::error_code ec) {
      if (ec) return;
      requester.Sweep();
      arm();
    });
  };
  boost::asio::post(caller.loop.context(), arm);

  Results results;
  requester.Request("slow", "first", {}, 50ms, results.Collect("first"));
  REQUIRE(results.WaitFor(1, 5s));
  {
    std::lock_guard lock(results.mu);
    CHECK(results.items[0].second == BusErrc::kTimeout);
  }

  // The first reply arrives ~250 ms after the timeout, while the second request holds the same
  // slot: it must not be taken for the second's answer.
  delay_ms = 0;
  requester.Request("slow", "second", {}, 5s, results.Collect("second"));
  REQUIRE(results.WaitFor(2, 5s));
  std::lock_guard lock(results.mu);
  CHECK_FALSE(results.items[1].second);
  CHECK(results.bodies[1] == "second");
  caller.loop.Stop();  // the timer and the requester go after their loop stopped
}

TEST_CASE("a reply bigger than one socket read arrives whole without more traffic", "[bus_loop]") {
  muon::testing::NatsServer nats;
  auto responder = muon::bus::Connection::Connect({.url = nats.url(), .name = "big"});
  REQUIRE(responder->WaitConnected(5s));
  const std::string big(600 * 1024, 'x');  // nats.c reads 32 KiB per event
  auto sub =
      responder->Subscribe("big", [&](muon::bus::Msg& msg) { (void)responder->Respond(msg, big); });
  REQUIRE_FALSE(responder->Flush(5s));

  LoopConnection caller(nats.url(), "caller");
  muon::bus::LoopRequester requester(*caller.connection);
  Results results;
  requester.Request("big", "", {}, 5s, results.Collect("big"));
  REQUIRE(results.WaitFor(1, 5s));
  std::lock_guard lock(results.mu);
  CHECK_FALSE(results.items[0].second);
  CHECK(results.bodies[0].size() == big.size());
  caller.loop.Stop();
}

TEST_CASE("a loop-driven connection comes back after a nats-server restart", "[bus_loop]") {
  muon::testing::NatsServer nats;
  LoopConnection server(nats.url(), "echo-on-loop");
  muon::Service service(*server.connection, muon::echo::DefaultOptions());
  muon::echo::RegisterEndpoints(service);
  service.Start();
  LoopConnection caller(nats.url(), "caller");
  muon::bus::LoopRequester requester(*caller.connection);

  // Each call waits for its own result; requests left unanswered across the restart fail by
  // their deadline (the sweep), and the poll below tries again.
  auto call = [&](const std::string& message) {
    auto results = std::make_shared<Results>();
    muon::echo::v1::EchoRequest request;
    request.set_message(message);
    requester.Request("svc.echo.Echo", request.SerializeAsString(), {}, 1s,
                      [results](std::error_code ec, muon::bus::Msg reply) {
                        results->Collect("call")(ec, std::move(reply));
                      });
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (!results->WaitFor(1, 50ms) && std::chrono::steady_clock::now() < until) {
      boost::asio::post(caller.loop.context(), [&requester] { requester.Sweep(); });
    }
    REQUIRE(results->size() == 1);
    std::lock_guard lock(results->mu);
    return results->items[0].second;
  };
  CHECK_FALSE(call("before"));
  nats.Restart();
  // Both connections reconnect by themselves; poll until a call gets through again.
  const auto until = std::chrono::steady_clock::now() + 15s;
  std::error_code ec = make_error_code(BusErrc::kNotConnected);
  while (ec && std::chrono::steady_clock::now() < until) {
    ec = call("after");
    if (ec) std::this_thread::sleep_for(100ms);
  }
  CHECK_FALSE(ec);
  service.Stop(5s);
  caller.loop.Stop();
}

TEST_CASE("stopping a service on the loop waits for the requests it already took", "[bus_loop]") {
  muon::testing::NatsServer nats;
  LoopConnection server(nats.url(), "on-loop");
  muon::Service service(
      *server.connection,
      {.name = "counter", .kind = muon::ServiceKind::kUser, .bus_event_loop = true});
  std::atomic<int> handled{0};
  service.AddRawEndpoint("Count",
                         [&](std::string_view, muon::RequestContext&) {
                           ++handled;
                           return std::string("ok");
                         },
                         {.non_blocking = true});
  service.Start();

  auto client = muon::bus::Connection::Connect({.url = nats.url(), .name = "client"});
  REQUIRE(client->WaitConnected(5s));
  for (int i = 0; i < 50; ++i) REQUIRE_FALSE(client->Publish("svc.counter.Count", "", {}, "_x"));
  REQUIRE_FALSE(client->Flush(5s));
  service.Stop(5s);
  CHECK(handled == 50);
  muon::bus::Msg reply;
  CHECK(client->Request("svc.counter.Count", "", {}, 1s, reply) == BusErrc::kNoResponders);
}
