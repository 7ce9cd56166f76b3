// The logs service against a real nats-server and PostgreSQL: lines published by Shippers to the
// LOGS stream are stored by the ingest and answered by muon.rpc.logs.Query (filters, order, time
// windows, cursor paging, errors); the store's redelivery de-duplication and partition retention;
// and the real muon-logs binary killed with -9 while 100,000 lines are in flight, which must end
// with every line stored exactly once.

#include <fmt/format.h>
#include <google/protobuf/util/time_util.h>
#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "logs_service.h"
#include "muon/common/bus.h"
#include "muon/common/errors.h"
#include "muon/common/log_lines.h"
#include "muon/common/process.h"
#include "muon/common/service.h"
#include "muon/common/v1/common.pb.h"
#include "store.h"

using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;
using google::protobuf::util::TimeUtil;
using muon::testing::WaitUntil;
namespace v1 = muon::logs::v1;

namespace {

constexpr const char* kQuerySubject = "muon.rpc.logs.Query";

std::unique_ptr<muon::bus::Connection> Connect(const std::string& url, const std::string& name) {
  auto conn = muon::bus::Connection::Connect({.url = url, .name = name});
  REQUIRE(conn->WaitConnected(5s));
  return conn;
}

int64_t Micros(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

int64_t Micros(const v1::LogLine& line) {
  return line.time().seconds() * 1000000 + line.time().nanos() / 1000;
}

std::string Rfc3339(Clock::time_point t) {
  return TimeUtil::ToString(TimeUtil::MicrosecondsToTimestamp(Micros(t)));
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// SQL on the test's database, for what the bus cannot tell (counts, partitions).
class Sql {
 public:
  explicit Sql(const std::string& url) : conn_(url) {}
  int64_t Int(const std::string& query) {
    pqxx::nontransaction tx(conn_);
    const pqxx::row row = tx.exec1(query);
    return row[0].is_null() ? 0 : row[0].as<int64_t>();
  }
  pqxx::result Rows(const std::string& query) {
    pqxx::nontransaction tx(conn_);
    return tx.exec(query);
  }
  bool TableExists(const std::string& name) {
    pqxx::nontransaction tx(conn_);
    return !tx.exec_params1("SELECT to_regclass($1)::text", name)[0].is_null();
  }

 private:
  pqxx::connection conn_;
};

std::string PartitionName(Clock::time_point t) {
  const std::chrono::year_month_day ymd{std::chrono::floor<std::chrono::days>(t)};
  return fmt::format("logs.lines_{:04}{:02}{:02}", int(ymd.year()), unsigned(ymd.month()),
                     unsigned(ymd.day()));
}

// ---- the in-process logs service ----

// One nats-server, a fresh database, muon::logs::LogsApp with its Query endpoint on a Service
// (no authorization: these tests are about storage), and a client connection.
struct LogsFixture {
  muon::testing::NatsServer nats;
  std::string database_url = muon::testing::Postgres::Shared().CreateDatabase();
  std::unique_ptr<muon::bus::Connection> server_conn = Connect(nats.url(), "logs-under-test");
  std::unique_ptr<muon::bus::Connection> client = Connect(nats.url(), "test-client");
  std::unique_ptr<muon::logs::LogsApp> app;
  std::unique_ptr<muon::Service> service;

  LogsFixture() {
    muon::logs::LogsOptions options;
    options.database_url = database_url;
    options.nats_url = nats.url();
    options.batch_wait = 20ms;
    options.db_connections = 4;
    app = std::make_unique<muon::logs::LogsApp>(options, *server_conn);
    auto service_options = muon::logs::DefaultServiceOptions();
    service_options.concurrency = 2;
    service = std::make_unique<muon::Service>(*server_conn, service_options);
    app->Register(*service, /*authorize=*/false);
    service->Start();
    app->Start();
  }
  ~LogsFixture() {
    service->Stop(2s);
    service.reset();
    app.reset();
  }

  v1::QueryResponse Query(const v1::QueryRequest& request) {
    v1::QueryResponse response;
    muon::Call(*client, kQuerySubject, request, response, 5s);
    return response;
  }

  // Lines matching `grep` stored so far (up to 10000, last 24 hours).
  size_t CountGrep(const std::string& grep, const std::string& since = "") {
    v1::QueryRequest request;
    request.mutable_filter()->set_grep(grep);
    request.set_limit(10000);
    request.set_since(since);
    return static_cast<size_t>(Query(request).lines_size());
  }
};

// A line as the test sent it.
struct Sent {
  std::string service;
  std::string instance;
  std::string release;
  v1::Source source;
  v1::Severity severity;
  std::string message;  // as it should be stored
  int64_t us;           // emitter time, microseconds
  uint64_t seq;
  std::string trace_id;
  bool truncated = false;
};

std::string Key(const std::string& instance, uint64_t seq) {
  return instance + "/" + std::to_string(seq);
}
std::string Key(const Sent& s) {
  return Key(s.instance, s.seq);
}
std::string Key(const v1::LogLine& l) {
  return Key(l.instance(), l.seq());
}

// One emitter: a Shipper that records every line it is given.
class Emitter {
 public:
  Emitter(muon::bus::Connection& conn, std::vector<Sent>& sent, muon::loglines::ShipperOptions o)
      : sent_(sent), shipper_(conn, o) {}

  void Emit(v1::Severity severity, const std::string& message, Clock::time_point time,
            const std::string& trace_id = "", std::string stored_message = "",
            bool truncated = false) {
    const auto& o = shipper_.options();
    sent_.push_back({o.service, o.instance, o.release, o.source, severity,
                     stored_message.empty() ? message : stored_message, Micros(time),
                     shipper_.next_seq(), trace_id, truncated});
    shipper_.Emit(severity, message, trace_id, time);
  }
  bool Flush() { return shipper_.Flush(10s); }

 private:
  std::vector<Sent>& sent_;
  muon::loglines::Shipper shipper_;
};

// The test's own idea of a filter (deliberately not loglines::Matches, which has its unit tests).
bool Wanted(const v1::Filter& f, const Sent& s, int64_t since_us, int64_t until_us) {
  if (s.us < since_us || s.us >= until_us) return false;
  if (!f.service().empty() && f.service() != s.service) return false;
  if (!f.instance().empty() && f.instance() != s.instance) return false;
  if (!f.release().empty() && f.release() != s.release) return false;
  if (f.source() != v1::SOURCE_UNSPECIFIED && f.source() != s.source) return false;
  if (f.min_severity() != v1::SEVERITY_UNSPECIFIED && s.severity < f.min_severity()) return false;
  if (!f.grep().empty()) {
    std::string haystack = s.message, needle = f.grep();
    for (auto* str : {&haystack, &needle}) {
      for (char& c : *str) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (haystack.find(needle) == std::string::npos) return false;
  }
  return true;
}

// The keys of the lines a query should return, in its order: (time, instance, seq).
std::vector<std::string> Expected(const std::vector<Sent>& sent, const v1::Filter& filter,
                                  Clock::time_point since, Clock::time_point until,
                                  bool oldest_first) {
  std::vector<const Sent*> keep;
  for (const auto& s : sent) {
    if (Wanted(filter, s, Micros(since), Micros(until))) keep.push_back(&s);
  }
  std::sort(keep.begin(), keep.end(), [&](const Sent* a, const Sent* b) {
    const auto ka = std::tie(a->us, a->instance, a->seq);
    const auto kb = std::tie(b->us, b->instance, b->seq);
    return oldest_first ? ka < kb : kb < ka;
  });
  std::vector<std::string> keys;
  for (const Sent* s : keep) keys.push_back(Key(*s));
  return keys;
}

std::vector<std::string> Keys(const v1::QueryResponse& response) {
  std::vector<std::string> keys;
  for (const auto& l : response.lines()) keys.push_back(Key(l));
  return keys;
}

}  // namespace

TEST_CASE("lines shipped to the stream are stored and answered with every filter, order and page",
          "[logs]") {
  LogsFixture f;
  const auto now = std::chrono::floor<std::chrono::milliseconds>(Clock::now());
  std::vector<Sent> sent;
  std::vector<std::unique_ptr<Emitter>> emitters;
  auto emitter = [&](std::string service, std::string instance, std::string release,
                     v1::Source source,
                     size_t max_bytes = muon::loglines::kDefaultMaxMessageBytes) {
    emitters.push_back(
        std::make_unique<Emitter>(*f.client, sent,
                                  muon::loglines::ShipperOptions{.service = std::move(service),
                                                                 .instance = std::move(instance),
                                                                 .release = std::move(release),
                                                                 .region = "eu-test",
                                                                 .source = source,
                                                                 .max_message_bytes = max_bytes}));
    return emitters.back().get();
  };
  Emitter* main_emitters[] = {
      emitter("web", "web-1", "v1", v1::SOURCE_APP),
      emitter("web", "web-2", "v2", v1::SOURCE_APP),
      emitter("worker", "wk-1", "v1", v1::SOURCE_SYSTEM),
      emitter("worker", "b-7", "v2", v1::SOURCE_BUILD),
      emitter("auth", "auth-1", "0.1.0", v1::SOURCE_PLATFORM),
  };
  constexpr v1::Severity kSeverities[] = {v1::SEVERITY_DEBUG, v1::SEVERITY_INFO, v1::SEVERITY_WARN,
                                          v1::SEVERITY_ERROR, v1::SEVERITY_FATAL};
  const auto base = now - 120min;
  // 40 lines, 90 s apart, from 2 hours ago to 61.5 minutes ago.
  for (int i = 0; i < 40; ++i) {
    std::string word = "request handled";
    if (i % 7 == 0) {
      word = std::vector<std::string>{"KUMQUAT", "kumquat", "KumQuat"}[(i / 7) % 3] + " seen";
    } else if (i == 5) {
      word = "progress 100% done";
    } else if (i == 6) {
      word = "snake_case word";
    } else if (i == 9) {
      word = "progress 1000 done";
    }
    main_emitters[i % 5]->Emit(kSeverities[(i + i / 5) % 5], fmt::format("line {:02} {}", i, word),
                               base + i * 90s, i == 3 ? "4bf92f3577b34da6a3ce929d0e0e4736" : "");
  }
  // 30 lines for paging: three instances, each timestamp shared by all three (ties are broken
  // by instance, then seq).
  Emitter* pagers[] = {emitter("pager", "p-1", "v9", v1::SOURCE_APP),
                       emitter("pager", "p-2", "v9", v1::SOURCE_APP),
                       emitter("pager", "p-3", "v9", v1::SOURCE_APP)};
  for (int k = 0; k < 30; ++k) {
    pagers[k % 3]->Emit(v1::SEVERITY_INFO, fmt::format("page line {}", k),
                        now - 30min + (k / 3) * 1s);
  }
  // Over the service's 16 KiB cap (the shipper here allows more): stored cut on a UTF-8 boundary.
  std::string big = "big";
  for (int i = 0; i < 10000; ++i) big += "\xC3\xA9";  // é
  std::string big_stored = "big";
  for (int i = 0; i < 8190; ++i) big_stored += "\xC3\xA9";
  REQUIRE(big_stored.size() == 16383);
  emitter("big", "big-1", "", v1::SOURCE_APP, 64 * 1024)
      ->Emit(v1::SEVERITY_INFO, big, now - 10min, "", big_stored, /*truncated=*/true);

  for (auto& e : emitters) REQUIRE(e->Flush());
  REQUIRE(sent.size() == 71);

  v1::QueryRequest all;
  all.set_limit(10000);
  size_t stored = 0;
  const bool complete = WaitUntil(
      [&] {
        stored = static_cast<size_t>(f.Query(all).lines_size());
        return stored >= sent.size();
      },
      20s, 50ms);
  INFO("stored " << stored << " of " << sent.size());
  REQUIRE(complete);

  // Run a query and compare with what the test expects; returns the response.
  auto check = [&](const v1::Filter& filter, const std::string& since, const std::string& until,
                   Clock::time_point since_t, Clock::time_point until_t, size_t expected_count,
                   bool oldest_first = false) {
    v1::QueryRequest request;
    *request.mutable_filter() = filter;
    request.set_since(since);
    request.set_until(until);
    request.set_limit(10000);
    request.set_oldest_first(oldest_first);
    const auto response = f.Query(request);
    INFO("filter " << filter.ShortDebugString() << " since " << since << " until " << until
                   << (oldest_first ? " oldest first" : " newest first"));
    CHECK(Keys(response) == Expected(sent, filter, since_t, until_t, oldest_first));
    CHECK(static_cast<size_t>(response.lines_size()) == expected_count);
    CHECK(response.next_cursor().empty());
    return response;
  };
  const auto far_past = now - 24h, far_future = now + 1h;
  auto filter = [](const std::function<void(v1::Filter&)>& set) {
    v1::Filter fl;
    set(fl);
    return fl;
  };

  {  // no filter: everything, newest first and oldest first
    check({}, "", "", far_past, far_future, 71);
    check({}, "", "", far_past, far_future, 71, /*oldest_first=*/true);
  }
  {  // each filter field
    check(filter([](auto& fl) { fl.set_service("web"); }), "", "", far_past, far_future, 16);
    check(filter([](auto& fl) { fl.set_service("web"); }), "", "", far_past, far_future, 16, true);
    check(filter([](auto& fl) { fl.set_service("nobody"); }), "", "", far_past, far_future, 0);
    check(filter([](auto& fl) { fl.set_instance("wk-1"); }), "", "", far_past, far_future, 8);
    check(filter([](auto& fl) { fl.set_release("v2"); }), "", "", far_past, far_future, 16);
    check(filter([](auto& fl) { fl.set_source(v1::SOURCE_BUILD); }), "", "", far_past, far_future,
          8);
    check(filter([](auto& fl) { fl.set_source(v1::SOURCE_PLATFORM); }), "", "", far_past,
          far_future, 8);
    // 8 of the 40 per severity; the pager and big lines are info.
    check(filter([](auto& fl) { fl.set_min_severity(v1::SEVERITY_ERROR); }), "", "", far_past,
          far_future, 16);
    check(filter([](auto& fl) { fl.set_min_severity(v1::SEVERITY_WARN); }), "", "", far_past,
          far_future, 24);
    check(filter([](auto& fl) { fl.set_min_severity(v1::SEVERITY_DEBUG); }), "", "", far_past,
          far_future, 71);
  }
  {  // grep is a case-insensitive substring; % and _ are plain characters
    check(filter([](auto& fl) { fl.set_grep("kumquat"); }), "", "", far_past, far_future, 6);
    check(filter([](auto& fl) { fl.set_grep("KUMQUAT SEEN"); }), "", "", far_past, far_future, 6);
    check(filter([](auto& fl) { fl.set_grep("0%"); }), "", "", far_past, far_future, 1);
    check(filter([](auto& fl) { fl.set_grep("%"); }), "", "", far_past, far_future, 1);
    check(filter([](auto& fl) { fl.set_grep("_"); }), "", "", far_past, far_future, 1);
    check(filter([](auto& fl) { fl.set_grep("progress 1_00"); }), "", "", far_past, far_future, 0);
    check(filter([](auto& fl) { fl.set_grep("\\"); }), "", "", far_past, far_future, 0);
    check(filter([](auto& fl) { fl.set_grep("BIG\xC3\xA9\xC3\xA9"); }), "", "", far_past,
          far_future, 1);
  }
  {  // filters combine
    check(filter([](auto& fl) {
            fl.set_service("worker");
            fl.set_min_severity(v1::SEVERITY_WARN);
            fl.set_grep("LINE");
          }),
          "", "", far_past, far_future, 11);
    check(filter([](auto& fl) {
            fl.set_service("web");
            fl.set_release("v1");
            fl.set_grep("kumquat");
          }),
          "", "", far_past, far_future, 2);
  }
  {  // since and until as RFC 3339 times: since inclusive, until exclusive
    const auto since = base + 10 * 90s, until = base + 20 * 90s;
    check({}, Rfc3339(since), Rfc3339(until), since, until, 10);
    check({}, Rfc3339(since), Rfc3339(until), since, until, 10, true);
    check(filter([](auto& fl) { fl.set_service("web"); }), Rfc3339(since), Rfc3339(until), since,
          until, 4);
  }
  {  // since and until as durations
    // Lines 14..29 are between 100 and 76 minutes old (the test takes far less than a minute).
    check({}, "100m", "76m", base + 14 * 90s, base + 30 * 90s, 16);
    // The pager and big lines (30 and 10 minutes old).
    const auto q_now = Clock::now();
    check({}, "45m", "", q_now - 45min, q_now + 5min, 31);
  }
  {  // every field of a line comes back
    v1::QueryRequest request;
    request.mutable_filter()->set_instance("b-7");
    request.set_limit(1);
    request.set_oldest_first(true);
    const auto response = f.Query(request);
    REQUIRE(response.lines_size() == 1);
    CHECK_FALSE(response.next_cursor().empty());
    const v1::LogLine& l = response.lines(0);
    CHECK(l.service() == "worker");
    CHECK(l.instance() == "b-7");
    CHECK(l.release() == "v2");
    CHECK(l.region() == "eu-test");
    CHECK(l.source() == v1::SOURCE_BUILD);
    CHECK(l.severity() == v1::SEVERITY_ERROR);  // (3 + 3 / 5) % 5
    CHECK(l.message() == "line 03 request handled");
    CHECK(l.trace_id() == "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(l.seq() == 1);
    CHECK(Micros(l) == Micros(base + 3 * 90s));
    CHECK_FALSE(l.truncated());
    CHECK(l.stream_seq() > 0);
  }
  {  // a line over the cap is stored cut and marked truncated
    v1::QueryRequest request;
    request.mutable_filter()->set_service("big");
    const auto response = f.Query(request);
    REQUIRE(response.lines_size() == 1);
    CHECK(response.lines(0).message() == big_stored);
    CHECK(response.lines(0).truncated());
  }
  {  // stream sequences are set, follow each instance's seq, and the watermark reaches them
    const auto response = f.Query(all);
    std::map<std::string, std::map<uint64_t, uint64_t>> by_instance;  // instance: seq -> stream
    uint64_t highest = 0;
    for (const auto& l : response.lines()) {
      CHECK(l.stream_seq() > 0);
      by_instance[l.instance()][l.seq()] = l.stream_seq();
      highest = std::max(highest, l.stream_seq());
    }
    for (const auto& [instance, streams] : by_instance) {
      INFO("instance " << instance);
      uint64_t previous = 0;
      for (const auto& [seq, stream_seq] : streams) {
        CHECK(stream_seq >= previous);  // a later line never rides in an earlier message
        previous = stream_seq;
      }
    }
    v1::QueryRequest request;
    request.set_want_watermark(true);
    request.set_limit(1);
    uint64_t watermark = 0;
    CHECK(WaitUntil(
        [&] {
          watermark = f.Query(request).committed_through();
          return watermark >= highest;
        },
        10s, 50ms));
    CHECK(watermark == highest);
  }
  {  // cursor paging: pages of 7 over 30 lines, each line exactly once, in order
    for (bool oldest_first : {false, true}) {
      INFO((oldest_first ? "oldest first" : "newest first"));
      v1::Filter pager;
      pager.set_service("pager");
      const auto expected = Expected(sent, pager, far_past, far_future, oldest_first);
      REQUIRE(expected.size() == 30);
      std::vector<std::string> seen;
      std::vector<int> page_sizes;
      v1::QueryRequest request;
      *request.mutable_filter() = pager;
      request.set_limit(7);
      request.set_oldest_first(oldest_first);
      for (int page = 0; page < 10; ++page) {
        const auto response = f.Query(request);
        page_sizes.push_back(response.lines_size());
        for (const auto& key : Keys(response)) seen.push_back(key);
        if (response.next_cursor().empty()) break;
        request.set_cursor(response.next_cursor());
      }
      CHECK(page_sizes == std::vector<int>{7, 7, 7, 7, 2});
      CHECK(seen == expected);
    }
  }
  {  // a page that ends exactly at the last line has no next cursor
    v1::QueryRequest request;
    request.mutable_filter()->set_service("pager");
    request.set_limit(15);
    auto response = f.Query(request);
    CHECK(response.lines_size() == 15);
    REQUIRE_FALSE(response.next_cursor().empty());
    request.set_cursor(response.next_cursor());
    response = f.Query(request);
    CHECK(response.lines_size() == 15);
    CHECK(response.next_cursor().empty());
  }
  {  // limit: the newest N with a cursor to the rest
    v1::QueryRequest request;
    request.set_limit(5);
    const auto response = f.Query(request);
    const auto expected = Expected(sent, {}, far_past, far_future, false);
    CHECK(Keys(response) == std::vector<std::string>(expected.begin(), expected.begin() + 5));
    CHECK_FALSE(response.next_cursor().empty());
  }
}

TEST_CASE("bad queries get a 400 in the platform error shape over the bus", "[logs]") {
  LogsFixture f;
  v1::QueryRequest request;
  request.set_limit(10001);
  muon::bus::Msg reply;
  REQUIRE_FALSE(f.client->Request(kQuerySubject, request.SerializeAsString(), {}, 5s, reply));
  CHECK(reply.Header(muon::bus::kHeaderServiceErrorCode) == std::optional<std::string_view>("400"));
  muon::common::v1::Error error;
  REQUIRE(error.ParseFromArray(reply.data().data(), static_cast<int>(reply.data().size())));
  CHECK(error.id() == "logs.Query");
  CHECK(error.code() == 400);
  CHECK(error.status() == "Bad Request");
  CHECK(error.detail() == "limit must be 1..10000");

  auto code_of = [&](const v1::QueryRequest& r) {
    try {
      f.Query(r);
    } catch (const muon::Error& e) {
      return e.code();
    }
    return 0;
  };
  v1::QueryRequest bad;
  bad.set_since("yesterday");
  CHECK(code_of(bad) == 400);
  bad.Clear();
  bad.mutable_filter()->set_service("no.dots");
  CHECK(code_of(bad) == 400);
  bad.Clear();
  bad.set_cursor("not-a-cursor");
  CHECK(code_of(bad) == 400);
  bad.Clear();
  bad.set_since("1h");
  bad.set_until("2h");
  CHECK(code_of(bad) == 400);
  CHECK(code_of(v1::QueryRequest()) == 0);

  // The same in JSON, as the ingress sends it.
  REQUIRE_FALSE(f.client->Request(kQuerySubject, R"({"limit":-5})",
                                  {{"Content-Type", "application/json"}}, 5s, reply));
  CHECK(reply.Header(muon::bus::kHeaderServiceErrorCode) == std::optional<std::string_view>("400"));
  const std::string body(reply.data());
  CHECK(body.find(R"("code":400)") != std::string::npos);
  CHECK(body.find(R"("id":"logs.Query")") != std::string::npos);
}

TEST_CASE("a redelivered batch is stored once; new lines in a mixed batch are stored", "[logs]") {
  const std::string url = muon::testing::Postgres::Shared().CreateDatabase();
  muon::logs::PgStore store(url, 2);
  store.Migrate();
  const auto now = Clock::now();
  REQUIRE(store.EnsurePartitions(now, 3) > 0);
  Sql sql(url);

  auto line = [&](const std::string& instance, uint64_t seq, bool redelivered) {
    muon::logs::StoredLine s;
    auto& l = s.line;
    const int64_t us = Micros(now - 10min) + static_cast<int64_t>(seq) * 1000;
    *l.mutable_time() = TimeUtil::MicrosecondsToTimestamp(us);
    l.set_service("greeter");
    l.set_instance(instance);
    l.set_release("v1");
    l.set_source(v1::SOURCE_APP);
    l.set_severity(v1::SEVERITY_INFO);
    l.set_message(fmt::format("{} line {}", instance, seq));
    l.set_seq(seq);
    l.set_stream_seq(seq + (instance == "i-1" ? 0 : 1000));
    s.redelivered = redelivered;
    return s;
  };
  auto batch = [&](const std::string& instance, uint64_t from, uint64_t to, bool redelivered) {
    std::vector<muon::logs::StoredLine> b;
    for (uint64_t seq = from; seq <= to; ++seq) b.push_back(line(instance, seq, redelivered));
    return b;
  };
  const std::string count = "SELECT count(*) FROM logs.lines";
  const std::string distinct = "SELECT count(DISTINCT (instance, seq)) FROM logs.lines";

  CHECK(store.Insert({}) == 0);
  CHECK(store.Insert(batch("i-1", 1, 5, false)) == 5);
  CHECK(sql.Int(count) == 5);

  // The same lines again, as JetStream redelivers them after a lost ack: nothing new.
  CHECK(store.Insert(batch("i-1", 1, 5, true)) == 0);
  CHECK(sql.Int(count) == 5);

  // A mixed batch: 1..5 redelivered (stored), 6..8 first deliveries, 9..10 redelivered but never
  // stored (the first attempt's transaction failed), 1..3 of another instance redelivered but
  // new to the store.
  auto mixed = batch("i-1", 1, 5, true);
  for (auto& s : batch("i-1", 6, 8, false)) mixed.push_back(s);
  for (auto& s : batch("i-1", 9, 10, true)) mixed.push_back(s);
  for (auto& s : batch("i-2", 1, 3, true)) mixed.push_back(s);
  CHECK(store.Insert(mixed) == 8);
  CHECK(sql.Int(count) == 13);
  CHECK(sql.Int(distinct) == 13);
  CHECK(sql.Int("SELECT count(*) FROM logs.lines WHERE instance = 'i-1'") == 10);
  CHECK(sql.Int("SELECT max(seq) FROM logs.lines WHERE instance = 'i-1'") == 10);

  // Once more, all redelivered: still 13.
  for (auto& s : mixed) s.redelivered = true;
  CHECK(store.Insert(mixed) == 0);
  CHECK(sql.Int(count) == 13);
  CHECK(sql.Int(distinct) == 13);

  // First deliveries that are stored already after all (however that came about): the COPY
  // meets the unique key and the batch is stored again with every line checked. Here 1..8 are
  // stored and 11..12 are new.
  auto late = batch("i-1", 1, 8, false);
  for (auto& s : batch("i-1", 11, 12, false)) late.push_back(s);
  CHECK(store.Insert(late) == 2);
  CHECK(sql.Int(count) == 15);
  CHECK(sql.Int(distinct) == 15);

  // Copies of one line inside one batch, one of them redelivered: stored once.
  auto twice = batch("i-3", 1, 2, false);
  for (auto& s : batch("i-3", 1, 2, true)) twice.push_back(s);
  CHECK(store.Insert(twice) == 2);
  CHECK(sql.Int(count) == 17);
  CHECK(sql.Int(distinct) == 17);

  // Two copies stored at the same moment by two workers, first delivery and redelivery in
  // either order, overlapping in both directions: whichever commits first wins, the other
  // skips (the case CI once caught storing 180 lines twice).
  for (int round = 0; round < 20; ++round) {
    const std::string instance = fmt::format("race-{}", round);
    std::vector<muon::logs::StoredLine> first = batch(instance, 1, 300, round % 2 == 0);
    std::vector<muon::logs::StoredLine> second = batch(instance, 150, 450, round % 3 == 0);
    std::reverse(second.begin(), second.end());
    size_t written_first = 0, written_second = 0;
    std::string error_first, error_second;
    auto insert = [&store](const auto& lines, size_t& written, std::string& error) {
      try {
        written = store.Insert(lines);
      } catch (const std::exception& e) {
        error = e.what();
      }
    };
    std::thread a([&] { insert(first, written_first, error_first); });
    std::thread b([&] { insert(second, written_second, error_second); });
    a.join();
    b.join();
    INFO("round " << round);
    CHECK(error_first == "");
    CHECK(error_second == "");
    CHECK(written_first + written_second == 450);
  }
  CHECK(sql.Int(count) == 17 + 20 * 450);
  CHECK(sql.Int(distinct) == 17 + 20 * 450);
}

TEST_CASE("retention drops whole days older than the retention and keeps today", "[logs]") {
  const std::string url = muon::testing::Postgres::Shared().CreateDatabase();
  muon::logs::PgStore store(url, 2);
  store.Migrate();
  Sql sql(url);
  const auto now = Clock::now();
  const auto day = 24h;
  // From 20 days ago through 4 days ahead.
  CHECK(store.EnsurePartitions(now - 20 * day, 25) == 25);
  CHECK(sql.TableExists(PartitionName(now - 20 * day)));
  CHECK_FALSE(sql.TableExists(PartitionName(now - 21 * day)));
  CHECK(sql.TableExists(PartitionName(now + 4 * day)));
  CHECK_FALSE(sql.TableExists(PartitionName(now + 5 * day)));
  // Upkeep for today creates nothing new: today .. today + 2 exist already.
  CHECK(store.EnsurePartitions(now, 3) == 0);

  auto line = [&](Clock::time_point t, const std::string& message, uint64_t seq) {
    muon::logs::StoredLine s;
    *s.line.mutable_time() = TimeUtil::MicrosecondsToTimestamp(Micros(t));
    s.line.set_service("greeter");
    s.line.set_instance("i-1");
    s.line.set_source(v1::SOURCE_APP);
    s.line.set_severity(v1::SEVERITY_INFO);
    s.line.set_message(message);
    s.line.set_seq(seq);
    s.line.set_stream_seq(seq);
    return s;
  };
  REQUIRE(store.Insert({line(now - 15 * day, "fifteen days old", 1),
                        line(now - 6 * day, "six days old", 2), line(now, "fresh", 3)}) == 3);
  REQUIRE(sql.Int("SELECT count(*) FROM logs.lines") == 3);

  // Days before (today - 7) go: today - 20 .. today - 8 are 13 partitions.
  CHECK(store.DropExpired(now, 7 * day) == 13);
  CHECK(sql.Int("SELECT count(*) FROM logs.lines WHERE message = 'fifteen days old'") == 0);
  CHECK(sql.Int("SELECT count(*) FROM logs.lines WHERE message = 'six days old'") == 1);
  CHECK(sql.Int("SELECT count(*) FROM logs.lines WHERE message = 'fresh'") == 1);
  CHECK_FALSE(sql.TableExists(PartitionName(now - 15 * day)));
  CHECK_FALSE(sql.TableExists(PartitionName(now - 8 * day)));
  CHECK(sql.TableExists(PartitionName(now - 7 * day)));
  CHECK(sql.TableExists(PartitionName(now)));
  CHECK(sql.TableExists(PartitionName(now + 4 * day)));
  CHECK(store.DropExpired(now, 7 * day) == 0);  // nothing left to drop

  // Queries over the dropped days simply find nothing.
  muon::logs::HistoryQuery q;
  q.since = now - 30 * day;
  q.until = now + 1h;
  q.limit = 100;
  const auto page = store.Query(q);
  REQUIRE(page.lines.size() == 2);
  CHECK(page.lines[0].message() == "fresh");
  CHECK(page.lines[1].message() == "six days old");
}

namespace {

// The real muon-logs binary with its output in a file.
struct LogsProcess {
  std::string database_url;
  std::string nats_url;
  std::string level;
  std::string output;
  muon::Process process;

  void Start() {
    muon::ProcessOptions o;
    o.program = muon::testing::BinDir() + "/muon-logs";
    o.env = {{"DATABASE_URL", database_url}, {"NATS_URL", nats_url}, {"MUON_LOG_LEVEL", level}};
    o.output_file = output;
    process = muon::Process(o);
  }
  // The end of the process's output, for failure messages.
  std::string Tail() const {
    const std::string all = ReadFile(output);
    return all.size() > 4000 ? all.substr(all.size() - 4000) : all;
  }
};

// REQUIRE with the muon-logs output in the failure message (INFO would capture it too early).
#define REQUIRE_WITH_OUTPUT(cond, logs)                                   \
  do {                                                                    \
    if (!(cond)) FAIL(#cond << "\nmuon-logs output:\n" << (logs).Tail()); \
  } while (false)

}  // namespace

TEST_CASE("muon-logs killed with -9 while 100,000 lines are in flight stores each exactly once",
          "[logs][kill]") {
  muon::testing::NatsServer nats;
  const std::string url = muon::testing::Postgres::Shared().CreateDatabase();
  muon::testing::TempDir dir("muon-test-logs");
  LogsProcess logs{url, nats.url(), "warn", dir.path() + "/muon-logs.log", {}};
  logs.Start();

  auto conn = Connect(nats.url(), "load");
  muon::bus::JetStream js(*conn);
  // The stream exists once muon-logs has started.
  uint64_t last = 0;
  REQUIRE_WITH_OUTPUT(WaitUntil([&] { return !js.LastSequence("LOGS", last); }, 20s), logs);

  constexpr int kInstances = 10;
  constexpr int kPerInstance = 10000;
  constexpr int64_t kTotal = int64_t(kInstances) * kPerInstance;
  std::vector<std::unique_ptr<muon::loglines::Shipper>> shippers;
  for (int i = 0; i < kInstances; ++i) {
    shippers.push_back(std::make_unique<muon::loglines::Shipper>(
        *conn, muon::loglines::ShipperOptions{.service = "load",
                                              .instance = fmt::format("i-{}", i),
                                              .release = "v1",
                                              .source = v1::SOURCE_APP}));
  }
  const auto started = std::chrono::steady_clock::now();
  for (int n = 1; n <= kPerInstance; ++n) {
    for (int i = 0; i < kInstances; ++i) {
      shippers[i]->Emit(
          v1::SEVERITY_INFO,
          fmt::format("load line {} of instance i-{}: the quick brown fox jumps", n, i));
    }
  }

  Sql sql(url);
  const std::string count = "SELECT count(*) FROM logs.lines WHERE service = 'load'";
  int64_t at_kill = 0;
  REQUIRE_WITH_OUTPUT(WaitUntil(
                          [&] {
                            at_kill = sql.Int(count);
                            return at_kill > 0;
                          },
                          30s, 5ms),
                      logs);
  logs.process.Signal(SIGKILL);
  const auto status = logs.process.Wait();
  CHECK(status.signal == SIGKILL);
  const int64_t after_kill = sql.Int(count);
  INFO("stored when killed: " << at_kill << ", after the kill: " << after_kill);
  REQUIRE(after_kill < kTotal);  // lines were still in flight

  logs.Start();
  for (auto& s : shippers) REQUIRE(s->Flush(60s));
  int64_t stored = 0;
  const bool all = WaitUntil(
      [&] {
        stored = sql.Int(count);
        return stored >= kTotal;
      },
      120s, 100ms);
  INFO("stored after restart: " << stored);
  REQUIRE_WITH_OUTPUT(all, logs);
  // Redeliveries of lines the killed process had stored but not acknowledged arrive until every
  // message is acknowledged: only then is the count final.
  uint64_t floor = 0;
  CHECK(WaitUntil(
      [&] {
        return !js.AckFloor("LOGS", "logs", floor) && !js.LastSequence("LOGS", last) &&
               floor == last;
      },
      60s, 100ms));
  const auto elapsed = std::chrono::steady_clock::now() - started;
  WARN("100,000 lines with a kill -9 in between: "
       << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() << " ms, "
       << at_kill << " stored at the kill");

  const auto totals = sql.Rows(
      "SELECT count(*), count(DISTINCT (instance, seq)) FROM logs.lines WHERE service = 'load'");
  // On a failure, show the lines stored more than once.
  for (const auto& row : sql.Rows(
           "SELECT instance, seq, stream_seq, ts::text, count(*) FROM logs.lines WHERE service = "
           "'load' GROUP BY 1, 2, 3, 4 HAVING count(*) > 1 LIMIT 5")) {
    UNSCOPED_INFO("stored twice: " << row[0].c_str() << " seq " << row[1].c_str() << " stream seq "
                                   << row[2].c_str() << " ts " << row[3].c_str());
  }
  CHECK(totals[0][0].as<int64_t>() == kTotal);
  CHECK(totals[0][1].as<int64_t>() == kTotal);
  const auto per_instance = sql.Rows(
      "SELECT instance, count(*), count(DISTINCT seq), min(seq), max(seq) FROM logs.lines "
      "WHERE service = 'load' GROUP BY instance ORDER BY instance");
  REQUIRE(per_instance.size() == kInstances);
  for (int i = 0; i < kInstances; ++i) {
    const auto& row = per_instance[i];
    INFO("instance " << row[0].c_str());
    CHECK(std::string(row[0].c_str()) == fmt::format("i-{}", i));
    CHECK(row[1].as<int64_t>() == kPerInstance);
    CHECK(row[2].as<int64_t>() == kPerInstance);
    CHECK(row[3].as<int64_t>() == 1);
    CHECK(row[4].as<int64_t>() == kPerInstance);
  }
  shippers.clear();
  CHECK(logs.process.Stop(10s).Success());
}

TEST_CASE("muon-logs stores its own logs as platform lines, and its last words after a restart",
          "[logs]") {
  muon::testing::NatsServer nats;
  const std::string url = muon::testing::Postgres::Shared().CreateDatabase();
  muon::testing::TempDir dir("muon-test-logs");
  LogsProcess logs{url, nats.url(), "info", dir.path() + "/muon-logs.log", {}};
  logs.Start();

  Sql sql(url);
  const std::string started =
      "SELECT instance FROM logs.lines WHERE service = 'logs' AND source = 4 AND severity = 2 "
      "AND release <> '' AND message LIKE 'service started%'";
  // Until muon-logs has migrated its schema, logs.lines does not exist.
  auto found = [&](size_t n) {
    try {
      return sql.Rows(started).size() == n;
    } catch (const pqxx::sql_error&) {
      return false;
    }
  };
  REQUIRE_WITH_OUTPUT(WaitUntil([&] { return found(1); }, 20s, 50ms), logs);
  const std::string first_instance = sql.Rows(started)[0][0].c_str();
  CHECK_FALSE(first_instance.empty());

  // SIGTERM: "stopped" is logged after the ingest stopped; it waits in the stream for the next
  // process.
  CHECK(logs.process.Stop(10s).Success());
  logs.Start();
  REQUIRE_WITH_OUTPUT(WaitUntil([&] { return found(2); }, 20s, 50ms), logs);
  CHECK(WaitUntil(
      [&] {
        return sql.Int(
                   "SELECT count(*) FROM logs.lines WHERE service = 'logs' AND source = 4 "
                   "AND message LIKE 'stopped%' AND instance = '" +
                   first_instance + "'") == 1;
      },
      20s, 50ms));
  CHECK(logs.process.Stop(10s).Success());
}

// ---- lines the ingest cannot store as they are ----

TEST_CASE("a line with a NUL byte does not block the lines around it", "[logs]") {
  LogsFixture f;
  std::vector<Sent> sent;
  Emitter e(*f.client, sent, {.service = "odd", .instance = "odd-1"});
  const auto now = Clock::now();
  e.Emit(v1::SEVERITY_INFO, "before the nul", now);
  e.Emit(v1::SEVERITY_INFO, std::string("nul\0inside", 10), now + 1ms);
  e.Emit(v1::SEVERITY_INFO, "after the nul", now + 2ms);
  REQUIRE(e.Flush());
  const bool stored = WaitUntil([&] { return f.CountGrep("the nul") == 2; }, 5s, 50ms);
  INFO("ingest failures: " << f.app->stats().failures.load()
                           << ", rejected: " << f.app->stats().rejected.load());
  CHECK(stored);
  CHECK(f.CountGrep("inside") == 1);  // stored in some form (NUL dropped or replaced)
}

TEST_CASE("a line older than the partitions but within the retention does not block ingest",
          "[logs]") {
  LogsFixture f;
  std::vector<Sent> sent;
  Emitter e(*f.client, sent, {.service = "late", .instance = "late-1"});
  const auto now = Clock::now();
  e.Emit(v1::SEVERITY_INFO, "fresh line one", now);
  e.Emit(v1::SEVERITY_INFO, "three days old line", now - 72h);
  e.Emit(v1::SEVERITY_INFO, "fresh line two", now + 1ms);
  REQUIRE(e.Flush());
  const bool stored = WaitUntil([&] { return f.CountGrep("fresh line") == 2; }, 5s, 50ms);
  INFO("ingest failures: " << f.app->stats().failures.load()
                           << ", rejected: " << f.app->stats().rejected.load());
  CHECK(stored);
  // Within the retention (7 days): it should be stored, not dropped.
  CHECK(f.CountGrep("three days old", "7d") == 1);
}

TEST_CASE("a line that is not valid UTF-8 is stored, not silently dropped", "[logs]") {
  LogsFixture f;
  std::vector<Sent> sent;
  Emitter e(*f.client, sent, {.service = "latin", .instance = "latin-1"});
  const auto now = Clock::now();
  e.Emit(v1::SEVERITY_INFO, "latin1 caf\xE9 au lait", now);
  e.Emit(v1::SEVERITY_INFO, "plain ascii marker", now + 1ms);
  REQUIRE(e.Flush());
  REQUIRE(WaitUntil([&] { return f.CountGrep("plain ascii marker") == 1; }, 5s, 50ms));
  INFO("rejected: " << f.app->stats().rejected.load());
  CHECK(WaitUntil([&] { return f.CountGrep("latin1 caf") == 1; }, 2s, 50ms));
}

TEST_CASE(
    "the shipper batches a busy emitter's lines and sends a quiet one's at once; a retry "
    "is stored once",
    "[logs][shipper]") {
  muon::testing::NatsServer nats;
  auto conn = Connect(nats.url(), "shipper");
  muon::bus::JetStream js(*conn);
  // No stream yet: the first publishes fail and are retried once it exists.
  muon::loglines::Shipper shipper(*conn, {.service = "batch", .instance = "i-1"});
  shipper.Emit(v1::SEVERITY_INFO, "before the stream");
  std::this_thread::sleep_for(300ms);  // the publish fails for want of a stream meanwhile
  REQUIRE_FALSE(js.EnsureStream(muon::loglines::StreamConfig(24h, int64_t(64) << 20)));
  REQUIRE(shipper.Flush(10s));

  constexpr int kBurst = 2500;
  for (int i = 0; i < kBurst; ++i) {
    shipper.Emit(v1::SEVERITY_INFO, fmt::format("burst line {} {}", i, std::string(100, 'x')));
  }
  REQUIRE(shipper.Flush(10s));
  uint64_t after_burst = 0;
  REQUIRE_FALSE(js.LastSequence("LOGS", after_burst));
  // After a quiet spell, one line is a message of its own, sent without lingering.
  std::this_thread::sleep_for(100ms);  // the quiet spell itself, longer than the 20 ms linger
  shipper.Emit(v1::SEVERITY_INFO, "after a quiet spell");
  REQUIRE(shipper.Flush(10s));

  muon::bus::PullConsumer consumer;
  REQUIRE_FALSE(js.PullSubscribe("LOGS", {.durable = "check"}, consumer));
  std::vector<v1::LogBatch> messages;
  while (true) {
    std::vector<muon::bus::Msg> fetched;
    if (consumer.Fetch(1000, 500ms, fetched) == muon::bus::BusErrc::kTimeout) break;
    for (const auto& m : fetched) {
      CHECK(m.data().size() <= muon::loglines::kMaxBatchBytes);
      REQUIRE(messages.emplace_back().ParseFromArray(m.data().data(), int(m.data().size())));
    }
  }
  REQUIRE(messages.size() >= 4);  // the lone retried line, >= 2 for the burst, the quiet line
  CHECK(messages.size() == after_burst + 1);
  // The burst took a few messages, none over the limits; every line once, in seq order.
  CHECK(messages.size() < 50);
  uint64_t expected_seq = 1;
  for (const auto& batch : messages) {
    CHECK(batch.lines_size() >= 1);
    CHECK(static_cast<size_t>(batch.lines_size()) <= muon::loglines::kMaxLinesPerBatch);
    for (const auto& line : batch.lines()) CHECK(line.seq() == expected_seq++);
  }
  CHECK(expected_seq == kBurst + 3);
  CHECK(messages.front().lines(0).message() == "before the stream");
  REQUIRE(messages.back().lines_size() == 1);
  CHECK(messages.back().lines(0).message() == "after a quiet spell");
}
