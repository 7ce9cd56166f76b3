#include "logs_service.h"

#include <fmt/format.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>

#include "muon/common/errors.h"
#include "muon/common/log.h"
#include "muon/common/log_lines.h"

namespace muon::logs {
namespace {

using Clock = std::chrono::system_clock;
constexpr const char* kDurable = "logs";
constexpr std::chrono::seconds kAckWait{30};
constexpr int kMaxLimit = 10000;

int64_t Micros(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

Clock::time_point StartOfDayUtc(Clock::time_point t) {
  return std::chrono::floor<std::chrono::days>(t);
}

}  // namespace

void AddOptions(config::Spec& spec) {
  AddServiceSecretOption(spec);
  spec.String("database-url", "DATABASE_URL", std::nullopt, "PostgreSQL URL (schema logs)", true)
      .Duration("stream-max-age", "MUON_LOGS_STREAM_MAX_AGE", "168h",
                "how long the LOGS stream keeps lines (limits retention)")
      .Int("stream-max-mb", "MUON_LOGS_STREAM_MAX_MB", 8192, 1, int64_t(1) << 30,
           "the LOGS stream's size limit in MiB (oldest lines go first)")
      .Duration("retention", "MUON_LOGS_RETENTION", "168h",
                "how long stored lines are kept (whole days are dropped)")
      .Int("partition-days-ahead", "MUON_LOGS_PARTITION_DAYS_AHEAD", 3, 1, 31,
           "daily partitions created ahead of today")
      .Int("ingest-workers", "MUON_LOGS_INGEST_WORKERS", 2, 1, 32,
           "parallel fetch-and-store loops in this process")
      .Int("batch-size", "MUON_LOGS_BATCH_SIZE", 500, 1, 100000,
           "bus messages (each up to 1,000 lines) stored per transaction at most")
      .Duration("batch-wait", "MUON_LOGS_BATCH_WAIT", "100ms",
                "how long a fetch waits for a first message when there is none");
}

LogsOptions OptionsFromConfig(const config::Values& values) {
  LogsOptions o;
  o.database_url = values.String("database-url");
  o.nats_url = values.String("nats-url");
  o.service_secret = ServiceSecretFromConfig(values);
  o.stream_max_age =
      std::chrono::duration_cast<std::chrono::seconds>(values.Duration("stream-max-age"));
  o.stream_max_bytes = values.Int("stream-max-mb") * 1024 * 1024;
  o.retention = std::chrono::duration_cast<std::chrono::hours>(values.Duration("retention"));
  o.partition_days_ahead = static_cast<int>(values.Int("partition-days-ahead"));
  o.ingest_workers = static_cast<int>(values.Int("ingest-workers"));
  o.batch_size = static_cast<int>(values.Int("batch-size"));
  o.batch_wait =
      std::chrono::duration_cast<std::chrono::milliseconds>(values.Duration("batch-wait"));
  if (o.retention < std::chrono::hours(24)) {
    throw config::ConfigError("--retention (env MUON_LOGS_RETENTION) must be at least 24h");
  }
  o.db_connections = static_cast<size_t>(o.ingest_workers) + 4;
  return o;
}

ServiceOptions DefaultServiceOptions() {
  return {.name = "logs",
          .kind = ServiceKind::kPlatform,
          .description = "Log lines of every instance, build and platform service: history",
          .concurrency = 4};
}

std::optional<Clock::time_point> ParseTimeArg(std::string_view text, Clock::time_point now) {
  if (auto d = config::ParseDuration(text)) {
    return now - std::chrono::duration_cast<Clock::duration>(*d);
  }
  google::protobuf::Timestamp ts;
  // The clock counts nanoseconds in 64 bits: about 292 years either side of 1970.
  constexpr int64_t kClockRangeSeconds = int64_t(9'000'000'000);
  if (google::protobuf::util::TimeUtil::FromString(std::string(text), &ts)) {
    // Times beyond what the clock holds are clamped: "until the year 3000" means "no end".
    const int64_t seconds = std::clamp(ts.seconds(), -kClockRangeSeconds, kClockRangeSeconds);
    return Clock::time_point(std::chrono::duration_cast<Clock::duration>(
        std::chrono::seconds(seconds) + std::chrono::nanoseconds(ts.nanos())));
  }
  return std::nullopt;
}

HistoryQuery ResolveQuery(const v1::QueryRequest& request, Clock::time_point now) {
  HistoryQuery q;
  q.filter = request.filter();
  const auto& f = q.filter;
  if (!f.service().empty() && !loglines::IsValidToken(f.service())) {
    throw Error::BadRequest("filter.service is not a valid service name");
  }
  if (!f.instance().empty() && !loglines::IsValidToken(f.instance())) {
    throw Error::BadRequest("filter.instance is not a valid instance id");
  }
  if (f.grep().size() > 1024) throw Error::BadRequest("filter.grep is longer than 1024 bytes");
  if (!v1::Source_IsValid(f.source())) throw Error::BadRequest("filter.source is not valid");
  if (!v1::Severity_IsValid(f.min_severity())) {
    throw Error::BadRequest("filter.min_severity is not valid");
  }
  q.since = now - std::chrono::hours(24);
  if (!request.since().empty()) {
    auto t = ParseTimeArg(request.since(), now);
    if (!t) {
      throw Error::BadRequest(
          fmt::format("since \"{}\" is neither a duration (90s, 15m, 2h, 7d) nor an RFC 3339 time",
                      request.since()));
    }
    q.since = *t;
  }
  q.until = now + std::chrono::minutes(5);  // emitters' clocks may run a little ahead
  if (!request.until().empty()) {
    auto t = ParseTimeArg(request.until(), now);
    if (!t) {
      throw Error::BadRequest(
          fmt::format("until \"{}\" is neither a duration (90s, 15m, 2h, 7d) nor an RFC 3339 time",
                      request.until()));
    }
    q.until = *t;
  }
  if (q.until <= q.since) throw Error::BadRequest("until must be later than since");
  if (request.limit() < 0 || request.limit() > kMaxLimit) {
    throw Error::BadRequest(fmt::format("limit must be 1..{}", kMaxLimit));
  }
  q.limit = request.limit() == 0 ? 100 : request.limit();
  q.oldest_first = request.oldest_first();
  if (!request.cursor().empty()) {
    q.after = DecodeCursor(request.cursor());
    if (!q.after) throw Error::BadRequest("cursor is not one this service handed out");
  }
  return q;
}

LogsApp::LogsApp(LogsOptions options, bus::Connection& bus)
    : options_(std::move(options)), bus_(bus) {
  store_ = std::make_unique<PgStore>(options_.database_url, options_.db_connections);
  store_->pool().Check();
  store_->Migrate();
  MaintainPartitions();
  js_ = std::make_unique<bus::JetStream>(bus_);
  if (auto ec = js_->EnsureStream(
          loglines::StreamConfig(options_.stream_max_age, options_.stream_max_bytes))) {
    throw std::runtime_error("cannot create the LOGS stream: " + ec.message());
  }
}

LogsApp::~LogsApp() {
  Stop();
}

void LogsApp::Register(Service& service, bool authorize) {
  if (authorize) {
    service_token_ = std::make_unique<ServiceTokenSource>(bus_, "logs", options_.service_secret);
    verifier_ = std::make_unique<token::Verifier>(BusKeyFetcher(bus_));
    rules_ = std::make_unique<rules::RuleCache>(
        BusRuleFetcher(bus_, [this] { return service_token_->Bearer(); }));
    service.SetAuthorizer(MakeAuthorizer(*verifier_, *rules_));
  }
  service.AddEndpoint<v1::QueryRequest, v1::QueryResponse>(
      "Query", [this](const v1::QueryRequest& request, RequestContext& ctx) {
        if (rules_) {
          const std::string endpoint = loglines::ReadEndpoint(request.filter().service());
          if (rules_->Evaluate(CallerOf(ctx.claims()), "logs", endpoint) !=
              rules::Decision::kAllow) {
            const std::string who = ctx.claims() ? ctx.claims()->email() : "anonymous";
            throw Error::Forbidden(
                request.filter().service().empty()
                    ? fmt::format("{} may not read every service's logs; name a service", who)
                    : fmt::format("{} may not read the logs of {}", who,
                                  request.filter().service()));
          }
        }
        return Query(request);
      });
}

v1::QueryResponse LogsApp::Query(const v1::QueryRequest& request) {
  HistoryQuery query = ResolveQuery(request, Clock::now());
  v1::QueryResponse response;
  // The watermark is read before the query: every line at or below it is in the result set's
  // snapshot, and the result holds none above it, so a tail that continues from the stream
  // right after it shows every line once and in stream order.
  if (request.want_watermark()) {
    uint64_t floor = 0;
    if (auto ec = js_->AckFloor(loglines::kStreamName, kDurable, floor); ec) {
      throw Error::Unavailable("the log stream's consumer is not reachable: " + ec.message());
    }
    response.set_committed_through(floor);
    query.max_stream_seq = floor;
  }
  HistoryPage page = store_->Query(query);
  for (auto& line : page.lines) *response.add_lines() = std::move(line);
  if (page.next) response.set_next_cursor(EncodeCursor(*page.next));
  return response;
}

void LogsApp::Start() {
  for (int i = 0; i < options_.ingest_workers; ++i) {
    threads_.emplace_back([this, i] { IngestLoop(i); });
  }
  threads_.emplace_back([this] { MaintenanceLoop(); });
}

void LogsApp::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void LogsApp::MaintainPartitions() {
  const auto now = Clock::now();
  // Every day a line may still be stored for has a partition: from the first day the retention
  // keeps to days_ahead after today. Older lines would be dropped with their day anyway; lines
  // further ahead (a clock far off) are stored on the last day (see Decode).
  const auto first = StartOfDayUtc(now - options_.retention);
  const auto end =
      StartOfDayUtc(now) + std::chrono::hours(24) * (options_.partition_days_ahead + 1);
  const int days =
      static_cast<int>(std::chrono::duration_cast<std::chrono::hours>(end - first).count() / 24);
  const int created = store_->EnsurePartitions(first, days);
  const int dropped = store_->DropExpired(now, options_.retention);
  if (created > 0 || dropped > 0) {
    log::Info("log partitions maintained", {{"created", created}, {"dropped", dropped}});
  }
  partitions_first_us_ = Micros(first);
  partitions_end_us_ = Micros(end);
}

void LogsApp::MaintenanceLoop() {
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::hours(1), [this] { return stop_; })) {
    lock.unlock();
    try {
      MaintainPartitions();
    } catch (const std::exception& e) {
      log::Error("log partition upkeep failed", {{"error", e.what()}});
    }
    lock.lock();
  }
}

std::vector<StoredLine> LogsApp::Decode(std::vector<bus::Msg>& messages) {
  std::vector<StoredLine> out;
  out.reserve(messages.size());
  const int64_t first_us = partitions_first_us_.load();
  const int64_t end_us = partitions_end_us_.load();
  v1::LogBatch received;
  for (auto& msg : messages) {
    const auto delivery = bus::ParseJsDelivery(msg.reply());
    // The subject names the emitter; a payload that does not parse is dropped, and so is a line
    // that claims another emitter.
    const std::string_view subject = msg.subject();
    const std::string_view rest = subject.substr(loglines::kSubjectPrefix.size());
    const size_t dot = rest.find('.');
    if (!delivery || dot == std::string_view::npos ||
        !received.ParseFromArray(msg.data().data(), static_cast<int>(msg.data().size()))) {
      stats_.rejected++;
      continue;
    }
    for (auto& line : *received.mutable_lines()) {
      if (line.service() != rest.substr(0, dot) || line.instance() != rest.substr(dot + 1) ||
          line.seq() == 0) {
        stats_.rejected++;
        continue;
      }
      int64_t us = line.time().seconds() * 1000000 + line.time().nanos() / 1000;
      if (us < first_us) {
        stats_.rejected++;  // older than the retention: its day is gone or about to go
        continue;
      }
      if (us >= end_us) {
        // A clock far ahead: the line goes to the last day there is. A fixed point (not "now")
        // keeps a redelivery identical, so the de-duplication still recognises it.
        us = end_us - 1;
        line.mutable_time()->set_seconds(us / 1000000);
        line.mutable_time()->set_nanos(static_cast<int32_t>(us % 1000000) * 1000);
      }
      loglines::SanitizeText(*line.mutable_message());
      if (loglines::CapMessage(*line.mutable_message(), loglines::kDefaultMaxMessageBytes)) {
        line.set_truncated(true);
      }
      line.set_stream_seq(delivery->stream_sequence);
      StoredLine stored;
      stored.line = std::move(line);
      stored.redelivered = delivery->delivered > 1;
      out.push_back(std::move(stored));
    }
  }
  return out;
}

bool LogsApp::StoreOneByOne(const std::vector<StoredLine>& batch) {
  for (const auto& stored : batch) {
    try {
      store_->Insert({stored});
    } catch (const std::exception& e) {
      const auto code = db::Classify(e);
      if (code == db::DbErrc::kUnavailable || code == db::DbErrc::kPoolTimeout ||
          code == db::DbErrc::kInDoubt) {
        return false;
      }
      stats_.rejected++;
      log::Error("dropped a log line the database refuses", {{"service", stored.line.service()},
                                                             {"instance", stored.line.instance()},
                                                             {"seq", stored.line.seq()},
                                                             {"error", e.what()}});
    }
  }
  return true;
}

void LogsApp::IngestLoop(int worker) {
  // Its own connection: acks are many small publishes, so this one buffers them instead of
  // writing each at once.
  auto connection = bus::Connection::Connect({.url = options_.nats_url,
                                              .name = fmt::format("muon-logs-ingest-{}", worker),
                                              .send_asap = false});
  bus::JetStream js(*connection);
  bus::PullConsumer consumer;
  auto stopping = [this] {
    std::lock_guard lock(mu_);
    return stop_;
  };
  auto pause = [this](std::chrono::milliseconds d) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, d, [this] { return stop_; });
  };
  while (!stopping()) {
    if (!consumer.Valid()) {
      bus::ConsumerConfig cc;
      cc.durable = kDurable;
      // No filter_subject: the stream holds only log lines, and a filtered consumer makes
      // nats-server count the filtered pending messages on every pull (measured: a backlog of
      // 1M lines drained in 130 s with the filter, 1.1 s without).
      cc.ack_wait = kAckWait;
      cc.max_ack_pending = 200000;
      if (auto ec = js.PullSubscribe(loglines::kStreamName, cc, consumer)) {
        log::Warn("cannot bind to the log stream's consumer; retrying", {{"error", ec.message()}});
        pause(std::chrono::seconds(1));
        continue;
      }
    }
    std::vector<bus::Msg> messages;
    const auto ec = consumer.Fetch(options_.batch_size, options_.batch_wait, messages);
    if (messages.empty()) {
      if (ec && ec != bus::BusErrc::kTimeout) pause(std::chrono::milliseconds(250));
      continue;
    }
    std::vector<StoredLine> batch = Decode(messages);
    try {
      store_->Insert(batch);
    } catch (const std::exception& e) {
      stats_.failures++;
      if (db::Classify(e) == db::DbErrc::kUnavailable ||
          db::Classify(e) == db::DbErrc::kPoolTimeout || db::Classify(e) == db::DbErrc::kInDoubt) {
        log::Error("storing log lines failed; they will be redelivered",
                   {{"lines", batch.size()}, {"error", e.what()}});
        for (const auto& m : messages) consumer.Nak(m);
        pause(std::chrono::seconds(1));
        continue;
      }
      // The database refused something in the batch itself: store line by line so one bad
      // line cannot hold back the others forever; the ones refused alone are dropped, loudly.
      log::Warn("a batch of log lines was refused; storing it line by line",
                {{"lines", batch.size()}, {"error", e.what()}});
      if (!StoreOneByOne(batch)) {
        for (const auto& m : messages) consumer.Nak(m);
        pause(std::chrono::seconds(1));
        continue;
      }
    }
    if (auto ack_ec = consumer.AckAll(messages)) {
      log::Warn("acknowledging stored log lines failed; they will be redelivered and skipped",
                {{"error", ack_ec.message()}});
    }
    connection->Flush(std::chrono::seconds(2));
    stats_.stored += batch.size();
    stats_.batches++;
  }
}

}  // namespace muon::logs
