#pragma once
// The build queue (schema builder, table builds) behind a small interface: the service never
// sees SQL. One row per (repo, commit, service): asking twice returns the same build. A builder
// takes a queued build (or one whose lease ran out because its builder died) and holds it with a
// lease it renews; every later write names the lease owner, so a builder that lost its lease
// cannot overwrite the build that another builder now runs.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "muon/builder/v1/builder.pb.h"
#include "muon/common/db.h"

namespace muon::builder {

struct BuildSpec {
  std::string repo;
  std::string clone_url;
  std::string ref;
  std::string commit;
  std::string service;
  std::string folder;
  std::string trigger;
  // The ref is the repo's default branch, or the build is an explicit deploy: its release
  // candidate goes live (false: a preview version). Kept from the request that created the build.
  bool default_branch = true;
};

// A release candidate to hand over for a build: the ref it is for and whether it goes live.
struct Handover {
  std::string ref;
  bool default_branch = true;
  bool operator==(const Handover&) const = default;
};

struct Failure {
  std::string category;  // build_failed, timeout, fetch_failed, manifest_invalid, output_invalid
  std::string step;
  int exit_code = -1;
  std::vector<std::string> last_lines;
  std::string detail;
};

class BuildStore {
 public:
  virtual ~BuildStore() = default;
  // Queues the build, or returns the existing one of the same (repo, commit, service); `created`
  // says which.
  virtual v1::Build Enqueue(const BuildSpec& spec, bool& created) = 0;
  // Takes the oldest queued build, or a running one whose lease expired, for `owner`.
  virtual std::optional<v1::Build> Claim(const std::string& owner, std::chrono::seconds lease) = 0;
  // False when the lease is no longer this owner's (expired and taken by another builder).
  virtual bool Renew(const std::string& id, const std::string& owner,
                     std::chrono::seconds lease) = 0;
  // `manifest`: the service's muon.yaml text at the commit.
  virtual bool Succeed(const std::string& id, const std::string& owner, const std::string& digest,
                       int64_t size, bool reused, const std::string& input_tree,
                       const std::string& manifest) = 0;
  virtual bool Fail(const std::string& id, const std::string& owner, const Failure& failure) = 0;
  // A failed build queued again (asked for by hand); false when it is not failed.
  virtual bool Requeue(const std::string& id) = 0;
  // A finished build of the same service folder contents (git tree id) whose artifact can be
  // reused: digest and size.
  virtual std::optional<std::pair<std::string, int64_t>> Reusable(
      const std::string& repo, const std::string& service, const std::string& input_tree) = 0;
  // Records a release candidate asked for while the build is queued or running (the same commit
  // pushed to another branch, an explicit deploy), to be handed over when it succeeds; nothing
  // when it is the build's own (ref, default_branch) or already recorded. False when the build is
  // no longer queued or running: the caller hands it over itself (or not, if it failed).
  virtual bool AddHandover(const std::string& id, const Handover& handover) = 0;
  // What to hand over when the build succeeds: its own (ref, default_branch) first, then those
  // AddHandover recorded.
  virtual std::vector<Handover> Handovers(const std::string& id) = 0;
  virtual std::optional<v1::Build> Get(const std::string& id) = 0;
  // Without the manifest text (a list stays small).
  virtual std::vector<v1::Build> List(const std::string& service, const std::string& repo,
                                      int limit) = 0;
};

class PgBuildStore : public BuildStore {
 public:
  explicit PgBuildStore(db::Pool& pool) : pool_(pool) {}
  // Applies the schema builder's migrations (every replica may at once).
  void Migrate();

  v1::Build Enqueue(const BuildSpec& spec, bool& created) override;
  std::optional<v1::Build> Claim(const std::string& owner, std::chrono::seconds lease) override;
  bool Renew(const std::string& id, const std::string& owner, std::chrono::seconds lease) override;
  bool Succeed(const std::string& id, const std::string& owner, const std::string& digest,
               int64_t size, bool reused, const std::string& input_tree,
               const std::string& manifest) override;
  bool Fail(const std::string& id, const std::string& owner, const Failure& failure) override;
  bool Requeue(const std::string& id) override;
  std::optional<std::pair<std::string, int64_t>> Reusable(const std::string& repo,
                                                          const std::string& service,
                                                          const std::string& input_tree) override;
  bool AddHandover(const std::string& id, const Handover& handover) override;
  std::vector<Handover> Handovers(const std::string& id) override;
  std::optional<v1::Build> Get(const std::string& id) override;
  std::vector<v1::Build> List(const std::string& service, const std::string& repo,
                              int limit) override;

 private:
  db::Pool& pool_;
};

// "b-" and 12 random hex digits.
std::string NewBuildId();

}  // namespace muon::builder
