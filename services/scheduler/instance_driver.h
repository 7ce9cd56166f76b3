#pragma once
// The node runtime's seam between "what should run" and "how it runs".
//
// NodeAgent (node_agent.h) owns the policy: which rows run, artifacts, env, health checks,
// backoff, categories, events and reports. An InstanceDriver owns the mechanism: start one
// instance from a prepared spec, tell whether it still runs, stop it gracefully or hard, run a
// command beside it (muon exec), and clean up what a previous run of this node left behind.
//
// Implementations:
//   ProcessDriver (process_driver.h)  local processes, optionally inside bubblewrap; the default.
//   DryRunDriver  (dry_run_driver.h)  no processes: an instance "runs" as soon as it starts and is
//                                      healthy at once; for benchmarks simulating many nodes.
// A Kubernetes or Nomad driver would implement the same interface: Start creates a pod / job
// allocation from the spec (the dir's artifact as an image or volume, env as is, PORT as the
// container port), Exited polls its status, Terminate/Kill map to a graceful delete and a forced
// one, Exec to the API's exec, and checks_health() could hand health to the orchestrator's own
// readiness probes. Drivers are called from the agent's per-instance threads and must be
// thread-safe across instances (one instance's calls come from one thread at a time).

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "muon/common/bus.h"
#include "muon/common/process.h"

namespace muon::scheduler {

enum class SandboxMode { kAuto, kBubblewrap, kNone };

// Everything needed to start one instance; built by the agent.
struct InstanceSpec {
  std::string id;       // the instance id (also MUON_INSTANCE)
  std::string service;  // MUON_SERVICE
  std::string release;  // release label, MUON_VERSION ("v3" or a preview slug)
  std::string region;
  std::filesystem::path dir;               // the unpacked artifact; the working dir, writable
  std::string command;                     // the manifest's run command, run with `sh -c`
  std::map<std::string, std::string> env;  // the complete environment
  std::vector<std::string> secrets;        // masked in shipped log lines
  int port = 0;                            // also in env PORT
};

// One started instance. Destroying it kills whatever still runs (hard).
class RunningInstance {
 public:
  virtual ~RunningInstance() = default;
  virtual int pid() const = 0;  // 0 when the driver has no local process
  // The exit once it happened (its output read and shipped), else nullopt. Never blocks long.
  virtual std::optional<ExitStatus> Exited() = 0;
  // Asks it to finish (SIGTERM: stop taking work, drain, exit).
  virtual void Terminate() = 0;
  // Ends it now (SIGKILL to everything it started).
  virtual void Kill() = 0;
  // The last lines of its output (at most 20), oldest first.
  virtual std::vector<std::string> LastLines() const = 0;
};

struct ExecOutcome {
  ExitStatus status;
  std::string output;  // stdout and stderr interleaved, capped
  bool truncated = false;
  bool timed_out = false;
};

class InstanceDriver {
 public:
  virtual ~InstanceDriver() = default;
  // Throws std::exception (what() is the reason shown as the start failure's detail).
  virtual std::unique_ptr<RunningInstance> Start(const InstanceSpec& spec) = 0;
  // Runs `argv` in the instance's dir with its env (and sandbox); throws when it cannot start.
  virtual ExecOutcome Exec(const InstanceSpec& spec, const std::vector<std::string>& argv,
                           std::chrono::milliseconds timeout, size_t output_cap) = 0;
  // A row says `pid` ran instance `id` on this node before the node restarted: end that process
  // if it is still there and really is that instance. True when something was killed.
  virtual bool KillOrphan(const std::string& id, int pid) = 0;
  // False when the driver runs nothing real: the agent then neither fetches artifacts nor
  // probes health (an instance is healthy once started).
  virtual bool real() const { return true; }
  virtual std::string name() const = 0;  // "process (bwrap)", "dry-run", ...
};

}  // namespace muon::scheduler
