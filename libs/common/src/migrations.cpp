#include "muon/common/migrations.h"

#include <fmt/format.h>
#include <sodium.h>

#include <algorithm>
#include <map>
#include <stdexcept>

#include "muon/common/log.h"

namespace muon::db {
namespace {

std::string Checksum(std::string_view sql) {
  unsigned char hash[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(hash, reinterpret_cast<const unsigned char*>(sql.data()), sql.size());
  std::string hex(crypto_hash_sha256_BYTES * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), hash, sizeof(hash));
  hex.pop_back();
  return hex;
}

bool IsIdentifier(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return !(s[0] >= '0' && s[0] <= '9');
}

}  // namespace

MigrationResult Migrate(Pool& pool, std::string_view schema, const std::vector<Migration>& all) {
  if (!IsIdentifier(schema)) {
    throw std::invalid_argument(
        fmt::format("schema name \"{}\" must be a lower-case identifier", schema));
  }
  for (size_t i = 1; i < all.size(); ++i) {
    if (all[i].version <= all[i - 1].version) {
      throw std::runtime_error(fmt::format("migrations of schema {}: version {} follows {}", schema,
                                           all[i].version, all[i - 1].version));
    }
  }
  return pool.Run([&](pqxx::connection& conn) {
    MigrationResult result;
    pqxx::work tx(conn);
    // Transaction-scoped: released at commit or rollback, also when this process dies.
    tx.exec_params("SELECT pg_advisory_xact_lock(hashtext($1))",
                   fmt::format("muon.migrate.{}", schema));
    tx.exec(fmt::format("CREATE SCHEMA IF NOT EXISTS {}", schema));
    tx.exec(
        fmt::format("CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())",
                    schema));
    std::map<int, std::string> applied;
    for (const auto& row :
         tx.exec(fmt::format("SELECT version, checksum FROM {}.schema_migrations", schema))) {
      applied.emplace(row[0].as<int>(), row[1].as<std::string>());
    }
    for (const auto& m : all) {
      const std::string checksum = Checksum(m.sql);
      if (auto it = applied.find(m.version); it != applied.end()) {
        if (it->second != checksum) {
          throw std::runtime_error(fmt::format(
              "migration {} ({}) of schema {} was changed after it was applied; add a new "
              "migration instead of editing an applied one",
              m.version, m.name, schema));
        }
        result.current_version = m.version;
        continue;
      }
      // Unqualified names in a migration land in the service's own schema.
      tx.exec(fmt::format("SET LOCAL search_path TO {}, public", schema));
      try {
        tx.exec(std::string(m.sql));
      } catch (const std::exception& e) {
        throw std::runtime_error(fmt::format("migration {} ({}) of schema {} failed: {}", m.version,
                                             m.name, schema, e.what()));
      }
      tx.exec_params(fmt::format("INSERT INTO {}.schema_migrations (version, name, checksum) "
                                 "VALUES ($1, $2, $3)",
                                 schema),
                     m.version, std::string(m.name), checksum);
      result.applied.push_back(m.version);
      result.current_version = m.version;
    }
    for (const auto& [version, _] : applied) {
      result.current_version = std::max(result.current_version, version);
    }
    tx.commit();
    if (!result.applied.empty()) {
      log::Info("schema migrated", {{"schema", schema},
                                    {"applied", fmt::format("{}", fmt::join(result.applied, ","))},
                                    {"version", result.current_version}});
    }
    return result;
  });
}

}  // namespace muon::db
