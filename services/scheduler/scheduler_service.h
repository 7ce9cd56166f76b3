#pragma once
// muon-scheduler's API and its inputs from the rest of the platform:
//   - the Scheduler RPCs (muon.rpc.scheduler.<Method>): status, releases, events, locks, drift,
//     and the mutations (deploy, rollback, scale, env/secrets, unlock), each answering a Receipt;
//   - the EVENTS stream (durable consumer "scheduler"): release_candidate build events become
//     releases; branch_deleted repo events remove that branch's preview versions.
// The controller (controller.h) does the rolling out; this class only records desired state and
// kicks it.
//
//   SchedulerApp app(OptionsFromConfig(config), bus);
//   app.Register(service);  // endpoints + authorization
//   app.Start();            // controller (election) + event consumer (+ node runtime if enabled)

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "controller.h"
#include "event_log.h"
#include "instance_driver.h"
#include "muon/common/authz.h"
#include "muon/common/bus.h"
#include "muon/common/config.h"
#include "muon/common/db.h"
#include "muon/common/secret_box.h"
#include "muon/common/service.h"
#include "muon/scheduler/v1/scheduler.pb.h"
#include "node_agent.h"
#include "node_store.h"
#include "scheduler_store.h"

namespace muon::scheduler {

struct SchedulerOptions {
  std::string database_url;
  std::string service_secret;
  std::string secret_key_hex;  // seals config secrets at rest
  std::string mode = "all";    // all (controller + node), controller, node
  std::string region = "local";
  std::string instance;  // this process's id
  std::string nats_url;
  ControllerOptions controller;
  NodeOptions node;
  std::string sandbox = "auto";
  std::string driver = "process";  // process, dry-run
};

void AddOptions(config::Spec& spec);
SchedulerOptions OptionsFromConfig(const config::Values& values);
ServiceOptions DefaultServiceOptions(const std::string& mode);
// The mode given on the command line or in MUON_SCHEDULER_MODE (before the config is parsed: it
// decides the service's name).
std::string ModeFromArgs(int argc, char** argv);

class SchedulerApp {
 public:
  SchedulerApp(SchedulerOptions options, bus::Connection& bus);
  ~SchedulerApp();
  SchedulerApp(const SchedulerApp&) = delete;
  SchedulerApp& operator=(const SchedulerApp&) = delete;

  void Register(Service& service, bool authorize = true);
  void Start();
  void Stop();

  Controller* controller() { return controller_.get(); }
  Store& store() { return *store_; }

  v1::StatusResponse Status(const v1::StatusRequest& request);
  v1::DescribeResponse Describe(const v1::GetServiceRequest& request);
  v1::ListReleasesResponse ListReleases(const v1::ListReleasesRequest& request);
  v1::ListEventsResponse ListEvents(const v1::ListEventsRequest& request);
  v1::ListLocksResponse ListLocks(const v1::ListLocksRequest& request);
  v1::DriftResponse Drift(const v1::DriftRequest& request);
  v1::Receipt Deploy(const v1::DeployRequest& request, const std::string& who);
  v1::Receipt Rollback(const v1::RollbackRequest& request, const std::string& who);
  v1::Receipt Scale(const v1::ScaleRequest& request, const std::string& who);
  v1::Receipt SetEnv(const v1::SetEnvRequest& request, const std::string& who);
  v1::Receipt Unlock(const v1::UnlockRequest& request, const std::string& who);
  v1::ExecResponse Exec(const v1::ExecRequest& request);

  // A release candidate (a BuildEvent's bytes) or a repo event; public for tests.
  void HandleEvent(std::string_view subject, std::string_view data);

 private:
  void ConsumeEvents();
  ServiceRow RequireService(const std::string& name);
  v1::ServiceStatus StatusOf(const ServiceRow& service);
  void KickController();
  // The release the next release of the main line copies its artifact from.
  v1::Release BaseRelease(const std::string& service);
  void CheckRequiredConfig(const std::string& service, const std::string& manifest_text,
                           const ConfigChange* pending_change);
  v1::Receipt ReleaseReceipt(const std::string& service, const std::string& summary,
                             std::vector<std::string> changes, const v1::Release* release);

  SchedulerOptions options_;
  bus::Connection& bus_;
  db::Pool pool_;
  SecretBox box_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<PgEventLog> events_;
  std::unique_ptr<Controller> controller_;
  std::unique_ptr<PgNodeStore> node_store_;
  std::unique_ptr<InstanceDriver> driver_;
  std::unique_ptr<NodeAgent> node_;
  std::unique_ptr<ServiceTokenSource> service_token_;
  std::unique_ptr<token::Verifier> verifier_;
  std::unique_ptr<rules::RuleCache> rules_;
  bus::Subscription kick_;
  std::atomic<bool> stop_{false};
  std::thread consumer_;
};

}  // namespace muon::scheduler
