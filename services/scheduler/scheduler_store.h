#pragma once
// The controller's and the API's SQL over schema scheduler: services and their config, immutable
// releases, rollouts, deploy locks, instance rows (desired side) and nodes. The node runtime's
// side is node_store.h.

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "muon/common/db.h"
#include "muon/common/secret_box.h"
#include "muon/scheduler/v1/scheduler.pb.h"
#include "planner.h"

namespace muon::scheduler {

// A new release: copied from a build, or from an earlier release (rollback, redeploy), or the
// live one with new config.
struct NewRelease {
  std::string service;
  std::string repo;
  std::string folder;
  std::string artifact_digest;
  std::string manifest;
  std::string commit;
  std::string author;
  std::string build_id;
  std::string reason;   // build, config, rollback, redeploy
  std::string preview;  // branch slug or ""
  int from_version = 0;
  // Copy the config of release `from_version` instead of the service's current config.
  bool copy_config = false;
  int manifest_replicas = 1;  // the service's count until muon scale sets one
};

struct ConfigChange {
  std::map<std::string, std::string> set;
  std::vector<std::string> unset;
  std::map<std::string, std::string> secrets;
};

struct ServiceRow {
  std::string name;
  std::string repo;
  std::string folder;
  int replicas = 1;
  int live_version = 0;
  int64_t config_version = 0;
  bool paused = false;
  std::string paused_reason;
};

struct RolloutRow {
  int64_t id = 0;
  std::string service;
  int version = 0;
  int from_version = 0;
  std::string preview;
  std::string state;
  std::string category;
  std::string detail;
  TimePoint started_at{};
};

class Store {
 public:
  Store(db::Pool& pool, const SecretBox& box) : pool_(pool), box_(box) {}

  void Migrate();

  // ---- releases ----
  // Makes release v(N+1) of the service (creating the service on its first release). A build
  // handed over again for the same line and config returns the release made the first time
  // (created = false).
  v1::Release CreateRelease(const NewRelease& input, bool& created);
  std::optional<v1::Release> GetRelease(const std::string& service, int version);
  std::vector<v1::Release> ListReleases(const std::string& service, int limit);
  // The newest release of a line with one of `statuses` (any when empty).
  std::optional<v1::Release> NewestRelease(const std::string& service, const std::string& preview,
                                           const std::vector<std::string>& statuses);
  // The newest pending release of each line.
  std::vector<v1::Release> PendingReleases();
  // Pending releases of a line older than `below_version` will never roll out.
  int SupersedePending(const std::string& service, const std::string& preview, int below_version);
  void SetReleaseStatus(const std::string& service, int version, const std::string& status,
                        const std::string& category = "", const std::string& detail = "",
                        const std::vector<std::string>& last_lines = {});

  // ---- services and config ----
  std::optional<ServiceRow> GetService(const std::string& name);
  std::vector<ServiceRow> ListServices();
  void SetReplicas(const std::string& service, int replicas);
  void SetLive(const std::string& service, int version);
  void SetPaused(const std::string& service, bool paused, const std::string& reason);
  // Applies the change and bumps config_version; returns the new version.
  int64_t ChangeConfig(const std::string& service, const ConfigChange& change);
  // Keys set for the service: plain and secret.
  void ConfigKeys(const std::string& service, std::vector<std::string>& plain,
                  std::vector<std::string>& secret);

  // ---- rollouts and locks ----
  std::optional<RolloutRow> RunningRollout(const std::string& service, const std::string& preview);
  std::optional<RolloutRow> LastRollout(const std::string& service, const std::string& preview);
  // Starts a rollout (fails with kUniqueViolation semantics -> nullopt when one runs already).
  std::optional<RolloutRow> StartRollout(const std::string& service, int version, int from_version,
                                         const std::string& preview);
  // Records how a rollout ended, in one transaction: the rollout row, the release's status (live
  // and the previous one superseded, or failed with its category and last lines), the service's
  // live version and pause, and the deploy lock held by `lock_holder`.
  void EndRollout(const RolloutRow& rollout, const RolloutOutcome& outcome,
                  const std::string& lock_holder, const std::string& pause_reason);
  // A deleted branch: its preview versions in every service of `repo` stop (releases
  // superseded, rollouts ended, instances asked to stop). Returns how many services had one.
  int RemovePreview(const std::string& repo, const std::string& preview);
  // Takes or renews the service's deploy lock for `holder`; false (and the current lock) when
  // another holder has it and it has not expired.
  // `expired` (optional) is set to the lock taken over when it was another holder's that had
  // run out (its holder empty otherwise).
  bool AcquireLock(const std::string& service, const std::string& holder, const std::string& reason,
                   std::chrono::seconds ttl, v1::Lock* current, v1::Lock* expired = nullptr);
  std::optional<v1::Lock> ForceUnlock(const std::string& service);
  std::vector<v1::Lock> ListLocks();

  // ---- instances and nodes ----
  std::vector<NodeView> Nodes(std::chrono::milliseconds alive_within);
  std::vector<v1::Node> ListNodes(std::chrono::milliseconds alive_within);
  // Instances that want running or have not stopped yet, of one service (or of all: "").
  std::vector<std::pair<LineView, std::vector<v1::InstanceInfo>>> Lines(const std::string& service);
  std::vector<v1::InstanceInfo> Instances(const std::string& service);
  // Writes the plan's instance changes in one transaction; returns the new instance ids.
  std::vector<std::string> ApplyInstances(const std::string& service, const std::string& preview,
                                          const Plan& plan);
  // The same for many lines at once, in one transaction (a reconcile pass in steady state):
  // ids[i] are the new instance ids of plans[i].
  struct LinePlan {
    std::string service;
    std::string preview;
    const Plan* plan = nullptr;
  };
  std::vector<std::vector<std::string>> ApplyPlans(const std::vector<LinePlan>& plans);
  // Forgets instance rows that stopped more than `age` ago.
  void PruneStopped(std::chrono::seconds age);

  // ---- events ----
  std::vector<v1::Event> ListEvents(const std::string& service, int64_t after_id,
                                    std::optional<TimePoint> since, int limit);

 private:
  db::Pool& pool_;
  const SecretBox& box_;
};

// "refs/heads/Feature/Login_v2" -> "feature-login-v2" (at most 40 characters; "" when nothing is
// left).
std::string PreviewSlug(const std::string& ref);

}  // namespace muon::scheduler
