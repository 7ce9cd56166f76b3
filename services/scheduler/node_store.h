#pragma once
// What a node reads and writes in schema scheduler: its heartbeat, the instances placed on it
// (with everything needed to run them, from the immutable release), and their actual state.
// The controller writes `desired`; a node writes everything else of its own rows.

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "manifest.h"
#include "muon/common/db.h"
#include "muon/common/secret_box.h"

namespace muon::scheduler {

// One instance placed on a node, joined with its release.
struct Assignment {
  std::string id;
  std::string service;
  int version = 0;
  std::string preview;  // non-empty: serve only ver.<service>.<preview>.*
  std::string desired;  // running, stopped
  std::string state;    // as last reported
  int pid = 0;
  int restarts = 0;
  std::string artifact_digest;
  builder::Manifest manifest;  // run command, run env, health, drain grace
  // The release's config (plain values and opened secrets) on top of the manifest's run env.
  std::map<std::string, std::string> env;
  std::vector<std::string> secret_values;  // masked in shipped log lines
  // Non-empty when the row cannot be run as it is (its release is missing, its manifest does not
  // parse, its secrets do not open): the node reports it as a start failure with this detail.
  std::string problem;
};

// What a node reports about one instance. Unset optionals leave the column as it is.
struct InstanceReport {
  std::string id;
  std::string state;  // pending, starting, healthy, backoff, stopping, stopped, failed
  std::optional<int> pid;
  std::optional<int> restarts;
  std::optional<std::chrono::system_clock::time_point> started_at;
  std::optional<std::chrono::system_clock::time_point> healthy_at;  // set when it became healthy
  std::optional<std::string> category;                              // "" clears it
  std::optional<std::string> detail;
  std::optional<std::vector<std::string>> last_lines;
};

class NodeStore {
 public:
  virtual ~NodeStore() = default;
  virtual void Heartbeat(const std::string& node, const std::string& region,
                         const std::string& host) = 0;
  // Rows placed on `node` that want running, or that still run (state not stopped).
  virtual std::vector<Assignment> Assigned(const std::string& node) = 0;
  virtual void Report(const InstanceReport& report) = 0;
};

class PgNodeStore : public NodeStore {
 public:
  // `box` opens the releases' sealed secrets.
  PgNodeStore(db::Pool& pool, const SecretBox& box) : pool_(pool), box_(box) {}
  void Heartbeat(const std::string& node, const std::string& region,
                 const std::string& host) override;
  std::vector<Assignment> Assigned(const std::string& node) override;
  void Report(const InstanceReport& report) override;

 private:
  const builder::ManifestResult& ParsedManifest(const std::string& service, int version,
                                                const pqxx::field& text);

  db::Pool& pool_;
  const SecretBox& box_;
  std::mutex manifests_mu_;
  std::map<std::pair<std::string, int>, builder::ManifestResult> manifests_;
};

}  // namespace muon::scheduler
