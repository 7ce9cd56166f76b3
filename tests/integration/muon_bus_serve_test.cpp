// `muon-bus serve` as a real process against a real nats-server: the NATS service API, one shell
// command per request (body on stdin, stdout the reply), exit codes and timeouts mapped to the
// platform's error shape, release and preview subjects, drain on SIGTERM, argument errors.

#include <google/protobuf/util/json_util.h>
#include <signal.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <sstream>

#include "harness.h"
#include "muon/common/bus.h"
#include "muon/common/v1/common.pb.h"
#include "muon/common/v1/micro.pb.h"

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

struct ServeProcess {
  muon::testing::TempDir dir{"muon-test-serve"};
  muon::Process process;
  std::string log_path;

  ServeProcess(const std::string& nats_url, std::vector<std::string> args,
               std::map<std::string, std::string> extra_env = {}) {
    log_path = dir.path() + "/serve.log";
    std::map<std::string, std::string> env = {{"NATS_URL", nats_url}, {"MUON_INSTANCE", "greet-1"}};
    env.merge(extra_env);
    args.insert(args.begin(), "serve");
    process = muon::Process({.program = muon::testing::BinDir() + "/muon-bus",
                             .args = std::move(args),
                             .env = std::move(env),
                             .working_dir = dir.path(),
                             .output_file = log_path});
  }

  std::string Log() const {
    std::ifstream in(log_path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
};

bool WaitForPing(muon::bus::Connection& conn, const std::string& name) {
  return muon::testing::WaitUntil(
      [&] { return !muon::bus::Gather(conn, "$SRV.PING." + name, "", 300ms, 1).empty(); }, 15s,
      50ms);
}

muon::bus::Msg Ask(muon::bus::Connection& conn, const std::string& subject, const std::string& body,
                   const muon::bus::Headers& headers = {},
                   std::chrono::milliseconds timeout = 10s) {
  muon::bus::Msg reply;
  const std::error_code ec = conn.Request(subject, body, headers, timeout, reply);
  INFO(subject << ": " << ec.message());
  REQUIRE_FALSE(ec);
  return reply;
}

std::string HeaderOf(const muon::bus::Msg& msg, const char* key) {
  return std::string(msg.Header(key).value_or("<none>"));
}

bool Gone(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return true;
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z';
}

}  // namespace

TEST_CASE(
    "muon-bus serve answers PING as the service, runs a command per request and maps failures to "
    "the error shape",
    "[muon-bus]") {
  muon::testing::NatsServer nats;
  ServeProcess serve(nats.url(), {"greet", "--endpoint", R"(Hello=cat; echo -n " back")",
                                  "--endpoint", "Fail=echo nope >&2; exit 1", "--endpoint",
                                  "Bad=echo 'just a line' >&2; echo 'name is missing' >&2; exit 2",
                                  "--endpoint", "Env=echo \"$MUON_METHOD $MUON_CONTENT_TYPE\"; pwd",
                                  "--endpoint", "Slow=sleep 60 & echo $! > slow.pid; wait",
                                  "--timeout", "1s", "--description", "greets back"});
  auto client = muon::bus::Connection::Connect({.url = nats.url()});
  REQUIRE(client->WaitConnected(5s));
  INFO(serve.Log());
  REQUIRE(WaitForPing(*client, "greet"));

  SECTION("PING and INFO name the service and its svc.greet.* endpoints") {
    auto pings = muon::bus::Gather(*client, "$SRV.PING.greet", "", 2s, 1);
    REQUIRE(pings.size() == 1);
    muon::common::v1::MicroPingResponse ping;
    REQUIRE(google::protobuf::util::JsonStringToMessage(std::string(pings[0].data()), &ping).ok());
    CHECK(ping.type() == "io.nats.micro.v1.ping_response");
    CHECK(ping.name() == "greet");
    CHECK(ping.id() == "greet-1");

    auto infos = muon::bus::Gather(*client, "$SRV.INFO.greet", "", 2s, 1);
    REQUIRE(infos.size() == 1);
    muon::common::v1::MicroInfoResponse info;
    REQUIRE(google::protobuf::util::JsonStringToMessage(std::string(infos[0].data()), &info).ok());
    CHECK(info.description() == "greets back");
    REQUIRE(info.endpoints_size() == 5);
    CHECK(info.endpoints(0).name() == "Hello");
    CHECK(info.endpoints(0).subject() == "svc.greet.Hello");
    CHECK(info.endpoints(0).queue_group() == "greet");
  }

  SECTION("the body goes to stdin, stdout comes back") {
    auto reply = Ask(*client, "svc.greet.Hello", "hi");
    CHECK(reply.data() == "hi back");
    CHECK_FALSE(reply.Header(muon::bus::kHeaderServiceErrorCode));
    // A larger body than one pipe buffer holds.
    const std::string big(300 * 1024, 'x');
    CHECK(Ask(*client, "svc.greet.Hello", big).data() == big + " back");
  }

  SECTION("MUON_METHOD and MUON_CONTENT_TYPE are set; the command runs in the current dir") {
    auto reply = Ask(*client, "svc.greet.Env", "", {{"Content-Type", "text/plain"}});
    CHECK(reply.data() == "Env text/plain\n" + fs::canonical(serve.dir.path()).string() + "\n");
  }

  SECTION("a non-zero exit is a 500 with the last stderr line; the line reaches the log") {
    auto reply = Ask(*client, "svc.greet.Fail", "x");
    CHECK(HeaderOf(reply, muon::bus::kHeaderServiceErrorCode) == "500");
    CHECK(HeaderOf(reply, muon::bus::kHeaderServiceError) == "nope");
    muon::common::v1::Error error;
    REQUIRE(error.ParseFromArray(reply.data().data(), static_cast<int>(reply.data().size())));
    CHECK(error.code() == 500);
    CHECK(error.detail() == "nope");
    CHECK(error.id() == "greet.Fail");
    CHECK(muon::testing::WaitUntil(
        [&] { return serve.Log().find("\nnope\n") != std::string::npos; }, 5s));
  }

  SECTION("exit 2 is a 400 \"bad request: <last stderr line>\"") {
    auto reply = Ask(*client, "svc.greet.Bad", "x");
    CHECK(HeaderOf(reply, muon::bus::kHeaderServiceErrorCode) == "400");
    CHECK(HeaderOf(reply, muon::bus::kHeaderServiceError) == "bad request: name is missing");
  }

  SECTION("a command over --timeout is killed with its process group: 504") {
    const auto started = std::chrono::steady_clock::now();
    auto reply = Ask(*client, "svc.greet.Slow", "x");
    CHECK(std::chrono::steady_clock::now() - started < 10s);
    CHECK(HeaderOf(reply, muon::bus::kHeaderServiceErrorCode) == "504");
    pid_t sleeper = 0;
    std::ifstream(serve.dir.path() + "/slow.pid") >> sleeper;
    REQUIRE(sleeper > 0);
    CHECK(muon::testing::WaitUntil([&] { return Gone(sleeper); }, 5s));
    // Still serving afterwards.
    CHECK(Ask(*client, "svc.greet.Hello", "again").data() == "again back");
  }
}

TEST_CASE("muon-bus serve with a release label answers ver.<name>.<release>.*; SIGTERM drains",
          "[muon-bus]") {
  muon::testing::NatsServer nats;
  ServeProcess serve(nats.url(),
                     {"greet", "--endpoint", R"(Hello=cat; echo -n " back")", "--endpoint",
                      "Wait=touch started; sleep 1; echo finished"},
                     {{"MUON_VERSION", "v7"}});
  auto client = muon::bus::Connection::Connect({.url = nats.url()});
  REQUIRE(client->WaitConnected(5s));
  INFO(serve.Log());
  REQUIRE(WaitForPing(*client, "greet"));

  CHECK(Ask(*client, "ver.greet.v7.Hello", "hi").data() == "hi back");
  CHECK(Ask(*client, "svc.greet.Hello", "hi").data() == "hi back");

  auto pending = std::async(std::launch::async, [&] {
    muon::bus::Msg reply;
    const auto ec = client->Request("ver.greet.v7.Wait", "", {}, 10s, reply);
    return ec ? "error: " + ec.message() : std::string(reply.data());
  });
  REQUIRE(muon::testing::WaitUntil([&] { return fs::exists(serve.dir.path() + "/started"); }, 5s));
  serve.process.Signal(SIGTERM);
  CHECK(pending.get() == "finished\n");
  auto status = serve.process.WaitFor(10s);
  REQUIRE(status.has_value());
  CHECK(status->code == 0);
  CHECK(serve.Log().find("msg=\"draining\"") != std::string::npos);
}

TEST_CASE("muon-bus serve as a preview answers only its version subject", "[muon-bus]") {
  muon::testing::NatsServer nats;
  ServeProcess serve(nats.url(), {"greet", "--endpoint", "Hello=echo preview"},
                     {{"MUON_VERSION", "feature-x"}, {"MUON_PREVIEW", "1"}});
  auto client = muon::bus::Connection::Connect({.url = nats.url()});
  REQUIRE(client->WaitConnected(5s));
  INFO(serve.Log());
  REQUIRE(WaitForPing(*client, "greet"));
  CHECK(Ask(*client, "ver.greet.feature-x.Hello", "").data() == "preview\n");
  muon::bus::Msg reply;
  CHECK(client->Request("svc.greet.Hello", "", {}, 2s, reply) == muon::bus::BusErrc::kNoResponders);
}

TEST_CASE("muon-bus serve refuses bad arguments with exit 2 and says why", "[muon-bus]") {
  auto run = [](std::vector<std::string> args) {
    args.insert(args.begin(), "serve");
    return muon::RunCommand({.program = muon::testing::BinDir() + "/muon-bus",
                             .args = std::move(args),
                             .env = {{"NATS_URL", "nats://127.0.0.1:1"}}},
                            10s);
  };
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const auto& c : std::vector<Case>{
           {{"greet"}, "give at least one --endpoint METHOD=COMMAND"},
           {{"--endpoint", "Hello=true"}, "missing the service NAME"},
           {{"greet", "--endpoint", "Hello"}, "--endpoint \"Hello\" is not METHOD=COMMAND"},
           {{"greet", "--endpoint", "Say.Hello=true"}, "method name \"Say.Hello\" is invalid"},
           {{"greet", "--endpoint", "Hello=true", "--endpoint", "Hello=false"}, "given twice"},
           {{"greet", "--endpoint", "Hello=  "}, "the command is empty"},
           {{"gr.eet", "--endpoint", "Hello=true"}, "service name \"gr.eet\" is invalid"},
           {{"greet", "--endpoint", "Hello=true", "--timeout", "soon"}, "--timeout"},
           {{"greet", "--endpoint", "Hello=true", "--concurrency", "0"},
            "--concurrency (env MUON_CONCURRENCY)"},
       }) {
    auto result = run(c.args);
    INFO(result.output);
    CHECK(result.status.code == 2);
    CHECK(result.output.find(c.message) != std::string::npos);
  }
  auto help = run({"--help"});
  CHECK(help.status.code == 0);
  CHECK(help.output.find("--endpoint METHOD=COMMAND") != std::string::npos);
  CHECK(help.output.find("--drain-timeout") != std::string::npos);
}
