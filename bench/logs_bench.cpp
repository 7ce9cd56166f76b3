// Log ingest and history queries, each next to a reference measured in the same run (logs issue
// targets). Starts its own nats-server and PostgreSQL (tests/support/harness.h).
//
//   ingest   LogLine protobufs (~100 bytes; 50 services x 4 instances, per-instance seq) in
//            LogBatch messages of --lines-per-message consecutive lines of one instance
//            (Nats-Msg-Id
//            "<service>.<instance>.<first seq>"), as the Shipper sends them: its default 20 ms
//            linger makes batches of 10 lines for an instance writing 500 lines/s, which is what
//            200 instances writing 100,000 lines/s together do), published by this process with
//            js_PublishMsgAsync (MaxPending) to muon.log.<service>.<instance>, and
//            stored by a real muon-logs process. Committed lines/s come from exact Postgres counts
//            at both ends of the steady-state window (warm-up skipped); the publish rate is what
//            the stream acknowledged in the same window, so the two together say which side
//            limits. Reference: a raw COPY (pqxx::stream_to, one connection, 1M rows per
//            transaction) of as many of the same lines into the same, emptied table.
//            Targets: >= 100,000 lines/s, and >= 0.5x the raw COPY. After the window the
//            publisher stops and the consumer alone works off the backlog: that rate (first 90%)
//            is printed against the same COPY, and how long the last 10% took.
//   queries  --rows lines (default 10M; 50 services over the last 24 h, written with COPY, then
//            VACUUM ANALYZE as autovacuum would have done): the last 1,000 lines of a service
//            (target < 50 ms) and a case-insensitive grep over a service's last hour
//            (< 500 ms), as users get them (muon.rpc.logs.Query over NATS to a LogsApp in this
//            process, muon::Call), through PgStore::Query, and as the same SQL through pqxx
//            (the reference). Rounds rotate the service and the order of the three.
//
// Postgres runs with the harness's settings (fsync, synchronous_commit and full_page_writes off,
// shared_buffers 128MB) for the service and the reference alike. The CPU each process used in the
// ingest window is printed too: on a small shared machine that is what the figures depend on.
// muon-logs runs with the service's defaults unless --workers/--batch/--batch-wait say otherwise.
//
// Usage: logs_bench [--ingest-seconds 60] [--rows 10000000] [--workers N --batch N
//                   --batch-wait 1s] [--quick] [--no-ingest|--no-queries] (--help for all)

#include <fmt/format.h>
#include <nats/nats.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "harness.h"
#include "logs_service.h"
#include "muon/common/bus.h"
#include "muon/common/log.h"
#include "muon/common/log_lines.h"
#include "muon/common/process.h"
#include "muon/common/service.h"
#include "muon/logs/v1/logs.pb.h"
#include "store.h"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace lv1 = muon::logs::v1;

namespace {

// ---- options ----

struct Args {
  int ingest_seconds = 60;
  int warmup_seconds = -1;  // -1: min(10, ingest_seconds / 5)
  // The service's defaults, from the same place muon-logs takes them.
  int workers = muon::logs::LogsOptions().ingest_workers;  // MUON_LOGS_INGEST_WORKERS
  int batch = muon::logs::LogsOptions().batch_size;        // MUON_LOGS_BATCH_SIZE (messages)
  std::string batch_wait;   // MUON_LOGS_BATCH_WAIT; empty: the service's default
  int publishers = 1;
  int64_t max_pending = 4096;  // per publisher, as the Shipper
  double publish_rate = 0;     // lines/s in total; 0 = as fast as the stream acknowledges
  bool publish_asap = false;
  int lines_per_message = 10;
  std::string muon_logs;  // the muon-logs binary; empty: build/bin's
  int64_t rows = 10'000'000;
  int query_runs = 20;
  bool ingest = true;
  bool queries = true;
  bool explain = false;
};

void Usage(FILE* out) {
  fmt::print(out,
             "usage: logs_bench [options]\n"
             "  --ingest-seconds S   publish for S seconds (default 60)\n"
             "  --warmup-seconds S   left out of the steady-state window (default min(10, S/5))\n"
             "  --workers N          MUON_LOGS_INGEST_WORKERS for muon-logs (default: its own)\n"
             "  --batch N            MUON_LOGS_BATCH_SIZE (messages) for muon-logs (default: its own)\n"
             "  --batch-wait D       MUON_LOGS_BATCH_WAIT for muon-logs (default: its own)\n"
             "  --publishers N       publishing connections (default 1)\n"
             "  --max-pending N      js async publishes in flight per publisher (default 4096)\n"
             "  --publish-rate R     total lines/s to publish; 0 = as fast as acked (default 0)\n"
             "  --publish-asap       publishers send every message at once (SendAsap)\n"
             "  --lines-per-message N  lines in each LogBatch message (default 10)\n"
             "  --muon-logs PATH     run this muon-logs binary (e.g. a sanitizer build)\n"
             "  --rows N             lines stored for the queries (default 10000000)\n"
             "  --query-runs N       timed runs per query and path (default 20)\n"
             "  --quick              --ingest-seconds 10 --rows 1000000 --query-runs 10\n"
             "  --no-ingest | --no-queries   skip a part\n"
             "  --explain            print EXPLAIN (ANALYZE, BUFFERS) of both queries once\n");
}

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        fmt::print(stderr, "{} needs a value\n", arg);
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--ingest-seconds") {
      a.ingest_seconds = std::stoi(value());
    } else if (arg == "--warmup-seconds") {
      a.warmup_seconds = std::stoi(value());
    } else if (arg == "--workers") {
      a.workers = std::stoi(value());
    } else if (arg == "--batch") {
      a.batch = std::stoi(value());
    } else if (arg == "--batch-wait") {
      a.batch_wait = value();
    } else if (arg == "--publishers") {
      a.publishers = std::max(1, std::stoi(value()));
    } else if (arg == "--max-pending") {
      a.max_pending = std::stoll(value());
    } else if (arg == "--publish-rate") {
      a.publish_rate = std::stod(value());
    } else if (arg == "--publish-asap") {
      a.publish_asap = true;
    } else if (arg == "--lines-per-message") {
      a.lines_per_message = std::max(1, std::stoi(value()));
    } else if (arg == "--muon-logs") {
      a.muon_logs = value();
    } else if (arg == "--rows") {
      a.rows = std::stoll(value());
    } else if (arg == "--query-runs") {
      a.query_runs = std::max(1, std::stoi(value()));
    } else if (arg == "--quick") {
      a.ingest_seconds = 10;
      a.rows = 1'000'000;
      a.query_runs = 10;
    } else if (arg == "--no-ingest") {
      a.ingest = false;
    } else if (arg == "--no-queries") {
      a.queries = false;
    } else if (arg == "--explain") {
      a.explain = true;
    } else if (arg == "-h" || arg == "--help") {
      Usage(stdout);
      std::exit(0);
    } else {
      Usage(stderr);
      std::exit(2);
    }
  }
  if (a.ingest_seconds < 2) a.ingest_seconds = 2;
  if (a.warmup_seconds < 0) a.warmup_seconds = std::min(10, a.ingest_seconds / 5);
  if (a.warmup_seconds >= a.ingest_seconds) a.warmup_seconds = a.ingest_seconds / 2;
  return a;
}

// ---- the lines ----

constexpr int kServices = 50;
constexpr int kInstancesPerService = 4;
constexpr int kEmitters = kServices * kInstancesPerService;

constexpr std::array<const char*, kServices> kServiceNames = {
    "orders",    "payments",     "checkout", "cart",      "catalog",       "search",
    "users",     "accounts",     "billing",  "invoices",  "shipping",      "inventory",
    "pricing",   "promotions",   "reviews",  "recommend", "notifications", "email",
    "sms",       "push",         "media",    "images",    "thumbnails",    "uploads",
    "exports",   "imports",      "reports",  "analytics", "metrics-api",   "audit",
    "gateway",   "sessions",     "profiles", "settings",  "feature-flags", "webhooks",
    "cron-jobs", "queue-worker", "indexer",  "crawler",   "geo",           "currency",
    "tax",       "fraud",        "risk",     "ledger",    "refunds",       "subscriptions",
    "loyalty",   "support"};

uint64_t Mix(uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

struct Emitter {
  std::string service, instance, release, subject, id_prefix;
  uint64_t seq = 0;
};

std::vector<Emitter> MakeEmitters() {
  std::vector<Emitter> out(kEmitters);
  for (int i = 0; i < kEmitters; ++i) {
    auto& e = out[i];
    e.service = kServiceNames[i / kInstancesPerService];
    e.instance = fmt::format("i-{:06x}", Mix(i) & 0xffffff);
    e.release = fmt::format("v{}", 3 + (i / kInstancesPerService) % 17);
    e.subject = muon::loglines::Subject(e.service, e.instance);
    e.id_prefix = e.service + "." + e.instance + ".";
  }
  return out;
}

// One realistic application message (40-75 bytes) into `out`; returns its severity. About 2% of
// messages contain "timeout" in some case (what the grep query looks for).
lv1::Severity Message(uint64_t r, std::string& out) {
  out.clear();
  auto it = std::back_inserter(out);
  const unsigned pick = r % 100;
  const unsigned a = (r >> 8) % 100000, ms = (r >> 25) % 900 + 1, b = (r >> 35) % 10000;
  if (pick < 55) {
    fmt::format_to(it, "GET /api/v1/items/{} 200 {}ms bytes={}", a, ms, b * 7);
    return lv1::SEVERITY_INFO;
  }
  if (pick < 75) {
    fmt::format_to(it, "POST /api/v1/orders 201 {}ms user=u{} req={:08x}", ms, a, r >> 32);
    return lv1::SEVERITY_INFO;
  }
  if (pick < 85) {
    fmt::format_to(it, "cache miss key=user:{}:profile, loaded from db in {}ms", a, ms);
    return lv1::SEVERITY_DEBUG;
  }
  if (pick < 93) {
    fmt::format_to(it, "slow query on orders_by_customer took {}ms (rows={})", ms * 10, b);
    return lv1::SEVERITY_WARN;
  }
  if (pick < 97) {
    fmt::format_to(it, R"({{"level":"info","msg":"job done","job":"j{}","dur_ms":{}}})", a, ms);
    return lv1::SEVERITY_INFO;
  }
  if (pick < 98) {
    fmt::format_to(it, "ERROR upstream Timeout after 5000ms calling payments (attempt {})",
                   b % 5 + 1);
    return lv1::SEVERITY_ERROR;
  }
  if (pick < 99) {
    fmt::format_to(it, "request {:016x} failed: context deadline exceeded (TIMEOUT)", r);
    return lv1::SEVERITY_ERROR;
  }
  fmt::format_to(it, "retrying connection to db-{}: connection reset by peer", b % 8);
  return lv1::SEVERITY_WARN;
}

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void FillLine(lv1::LogLine& line, const Emitter& e, uint64_t seq, int64_t us, uint64_t r,
              std::string& scratch) {
  line.Clear();
  line.mutable_time()->set_seconds(us / 1000000);
  line.mutable_time()->set_nanos(static_cast<int32_t>(us % 1000000) * 1000);
  line.set_service(e.service);
  line.set_instance(e.instance);
  line.set_release(e.release);
  line.set_region("eu");
  line.set_source(lv1::SOURCE_APP);
  line.set_severity(Message(r, scratch));
  line.set_message(scratch);
  line.set_seq(seq);
}

using muon::logs::FormatTimestamp;  // what PgStore's COPY sends

constexpr std::array<const char*, 12> kColumns = {
    "ts",       "service", "instance",  "release",  "region", "source",
    "severity", "message", "truncated", "trace_id", "seq",    "stream_seq"};

// Rows [first, last) of a COPY into logs.lines, the same columns and value formats as PgStore's
// ingest. ts_us(i) gives row i's time; emitters round-robin (ingest-like) or hashed.
template <typename TimeOf>
void CopyLines(pqxx::connection& conn, int64_t first, int64_t last, int64_t per_tx,
               const std::vector<Emitter>& emitters, bool hashed_emitters, TimeOf ts_us) {
  std::string msg;
  for (int64_t start = first; start < last; start += per_tx) {
    const int64_t end = std::min(last, start + per_tx);
    pqxx::work tx(conn);
    pqxx::stream_to copy(tx, "logs.lines", kColumns.begin(), kColumns.end());
    for (int64_t i = start; i < end; ++i) {
      const uint64_t r = Mix(static_cast<uint64_t>(i) ^ 0x5bd1e995);
      const auto& e = emitters[hashed_emitters ? (r >> 40) % kEmitters : i % kEmitters];
      const lv1::Severity severity = Message(r, msg);
      copy << std::make_tuple(FormatTimestamp(ts_us(i)), e.service, e.instance, e.release,
                              std::string("eu"), static_cast<int>(lv1::SOURCE_APP),
                              static_cast<int>(severity), msg, false, std::string(),
                              static_cast<int64_t>(i + 1), static_cast<int64_t>(i + 1));
    }
    copy.complete();
    tx.commit();
  }
}

// ---- CPU accounting from /proc ----

double TicksPerSecond() {
  static const double t = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return t;
}

// Fields 3.. of /proc/<pid>/stat (after "(comm)"); empty when the process is gone.
std::vector<std::string> StatFields(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t rp = s.rfind(')');
  if (rp == std::string::npos || rp + 2 >= s.size()) return {};
  std::istringstream f(s.substr(rp + 2));
  std::vector<std::string> v;
  std::string tok;
  while (v.size() < 16 && f >> tok) v.push_back(tok);
  return v;
}

// utime + stime (+ cutime + cstime) in seconds.
double ProcessCpu(const std::string& pid, bool with_reaped_children) {
  const auto v = StatFields(pid);
  if (v.size() < 15) return 0;
  double ticks = std::stod(v[11]) + std::stod(v[12]);
  if (with_reaped_children) ticks += std::stod(v[13]) + std::stod(v[14]);
  return ticks / TicksPerSecond();
}

std::vector<std::string> AllPids() {
  std::vector<std::string> out;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (!name.empty() && std::all_of(name.begin(), name.end(), ::isdigit)) out.push_back(name);
  }
  return out;
}

std::string Cmdline(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/cmdline");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::replace(s.begin(), s.end(), '\0', ' ');
  return s;
}

// The server process whose command line names `program` and "-p <port>".
std::string FindServerPid(const std::string& program, uint16_t port) {
  const std::string port_arg = fmt::format(" -p {} ", port);
  for (const auto& pid : AllPids()) {
    const std::string cmd = Cmdline(pid);
    if (cmd.find(program) != std::string::npos && cmd.find(port_arg) != std::string::npos) {
      return pid;
    }
  }
  return {};
}

// A process and its children (postgres' backends, which exit, are counted by the postmaster's
// reaped-children times).
double TreeCpu(const std::string& root) {
  if (root.empty()) return 0;
  double total = ProcessCpu(root, true);
  for (const auto& pid : AllPids()) {
    const auto v = StatFields(pid);
    if (v.size() >= 2 && v[1] == root) total += ProcessCpu(pid, false);
  }
  return total;
}

struct MachineCpu {
  double busy = 0, total = 0;  // seconds summed over every CPU
};

MachineCpu ReadMachineCpu() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  double user, nice, system, idle, iowait, irq, softirq, steal;
  in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  const double busy = user + nice + system + irq + softirq + steal;
  return {busy / TicksPerSecond(), (busy + idle + iowait) / TicksPerSecond()};
}

struct CpuSnapshot {
  Clock::time_point at;
  double bench = 0, nats = 0, logs = 0, pg = 0;
  MachineCpu machine;
};

struct Pids {
  std::string nats, pg, logs;
};

CpuSnapshot SnapCpu(const Pids& pids) {
  CpuSnapshot s;
  s.at = Clock::now();
  s.bench = ProcessCpu("self", false);
  s.nats = pids.nats.empty() ? 0 : ProcessCpu(pids.nats, true);
  s.logs = pids.logs.empty() ? 0 : ProcessCpu(pids.logs, true);
  s.pg = TreeCpu(pids.pg);
  s.machine = ReadMachineCpu();
  return s;
}

// Cores used by each part between two snapshots.
struct CpuUse {
  double bench = 0, nats = 0, logs = 0, pg = 0, other = 0, idle = 0, cores = 0;
  double seconds = 0;
  std::string Describe(bool with_logs) const {
    std::string s = fmt::format("bench {:.2f}, nats-server {:.2f}, ", bench, nats);
    if (with_logs) s += fmt::format("muon-logs {:.2f}, ", logs);
    return s + fmt::format("postgres {:.2f}, other processes {:.2f}, idle {:.2f} (of {:.1f})", pg,
                           other, idle, cores);
  }
};

CpuUse CpuBetween(const CpuSnapshot& a, const CpuSnapshot& b) {
  CpuUse u;
  u.seconds = std::chrono::duration<double>(b.at - a.at).count();
  u.bench = (b.bench - a.bench) / u.seconds;
  u.nats = (b.nats - a.nats) / u.seconds;
  u.logs = (b.logs - a.logs) / u.seconds;
  u.pg = (b.pg - a.pg) / u.seconds;
  const double busy = (b.machine.busy - a.machine.busy) / u.seconds;
  u.cores = (b.machine.total - a.machine.total) / u.seconds;
  u.other = std::max(0.0, busy - (u.bench + u.nats + u.logs + u.pg));
  u.idle = std::max(0.0, u.cores - busy);
  return u;
}

// ---- publishing ----

class Publisher {
 public:
  Publisher(const std::string& url, int index, std::vector<Emitter*> emitters, int64_t max_pending,
            double rate, bool asap, int lines_per_message)
      : emitters_(std::move(emitters)),
        rate_(rate),
        index_(index),
        lines_per_message_(lines_per_message) {
    conn_ = muon::bus::Connection::Connect(
        {.url = url, .name = fmt::format("bench-publisher-{}", index), .send_asap = asap});
    if (!conn_->WaitConnected(5s)) throw std::runtime_error("publisher cannot connect");
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = max_pending;
    jo.PublishAsync.AckHandler = &Publisher::OnAck;
    jo.PublishAsync.AckHandlerClosure = this;
    jo.PublishAsync.StallWait = 10000;
    if (natsConnection_JetStream(&js_, conn_->raw(), &jo) != NATS_OK) {
      throw std::runtime_error("cannot create a JetStream context");
    }
  }
  ~Publisher() {
    Stop();
    for (natsMsg* m : retry_) natsMsg_Destroy(m);
    jsCtx_Destroy(js_);
  }

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // Waits for every ack still outstanding.
  bool Complete(std::chrono::milliseconds timeout) {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = timeout.count();
    return js_PublishAsyncComplete(js_, &po) == NATS_OK;
  }

  // Lines (every message holds lines_per_message of them), except errors and stalls.
  std::atomic<uint64_t> sent{0}, acked{0}, duplicates{0}, errors{0}, stalls{0};
  std::string first_error;
  size_t message_bytes = 0;  // size of the last LogBatch sent (read after Stop)

 private:
  static void OnAck(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
    auto* self = static_cast<Publisher*>(closure);
    if (pa != nullptr) {
      self->acked.fetch_add(self->lines_per_message_, std::memory_order_relaxed);
      if (pa->Duplicate) {
        self->duplicates.fetch_add(self->lines_per_message_, std::memory_order_relaxed);
      }
      natsMsg_Destroy(msg);
      return;
    }
    // Kept (with its Nats-Msg-Id) and published again from the publishing thread.
    std::lock_guard lock(self->mu_);
    if (self->errors++ == 0 && pae != nullptr) {
      self->first_error =
          fmt::format("{} (js error {}: {})", natsStatus_GetText(pae->Err),
                      static_cast<int>(pae->ErrCode), pae->ErrText ? pae->ErrText : "");
    }
    self->retry_.push_back(msg);
    self->has_retry_ = true;
  }

  // Hands `msg` to nats.c, waiting out stalls; false when stopping.
  bool Send(natsMsg*& msg, jsPubOptions* po) {
    while (true) {
      if (js_PublishMsgAsync(js_, &msg, po) == NATS_OK) return true;
      stalls++;
      if (stop_) {
        natsMsg_Destroy(msg);
        msg = nullptr;
        return false;
      }
    }
  }

  void Run() {
    lv1::LogLine line;
    std::string data, serialized, scratch;
    char id[160];
    uint64_t rng = Mix(static_cast<uint64_t>(index_) + 1);
    size_t next = 0;
    uint64_t count = 0;
    const auto start = Clock::now();
    while (!stop_) {
      if (rate_ > 0) {
        const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
        if (static_cast<double>(count) >= rate_ * elapsed) {
          std::this_thread::sleep_for(200us);
          continue;
        }
      }
      if (has_retry_) {
        std::vector<natsMsg*> retry;
        {
          std::lock_guard lock(mu_);
          retry.swap(retry_);
          has_retry_ = false;
        }
        for (natsMsg*& m : retry) {
          if (!Send(m, nullptr)) break;
        }
        for (natsMsg* m : retry) {
          if (m != nullptr) natsMsg_Destroy(m);
        }
      }
      for (int k = 0; k < 16; ++k) {
        Emitter& e = *emitters_[next];
        next = (next + 1) % emitters_.size();
        const uint64_t first_seq = e.seq + 1;
        data.clear();
        const int64_t now = NowMicros();
        for (int j = 0; j < lines_per_message_; ++j) {
          rng = Mix(rng);
          FillLine(line, e, ++e.seq, now, rng, scratch);
          line.SerializeToString(&serialized);
          muon::loglines::AppendToBatch(data, serialized);
        }
        const auto r = fmt::format_to_n(id, sizeof(id) - 1, "{}{}", e.id_prefix, first_seq);
        *r.out = '\0';
        natsMsg* msg = nullptr;
        if (natsMsg_Create(&msg, e.subject.c_str(), nullptr, data.data(),
                           static_cast<int>(data.size())) != NATS_OK) {
          throw std::runtime_error("natsMsg_Create failed");
        }
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = id;
        if (!Send(msg, &po)) break;
        count += lines_per_message_;
        sent.fetch_add(lines_per_message_, std::memory_order_relaxed);
        message_bytes = data.size();
      }
    }
  }

  std::unique_ptr<muon::bus::Connection> conn_;
  jsCtx* js_ = nullptr;
  std::vector<Emitter*> emitters_;
  double rate_;
  int index_;
  int lines_per_message_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> has_retry_{false};
  std::mutex mu_;
  std::vector<natsMsg*> retry_;
  std::thread thread_;
};

// ---- ingest ----

// The LOGS stream's durable consumer "logs", as nats-server sees it.
std::string ConsumerState(muon::bus::JetStream& js, int64_t* redelivered = nullptr) {
  jsConsumerInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  if (js_GetConsumerInfo(&info, js.raw(), "LOGS", "logs", nullptr, &code) != NATS_OK ||
      info == nullptr) {
    return "(consumer info unavailable)";
  }
  std::string s = fmt::format(
      "delivered through {}, ack floor {}, ack pending {}, redelivered {}, waiting pulls {}, "
      "not yet delivered {}",
      info->Delivered.Stream, info->AckFloor.Stream, info->NumAckPending, info->NumRedelivered,
      info->NumWaiting, info->NumPending);
  if (redelivered != nullptr) *redelivered = info->NumRedelivered;
  jsConsumerInfo_Destroy(info);
  return s;
}

uint64_t CountLines(pqxx::connection& conn) {
  pqxx::nontransaction tx(conn);
  // The service's own log lines (service "logs", shipped by muon-logs itself) are not ours.
  return tx.exec1("SELECT count(*) FROM logs.lines WHERE service <> 'logs'")[0].as<uint64_t>();
}

uint64_t InsertedTuples(pqxx::connection& conn) {
  pqxx::nontransaction tx(conn);
  return tx
      .exec1(
          "SELECT coalesce(sum(n_tup_ins), 0)::bigint FROM pg_stat_user_tables"
          " WHERE schemaname = 'logs' AND relname LIKE 'lines\\_%'")[0]
      .as<uint64_t>();
}

struct IngestResult {
  bool ran = false;
  bool died = false;  // muon-logs crashed: the ingest figures are not valid
  double committed_per_s = 0;
  double published_per_s = 0;
  uint64_t published = 0;  // unique lines the stream acknowledged
  uint64_t stored = 0;     // rows after draining
  double drain_seconds = 0;
  double window_seconds = 0;
  uint64_t backlog_at_end = 0;
  CpuUse cpu;
  double drain90_per_s = 0;  // the consumer alone on the first 90% of the backlog
  CpuUse drain_cpu;
  Clock::time_point drain90_at;
};

struct CopyResult {
  double rows_per_s = 0;
  uint64_t rows = 0;
  double seconds = 0;
  CpuUse cpu;
};

std::string Thousands(double v) {
  std::string digits = fmt::format("{:.0f}", v);
  std::string out;
  int n = 0;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    if (n > 0 && n % 3 == 0 && *it != '-') out.insert(out.begin(), ',');
    out.insert(out.begin(), *it);
    ++n;
  }
  return out;
}

std::string FileTail(const std::string& path, int max_lines) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  std::string out;
  for (size_t i = lines.size() > static_cast<size_t>(max_lines) ? lines.size() - max_lines : 0;
       i < lines.size(); ++i) {
    out += "    " + lines[i] + "\n";
  }
  return out;
}

IngestResult RunIngest(const Args& a, muon::testing::NatsServer& nats, const std::string& db_url,
                       const std::string& work_dir, Pids& pids) {
  IngestResult res;
  res.ran = true;
  std::map<std::string, std::string> env = {{"DATABASE_URL", db_url},
                                            {"NATS_URL", nats.url()},
                                            {"MUON_LOG_LEVEL", "warn"},
                                            {"MUON_LOGS_INGEST_WORKERS", std::to_string(a.workers)},
                                            {"MUON_LOGS_BATCH_SIZE", std::to_string(a.batch)}};
  if (!a.batch_wait.empty()) env["MUON_LOGS_BATCH_WAIT"] = a.batch_wait;
  auto control = muon::bus::Connection::Connect({.url = nats.url(), .name = "bench-control"});
  if (!control->WaitConnected(5s)) throw std::runtime_error("cannot connect to nats-server");
  muon::bus::JetStream js(*control);
  const std::string log_file = work_dir + "/muon-logs.log";
  muon::Process logs(
      {.program = a.muon_logs.empty() ? muon::testing::BinDir() + "/muon-logs" : a.muon_logs,
       .env = env,
       .output_file = log_file});
  pids.logs = std::to_string(logs.pid());

  // Ready when the stream exists and an ingest worker bound the durable consumer.
  const bool ready = muon::testing::WaitUntil(
      [&] {
        uint64_t v = 0;
        return !logs.Running() || (!js.LastSequence("LOGS", v) && !js.AckFloor("LOGS", "logs", v));
      },
      60s, 50ms);
  if (!ready || !logs.Running()) {
    throw std::runtime_error("muon-logs did not start:\n" + FileTail(log_file, 20));
  }

  auto emitters = MakeEmitters();
  std::vector<std::unique_ptr<Publisher>> publishers;
  for (int p = 0; p < a.publishers; ++p) {
    std::vector<Emitter*> mine;
    for (int i = p; i < kEmitters; i += a.publishers) mine.push_back(&emitters[i]);
    publishers.push_back(std::make_unique<Publisher>(nats.url(), p, std::move(mine), a.max_pending,
                                                     a.publish_rate / a.publishers, a.publish_asap,
                                                     a.lines_per_message));
  }
  auto acked_total = [&] {
    uint64_t n = 0;
    for (auto& p : publishers) n += p->acked.load() - p->duplicates.load();
    return n;
  };

  pqxx::connection count_conn(db_url);
  pqxx::connection stats_conn(db_url);
  struct Sample {
    double t;
    uint64_t inserted, acked;
  };
  std::vector<Sample> samples;
  std::atomic<bool> sampling{true};
  const auto start = Clock::now();
  auto since_start = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };

  fmt::print(
      "ingest: muon-logs with {} workers, batch {}{}; {} publisher(s), {} lines per message, "
      "MaxPending {}, {}, {}; {} s ({} s warm-up)\n",
      a.workers, a.batch, a.batch_wait.empty() ? "" : ", batch wait " + a.batch_wait, a.publishers,
      a.lines_per_message, a.max_pending,
      a.publish_rate > 0 ? fmt::format("{} lines/s", Thousands(a.publish_rate))
                         : std::string("unpaced"),
      a.publish_asap ? "SendAsap" : "buffered", a.ingest_seconds, a.warmup_seconds);
  std::fflush(stdout);
  for (auto& p : publishers) p->Start();
  std::thread sampler([&] {
    while (sampling) {
      samples.push_back({since_start(), InsertedTuples(stats_conn), acked_total()});
      std::this_thread::sleep_for(1s);
    }
  });

  std::this_thread::sleep_until(start + std::chrono::seconds(a.warmup_seconds));
  const CpuSnapshot cpu0 = SnapCpu(pids);
  const auto t0 = Clock::now();
  const uint64_t acked0 = acked_total();
  const uint64_t c0 = CountLines(count_conn);

  std::this_thread::sleep_until(start + std::chrono::seconds(a.ingest_seconds));
  const CpuSnapshot cpu1 = SnapCpu(pids);
  const auto t1 = Clock::now();
  const uint64_t acked1 = acked_total();
  const uint64_t c1 = CountLines(count_conn);  // the statement's snapshot is taken at once
  for (auto& p : publishers) p->Stop();
  sampling = false;
  sampler.join();
  fmt::print("  consumer at the end of the window: {}\n", ConsumerState(js));
  if (!logs.Running()) {
    fmt::print("  muon-logs DIED ({}) during the window: the figures below are not valid\n",
               logs.Wait().Describe());
    res.died = true;
  }

  res.window_seconds = std::chrono::duration<double>(t1 - t0).count();
  res.committed_per_s = static_cast<double>(c1 - c0) / res.window_seconds;
  res.published_per_s = static_cast<double>(acked1 - acked0) / res.window_seconds;
  res.cpu = CpuBetween(cpu0, cpu1);

  uint64_t sent = 0, errors = 0, stalls = 0, dups = 0;
  for (auto& p : publishers) {
    if (!p->Complete(60s))
      fmt::print("  warning: publisher {} acks incomplete\n", &p - &publishers[0]);
    sent += p->sent;
    errors += p->errors;
    stalls += p->stalls;
    dups += p->duplicates;
    if (!p->first_error.empty()) fmt::print("  publish error: {}\n", p->first_error);
  }
  res.published = acked_total();
  res.backlog_at_end = acked1 > c1 ? acked1 - c1 : 0;

  // Drain: until the consumer acknowledged every message in the stream (it acks after commit).
  const auto drain_start = t1;  // c1 counted every line committed up to here
  // The consumer alone (nothing is published any more): how fast it works through the first
  // 90% of the backlog, from its ack floor; the last part is reported apart (it can trickle).
  uint64_t last_floor = 0, first_floor = 0, goal = 0;
  std::optional<Clock::time_point> first_poll;
  std::optional<CpuSnapshot> drain_cpu0;
  auto last_progress = Clock::now();
  auto last_report = Clock::now();
  while (true) {
    uint64_t floor = 0, last = 0;
    if (!js.AckFloor("LOGS", "logs", floor) && !js.LastSequence("LOGS", last)) {
      if (!first_poll) {
        first_poll = Clock::now();
        drain_cpu0 = SnapCpu(pids);
        first_floor = floor;
        goal = floor + (last - floor) * 9 / 10;
      }
      // Stream sequences count messages, each of lines_per_message lines.
      const uint64_t per_message = static_cast<uint64_t>(a.lines_per_message);
      if (res.drain90_per_s == 0 && floor >= goal && (last - first_floor) * per_message >= 100000) {
        const double secs = std::chrono::duration<double>(Clock::now() - *first_poll).count();
        res.drain90_per_s = static_cast<double>((floor - first_floor) * per_message) / secs;
        res.drain_cpu = CpuBetween(*drain_cpu0, SnapCpu(pids));
        res.drain90_at = Clock::now();
      }
      if (floor >= last) break;
      if (floor != last_floor) {
        last_floor = floor;
        last_progress = Clock::now();
      }
    }
    if (!logs.Running()) {
      fmt::print("  muon-logs DIED ({}) while draining\n", logs.Wait().Describe());
      res.died = true;
      break;
    }
    if (Clock::now() - last_report > 10s) {
      last_report = Clock::now();
      fmt::print("  draining: {}\n", ConsumerState(js));
      std::fflush(stdout);
    }
    if (Clock::now() - last_progress > 60s) {
      fmt::print("  warning: ingest made no progress for 60 s; ack floor {}, stream at {}\n", floor,
                 last);
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  const auto drain_end = Clock::now();
  res.drain_seconds = std::chrono::duration<double>(drain_end - drain_start).count();
  res.stored = CountLines(count_conn);

  // Timeline per 5 s (stats counters: up to ~1 s behind), published -> committed, k lines/s.
  std::string timeline;
  for (size_t i = 0; i + 5 < samples.size(); i += 5) {
    const auto& s0 = samples[i];
    const auto& s1 = samples[i + 5];
    const double dt = s1.t - s0.t;
    timeline += fmt::format(" {:.0f}s:{:.0f}/{:.0f}", s0.t, (s1.acked - s0.acked) / dt / 1000,
                            (s1.inserted - s0.inserted) / dt / 1000);
  }
  fmt::print("  timeline (k lines/s per 5 s, published/committed):{}\n", timeline);
  fmt::print("  window {:.1f} s: published {}/s, committed {}/s; backlog at the end {} lines\n",
             res.window_seconds, Thousands(res.published_per_s), Thousands(res.committed_per_s),
             Thousands(static_cast<double>(res.backlog_at_end)));
  fmt::print("  CPU in the window (cores): {}\n", res.cpu.Describe(true));
  // CPU time per line: what bounds the rate on a machine whatever else runs on it.
  fmt::print(
      "  CPU per line (us): publisher {:.1f}, nats-server {:.1f} (per published line), "
      "muon-logs {:.1f}, postgres {:.1f} (per committed line)\n",
      res.cpu.bench / res.published_per_s * 1e6, res.cpu.nats / res.published_per_s * 1e6,
      res.cpu.logs / res.committed_per_s * 1e6, res.cpu.pg / res.committed_per_s * 1e6);
  fmt::print(
      "  lines sent {}, acked unique {}, duplicates {}, messages with ack errors {}, stalls {}; "
      "message {} bytes\n",
      sent, res.published, dups, errors, stalls, publishers[0]->message_bytes);
  if (res.drain90_per_s > 0) {
    fmt::print(
        "  consumer alone (publisher stopped), first 90% of the backlog: {}/s; the last 10% "
        "took {:.1f} s\n  CPU while draining (cores): {}\n",
        Thousands(res.drain90_per_s),
        std::chrono::duration<double>(drain_end - res.drain90_at).count(),
        res.drain_cpu.Describe(true));
  }
  fmt::print("  drained the backlog in {:.1f} s after the window; stored {} of {} published{}\n",
             res.drain_seconds, res.stored, res.published,
             res.stored == res.published ? "" : "  <-- MISMATCH");

  publishers.clear();
  const muon::ExitStatus status = logs.Stop(10s);
  pids.logs.clear();
  if (!status.Success() && status.signal != SIGTERM) {
    fmt::print("  muon-logs ended with {}\n", status.Describe());
  }
  const std::string tail = FileTail(log_file, res.died ? 80 : 5);
  if (!tail.empty()) fmt::print("  muon-logs said (last lines):\n{}", tail);
  std::fflush(stdout);
  return res;
}

CopyResult RunCopyReference(const std::string& db_url, uint64_t rows, Pids& pids) {
  CopyResult res;
  res.rows = rows;
  pqxx::connection conn(db_url);
  {
    pqxx::nontransaction tx(conn);
    tx.exec0("TRUNCATE logs.lines");
  }
  const auto emitters = MakeEmitters();
  const CpuSnapshot cpu0 = SnapCpu(pids);
  const auto start = Clock::now();
  // Times as live ingest would have them: now, advancing.
  const int64_t base = NowMicros();
  CopyLines(conn, 0, static_cast<int64_t>(rows), 1'000'000, emitters, false,
            [base](int64_t i) { return base + i / 10; });
  res.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const CpuSnapshot cpu1 = SnapCpu(pids);
  res.rows_per_s = static_cast<double>(rows) / res.seconds;
  res.cpu = CpuBetween(cpu0, cpu1);
  fmt::print(
      "reference: raw COPY of {} lines (1 connection, 1M per transaction) in {:.1f} s: "
      "{}/s\n  CPU (cores): {}\n  CPU per line (us): client {:.1f}, postgres {:.1f}\n",
      Thousands(static_cast<double>(rows)), res.seconds, Thousands(res.rows_per_s),
      res.cpu.Describe(false), res.cpu.bench / res.rows_per_s * 1e6,
      res.cpu.pg / res.rows_per_s * 1e6);
  std::fflush(stdout);
  return res;
}

// ---- queries ----

// The SQL and parameters of PgStore::Query for `q`, built the same way (kept identical to
// services/logs/store.cpp; the row counts of both are compared on every run).
std::pair<std::string, std::vector<std::string>> HistorySql(const muon::logs::HistoryQuery& q) {
  auto micros = [](std::chrono::system_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  };
  std::vector<std::string> params;
  auto param = [&](std::string value) {
    params.push_back(std::move(value));
    return fmt::format("${}", params.size());
  };
  std::string where =
      fmt::format("ts >= {}::timestamptz AND ts < {}::timestamptz",
                  param(FormatTimestamp(micros(q.since))), param(FormatTimestamp(micros(q.until))));
  const auto& f = q.filter;
  if (!f.service().empty()) where += " AND service = " + param(f.service());
  if (!f.instance().empty()) where += " AND instance = " + param(f.instance());
  if (!f.grep().empty()) {
    std::string pattern = "%";
    for (char c : f.grep()) {
      if (c == '%' || c == '_' || c == '\\') pattern += '\\';
      pattern += c;
    }
    where += " AND message ILIKE " + param(pattern + "%");
  }
  const char* dir = q.oldest_first ? "ASC" : "DESC";
  std::string sql = fmt::format(
      "SELECT (EXTRACT(EPOCH FROM ts) * 1000000)::bigint, service, instance, release, region,"
      " source, severity, message, truncated, trace_id, seq, stream_seq FROM logs.lines"
      " WHERE {} ORDER BY ts {}, instance {}, seq {} LIMIT {}",
      where, dir, dir, dir, q.limit + 1);
  return {sql, params};
}

struct Percentiles {
  double p50 = 0, p95 = 0;
};

Percentiles Pcts(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[static_cast<size_t>(q * (v.size() - 1) + 0.5)]; };
  return {at(0.50), at(0.95)};
}

struct QueryFigures {
  std::string name;
  double target_ms;
  Percentiles call, store, sql;
  double lines = 0;  // average result size
};

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

void GenerateRows(const std::string& db_url, int64_t rows) {
  {
    pqxx::connection conn(db_url);
    pqxx::nontransaction tx(conn);
    tx.exec0("TRUNCATE logs.lines");
  }
  const auto emitters = MakeEmitters();
  // Evenly over the last 24 h (less a minute at each end), in time order as ingest writes them.
  const int64_t end_us = NowMicros() - 60'000'000;
  const int64_t start_us = end_us - int64_t(24) * 3600 * 1000000 + 60'000'000;
  const double step = static_cast<double>(end_us - start_us) / static_cast<double>(rows);
  auto time_of = [&](int64_t i) { return start_us + static_cast<int64_t>(step * i); };
  const auto start = Clock::now();
  constexpr int kThreads = 2;
  std::vector<std::thread> threads;
  std::exception_ptr failure;
  std::mutex mu;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        pqxx::connection conn(db_url);
        CopyLines(conn, rows * t / kThreads, rows * (t + 1) / kThreads, 1'000'000, emitters, true,
                  time_of);
      } catch (...) {
        std::lock_guard lock(mu);
        failure = std::current_exception();
      }
    });
  }
  for (auto& th : threads) th.join();
  if (failure) std::rethrow_exception(failure);
  const double copy_s = std::chrono::duration<double>(Clock::now() - start).count();
  const auto vacuum_start = Clock::now();
  pqxx::connection conn(db_url);
  pqxx::nontransaction tx(conn);
  tx.exec0("VACUUM (ANALYZE) logs.lines");
  const double vacuum_s = std::chrono::duration<double>(Clock::now() - vacuum_start).count();
  const auto size =
      tx.exec1(
            "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'logs.lines'::regclass")[0]
          .c_str();
  fmt::print(
      "queries: {} lines over 24 h, {} services, written with COPY (2 connections) in "
      "{:.1f} s ({}/s), VACUUM ANALYZE {:.1f} s; table + indexes {}\n",
      Thousands(static_cast<double>(rows)), kServices, copy_s,
      Thousands(static_cast<double>(rows) / copy_s), vacuum_s, size);
  std::fflush(stdout);
}

std::vector<QueryFigures> RunQueries(const Args& a, muon::testing::NatsServer& nats,
                                     const std::string& db_url) {
  muon::logs::LogsOptions options;
  options.database_url = db_url;
  options.nats_url = nats.url();
  options.db_connections = 4;
  auto service_conn = muon::bus::Connection::Connect({.url = nats.url(), .name = "bench-logs"});
  auto client = muon::bus::Connection::Connect({.url = nats.url(), .name = "bench-client"});
  if (!service_conn->WaitConnected(5s) || !client->WaitConnected(5s)) {
    throw std::runtime_error("cannot connect to nats-server");
  }
  // Migrates the schema (when the ingest part did not run) and creates the partitions.
  muon::logs::LogsApp app(options, *service_conn);
  GenerateRows(db_url, a.rows);
  muon::Service service(*service_conn, muon::logs::DefaultServiceOptions());
  app.Register(service, /*authorize=*/false);
  service.Start();
  pqxx::connection raw(db_url);

  struct Kind {
    std::string name;
    double target_ms;
    std::function<lv1::QueryRequest(const std::string& service)> make;
  };
  const std::vector<Kind> kinds = {
      {"last 1,000 lines of a service", 50,
       [](const std::string& s) {
         lv1::QueryRequest r;
         r.mutable_filter()->set_service(s);
         r.set_limit(1000);
         return r;
       }},
      {"grep \"timeout\", a service's last hour", 500,
       [](const std::string& s) {
         lv1::QueryRequest r;
         r.mutable_filter()->set_service(s);
         r.mutable_filter()->set_grep("timeout");
         r.set_since("1h");
         r.set_limit(1000);
         return r;
       }},
  };

  if (a.explain) {
    for (const auto& k : kinds) {
      const auto q =
          muon::logs::ResolveQuery(k.make(kServiceNames[7]), std::chrono::system_clock::now());
      auto [sql, params] = HistorySql(q);
      pqxx::read_transaction tx(raw);
      const auto r =
          tx.exec_params("EXPLAIN (ANALYZE, BUFFERS) " + sql,
                         pqxx::prepare::make_dynamic_params(params.begin(), params.end()));
      fmt::print("EXPLAIN {}:\n", k.name);
      for (const auto& row : r) fmt::print("    {}\n", row[0].c_str());
    }
  }

  std::vector<QueryFigures> out;
  for (const auto& k : kinds) {
    std::vector<double> call_ms, store_ms, sql_ms;
    double lines = 0;
    for (int run = -1; run < a.query_runs; ++run) {  // run -1 warms up connections
      const std::string svc = kServiceNames[((run + 1) * 7) % kServices];
      const lv1::QueryRequest request = k.make(svc);
      size_t n_call = 0, n_store = 0, n_sql = 0;
      double t_call = 0, t_store = 0, t_sql = 0;
      for (int j = 0; j < 3; ++j) {
        switch ((run + 1 + j) % 3) {
          case 0: {
            lv1::QueryResponse response;
            const auto s = Clock::now();
            muon::Call(*client, "muon.rpc.logs.Query", request, response, 30s);
            t_call = Ms(Clock::now() - s);
            n_call = response.lines_size();
            break;
          }
          case 1: {
            const auto s = Clock::now();
            const auto q = muon::logs::ResolveQuery(request, std::chrono::system_clock::now());
            const auto page = app.store().Query(q);
            t_store = Ms(Clock::now() - s);
            n_store = page.lines.size();
            break;
          }
          default: {
            const auto s = Clock::now();
            const auto q = muon::logs::ResolveQuery(request, std::chrono::system_clock::now());
            auto [sql, params] = HistorySql(q);
            pqxx::read_transaction tx(raw);
            const pqxx::result r = tx.exec_params(
                sql, pqxx::prepare::make_dynamic_params(params.begin(), params.end()));
            size_t bytes = 0;
            for (const auto& row : r) {
              for (const auto& field : row) bytes += field.size();
            }
            tx.commit();
            t_sql = Ms(Clock::now() - s);
            n_sql = std::min<size_t>(r.size(), static_cast<size_t>(q.limit));
            (void)bytes;
            break;
          }
        }
      }
      if (n_call != n_store || n_store != n_sql) {
        fmt::print("  warning: {} of {}: {} lines by Call, {} by PgStore, {} by SQL\n", k.name, svc,
                   n_call, n_store, n_sql);
      }
      if (run < 0) continue;
      call_ms.push_back(t_call);
      store_ms.push_back(t_store);
      sql_ms.push_back(t_sql);
      lines += static_cast<double>(n_call) / a.query_runs;
    }
    QueryFigures f{k.name, k.target_ms, Pcts(call_ms), Pcts(store_ms), Pcts(sql_ms), lines};
    fmt::print(
        "  {}: {} runs, {:.0f} lines per answer; ms p50/p95: Call {:.1f}/{:.1f}, "
        "PgStore {:.1f}/{:.1f}, SQL {:.1f}/{:.1f}\n",
        f.name, a.query_runs, f.lines, f.call.p50, f.call.p95, f.store.p50, f.store.p95, f.sql.p50,
        f.sql.p95);
    std::fflush(stdout);
    out.push_back(f);
  }
  service.Stop(5s);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  // Waiting for the stream logs "not found" warnings that mean nothing here.
  muon::log::SetLevel(muon::log::Level::kError);
  const Args a = ParseArgs(argc, argv);
  try {
    muon::testing::TempDir work("muon-test-logs-bench");
    muon::testing::NatsServer nats;
    muon::testing::Postgres pg;
    const std::string db_url = pg.CreateDatabase();
    Pids pids{FindServerPid("nats-server", nats.port()), FindServerPid("postgres", pg.port()), ""};
    {
      std::ifstream la("/proc/loadavg");
      std::string l1, l5;
      la >> l1 >> l5;
      fmt::print(
          "logs_bench: {} CPUs, load average {} {} at start; nats-server pid {}, "
          "postgres pid {}\n",
          std::thread::hardware_concurrency(), l1, l5, pids.nats, pids.pg);
    }

    IngestResult ingest;
    CopyResult copy;
    if (a.ingest) {
      ingest = RunIngest(a, nats, db_url, work.path(), pids);
      copy = RunCopyReference(db_url, std::max<uint64_t>(ingest.stored, 1), pids);
    }
    std::vector<QueryFigures> queries;
    if (a.queries) {
      queries = RunQueries(a, nats, db_url);
    }

    bool ok = true;
    fmt::print("\n{:<44} {:>20} {:>22} {:>6}  {:<26} {}\n", "metric", "measured",
               "reference (same run)", "ratio", "target", "met");
    if (ingest.ran) {
      const double ratio = ingest.committed_per_s / copy.rows_per_s;
      const bool met = !ingest.died && ingest.committed_per_s >= 100000 && ratio >= 0.5;
      ok &= met;
      fmt::print("{:<44} {:>18}/s {:>20}/s {:>6.2f}  {:<26} {}\n",
                 "ingest: committed lines/s, steady state", Thousands(ingest.committed_per_s),
                 "COPY " + Thousands(copy.rows_per_s), ratio, ">= 100,000/s, ratio >= 0.5",
                 ingest.died ? "NO (muon-logs crashed)"
                 : met       ? "yes"
                             : "NO");
      fmt::print("{:<44} {:>18}/s {:>22} {:>6}  {:<26}\n",
                 "ingest: published (stream-acked) lines/s", Thousands(ingest.published_per_s), "-",
                 "-", "-");
      if (ingest.drain90_per_s > 0) {
        fmt::print("{:<44} {:>18}/s {:>20}/s {:>6.2f}  {:<26}\n",
                   "ingest: consumer alone, draining a backlog", Thousands(ingest.drain90_per_s),
                   "COPY " + Thousands(copy.rows_per_s), ingest.drain90_per_s / copy.rows_per_s,
                   "-");
      }
    }
    for (const auto& q : queries) {
      const bool met = q.call.p95 < q.target_ms;
      ok &= met;
      fmt::print("{:<44} {:>20} {:>22} {:>6.2f}  {:<26} {}\n",
                 q.name + ", muon.rpc.logs.Query p50/p95",
                 fmt::format("{:.1f}/{:.1f} ms", q.call.p50, q.call.p95),
                 fmt::format("SQL {:.1f}/{:.1f} ms", q.sql.p50, q.sql.p95), q.call.p50 / q.sql.p50,
                 fmt::format("< {:.0f} ms", q.target_ms), met ? "yes" : "NO");
      fmt::print("{:<44} {:>20} {:>22} {:>6.2f}\n", "  same, PgStore::Query in process",
                 fmt::format("{:.1f}/{:.1f} ms", q.store.p50, q.store.p95), "",
                 q.store.p50 / q.sql.p50);
    }
    fmt::print("\nresult: {}\n", ok ? "targets met" : "TARGETS MISSED");
  } catch (const std::exception& e) {
    fmt::print(stderr, "logs_bench: {}\n", e.what());
    return 1;
  }
  return 0;
}
