#pragma once
// The `muon.yaml` service manifest: what the builder runs to build a service and what the
// scheduler needs to run it. ParseManifest validates the whole file and reports every problem at
// once (a push that fails on one error at a time is a slow feedback loop); it never throws.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace muon::builder {

inline constexpr size_t kMaxManifestBytes = 256 * 1024;
inline constexpr size_t kMaxBuildSteps = 50;
inline constexpr int kMaxReplicas = 100;

struct BuildStep {
  std::string name;  // "step N" (1-based) when the manifest gives none
  std::string run;   // a shell command line
  std::chrono::seconds timeout = std::chrono::minutes(10);
};

// At most one of rpc / http_path is set; with neither, the service is healthy once it answers
// $SRV.PING.
struct HealthCheck {
  std::string rpc;        // a method of the service, called with an empty request
  std::string http_path;  // starts with '/'
  std::chrono::seconds timeout = std::chrono::seconds(30);
  std::chrono::seconds interval = std::chrono::seconds(1);
};

struct Manifest {
  std::string name;
  std::vector<BuildStep> steps;
  std::map<std::string, std::string> build_env;
  // Relative to the service folder, normalised: no "./", no trailing '/', "." = the whole folder.
  std::vector<std::string> outputs;
  std::chrono::seconds build_timeout = std::chrono::minutes(30);
  int64_t output_cap_bytes = 8 * 1024 * 1024;
  std::string run_command;
  int replicas = 1;
  std::map<std::string, std::string> run_env;
  std::vector<std::string> required_env;  // must be set before a deploy
  HealthCheck health;
  std::chrono::seconds drain_grace = std::chrono::seconds(10);
  std::vector<std::string> depends_on;
};

struct ManifestError {
  std::string path;  // e.g. "build.steps[1].run" (indexes 0-based); empty for the whole file
  std::string message;
};

// `manifest` is set exactly when `errors` is empty.
struct ManifestResult {
  std::optional<Manifest> manifest;
  std::vector<ManifestError> errors;
};

ManifestResult ParseManifest(std::string_view yaml_text);

// One line per error, "<file>: <path>: <message>\n" ("<file>: <message>\n" for an empty path).
std::string FormatManifestErrors(const std::vector<ManifestError>& errors, std::string_view file);

}  // namespace muon::builder
