#pragma once
// Storage of log lines in PostgreSQL (schema logs): batched COPY for ingest, partition upkeep,
// and the history query with keyset paging. All SQL of the logs service lives here.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "muon/common/db.h"
#include "muon/logs/v1/logs.pb.h"

namespace muon::logs {

// A history query after validation: times resolved, limit bounded, cursor decoded.
struct HistoryQuery {
  v1::Filter filter;
  std::chrono::system_clock::time_point since;
  std::chrono::system_clock::time_point until;
  int limit = 100;
  bool oldest_first = false;
  struct Cursor {
    int64_t ts_us = 0;
    std::string instance;
    int64_t seq = 0;
  };
  std::optional<Cursor> after;  // continue past this line (in the query's order)
  // Only lines at or below this stream sequence: a tail's history stops at the watermark it
  // continues from, so lines stored above it (committed ahead of older ones) come live, in order.
  std::optional<uint64_t> max_stream_seq;
};

struct HistoryPage {
  std::vector<v1::LogLine> lines;
  std::optional<HistoryQuery::Cursor> next;
};

// PostgreSQL's timestamptz input, UTC with microseconds ("2026-12-01 03:04:05.000123+00"): what
// COPY sends and queries compare with.
std::string FormatTimestamp(int64_t unix_micros);

std::string EncodeCursor(const HistoryQuery::Cursor& cursor);
// nullopt for anything EncodeCursor did not produce.
std::optional<HistoryQuery::Cursor> DecodeCursor(std::string_view text);

struct StoredLine {
  v1::LogLine line;          // stream_seq set
  bool redelivered = false;  // JetStream delivered it before: it may be stored already
};

class Store {
 public:
  virtual ~Store() = default;
  // Stores a batch in one transaction; returns how many lines were new. A line already stored
  // (same instance, ts, service and seq) is skipped: first deliveries go in with COPY, and only
  // if that meets a stored copy, or for redeliveries, is each line checked.
  virtual size_t Insert(const std::vector<StoredLine>& batch) = 0;
  virtual HistoryPage Query(const HistoryQuery& query) = 0;
  // Creates the daily partitions (UTC) for `days` days from the day of `first`; returns how many
  // were new.
  virtual int EnsurePartitions(std::chrono::system_clock::time_point first, int days) = 0;
  // Drops partitions whose whole day is older than now - retention; returns how many.
  virtual int DropExpired(std::chrono::system_clock::time_point now,
                          std::chrono::hours retention) = 0;
};

class PgStore : public Store {
 public:
  PgStore(std::string database_url, size_t max_connections);
  void Migrate();
  db::Pool& pool() { return pool_; }

  size_t Insert(const std::vector<StoredLine>& batch) override;
  HistoryPage Query(const HistoryQuery& query) override;
  int EnsurePartitions(std::chrono::system_clock::time_point first, int days) override;
  int DropExpired(std::chrono::system_clock::time_point now, std::chrono::hours retention) override;

 private:
  db::Pool pool_;
};

}  // namespace muon::logs
