#pragma once
// The controller: one leader per region (a PostgreSQL session advisory lock; standbys try every
// second and take over when the leader's session ends), reconciling desired -> actual every tick
// and whenever kicked:
//   1. pending releases start rollouts (checked first: manifest valid, required config set,
//      dependencies not rolling out or failed for the same commit: waves in depends_on order);
//   2. every line (a service's main line, each preview) is planned (planner.h) and the plan
//      applied: instances created on nodes or asked to stop, rollouts ended with their outcome;
//   3. nodes holding changed instances are kicked (muon.node.<id>.kick).
// Everything it decides is in the database before it acts on it, so a new leader after a kill -9
// resumes from the rows: a rollout half-way goes on from its instances' states.
//
//   Controller controller(options, pool, store, events, &bus);
//   controller.Start();  // leader election + loop; Stop() ends both
//   controller.Kick();   // reconcile now (a new release, a scale)

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "event_log.h"
#include "muon/common/bus.h"
#include "muon/common/db.h"
#include "planner.h"
#include "scheduler_store.h"

namespace muon::scheduler {

struct ControllerOptions {
  std::string database_url;  // the leader holds its advisory lock on a connection of its own
  std::string region = "local";
  std::string id;  // this controller's name in locks and events
  std::chrono::milliseconds tick{250};
  std::chrono::milliseconds node_timeout{5000};  // a node silent this long is gone
  std::chrono::milliseconds min_ready{3000};     // healthy this long before it counts
  std::chrono::seconds lock_ttl{30};
  std::chrono::seconds no_node_timeout{60};  // a rollout with no live node this long fails
  std::chrono::milliseconds election_retry{1000};
};

class Controller {
 public:
  Controller(ControllerOptions options, Store& store, EventLog& events, bus::Connection* bus);
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Whether `service` of `repo` has a build of `commit` queued or running (asked of the
  // builder): a dependency still building holds back its dependents' rollouts. Without a probe
  // only releases already made are waited for.
  using BuildProbe = std::function<bool(const std::string& repo, const std::string& service,
                                        const std::string& commit)>;
  void SetBuildProbe(BuildProbe probe) { build_probe_ = std::move(probe); }

  void Start();
  void Stop();
  void Kick();
  bool leader() const { return leader_.load(); }

  // One reconcile pass, as the leader does every tick (public for tests and the bench, which
  // run it without an election). Returns the number of instances placed.
  int ReconcileOnce();

 private:
  void Loop();
  bool TryLead();
  bool StillLeading();
  void StartPendingRollouts();
  int ReconcileLine(const LineView& line, std::vector<NodeView>& nodes,
                    std::set<std::string>& kicked);
  // The events of a plan (one per kind, not per instance) and the nodes to kick.
  static void DescribePlan(const LineView& line, const Plan& plan,
                           const std::vector<std::string>& ids, bool rollout,
                           std::vector<EventInput>& trail, std::set<std::string>& kicked);
  std::string LockHolder(int64_t rollout_id) const;
  static std::string LockKey(const std::string& service, const std::string& preview);

  ControllerOptions options_;
  Store& store_;
  EventLog& events_;
  bus::Connection* bus_;
  std::unique_ptr<pqxx::connection> leader_conn_;
  std::atomic<bool> leader_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool kicked_ = false;
  std::thread thread_;
  // Lines whose "waiting for a dependency" / "no node" note was already recorded, so the trail
  // says it once.
  std::set<std::string> noted_;
  std::chrono::steady_clock::time_point last_prune_{};
  BuildProbe build_probe_;
};

}  // namespace muon::scheduler
