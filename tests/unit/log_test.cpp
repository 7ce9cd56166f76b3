#include "muon/common/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace mlog = muon::log;
using namespace std::chrono_literals;

namespace {

// Points fd 2 at a temporary file for the lifetime of the object, so tests can check exactly
// what the default sink wrote (and keep the test output clean).
class StderrCapture {
 public:
  StderrCapture() {
    char path[] = "/tmp/muon_log_test_XXXXXX";
    file_fd_ = ::mkstemp(path);
    REQUIRE(file_fd_ >= 0);
    ::unlink(path);
    saved_fd_ = ::dup(STDERR_FILENO);
    REQUIRE(saved_fd_ >= 0);
    REQUIRE(::dup2(file_fd_, STDERR_FILENO) >= 0);
  }
  ~StderrCapture() { Restore(); }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;

  std::string Finish() {
    Restore();
    std::string out;
    char buf[4096];
    ::lseek(file_fd_, 0, SEEK_SET);
    for (ssize_t n; (n = ::read(file_fd_, buf, sizeof buf)) > 0;) {
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

 private:
  void Restore() {
    if (saved_fd_ >= 0) {
      ::dup2(saved_fd_, STDERR_FILENO);
      ::close(saved_fd_);
      saved_fd_ = -1;
    }
  }
  int file_fd_ = -1;
  int saved_fd_ = -1;
};

class CaptureSink : public mlog::Sink {
 public:
  void Write(const mlog::Record& record) override {
    std::lock_guard lock(mu_);
    records_.push_back(record);
  }
  std::vector<mlog::Record> records() {
    std::lock_guard lock(mu_);
    return records_;
  }

 private:
  std::mutex mu_;
  std::vector<mlog::Record> records_;
};

// Restores the process-wide logger settings a test changes.
struct LoggerReset {
  ~LoggerReset() {
    mlog::SetLevel(mlog::Level::kInfo);
    mlog::SetComponent("");
  }
};

mlog::Record MakeRecord(std::string component, std::string message,
                        std::vector<mlog::Field> fields) {
  using namespace std::chrono;
  mlog::Record r;
  r.time = sys_days{year{2026} / 11 / 22} + 5h + 123ms + 999us;  // sub-ms digits are truncated
  r.level = mlog::Level::kInfo;
  r.component = std::move(component);
  r.message = std::move(message);
  r.fields = std::move(fields);
  return r;
}

std::string FormatValue(std::string value) {
  const std::string line = mlog::Format(MakeRecord("", "m", {{"k", std::move(value)}}));
  const std::string prefix = "ts=2026-11-22T05:00:00.123Z level=info msg=\"m\" k=";
  REQUIRE(line.substr(0, prefix.size()) == prefix);
  return line.substr(prefix.size());
}

}  // namespace

TEST_CASE("log lines are logfmt with an RFC 3339 timestamp", "[log]") {
  CHECK(mlog::Format(MakeRecord("echo", "nats reconnected",
                                {{"url", "nats://127.0.0.1:4222"}, {"attempt", 3}})) ==
        "ts=2026-11-22T05:00:00.123Z level=info svc=echo msg=\"nats reconnected\" "
        "url=nats://127.0.0.1:4222 attempt=3");
  // No svc= at all when no component is set.
  CHECK(mlog::Format(MakeRecord("", "ready", {})) ==
        "ts=2026-11-22T05:00:00.123Z level=info msg=\"ready\"");

  mlog::Record r = MakeRecord("", "x", {});
  r.level = mlog::Level::kError;
  r.time = std::chrono::system_clock::time_point{} - 1ms;
  CHECK(mlog::Format(r) == "ts=1969-12-31T23:59:59.999Z level=error msg=\"x\"");
  r.time = std::chrono::sys_days{std::chrono::year{2000} / 2 / 29} + 23h + 59min + 59s + 7ms;
  r.level = mlog::Level::kWarn;
  CHECK(mlog::Format(r) == "ts=2000-02-29T23:59:59.007Z level=warn msg=\"x\"");
}

TEST_CASE("values are quoted and escaped only when needed", "[log]") {
  CHECK(FormatValue("plain") == "plain");
  CHECK(FormatValue("C:\\dir") == "C:\\dir");  // a lone backslash does not force quoting
  CHECK(FormatValue("") == "\"\"");
  CHECK(FormatValue("two words") == "\"two words\"");
  CHECK(FormatValue("a=b") == "\"a=b\"");
  CHECK(FormatValue("say \"hi\"") == "\"say \\\"hi\\\"\"");
  CHECK(FormatValue("C:\\my dir") == "\"C:\\\\my dir\"");
  CHECK(FormatValue("l1\nl2") == "\"l1\\nl2\"");
  CHECK(FormatValue("a\rb") == "\"a\\rb\"");
  CHECK(FormatValue("a\tb") == "\"a\\tb\"");
  CHECK(FormatValue(std::string("nul\0", 4)) == "\"nul\\u0000\"");
  CHECK(FormatValue("\x1b[31m") == "\"\\u001b[31m\"");
  CHECK(FormatValue("del\x7f") == "\"del\\u007f\"");
  CHECK(FormatValue("caf\xC3\xA9") == "caf\xC3\xA9");  // UTF-8 passes through

  // The message is always quoted and escaped the same way.
  CHECK(mlog::Format(MakeRecord("", "bad \"input\"\n", {})) ==
        "ts=2026-11-22T05:00:00.123Z level=info msg=\"bad \\\"input\\\"\\n\"");
  // A component with a space is quoted too.
  CHECK(mlog::Format(MakeRecord("my svc", "m", {})) ==
        "ts=2026-11-22T05:00:00.123Z level=info svc=\"my svc\" msg=\"m\"");
  // Keys that would break key=value parsing are repaired rather than emitted as-is.
  CHECK(mlog::Format(MakeRecord("", "m", {{"a key=", 1}, {"", 2}})) ==
        "ts=2026-11-22T05:00:00.123Z level=info msg=\"m\" a_key_=1 _=2");
}

TEST_CASE("fields format common types", "[log]") {
  const std::string s = "str";
  const std::string_view sv = "view";
  const mlog::Field fields[] = {{"b", true}, {"f", false},      {"i", -42}, {"u", 7u},
                                {"d", 0.25}, {"s", s},          {"sv", sv}, {"c", "lit"},
                                {"ch", 'x'}, {"big", 1LL << 40}};
  const char* want[][2] = {
      {"b", "true"}, {"f", "false"}, {"i", "-42"}, {"u", "7"},  {"d", "0.25"},
      {"s", "str"},  {"sv", "view"}, {"c", "lit"}, {"ch", "x"}, {"big", "1099511627776"}};
  for (size_t i = 0; i < std::size(fields); ++i) {
    CHECK(fields[i].key == want[i][0]);
    CHECK(fields[i].value == want[i][1]);
  }
}

TEST_CASE("level names", "[log]") {
  CHECK(mlog::LevelName(mlog::Level::kDebug) == "debug");
  CHECK(mlog::LevelName(mlog::Level::kInfo) == "info");
  CHECK(mlog::LevelName(mlog::Level::kWarn) == "warn");
  CHECK(mlog::LevelName(mlog::Level::kError) == "error");
  CHECK(mlog::ParseLevel("DEBUG") == mlog::Level::kDebug);
  CHECK(mlog::ParseLevel("Info") == mlog::Level::kInfo);
  CHECK(mlog::ParseLevel("warn") == mlog::Level::kWarn);
  CHECK(mlog::ParseLevel("warning") == mlog::Level::kWarn);
  CHECK(mlog::ParseLevel("error") == mlog::Level::kError);
  CHECK_FALSE(mlog::ParseLevel("fatal").has_value());
  CHECK_FALSE(mlog::ParseLevel("").has_value());
  CHECK_FALSE(mlog::ParseLevel(" info").has_value());
}

TEST_CASE("the default level is info and filtering applies to stderr and sinks", "[log]") {
  LoggerReset reset;
  CHECK(mlog::GetLevel() == mlog::Level::kInfo);
  auto sink = std::make_shared<CaptureSink>();
  mlog::AddSink(sink);

  StderrCapture capture;
  mlog::Debug("hidden at info");
  mlog::Info("shown at info");
  mlog::SetLevel(mlog::Level::kWarn);
  CHECK_FALSE(mlog::Enabled(mlog::Level::kInfo));
  mlog::Info("hidden at warn");
  mlog::Write(mlog::Level::kDebug, "hidden even when written directly");
  mlog::Warn("shown at warn");
  mlog::Error("error at warn");
  mlog::SetLevel(mlog::Level::kDebug);
  mlog::Debug("shown at debug");
  const std::string out = capture.Finish();
  mlog::RemoveSink(sink);

  std::vector<std::string> messages;
  for (const auto& r : sink->records()) messages.push_back(r.message);
  CHECK(messages == std::vector<std::string>{"shown at info", "shown at warn", "error at warn",
                                             "shown at debug"});
  CHECK(out.find("hidden") == std::string::npos);
  CHECK(out.find("level=info msg=\"shown at info\"\n") != std::string::npos);
  CHECK(out.find("level=warn msg=\"shown at warn\"\n") != std::string::npos);
  CHECK(out.find("level=error msg=\"error at warn\"\n") != std::string::npos);
  CHECK(out.find("level=debug msg=\"shown at debug\"\n") != std::string::npos);
}

TEST_CASE("sinks receive the record and stderr gets the formatted line", "[log]") {
  LoggerReset reset;
  mlog::SetComponent("echo");
  auto sink = std::make_shared<CaptureSink>();
  mlog::AddSink(sink);

  StderrCapture capture;
  const auto before = std::chrono::system_clock::now();
  mlog::Info("nats reconnected", {{"url", "nats://x:4222"}, {"attempt", 3}});
  const auto after = std::chrono::system_clock::now();
  mlog::RemoveSink(sink);
  mlog::Info("after removal");
  const std::string out = capture.Finish();

  const auto records = sink->records();
  REQUIRE(records.size() == 1);
  const mlog::Record& r = records[0];
  CHECK(r.level == mlog::Level::kInfo);
  CHECK(r.component == "echo");
  CHECK(r.message == "nats reconnected");
  REQUIRE(r.fields.size() == 2);
  CHECK(r.fields[0].key == "url");
  CHECK(r.fields[0].value == "nats://x:4222");
  CHECK(r.fields[1].key == "attempt");
  CHECK(r.fields[1].value == "3");
  CHECK(r.time >= before);
  CHECK(r.time <= after);

  // Exactly two lines, each the Format() of its record plus a newline.
  const std::string first = mlog::Format(r) + "\n";
  REQUIRE(out.size() > first.size());
  CHECK(out.substr(0, first.size()) == first);
  const std::string second = out.substr(first.size());
  CHECK(second.find("level=info svc=echo msg=\"after removal\"\n") != std::string::npos);
  CHECK(second.find('\n') == second.size() - 1);
}

TEST_CASE("a throwing or re-logging sink cannot break the caller", "[log]") {
  struct Throwing : mlog::Sink {
    void Write(const mlog::Record&) override { throw std::runtime_error("sink down"); }
  };
  struct Relogging : mlog::Sink {
    int calls = 0;
    void Write(const mlog::Record&) override {
      ++calls;
      mlog::Warn("sink failed to publish");
    }
  };
  LoggerReset reset;
  auto throwing = std::make_shared<Throwing>();
  auto relogging = std::make_shared<Relogging>();
  mlog::AddSink(throwing);
  mlog::AddSink(relogging);
  StderrCapture capture;
  CHECK_NOTHROW(mlog::Info("hello"));
  const std::string out = capture.Finish();
  mlog::RemoveSink(throwing);
  mlog::RemoveSink(relogging);

  CHECK(relogging->calls == 1);
  // The sink's own line still reaches stderr; it just is not fed back to the sinks.
  CHECK(out.find("msg=\"hello\"") != std::string::npos);
  CHECK(out.find("msg=\"sink failed to publish\"") != std::string::npos);
}

TEST_CASE("concurrent writers never interleave lines", "[log]") {
  LoggerReset reset;
  auto sink = std::make_shared<CaptureSink>();
  mlog::AddSink(sink);
  constexpr int kThreads = 4;
  constexpr int kLines = 250;
  const std::string padding(200, 'p');
  StderrCapture capture;
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([t, &padding] {
        for (int i = 0; i < kLines; ++i) mlog::Info("tick", {{"thread", t}, {"pad", padding}});
      });
    }
  }
  const std::string out = capture.Finish();
  mlog::RemoveSink(sink);

  CHECK(sink->records().size() == static_cast<size_t>(kThreads * kLines));
  int lines = 0;
  size_t start = 0;
  while (start < out.size()) {
    const size_t end = out.find('\n', start);
    REQUIRE(end != std::string::npos);
    const std::string line = out.substr(start, end - start);
    CHECK(line.rfind("ts=", 0) == 0);
    CHECK(line.find(" pad=" + padding) == line.size() - padding.size() - 5);
    ++lines;
    start = end + 1;
  }
  CHECK(lines == kThreads * kLines);
}
