#pragma once
// muon-logs: consumes the log stream (durable JetStream pull consumer "logs", shared by every
// replica), stores lines in PostgreSQL in batches (acknowledging only after the commit), keeps
// the daily partitions, and answers history queries (muon.rpc.logs.Query).
//
//   muon::logs::LogsApp app(muon::logs::OptionsFromConfig(config), bus);
//   app.Register(service);  // Query + authorization
//   app.Start();            // ingest + partition upkeep

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "muon/common/authz.h"
#include "muon/common/bus.h"
#include "muon/common/config.h"
#include "muon/common/service.h"
#include "store.h"

namespace muon::logs {

struct LogsOptions {
  std::string database_url;
  std::string nats_url;
  std::string service_secret;  // empty: Query refuses every caller but the tests' authorizer
  std::chrono::seconds stream_max_age{std::chrono::hours(24 * 7)};
  int64_t stream_max_bytes = int64_t(8) << 30;
  std::chrono::hours retention{24 * 7};
  int partition_days_ahead = 3;
  int ingest_workers = 2;
  int batch_size = 500;
  std::chrono::milliseconds batch_wait{100};  // how long a fetch waits for a full batch
  size_t db_connections = 6;
};

void AddOptions(config::Spec& spec);
LogsOptions OptionsFromConfig(const config::Values& values);
ServiceOptions DefaultServiceOptions();

// Resolves a QueryRequest (times, limit, cursor) against `now`; throws muon::Error 400.
HistoryQuery ResolveQuery(const v1::QueryRequest& request,
                          std::chrono::system_clock::time_point now);
// "2h" (back from now) or an RFC 3339 time; nullopt when neither.
std::optional<std::chrono::system_clock::time_point> ParseTimeArg(
    std::string_view text, std::chrono::system_clock::time_point now);

struct IngestStats {
  std::atomic<uint64_t> stored{0};
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> rejected{0};  // undecodable or outside every partition
  std::atomic<uint64_t> failures{0};  // batches that could not be committed (redelivered later)
};

class LogsApp {
 public:
  // Connects to Postgres (migrating the schema) and creates the stream; throws on failure.
  LogsApp(LogsOptions options, bus::Connection& bus);
  ~LogsApp();

  // Query endpoint; the authorizer verifies tokens and rules unless `authorize` is false (tests
  // that exercise storage alone).
  void Register(Service& service, bool authorize = true);
  void Start();
  void Stop();

  v1::QueryResponse Query(const v1::QueryRequest& request);
  const IngestStats& stats() const { return stats_; }
  PgStore& store() { return *store_; }
  // Runs partition upkeep now (also done hourly).
  void MaintainPartitions();

 private:
  void IngestLoop(int worker);
  void MaintenanceLoop();
  std::vector<StoredLine> Decode(std::vector<bus::Msg>& messages);
  // False when the database became unreachable midway (the batch is to be redelivered).
  bool StoreOneByOne(const std::vector<StoredLine>& batch);

  LogsOptions options_;
  bus::Connection& bus_;
  std::unique_ptr<PgStore> store_;
  std::unique_ptr<bus::JetStream> js_;
  std::unique_ptr<ServiceTokenSource> service_token_;
  std::unique_ptr<token::Verifier> verifier_;
  std::unique_ptr<rules::RuleCache> rules_;
  IngestStats stats_;
  // Lines must fall in [first_us, end_us) to have a partition.
  std::atomic<int64_t> partitions_first_us_{0};
  std::atomic<int64_t> partitions_end_us_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace muon::logs
