#include "dry_run_driver.h"

#include <signal.h>

#include <mutex>

namespace muon::scheduler {
namespace {

class DryRunInstance : public RunningInstance {
 public:
  explicit DryRunInstance(std::atomic<int>& running) : running_(running) { ++running_; }
  ~DryRunInstance() override { End(SIGKILL); }
  int pid() const override { return 0; }
  std::optional<ExitStatus> Exited() override {
    std::lock_guard lock(mu_);
    return exit_;
  }
  void Terminate() override { End(0); }
  void Kill() override { End(SIGKILL); }
  std::vector<std::string> LastLines() const override { return {}; }

 private:
  void End(int signal) {
    std::lock_guard lock(mu_);
    if (exit_) return;
    exit_ =
        signal == 0 ? ExitStatus{.code = 0, .signal = 0} : ExitStatus{.code = -1, .signal = signal};
    --running_;
  }

  std::atomic<int>& running_;
  mutable std::mutex mu_;
  std::optional<ExitStatus> exit_;
};

}  // namespace

std::unique_ptr<RunningInstance> DryRunDriver::Start(const InstanceSpec&) {
  ++started_;
  return std::make_unique<DryRunInstance>(running_);
}

ExecOutcome DryRunDriver::Exec(const InstanceSpec& spec, const std::vector<std::string>& argv,
                               std::chrono::milliseconds, size_t) {
  ExecOutcome out;
  out.status.code = 0;
  out.output = "dry run: would run";
  for (const auto& a : argv) out.output += " " + a;
  out.output += " in " + spec.dir.string() + "\n";
  return out;
}

}  // namespace muon::scheduler
