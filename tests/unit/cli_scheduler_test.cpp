// The scheduler's commands (`muon status`, `describe`, `releases`, `history`, `events`, `wait`,
// `drift`, `locks`, `unlock`, `deploy`, `rollback`, `scale`, `env set|unset`, `secrets set`,
// `exec`): argument parsing, and the pure formatting of what they print (scheduler_output.h).
// Requests over HTTP are in cli_http_test.cpp.

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "cli_parse_helpers.h"
#include "muon/cli/commands.h"
#include "muon/cli/exit_codes.h"
#include "muon/cli/output.h"
#include "muon/cli/scheduler_output.h"

namespace {

using muon::cli::testing::As;
using muon::cli::testing::Problem;
namespace sched = muon::scheduler::v1;

constexpr int64_t kNow = 1700000000;  // 2023-11-14 22:13:20 UTC

template <typename Message>
Message Parse(const std::string& json) {
  Message message;
  std::string error;
  INFO(json);
  REQUIRE(muon::cli::FromJson(json, &message, &error));
  return message;
}

std::string NotAService(const std::string& name) {
  return "'" + name + "' is not a service name (1 to 64 letters, digits, '_', '-')";
}

}  // namespace

// ---- parsing --------------------------------------------------------------------------------

TEST_CASE("cli scheduler: env keys, KEY=VALUE and release numbers", "[cli][scheduler]") {
  using muon::cli::IsValidEnvKey;
  for (const char* key : {"A", "_", "DATABASE_URL", "X1", "_PRIVATE", "A_B_C_9"}) {
    INFO(key);
    CHECK(IsValidEnvKey(key));
  }
  for (const std::string& key : std::vector<std::string>{"", "1A", "a", "Db", "A-B", "A B", "Ä",
                                                         "A=B", std::string(129, 'A')}) {
    INFO(key);
    CHECK_FALSE(IsValidEnvKey(key));
  }
  CHECK(muon::cli::IsReservedEnvKey("MUON_SERVICE"));
  CHECK_FALSE(muon::cli::IsReservedEnvKey("MUONX"));
  CHECK(muon::cli::EnvKeyProblem("MUON_NODE") ==
        "'MUON_NODE': MUON_* keys are reserved for the "
        "platform");
  CHECK_FALSE(muon::cli::EnvKeyProblem("MUONS").has_value());

  std::string problem;
  auto kv = muon::cli::ParseKeyValue("DATABASE_URL=postgres://u@h/db?x=1", &problem);
  REQUIRE(kv);
  CHECK(kv->first == "DATABASE_URL");
  CHECK(kv->second == "postgres://u@h/db?x=1");
  kv = muon::cli::ParseKeyValue("EMPTY=", &problem);
  REQUIRE(kv);
  CHECK(kv->second.empty());
  CHECK_FALSE(muon::cli::ParseKeyValue("NOVALUE", &problem));
  CHECK(problem == "'NOVALUE' is not KEY=VALUE (to remove a key: muon env unset SERVICE KEY)");
  CHECK_FALSE(muon::cli::ParseKeyValue("lower=1", &problem));
  CHECK(problem ==
        "'lower' is not an env key (upper-case letters, digits and '_', not starting with a "
        "digit; e.g. DATABASE_URL)");
  CHECK_FALSE(muon::cli::ParseKeyValue("=1", &problem));
  CHECK_FALSE(muon::cli::ParseKeyValue("MUON_REGION=eu", &problem));
  CHECK(problem == "'MUON_REGION': MUON_* keys are reserved for the platform");

  using muon::cli::ParseReleaseVersion;
  CHECK(ParseReleaseVersion("v3") == 3);
  CHECK(ParseReleaseVersion("3") == 3);
  CHECK(ParseReleaseVersion("V12") == 12);
  CHECK(ParseReleaseVersion("2147483647") == 2147483647);
  for (const char* bad :
       {"", "v", "v0", "0", "-1", "v-1", "+3", "3a", "v3.1", "vv3", "2147483648", " 3"}) {
    INFO(bad);
    CHECK_FALSE(ParseReleaseVersion(bad).has_value());
  }

  using muon::cli::SecretValueFromText;
  CHECK(SecretValueFromText("s3cret\n") == "s3cret");
  CHECK(SecretValueFromText("s3cret\r\n") == "s3cret");
  CHECK(SecretValueFromText("s3cret\n\n") == "s3cret\n");  // only one newline goes
  CHECK(SecretValueFromText("-----BEGIN-----\nabc\n-----END-----\n") ==
        "-----BEGIN-----\nabc\n-----END-----");
  CHECK(SecretValueFromText("no newline") == "no newline");
}

TEST_CASE("cli scheduler: status, describe, releases, history, events", "[cli][scheduler]") {
  CHECK(As<muon::cli::StatusCmd>({"status"}).service.empty());
  CHECK(As<muon::cli::StatusCmd>({"status", "greeter"}).service == "greeter");
  CHECK(Problem({"status", "a.b"}) == NotAService("a.b"));
  CHECK(Problem({"status", "a", "b"}) == "status: unexpected argument 'b'");

  CHECK(As<muon::cli::DescribeCmd>({"describe", "greeter"}).service == "greeter");
  CHECK(Problem({"describe"}) == "describe: missing SERVICE");

  CHECK(As<muon::cli::ReleasesCmd>({"releases", "greeter"}).limit == 0);
  CHECK(As<muon::cli::ReleasesCmd>({"releases", "greeter", "-n", "5"}).limit == 5);
  CHECK(Problem({"releases", "greeter", "-n", "0"}) ==
        "-n: '0' is not a number of releases from 1 to 500");

  CHECK(As<muon::cli::HistoryCmd>({"history", "greeter"}).limit == 50);
  CHECK(As<muon::cli::HistoryCmd>({"history", "greeter", "--lines=7"}).limit == 7);

  auto events = As<muon::cli::EventsCmd>({"events"});
  CHECK(events.service.empty());
  CHECK_FALSE(events.follow);
  events = As<muon::cli::EventsCmd>({"events", "greeter", "-f", "--since", "10m"});
  CHECK(events.service == "greeter");
  CHECK(events.follow);
  CHECK(events.since == "10m");
  CHECK(As<muon::cli::EventsCmd>({"events", "--since", "1d"}).since == "1d");
  CHECK(As<muon::cli::EventsCmd>({"events", "--since", "2026-11-30T10:00:00Z"}).since ==
        "2026-11-30T10:00:00Z");
  CHECK(Problem({"events", "--since", "yesterday"}) ==
        "--since: 'yesterday' is neither a duration (90s, 15m, 2h, 1d) nor an RFC 3339 time "
        "(2026-11-30T10:00:00Z)");
}

TEST_CASE("cli scheduler: wait, drift, locks, unlock", "[cli][scheduler]") {
  auto wait = As<muon::cli::WaitCmd>({"wait", "greeter"});
  CHECK(wait.timeout == std::chrono::minutes(5));
  CHECK(wait.release == 0);
  CHECK(wait.build.empty());
  wait = As<muon::cli::WaitCmd>({"wait", "greeter", "--timeout", "90s", "--release", "v4"});
  CHECK(wait.timeout == std::chrono::seconds(90));
  CHECK(wait.release == 4);
  CHECK(As<muon::cli::WaitCmd>({"wait", "greeter", "--build", "b-1a2b"}).build == "b-1a2b");
  CHECK(Problem({"wait", "greeter", "--timeout", "0s"}) == "--timeout must be more than 0");
  CHECK(Problem({"wait", "greeter", "--release", "x"}) ==
        "--release: 'x' is not a release number (e.g. v3 or 3)");
  CHECK(Problem({"wait", "greeter", "--release", "3", "--build", "b-1"}) ==
        "--build and --release cannot be combined");

  CHECK(As<muon::cli::DriftCmd>({"drift"}).service.empty());
  CHECK(As<muon::cli::DriftCmd>({"drift", "greeter"}).service == "greeter");
  As<muon::cli::LocksCmd>({"locks"});
  CHECK(Problem({"locks", "greeter"}) == "locks: unexpected argument 'greeter'");

  CHECK(As<muon::cli::UnlockCmd>({"unlock", "greeter", "--force"}).service == "greeter");
  CHECK(Problem({"unlock", "greeter"}) ==
        "a deploy lock is released by the rollout that holds it, or when it expires; to release "
        "it anyway add --force (recorded as a lock.forced event with your name)");
}

TEST_CASE("cli scheduler: deploy, rollback, scale", "[cli][scheduler]") {
  // Neither flag: the newest release (and a paused auto-deploy resumes).
  auto deploy = As<muon::cli::DeployCmd>({"deploy", "greeter"});
  CHECK(deploy.ref.empty());
  CHECK(deploy.release == 0);
  CHECK(As<muon::cli::DeployCmd>({"deploy", "greeter", "--release", "v3"}).release == 3);
  CHECK(As<muon::cli::DeployCmd>({"deploy", "greeter", "--release=3"}).release == 3);
  // --ref: a build (the path of before).
  deploy = As<muon::cli::DeployCmd>({"deploy", "greeter", "--ref", "main", "--repo", "acme/shop"});
  CHECK(deploy.ref == "main");
  CHECK(deploy.repo == "acme/shop");
  CHECK(deploy.release == 0);
  CHECK(Problem({"deploy", "greeter", "--ref", "main", "--release", "v3"}) ==
        "--ref and --release cannot be combined: --ref builds a new release, --release rolls out "
        "an existing one");
  CHECK(Problem({"deploy", "greeter", "--release", "v0"}) ==
        "--release: 'v0' is not a release number (e.g. v3 or 3)");
  CHECK(Problem({"deploy", "greeter", "--repo", "acme/shop"}) ==
        "--repo goes with --ref (the repository to build SERVICE from)");

  CHECK(As<muon::cli::RollbackCmd>({"rollback", "greeter"}).to_version == 0);
  CHECK(As<muon::cli::RollbackCmd>({"rollback", "greeter", "--to", "v2"}).to_version == 2);
  CHECK(Problem({"rollback", "greeter", "--to", "two"}) ==
        "--to: 'two' is not a release number (e.g. v3 or 3)");

  auto scale = As<muon::cli::ScaleCmd>({"scale", "greeter", "5"});
  CHECK(scale.service == "greeter");
  CHECK(scale.replicas == 5);
  CHECK(As<muon::cli::ScaleCmd>({"scale", "greeter", "0"}).replicas == 0);
  CHECK(As<muon::cli::ScaleCmd>({"scale", "greeter", "100"}).replicas == 100);
  for (const std::string n : {"101", "x", "", "2.5", "+1"}) {
    INFO(n);
    CHECK(Problem({"scale", "greeter", n}) ==
          "N: '" + n + "' is not a number of replicas from 0 to 100");
  }
  CHECK(Problem({"scale", "greeter"}) == "scale: missing N");
  CHECK(Problem({"scale", "greeter", "-1"}) == "scale: unknown flag -1");
}

TEST_CASE("cli scheduler: env set|unset live beside the CLI's own envs", "[cli][scheduler]") {
  // The CLI's envs are unchanged.
  As<muon::cli::EnvListCmd>({"env"});
  As<muon::cli::EnvListCmd>({"env", "list"});
  CHECK(As<muon::cli::EnvUseCmd>({"env", "use", "set"}).name == "set");  // an env named "set"
  CHECK(As<muon::cli::EnvAddCmd>({"env", "add", "unset", "http://x"}).name == "unset");
  CHECK(muon::cli::ParseArgs({"--env", "eu", "env", "set", "greeter", "A=1"}).global.env == "eu");

  auto set = As<muon::cli::EnvSetCmd>({"env", "set", "greeter", "A=1", "DATABASE_URL=pg://x=y"});
  CHECK(set.service == "greeter");
  REQUIRE(set.set.size() == 2);
  CHECK(set.set[0] == std::make_pair(std::string("A"), std::string("1")));
  CHECK(set.set[1] == std::make_pair(std::string("DATABASE_URL"), std::string("pg://x=y")));
  CHECK(set.unset.empty());
  CHECK(set.deploy);
  CHECK_FALSE(As<muon::cli::EnvSetCmd>({"env", "set", "greeter", "A=1", "--no-deploy"}).deploy);
  CHECK(Problem({"env", "set", "greeter"}) == "env set: missing KEY=VALUE");
  CHECK(Problem({"env", "set", "greeter", "A"}) ==
        "'A' is not KEY=VALUE (to remove a key: muon env unset SERVICE KEY)");
  CHECK(Problem({"env", "set", "greeter", "MUON_X=1"}) ==
        "'MUON_X': MUON_* keys are reserved for the platform");
  CHECK(Problem({"env", "set", "greeter", "A=1", "A=2"}) == "A is given more than once");
  CHECK(Problem({"env", "set", "gree.ter", "A=1"}) == NotAService("gree.ter"));

  auto unset = As<muon::cli::EnvSetCmd>({"env", "unset", "greeter", "A", "B_2"});
  CHECK(unset.set.empty());
  CHECK(unset.unset == std::vector<std::string>{"A", "B_2"});
  CHECK(Problem({"env", "unset", "greeter", "a"}).rfind("'a' is not an env key", 0) == 0);
  CHECK(Problem({"env", "frob"}) ==
        "unknown command 'muon env frob' (expected one of: list, add, use, remove, set, unset)");

  // `muon env --help` explains both kinds.
  const auto help = As<muon::cli::HelpCmd>({"env", "--help"}).text;
  CHECK(As<muon::cli::HelpCmd>({"help", "env"}).text == help);
  for (const char* part :
       {"The CLI's own ingress endpoints", "  muon env add NAME URL [--region R]\n",
        "A service's env variables", "  muon env set SERVICE KEY=VALUE... [--no-deploy]\n",
        "  muon env unset SERVICE KEY... [--no-deploy]\n", "muon secrets set"}) {
    INFO(part);
    CHECK(help.find(part) != std::string::npos);
  }
  CHECK(As<muon::cli::HelpCmd>({"env", "set", "--help"})
            .text.rfind("usage: muon env set SERVICE KEY=VALUE... [--no-deploy]\n", 0) == 0);
  CHECK(As<muon::cli::HelpCmd>({"help", "env", "add"})
            .text.rfind("usage: muon env add NAME URL", 0) == 0);
}

TEST_CASE("cli scheduler: secrets set", "[cli][scheduler]") {
  auto secret = As<muon::cli::SecretsSetCmd>(
      {"secrets", "set", "greeter", "API_KEY", "--from-file", "key.txt"});
  CHECK(secret.service == "greeter");
  CHECK(secret.key == "API_KEY");
  CHECK(secret.file == "key.txt");
  CHECK_FALSE(secret.from_stdin);
  CHECK(secret.deploy);
  secret = As<muon::cli::SecretsSetCmd>(
      {"secrets", "set", "greeter", "API_KEY", "--from-stdin", "--no-deploy"});
  CHECK(secret.from_stdin);
  CHECK_FALSE(secret.deploy);
  const std::string one_of =
      "give the value with exactly one of --from-file F and --from-stdin (never on the command "
      "line)";
  CHECK(Problem({"secrets", "set", "greeter", "API_KEY"}) == one_of);
  CHECK(Problem({"secrets", "set", "greeter", "API_KEY", "--from-stdin", "--from-file", "f"}) ==
        one_of);
  CHECK(Problem({"secrets", "set", "greeter", "API_KEY=x", "--from-stdin"})
            .rfind("'API_KEY=x' is not an env key", 0) == 0);
  CHECK(Problem({"secrets", "set", "greeter", "API_KEY", "hunter2", "--from-stdin"}) ==
        "secrets set: unexpected argument 'hunter2'");
  CHECK(Problem({"secrets"}) == "muon secrets needs a subcommand: set");
  CHECK(As<muon::cli::HelpCmd>({"secrets", "--help"}).text.find("secrets set SERVICE KEY") !=
        std::string::npos);
}

TEST_CASE("cli scheduler: exec takes the rest of the line as the command", "[cli][scheduler]") {
  auto exec = As<muon::cli::ExecCmd>({"exec", "greeter", "--", "ls", "-la", "/"});
  CHECK(exec.service == "greeter");
  CHECK(exec.command == std::vector<std::string>{"ls", "-la", "/"});
  CHECK(exec.instance.empty());
  CHECK(exec.timeout.count() == 0);
  // Without `--`, flags before CMD are muon's; from CMD on everything is the command's.
  exec = As<muon::cli::ExecCmd>({"exec", "--instance", "i-3", "greeter", "--timeout", "5s", "sh",
                                 "-c", "echo hi", "--instance", "x"});
  CHECK(exec.instance == "i-3");
  CHECK(exec.timeout == std::chrono::seconds(5));
  CHECK(exec.command == std::vector<std::string>{"sh", "-c", "echo hi", "--instance", "x"});
  CHECK(Problem({"exec", "greeter"}) == "exec: missing CMD");
  CHECK(Problem({"exec", "greeter", "--"}) == "exec: missing CMD");
  CHECK(Problem({"exec", "greeter", "--timeout", "11m", "--", "ls"}) == "--timeout: at most 10m");
  CHECK(Problem({"exec", "greeter", "--instance", "../x", "--", "ls"}) ==
        "--instance: '../x' is not an instance id (letters, digits, '_', '-')");
}

TEST_CASE("cli scheduler: help lists every command", "[cli][scheduler]") {
  const auto main_help = As<muon::cli::HelpCmd>({"--help"}).text;
  for (const char* command :
       {"status", "describe", "releases", "history", "events", "wait", "drift", "locks", "unlock",
        "deploy", "rollback", "scale", "env set", "env unset", "secrets set", "exec"}) {
    INFO(command);
    CHECK(main_help.find(std::string("\n  ") + command + " ") != std::string::npos);
  }
  CHECK(main_help.find("  8  muon wait: the rollout (or build) failed") != std::string::npos);
  CHECK(main_help.find("  9  muon wait: not converged within --timeout") != std::string::npos);
  CHECK(As<muon::cli::HelpCmd>({"deploy", "--help"})
            .text.rfind(
                "usage: muon deploy SERVICE [--ref REF] [--repo OWNER/NAME] [--release vN]\n", 0) ==
        0);
  CHECK(As<muon::cli::HelpCmd>({"exec", "-h"})
            .text.rfind("usage: muon exec SERVICE CMD... [--instance I] [--timeout D]\n", 0) == 0);
  STATIC_REQUIRE(muon::cli::kExitRolloutFailed == 8);
  STATIC_REQUIRE(muon::cli::kExitWaitTimeout == 9);
}

// ---- formatting -----------------------------------------------------------------------------

TEST_CASE("cli scheduler: small formats", "[cli][scheduler]") {
  using muon::cli::FormatUptime;
  CHECK(FormatUptime(-5) == "0s");
  CHECK(FormatUptime(0) == "0s");
  CHECK(FormatUptime(12) == "12s");
  CHECK(FormatUptime(60) == "1m");
  CHECK(FormatUptime(184) == "3m4s");
  CHECK(FormatUptime(7260) == "2h1m");
  CHECK(FormatUptime(7204) == "2h");  // seconds dropped beyond the two largest units
  CHECK(FormatUptime(90061) == "1d1h");
  CHECK(FormatUptime(86400 * 3 + 59) == "3d");

  CHECK(muon::cli::VersionLabel(0) == "-");
  CHECK(muon::cli::VersionLabel(7) == "v7");
  CHECK(muon::cli::ShortDigest("sha256:ab12cd34ef56ab12cd34") == "ab12cd34ef56");
  CHECK(muon::cli::ShortDigest("ab12cd34ef56ab12cd34") == "ab12cd34ef56");
  CHECK(muon::cli::ShortDigest("") == "-");
  CHECK(muon::cli::ShortCommit7("1a2b3c4d5e6f") == "1a2b3c4");
  CHECK(muon::cli::ShortCommit7("") == "-");
  CHECK(muon::cli::CategoryDetail("crash_loop", "exited 3 times") == "crash_loop: exited 3 times");
  CHECK(muon::cli::CategoryDetail("", "") == "-");
  CHECK(muon::cli::CategoryDetail("", "x") == "x");

  sched::ServiceStatus s;
  CHECK(muon::cli::AutoDeployText(s) == "on");
  s.set_paused(true);
  CHECK(muon::cli::AutoDeployText(s) == "paused");
  s.set_paused_reason("v4 failed: health_timeout");
  CHECK(muon::cli::AutoDeployText(s) == "paused: v4 failed: health_timeout");

  const auto event = Parse<sched::Event>(
      R"({"id":"7","service":"greeter","type":"rollout.step","message":"i-4 healthy, draining i-1",)"
      R"("version":4,"instance":"i-4","time":"2023-11-14T22:13:19.250Z"})");
  CHECK(muon::cli::FormatEventLine(event) ==
        "2023-11-14T22:13:19.250Z  greeter       rollout.step        v4    i-4         i-4 "
        "healthy, draining i-1");
  const auto bare = Parse<sched::Event>(
      R"({"id":"8","service":"greeter","type":"scale","message":"3 -> 1\u001b[2J",)"
      R"("time":"2023-11-14T22:13:20Z"})");
  CHECK(muon::cli::FormatEventLine(bare) ==
        "2023-11-14T22:13:20.000Z  greeter       scale               -     -           3 -> 1 [2J");

  CHECK(muon::cli::IsHistoryEvent("release.created"));
  CHECK(muon::cli::IsHistoryEvent("rollout.failed"));
  CHECK(muon::cli::IsHistoryEvent("scale"));
  CHECK(muon::cli::IsHistoryEvent("autodeploy.paused"));
  CHECK(muon::cli::IsHistoryEvent("lock.forced"));
  CHECK_FALSE(muon::cli::IsHistoryEvent("instance.started"));
  CHECK_FALSE(muon::cli::IsHistoryEvent("drift.repaired"));
  CHECK_FALSE(muon::cli::IsHistoryEvent("scaled"));

  sched::ExecResponse exec;
  CHECK(muon::cli::ExecExitCode(exec) == 0);
  exec.set_exit_code(3);
  CHECK(muon::cli::ExecExitCode(exec) == 3);
  exec.set_signal(9);
  CHECK(muon::cli::ExecExitCode(exec) == 137);
  exec.set_signal(0);
  exec.set_exit_code(-1);
  CHECK(muon::cli::ExecExitCode(exec) == 1);
}

TEST_CASE("cli scheduler: a receipt", "[cli][scheduler]") {
  const auto receipt = Parse<sched::Receipt>(
      R"({"service":"greeter","summary":"scale greeter 3 -> 5",)"
      R"("changes":["replicas: 3 -> 5","instances to start: 2"],)"
      R"("release":{"service":"greeter","version":4,"artifactDigest":"sha256:ab12cd34ef56ab12cd34",)"
      R"("commit":"1a2b3c4d5e6f","reason":"build","status":"live"},"rolloutId":"12",)"
      R"("watch":["muon wait greeter","muon events greeter -f","open the console"]})");
  CHECK(muon::cli::RenderReceipt(receipt, "") ==
        "scale greeter 3 -> 5\n"
        "  replicas: 3 -> 5\n"
        "  instances to start: 2\n"
        "release: v4  artifact ab12cd34ef56  commit 1a2b3c4  reason build  (live)\n"
        "rollout: #12\n"
        "\n"
        "Watch with:\n"
        "  muon wait greeter\n"
        "  muon events greeter -f\n"
        "  open the console\n");
  // A chosen env goes on every suggested muon command.
  CHECK(muon::cli::RenderReceipt(receipt, " --env eu").find("  muon wait greeter --env eu\n") !=
        std::string::npos);

  // Without watch commands from the scheduler the CLI suggests its own; a rollback names the
  // release it copies.
  const auto rollback = Parse<sched::Receipt>(
      R"({"service":"greeter","summary":"rollback greeter v5 -> v3",)"
      R"("release":{"version":6,"reason":"rollback","fromVersion":3,"status":"pending"}})");
  CHECK(muon::cli::RenderReceipt(rollback, " --env eu") ==
        "rollback greeter v5 -> v3\n"
        "release: v6  artifact -  commit -  reason rollback of v3  (pending)\n"
        "\n"
        "Watch with:\n"
        "  muon wait greeter --env eu\n"
        "  muon events greeter -f --env eu\n");
  CHECK(muon::cli::RenderReceipt(sched::Receipt{}, "") == "Accepted.\n");
}

TEST_CASE("cli scheduler: status of every service and of one", "[cli][scheduler]") {
  const auto status = Parse<sched::StatusResponse>(
      R"({"services":[)"
      R"({"name":"greeter","desiredReplicas":3,"healthy":2,"liveVersion":4,"state":"rolling_out",)"
      R"("detail":"v5: 1 of 3 started"},)"
      R"({"name":"shop","desiredReplicas":1,"healthy":1,"liveVersion":2,"state":"failed",)"
      R"("paused":true,"pausedReason":"v3 failed: crash_loop"},)"
      R"({"name":"new","state":"pending"}],)"
      R"("nodes":[{"id":"n-1","region":"eu","host":"box1","lastSeen":"2023-11-14T22:13:15Z",)"
      R"("alive":true,"instances":4},{"id":"n-2","region":"eu","host":"box2",)"
      R"("lastSeen":"2023-11-14T21:13:20Z","instances":0}]})");
  CHECK(muon::cli::RenderStatusOverview(status, kNow) ==
        "NAME      RELEASE   REPLICAS   STATE         AUTO-DEPLOY                     DETAIL\n"
        "greeter   v4        2/3        rolling_out   on                              v5: 1 of 3 "
        "started\n"
        "shop      v2        1/1        failed        paused: v3 failed: crash_loop   -\n"
        "new       -         0/0        pending       on                              -\n"
        "\n"
        "NODE   REGION   HOST   ALIVE   LAST SEEN   INSTANCES\n"
        "n-1    eu       box1   yes     5s ago      4\n"
        "n-2    eu       box2   no      1h ago      0\n");
  CHECK(
      muon::cli::RenderStatusOverview(sched::StatusResponse{}, kNow).rfind("No services yet.", 0) ==
      0);

  const auto one = Parse<sched::ServiceStatus>(
      R"({"name":"greeter","repo":"acme/shop","folder":"services/greeter","desiredReplicas":2,)"
      R"("healthy":1,"liveVersion":4,"state":"rolling_out","detail":"v5: waiting for i-9",)"
      R"("rollout":{"id":"12","version":5,"fromVersion":4,"state":"running",)"
      R"("startedAt":"2023-11-14T22:12:20Z"},)"
      R"("lock":{"service":"greeter","holder":"rollout 12","reason":"deploy v5",)"
      R"("expiresAt":"2023-11-14T22:18:20Z"},)"
      R"("instances":[)"
      R"({"id":"i-7","version":4,"node":"n-1","desired":"running","state":"healthy","pid":4242,)"
      R"("restarts":1,"startedAt":"2023-11-14T20:12:19Z"},)"
      R"({"id":"i-8","version":4,"node":"n-2","desired":"stopped","state":"stopping","pid":4243,)"
      R"("startedAt":"2023-11-14T20:12:19Z"},)"
      R"({"id":"i-9","version":5,"node":"n-1","desired":"running","state":"backoff","restarts":2,)"
      R"("category":"crash_loop","detail":"exited with code 1"}]})");
  CHECK(muon::cli::RenderServiceStatus(one, kNow) ==
        "service:       greeter\n"
        "repo:          acme/shop, folder services/greeter\n"
        "release:       v4 live\n"
        "replicas:      1/2 healthy\n"
        "state:         rolling_out\n"
        "detail:        v5: waiting for i-9\n"
        "auto-deploy:   on\n"
        "rollout:       #12 v4 -> v5 running, started 1m ago\n"
        "lock:          held by rollout 12 (deploy v5), expires in 5m\n"
        "\n"
        "INSTANCE   RELEASE   NODE   STATE                 PID    UPTIME   RESTARTS   "
        "CATEGORY/DETAIL\n"
        "i-7        v4        n-1    healthy               4242   2h1m     1          -\n"
        "i-8        v4        n-2    stopping -> stopped   4243   -        0          -\n"
        "i-9        v5        n-1    backoff               -      -        2          "
        "crash_loop: exited with code 1\n");
}

TEST_CASE("cli scheduler: releases and describe", "[cli][scheduler]") {
  const auto list = Parse<sched::ListReleasesResponse>(
      R"({"releases":[)"
      R"({"version":5,"status":"failed","reason":"config","commit":"1a2b3c4d5e6f",)"
      R"("artifactDigest":"ab12cd34ef56ab12","author":"env set by dev@example.com",)"
      R"("createdAt":"2023-11-14T22:03:20Z","category":"config_missing","detail":"DB_URL unset",)"
      R"("lastLines":["boot","panic: DB_URL"]},)"
      R"({"version":4,"status":"live","reason":"build","commit":"1a2b3c4d5e6f",)"
      R"("artifactDigest":"ab12cd34ef56ab12","author":"push d-1",)"
      R"("createdAt":"2023-11-14T20:13:20Z"}]})");
  CHECK(
      muon::cli::RenderReleases(list.releases(), kNow) ==
      "VERSION   STATUS   REASON   COMMIT    ARTIFACT       AUTHOR                       AGE       "
      "CATEGORY/DETAIL\n"
      "v5        failed   config   1a2b3c4   ab12cd34ef56   env set by dev@example.com   10m ago   "
      "config_missing: DB_URL unset\n"
      "v4        live     build    1a2b3c4   ab12cd34ef56   push d-1                     2h ago    "
      "-\n"
      "\n"
      "v5 failed (config_missing); its last lines:\n"
      "  boot\n"
      "  panic: DB_URL\n");

  auto describe = Parse<sched::DescribeResponse>(
      R"({"status":{"name":"greeter","desiredReplicas":1,"healthy":1,"liveVersion":4,)"
      R"("state":"converged","envKeys":["LOG_LEVEL","PORT"],"secretKeys":["API_KEY"],)"
      R"("requiredEnv":["API_KEY","DB_URL","PORT"]},)"
      R"("events":[{"id":"1","service":"greeter","type":"release.created","version":4,)"
      R"("message":"v4 from build b-1","time":"2023-11-14T22:00:00Z"}]})");
  *describe.mutable_releases() = list.releases();
  const std::string text = muon::cli::RenderDescribe(describe, kNow);
  CHECK(text.find("Config:\n"
                  "  API_KEY (secret, required)\n"
                  "  DB_URL (required, MISSING)\n"
                  "  LOG_LEVEL\n"
                  "  PORT (required)\n"
                  "  1 required key is missing: set with muon env set greeter KEY=VALUE\n") !=
        std::string::npos);
  CHECK(text.find("\nReleases:\nVERSION ") != std::string::npos);
  CHECK(text.find("\nRecent events:\n2023-11-14T22:00:00.000Z  greeter       release.created") !=
        std::string::npos);
  CHECK(text.rfind("service:       greeter\n", 0) == 0);
}

TEST_CASE("cli scheduler: history, drift, locks", "[cli][scheduler]") {
  const auto events = Parse<sched::ListEventsResponse>(
      R"({"events":[{"id":"1","type":"release.created","version":4,"message":"v4 from b-1",)"
      R"("time":"2023-11-14T22:00:00Z"},{"id":"2","type":"scale","message":"1 -> 3",)"
      R"("time":"2023-11-14T22:01:00.5Z"}]})");
  CHECK(muon::cli::RenderHistory(events.events()) ==
        "TIME                       TYPE              RELEASE   MESSAGE\n"
        "2023-11-14T22:00:00.000Z   release.created   v4        v4 from b-1\n"
        "2023-11-14T22:01:00.500Z   scale             -         1 -> 3\n");

  CHECK(muon::cli::RenderDrift(sched::DriftResponse{}) ==
        "No drift: every instance is as desired.\n");
  const auto drift = Parse<sched::DriftResponse>(
      R"({"items":[{"service":"greeter","instance":"i-3","node":"n-2","kind":"lost",)"
      R"("detail":"node n-2 not seen for 45s"}]})");
  CHECK(muon::cli::RenderDrift(drift) ==
        "SERVICE   INSTANCE   NODE   KIND   DETAIL\n"
        "greeter   i-3        n-2    lost   node n-2 not seen for 45s\n");

  CHECK(muon::cli::RenderLocks(sched::ListLocksResponse{}, kNow) == "No deploy locks are held.\n");
  const auto locks = Parse<sched::ListLocksResponse>(
      R"({"locks":[{"service":"greeter","holder":"rollout 12","reason":"deploy v5",)"
      R"("acquiredAt":"2023-11-14T22:11:20Z","expiresAt":"2023-11-14T22:23:20Z"},)"
      R"({"service":"shop","holder":"rollout 9","expiresAt":"2023-11-14T22:13:00Z"}]})");
  CHECK(muon::cli::RenderLocks(locks, kNow) ==
        "SERVICE   HOLDER       REASON      ACQUIRED   EXPIRES\n"
        "greeter   rollout 12   deploy v5   2m ago     in 10m\n"
        "shop      rollout 9    -           -          expired\n");
}

TEST_CASE("cli scheduler: when muon wait is done", "[cli][scheduler]") {
  using muon::cli::JudgeWait;
  using muon::cli::WaitVerdict;
  auto status = [](const std::string& json) { return Parse<sched::ServiceStatus>(json); };
  // Any release.
  CHECK(JudgeWait(status(R"({"state":"converged","liveVersion":4})"), 0) ==
        WaitVerdict::kConverged);
  CHECK(JudgeWait(status(R"({"state":"stopped"})"), 0) == WaitVerdict::kConverged);
  CHECK(JudgeWait(status(R"({"state":"failed"})"), 0) == WaitVerdict::kFailed);
  for (const char* state : {"rolling_out", "degraded", "pending", ""}) {
    INFO(state);
    CHECK(JudgeWait(status(std::string(R"({"state":")") + state + R"("})"), 0) ==
          WaitVerdict::kWaiting);
  }
  // A given release: v5.
  CHECK(JudgeWait(status(R"({"state":"converged","liveVersion":4})"), 5) == WaitVerdict::kWaiting);
  CHECK(JudgeWait(status(R"({"state":"converged","liveVersion":5})"), 5) ==
        WaitVerdict::kConverged);
  CHECK(JudgeWait(status(R"({"state":"converged","liveVersion":6})"), 5) ==
        WaitVerdict::kConverged);
  CHECK(JudgeWait(status(R"({"state":"rolling_out","liveVersion":4,)"
                         R"("rollout":{"version":5,"state":"running"}})"),
                  5) == WaitVerdict::kWaiting);
  CHECK(JudgeWait(status(R"({"state":"failed","liveVersion":4,)"
                         R"("rollout":{"version":5,"state":"failed"}})"),
                  5) == WaitVerdict::kFailed);
  // An older failure is not this release's.
  CHECK(JudgeWait(status(R"({"state":"failed","liveVersion":3,)"
                         R"("rollout":{"version":4,"state":"failed"}})"),
                  5) == WaitVerdict::kWaiting);

  const auto rolling = status(
      R"({"name":"greeter","state":"rolling_out","liveVersion":4,"desiredReplicas":3,"healthy":2,)"
      R"("detail":"starting i-9","rollout":{"version":5,"fromVersion":4,"state":"running"}})");
  CHECK(muon::cli::WaitProgressLine(rolling) ==
        "rolling_out  v4  2/3 healthy  rolling out v4 -> v5  starting i-9");

  const auto failed = status(
      R"({"name":"greeter","state":"failed","liveVersion":4,"desiredReplicas":2,"healthy":2,)"
      R"("rollout":{"id":"12","version":5,"fromVersion":4,"state":"failed",)"
      R"("category":"health_timeout","detail":"no answer to $SRV.PING within 30s"},)"
      R"("instances":[{"id":"i-9","version":5,"state":"failed","category":"health_timeout",)"
      R"("detail":"30s","lastLines":["listening on :0"]},{"id":"i-7","version":4,)"
      R"("state":"healthy"}]})");
  sched::Release release;
  release.set_version(5);
  release.set_category("health_timeout");
  release.add_last_lines("starting");
  release.add_last_lines("listening on :0");
  CHECK(muon::cli::RenderWaitFailure(failed, &release) ==
        "rollout #12 of v5 failed: health_timeout: no answer to $SRV.PING within 30s\n"
        "v4 keeps serving (2/2 healthy)\n"
        "instance i-9 (v5) failed: health_timeout: 30s\n"
        "  listening on :0\n"
        "release v5 (health_timeout), last lines:\n"
        "  starting\n"
        "  listening on :0\n");

  // A release that failed before a rollout of it started: it is named, not the last rollout
  // (which succeeded).
  const auto refused = status(
      R"({"name":"greeter","state":"failed","liveVersion":4,"desiredReplicas":1,"healthy":1,)"
      R"("rollout":{"id":"11","version":4,"fromVersion":3,"state":"succeeded"}})");
  sched::Release missing;
  missing.set_version(5);
  missing.set_status("failed");
  missing.set_category("config_missing");
  missing.set_detail("required config not set: API_KEY");
  CHECK(muon::cli::RenderWaitFailure(refused, &missing) ==
        "release v5 failed before its rollout started: config_missing: required config not set: "
        "API_KEY\n"
        "v4 keeps serving (1/1 healthy)\n");
}
