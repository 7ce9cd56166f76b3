#pragma once
// The controller's decisions as a pure function: given one service line's desired state (a
// release to run at a count, maybe a rollout towards a new release) and what the nodes report,
// which instances to start where, which to stop, and whether a rollout has finished or failed.
// The controller (controller.h) loads the view from the database, applies the plan and records
// events; keeping the decisions here makes them testable without a database.
//
// A "line" is a service's main line (preview "") or one of its preview versions.
//
// Rolling update towards release T with N replicas (surge one, health-gated):
//   - start one instance of T whenever no instance of T is still on its way to available and
//     fewer than N of T run (all N at once when no old instance runs: nothing to protect);
//   - an instance is available once it has been healthy for `min_ready` (so a release that
//     crashes right after its first health check fails the rollout instead of replacing the old
//     one);
//   - stop one old instance whenever available(T) + running(old) > N;
//   - finished when available(T) >= N and no old instance runs; failed as soon as an instance of
//     T reports start_failed, health_timeout or crash_loop.

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace muon::scheduler {

using TimePoint = std::chrono::system_clock::time_point;

struct InstanceView {
  std::string id;
  int version = 0;
  std::string node;
  std::string desired;  // running, stopped
  std::string state;    // pending, starting, healthy, backoff, stopping, stopped, lost
  std::optional<TimePoint> healthy_at;
  std::string category;  // start_failed, health_timeout, crash_loop, or ""
  std::string detail;
  std::vector<std::string> last_lines;
  TimePoint created_at{};
};

struct NodeView {
  std::string id;
  bool alive = true;
  int instances = 0;  // instances with desired = running on it (all services)
};

struct LineView {
  std::string service;
  std::string preview;
  int replicas = 1;
  int live_version = 0;                 // 0: nothing live yet
  int target_version = 0;               // a running rollout's release, else 0
  std::vector<InstanceView> instances;  // of this line, every version, desired running or not gone
};

struct StartInstance {
  int version = 0;
  std::string node;
};

struct StopInstance {
  std::string id;
  std::string reason;  // for the event: "rollout: replaced by v3", "scale 3 -> 1", ...
  bool lost = false;   // its node is gone: mark it lost instead of waiting for the node
};

struct RolloutOutcome {
  bool succeeded = false;
  std::string category;  // failed: start_failed, health_timeout, crash_loop, no_nodes
  std::string detail;
  std::vector<std::string> last_lines;
  std::string instance;  // the instance that failed
};

struct Plan {
  std::vector<StartInstance> starts;
  std::vector<StopInstance> stops;
  std::optional<RolloutOutcome> rollout;  // set when the running rollout ended
  std::vector<std::string> notes;         // human lines for events ("no live node to place on")
};

struct PlannerSettings {
  std::chrono::milliseconds min_ready{3000};
};

// Picks a node for a new instance of `service` line: alive, fewest instances of this line, then
// fewest instances overall, then by id. Updates `nodes[i].instances` and `line_counts`.
// nullopt when no node is alive.
std::optional<std::string> PickNode(std::vector<NodeView>& nodes,
                                    std::map<std::string, int>& line_counts);

// `nodes` is updated as instances are placed, so several lines can be planned in one pass and
// still spread evenly.
Plan PlanLine(const LineView& line, std::vector<NodeView>& nodes, TimePoint now,
              const PlannerSettings& settings);

// True when the instance counts as failed for a rollout.
bool IsFailureCategory(const std::string& category);

}  // namespace muon::scheduler
