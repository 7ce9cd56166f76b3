#pragma once
// The real InstanceDriver: an instance is `sh -c <run command>` in its own process group, in its
// directory, with exactly the spec's environment, its stdout/stderr captured line by line into the
// log stream (output_capture.h: source app, secrets masked, start and exit as system lines).
//
// Sandbox (like the builder's steps): bubblewrap from an allow-list — /usr, /bin, /sbin, /lib*
// and /etc read-only, a private /tmp, /dev and /proc, the instance's own dir writable, its own PID
// and IPC namespaces; the node's state dir (other instances, the artifact cache) does not exist
// for it. The network is shared: instances talk to NATS. The node's tools: when the directory of
// the running binary (/proc/self/exe, normally muon-scheduler's) holds muon-bus, it is put first
// in the instance's PATH and bound read-only into the sandbox, so a run command can
// `exec muon-bus serve NAME --endpoint ...` (services without a NATS client; tools/muon-bus).
// bwrap's outer process does not pass SIGTERM on, so a graceful stop signals the group's other
// members (the instance itself) and leaves bwrap to exit with the instance's status.

#include <filesystem>
#include <string>

#include "instance_driver.h"
#include "muon/common/bus.h"

namespace muon::scheduler {

// "auto", "bwrap", "none"; nullopt for anything else.
std::optional<SandboxMode> ParseSandboxMode(std::string_view text);
// Whether bubblewrap works here (installed, and user namespaces or root).
bool BubblewrapWorks();

struct ProcessDriverOptions {
  SandboxMode sandbox = SandboxMode::kAuto;
  // Hidden inside the sandbox (instances see only their own dir below it).
  std::filesystem::path state_dir;
};

class ProcessDriver : public InstanceDriver {
 public:
  // Resolves kAuto (a warning when bubblewrap does not work); throws std::runtime_error for
  // kBubblewrap when it does not work.
  ProcessDriver(bus::Connection& bus, ProcessDriverOptions options);

  std::unique_ptr<RunningInstance> Start(const InstanceSpec& spec) override;
  ExecOutcome Exec(const InstanceSpec& spec, const std::vector<std::string>& argv,
                   std::chrono::milliseconds timeout, size_t output_cap) override;
  bool KillOrphan(const std::string& id, int pid) override;
  std::string name() const override { return sandboxed_ ? "process (bwrap)" : "process"; }
  bool sandboxed() const { return sandboxed_; }

 private:
  // The program and arguments that run `argv` for `spec` (inside bwrap when sandboxed).
  ProcessOptions Command(const InstanceSpec& spec, const std::vector<std::string>& argv) const;

  bus::Connection& bus_;
  ProcessDriverOptions options_;
  bool sandboxed_ = false;
};

}  // namespace muon::scheduler
