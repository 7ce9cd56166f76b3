#pragma once
// A node's artifacts: fetched by digest from the builder over the bus (muon.rpc.builder.
// FetchArtifact, in chunks, with the platform's service token), checked against the digest
// (sha256), kept under <dir>/<digest>.tar.gz (written to a temporary name, renamed when
// complete), and unpacked into an instance's directory.

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "muon/common/bus.h"

namespace muon::scheduler {

class ArtifactCache {
 public:
  // `bearer` gives "Bearer <jwt>" for the Authorization header ("" sends none).
  ArtifactCache(bus::Connection& bus, std::filesystem::path dir,
                std::function<std::string()> bearer,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // The cached file of `digest`, fetched first when missing. Throws std::runtime_error with the
  // reason (bad digest, builder error, digest mismatch, disk) — "could not be fetched: <what()>".
  std::filesystem::path Get(const std::string& digest);
  // Get, then unpacks into `dest` (created; must not exist or be empty).
  void Unpack(const std::string& digest, const std::filesystem::path& dest);

 private:
  std::filesystem::path Fetch(const std::string& digest);

  bus::Connection& bus_;
  std::filesystem::path dir_;
  std::function<std::string()> bearer_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<std::mutex>> fetching_;  // one fetch per digest at once
};

}  // namespace muon::scheduler
