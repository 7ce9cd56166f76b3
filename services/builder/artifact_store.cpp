#include "artifact_store.h"

#include <fmt/format.h>
#include <sodium.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <pqxx/pqxx>
#include <system_error>

#include "artifact.h"

namespace muon::builder {
namespace {

namespace fs = std::filesystem;

void RequireDigest(const std::string& digest) {
  if (!IsValidDigest(digest)) {
    throw std::invalid_argument(
        fmt::format("artifact digest \"{}\" is not 64 lowercase hex digits", digest));
  }
}

class Sha256 {
 public:
  Sha256() { crypto_hash_sha256_init(&state_); }
  void Update(const char* data, size_t size) {
    crypto_hash_sha256_update(&state_, reinterpret_cast<const unsigned char*>(data), size);
  }
  std::string Hex() {
    std::array<unsigned char, crypto_hash_sha256_BYTES> digest;
    crypto_hash_sha256_final(&state_, digest.data());
    std::array<char, crypto_hash_sha256_BYTES * 2 + 1> hex;
    sodium_bin2hex(hex.data(), hex.size(), digest.data(), digest.size());
    return std::string(hex.data(), crypto_hash_sha256_BYTES * 2);
  }

 private:
  crypto_hash_sha256_state state_;
};

struct StoredArtifact {
  int64_t size;
  int64_t chunk_size;
};

std::optional<StoredArtifact> Lookup(pqxx::transaction_base& tx, const std::string& digest) {
  const auto r =
      tx.exec_params("SELECT size, chunk_size FROM builder.artifacts WHERE digest = $1", digest);
  if (r.empty()) return std::nullopt;
  return StoredArtifact{r[0][0].as<int64_t>(), r[0][1].as<int64_t>()};
}

StoredArtifact LookupOrThrow(pqxx::transaction_base& tx, const std::string& digest) {
  auto stored = Lookup(tx, digest);
  if (!stored) throw ArtifactNotFound(fmt::format("artifact {} is not stored", digest));
  return *stored;
}

std::runtime_error Corrupt(const std::string& digest, std::string_view why) {
  return std::runtime_error(fmt::format("stored artifact {} is corrupt: {}", digest, why));
}

}  // namespace

bool IsValidDigest(const std::string& digest) {
  return digest.size() == 64 && std::all_of(digest.begin(), digest.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

PgArtifactStore::PgArtifactStore(db::Pool& pool, int chunk_size)
    : pool_(pool), chunk_size_(chunk_size) {
  if (chunk_size <= 0) throw std::invalid_argument("artifact chunk size must be positive");
}

bool PgArtifactStore::Has(const std::string& digest) {
  return Size(digest).has_value();
}

std::optional<int64_t> PgArtifactStore::Size(const std::string& digest) {
  RequireDigest(digest);
  return pool_.Run([&](pqxx::connection& c) -> std::optional<int64_t> {
    pqxx::read_transaction tx(c);
    const auto stored = Lookup(tx, digest);
    if (!stored) return std::nullopt;
    return stored->size;
  });
}

bool PgArtifactStore::Put(const std::string& digest, const std::filesystem::path& file) {
  RequireDigest(digest);
  if (const std::string actual = Sha256FileHex(file); actual != digest) {
    throw std::invalid_argument(
        fmt::format("artifact {} has sha256 {}, not the digest {}", file.string(), actual, digest));
  }
  if (Has(digest)) return false;
  return pool_.Run([&](pqxx::connection& c) {
    pqxx::work tx(c);
    // Concurrent Puts of one digest wait here for each other; the later ones then find the row
    // and stop, instead of uploading the same chunks and colliding on their keys.
    tx.exec_params("SELECT pg_advisory_xact_lock(hashtext('builder.artifacts'), hashtext($1))",
                   digest);
    if (Lookup(tx, digest)) return false;
    // Chunks without a row cannot come from a committed Put (they are written together); clear
    // any left by hand-made deletes so they cannot mix with this upload.
    tx.exec_params("DELETE FROM builder.artifact_chunks WHERE digest = $1", digest);
    std::ifstream in(file, std::ios::binary);
    if (!in) throw ArtifactError(fmt::format("cannot read {}", file.string()));
    std::string buffer(static_cast<size_t>(chunk_size_), '\0');
    Sha256 hash;
    int64_t size = 0;
    for (int idx = 0;; ++idx) {
      in.read(buffer.data(), chunk_size_);
      const auto n = static_cast<size_t>(in.gcount());
      if (n == 0) break;
      hash.Update(buffer.data(), n);
      tx.exec_params("INSERT INTO builder.artifact_chunks (digest, idx, data) VALUES ($1, $2, $3)",
                     digest, idx, pqxx::binarystring(buffer.data(), n));
      size += static_cast<int64_t>(n);
      if (n < buffer.size()) break;
    }
    if (in.bad()) throw ArtifactError(fmt::format("cannot read {}", file.string()));
    // Hashed again while uploading: the file may have changed since it was verified.
    if (hash.Hex() != digest) {
      throw std::runtime_error(
          fmt::format("artifact {} changed while it was being stored", file.string()));
    }
    const auto inserted = tx.exec_params(
        "INSERT INTO builder.artifacts (digest, size, chunk_size) VALUES ($1, $2, $3)"
        " ON CONFLICT (digest) DO NOTHING",
        digest, size, chunk_size_);
    tx.commit();
    return inserted.affected_rows() == 1;
  });
}

std::string PgArtifactStore::Read(const std::string& digest, int64_t offset, int64_t max_bytes) {
  RequireDigest(digest);
  if (offset < 0 || max_bytes < 0) {
    throw std::invalid_argument(fmt::format(
        "artifact read range must not be negative (offset {}, max_bytes {})", offset, max_bytes));
  }
  return pool_.Run([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    const StoredArtifact stored = LookupOrThrow(tx, digest);
    if (offset >= stored.size || max_bytes == 0) return std::string();
    const int64_t end = max_bytes >= stored.size - offset ? stored.size : offset + max_bytes;
    const int64_t first = offset / stored.chunk_size;
    const int64_t last = (end - 1) / stored.chunk_size;
    // Only the chunks overlapping [offset, end), each cut to its part of the range by the server.
    const auto rows = tx.exec_params(
        "SELECT idx, substring(data FROM (start + 1)::int FOR (stop - start)::int)"
        " FROM (SELECT idx, data,"
        "   greatest($2::bigint - idx::bigint * $4::bigint, 0) AS start,"
        "   least($3::bigint - idx::bigint * $4::bigint, $4::bigint) AS stop"
        "   FROM builder.artifact_chunks WHERE digest = $1 AND idx BETWEEN $5 AND $6) AS c"
        " ORDER BY idx",
        digest, offset, end, stored.chunk_size, first, last);
    if (static_cast<int64_t>(rows.size()) != last - first + 1) {
      throw Corrupt(digest, "chunks are missing");
    }
    std::string out;
    out.reserve(static_cast<size_t>(end - offset));
    for (const auto& row : rows) out += pqxx::binarystring(row[1]).str();
    if (static_cast<int64_t>(out.size()) != end - offset) throw Corrupt(digest, "chunks are short");
    return out;
  });
}

void PgArtifactStore::ReadToFile(const std::string& digest, const std::filesystem::path& file) {
  RequireDigest(digest);
  // Written beside the target and renamed once verified, so `file` never holds a partial or
  // corrupt artifact.
  fs::path partial = file;
  partial += ".partial";
  try {
    pool_.Run([&](pqxx::connection& c) {
      pqxx::read_transaction tx(c);
      const StoredArtifact stored = LookupOrThrow(tx, digest);
      std::ofstream out(partial, std::ios::binary | std::ios::trunc);
      if (!out) throw std::runtime_error(fmt::format("cannot write {}", partial.string()));
      Sha256 hash;
      const int64_t chunks = (stored.size + stored.chunk_size - 1) / stored.chunk_size;
      for (int64_t idx = 0; idx < chunks; ++idx) {
        const auto r = tx.exec_params(
            "SELECT data FROM builder.artifact_chunks WHERE digest = $1 AND idx = $2", digest, idx);
        if (r.empty()) throw Corrupt(digest, fmt::format("chunk {} is missing", idx));
        const pqxx::binarystring data(r[0][0]);
        const int64_t expected = std::min(stored.chunk_size, stored.size - idx * stored.chunk_size);
        if (static_cast<int64_t>(data.size()) != expected) {
          throw Corrupt(digest,
                        fmt::format("chunk {} has {} bytes, not {}", idx, data.size(), expected));
        }
        hash.Update(data.get(), data.size());
        out.write(data.get(), static_cast<std::streamsize>(data.size()));
      }
      out.close();
      if (!out) throw std::runtime_error(fmt::format("cannot write {}", partial.string()));
      if (hash.Hex() != digest) throw Corrupt(digest, "its bytes have another sha256");
    });
    fs::rename(partial, file);
  } catch (...) {
    std::error_code ec;
    fs::remove(partial, ec);
    throw;
  }
}

}  // namespace muon::builder
