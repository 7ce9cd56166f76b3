// End to end, as a user: scripts/up brings the local stack up (NATS, PostgreSQL, auth, logs,
// echo, ingress) on free ports in a throw-away state dir, and the `muon` CLI drives it over HTTP.

#include <signal.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "harness.h"
#include "http_client.h"
#include "webhook.h"

using namespace std::chrono_literals;

namespace {

// The stack for this test binary; scripts/down --purge removes it again.
class LocalStack {
 public:
  LocalStack() {
    env_ = {{"MUON_STATE_DIR", dir_.path() + "/state"},
            {"MUON_BUILD_DIR", std::filesystem::path(muon::testing::BinDir()).parent_path()},
            {"MUON_NATS_PORT", std::to_string(muon::testing::FreePort())},
            {"MUON_PG_PORT", std::to_string(muon::testing::FreePort())},
            {"MUON_INGRESS_PORT", std::to_string(muon::testing::FreePort())},
            {"XDG_CONFIG_HOME", dir_.path() + "/admin-config"}};
    up_ = muon::RunCommand({.program = muon::testing::SourceDir() + "/scripts/up",
                            .args = {"--no-build"},
                            .env = env_},
                           180s);
  }
  ~LocalStack() {
    muon::RunCommand(
        {.program = muon::testing::SourceDir() + "/scripts/down", .args = {"--purge"}, .env = env_},
        120s);
  }

  // Runs the CLI as the user whose config lives in <dir>/<user>-config.
  muon::RunResult Muon(const std::string& user, std::vector<std::string> args,
                       const std::string& stdin_text = "") {
    auto env = env_;
    env["XDG_CONFIG_HOME"] = dir_.path() + "/" + user + "-config";
    if (stdin_text.empty()) {
      return muon::RunCommand(
          {.program = muon::testing::BinDir() + "/muon", .args = std::move(args), .env = env}, 30s);
    }
    // Feed stdin through a shell: the password never appears in argv.
    const std::string input = dir_.path() + "/stdin-" + user;
    {
      std::FILE* f = std::fopen(input.c_str(), "w");
      std::fputs(stdin_text.c_str(), f);
      std::fclose(f);
    }
    std::string command = "exec \"$0\"";
    for (size_t i = 0; i < args.size(); ++i) command += " \"$" + std::to_string(i + 1) + "\"";
    command += " < " + input;
    std::vector<std::string> shell_args = {"-c", command, muon::testing::BinDir() + "/muon"};
    shell_args.insert(shell_args.end(), args.begin(), args.end());
    return muon::RunCommand({.program = "/bin/sh", .args = shell_args, .env = env}, 30s);
  }

  const muon::RunResult& up() const { return up_; }
  // scripts/up again: restarts whatever process of the stack is no longer running.
  muon::RunResult Up() {
    return muon::RunCommand({.program = muon::testing::SourceDir() + "/scripts/up",
                             .args = {"--no-build"},
                             .env = env_},
                            180s);
  }
  // The pid of a stack process ("github-events-1"), from scripts/up's pid file.
  pid_t Pid(const std::string& process) const {
    std::ifstream in(env_.at("MUON_STATE_DIR") + "/pids/" + process + ".pid");
    pid_t pid = 0;
    in >> pid;
    return pid;
  }
  const std::string& dir() const { return dir_.path(); }
  std::map<std::string, std::string> UserEnv(const std::string& user) const {
    auto env = env_;
    env["XDG_CONFIG_HOME"] = dir_.path() + "/" + user + "-config";
    return env;
  }

  // Runs COMMAND under muon-run (the node runtime's output capture) as <service>/<instance>.
  muon::RunResult RunCaptured(const std::string& service, const std::string& instance,
                              const std::string& shell_command) {
    return muon::RunCommand(
        {.program = muon::testing::BinDir() + "/muon-run",
         .args = {"--server", "nats://127.0.0.1:" + env_.at("MUON_NATS_PORT"), "--service", service,
                  "--instance", instance, "--", "/bin/sh", "-c", shell_command}},
        30s);
  }

 private:
  muon::testing::TempDir dir_{"muon-test-e2e"};
  std::map<std::string, std::string> env_;
  muon::RunResult up_;
};

LocalStack& Stack() {
  static LocalStack stack;
  return stack;
}

}  // namespace

TEST_CASE("scripts/up starts the stack, logs the CLI in and calls echo", "[e2e]") {
  const auto& up = Stack().up();
  INFO(up.output);
  REQUIRE(up.status.Success());
  CHECK(up.output.find("Logged in to") != std::string::npos);
  CHECK(up.output.find("hello from scripts/up") != std::string::npos);
}

TEST_CASE("login, call echo, list services through the CLI", "[e2e]") {
  auto& stack = Stack();
  REQUIRE(stack.up().status.Success());

  auto who = stack.Muon("admin", {"whoami"});
  INFO(who.output);
  CHECK(who.status.code == 0);
  CHECK(who.output.find("admin@muon.local") != std::string::npos);

  auto call =
      stack.Muon("admin", {"call", "echo", "Echo", R"({"message":"e2e"})", "--output", "json"});
  INFO(call.output);
  CHECK(call.status.code == 0);
  CHECK(call.output.find(R"("message":"e2e")") != std::string::npos);

  auto services = stack.Muon("admin", {"services"});
  INFO(services.output);
  CHECK(services.status.code == 0);
  CHECK(services.output.find("echo") != std::string::npos);
  CHECK(services.output.find("Echo,Sleep") != std::string::npos);

  auto missing = stack.Muon("admin", {"call", "echo", "Nope"});
  CHECK(missing.status.code == 5);  // not found
  CHECK(missing.output.find("error: service echo has no method Nope (404") != std::string::npos);
}

TEST_CASE("an account without the role gets 403 and exit code 4; no session gets 3", "[e2e]") {
  auto& stack = Stack();
  REQUIRE(stack.up().status.Success());

  auto invite = stack.Muon(
      "admin", {"invites", "create", "dev@example.com", "--role", "developer", "--output", "json"});
  INFO(invite.output);
  REQUIRE(invite.status.code == 0);
  const auto at = invite.output.find(R"("code":")");
  REQUIRE(at != std::string::npos);
  const std::string code = invite.output.substr(at + 8, invite.output.find('"', at + 8) - at - 8);

  auto signup = stack.Muon(
      "dev", {"signup", "--invite", code, "--email", "dev@example.com", "--password-stdin"},
      "a long developer password\n");
  INFO(signup.output);
  REQUIRE(signup.status.code == 0);

  auto allowed = stack.Muon("dev", {"call", "echo", "Echo", R"({"message":"dev"})"});
  CHECK(allowed.status.code == 0);

  auto denied = stack.Muon("dev", {"accounts"});
  INFO(denied.output);
  CHECK(denied.status.code == 4);  // forbidden
  CHECK(denied.output.find("dev@example.com may not call auth.ListAccounts (403 Forbidden") !=
        std::string::npos);

  auto anonymous = stack.Muon("nobody", {"call", "echo", "Echo"});
  INFO(anonymous.output);
  CHECK(anonymous.status.code == 3);  // unauthorized

  auto wrong = stack.Muon("nobody", {"login", "--email", "admin@muon.local", "--password-stdin"},
                          "not the password\n");
  CHECK(wrong.status.code == 3);
  CHECK(wrong.output.find("wrong email or password") != std::string::npos);
}

TEST_CASE("an instance that prints a line and exits 1: its lines and the exit are in muon logs",
          "[e2e]") {
  auto& stack = Stack();
  REQUIRE(stack.up().status.Success());
  const auto run = stack.RunCaptured("crashy", "i-1", "echo about to fail; exit 1");
  CHECK(run.status.code == 1);
  // Stored asynchronously by muon-logs: poll until both lines are there.
  muon::RunResult logs;
  const bool found = muon::testing::WaitUntil(
      [&] {
        logs = stack.Muon("admin", {"logs", "crashy", "--since", "10m"});
        return logs.output.find("about to fail") != std::string::npos &&
               logs.output.find("process ended: exit code 1") != std::string::npos;
      },
      15s, 200ms);
  INFO(logs.output);
  CHECK(found);
  CHECK(logs.output.find("app      crashy/i-1 info  about to fail") != std::string::npos);
  CHECK(logs.output.find("system   crashy/i-1 error process ended: exit code 1") !=
        std::string::npos);

  // Filters: only the system notes, as JSON lines.
  auto system = stack.Muon("admin", {"logs", "crashy", "--source", "system", "--output", "json"});
  INFO(system.output);
  CHECK(system.status.code == 0);
  CHECK(system.output.find("about to fail") == std::string::npos);
  CHECK(system.output.find("\"source\":\"SOURCE_SYSTEM\"") != std::string::npos);

  auto bad = stack.Muon("admin", {"logs", "crashy", "--severity", "loud"});
  CHECK(bad.status.code == 2);
  CHECK(bad.output.find("--severity") != std::string::npos);
}

TEST_CASE("muon logs -f prints a line an instance prints within a second", "[e2e]") {
  auto& stack = Stack();
  REQUIRE(stack.up().status.Success());
  const std::string out = stack.dir() + "/follow.out";
  muon::Process follower({.program = muon::testing::BinDir() + "/muon",
                          .args = {"logs", "ticker", "-f", "-n", "0"},
                          .env = stack.UserEnv("admin"),
                          .output_file = out});
  auto contents = [&] {
    std::ifstream in(out);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  // The tail is live once a warm-up line shows up (each run prints a new one).
  int warmups = 0;
  REQUIRE(muon::testing::WaitUntil(
      [&] {
        const std::string marker = "warm-up-" + std::to_string(++warmups);
        stack.RunCaptured("ticker", "i-1", "echo " + marker);
        return muon::testing::WaitUntil(
            [&] { return contents().find(marker) != std::string::npos; }, 1s, 20ms);
      },
      20s, 10ms));
  const auto start = std::chrono::steady_clock::now();
  stack.RunCaptured("ticker", "i-2", "echo the-measured-line");
  const bool seen = muon::testing::WaitUntil(
      [&] { return contents().find("the-measured-line") != std::string::npos; }, 5s, 5ms);
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  INFO(contents());
  WARN("muon logs -f: printed " << elapsed.count() << " ms after the instance started");
  CHECK(seen);
  CHECK(elapsed < 1s);
  CHECK(contents().find("ticker/i-2 info  the-measured-line") != std::string::npos);
}

TEST_CASE(
    "a signed GitHub push through the ingress is stored once; a bad signature is 401 and "
    "stored nowhere; muon deliveries shows both",
    "[e2e][github]") {
  auto& stack = Stack();
  REQUIRE(stack.up().status.Success());
  const std::string secret_file = stack.dir() + "/webhook-secret";
  std::ofstream(secret_file) << "e2e webhook secret\n";
  auto add = stack.Muon("admin", {"repos", "add", "acme/shop", "--secret-file", secret_file,
                                  "--clone-url", stack.dir() + "/shop.git"});
  INFO(add.output);
  REQUIRE(add.status.code == 0);
  CHECK(add.output.find("/v1/github/events") != std::string::npos);
  CHECK(add.output.find("e2e webhook secret") == std::string::npos);

  // A push shaped as GitHub sends it, padded past NATS' default 1 MiB payload limit (GitHub
  // sends up to 25 MB) with a long commit message, as a big push has.
  const std::string body = R"({"ref":"refs/heads/main","before":")" + std::string(40, 'b') +
                           R"(","after":")" + std::string(40, 'a') +
                           R"(","created":false,"deleted":false,"forced":false,)" +
                           R"("commits":[{"id":")" + std::string(40, 'a') + R"(","message":")" +
                           std::string(3 * 1024 * 1024, 'm') +
                           R"(","added":[],"removed":[],"modified":["greeter/main.py"]}],)" +
                           R"("repository":{"full_name":"acme/shop","default_branch":"main"},)" +
                           R"("pusher":{"name":"dev","email":null},"sender":{"login":"dev"}})";
  const std::string url =
      "http://127.0.0.1:" + stack.UserEnv("admin").at("MUON_INGRESS_PORT") + "/v1/github/events";
  auto post = [&](const std::string& delivery, const std::string& signature) {
    return muon::testing::HttpRequest("POST", url, body,
                                      {{"Content-Type", "application/json"},
                                       {"User-Agent", "GitHub-Hookshot/044aadd"},
                                       {"X-GitHub-Event", "push"},
                                       {"X-GitHub-Delivery", delivery},
                                       {"X-GitHub-Hook-ID", "292430182"},
                                       {"X-GitHub-Hook-Installation-Target-ID", "79929171"},
                                       {"X-GitHub-Hook-Installation-Target-Type", "repository"},
                                       {"X-Hub-Signature", "sha1=ignored-by-muon"},
                                       {"X-Hub-Signature-256", signature}},
                                      30s);
  };
  const std::string good = muon::github_events::SignatureHeader("e2e webhook secret", body);
  auto first = post("0b3c6a70-cf2a-11ee-8f7e-6b2f1d3c9a01", good);
  INFO(first.body);
  CHECK(first.status == 200);
  CHECK(first.body.find(R"("outcome":"accepted")") != std::string::npos);
  auto again = post("0b3c6a70-cf2a-11ee-8f7e-6b2f1d3c9a01", good);
  CHECK(again.status == 200);
  CHECK(again.body.find(R"("outcome":"duplicate")") != std::string::npos);
  auto forged = post("0b3c6a70-cf2a-11ee-8f7e-6b2f1d3c9a02",
                     muon::github_events::SignatureHeader("not the secret", body));
  INFO(forged.body);
  CHECK(forged.status == 401);
  CHECK(forged.body.find(R"("id":"github-events.Webhook")") != std::string::npos);

  auto deliveries = stack.Muon("admin", {"deliveries", "--repo", "acme/shop"});
  INFO(deliveries.output);
  CHECK(deliveries.status.code == 0);
  CHECK(deliveries.output.find("0b3c6a70-cf2a-11ee-8f7e-6b2f1d3c9a01") != std::string::npos);
  CHECK(deliveries.output.find("0b3c6a70-cf2a-11ee-8f7e-6b2f1d3c9a02") == std::string::npos);
  CHECK(deliveries.output.find("bad signature") != std::string::npos);
}

namespace {

using muon::testing::Git;

// A push payload with the fields GitHub sends (trimmed commit metadata).
std::string GithubPush(const std::string& repo, const std::string& before, const std::string& after,
                       const std::vector<std::string>& modified) {
  std::string paths;
  for (const auto& p : modified) paths += (paths.empty() ? "\"" : ",\"") + p + "\"";
  return "{\"ref\":\"refs/heads/main\",\"before\":\"" + before + "\",\"after\":\"" + after +
         "\",\"repository\":{\"id\":1,\"name\":\"mono\",\"full_name\":\"" + repo +
         "\",\"private\":true,\"default_branch\":\"main\",\"master_branch\":\"main\"},"
         "\"pusher\":{\"name\":\"dev\",\"email\":\"dev@example.com\"},"
         "\"sender\":{\"login\":\"dev\",\"id\":2},\"created\":false,\"deleted\":false,"
         "\"forced\":false,\"base_ref\":null,\"compare\":\"https://github.com/" +
         repo + "/compare/x...y\",\"commits\":[{\"id\":\"" + after +
         "\",\"tree_id\":\"t\",\"distinct\":true,\"message\":\"change\",\"timestamp\":"
         "\"2026-12-01T08:00:00Z\",\"url\":\"u\",\"author\":{\"name\":\"Dev\",\"email\":"
         "\"dev@example.com\"},\"committer\":{\"name\":\"Dev\",\"email\":\"dev@example.com\"},"
         "\"added\":[],\"removed\":[],\"modified\":[" +
         paths + "]}],\"head_commit\":null}";
}

}  // namespace

TEST_CASE(
    "a real git push builds the service that changed; a step exiting 3 shows in muon builds "
    "show; a README change builds nothing and muon deliveries says so",
    "[e2e][builder]") {
  auto& stack = Stack();
  REQUIRE(stack.up().status.Success());
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(stack.dir()) / "mono";
  const std::string origin = (dir / "origin.git").string();
  const std::string work = (dir / "work").string();
  fs::create_directories(dir);
  Git(dir.string(), {"init", "--quiet", "--bare", "--initial-branch=main", origin});
  fs::copy(fs::path(muon::testing::SourceDir()) / "examples/monorepo", work,
           fs::copy_options::recursive);
  Git(work, {"init", "--quiet", "--initial-branch=main"});
  Git(work, {"add", "-A"});
  Git(work, {"commit", "--quiet", "-m", "monorepo"});
  Git(work, {"remote", "add", "origin", origin});
  Git(work, {"push", "--quiet", "origin", "HEAD"});
  auto head = [&] { return Git(work, {"rev-parse", "HEAD"}).substr(0, 40); };

  const std::string secret_file = stack.dir() + "/mono-secret";
  std::ofstream(secret_file) << "mono secret\n";
  auto add = stack.Muon(
      "admin", {"repos", "add", "acme/mono", "--secret-file", secret_file, "--clone-url", origin});
  INFO(add.output);
  REQUIRE(add.status.code == 0);

  const std::string url =
      "http://127.0.0.1:" + stack.UserEnv("admin").at("MUON_INGRESS_PORT") + "/v1/github/events";
  // A delivery with every header GitHub sends, signed with the repo's secret.
  auto send = [&](const std::string& delivery, const std::string& body) {
    return muon::testing::HttpRequest(
        "POST", url, body,
        {{"Content-Type", "application/json"},
         {"User-Agent", "GitHub-Hookshot/044aadd"},
         {"X-GitHub-Event", "push"},
         {"X-GitHub-Delivery", delivery},
         {"X-GitHub-Hook-ID", "292430182"},
         {"X-GitHub-Hook-Installation-Target-ID", "79929171"},
         {"X-GitHub-Hook-Installation-Target-Type", "repository"},
         {"X-Hub-Signature", "sha1=ignored-by-muon"},
         {"X-Hub-Signature-256", muon::github_events::SignatureHeader("mono secret", body)}},
        30s);
  };
  auto push = [&](const std::string& delivery, const std::string& before,
                  const std::vector<std::string>& paths) {
    Git(work, {"add", "-A"});
    Git(work, {"commit", "--quiet", "-m", "change " + delivery});
    Git(work, {"push", "--quiet", "origin", "HEAD"});
    const std::string after = head();
    auto r = send(delivery, GithubPush("acme/mono", before, after, paths));
    INFO(r.body);
    REQUIRE(r.status == 200);
    return after;
  };
  // The build of `service` at `commit`, once it has finished: its `muon builds show` output.
  auto finished = [&](const std::string& service, const std::string& commit) {
    std::string shown;
    const bool done = muon::testing::WaitUntil(
        [&] {
          // The table's row of this commit starts with the build id.
          auto list = stack.Muon("admin", {"builds", "--service", service});
          const auto at = list.output.find(commit.substr(0, 12));
          if (at == std::string::npos) return false;
          const auto row = list.output.rfind('\n', at) + 1;
          const std::string id = list.output.substr(row, list.output.find(' ', row) - row);
          auto show = stack.Muon("admin", {"builds", "show", id});
          shown = show.output;
          return show.output.find("succeeded") != std::string::npos ||
                 show.output.find("failed") != std::string::npos;
        },
        90s, 200ms);
    INFO(shown);
    INFO(stack.Muon("admin", {"builds"}).output);
    INFO(stack.Muon("admin", {"deliveries", "--repo", "acme/mono"}).output);
    REQUIRE(done);
    return shown;
  };

  const std::string c0 = head();
  std::ofstream(work + "/hello/VERSION") << "2\n";
  const std::string c1 = push("e2e-build-1", c0, {"hello/VERSION"});
  const std::string hello = finished("hello", c1);
  CHECK(hello.find("succeeded") != std::string::npos);
  CHECK(hello.find(c1.substr(0, 12)) != std::string::npos);

  std::ofstream(work + "/clock/muon.yaml")
      << "name: clock\nbuild:\n  steps:\n    - name: check\n"
         "      run: \"echo checking the clock; exit 3\"\n  outputs: [dist]\n"
         "run:\n  command: ./dist/clock\n";
  const std::string c2 = push("e2e-build-2", c1, {"clock/muon.yaml"});
  const std::string clock = finished("clock", c2);
  CHECK(clock.find("failed") != std::string::npos);
  CHECK(clock.find("build_failed") != std::string::npos);
  CHECK(clock.find("check") != std::string::npos);
  CHECK(clock.find("3") != std::string::npos);
  CHECK(clock.find("checking the clock") != std::string::npos);
  // Only clock was built for that push.
  auto hello_builds = stack.Muon("admin", {"builds", "--service", "hello"});
  CHECK(hello_builds.output.find(c2.substr(0, 12)) == std::string::npos);

  std::ofstream(work + "/README.md") << "docs only\n";
  push("e2e-build-3", c2, {"README.md"});
  std::string deliveries;
  CHECK(muon::testing::WaitUntil(
      [&] {
        deliveries = stack.Muon("admin", {"deliveries", "--repo", "acme/mono"}).output;
        return deliveries.find("no service changed") != std::string::npos;
      },
      60s, 200ms));
  INFO(deliveries);
  CHECK(deliveries.find("e2e-build-1") != std::string::npos);

  // GitHub redelivers the first push: answered as a duplicate, nothing built again.
  {
    auto again = send("e2e-build-1", GithubPush("acme/mono", c0, c1, {"hello/VERSION"}));
    CHECK(again.status == 200);
    CHECK(again.body.find(R"("outcome":"duplicate")") != std::string::npos);
  }

  // Both services change in one push: both build.
  fs::copy_file(fs::path(muon::testing::SourceDir()) / "examples/monorepo/clock/muon.yaml",
                work + "/clock/muon.yaml", fs::copy_options::overwrite_existing);
  std::ofstream(work + "/hello/VERSION") << "4\n";
  const std::string c4 = push("e2e-build-4", head(), {"hello/VERSION", "clock/muon.yaml"});
  CHECK(finished("hello", c4).find("succeeded") != std::string::npos);
  CHECK(finished("clock", c4).find("succeeded") != std::string::npos);

  // github-events killed with -9 right after its 2xx: once it is back, the push is processed and
  // built exactly once.
  std::ofstream(work + "/hello/VERSION") << "5\n";
  const pid_t github_events = stack.Pid("github-events-1");
  REQUIRE(github_events > 0);
  const std::string c5 = push("e2e-build-5", c4, {"hello/VERSION"});
  REQUIRE(::kill(github_events, SIGKILL) == 0);
  auto restarted = stack.Up();
  INFO(restarted.output);
  REQUIRE(restarted.status.Success());
  CHECK(finished("hello", c5).find("succeeded") != std::string::npos);
  const std::string hello_list = stack.Muon("admin", {"builds", "--service", "hello"}).output;
  size_t rows = 0;
  for (size_t at = hello_list.find(c5.substr(0, 12)); at != std::string::npos;
       at = hello_list.find(c5.substr(0, 12), at + 1)) {
    ++rows;
  }
  CHECK(rows == 1);

  // A deleted branch: processed as such, nothing built.
  {
    const std::string body =
        "{\"ref\":\"refs/heads/feature-x\",\"before\":\"" + c5 + "\",\"after\":\"" +
        std::string(40, '0') +
        "\",\"created\":false,\"deleted\":true,\"forced\":false,\"commits\":[],"
        "\"head_commit\":null,\"repository\":{\"full_name\":\"acme/mono\","
        "\"default_branch\":\"main\"},\"pusher\":{\"name\":\"dev\",\"email\":null}}";
    auto deleted = send("e2e-delete-1", body);
    CHECK(deleted.status == 200);
    CHECK(muon::testing::WaitUntil(
        [&] {
          deliveries = stack.Muon("admin", {"deliveries", "--repo", "acme/mono"}).output;
          return deliveries.find("feature-x was deleted") != std::string::npos;
        },
        60s, 200ms));
  }
}
