// The builder and github-events' push processing against a real nats-server, a real PostgreSQL
// and real git repositories: a bare "origin" made from examples/monorepo, changed with real
// commits. The builder runs in process (its endpoints without authorization) except where a
// test kills it: there it is the muon-builder binary.

#include <fmt/format.h>
#include <signal.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <pqxx/pqxx>

#include "build_store.h"
#include "builder_service.h"
#include "harness.h"
#include "muon/common/bus.h"
#include "muon/common/events.h"
#include "muon/common/service.h"
#include "push_processor.h"
#include "store.h"

using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace bv1 = muon::builder::v1;
namespace gv1 = muon::github_events::v1;

namespace {

std::unique_ptr<muon::bus::Connection> Connect(const std::string& url, const std::string& name) {
  auto conn = muon::bus::Connection::Connect({.url = url, .name = name});
  REQUIRE(conn->WaitConnected(5s));
  return conn;
}

std::string Run(const std::string& cwd, std::vector<std::string> args) {
  muon::ProcessOptions o;
  o.program = args.front();
  o.args.assign(args.begin() + 1, args.end());
  o.working_dir = cwd;
  o.env = {{"GIT_AUTHOR_NAME", "Dev"},         {"GIT_AUTHOR_EMAIL", "dev@example.com"},
           {"GIT_COMMITTER_NAME", "Dev"},      {"GIT_COMMITTER_EMAIL", "dev@example.com"},
           {"GIT_CONFIG_GLOBAL", "/dev/null"}, {"GIT_CONFIG_NOSYSTEM", "1"}};
  const auto r = muon::RunCommand(o, 60s);
  INFO(fmt::format("{} in {}: {}", fmt::join(args, " "), cwd, r.output));
  REQUIRE(r.status.Success());
  return r.output;
}

void WriteFile(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

// A bare origin and a working clone of it, starting as examples/monorepo.
struct Repo {
  fs::path root;
  fs::path origin;
  fs::path work;
  explicit Repo(const fs::path& dir) : root(dir), origin(dir / "origin.git"), work(dir / "work") {
    Run(dir.string(),
        {"git", "init", "--quiet", "--bare", "--initial-branch=main", origin.string()});
    fs::copy(fs::path(muon::testing::SourceDir()) / "examples/monorepo", work,
             fs::copy_options::recursive);
    Run(work.string(), {"git", "init", "--quiet", "--initial-branch=main"});
    Run(work.string(), {"git", "remote", "add", "origin", origin.string()});
    Commit("the monorepo");
  }
  std::string Head() {
    std::string out = Run(work.string(), {"git", "rev-parse", "HEAD"});
    return out.substr(0, 40);
  }
  // Commits everything and pushes to origin's current branch; returns the new sha.
  std::string Commit(const std::string& message) {
    Run(work.string(), {"git", "add", "-A"});
    Run(work.string(), {"git", "commit", "--quiet", "--allow-empty", "-m", message});
    Run(work.string(), {"git", "push", "--quiet", "origin", "HEAD"});
    return Head();
  }
};

// GitHub's push payload for before..after with the given paths in one commit.
std::string PushBody(const std::string& ref, const std::string& before, const std::string& after,
                     const std::vector<std::string>& modified, bool deleted = false) {
  std::string paths;
  for (const auto& p : modified) paths += (paths.empty() ? "\"" : ",\"") + p + "\"";
  return fmt::format(
      R"({{"ref":"{}","before":"{}","after":"{}","created":false,"deleted":{},"forced":false,)"
      R"("commits":[{{"id":"{}","message":"change","added":[],"removed":[],"modified":[{}]}}],)"
      R"("repository":{{"full_name":"acme/mono","default_branch":"main"}},)"
      R"("pusher":{{"name":"dev","email":"dev@example.com"}}}})",
      ref, before, after, deleted ? "true" : "false", after, paths);
}

// PlanPush straight into a BuilderApp that runs no workers (for the test with the real binary,
// whose endpoints want tokens).
class DirectPlanner : public muon::github_events::BuildPlanner {
 public:
  explicit DirectPlanner(muon::builder::BuilderApp& app) : app_(app) {}
  bv1::PlanPushResponse PlanPush(const bv1::PlanPushRequest& request) override {
    return app_.PlanPush(request);
  }

 private:
  muon::builder::BuilderApp& app_;
};

struct Fixture {
  muon::testing::NatsServer nats;
  std::string database_url = muon::testing::Postgres::Shared().CreateDatabase();
  muon::testing::TempDir dir{"muon-test-builder"};
  Repo repo{dir.path()};
  std::unique_ptr<muon::bus::Connection> server_conn = Connect(nats.url(), "builder-under-test");
  std::unique_ptr<muon::bus::Connection> client = Connect(nats.url(), "test-client");
  std::unique_ptr<muon::builder::BuilderApp> builder;
  std::unique_ptr<muon::Service> service;
  std::unique_ptr<muon::github_events::PgStore> github;
  std::unique_ptr<muon::github_events::BuildPlanner> planner;
  std::unique_ptr<muon::builder::BuilderApp> planning_only;
  std::unique_ptr<muon::github_events::PushProcessor> processor;

  muon::builder::BuilderOptions BuilderOptions() const {
    muon::builder::BuilderOptions o;
    o.database_url = database_url;
    o.state_dir = dir.path() + "/builder-state";
    o.lease = 3s;
    o.poll = 100ms;
    o.owner = "builder-in-process";
    return o;
  }

  explicit Fixture(bool start_builder = true) {
    github = std::make_unique<muon::github_events::PgStore>(database_url, 4);
    github->Migrate();
    gv1::Repo r;
    r.set_name("acme/mono");
    r.set_clone_url(repo.origin.string());
    r.set_branch("main");
    REQUIRE(github->AddRepo(r, "sealed-secret-not-used-here"));
    if (start_builder) {
      StartBuilder();
      planner = std::make_unique<muon::github_events::BusBuildPlanner>(
          *client, [] { return std::string(); }, 60s);
    } else {
      auto o = BuilderOptions();
      o.state_dir = dir.path() + "/planner-state";
      planning_only = std::make_unique<muon::builder::BuilderApp>(o, *server_conn);
      planner = std::make_unique<DirectPlanner>(*planning_only);
    }
    processor = std::make_unique<muon::github_events::PushProcessor>(
        *github, *planner, *client,
        muon::github_events::ProcessorOptions{.owner = "processor-1", .lease = 3s, .poll = 100ms});
  }
  void StartBuilder() {
    builder = std::make_unique<muon::builder::BuilderApp>(BuilderOptions(), *server_conn);
    auto so = muon::builder::DefaultServiceOptions();
    so.concurrency = 2;
    service = std::make_unique<muon::Service>(*server_conn, so);
    builder->Register(*service, /*authorize=*/false);
    service->Start();
    builder->Start();
  }
  ~Fixture() {
    processor.reset();
    planner.reset();
    planning_only.reset();
    if (service) service->Stop(2s);
    service.reset();
    builder.reset();
  }

  // Stores a push delivery as the webhook handler does and processes it.
  void Deliver(const std::string& id, const std::string& body) {
    muon::github_events::NewDelivery d{.delivery_id = id,
                                       .repo = "acme/mono",
                                       .event = "push",
                                       .status = "accepted",
                                       .body = body,
                                       .body_bytes = static_cast<int64_t>(body.size())};
    github->InsertDelivery(d);
  }

  gv1::Delivery ProcessedDelivery(const std::string& id) {
    gv1::Delivery found;
    REQUIRE(muon::testing::WaitUntil(
        [&] {
          while (processor->ProcessOne()) {
          }
          for (auto& d : github->ListDeliveries("acme/mono", 100)) {
            if (d.delivery_id() == id && (d.status() == "processed" || d.status() == "failed")) {
              found = d;
              return true;
            }
          }
          return false;
        },
        60s, 50ms));
    return found;
  }

  bv1::Build WaitFinished(const std::string& build_id) {
    bv1::Build b;
    const bool finished = muon::testing::WaitUntil(
        [&] {
          bv1::GetBuildRequest request;
          request.set_id(build_id);
          muon::Call(*client, muon::PlatformSubject("builder", "GetBuild"), request, b, 5s);
          return b.status() == "succeeded" || b.status() == "failed";
        },
        60s, 50ms);
    INFO(b.DebugString());
    REQUIRE(finished);
    return b;
  }

  int64_t Count(const std::string& sql) {
    pqxx::connection c(database_url);
    pqxx::nontransaction tx(c);
    return tx.exec1(sql)[0].as<int64_t>();
  }
};

std::vector<std::string> ServicesOf(const Fixture& f, const gv1::Delivery& d) {
  std::vector<std::string> out;
  for (const auto& id : d.builds()) {
    bv1::GetBuildRequest request;
    request.set_id(id);
    bv1::Build b;
    muon::Call(*f.client, muon::PlatformSubject("builder", "GetBuild"), request, b, 5s);
    out.push_back(b.service());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Every build event in the EVENTS stream, from its start, as the scheduler reads them.
class BuildEvents {
 public:
  explicit BuildEvents(muon::bus::Connection& conn) : js_(conn) {
    REQUIRE_FALSE(js_.SubscribeOrdered(
        "EVENTS", "muon.evt.build.>", 1,
        [this](muon::bus::Msg& msg) {
          bv1::BuildEvent event;
          if (!event.ParseFromArray(msg.data().data(), static_cast<int>(msg.data().size()))) return;
          std::lock_guard lock(mu_);
          events_.push_back(std::move(event));
        },
        sub_));
  }
  // The release candidates of `build_id` for `ref`.
  std::vector<bv1::BuildEvent> Candidates(const std::string& build_id, const std::string& ref) {
    std::lock_guard lock(mu_);
    std::vector<bv1::BuildEvent> out;
    for (const auto& e : events_) {
      if (e.type() == "release_candidate" && e.build().id() == build_id && e.ref() == ref) {
        out.push_back(e);
      }
    }
    return out;
  }
  // Waits until there are `n` of them.
  std::vector<bv1::BuildEvent> WaitCandidates(const std::string& build_id, const std::string& ref,
                                              size_t n = 1) {
    std::vector<bv1::BuildEvent> got;
    muon::testing::WaitUntil(
        [&] {
          got = Candidates(build_id, ref);
          return got.size() >= n;
        },
        30s, 50ms);
    INFO(fmt::format("release candidates of {} for {}", build_id, ref));
    REQUIRE(got.size() == n);
    return got;
  }

 private:
  muon::bus::JetStream js_;
  muon::bus::Subscription sub_;
  std::mutex mu_;
  std::vector<bv1::BuildEvent> events_;
};

}  // namespace

TEST_CASE(
    "a push builds exactly the services whose folders changed; a redelivery builds nothing "
    "new; a README change builds nothing and says so",
    "[builder]") {
  Fixture f;
  const std::string first = f.repo.Head();

  // Only hello/ changes.
  WriteFile(f.repo.work / "hello/VERSION", "2\n");
  const std::string second = f.repo.Commit("hello 2");
  f.Deliver("d-1", PushBody("refs/heads/main", first, second, {"hello/VERSION"}));
  auto d1 = f.ProcessedDelivery("d-1");
  INFO(d1.DebugString());
  CHECK(d1.status() == "processed");
  REQUIRE(ServicesOf(f, d1) == std::vector<std::string>{"hello"});
  const auto hello = f.WaitFinished(d1.builds(0));
  INFO(hello.DebugString());
  CHECK(hello.status() == "succeeded");
  CHECK(hello.artifact_digest().size() == 64);
  CHECK(hello.artifact_size() > 0);
  CHECK(hello.commit() == second);
  CHECK(hello.folder() == "hello");
  CHECK(hello.trigger() == "push d-1");
  // The manifest as committed travels with the build (the scheduler runs the service by it);
  // lists leave it out.
  CHECK(hello.manifest() == [&] {
    std::ifstream in(f.repo.work / "hello/muon.yaml");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }());
  {
    bv1::ListBuildsRequest request;
    request.set_service("hello");
    bv1::ListBuildsResponse listed;
    muon::Call(*f.client, muon::PlatformSubject("builder", "ListBuilds"), request, listed, 5s);
    REQUIRE(listed.builds_size() == 1);
    CHECK(listed.builds(0).id() == hello.id());
    CHECK(listed.builds(0).manifest().empty());
  }

  // The artifact streams back in chunks and unpacks to what the step made.
  std::string artifact;
  for (int64_t offset = 0;;) {
    bv1::FetchArtifactRequest request;
    request.set_digest(hello.artifact_digest());
    request.set_offset(offset);
    request.set_max_bytes(100);
    bv1::FetchArtifactResponse chunk;
    muon::Call(*f.client, muon::PlatformSubject("builder", "FetchArtifact"), request, chunk, 5s);
    if (chunk.data().empty()) break;
    artifact += chunk.data();
    offset += static_cast<int64_t>(chunk.data().size());
  }
  CHECK(static_cast<int64_t>(artifact.size()) == hello.artifact_size());

  // The same delivery again (GitHub's redelivery) and the same push under a new id: the same
  // build, nothing queued twice.
  f.Deliver("d-1b", PushBody("refs/heads/main", first, second, {"hello/VERSION"}));
  auto d1b = f.ProcessedDelivery("d-1b");
  REQUIRE(d1b.builds_size() == 1);
  CHECK(d1b.builds(0) == hello.id());
  CHECK(f.Count("SELECT count(*) FROM builder.builds") == 1);

  // Both folders change.
  WriteFile(f.repo.work / "hello/VERSION", "3\n");
  WriteFile(f.repo.work / "clock/clock.sh", "#!/bin/sh\necho tick\n");
  const std::string third = f.repo.Commit("both");
  f.Deliver("d-2", PushBody("refs/heads/main", second, third, {"hello/VERSION", "clock/clock.sh"}));
  auto d2 = f.ProcessedDelivery("d-2");
  CHECK(ServicesOf(f, d2) == std::vector<std::string>{"clock", "hello"});
  for (const auto& id : d2.builds()) CHECK(f.WaitFinished(id).status() == "succeeded");

  // A README-only change.
  WriteFile(f.repo.work / "README.md", "changed\n");
  const std::string fourth = f.repo.Commit("docs");
  f.Deliver("d-3", PushBody("refs/heads/main", third, fourth, {"README.md"}));
  auto d3 = f.ProcessedDelivery("d-3");
  INFO(d3.DebugString());
  CHECK(d3.status() == "processed");
  CHECK(d3.builds_size() == 0);
  CHECK(d3.detail().find("no service changed") != std::string::npos);
  CHECK(d3.detail().find("README.md") != std::string::npos);
  CHECK(f.Count("SELECT count(*) FROM builder.builds") == 3);
}

TEST_CASE("a step that exits 3 fails the build with the step, the exit code and its last lines",
          "[builder]") {
  Fixture f;
  const std::string first = f.repo.Head();
  WriteFile(f.repo.work / "clock/muon.yaml",
            "name: clock\n"
            "build:\n"
            "  steps:\n"
            "    - name: check\n"
            "      run: \"echo checking; echo 'clock.sh: line 3: syntax error' >&2; exit 3\"\n"
            "    - name: package\n"
            "      run: echo never\n"
            "  outputs: [dist]\n"
            "run:\n"
            "  command: ./dist/clock\n");
  const std::string second = f.repo.Commit("break clock");
  f.Deliver("d-fail", PushBody("refs/heads/main", first, second, {"clock/muon.yaml"}));
  auto d = f.ProcessedDelivery("d-fail");
  REQUIRE(ServicesOf(f, d) == std::vector<std::string>{"clock"});
  const auto b = f.WaitFinished(d.builds(0));
  INFO(b.DebugString());
  CHECK(b.status() == "failed");
  CHECK(b.category() == "build_failed");
  CHECK(b.failed_step() == "check");
  CHECK(b.exit_code() == 3);
  REQUIRE(b.last_lines_size() >= 2);
  CHECK(b.last_lines(0) == "checking");
  CHECK(b.last_lines(1) == "clock.sh: line 3: syntax error");

  // A manifest that does not validate fails before any step, naming the problem.
  WriteFile(f.repo.work / "clock/muon.yaml",
            "name: clock\nbuild:\n  stepz: []\nrun:\n  command: x\n");
  const std::string third = f.repo.Commit("bad manifest");
  f.Deliver("d-bad", PushBody("refs/heads/main", second, third, {"clock/muon.yaml"}));
  auto bad = f.ProcessedDelivery("d-bad");
  REQUIRE(bad.builds_size() == 1);
  const auto m = f.WaitFinished(bad.builds(0));
  INFO(m.DebugString());
  CHECK(m.status() == "failed");
  CHECK(m.category() == "manifest_invalid");
  REQUIRE(m.last_lines_size() >= 1);
  CHECK(m.last_lines(0).find("stepz") != std::string::npos);
}

TEST_CASE(
    "a truncated push is diffed in the mirror; a deleted branch emits branch_deleted; an "
    "unchanged folder reuses its artifact without running the steps",
    "[builder]") {
  Fixture f;
  const std::string first = f.repo.Head();
  WriteFile(f.repo.work / "clock/clock.sh", "#!/bin/sh\necho tock\n");
  const std::string second = f.repo.Commit("clock only");
  // GitHub cut the list: the payload names no paths and many commits; the mirror's diff decides.
  std::string body = PushBody("refs/heads/main", first, second, {});
  const std::string marker = R"("commits":[)";
  std::string many;
  for (int i = 0; i < 2048; ++i) {
    many += fmt::format(
        R"({{"id":"{:040x}","message":"m","added":[],"removed":[],"modified":[]}},)", i);
  }
  body.insert(body.find(marker) + marker.size(), many);
  f.Deliver("d-trunc", body);
  auto d = f.ProcessedDelivery("d-trunc");
  INFO(d.DebugString());
  CHECK(ServicesOf(f, d) == std::vector<std::string>{"clock"});
  CHECK(d.detail().find("truncated") != std::string::npos);
  const auto clock = f.WaitFinished(d.builds(0));
  CHECK(clock.status() == "succeeded");
  CHECK_FALSE(clock.reused());

  // A later commit that leaves clock/ as it was: built by hand (muon deploy), it reuses.
  WriteFile(f.repo.work / "README.md", "docs only\n");
  const std::string third = f.repo.Commit("docs");
  bv1::StartBuildRequest start;
  start.set_service("clock");
  start.set_ref("main");
  start.set_trigger("deploy test");
  bv1::StartBuildResponse started;
  muon::Call(*f.client, muon::PlatformSubject("builder", "StartBuild"), start, started, 30s);
  CHECK(started.commit() == third);
  REQUIRE(started.builds_size() == 1);
  const auto reused = f.WaitFinished(started.builds(0).id());
  INFO(reused.DebugString());
  CHECK(reused.status() == "succeeded");
  CHECK(reused.reused());
  CHECK(reused.artifact_digest() == clock.artifact_digest());
  // A reused build carries the manifest too.
  CHECK_FALSE(clock.manifest().empty());
  CHECK(reused.manifest() == clock.manifest());
  CHECK(reused.manifest().find("name: clock") != std::string::npos);
  // Asked again for the same commit: the same build, answered at once.
  muon::Call(*f.client, muon::PlatformSubject("builder", "StartBuild"), start, started, 30s);
  REQUIRE(started.builds_size() == 1);
  CHECK(started.builds(0).id() == reused.id());
  CHECK(started.builds(0).status() == "succeeded");

  // Deleting a branch: an event for the scheduler, no build.
  auto events = muon::bus::JetStream(*f.client);
  f.Deliver("d-del", PushBody("refs/heads/feature-x", third, std::string(40, '0'), {}, true));
  auto del = f.ProcessedDelivery("d-del");
  INFO(del.DebugString());
  CHECK(del.status() == "processed");
  CHECK(del.builds_size() == 0);
  CHECK(del.detail().find("feature-x was deleted") != std::string::npos);
  uint64_t last = 0;
  REQUIRE_FALSE(events.LastSequence("EVENTS", last));
  CHECK(last > 0);
}

TEST_CASE(
    "a commit built for a feature branch and then pushed to main is handed over again for main; "
    "a repeat of the same push is not; a deploy by hand always is",
    "[builder][handover]") {
  Fixture f;
  BuildEvents events(*f.client);
  const std::string first = f.repo.Head();
  Run(f.repo.work.string(), {"git", "checkout", "--quiet", "-b", "feature-x"});
  WriteFile(f.repo.work / "hello/VERSION", "feature\n");
  const std::string second = f.repo.Commit("hello on feature-x");  // pushed to feature-x

  f.Deliver("d-feature", PushBody("refs/heads/feature-x", first, second, {"hello/VERSION"}));
  auto feature = f.ProcessedDelivery("d-feature");
  REQUIRE(ServicesOf(f, feature) == std::vector<std::string>{"hello"});
  const auto hello = f.WaitFinished(feature.builds(0));
  REQUIRE(hello.status() == "succeeded");
  CHECK(hello.ref() == "refs/heads/feature-x");
  auto preview = events.WaitCandidates(hello.id(), "refs/heads/feature-x");
  CHECK_FALSE(preview[0].default_branch());  // a preview version
  CHECK(preview[0].build().manifest().find("name: hello") != std::string::npos);
  CHECK(preview[0].build().artifact_digest() == hello.artifact_digest());

  // Fast-forwarded into main: no new build, but a release candidate for main that goes live.
  Run(f.repo.work.string(), {"git", "checkout", "--quiet", "main"});
  Run(f.repo.work.string(), {"git", "merge", "--quiet", "--ff-only", "feature-x"});
  Run(f.repo.work.string(), {"git", "push", "--quiet", "origin", "main"});
  f.Deliver("d-main", PushBody("refs/heads/main", first, second, {"hello/VERSION"}));
  auto main_push = f.ProcessedDelivery("d-main");
  REQUIRE(main_push.builds_size() == 1);
  CHECK(main_push.builds(0) == hello.id());
  CHECK(f.Count("SELECT count(*) FROM builder.builds") == 1);
  auto live = events.WaitCandidates(hello.id(), "refs/heads/main");
  CHECK(live[0].default_branch());
  CHECK(live[0].build().id() == hello.id());
  CHECK(live[0].build().manifest() == hello.manifest());

  // The same push again (another delivery id) within the stream's duplicate window: dropped.
  f.Deliver("d-main-again", PushBody("refs/heads/main", first, second, {"hello/VERSION"}));
  f.ProcessedDelivery("d-main-again");
  // A deploy by hand is always handed over again.
  bv1::StartBuildRequest start;
  start.set_service("hello");
  start.set_ref("main");
  start.set_trigger("deploy test");
  bv1::StartBuildResponse started;
  muon::Call(*f.client, muon::PlatformSubject("builder", "StartBuild"), start, started, 30s);
  REQUIRE(started.builds_size() == 1);
  CHECK(started.builds(0).id() == hello.id());
  live = events.WaitCandidates(hello.id(), "refs/heads/main", 2);
  CHECK(live[1].default_branch());
  CHECK(events.Candidates(hello.id(), "refs/heads/feature-x").size() == 1);

  // A commit pushed to main while its feature-branch build is still running: handed over for
  // both once it succeeds.
  Run(f.repo.work.string(), {"git", "checkout", "--quiet", "feature-x"});
  WriteFile(f.repo.work / "hello/muon.yaml",
            "name: hello\n"
            "build:\n"
            "  steps:\n"
            "    - name: slow\n"
            "      run: sleep 3; mkdir -p dist; echo ok > dist/ok\n"
            "  outputs: [dist]\n"
            "run:\n"
            "  command: ./dist/ok\n");
  const std::string third = f.repo.Commit("slow hello on feature-x");
  f.Deliver("d-feature-2", PushBody("refs/heads/feature-x", second, third, {"hello/muon.yaml"}));
  auto feature2 = f.ProcessedDelivery("d-feature-2");
  REQUIRE(feature2.builds_size() == 1);
  Run(f.repo.work.string(), {"git", "push", "--quiet", "origin", "feature-x:main"});
  f.Deliver("d-main-2", PushBody("refs/heads/main", second, third, {"hello/muon.yaml"}));
  auto main2 = f.ProcessedDelivery("d-main-2");
  REQUIRE(main2.builds_size() == 1);
  CHECK(main2.builds(0) == feature2.builds(0));
  CHECK(f.Count(fmt::format("SELECT count(*) FROM builder.builds WHERE id = '{}' AND status IN "
                            "('queued', 'running')",
                            feature2.builds(0))) == 1);  // the hand-over waited for the build
  const auto slow = f.WaitFinished(feature2.builds(0));
  REQUIRE(slow.status() == "succeeded");
  CHECK_FALSE(events.WaitCandidates(slow.id(), "refs/heads/feature-x")[0].default_branch());
  const auto slow_live = events.WaitCandidates(slow.id(), "refs/heads/main");
  CHECK(slow_live[0].default_branch());
  CHECK(slow_live[0].build().manifest().find("sleep 3") != std::string::npos);
}

TEST_CASE(
    "a processor that died holding a delivery, and a builder killed with -9 mid-build: the "
    "push is processed and the build completes, each exactly once",
    "[builder][kill]") {
  Fixture f(/*start_builder=*/false);
  const std::string first = f.repo.Head();
  WriteFile(f.repo.work / "hello/muon.yaml",
            "name: hello\n"
            "build:\n"
            "  steps:\n"
            "    - name: slow\n"
            "      run: echo started; sleep 4; mkdir -p dist; echo ok > dist/ok\n"
            "  outputs: [dist]\n"
            "run:\n"
            "  command: ./dist/ok\n");
  const std::string second = f.repo.Commit("slow hello");
  f.Deliver("d-kill", PushBody("refs/heads/main", first, second, {"hello/muon.yaml"}));
  // A github-events killed right after its 2xx, having taken the delivery: only the lease is left.
  REQUIRE(f.github->ClaimDelivery("processor-killed", 3s));

  // The builder is the real binary, killed once its build runs.
  muon::ProcessOptions o;
  o.program = muon::testing::BinDir() + "/muon-builder";
  o.env = {{"DATABASE_URL", f.database_url},
           {"NATS_URL", f.nats.url()},
           {"MUON_BUILDER_STATE_DIR", f.dir.path() + "/killed-builder-state"},
           {"MUON_BUILDER_LEASE", "3s"},
           {"MUON_BUILDER_POLL_INTERVAL", "100ms"},
           {"MUON_INSTANCE", "builder-killed"},
           {"MUON_LOG_LEVEL", "warn"}};
  o.output_file = f.dir.path() + "/muon-builder.log";
  muon::Process killed(o);
  // The processor takes the delivery over once the dead one's lease has run out.
  auto d = f.ProcessedDelivery("d-kill");
  INFO(d.DebugString());
  REQUIRE(d.builds_size() == 1);
  CHECK(d.attempts() >= 2);  // the dead processor's attempt, then ours
  const std::string build_id = d.builds(0);
  REQUIRE(muon::testing::WaitUntil(
      [&] {
        return f.Count(fmt::format("SELECT count(*) FROM builder.builds WHERE id = '{}' AND "
                                   "status = 'running' AND lease_owner LIKE 'builder-killed/%'",
                                   build_id)) == 1;
      },
      30s, 20ms));
  killed.Signal(SIGKILL);
  CHECK(killed.Wait().signal == SIGKILL);

  // Another builder takes the build over once the lease runs out.
  f.StartBuilder();
  const auto b = f.WaitFinished(build_id);
  INFO(b.DebugString());
  CHECK(b.status() == "succeeded");
  CHECK(b.attempts() == 2);
  CHECK(f.Count("SELECT count(*) FROM builder.builds") == 1);
  CHECK(f.Count("SELECT count(*) FROM builder.artifacts") == 1);
  CHECK(f.Count("SELECT count(*) FROM github.deliveries WHERE status = 'processed'") == 1);
}

TEST_CASE("a build step sees the system read-only and its own work dir, nothing else of the host",
          "[builder][sandbox]") {
  // bubblewrap works on these machines (root); the builder relies on it.
  REQUIRE(muon::builder::DetectSandbox() == muon::builder::Sandbox::kBubblewrap);
  // Outside /tmp on purpose: the step's /tmp is its own anyway.
  const fs::path host = fs::path("/var/tmp") / fmt::format("muon-sandbox-test-{}", ::getpid());
  fs::remove_all(host);
  WriteFile(host / "state/secrets/service-secret", "the platform's secret\n");
  const fs::path work = host / "state/builder/work/b-1-1";
  fs::create_directories(work / "src");
  std::vector<std::string> lines;
  const auto outcome = muon::builder::RunStep(
      {.run = "cat " + (host / "state/secrets/service-secret").string() +
              " 2>/dev/null; echo secret=$?; touch /usr/x 2>/dev/null; echo usr=$?;"
              " ls /var/tmp 2>/dev/null | grep -c muon-sandbox; echo made > made-here;"
              " echo env=${DATABASE_URL:-none}",
       .work_dir = work,
       .cwd = work / "src",
       .env = {},
       .timeout = 30s,
       .sandbox = muon::builder::Sandbox::kBubblewrap,
       .hidden = {host / "state/builder"}},
      [&](std::string line, bool) { lines.push_back(std::move(line)); }, [] { return true; });
  std::string all;
  for (const auto& l : lines) all += l + "\n";
  INFO(all);
  CHECK(outcome.status.Success());
  CHECK(all.find("the platform's secret") == std::string::npos);
  CHECK(all.find("secret=1") != std::string::npos);  // the file is not there at all
  CHECK(all.find("usr=1") != std::string::npos);     // the system is read-only
  CHECK(all.find("env=none") != std::string::npos);  // a clean environment
  CHECK(fs::exists(work / "src/made-here"));         // the work dir is writable
  fs::remove_all(host);
}
