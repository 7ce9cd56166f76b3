#pragma once
// An InstanceDriver that runs nothing: Start "starts" an instance at once, it stays running until
// stopped, and the agent counts it healthy right away (real() is false: no artifact fetch, no
// health probes). Lets a benchmark simulate many nodes (each a NodeAgent with its own driver) in
// one process against the real controller, database and bus.

#include <atomic>

#include "instance_driver.h"

namespace muon::scheduler {

class DryRunDriver : public InstanceDriver {
 public:
  std::unique_ptr<RunningInstance> Start(const InstanceSpec& spec) override;
  ExecOutcome Exec(const InstanceSpec& spec, const std::vector<std::string>& argv,
                   std::chrono::milliseconds timeout, size_t output_cap) override;
  bool KillOrphan(const std::string&, int) override { return false; }
  bool real() const override { return false; }
  std::string name() const override { return "dry-run"; }

  int started() const { return started_.load(); }  // instances started so far
  int running() const { return running_.load(); }  // started and not yet ended

 private:
  std::atomic<int> started_{0};
  std::atomic<int> running_{0};
};

}  // namespace muon::scheduler
