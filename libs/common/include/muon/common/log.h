#pragma once
// Structured logging: one line per event, logfmt-style key=value pairs, level filter.
//   muon::log::Info("nats reconnected", {{"url", url}, {"attempt", 3}});
// prints
//   ts=2026-11-22T05:00:00.123Z level=info svc=echo msg="nats reconnected" url=nats://... attempt=3
// Extra sinks (e.g. publishing to the log stream on the bus) can be added with AddSink.

#include <fmt/format.h>

#include <chrono>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace muon::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

std::string_view LevelName(Level level);  // "debug", "info", "warn", "error"
// Accepts the names above (case-insensitive) and "warning"; nullopt for anything else.
std::optional<Level> ParseLevel(std::string_view text);

struct Field {
  template <typename T>
  Field(std::string_view k, const T& v) : key(k), value(fmt::format("{}", v)) {}
  Field(std::string_view k, std::string v) : key(k), value(std::move(v)) {}
  Field(std::string_view k, const char* v) : key(k), value(v) {}
  std::string key;
  std::string value;
};

struct Record {
  std::chrono::system_clock::time_point time;
  Level level;
  std::string component;
  std::string message;
  std::vector<Field> fields;
};

class Sink {
 public:
  virtual ~Sink() = default;
  virtual void Write(const Record& record) = 0;
};

// Process-wide settings; safe to call from any thread.
void SetLevel(Level level);
Level GetLevel();
void SetComponent(std::string component);  // the svc= field, usually the service name
void AddSink(std::shared_ptr<Sink> sink);
void RemoveSink(const std::shared_ptr<Sink>& sink);

// Renders a record as one logfmt line without a trailing newline (exposed for tests).
std::string Format(const Record& record);
// The message followed by the fields as key=value pairs (no time, level or component): what the
// log stream carries, since those travel as fields of the line there.
std::string FormatMessage(const Record& record);

void Write(Level level, std::string_view message, std::initializer_list<Field> fields = {});

inline bool Enabled(Level level) { return level >= GetLevel(); }
inline void Debug(std::string_view m, std::initializer_list<Field> f = {}) {
  if (Enabled(Level::kDebug)) Write(Level::kDebug, m, f);
}
inline void Info(std::string_view m, std::initializer_list<Field> f = {}) {
  if (Enabled(Level::kInfo)) Write(Level::kInfo, m, f);
}
inline void Warn(std::string_view m, std::initializer_list<Field> f = {}) {
  if (Enabled(Level::kWarn)) Write(Level::kWarn, m, f);
}
inline void Error(std::string_view m, std::initializer_list<Field> f = {}) {
  if (Enabled(Level::kError)) Write(Level::kError, m, f);
}

}  // namespace muon::log
