#pragma once
// The node runtime: runs the instances the controller placed on this node.
//
//   PgNodeStore store(pool, secret_box);  PgEventLog events(pool, &bus, region);
//   ProcessDriver driver(bus, {.sandbox = SandboxMode::kAuto, .state_dir = state_dir});
//   NodeAgent agent(store, events, bus, driver, {.node_id = NodeAgent::DefaultNodeId(),
//       .region = region, .state_dir = state_dir, .nats_url = nats_url, .bearer = bearer_fn});
//   agent.Start();  /* ... until SIGTERM ... */  agent.Stop();
//
// Every `poll` (or at once on any message to muon.node.<node id>.kick) it reads its rows
// (NodeStore::Assigned) and hands each to a per-instance thread, which fetches the release's
// artifact (ArtifactCache), unpacks it into <state dir>/instances/<id>/, starts it through the
// InstanceDriver with the release's env plus MUON_SERVICE, MUON_VERSION (release label),
// MUON_INSTANCE, MUON_REGION, NATS_URL, PORT (and MUON_PREVIEW=1 for previews), waits until it is
// healthy ($SRV.PING.<service>.<id> answers, then the manifest's health rpc or http_path), and
// restarts it with backoff (backoff.h) when it exits. Every state change is reported on the row
// (state, pid, restarts, started_at, healthy_at, category, detail, last_lines) and recorded as an
// instance.* event. desired=stopped: SIGTERM, the manifest's drain grace, SIGKILL, state stopped,
// dir removed. The node's row in `nodes` is upserted every `heartbeat`.
//
// Failures (category on the row until the instance is healthy again):
//   start_failed    it could not start (artifact, manifest, env) or exited before it was healthy
//   health_timeout  not healthy within manifest.health.timeout: killed and restarted
//   crash_loop      it had been healthy and exited 3 times within 5 minutes
//
// muon.node.<node id>.Exec (ExecRequest → ExecResponse, or the platform error shape) runs a
// command in an instance's dir and env (muon exec). A database that is away leaves instances
// running; reports and events are retried until it is back.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "artifact_cache.h"
#include "event_log.h"
#include "instance_driver.h"
#include "muon/common/bus.h"
#include "node_store.h"

namespace muon::scheduler {

struct NodeOptions {
  std::string node_id;  // required; NodeAgent::DefaultNodeId() gives MUON_NODE_ID or the hostname
  std::string region = "local";
  std::string host;                 // shown in `muon status`; default: the hostname
  std::filesystem::path state_dir;  // required: artifacts/ and instances/ go below it
  std::string nats_url;             // what instances get as NATS_URL
  std::chrono::milliseconds poll{500};
  std::chrono::milliseconds heartbeat{1000};
  // "Bearer <jwt>" of the platform's service account, for the builder's FetchArtifact.
  std::function<std::string()> bearer;
  // Restart pacing: initial wait, doubled up to max (reset after 60 s healthy).
  std::chrono::milliseconds backoff_initial{1000};
  std::chrono::milliseconds backoff_max{30000};
};

class NodeAgent {
 public:
  // Everything passed by reference must outlive the agent.
  NodeAgent(NodeStore& store, EventLog& events, bus::Connection& bus, InstanceDriver& driver,
            NodeOptions options);
  ~NodeAgent();  // Stop()
  NodeAgent(const NodeAgent&) = delete;
  NodeAgent& operator=(const NodeAgent&) = delete;

  // Subscribes to the kick and Exec subjects and starts the loop (returns at once).
  void Start();
  // Stops every instance (SIGTERM, drain grace, SIGKILL) and reports it pending again (it starts
  // when the node is back), then returns. Idempotent.
  void Stop();
  // Re-read the rows now (what a message to muon.node.<id>.kick does).
  void Kick();

  const NodeOptions& options() const { return options_; }
  size_t instances() const;  // instances this node currently handles (any state but stopped)

  // MUON_NODE_ID when set, else the hostname.
  static std::string DefaultNodeId();
  // "v<version>", or the preview slug for a preview release.
  static std::string ReleaseLabel(int version, const std::string& preview);

 private:
  struct Runner;
  void Loop();
  void Reconcile(const std::vector<Assignment>& assigned);
  void RunInstance(Runner& runner);
  void HandleExec(bus::Msg& msg);

  NodeStore& store_;
  EventLog& events_;
  bus::Connection& bus_;
  InstanceDriver& driver_;
  NodeOptions options_;
  ArtifactCache artifacts_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool started_ = false;
  bool stopping_ = false;
  bool kicked_ = false;
  std::map<std::string, std::unique_ptr<Runner>> runners_;
  std::thread loop_;
  bus::Subscription kick_sub_;
  bus::Subscription exec_sub_;

  struct ExecThread {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex exec_mu_;
  std::vector<ExecThread> exec_threads_;
};

}  // namespace muon::scheduler
