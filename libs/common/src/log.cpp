#include "muon/common/log.h"

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <iterator>
#include <mutex>

#include "muon/common/json_writer.h"

namespace muon::log {
namespace {

using SinkList = std::vector<std::shared_ptr<Sink>>;

// Constant-initialized, so logging from other static initializers sees a valid level.
constinit std::atomic<int> g_level{static_cast<int>(Level::kInfo)};

struct State {
  std::mutex mu;
  std::string component;
  // Copy-on-write: a writer takes a reference under the lock and calls the sinks without it, so
  // a slow sink never blocks AddSink/RemoveSink or other threads' logging.
  std::shared_ptr<const SinkList> sinks = std::make_shared<const SinkList>();
};

State& GetState() {
  static State state;
  return state;
}

// Set while this thread runs the extra sinks: a sink that logs (say, its own publish failure)
// must not feed that line back into itself.
thread_local bool t_in_sinks = false;

bool IsControl(unsigned char c) {
  return c < 0x20 || c == 0x7f;
}

bool NeedsQuotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || IsControl(static_cast<unsigned char>(c))) return true;
  }
  return false;
}

// logfmt quotes values the way JSON quotes strings.
void AppendQuoted(std::string& out, std::string_view v) {
  AppendJsonString(out, v);
}

void AppendValue(std::string& out, std::string_view v) {
  if (NeedsQuotes(v)) {
    AppendQuoted(out, v);
  } else {
    out += v;
  }
}

// Keys are chosen by programmers, but a bad one would make the whole line unparseable, so
// characters that would break key=value splitting are replaced.
void AppendKey(std::string& out, std::string_view k) {
  if (k.empty()) {
    out += '_';
    return;
  }
  for (char c : k) {
    const bool bad = c == ' ' || c == '"' || c == '=' || IsControl(static_cast<unsigned char>(c));
    out += bad ? '_' : c;
  }
}

void AppendTime(std::string& out, std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto ms = floor<milliseconds>(t);
  const auto day = floor<days>(ms);
  const year_month_day ymd{day};
  const hh_mm_ss hms{ms - day};
  fmt::format_to(std::back_inserter(out), "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                 static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                 static_cast<unsigned>(ymd.day()), hms.hours().count(), hms.minutes().count(),
                 hms.seconds().count(), hms.subseconds().count());
}

void WriteStderr(std::string_view line) {
  // The whole line goes out in one write(): lines up to PIPE_BUF are then never interleaved with
  // other threads' or processes' output. The loop only matters for short writes and EINTR.
  while (!line.empty()) {
    const ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere left to report it
    }
    line.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace

std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "unknown";
}

std::optional<Level> ParseLevel(std::string_view text) {
  std::string lower(text);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "debug") return Level::kDebug;
  if (lower == "info") return Level::kInfo;
  if (lower == "warn" || lower == "warning") return Level::kWarn;
  if (lower == "error") return Level::kError;
  return std::nullopt;
}

void SetLevel(Level level) {
  g_level.store(static_cast<int>(level), std::memory_order_relaxed);
}

Level GetLevel() {
  return static_cast<Level>(g_level.load(std::memory_order_relaxed));
}

void SetComponent(std::string component) {
  State& s = GetState();
  std::lock_guard lock(s.mu);
  s.component = std::move(component);
}

void AddSink(std::shared_ptr<Sink> sink) {
  if (!sink) return;
  State& s = GetState();
  std::lock_guard lock(s.mu);
  auto next = std::make_shared<SinkList>(*s.sinks);
  next->push_back(std::move(sink));
  s.sinks = std::move(next);
}

void RemoveSink(const std::shared_ptr<Sink>& sink) {
  State& s = GetState();
  std::lock_guard lock(s.mu);
  auto next = std::make_shared<SinkList>();
  for (const auto& existing : *s.sinks) {
    if (existing != sink) next->push_back(existing);
  }
  s.sinks = std::move(next);
}

namespace {
void AppendFields(std::string& out, const std::vector<Field>& fields) {
  for (const Field& f : fields) {
    out += ' ';
    AppendKey(out, f.key);
    out += '=';
    AppendValue(out, f.value);
  }
}
}  // namespace

std::string Format(const Record& record) {
  std::string out;
  out.reserve(64 + record.component.size() + record.message.size() + 24 * record.fields.size());
  out += "ts=";
  AppendTime(out, record.time);
  out += " level=";
  out += LevelName(record.level);
  if (!record.component.empty()) {
    out += " svc=";
    AppendValue(out, record.component);
  }
  // msg is always quoted so that it reads the same whether or not it has spaces.
  out += " msg=";
  AppendQuoted(out, record.message);
  AppendFields(out, record.fields);
  return out;
}

std::string FormatMessage(const Record& record) {
  std::string out = record.message;
  AppendFields(out, record.fields);
  return out;
}

void Write(Level level, std::string_view message, std::initializer_list<Field> fields) {
  if (!Enabled(level)) return;
  Record record{std::chrono::system_clock::now(),
                level,
                {},
                std::string(message),
                std::vector<Field>(fields)};
  std::shared_ptr<const SinkList> sinks;
  {
    State& s = GetState();
    std::lock_guard lock(s.mu);
    record.component = s.component;
    sinks = s.sinks;
  }

  std::string line = Format(record);
  line += '\n';
  WriteStderr(line);

  if (t_in_sinks || sinks->empty()) return;
  t_in_sinks = true;
  for (const auto& sink : *sinks) {
    // Logging must never throw into the caller; stderr already has the line.
    try {
      sink->Write(record);
    } catch (...) {
    }
  }
  t_in_sinks = false;
}

}  // namespace muon::log
