// The muon-echo binary as a real process: the NATS service API (ADR-32) from two instances,
// stats arithmetic, drain on SIGTERM, and configuration errors.

#include <google/protobuf/util/json_util.h>
#include <signal.h>

#include <catch2/catch.hpp>
#include <condition_variable>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <regex>
#include <sstream>

#include "harness.h"
#include "muon/common/bus.h"
#include "muon/common/service.h"
#include "muon/common/v1/micro.pb.h"
#include "muon/echo/v1/echo.pb.h"

using namespace std::chrono_literals;

namespace {

struct EchoProcess {
  muon::testing::TempDir dir{"muon-test-echo"};
  muon::Process process;
  std::string log_path;

  EchoProcess(const std::string& nats_url, const std::string& instance,
              std::map<std::string, std::string> extra_env = {}) {
    log_path = dir.path() + "/echo.log";
    std::map<std::string, std::string> env = {
        {"NATS_URL", nats_url}, {"MUON_INSTANCE", instance}, {"MUON_LOG_LEVEL", "info"}};
    env.merge(extra_env);
    process = muon::Process({.program = muon::testing::BinDir() + "/muon-echo",
                             .env = std::move(env),
                             .output_file = log_path});
  }

  std::string Log() const {
    std::ifstream in(log_path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
};

// Sends one request and collects every reply that arrives within `window`, or until `want`.
std::vector<std::string> Gather(muon::bus::Connection& conn, const std::string& subject,
                                size_t want, std::chrono::milliseconds window = 3s) {
  std::vector<std::string> out;
  for (auto& msg : muon::bus::Gather(conn, subject, "", window, want)) {
    out.emplace_back(msg.data());
  }
  return out;
}

template <typename T>
T ParseJson(const std::string& json) {
  T out;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;  // every field must be one ADR-32 defines
  auto status = google::protobuf::util::JsonStringToMessage(json, &out, options);
  INFO(json);
  REQUIRE(status.ok());
  return out;
}

bool WaitForInstances(muon::bus::Connection& conn, size_t n) {
  return muon::testing::WaitUntil(
      [&] { return Gather(conn, "$SRV.PING.echo", n, 300ms).size() >= n; }, 15s, 50ms);
}

}  // namespace

TEST_CASE("two echo instances answer $SRV.PING, INFO and STATS exactly as ADR-32 says",
          "[service-api]") {
  muon::testing::NatsServer nats;
  EchoProcess a(nats.url(), "echo-a");
  EchoProcess b(nats.url(), "echo-b");
  auto client = muon::bus::Connection::Connect({.url = nats.url()});
  REQUIRE(client->WaitConnected(5s));
  INFO(a.Log() << b.Log());
  REQUIRE(WaitForInstances(*client, 2));

  SECTION("PING on every subject level") {
    for (const std::string subject : {"$SRV.PING", "$SRV.PING.echo"}) {
      auto replies = Gather(*client, subject, 2);
      REQUIRE(replies.size() == 2);
      std::set<std::string> ids;
      for (const auto& json : replies) {
        auto ping = ParseJson<muon::common::v1::MicroPingResponse>(json);
        CHECK(ping.type() == "io.nats.micro.v1.ping_response");
        CHECK(ping.name() == "echo");
        CHECK(ping.version() == "1.0.0");
        CHECK(ping.metadata().at("region") == "local");
        CHECK(json.find("\"metadata\":{") != std::string::npos);
        ids.insert(ping.id());
      }
      CHECK(ids == std::set<std::string>{"echo-a", "echo-b"});
    }
    auto one = Gather(*client, "$SRV.PING.echo.echo-b", 2, 500ms);
    REQUIRE(one.size() == 1);
    CHECK(ParseJson<muon::common::v1::MicroPingResponse>(one[0]).id() == "echo-b");
    CHECK(Gather(*client, "$SRV.PING.other", 1, 300ms).empty());
  }

  SECTION("INFO lists description and endpoints with subject and queue group") {
    auto replies = Gather(*client, "$SRV.INFO.echo", 2);
    REQUIRE(replies.size() == 2);
    for (const auto& json : replies) {
      auto info = ParseJson<muon::common::v1::MicroInfoResponse>(json);
      CHECK(info.type() == "io.nats.micro.v1.info_response");
      CHECK(info.name() == "echo");
      CHECK_FALSE(info.description().empty());
      REQUIRE(info.endpoints_size() == 2);
      CHECK(info.endpoints(0).name() == "Echo");
      CHECK(info.endpoints(0).subject() == "svc.echo.Echo");
      CHECK(info.endpoints(0).queue_group() == "echo");
      CHECK(info.endpoints(1).name() == "Sleep");
      CHECK(info.endpoints(1).subject() == "svc.echo.Sleep");
      CHECK(json.find("\"description\":") != std::string::npos);
    }
  }

  SECTION("STATS count requests and errors, with integer nanoseconds") {
    constexpr int kGood = 20;
    constexpr int kBad = 3;
    for (int i = 0; i < kGood; ++i) {
      muon::echo::v1::EchoRequest request;
      request.set_message("m" + std::to_string(i));
      muon::echo::v1::EchoResponse response;
      muon::Call(*client, "svc.echo.Echo", request, response, 2s);
    }
    for (int i = 0; i < kBad; ++i) {
      muon::bus::Msg reply;
      REQUIRE_FALSE(
          client->Request("svc.echo.Echo", std::string("\x0a\x64\x41", 3), {}, 2s, reply));
    }
    auto replies = Gather(*client, "$SRV.STATS.echo", 2);
    REQUIRE(replies.size() == 2);
    int64_t requests = 0, errors = 0;
    std::string last_error;
    for (const auto& json : replies) {
      // Numbers, not strings: standard NATS tooling parses them as integers.
      CHECK(std::regex_search(json, std::regex(R"("num_requests":\d+,)")));
      CHECK(std::regex_search(json, std::regex(R"("processing_time":\d+,)")));
      CHECK(std::regex_search(json, std::regex(R"("average_processing_time":\d+\})")));
      auto stats = ParseJson<muon::common::v1::MicroStatsResponse>(json);
      CHECK(stats.type() == "io.nats.micro.v1.stats_response");
      CHECK(std::regex_match(stats.started(),
                             std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z)")));
      REQUIRE(stats.endpoints_size() == 2);
      const auto& echo = stats.endpoints(0);
      CHECK(echo.name() == "Echo");
      CHECK(echo.subject() == "svc.echo.Echo");
      CHECK(echo.queue_group() == "echo");
      if (echo.num_requests() > 0) {
        CHECK(echo.processing_time() > 0);
        CHECK(echo.average_processing_time() == echo.processing_time() / echo.num_requests());
      } else {
        CHECK(echo.average_processing_time() == 0);
      }
      requests += echo.num_requests();
      errors += echo.num_errors();
      if (echo.num_errors() > 0) last_error = echo.last_error();
      CHECK(stats.endpoints(1).num_requests() == 0);
      CHECK(stats.endpoints(1).last_error().empty());
    }
    CHECK(requests == kGood + kBad);
    CHECK(errors == kBad);
    CHECK(last_error.rfind("400:request is not a valid muon.echo.v1.EchoRequest", 0) == 0);
  }
}

TEST_CASE("SIGTERM drains: an in-flight Sleep finishes and the process exits 0", "[service-api]") {
  muon::testing::NatsServer nats;
  EchoProcess echo(nats.url(), "echo-drain");
  auto client = muon::bus::Connection::Connect({.url = nats.url()});
  REQUIRE(client->WaitConnected(5s));
  REQUIRE(WaitForInstances(*client, 1));

  auto pending = std::async(std::launch::async, [&] {
    muon::echo::v1::SleepRequest request;
    request.set_milliseconds(1500);
    muon::echo::v1::SleepResponse response;
    muon::Call(*client, "svc.echo.Sleep", request, response, 10s);
    return response.slept_milliseconds();
  });
  INFO(echo.Log());
  REQUIRE(muon::testing::WaitUntil(
      [&] { return echo.Log().find("msg=\"sleep started\"") != std::string::npos; }, 5s));
  echo.process.Signal(SIGTERM);
  CHECK(pending.get() == 1500);
  auto status = echo.process.WaitFor(10s);
  REQUIRE(status.has_value());
  CHECK(status->code == 0);
  CHECK(echo.Log().find("msg=\"draining\"") != std::string::npos);
}

TEST_CASE("a bad configuration exits 2 and names the option", "[service-api]") {
  auto result = muon::RunCommand({.program = muon::testing::BinDir() + "/muon-echo",
                                  .args = {"--concurrency=0", "--drain-timeout=soon"},
                                  .env = {{"NATS_URL", "nats://127.0.0.1:1"}}},
                                 10s);
  CHECK(result.status.code == 2);
  CHECK(result.output.find("--concurrency (env MUON_CONCURRENCY)") != std::string::npos);
  CHECK(result.output.find("--drain-timeout (env MUON_DRAIN_TIMEOUT)") != std::string::npos);
}

TEST_CASE(
    "a preview instance answers only its version subject, never svc.<service>.*; preview without "
    "a release label is a configuration error",
    "[service-api]") {
  muon::testing::NatsServer nats;
  EchoProcess preview(nats.url(), "echo-preview",
                      {{"MUON_VERSION", "feature-x"}, {"MUON_PREVIEW", "true"}});
  auto client = muon::bus::Connection::Connect({.url = nats.url()});
  REQUIRE(client->WaitConnected(5s));
  INFO(preview.Log());
  REQUIRE(WaitForInstances(*client, 1));

  muon::echo::v1::EchoRequest request;
  request.set_message("preview");
  muon::echo::v1::EchoResponse response;
  muon::Call(*client, "ver.echo.feature-x.Echo", request, response, 5s);
  CHECK(response.message() == "preview");
  CHECK(response.instance() == "echo-preview");
  // The only instance is a preview: the live subject has nobody.
  muon::bus::Msg reply;
  CHECK(client->Request("svc.echo.Echo", request.SerializeAsString(), {}, 2s, reply) ==
        muon::bus::BusErrc::kNoResponders);
  // $SRV.INFO lists only the version subjects and says it is a preview.
  const auto infos = Gather(*client, "$SRV.INFO.echo", 1);
  REQUIRE(infos.size() == 1);
  CHECK(infos[0].find("\"svc.echo.") == std::string::npos);
  CHECK(infos[0].find("\"ver.echo.feature-x.Echo\"") != std::string::npos);
  CHECK(infos[0].find("\"preview\":\"true\"") != std::string::npos);

  auto result = muon::RunCommand(
      {.program = muon::testing::BinDir() + "/muon-echo",
       .env = {{"NATS_URL", nats.url()}, {"MUON_PREVIEW", "1"}, {"MUON_VERSION", ""}}},
      10s);
  INFO(result.output);
  CHECK(result.status.code == 2);
  CHECK(result.output.find("--preview (env MUON_PREVIEW) needs a release label") !=
        std::string::npos);
}
