#pragma once
// The builder: turns pushes into builds and builds into artifacts.
//
//   muon::builder::BuilderApp app(OptionsFromConfig(config), bus);
//   app.Register(service);  // endpoints + authorization
//   app.Start();            // build workers; Stop() (or the destructor) ends them
//
// PlanPush maps a push's changed paths to the services whose folder (holding a muon.yaml at the
// pushed commit) they touch and queues a build for each; StartBuild builds a service at a commit
// or branch by hand (muon deploy, muon repos sync). Workers take queued builds under a lease,
// fetch the repo into a bare mirror, export the commit into a fresh work dir, validate the
// manifest, run its steps (step_runner.h), pack the outputs (artifact.h) and store the artifact
// once by digest (artifact_store.h). Output lines go to the log stream (source build, instance =
// build id); state changes go to muon.evt.build.<service>.

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "artifact_store.h"
#include "build_store.h"
#include "muon/builder/v1/builder.pb.h"
#include "muon/common/authz.h"
#include "muon/common/bus.h"
#include "muon/common/config.h"
#include "muon/common/db.h"
#include "muon/common/service.h"
#include "step_runner.h"

namespace muon::builder {

struct BuilderOptions {
  std::string database_url;
  std::string service_secret;       // the service account's (for rules); empty: no authorization
  std::filesystem::path state_dir;  // mirrors/ and work/ live here
  int workers = 1;
  std::chrono::seconds lease{30};
  std::chrono::milliseconds poll{1000};
  std::string sandbox = "auto";  // auto, bwrap, none
  std::string owner;             // this builder's name in leases (the instance id)
  std::string region;
};

void AddOptions(config::Spec& spec);
BuilderOptions OptionsFromConfig(const config::Values& values);
ServiceOptions DefaultServiceOptions();

class BuilderApp {
 public:
  BuilderApp(BuilderOptions options, bus::Connection& bus);
  ~BuilderApp();
  BuilderApp(const BuilderApp&) = delete;
  BuilderApp& operator=(const BuilderApp&) = delete;

  void Register(Service& service, bool authorize = true);
  void Start();
  void Stop();

  v1::PlanPushResponse PlanPush(const v1::PlanPushRequest& request);
  v1::StartBuildResponse StartBuild(const v1::StartBuildRequest& request);
  v1::ListBuildsResponse ListBuilds(const v1::ListBuildsRequest& request);
  v1::Build GetBuild(const v1::GetBuildRequest& request);
  v1::FetchArtifactResponse FetchArtifact(const v1::FetchArtifactRequest& request);

 private:
  void WorkerLoop(int worker);
  void RunBuild(v1::Build build, const std::string& owner);
  void Publish(const std::string& type, const v1::Build& build);
  // A release_candidate for `handover` (its ref, live or preview). One event per (build, ref,
  // live): a repeat within the stream's duplicate window is dropped; `again` (a hand-over asked
  // for by hand: muon deploy of a built commit) is always a new event.
  void PublishCandidate(const v1::Build& build, const Handover& handover, bool again = false);
  // An existing build asked for again: a succeeded one is handed over now, a queued or running
  // one when it succeeds (a failed one not at all). `build` is refreshed when it finished
  // meanwhile.
  void HandOver(v1::Build& build, const Handover& handover, bool again);
  void Wake();
  std::filesystem::path MirrorsDir() const { return options_.state_dir / "mirrors"; }

  BuilderOptions options_;
  bus::Connection& bus_;
  db::Pool pool_;
  PgBuildStore builds_;
  PgArtifactStore artifacts_;
  std::unique_ptr<bus::JetStream> js_;
  Sandbox sandbox_ = Sandbox::kNone;
  std::unique_ptr<ServiceTokenSource> service_token_;
  std::unique_ptr<token::Verifier> verifier_;
  std::unique_ptr<rules::RuleCache> rules_;
  bus::Subscription kick_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t wakeups_ = 0;
  std::vector<std::thread> threads_;
};

}  // namespace muon::builder
