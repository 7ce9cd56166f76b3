#pragma once
// Schema migrations: each service owns one schema and ships its versioned SQL files
// (services/<name>/migrations/NNNN_name.sql, compiled into the binary by muon_embed_migrations in
// CMake). Migrate() applies the missing ones in order, each version once, even when several
// replicas start at the same moment: everything runs in one transaction under a per-schema
// advisory lock, and the applied versions are recorded in <schema>.schema_migrations with a
// checksum, so an edited, already applied file is detected and refused.

#include <string>
#include <string_view>
#include <vector>

#include "muon/common/db.h"

namespace muon::db {

struct Migration {
  int version;
  std::string_view name;
  std::string_view sql;
};

struct MigrationResult {
  std::vector<int> applied;  // versions applied by this call
  int current_version = 0;
};

// Throws std::runtime_error (with the version and the server's message) when a migration fails,
// when versions are not strictly increasing, or when an applied migration's checksum changed.
MigrationResult Migrate(Pool& pool, std::string_view schema, const std::vector<Migration>& all);

}  // namespace muon::db
