// The logs service's query resolution (services/logs): defaults, durations and RFC 3339 times,
// limits, filters and cursors; every refusal is a muon::Error 400.

#include <google/protobuf/util/time_util.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <limits>
#include <string>

#include "logs_service.h"
#include "muon/common/errors.h"
#include "store.h"

using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;
using muon::logs::DecodeCursor;
using muon::logs::EncodeCursor;
using muon::logs::HistoryQuery;
using muon::logs::ResolveQuery;
namespace v1 = muon::logs::v1;

namespace {

// 2024-05-01T12:00:00Z
const Clock::time_point kNow = Clock::time_point(std::chrono::seconds(1714564800));

Clock::time_point Rfc3339(const std::string& text) {
  google::protobuf::Timestamp ts;
  REQUIRE(google::protobuf::util::TimeUtil::FromString(text, &ts));
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::seconds(ts.seconds()) + std::chrono::nanoseconds(ts.nanos())));
}

// The muon::Error code `fn` throws; 0 when it throws nothing (other exceptions propagate).
int CodeOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const muon::Error& e) {
    INFO(e.detail());
    return e.code();
  }
  return 0;
}

int Resolve400(const v1::QueryRequest& request) {
  return CodeOf([&] { ResolveQuery(request, kNow); });
}

v1::QueryRequest Since(const std::string& since, const std::string& until = "") {
  v1::QueryRequest r;
  r.set_since(since);
  r.set_until(until);
  return r;
}

}  // namespace

TEST_CASE("ResolveQuery defaults: the last 24 hours, 100 lines, newest first", "[logs]") {
  v1::QueryRequest request;
  request.mutable_filter()->set_service("greeter");
  request.mutable_filter()->set_grep("Timeout");
  const HistoryQuery q = ResolveQuery(request, kNow);
  CHECK(q.since == kNow - 24h);
  // Empty until is "now"; the service allows emitters' clocks to run a few minutes ahead.
  CHECK(q.until >= kNow);
  CHECK(q.until <= kNow + 5min);
  CHECK(q.limit == 100);
  CHECK_FALSE(q.oldest_first);
  CHECK_FALSE(q.after);
  CHECK(q.filter.service() == "greeter");
  CHECK(q.filter.grep() == "Timeout");
}

TEST_CASE("ResolveQuery: since and until as durations back from now", "[logs]") {
  CHECK(ResolveQuery(Since("90s"), kNow).since == kNow - 90s);
  CHECK(ResolveQuery(Since("15m"), kNow).since == kNow - 15min);
  CHECK(ResolveQuery(Since("2h"), kNow).since == kNow - 2h);
  CHECK(ResolveQuery(Since("7d"), kNow).since == kNow - 7 * 24h);
  CHECK(ResolveQuery(Since("1h30m"), kNow).since == kNow - 90min);
  const auto q = ResolveQuery(Since("3h", "1h"), kNow);
  CHECK(q.since == kNow - 3h);
  CHECK(q.until == kNow - 1h);
}

TEST_CASE("ResolveQuery: since and until as RFC 3339 times", "[logs]") {
  const auto q = ResolveQuery(Since("2024-05-01T10:30:00Z", "2024-05-01T11:00:00.250Z"), kNow);
  CHECK(q.since == Rfc3339("2024-05-01T10:30:00Z"));
  CHECK(q.until == Rfc3339("2024-05-01T11:00:00Z") + 250ms);
  // An offset is honoured.
  CHECK(ResolveQuery(Since("2024-05-01T12:30:00+02:00"), kNow).since ==
        Rfc3339("2024-05-01T10:30:00Z"));
  // Mixed: an absolute since, a relative until.
  const auto mixed = ResolveQuery(Since("2024-04-30T00:00:00Z", "1h"), kNow);
  CHECK(mixed.since == Rfc3339("2024-04-30T00:00:00Z"));
  CHECK(mixed.until == kNow - 1h);
}

TEST_CASE("ResolveQuery refuses times it cannot read and empty windows with 400", "[logs]") {
  for (const char* bad :
       {"yesterday", "-5m", "5", "2h ago", "2024-05-01", "2024-13-01T00:00:00Z", "10:00", " 2h"}) {
    INFO(bad);
    CHECK(Resolve400(Since(bad)) == 400);
    CHECK(Resolve400(Since("", bad)) == 400);
  }
  // until <= since
  CHECK(Resolve400(Since("1h", "2h")) == 400);
  CHECK(Resolve400(Since("2h", "2h")) == 400);
  CHECK(Resolve400(Since("2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z")) == 400);
  CHECK(Resolve400(Since("2024-05-01T10:00:00Z", "2024-05-01T09:59:59Z")) == 400);
  // A since in the future with the default until (now + a few minutes).
  CHECK(Resolve400(Since("2024-05-02T00:00:00Z")) == 400);
  CHECK(Resolve400(Since("2h", "1h")) == 0);
}

TEST_CASE("ResolveQuery: limit 1..10000, 0 means 100", "[logs]") {
  v1::QueryRequest r;
  r.set_limit(1);
  CHECK(ResolveQuery(r, kNow).limit == 1);
  r.set_limit(10000);
  CHECK(ResolveQuery(r, kNow).limit == 10000);
  r.set_limit(0);
  CHECK(ResolveQuery(r, kNow).limit == 100);
  r.set_limit(10001);
  CHECK(Resolve400(r) == 400);
  r.set_limit(-1);
  CHECK(Resolve400(r) == 400);
  r.set_limit(std::numeric_limits<int32_t>::min());
  CHECK(Resolve400(r) == 400);
  r.set_limit(7);
  r.set_oldest_first(true);
  const auto q = ResolveQuery(r, kNow);
  CHECK(q.limit == 7);
  CHECK(q.oldest_first);
}

TEST_CASE("ResolveQuery validates the filter", "[logs]") {
  auto with = [](const std::function<void(v1::Filter&)>& set) {
    v1::QueryRequest r;
    set(*r.mutable_filter());
    return Resolve400(r);
  };
  CHECK(with([](v1::Filter& f) { f.set_service("greeter-2_b"); }) == 0);
  CHECK(with([](v1::Filter& f) { f.set_service("bad service"); }) == 400);
  CHECK(with([](v1::Filter& f) { f.set_service("a.b"); }) == 400);
  CHECK(with([](v1::Filter& f) { f.set_service("*"); }) == 400);
  CHECK(with([](v1::Filter& f) { f.set_service(">"); }) == 400);
  CHECK(with([](v1::Filter& f) { f.set_service(std::string(129, 's')); }) == 400);
  CHECK(with([](v1::Filter& f) { f.set_instance("i-3"); }) == 0);
  CHECK(with([](v1::Filter& f) { f.set_instance("i.3"); }) == 400);
  CHECK(with([](v1::Filter& f) { f.set_instance("i 3"); }) == 400);
  // The release is a value, not a subject token; grep is any text up to 1 KiB.
  CHECK(with([](v1::Filter& f) { f.set_grep(std::string(1024, 'g')); }) == 0);
  CHECK(with([](v1::Filter& f) { f.set_grep(std::string(1025, 'g')); }) == 400);
  CHECK(with([](v1::Filter& f) { f.set_grep("100% of a_b"); }) == 0);
  CHECK(with([](v1::Filter& f) { f.set_source(v1::SOURCE_PLATFORM); }) == 0);
  CHECK(with([](v1::Filter& f) { f.set_source(static_cast<v1::Source>(9)); }) == 400);
  CHECK(with([](v1::Filter& f) { f.set_min_severity(v1::SEVERITY_FATAL); }) == 0);
  CHECK(with([](v1::Filter& f) { f.set_min_severity(static_cast<v1::Severity>(6)); }) == 400);
  CHECK(with([](v1::Filter& f) { f.set_min_severity(static_cast<v1::Severity>(-1)); }) == 400);
}

TEST_CASE("ResolveQuery decodes the cursor or refuses it with 400", "[logs]") {
  const HistoryQuery::Cursor cursor{1714564800123456, "i-3", 42};
  v1::QueryRequest r;
  r.set_cursor(EncodeCursor(cursor));
  const auto q = ResolveQuery(r, kNow);
  REQUIRE(q.after);
  CHECK(q.after->ts_us == cursor.ts_us);
  CHECK(q.after->instance == "i-3");
  CHECK(q.after->seq == 42);

  for (const char* bad :
       {"garbage", "1.2", "1.2.", "x.2.i-3", "1.y.i-3", "..i-3", ".2.i-3", "1..i-3", "1 .2.i-3"}) {
    INFO(bad);
    r.set_cursor(bad);
    CHECK(Resolve400(r) == 400);
  }
}

TEST_CASE("EncodeCursor and DecodeCursor round trip", "[logs]") {
  for (const HistoryQuery::Cursor& c : {
           HistoryQuery::Cursor{1714564800123456, "i-3", 42},
           HistoryQuery::Cursor{0, "a", 1},
           HistoryQuery::Cursor{1, "Build_0123-abc", 9223372036854775807},
           HistoryQuery::Cursor{1714564800000000, std::string(128, 'x'), 10000},
       }) {
    const std::string text = EncodeCursor(c);
    INFO(text);
    const auto back = DecodeCursor(text);
    REQUIRE(back);
    CHECK(back->ts_us == c.ts_us);
    CHECK(back->instance == c.instance);
    CHECK(back->seq == c.seq);
  }
  CHECK_FALSE(DecodeCursor(""));
  CHECK_FALSE(DecodeCursor("1.2."));
  CHECK_FALSE(DecodeCursor("1.2." + std::string(129, 'x')));
  CHECK_FALSE(DecodeCursor("99999999999999999999.2.i-3"));  // out of range
}

TEST_CASE("ResolveQuery: RFC 3339 times far from now do not overflow", "[logs]") {
  int code = CodeOf([&] { ResolveQuery(Since("1h", "3000-01-01T00:00:00Z"), kNow); });
  CHECK(code == 0);
  if (code == 0) {
    const auto q = ResolveQuery(Since("1h", "3000-01-01T00:00:00Z"), kNow);
    CHECK(q.until > kNow);
  }
  // Far in the past: either accepted as a very early since, or a clear 400; never a wrapped time
  // that lands after now.
  code = CodeOf([&] {
    const auto q = ResolveQuery(Since("1000-01-01T00:00:00Z"), kNow);
    CHECK(q.since < kNow - 24h);
  });
  CHECK((code == 0 || code == 400));
}
