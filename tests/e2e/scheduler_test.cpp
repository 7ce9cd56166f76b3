// End to end, the scheduler as its users see it: one local stack (scripts/up) with two scheduler
// processes (two nodes, a leading controller and a standby), a git repository of our own
// (acme/shop) whose pushes reach the platform as GitHub's signed push webhooks, and the `muon`
// CLI and plain HTTP through the ingress to watch and call what runs.
//
// The service `shop` is a `muon-bus serve` service (the SDK for shell commands, on every
// instance's PATH): Version answers the VERSION file its build packaged, Echo its input, Env and
// Key the GREETING and API_KEY variables it runs with.
//
// The test cases run in the order they are written and build on each other's state (one stack,
// one service, its releases piling up); each says what it starts from. MUON_SCHEDULER_MIN_READY
// is 1 s (scripts/up passes the environment on) to keep rollouts quick.

#include <google/protobuf/util/json_util.h>
#include <signal.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>

#include "harness.h"
#include "http_client.h"
#include "muon/builder/v1/builder.pb.h"
#include "muon/scheduler/v1/scheduler.pb.h"
#include "webhook.h"

using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace sched = muon::scheduler::v1;

namespace {

constexpr const char* kSecret = "shop webhook secret";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

template <typename Message>
Message FromJson(const std::string& json) {
  Message message;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const auto status = google::protobuf::util::JsonStringToMessage(json, &message, options);
  INFO(json);
  REQUIRE(status.ok());
  return message;
}

// The stack for this test binary; scripts/down --purge removes it again.
class LocalStack {
 public:
  LocalStack() {
    env_ = {{"MUON_STATE_DIR", dir_.path() + "/state"},
            {"MUON_BUILD_DIR", fs::path(muon::testing::BinDir()).parent_path()},
            {"MUON_NATS_PORT", std::to_string(muon::testing::FreePort())},
            {"MUON_PG_PORT", std::to_string(muon::testing::FreePort())},
            {"MUON_INGRESS_PORT", std::to_string(muon::testing::FreePort())},
            {"MUON_SCHEDULER_MIN_READY", "1s"},
            {"XDG_CONFIG_HOME", dir_.path() + "/admin-config"}};
    up_ = Up();
  }
  ~LocalStack() {
    muon::RunCommand(
        {.program = muon::testing::SourceDir() + "/scripts/down", .args = {"--purge"}, .env = env_},
        120s);
  }

  // scripts/up: the first time it starts everything; later it restarts what no longer runs.
  muon::RunResult Up() {
    return muon::RunCommand({.program = muon::testing::SourceDir() + "/scripts/up",
                             .args = {"--no-build", "--scale", "scheduler=2"},
                             .env = env_},
                            180s);
  }
  const muon::RunResult& up() const { return up_; }

  // The CLI as the admin scripts/up logged in.
  muon::RunResult Muon(std::vector<std::string> args) {
    return muon::RunCommand(
        {.program = muon::testing::BinDir() + "/muon", .args = std::move(args), .env = env_}, 150s);
  }
  // The CLI in the background (e.g. `muon wait` while the test does something else).
  muon::Process MuonInBackground(std::vector<std::string> args, const std::string& output_file) {
    return muon::Process({.program = muon::testing::BinDir() + "/muon",
                          .args = std::move(args),
                          .env = env_,
                          .output_file = output_file});
  }

  // A key of <state>/stack.env (DATABASE_URL, MUON_INGRESS_URL, ...).
  std::string StackEnv(const std::string& key) const {
    std::istringstream in(ReadFile(state() + "/stack.env"));
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(key + "=", 0) == 0) return line.substr(key.size() + 1);
    }
    return "";
  }
  // The pid in scripts/up's pid file of a process ("scheduler-1").
  pid_t Pid(const std::string& process) const {
    std::ifstream in(state() + "/pids/" + process + ".pid");
    pid_t pid = 0;
    in >> pid;
    return pid;
  }
  muon::RunResult Psql(const std::string& sql) {
    return muon::RunCommand(
        {.program = "psql",
         .args = {StackEnv("DATABASE_URL"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql}},
        30s);
  }
  std::string Logs(const std::string& process) const {
    const std::string text = ReadFile(state() + "/logs/" + process + ".log");
    return text.size() > 6000 ? text.substr(text.size() - 6000) : text;
  }

  const std::string& dir() const { return dir_.path(); }
  std::string state() const { return dir_.path() + "/state"; }

 private:
  muon::testing::TempDir dir_{"muon-test-e2e-sched"};
  std::map<std::string, std::string> env_;
  muon::RunResult up_;
};

LocalStack& Stack() {
  static LocalStack stack;
  return stack;
}

// ---- the acme/shop repository ----------------------------------------------------------------

using muon::testing::Git;

std::string JsonList(const std::vector<std::string>& items) {
  std::string out = "[";
  for (const auto& i : items) out += (out.size() > 1 ? ",\"" : "\"") + i + "\"";
  return out + "]";
}

// A push payload with the fields GitHub sends (trimmed commit metadata).
std::string GithubPush(const std::string& before, const std::string& after,
                       const std::vector<std::string>& added,
                       const std::vector<std::string>& modified,
                       const std::vector<std::string>& removed) {
  const bool created = before == muon::github_events::kZeroCommit;
  return "{\"ref\":\"refs/heads/main\",\"before\":\"" + before + "\",\"after\":\"" + after +
         "\",\"repository\":{\"id\":7,\"name\":\"shop\",\"full_name\":\"acme/shop\","
         "\"private\":true,\"default_branch\":\"main\",\"master_branch\":\"main\"},"
         "\"pusher\":{\"name\":\"dev\",\"email\":\"dev@example.com\"},"
         "\"sender\":{\"login\":\"dev\",\"id\":2},\"created\":" +
         (created ? "true" : "false") +
         ",\"deleted\":false,\"forced\":false,\"base_ref\":null,"
         "\"compare\":\"https://github.com/acme/shop/compare/x...y\",\"commits\":[{\"id\":\"" +
         after +
         "\",\"tree_id\":\"t\",\"distinct\":true,\"message\":\"change\",\"timestamp\":"
         "\"2026-12-01T08:00:00Z\",\"url\":\"u\",\"author\":{\"name\":\"Dev\",\"email\":"
         "\"dev@example.com\"},\"committer\":{\"name\":\"Dev\",\"email\":\"dev@example.com\"},"
         "\"added\":" +
         JsonList(added) + ",\"removed\":" + JsonList(removed) +
         ",\"modified\":" + JsonList(modified) + "}],\"head_commit\":null}";
}

// The good run command: Version, Echo, Env and Key.
const std::string kServe =
    R"(exec muon-bus serve shop --endpoint Version='cat dist/VERSION' --endpoint Echo=cat )"
    R"(--endpoint Env='printf %s "$GREETING"' --endpoint Key='printf %s "$API_KEY"')";

// shop's muon.yaml with this run command (a YAML literal block: no quoting to get wrong).
std::string Manifest(const std::string& command, const std::string& health_timeout = "10s",
                     const std::string& more_run_keys = "") {
  return "name: shop\n"
         "build:\n"
         "  steps:\n"
         "    - name: package\n"
         "      run: mkdir -p dist && cp VERSION dist/VERSION && echo \"packaged $(cat VERSION)\"\n"
         "  outputs: [dist]\n"
         "run:\n"
         "  command: |-\n"
         "    " +
         command +
         "\n"
         "  replicas: 1\n" +
         more_run_keys +
         "  health:\n"
         "    rpc: Version\n"
         "    timeout: " +
         health_timeout +
         "\n"
         "    interval: 1s\n"
         "  drain_grace: 5s\n";
}

class ShopRepo {
 public:
  explicit ShopRepo(LocalStack& stack) : stack_(stack) {
    const fs::path dir = fs::path(stack.dir()) / "shop";
    origin_ = (dir / "origin.git").string();
    work_ = (dir / "work").string();
    fs::create_directories(fs::path(work_) / "shop");
    Git(dir.string(), {"init", "--quiet", "--bare", "--initial-branch=main", origin_});
    Git(work_, {"init", "--quiet", "--initial-branch=main"});
    Git(work_, {"remote", "add", "origin", origin_});
    std::ofstream(work_ + "/README.md") << "acme's shop\n";
  }

  void Write(const std::string& path, const std::string& content) {
    std::ofstream(work_ + "/" + path) << content;
  }
  // The service's VERSION file and manifest, as the next push will have them.
  void Set(const std::string& version, const std::string& manifest) {
    Write("shop/VERSION", version + "\n");
    Write("shop/muon.yaml", manifest);
  }

  // Commits what changed, pushes it to the origin and sends GitHub's signed push webhook for it
  // to the ingress. Returns the new commit.
  std::string Push() {
    Git(work_, {"add", "-A"});
    Git(work_, {"commit", "--quiet", "-m", "change " + std::to_string(++pushes_)});
    Git(work_, {"push", "--quiet", "origin", "HEAD:main"});
    const std::string after = Trim(Git(work_, {"rev-parse", "HEAD"}));
    std::vector<std::string> added, modified, removed;
    if (head_.empty()) {
      std::istringstream files(Git(work_, {"ls-tree", "-r", "--name-only", after}));
      for (std::string f; std::getline(files, f);) added.push_back(f);
    } else {
      std::istringstream changes(Git(work_, {"diff", "--name-status", head_, after}));
      for (std::string line; std::getline(changes, line);) {
        const std::string path = line.substr(line.find('\t') + 1);
        (line[0] == 'A' ? added : line[0] == 'D' ? removed : modified).push_back(path);
      }
    }
    const std::string before =
        head_.empty() ? std::string(muon::github_events::kZeroCommit) : head_;
    const std::string body = GithubPush(before, after, added, modified, removed);
    const auto response = muon::testing::HttpRequest(
        "POST", stack_.StackEnv("MUON_INGRESS_URL") + "/v1/github/events", body,
        {{"Content-Type", "application/json"},
         {"User-Agent", "GitHub-Hookshot/044aadd"},
         {"X-GitHub-Event", "push"},
         {"X-GitHub-Delivery", "shop-push-" + std::to_string(pushes_) + "-" + after.substr(0, 8)},
         {"X-GitHub-Hook-ID", "292430182"},
         {"X-GitHub-Hook-Installation-Target-ID", "79929171"},
         {"X-GitHub-Hook-Installation-Target-Type", "repository"},
         {"X-Hub-Signature-256", muon::github_events::SignatureHeader(kSecret, body)}},
        30s);
    INFO(response.body);
    REQUIRE(response.status == 200);
    REQUIRE(Contains(response.body, R"("outcome":"accepted")"));
    head_ = after;
    return after;
  }

  const std::string& origin() const { return origin_; }

 private:
  LocalStack& stack_;
  std::string origin_;
  std::string work_;
  std::string head_;
  int pushes_ = 0;
};

// ---- reading the scheduler through the CLI -------------------------------------------------

sched::ServiceStatus Status() {
  auto r = Stack().Muon({"status", "shop", "--output", "json"});
  INFO(r.output);
  REQUIRE(r.status.code == 0);
  const auto response = FromJson<sched::StatusResponse>(r.output);
  REQUIRE(response.services_size() == 1);
  return response.services(0);
}

std::vector<sched::Node> Nodes() {
  auto r = Stack().Muon({"status", "--output", "json"});
  INFO(r.output);
  REQUIRE(r.status.code == 0);
  const auto response = FromJson<sched::StatusResponse>(r.output);
  return {response.nodes().begin(), response.nodes().end()};
}

// shop's releases, newest first; exit code 5 (no such service yet) is no release.
std::vector<sched::Release> Releases() {
  auto r = Stack().Muon({"releases", "shop", "-n", "100", "--output", "json"});
  INFO(r.output);
  if (r.status.code == 5) return {};
  REQUIRE(r.status.code == 0);
  const auto response = FromJson<sched::ListReleasesResponse>(r.output);
  return {response.releases().begin(), response.releases().end()};
}

std::optional<sched::Release> Release(int version) {
  for (auto& r : Releases()) {
    if (r.version() == version) return r;
  }
  return std::nullopt;
}

// `muon events [shop]` as JSON lines (oldest first); service "" for every service's.
std::vector<sched::Event> Events(const std::string& service = "shop") {
  std::vector<std::string> args = {"events"};
  if (!service.empty()) args.push_back(service);
  args.insert(args.end(), {"-n", "1000", "--output", "json"});
  auto r = Stack().Muon(args);
  INFO(r.output);
  REQUIRE(r.status.code == 0);
  std::vector<sched::Event> events;
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '{') continue;
    events.push_back(FromJson<sched::Event>(line));
  }
  return events;
}

std::string EventTrail(const std::vector<sched::Event>& events) {
  std::string out;
  for (const auto& e : events) {
    out += e.type() + " v" + std::to_string(e.version()) + " " + e.instance() + " " + e.message() +
           "\n";
  }
  return out;
}

bool HasEvent(const std::vector<sched::Event>& events, const std::string& type, int version,
              const std::string& instance = "") {
  for (const auto& e : events) {
    if (e.type() == type && (version == 0 || e.version() == version) &&
        (instance.empty() || e.instance() == instance)) {
      return true;
    }
  }
  return false;
}

int CountBuilds() {
  auto r = Stack().Muon({"builds", "--service", "shop", "-n", "500", "--output", "json"});
  INFO(r.output);
  REQUIRE(r.status.code == 0);
  return FromJson<muon::builder::v1::ListBuildsResponse>(r.output).builds_size();
}

// The release the scheduler made of `commit` once its build is done (polled; a build takes a
// few seconds).
sched::Release ReleaseOf(const std::string& commit) {
  std::optional<sched::Release> found;
  const bool made = muon::testing::WaitUntil(
      [&] {
        for (auto& r : Releases()) {
          if (r.commit() == commit && r.reason() == "build") found = r;
        }
        return found.has_value();
      },
      90s, 200ms);
  INFO("commit " << commit);
  INFO(Stack().Muon({"builds", "--service", "shop"}).output);
  INFO(Stack().Muon({"deliveries", "--repo", "acme/shop"}).output);
  REQUIRE(made);
  return *found;
}

// `muon wait shop` (the service as it is: done when converged, failed when failed).
muon::RunResult Wait() {
  return Stack().Muon({"wait", "shop", "--timeout", "120s"});
}

// What a failing rollout leaves to look at, for failure messages.
std::string Diagnostics() {
  auto& stack = Stack();
  return "muon describe shop:\n" + stack.Muon({"describe", "shop"}).output +
         "\nmuon events shop:\n" + stack.Muon({"events", "shop", "-n", "60"}).output +
         "\nscheduler-1.log (tail):\n" + stack.Logs("scheduler-1") + "\nscheduler-2.log (tail):\n" +
         stack.Logs("scheduler-2");
}

// ---- calling shop through the ingress -----------------------------------------------------

// An access token of the admin's session (valid 15 minutes; asked for again after 5).
std::string Token() {
  static std::string token;
  static std::chrono::steady_clock::time_point fetched;
  if (token.empty() || std::chrono::steady_clock::now() - fetched > 5min) {
    auto r = Stack().Muon({"token"});
    REQUIRE(r.status.code == 0);
    token = Trim(r.output);
    fetched = std::chrono::steady_clock::now();
  }
  return token;
}

struct Answer {
  int status = 0;  // 0: no HTTP answer
  std::string body;
};

Answer Call(const std::string& method, const std::string& body = "{}") {
  try {
    const auto r = muon::testing::HttpRequest(
        "POST", Stack().StackEnv("MUON_INGRESS_URL") + "/v1/shop/" + method, body,
        {{"Content-Type", "application/json"}, {"Authorization", "Bearer " + Token()}}, 15s);
    return {r.status, Trim(r.body)};
  } catch (const std::exception& e) {
    return {0, e.what()};
  }
}

// Polls until shop's `method` answers `expected` (instances still draining after a rollout may
// answer for a moment), then checks that the next calls all do.
void ExpectAnswers(const std::string& method, const std::string& expected) {
  Answer last;
  const bool answered = muon::testing::WaitUntil(
      [&] {
        last = Call(method);
        return last.status == 200 && last.body == expected;
      },
      15s, 100ms);
  INFO("shop." << method << " answered " << last.status << " " << last.body << ", expected "
               << expected);
  REQUIRE(answered);
  for (int i = 0; i < 5; ++i) {
    const Answer a = Call(method);
    CHECK(a.status == 200);
    CHECK(a.body == expected);
  }
}

// Calls shop.Version over keep-alive connections from several threads, as fast as answers come,
// and keeps what every call answered.
class CallLoad {
 public:
  CallLoad(std::string ingress_url, std::string token, int threads) {
    const std::string rest = ingress_url.substr(std::string("http://").size());
    host_ = rest.substr(0, rest.rfind(':'));
    port_ = rest.substr(rest.rfind(':') + 1);
    token_ = std::move(token);
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
  }
  ~CallLoad() { Stop(); }

  void Stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  struct Record {
    std::chrono::steady_clock::time_point at;
    std::string answer;
  };
  // Only after Stop().
  const std::vector<Record>& answers() const { return answers_; }
  const std::vector<std::string>& failures() const { return failures_; }
  int64_t failed() const { return failed_; }
  int64_t ok() const { return static_cast<int64_t>(answers_.size()); }
  int64_t calls() const { return calls_.load(); }

 private:
  void Run() {
    namespace beast = boost::beast;
    namespace http = beast::http;
    boost::asio::io_context io;
    std::optional<beast::tcp_stream> stream;
    beast::flat_buffer buffer;
    while (!stop_) {
      ++calls_;
      std::string error;
      try {
        if (!stream) {
          stream.emplace(io);
          stream->expires_after(10s);
          boost::asio::ip::tcp::resolver resolver(io);
          stream->connect(resolver.resolve(host_, port_));
          buffer.clear();
        }
        http::request<http::string_body> request{http::verb::post, "/v1/shop/Version", 11};
        request.set(http::field::host, host_ + ":" + port_);
        request.set(http::field::content_type, "application/json");
        request.set(http::field::authorization, "Bearer " + token_);
        request.keep_alive(true);
        request.body() = "{}";
        request.prepare_payload();
        stream->expires_after(10s);
        http::write(*stream, request);
        http::response<http::string_body> response;
        http::read(*stream, buffer, response);
        if (response.result_int() == 200) {
          std::lock_guard lock(mu_);
          answers_.push_back({std::chrono::steady_clock::now(), Trim(response.body())});
        } else {
          error = std::to_string(response.result_int()) + " " + response.body();
        }
        if (!response.keep_alive()) stream.reset();
      } catch (const std::exception& e) {
        error = std::string("no answer: ") + e.what();
        stream.reset();
      }
      if (!error.empty()) {
        std::lock_guard lock(mu_);
        ++failed_;
        if (failures_.size() < 20) failures_.push_back(error);
      }
    }
  }

  std::string host_, port_, token_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> calls_{0};
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::vector<Record> answers_;
  std::vector<std::string> failures_;
  int64_t failed_ = 0;
};

// What every case shares: the repo, and what runs.
struct Shop {
  std::unique_ptr<ShopRepo> repo;
  int next_version = 1;     // the number in the VERSION file of the next push
  std::string live_answer;  // what shop.Version answers now
  int v1 = 0;               // release numbers the cases refer to
  std::string v1_answer;
  std::string v1_digest;
};

Shop& TheShop() {
  static Shop shop;
  return shop;
}

// The VERSION file content of the next push.
std::string NextVersion() {
  return "shop-" + std::to_string(TheShop().next_version++);
}

// Pushes a VERSION and manifest; returns the release made of it.
sched::Release PushShop(const std::string& version, const std::string& manifest) {
  TheShop().repo->Set(version, manifest);
  return ReleaseOf(TheShop().repo->Push());
}

// Pushes a good change and waits until it is live; returns the release.
sched::Release PushGood() {
  const std::string version = NextVersion();
  const auto release = PushShop(version, Manifest(kServe));
  const auto wait = Wait();
  INFO(wait.output);
  INFO(Diagnostics());
  REQUIRE(wait.status.code == 0);
  REQUIRE(Status().live_version() == release.version());
  TheShop().live_answer = version;
  return release;
}

}  // namespace

// 1. From nothing: the repository is registered and its first push deploys shop v1.
TEST_CASE(
    "a signed push of a new service makes release v1 live: muon wait exits 0, status says "
    "converged, the ingress answers its VERSION",
    "[e2e][scheduler]") {
  auto& stack = Stack();
  INFO(stack.up().output);
  REQUIRE(stack.up().status.Success());
  auto& shop = TheShop();
  shop.repo = std::make_unique<ShopRepo>(stack);

  const std::string secret_file = stack.dir() + "/shop-secret";
  std::ofstream(secret_file) << kSecret << "\n";
  auto add = stack.Muon({"repos", "add", "acme/shop", "--secret-file", secret_file, "--clone-url",
                         shop.repo->origin()});
  INFO(add.output);
  REQUIRE(add.status.code == 0);

  const std::string version = NextVersion();
  const auto release = PushShop(version, Manifest(kServe));
  CHECK(release.version() == 1);
  auto wait = Wait();
  INFO(wait.output);
  INFO(Diagnostics());
  REQUIRE(wait.status.code == 0);
  CHECK(Contains(wait.output, "shop converged: v1 live, 1/1 healthy."));

  const auto status = Status();
  CHECK(status.state() == "converged");
  CHECK(status.live_version() == 1);
  CHECK(status.healthy() == 1);
  CHECK(status.desired_replicas() == 1);
  auto shown = stack.Muon({"status", "shop"});
  CHECK(Contains(shown.output, "v1 live"));
  CHECK(Contains(shown.output, "converged"));
  const auto releases = Releases();
  REQUIRE(!releases.empty());
  CHECK(releases.front().status() == "live");

  ExpectAnswers("Version", version);
  const Answer echo = Call("Echo", R"({"message":"through the ingress"})");
  CHECK(echo.status == 200);
  CHECK(echo.body == R"({"message":"through the ingress"})");

  shop.live_answer = version;
  shop.v1 = release.version();
  shop.v1_answer = version;
  shop.v1_digest = release.artifact_digest();
}

// 2. From shop v1 with 1 instance: scaled to 3, then a push rolls out under constant load.
TEST_CASE(
    "a rolling update of a 3-instance service under load fails no call, and the answers "
    "switch from the old VERSION to the new one",
    "[e2e][scheduler]") {
  auto& stack = Stack();
  auto& shop = TheShop();
  REQUIRE(shop.v1 > 0);
  {
    auto scale = stack.Muon({"scale", "shop", "3"});
    INFO(scale.output);
    REQUIRE(scale.status.code == 0);
    auto wait = Wait();
    INFO(wait.output);
    REQUIRE(wait.status.code == 0);
    REQUIRE(Status().healthy() == 3);
  }

  const std::string old_answer = shop.live_answer;
  const std::string new_answer = NextVersion();
  CallLoad load(stack.StackEnv("MUON_INGRESS_URL"), Token(), 4);
  // The load runs before the push.
  REQUIRE(muon::testing::WaitUntil([&] { return load.calls() > 20; }, 10s, 20ms));
  shop.repo->Set(new_answer, Manifest(kServe));
  const auto release = ReleaseOf(shop.repo->Push());
  const auto wait = Wait();
  load.Stop();
  std::map<std::string, int64_t> counts;
  for (const auto& r : load.answers()) ++counts[r.answer];
  std::string summary;
  for (const auto& [answer, n] : counts) summary += answer + ": " + std::to_string(n) + "; ";
  WARN("rolling update under load: " << load.ok() << " calls answered (" << summary << "), "
                                     << load.failed() << " failed");
  for (const auto& f : load.failures()) summary += "\nfailed: " + f;
  INFO("calls " << load.calls() << ", answered " << load.ok() << ", failed " << load.failed()
                << ": " << summary);
  INFO(wait.output);
  INFO(Diagnostics());
  REQUIRE(wait.status.code == 0);
  CHECK(Status().live_version() == release.version());
  CHECK(Status().healthy() == 3);
  CHECK(load.failed() == 0);
  CHECK(load.ok() > 100);
  REQUIRE(!load.answers().empty());
  CHECK(load.answers().front().answer == old_answer);
  CHECK(load.answers().back().answer == new_answer);
  CHECK(counts.size() == 2);
  CHECK(counts[old_answer] > 0);
  CHECK(counts[new_answer] > 0);
  shop.live_answer = new_answer;

  // The trail: started, then succeeded, for this release.
  auto history = stack.Muon({"history", "shop"});
  INFO(history.output);
  CHECK(history.status.code == 0);
  const std::string label = "v" + std::to_string(release.version());
  size_t started = std::string::npos, succeeded = std::string::npos;
  std::istringstream lines(history.output);
  size_t at = 0;
  for (std::string line; std::getline(lines, line); at += line.size() + 1) {
    if (!Contains(line, " " + label + " ")) continue;
    if (Contains(line, "rollout.started")) started = at;
    if (Contains(line, "rollout.succeeded")) succeeded = at;
  }
  CHECK(started != std::string::npos);
  CHECK(succeeded != std::string::npos);
  CHECK(started < succeeded);
  ExpectAnswers("Version", new_answer);
}

// 3. From shop with 3 instances of the release of case 2: the leading controller dies
// mid-rollout; scripts/up restarts it at the end.
TEST_CASE(
    "kill -9 of the leading controller mid-rollout: the standby takes over and the rollout "
    "ends with exactly one release live",
    "[e2e][scheduler]") {
  auto& stack = Stack();
  auto& shop = TheShop();
  REQUIRE(Status().healthy() == 3);
  const int old_version = Status().live_version();
  const std::string old_answer = shop.live_answer;

  auto leader = [] {
    std::optional<sched::Event> newest;
    for (auto& e : Events("")) {
      if (e.type() == "controller.leading") newest = e;
    }
    return newest;
  };
  const auto leading = leader();
  REQUIRE(leading.has_value());
  const pid_t leader_pid = std::atoi(leading->attributes().at("pid").c_str());
  const pid_t scheduler1 = stack.Pid("scheduler-1");
  const pid_t scheduler2 = stack.Pid("scheduler-2");
  INFO("leader " << leading->message() << "; scheduler-1 pid " << scheduler1 << ", scheduler-2 pid "
                 << scheduler2);
  REQUIRE((leader_pid == scheduler1 || leader_pid == scheduler2));

  const std::string new_answer = NextVersion();
  shop.repo->Set(new_answer, Manifest(kServe));
  const std::string commit = shop.repo->Push();
  // As soon as the rollout of the new release has started: kill the leader.
  int target = 0;
  REQUIRE(muon::testing::WaitUntil(
      [&] {
        for (const auto& e : Events()) {
          if (e.type() == "rollout.started" && e.version() > old_version) target = e.version();
        }
        return target != 0;
      },
      90s, 50ms));
  // The instances the leader ran as a node die with it; the survivor replaces them.
  const std::string dead_node =
      leader_pid == scheduler1 ? "local-scheduler-1" : "local-scheduler-2";
  int on_dead_node = 0;
  const auto before_kill = Status();
  for (const auto& i : before_kill.instances()) {
    on_dead_node += i.node() == dead_node && i.desired() == "running" ? 1 : 0;
  }
  REQUIRE(::kill(leader_pid, SIGKILL) == 0);
  REQUIRE(ReleaseOf(commit).version() == target);

  // The standby leads: a newer controller.leading event names the other process.
  std::optional<sched::Event> next;
  const bool took_over = muon::testing::WaitUntil(
      [&] {
        next = leader();
        return next && next->id() > leading->id();
      },
      20s, 200ms);
  INFO(Diagnostics());
  REQUIRE(took_over);
  CHECK(next->attributes().at("pid") != std::to_string(leader_pid));
  CHECK(next->attributes().at("pid") ==
        std::to_string(leader_pid == scheduler1 ? scheduler2 : scheduler1));

  // Until the rollout ends: never two releases live for more than a moment.
  const std::string wait_out = stack.dir() + "/wait-leader.out";
  muon::Process waiter = stack.MuonInBackground({"wait", "shop", "--timeout", "120s"}, wait_out);
  int two_live_polls = 0, max_two_live_polls = 0;
  std::optional<muon::ExitStatus> waited;
  while (!(waited = waiter.WaitFor(200ms))) {
    int live = 0;
    for (const auto& r : Releases()) live += r.status() == "live" ? 1 : 0;
    two_live_polls = live > 1 ? two_live_polls + 1 : 0;
    max_two_live_polls = std::max(max_two_live_polls, two_live_polls);
  }
  INFO(ReadFile(wait_out));
  INFO(Diagnostics());
  CHECK(max_two_live_polls <= 2);
  REQUIRE((waited->code == 0 || waited->code == 8));
  if (waited->code == 0) {
    // Converged on the new release.
    CHECK(Status().live_version() == target);
    shop.live_answer = new_answer;
  } else {
    // Failed, with the old release serving (at full strength again once what ran on the dead
    // node is replaced).
    WARN("the rollout interrupted by the leader's death failed: " << Status().detail());
    CHECK(Status().live_version() == old_version);
  }
  sched::ServiceStatus status;
  CHECK(muon::testing::WaitUntil(
      [&] {
        status = Status();
        return status.healthy() == 3;
      },
      30s, 200ms));
  int live = 0;
  for (const auto& r : Releases()) {
    if (r.status() == "live") {
      ++live;
      CHECK(r.version() == status.live_version());
    }
  }
  CHECK(live == 1);
  int running = 0;
  for (const auto& i : status.instances()) {
    if (i.desired() != "running") continue;
    ++running;
    CHECK(i.version() == status.live_version());
  }
  CHECK(running == 3);
  // The standby ended the rollout the dead leader started, and replaced what ran on its node.
  const auto events = Events();
  INFO(EventTrail(events));
  bool ended_by_standby = false;
  for (const auto& e : events) {
    if ((e.type() == "rollout.succeeded" || e.type() == "rollout.failed") &&
        e.version() == target) {
      ended_by_standby = e.id() > next->id();
    }
  }
  CHECK(ended_by_standby);
  if (on_dead_node > 0) {
    bool replaced = false;
    for (const auto& e : events) {
      replaced = replaced || (e.type() == "drift.repaired" && e.id() > leading->id() &&
                              Contains(e.message(), dead_node));
    }
    CHECK(replaced);
  }
  ExpectAnswers("Version", waited->code == 0 ? new_answer : old_answer);

  // The killed process comes back (scripts/up restarts what died) as a node again.
  auto up = stack.Up();
  INFO(up.output);
  REQUIRE(up.status.Success());
  REQUIRE(muon::testing::WaitUntil(
      [&] {
        int alive = 0;
        for (const auto& n : Nodes()) alive += n.alive() ? 1 : 0;
        return alive == 2;
      },
      20s, 200ms));
}

// 4. From shop with 3 instances: scaled up and down.
TEST_CASE("muon scale shop 5 then 1: the status counts follow", "[e2e][scheduler]") {
  auto& stack = Stack();
  auto scale = stack.Muon({"scale", "shop", "5"});
  INFO(scale.output);
  REQUIRE(scale.status.code == 0);
  CHECK(Contains(scale.output, "replicas 3 -> 5"));
  auto wait = Wait();
  INFO(wait.output);
  INFO(Diagnostics());
  REQUIRE(wait.status.code == 0);
  auto status = Status();
  CHECK(status.desired_replicas() == 5);
  CHECK(status.healthy() == 5);
  auto table = stack.Muon({"status"});
  INFO(table.output);
  CHECK(Contains(table.output, "5/5"));

  scale = stack.Muon({"scale", "shop", "1"});
  REQUIRE(scale.status.code == 0);
  CHECK(Contains(scale.output, "replicas 5 -> 1"));
  wait = Wait();
  INFO(wait.output);
  REQUIRE(wait.status.code == 0);
  status = Status();
  CHECK(status.desired_replicas() == 1);
  CHECK(status.healthy() == 1);
  // The four stopped instances leave the list once they have drained.
  CHECK(muon::testing::WaitUntil([&] { return Status().instances_size() == 1; }, 20s, 200ms));
  table = stack.Muon({"status"});
  CHECK(Contains(table.output, "1/1"));
  ExpectAnswers("Version", TheShop().live_answer);
}

// 5. From shop with 1 instance.
TEST_CASE("kill -9 of an instance's process: it is restarted, counted, and answers again",
          "[e2e][scheduler]") {
  const auto before = Status();
  REQUIRE(before.instances_size() == 1);
  const auto instance = before.instances(0);
  REQUIRE(instance.state() == "healthy");
  REQUIRE(instance.pid() > 0);
  const int restarts = instance.restarts();
  REQUIRE(::kill(instance.pid(), SIGKILL) == 0);

  sched::InstanceInfo after;
  const bool restarted = muon::testing::WaitUntil(
      [&] {
        const auto s = Status();
        if (s.instances_size() != 1) return false;
        after = s.instances(0);
        return after.id() == instance.id() && after.restarts() == restarts + 1 &&
               after.state() == "healthy";
      },
      30s, 200ms);
  INFO(Diagnostics());
  REQUIRE(restarted);
  CHECK(after.pid() != instance.pid());
  const auto events = Events();
  CHECK(HasEvent(events, "instance.exited", 0, instance.id()));
  CHECK(HasEvent(events, "instance.restarted", 0, instance.id()));
  for (const auto& e : events) {
    if (e.type() == "instance.exited" && e.instance() == instance.id()) {
      CHECK(Contains(e.message(), "signal 9"));
    }
  }
  CHECK(Status().state() == "converged");
  ExpectAnswers("Version", TheShop().live_answer);
}

// 6. From shop with 1 instance of a later release: back to v1.
TEST_CASE("muon rollback shop --to v1 runs v1's artifact again without a build",
          "[e2e][scheduler]") {
  auto& stack = Stack();
  auto& shop = TheShop();
  REQUIRE(shop.v1 == 1);
  const int builds = CountBuilds();
  auto rollback = stack.Muon({"rollback", "shop", "--to", "v1"});
  INFO(rollback.output);
  REQUIRE(rollback.status.code == 0);
  CHECK(Contains(rollback.output, "nothing is rebuilt"));
  auto wait = Wait();
  INFO(wait.output);
  INFO(Diagnostics());
  REQUIRE(wait.status.code == 0);
  const auto status = Status();
  const auto live = Release(status.live_version());
  REQUIRE(live.has_value());
  CHECK(live->reason() == "rollback");
  CHECK(live->from_version() == 1);
  CHECK(live->artifact_digest() == shop.v1_digest);
  CHECK(CountBuilds() == builds);
  ExpectAnswers("Version", shop.v1_answer);
  shop.live_answer = shop.v1_answer;
}

// 7. From the rollback release of case 6.
TEST_CASE(
    "muon env set shop GREETING=hi makes a config release without a build that the "
    "instance sees",
    "[e2e][scheduler]") {
  auto& stack = Stack();
  const int builds = CountBuilds();
  const auto before = Status();
  const auto base = Release(before.live_version());
  REQUIRE(base.has_value());
  auto set = stack.Muon({"env", "set", "shop", "GREETING=hi"});
  INFO(set.output);
  REQUIRE(set.status.code == 0);
  CHECK(Contains(set.output, "no build"));
  auto wait = Wait();
  INFO(wait.output);
  INFO(Diagnostics());
  REQUIRE(wait.status.code == 0);
  const auto status = Status();
  CHECK(status.live_version() > before.live_version());
  const auto live = Release(status.live_version());
  REQUIRE(live.has_value());
  CHECK(live->reason() == "config");
  CHECK(live->artifact_digest() == base->artifact_digest());
  CHECK(CountBuilds() == builds);
  ExpectAnswers("Env", "hi");
  ExpectAnswers("Version", TheShop().live_answer);
}

// 8. From shop with 1 instance: three broken pushes in a row (each push resumes the auto-deploy
// the one before paused), then a good one.

// Pushes a release that cannot run and checks how it fails: `muon wait` exits 8 naming the
// category and the last lines, the previous release keeps serving, auto-deploy is paused and
// `muon status` says so. Returns the failed release.
namespace {
sched::Release PushBroken(const std::string& manifest, const std::string& category,
                          const std::vector<std::string>& in_wait_output,
                          const std::string& last_line) {
  auto& stack = Stack();
  const auto before = Status();
  const bool resumes = before.paused();
  const auto release = PushShop(NextVersion(), manifest);
  if (resumes) {
    // This push resumed the auto-deploy the previous failure paused.
    CHECK(HasEvent(Events(), "autodeploy.resumed", release.version()));
  }
  const auto wait = Wait();
  INFO(wait.output);
  INFO(Diagnostics());
  CHECK(wait.status.code == 8);
  for (const auto& text : in_wait_output) CHECK(Contains(wait.output, text));
  CHECK(Contains(wait.output, last_line));

  const auto failed = Release(release.version());
  REQUIRE(failed.has_value());
  CHECK(failed->status() == "failed");
  CHECK(failed->category() == category);
  std::string lines;
  for (const auto& l : failed->last_lines()) lines += l + "\n";
  INFO("the release's last lines: " << lines);
  CHECK(Contains(lines, last_line));

  const auto status = Status();
  CHECK(status.state() == "failed");
  CHECK(status.live_version() == before.live_version());
  CHECK(status.healthy() == before.desired_replicas());
  CHECK(status.paused());
  CHECK(Contains(status.paused_reason(), category));
  const std::string paused =
      "paused: v" + std::to_string(release.version()) + " failed: " + category;
  auto shown = stack.Muon({"status", "shop"});
  INFO(shown.output);
  CHECK(Contains(shown.output, "auto-deploy:   " + paused));
  auto table = stack.Muon({"status"});
  INFO(table.output);
  CHECK(Contains(table.output, paused));
  const auto events = Events();
  CHECK(HasEvent(events, "rollout.failed", release.version()));
  CHECK(HasEvent(events, "autodeploy.paused", release.version()));
  // The previous release keeps serving.
  ExpectAnswers("Version", TheShop().live_answer);
  return release;
}
}  // namespace

TEST_CASE(
    "a release whose process exits at start fails as start_failed with exit code 3 and "
    "its last lines; the previous release keeps serving; auto-deploy pauses",
    "[e2e][scheduler]") {
  PushBroken(Manifest("echo boom-at-start >&2; exit 3"), "start_failed",
             {"start_failed", "exit code 3"}, "boom-at-start");
}

TEST_CASE(
    "a release never healthy fails as health_timeout; the next push had resumed "
    "auto-deploy; the previous release keeps serving",
    "[e2e][scheduler]") {
  PushBroken(Manifest("echo waiting-forever >&2; exec sleep 600", "3s"), "health_timeout",
             {"health_timeout", "not healthy within 3s"}, "waiting-forever");
}

TEST_CASE(
    "a release that crashes after it became healthy fails as crash_loop after 3 exits; "
    "the previous release keeps serving",
    "[e2e][scheduler]") {
  // It serves, and dies 0.2 s after it answered its first health check (Version): well within
  // MIN_READY (1 s), so it never counts as available and the old instance is not stopped for it.
  const auto release = PushBroken(
      Manifest("muon-bus serve shop --endpoint Version='cat dist/VERSION; touch served' & "
               "until [ -e served ]; do sleep 0.05; done; sleep 0.2; echo crashing-now >&2; "
               "kill $!; exit 1"),
      "crash_loop", {"crash_loop", "exited 3 times", "exit code 1"}, "crashing-now");
  // It did become healthy before it crashed, and exited three times.
  const auto events = Events();
  INFO(EventTrail(events));
  CHECK(HasEvent(events, "instance.healthy", release.version()));
  int exits = 0;
  for (const auto& e : events) {
    exits += e.type() == "instance.exited" && e.version() == release.version() ? 1 : 0;
  }
  CHECK(exits == 3);
}

TEST_CASE("the next good push resumes the paused auto-deploy and goes live", "[e2e][scheduler]") {
  REQUIRE(Status().paused());
  const auto good = PushGood();
  CHECK(HasEvent(Events(), "autodeploy.resumed", good.version()));
  const auto status = Status();
  CHECK(!status.paused());
  CHECK(status.state() == "converged");
  ExpectAnswers("Version", TheShop().live_answer);
}

// 9. From shop with 1 instance of a good release; API_KEY is set nowhere.
TEST_CASE(
    "a push requiring API_KEY fails with config_missing; muon deploy refuses before any "
    "change; muon secrets set deploys the pushed release",
    "[e2e][scheduler]") {
  auto& stack = Stack();
  const int live_version = Status().live_version();
  const std::string version = NextVersion();
  const auto release = PushShop(version, Manifest(kServe, "10s", "  required_env: [API_KEY]\n"));
  auto wait = Wait();
  INFO(wait.output);
  INFO(Diagnostics());
  CHECK(wait.status.code == 8);
  const std::string label = "v" + std::to_string(release.version());
  // The release that failed is named, not the last rollout (which succeeded).
  CHECK(Contains(wait.output,
                 "release " + label + " failed before its rollout started: config_missing"));
  CHECK(Contains(wait.output, "API_KEY"));
  CHECK(Contains(wait.output, "--release " + label + ")"));

  const auto failed = Release(release.version());
  REQUIRE(failed.has_value());
  CHECK(failed->status() == "failed");
  CHECK(failed->category() == "config_missing");
  CHECK(Contains(failed->detail(), "API_KEY"));
  CHECK(Contains(failed->detail(), "muon env set shop API_KEY=..."));
  CHECK(Status().live_version() == live_version);
  ExpectAnswers("Version", TheShop().live_answer);

  const size_t releases = Releases().size();
  auto deploy = stack.Muon({"deploy", "shop"});
  INFO(deploy.output);
  CHECK(deploy.status.code == 6);  // bad request
  CHECK(Contains(deploy.output, "API_KEY"));
  CHECK(Contains(deploy.output, "nothing was changed"));
  CHECK(Releases().size() == releases);
  CHECK(Status().live_version() == live_version);

  const std::string key_file = stack.dir() + "/api-key";
  std::ofstream(key_file) << "k-123-secret\n";
  auto secret = stack.Muon({"secrets", "set", "shop", "API_KEY", "--from-file", key_file});
  INFO(secret.output);
  REQUIRE(secret.status.code == 0);
  CHECK(!Contains(secret.output, "k-123-secret"));
  wait = Wait();
  INFO(wait.output);
  REQUIRE(wait.status.code == 0);
  // What runs now is the pushed commit (the release that needed the key), with the key.
  const auto status = Status();
  const auto live = Release(status.live_version());
  REQUIRE(live.has_value());
  CHECK(live->commit() == release.commit());
  CHECK(live->artifact_digest() == release.artifact_digest());
  CHECK(Contains(live->manifest(), "required_env"));
  ExpectAnswers("Key", "k-123-secret");
  ExpectAnswers("Version", version);
  TheShop().live_answer = Call("Version").body;
}

// 10. From shop with 1 instance; a lock row as a controller that died mid-rollout leaves it.
TEST_CASE("a deploy lock held by a dead holder makes the rollout wait until it expires",
          "[e2e][scheduler]") {
  auto& stack = Stack();
  // A dead controller's lock lives for the lock TTL (30 s) after its last renewal.
  auto insert = stack.Psql(
      "INSERT INTO scheduler.locks (service, holder, reason, expires_at) VALUES ('shop', "
      "'rollout 999999', 'held by a process that died', now() + interval '30 seconds')");
  INFO(insert.output);
  REQUIRE(insert.status.Success());
  auto locks = stack.Muon({"locks"});
  INFO(locks.output);
  CHECK(Contains(locks.output, "rollout 999999"));
  CHECK(Contains(locks.output, "held by a process that died"));

  const std::string version = NextVersion();
  TheShop().repo->Set(version, Manifest(kServe));
  const auto release = ReleaseOf(TheShop().repo->Push());
  bool waiting = false;
  REQUIRE(muon::testing::WaitUntil(
      [&] {
        for (const auto& e : Events()) {
          if (e.type() == "rollout.waiting" && e.version() == release.version() &&
              Contains(e.message(), "rollout 999999")) {
            waiting = true;
          }
        }
        return waiting;
      },
      30s, 200ms));
  locks = stack.Muon({"locks"});
  CHECK(Contains(locks.output, "rollout 999999"));
  auto status = Status();
  CHECK(status.state() == "rolling_out");
  CHECK(status.lock().holder() == "rollout 999999");
  // Nothing of the new release starts while the lock is held.
  CHECK(!HasEvent(Events(), "rollout.step", release.version()));
  for (const auto& i : status.instances()) CHECK(i.version() != release.version());

  // Time passes for the dead holder's lease: it runs out in a second (not 30).
  auto expire = stack.Psql(
      "UPDATE scheduler.locks SET expires_at = now() + interval '1 second' WHERE service = 'shop' "
      "AND holder = 'rollout 999999'");
  REQUIRE(expire.status.Success());
  auto wait = Wait();
  INFO(wait.output);
  INFO(Diagnostics());
  REQUIRE(wait.status.code == 0);
  CHECK(Status().live_version() == release.version());
  locks = stack.Muon({"locks"});
  CHECK(!Contains(locks.output, "rollout 999999"));
  ExpectAnswers("Version", version);
}
