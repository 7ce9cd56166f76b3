// The scheduler's controller and API against a real nats-server and PostgreSQL, with nodes that
// run nothing (the dry-run driver: an instance is healthy as soon as it is placed): one leader
// among two controllers and a standby that takes over, release candidates made into releases
// once, previews and their removal with the branch, required config refusing a deploy before any
// change, and waves in depends_on order.

#include <catch2/catch.hpp>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>

#include "harness.h"
#include "muon/builder/v1/builder.pb.h"
#include "muon/common/errors.h"
#include "muon/github_events/v1/github_events.pb.h"
#include "muon/scheduler/v1/scheduler.pb.h"
#include "scheduler_service.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using muon::testing::WaitUntil;

namespace {

constexpr const char* kKey = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

// `extra` goes under run:, `top` at the top level.
std::string Manifest(const std::string& name, int replicas, const std::string& extra = "",
                     const std::string& top = "") {
  return top + "name: " + name +
         "\nbuild:\n  steps: [{run: 'true'}]\n  outputs: [.]\nrun:\n  command: ./run\n"
         "  replicas: " +
         std::to_string(replicas) + "\n" + extra;
}

std::string Candidate(const std::string& service, const std::string& build_id,
                      const std::string& commit, const std::string& manifest,
                      bool default_branch = true, const std::string& ref = "refs/heads/main") {
  muon::builder::v1::BuildEvent event;
  event.set_type("release_candidate");
  event.set_ref(ref);
  event.set_default_branch(default_branch);
  auto* b = event.mutable_build();
  b->set_id(build_id);
  b->set_repo("acme/shop");
  b->set_commit(commit);
  b->set_ref(ref);
  b->set_service(service);
  b->set_folder(service);
  b->set_trigger("push d-1");
  b->set_status("succeeded");
  b->set_artifact_digest(std::string(64, 'a'));
  b->set_manifest(manifest);
  return event.SerializeAsString();
}

struct Fixture {
  muon::testing::NatsServer nats;
  muon::testing::TempDir tmp{"muon-test-sched"};
  std::string db_url = muon::testing::Postgres::Shared().CreateDatabase();
  std::unique_ptr<muon::bus::Connection> bus =
      muon::bus::Connection::Connect({.url = nats.url(), .name = "sched-test"});

  Fixture() { REQUIRE(bus->WaitConnected(5s)); }

  std::unique_ptr<muon::scheduler::SchedulerApp> App(const std::string& mode,
                                                     const std::string& id) {
    muon::scheduler::SchedulerOptions o;
    o.database_url = db_url;
    o.secret_key_hex = kKey;
    o.mode = mode;
    o.region = "local";
    o.instance = id;
    o.nats_url = nats.url();
    o.driver = "dry-run";
    o.controller = {.database_url = db_url,
                    .region = "local",
                    .id = id,
                    .tick = 100ms,
                    .node_timeout = 3s,
                    .min_ready = 100ms,
                    .election_retry = 200ms};
    o.node = {.node_id = "node-" + id,
              .region = "local",
              .state_dir = fs::path(tmp.path()) / id,
              .nats_url = nats.url(),
              .poll = 100ms,
              .heartbeat = 300ms};
    auto app = std::make_unique<muon::scheduler::SchedulerApp>(o, *bus);
    muon::Service service(*bus, muon::ServiceOptions{.name = "scheduler-" + id});
    app->Register(service, /*authorize=*/false);
    app->Start();
    return app;
  }
};

muon::scheduler::v1::ServiceStatus StatusOf(muon::scheduler::SchedulerApp& app,
                                            const std::string& service) {
  muon::scheduler::v1::StatusRequest r;
  r.set_service(service);
  return app.Status(r).services(0);
}

bool Converged(muon::scheduler::SchedulerApp& app, const std::string& service, int version) {
  const auto s = StatusOf(app, service);
  return s.state() == "converged" && s.live_version() == version;
}

int64_t FirstEvent(muon::scheduler::SchedulerApp& app, const std::string& service,
                   const std::string& type) {
  muon::scheduler::v1::ListEventsRequest r;
  r.set_service(service);
  r.set_limit(1000);
  const auto response = app.ListEvents(r);
  for (const auto& e : response.events()) {
    if (e.type() == type) return e.id();
  }
  return 0;
}

}  // namespace

TEST_CASE("one of two controllers leads; the standby takes over when it stops",
          "[scheduler-controller]") {
  Fixture f;
  auto a = f.App("controller", "a");
  auto b = f.App("controller", "b");
  REQUIRE(WaitUntil([&] { return a->controller()->leader() || b->controller()->leader(); }, 5s));
  // Never both: the advisory lock has one holder.
  for (int i = 0; i < 10; ++i) {
    CHECK_FALSE((a->controller()->leader() && b->controller()->leader()));
    std::this_thread::sleep_for(20ms);  // sampling over time, not waiting for readiness
  }
  auto& leader = a->controller()->leader() ? a : b;
  auto& standby = a->controller()->leader() ? b : a;
  leader->Stop();
  leader.reset();
  CHECK(WaitUntil([&] { return standby->controller()->leader(); }, 5s));
}

TEST_CASE("a release candidate becomes one release and rolls out to the manifest's count",
          "[scheduler-controller]") {
  Fixture f;
  auto app = f.App("all", "a");
  const std::string event = Candidate("shop", "b-1", "c1", Manifest("shop", 2));
  app->HandleEvent("muon.evt.build.shop", event);
  app->HandleEvent("muon.evt.build.shop", event);  // a redelivery or a re-published hand-over
  REQUIRE(WaitUntil([&] { return Converged(*app, "shop", 1); }, 10s));
  muon::scheduler::v1::ListReleasesRequest lr;
  lr.set_service("shop");
  const auto releases = app->ListReleases(lr);
  REQUIRE(releases.releases_size() == 1);
  CHECK(releases.releases(0).status() == "live");
  const auto status = StatusOf(*app, "shop");
  CHECK(status.desired_replicas() == 2);
  CHECK(status.healthy() == 2);

  SECTION("a preview of another branch runs beside it and goes with its branch") {
    app->HandleEvent("muon.evt.build.shop", Candidate("shop", "b-2", "c2", Manifest("shop", 2),
                                                      false, "refs/heads/Feature/X"));
    REQUIRE(WaitUntil(
        [&] {
          const auto s = StatusOf(*app, "shop");
          return s.previews_size() == 1 && s.previews(0) == "feature-x";
        },
        10s));
    CHECK(StatusOf(*app, "shop").live_version() == 1);  // the main line is untouched
    muon::github_events::v1::RepoEvent deleted;
    deleted.set_type("branch_deleted");
    deleted.set_repo("acme/shop");
    deleted.set_ref("refs/heads/Feature/X");
    app->HandleEvent("muon.evt.github.acme/shop", deleted.SerializeAsString());
    CHECK(WaitUntil([&] { return StatusOf(*app, "shop").previews_size() == 0; }, 10s));
    CHECK(FirstEvent(*app, "", "preview.removed") > 0);
  }

  SECTION("scale changes the count without a release") {
    muon::scheduler::v1::ScaleRequest sr;
    sr.set_service("shop");
    sr.set_replicas(4);
    app->Scale(sr, "test");
    REQUIRE(WaitUntil([&] { return StatusOf(*app, "shop").healthy() == 4; }, 10s));
    CHECK(app->ListReleases(lr).releases_size() == 1);
    muon::scheduler::v1::ScaleRequest none;
    none.set_service("shop");
    CHECK_THROWS_AS(app->Scale(none, "test"), muon::Error);  // no count given: no change
  }
}

TEST_CASE("required config: the release fails naming the key; a deploy is refused until it is set",
          "[scheduler-controller]") {
  Fixture f;
  auto app = f.App("all", "a");
  app->HandleEvent(
      "muon.evt.build.api",
      Candidate("api", "b-1", "c1", Manifest("api", 1, "  required_env: [API_KEY]\n")));
  REQUIRE(WaitUntil([&] { return StatusOf(*app, "api").state() == "failed"; }, 10s));
  muon::scheduler::v1::ListReleasesRequest lr;
  lr.set_service("api");
  const auto failed = app->ListReleases(lr).releases(0);
  CHECK(failed.category() == "config_missing");
  CHECK_THAT(failed.detail(), Catch::Contains("API_KEY") && Catch::Contains("muon env set api"));

  muon::scheduler::v1::DeployRequest deploy;
  deploy.set_service("api");
  try {
    app->Deploy(deploy, "test");
    FAIL("the deploy was accepted without API_KEY");
  } catch (const muon::Error& e) {
    CHECK(e.code() == 400);
    CHECK_THAT(e.detail(), Catch::Contains("API_KEY"));
  }
  CHECK(app->ListReleases(lr).releases_size() == 1);  // nothing changed

  muon::scheduler::v1::SetEnvRequest env;
  env.set_service("api");
  (*env.mutable_secrets())["API_KEY"] = "s3cret";
  env.set_deploy(true);
  const auto receipt = app->SetEnv(env, "test");
  CHECK(receipt.release().reason() == "config");
  REQUIRE(WaitUntil([&] { return Converged(*app, "api", 2); }, 10s));
  muon::scheduler::v1::GetServiceRequest get;
  get.set_service("api");
  const auto described = app->Describe(get);
  CHECK(described.status().secret_keys_size() == 1);
  // The secret's value appears nowhere in what the API answers.
  CHECK(described.DebugString().find("s3cret") == std::string::npos);
}

TEST_CASE(
    "services that changed together roll out in depends_on order; a failed dependency "
    "stops the later wave",
    "[scheduler-controller]") {
  Fixture f;
  auto app = f.App("all", "a");
  // The dependent's build finishes first; meanwhile the builder says db is still building for
  // the same commit, so arrival order is not what orders them.
  std::mutex mu;
  std::string db_building_for;
  auto building = [&](const std::string& commit) {
    std::lock_guard lock(mu);
    db_building_for = commit;
  };
  app->controller()->SetBuildProbe(
      [&](const std::string& repo, const std::string& service, const std::string& commit) {
        std::lock_guard lock(mu);
        return repo == "acme/shop" && service == "db" && commit == db_building_for;
      });
  building("c1");
  app->HandleEvent("muon.evt.build.web",
                   Candidate("web", "b-w1", "c1", Manifest("web", 1, "", "depends_on: [db]\n")));
  REQUIRE(WaitUntil([&] { return FirstEvent(*app, "web", "rollout.waiting") > 0; }, 10s));
  app->HandleEvent("muon.evt.build.db", Candidate("db", "b-d1", "c1", Manifest("db", 1)));
  building("");
  REQUIRE(WaitUntil([&] { return Converged(*app, "web", 1) && Converged(*app, "db", 1); }, 15s));
  CHECK(FirstEvent(*app, "db", "rollout.succeeded") < FirstEvent(*app, "web", "rollout.started"));

  // Commit c2: db cannot roll out (a required key is missing), so web does not either.
  building("c2");
  app->HandleEvent("muon.evt.build.web",
                   Candidate("web", "b-w2", "c2", Manifest("web", 1, "", "depends_on: [db]\n")));
  muon::scheduler::v1::ListReleasesRequest web_releases;
  web_releases.set_service("web");
  // web waits while db builds.
  REQUIRE(WaitUntil([&] { return app->ListReleases(web_releases).releases_size() == 2; }, 10s));
  CHECK(app->ListReleases(web_releases).releases(0).status() == "pending");
  app->HandleEvent("muon.evt.build.db",
                   Candidate("db", "b-d2", "c2", Manifest("db", 1, "  required_env: [PASS]\n")));
  building("");
  muon::scheduler::v1::ListReleasesRequest lr;
  lr.set_service("web");
  REQUIRE(WaitUntil([&] { return app->ListReleases(lr).releases(0).status() == "failed"; }, 15s));
  CHECK(app->ListReleases(lr).releases(0).category() == "dependency_failed");
  CHECK(StatusOf(*app, "web").live_version() == 1);
}
