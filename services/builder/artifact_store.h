#pragma once
// The content-addressed artifact store: an artifact (artifact.h) is kept once under its digest,
// the sha256 hex of its bytes. PgArtifactStore keeps it in PostgreSQL (schema builder, see
// migrations/0001_init.sql) as fixed-size chunks plus one builder.artifacts row written last in
// the same transaction, so a row means the whole artifact is there. Artifacts are immutable:
// readers need no locks, and reading a range touches only the chunks that overlap it.
//
// Every digest argument must be 64 lowercase hex digits, else std::invalid_argument.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>

#include "muon/common/db.h"

namespace muon::builder {

// Read/ReadToFile of a digest the store does not hold.
class ArtifactNotFound : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// True for 64 lowercase hex digits.
bool IsValidDigest(const std::string& digest);

class ArtifactStore {
 public:
  virtual ~ArtifactStore() = default;

  virtual bool Has(const std::string& digest) = 0;
  // Bytes of the artifact; nullopt when it is not stored.
  virtual std::optional<int64_t> Size(const std::string& digest) = 0;
  // Stores `file` under `digest` once; returns true when it was new, false when it was already
  // stored (a no-op). Throws std::invalid_argument when the file's sha256 is not `digest`.
  // Concurrent Puts of one digest all succeed and store it once.
  virtual bool Put(const std::string& digest, const std::filesystem::path& file) = 0;
  // Up to max_bytes from byte `offset`; empty at or after the end. Throws ArtifactNotFound for an
  // unknown digest, std::invalid_argument for a negative offset or max_bytes.
  virtual std::string Read(const std::string& digest, int64_t offset, int64_t max_bytes) = 0;
  // Writes the whole artifact to `file` (replaced only once complete), checking its size and
  // sha256. Throws ArtifactNotFound for an unknown digest, std::runtime_error when the stored
  // bytes do not match the digest.
  virtual void ReadToFile(const std::string& digest, const std::filesystem::path& file) = 0;
};

// Runs no migrations: the builder's schema is applied by whoever owns the pool, with
// db::Migrate(pool, "builder", ...).
class PgArtifactStore : public ArtifactStore {
 public:
  // chunk_size: bytes per builder.artifact_chunks row for newly stored artifacts (an artifact
  // keeps the chunk size it was stored with). Must be positive.
  explicit PgArtifactStore(db::Pool& pool, int chunk_size = 1 << 20);

  bool Has(const std::string& digest) override;
  std::optional<int64_t> Size(const std::string& digest) override;
  bool Put(const std::string& digest, const std::filesystem::path& file) override;
  std::string Read(const std::string& digest, int64_t offset, int64_t max_bytes) override;
  void ReadToFile(const std::string& digest, const std::filesystem::path& file) override;

 private:
  db::Pool& pool_;
  int chunk_size_;
};

}  // namespace muon::builder
