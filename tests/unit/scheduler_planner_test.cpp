#include <catch2/catch.hpp>

#include "planner.h"
#include "scheduler_store.h"

using namespace muon::scheduler;
using namespace std::chrono_literals;

namespace {

const TimePoint kNow = TimePoint(std::chrono::hours(1000));

InstanceView Healthy(std::string id, int version, std::string node,
                     std::chrono::milliseconds for_how_long = 10s) {
  return {.id = std::move(id),
          .version = version,
          .node = std::move(node),
          .desired = "running",
          .state = "healthy",
          .healthy_at = kNow - for_how_long,
          .created_at = kNow - 1h};
}

InstanceView Starting(std::string id, int version, std::string node) {
  return {.id = std::move(id),
          .version = version,
          .node = std::move(node),
          .desired = "running",
          .state = "starting",
          .created_at = kNow - 1s};
}

std::vector<NodeView> Nodes(int n) {
  std::vector<NodeView> out;
  for (int i = 1; i <= n; ++i) out.push_back({.id = "n" + std::to_string(i)});
  return out;
}

const PlannerSettings kSettings{.min_ready = 3000ms};

}  // namespace

TEST_CASE("steady state places the missing instances spread over the nodes", "[planner]") {
  auto nodes = Nodes(3);
  LineView line{.service = "echo", .replicas = 3, .live_version = 1};
  const Plan plan = PlanLine(line, nodes, kNow, kSettings);
  REQUIRE(plan.starts.size() == 3);
  std::set<std::string> used;
  for (const auto& s : plan.starts) {
    CHECK(s.version == 1);
    used.insert(s.node);
  }
  CHECK(used.size() == 3);
  CHECK(plan.stops.empty());
  CHECK_FALSE(plan.rollout);
}

TEST_CASE("steady state stops the surplus, unhealthy ones first", "[planner]") {
  auto nodes = Nodes(2);
  LineView line{.service = "echo", .replicas = 1, .live_version = 1};
  line.instances = {Healthy("a", 1, "n1"), Starting("b", 1, "n2"), Healthy("c", 1, "n2")};
  const Plan plan = PlanLine(line, nodes, kNow, kSettings);
  REQUIRE(plan.stops.size() == 2);
  CHECK(plan.stops[0].id == "b");  // not serving: goes first
  CHECK(plan.starts.empty());
}

TEST_CASE("instances on a dead node are lost and replaced on a live one", "[planner]") {
  auto nodes = Nodes(2);
  nodes[0].alive = false;
  LineView line{.service = "echo", .replicas = 2, .live_version = 1};
  line.instances = {Healthy("a", 1, "n1"), Healthy("b", 1, "n2")};
  const Plan plan = PlanLine(line, nodes, kNow, kSettings);
  REQUIRE(plan.stops.size() == 1);
  CHECK(plan.stops[0].id == "a");
  CHECK(plan.stops[0].lost);
  REQUIRE(plan.starts.size() == 1);
  CHECK(plan.starts[0].node == "n2");
}

TEST_CASE("instances of other releases are stopped in steady state", "[planner]") {
  auto nodes = Nodes(1);
  LineView line{.service = "echo", .replicas = 1, .live_version = 2};
  line.instances = {Healthy("old", 1, "n1"), Healthy("live", 2, "n1")};
  const Plan plan = PlanLine(line, nodes, kNow, kSettings);
  REQUIRE(plan.stops.size() == 1);
  CHECK(plan.stops[0].id == "old");
}

TEST_CASE("no live node: nothing is placed and the plan says why", "[planner]") {
  auto nodes = Nodes(1);
  nodes[0].alive = false;
  LineView line{.service = "echo", .replicas = 1, .live_version = 1};
  const Plan plan = PlanLine(line, nodes, kNow, kSettings);
  CHECK(plan.starts.empty());
  REQUIRE_FALSE(plan.notes.empty());
}

TEST_CASE("a rolling update surges one, waits for it, then replaces one at a time",
          "[planner]") {
  auto nodes = Nodes(3);
  LineView line{.service = "echo", .replicas = 3, .live_version = 1, .target_version = 2};
  line.instances = {Healthy("o1", 1, "n1"), Healthy("o2", 1, "n2"), Healthy("o3", 1, "n3")};

  // Step 1: one new instance, nothing stopped.
  Plan plan = PlanLine(line, nodes, kNow, kSettings);
  REQUIRE(plan.starts.size() == 1);
  CHECK(plan.starts[0].version == 2);
  CHECK(plan.stops.empty());
  CHECK_FALSE(plan.rollout);

  // Step 2: it is starting: nothing more happens.
  line.instances.push_back(Starting("n-a", 2, "n1"));
  plan = PlanLine(line, nodes, kNow, kSettings);
  CHECK(plan.starts.empty());
  CHECK(plan.stops.empty());

  // Step 3: healthy, but not for min_ready yet: still nothing (a crash right after the first
  // health check must not have replaced an old instance).
  line.instances.back() = Healthy("n-a", 2, "n1", 1s);
  plan = PlanLine(line, nodes, kNow, kSettings);
  CHECK(plan.starts.empty());
  CHECK(plan.stops.empty());

  // Step 4: available: one old instance goes and the next new one starts.
  line.instances.back() = Healthy("n-a", 2, "n1", 5s);
  plan = PlanLine(line, nodes, kNow, kSettings);
  REQUIRE(plan.stops.size() == 1);
  CHECK(plan.stops[0].id.starts_with("o"));
  REQUIRE(plan.starts.size() == 1);
  CHECK_FALSE(plan.rollout);
}

TEST_CASE("a rolling update finishes when every new instance is available and no old one runs",
          "[planner]") {
  auto nodes = Nodes(2);
  LineView line{.service = "echo", .replicas = 2, .live_version = 1, .target_version = 2};
  line.instances = {Healthy("n1i", 2, "n1"), Healthy("n2i", 2, "n2"), Healthy("old", 1, "n1")};
  const Plan plan = PlanLine(line, nodes, kNow, kSettings);
  REQUIRE(plan.stops.size() == 1);
  CHECK(plan.stops[0].id == "old");
  REQUIRE(plan.rollout);
  CHECK(plan.rollout->succeeded);
}

TEST_CASE("a failed new instance fails the rollout and stops the new release", "[planner]") {
  auto nodes = Nodes(2);
  LineView line{.service = "echo", .replicas = 2, .live_version = 1, .target_version = 2};
  InstanceView broken = Starting("new", 2, "n1");
  broken.state = "backoff";
  broken.category = "start_failed";
  broken.detail = "exit code 3";
  broken.last_lines = {"boom"};
  line.instances = {Healthy("o1", 1, "n1"), Healthy("o2", 1, "n2"), broken};
  const Plan plan = PlanLine(line, nodes, kNow, kSettings);
  REQUIRE(plan.rollout);
  CHECK_FALSE(plan.rollout->succeeded);
  CHECK(plan.rollout->category == "start_failed");
  CHECK(plan.rollout->detail == "exit code 3");
  CHECK(plan.rollout->last_lines == std::vector<std::string>{"boom"});
  REQUIRE(plan.stops.size() == 1);
  CHECK(plan.stops[0].id == "new");  // the old ones keep serving
  CHECK(plan.starts.empty());
}

TEST_CASE("a first rollout with nothing live succeeds once its instances are available",
          "[planner]") {
  auto nodes = Nodes(1);
  LineView line{.service = "echo", .replicas = 1, .live_version = 0, .target_version = 1};
  Plan plan = PlanLine(line, nodes, kNow, kSettings);
  REQUIRE(plan.starts.size() == 1);
  line.instances = {Healthy("a", 1, "n1")};
  plan = PlanLine(line, nodes, kNow, kSettings);
  REQUIRE(plan.rollout);
  CHECK(plan.rollout->succeeded);
}

TEST_CASE("a rollout to zero replicas stops everything and succeeds", "[planner]") {
  auto nodes = Nodes(1);
  LineView line{.service = "echo", .replicas = 0, .live_version = 1, .target_version = 2};
  line.instances = {Healthy("a", 1, "n1")};
  const Plan plan = PlanLine(line, nodes, kNow, kSettings);
  CHECK(plan.starts.empty());
  REQUIRE(plan.stops.size() == 1);
  REQUIRE(plan.rollout);
  CHECK(plan.rollout->succeeded);
}

TEST_CASE("PickNode spreads a line before it fills the emptiest node", "[planner]") {
  std::vector<NodeView> nodes = {{.id = "a", .instances = 0}, {.id = "b", .instances = 5}};
  std::map<std::string, int> line_counts = {{"a", 1}};
  // b is busier overall, but a already runs this line.
  CHECK(PickNode(nodes, line_counts) == "b");
  CHECK(PickNode(nodes, line_counts) == "a");
  nodes[0].alive = nodes[1].alive = false;
  CHECK_FALSE(PickNode(nodes, line_counts));
}

TEST_CASE("preview slugs are made from branch refs", "[planner]") {
  CHECK(PreviewSlug("refs/heads/Feature/Login_v2") == "feature-login-v2");
  CHECK(PreviewSlug("refs/heads/main") == "main");
  CHECK(PreviewSlug("refs/heads/--") == "");
  CHECK(PreviewSlug("refs/heads/" + std::string(100, 'a')).size() == 40);
}

TEST_CASE("a first rollout starts every instance at once", "[planner]") {
  auto nodes = Nodes(2);
  LineView line{.service = "echo", .replicas = 3, .live_version = 0, .target_version = 1};
  const Plan plan = PlanLine(line, nodes, kNow, kSettings);
  CHECK(plan.starts.size() == 3);
}
