#pragma once
// Processes accepted push deliveries from the deliveries table (a durable queue): each one is
// taken under a lease, its payload is parsed, and the builder is asked (PlanPush) to map the
// changed paths to services and queue their builds. A deleted branch becomes a branch_deleted
// event instead. The result (the builds, or why nothing was built) is written back to the
// delivery, which `muon deliveries` shows. A processor killed at any point leaves the delivery
// to the next one after the lease; the builder queues each (repo, commit, service) once, so
// doing a delivery twice builds nothing twice.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "muon/builder/v1/builder.pb.h"
#include "muon/common/bus.h"
#include "muon/github_events/v1/github_events.pb.h"
#include "muon/github_events/v1/payload.pb.h"
#include "store.h"

namespace muon::github_events {

// How the processor reaches the builder (the bus in production).
class BuildPlanner {
 public:
  virtual ~BuildPlanner() = default;
  // Throws muon::Error: 503/504 when the builder is unreachable (retried later), others final.
  virtual builder::v1::PlanPushResponse PlanPush(const builder::v1::PlanPushRequest& request) = 0;
};

// muon.rpc.builder.PlanPush with the service's own token.
class BusBuildPlanner : public BuildPlanner {
 public:
  BusBuildPlanner(bus::Connection& bus, std::function<std::string()> bearer,
                  std::chrono::milliseconds timeout = std::chrono::minutes(5))
      : bus_(bus), bearer_(std::move(bearer)), timeout_(timeout) {}
  builder::v1::PlanPushResponse PlanPush(const builder::v1::PlanPushRequest& request) override;

 private:
  bus::Connection& bus_;
  std::function<std::string()> bearer_;
  std::chrono::milliseconds timeout_;
};

struct ProcessorOptions {
  std::string owner;  // this process's name in leases
  std::chrono::seconds lease{30};
  std::chrono::milliseconds poll{1000};
  std::chrono::seconds max_backoff{300};
  // Attempts (each after a backoff) before a delivery the builder keeps failing on is marked
  // failed; about 20 minutes with the backoff's cap.
  int max_attempts = 12;
};

// GitHub truncates a push's commit list at 2048 commits and a commit's file lists at 3000
// files; a forced push lists only the new commits. The builder then diffs before..after.
bool NeedsDiff(const v1::GithubPayload& push);
// Every added, modified and removed path of the push's commits, each once.
std::vector<std::string> ChangedPaths(const v1::GithubPayload& push);

class PushProcessor {
 public:
  PushProcessor(Store& store, BuildPlanner& planner, bus::Connection& bus,
                ProcessorOptions options);
  ~PushProcessor();
  PushProcessor(const PushProcessor&) = delete;
  PushProcessor& operator=(const PushProcessor&) = delete;

  void Start();
  void Stop();
  void Wake();  // a delivery was accepted
  // Processes one due delivery; false when there was none.
  bool ProcessOne();

 private:
  void Loop();
  void PublishEvent(const v1::RepoEvent& event);

  Store& store_;
  BuildPlanner& planner_;
  bus::Connection& bus_;
  ProcessorOptions options_;
  std::unique_ptr<bus::JetStream> js_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t wakeups_ = 0;
  std::thread thread_;
};

}  // namespace muon::github_events
