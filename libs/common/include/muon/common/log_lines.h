#pragma once
// Log lines on the bus: the stream and subject names, severity detection for application output,
// the filter every reader applies (the logs service's queries and the ingress's live tails), and
// the Shipper that publishes one emitter's lines to the log stream.
//
//   muon::loglines::Shipper shipper(bus, {.service = "greeter", .instance = "i-3",
//                                         .source = logs::v1::SOURCE_APP});
//   shipper.EmitLine("ERROR: upstream timed out", /*from_stderr=*/false);
//
// Subjects: muon.log.<service>.<instance>, stream LOGS (limits retention, sized by muon-logs).
// Every line carries a per-instance sequence number, and is published with
// Nats-Msg-Id "<service>.<instance>.<boot nonce>.<seq>" so a publish retried after a lost ack is
// stored once.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "muon/common/bus.h"
#include "muon/common/log.h"
#include "muon/logs/v1/logs.pb.h"

namespace muon::loglines {

inline constexpr std::string_view kStreamName = "LOGS";
inline constexpr std::string_view kSubjectPrefix = "muon.log.";
inline constexpr size_t kDefaultMaxMessageBytes = 16 * 1024;
// A bus message (LogBatch) holds at most this many lines and, unless one line alone is bigger,
// this many bytes (well under nats-server's default max_payload of 1 MiB).
inline constexpr size_t kMaxLinesPerBatch = 1000;
inline constexpr size_t kMaxBatchBytes = 256 * 1024;

// Appends one serialized LogLine to a serialized LogBatch (the wire format of a repeated field
// is its elements' encodings one after another, so batching needs no re-parsing).
void AppendToBatch(std::string& batch, std::string_view serialized_line);

// A subject token: 1..128 of A-Z a-z 0-9 _ -.
bool IsValidToken(std::string_view token);
// muon.log.<service>.<instance>; throws std::invalid_argument for tokens that are not valid.
std::string Subject(std::string_view service, std::string_view instance);
// The subject a reader subscribes to: every instance of `service` when `instance` is empty, every
// service when both are, an instance id under any service when only `instance` is set.
std::string FilterSubject(std::string_view service, std::string_view instance);

bus::StreamConfig StreamConfig(std::chrono::seconds max_age, int64_t max_bytes);

std::string_view SeverityName(logs::v1::Severity severity);  // "debug" ... "fatal"; "" for none
// Accepts debug, info, warn, warning, error, fatal (any case); nullopt otherwise.
std::optional<logs::v1::Severity> ParseSeverityName(std::string_view name);
std::string_view SourceName(logs::v1::Source source);  // "app", "system", "build", "platform"
std::optional<logs::v1::Source> ParseSourceName(std::string_view name);

// The severity an application meant: a JSON object's "level"/"severity" field, a logfmt
// level=..., or a leading word such as "ERROR", "[warn]", "W1122 ...", "fatal:"; otherwise
// info for stdout and error for stderr.
logs::v1::Severity DetectSeverity(std::string_view message, bool from_stderr);

// Makes `text` storable: invalid UTF-8 sequences become U+FFFD and NUL bytes are removed
// (PostgreSQL text cannot hold them, and Protobuf refuses strings that are not UTF-8).
void SanitizeText(std::string& text);

// Replaces every occurrence of each secret value (at least 4 bytes long; shorter ones would
// mask ordinary words) with "[masked]": a service's secrets never reach the log stream even when
// its code prints them.
void MaskSecrets(std::string& text, const std::vector<std::string>& secrets);

// Cuts `message` to at most `cap` bytes on a UTF-8 character boundary; true when it cut.
bool CapMessage(std::string& message, size_t cap);

bool ContainsIgnoreCase(std::string_view haystack, std::string_view needle);
// Reading a service's logs is the rules endpoint logs."Read.<service>" (logs."Read.*" for every
// service), checked on top of logs.Query / logs.Tail.
std::string ReadEndpoint(std::string_view service);

// Whether `line` passes `filter` (every set field must match; grep is case-insensitive).
bool Matches(const logs::v1::Filter& filter, const logs::v1::LogLine& line);

struct ShipperOptions {
  std::string service;
  std::string instance;
  std::string release;
  std::string region;
  logs::v1::Source source = logs::v1::SOURCE_APP;
  size_t max_message_bytes = kDefaultMaxMessageBytes;
  // Lines kept while the bus is unreachable; past this the oldest are dropped (and counted).
  size_t max_queued = 100000;
  uint64_t first_seq = 1;  // a restarted emitter continues its numbering from here
  // A busy emitter publishes at most one message per linger (every line queued meanwhile goes in
  // it); a line after a quiet spell goes at once. The latency paid for batching, only when busy.
  std::chrono::milliseconds linger{20};
};

// Publishes one emitter's lines to the log stream from its own thread, asynchronously (many
// publishes in flight, acks collected by nats.c), in batches of the lines queued within `linger`.
// Emit never blocks on the bus. Batches whose publish failed (no stream yet, timeout) are retried
// as they were; the stream drops repeats by message id (the batch's first seq).
class Shipper {
 public:
  // Throws std::invalid_argument when service or instance is not a valid token.
  Shipper(bus::Connection& connection, ShipperOptions options);
  ~Shipper();  // flushes for up to 2 s, then stops
  Shipper(const Shipper&) = delete;
  Shipper& operator=(const Shipper&) = delete;

  void Emit(logs::v1::Severity severity, std::string message, std::string trace_id = {},
            std::optional<std::chrono::system_clock::time_point> time = std::nullopt);
  // A line from another source than the shipper's own (the node's notes about an instance go
  // with the instance's lines: one numbering, one subject).
  void EmitFrom(logs::v1::Source source, logs::v1::Severity severity, std::string message);
  // One line of application output: severity detected, trailing CR/LF removed.
  void EmitLine(std::string line, bool from_stderr);

  // Waits until every line emitted so far is stored in the stream; false on timeout.
  bool Flush(std::chrono::milliseconds timeout);

  uint64_t next_seq() const { return next_seq_.load(); }
  uint64_t dropped() const { return dropped_.load(); }
  const ShipperOptions& options() const { return options_; }

 private:
  struct Pending {
    uint64_t seq;      // the first line's (the message id's suffix)
    std::string data;  // a serialized LogBatch
  };
  struct Queued {
    uint64_t seq;
    std::string line;  // a serialized LogLine
  };
  void Run();
  void EmitImpl(logs::v1::Source source, logs::v1::Severity severity, std::string message,
                std::string trace_id, std::chrono::system_clock::time_point time);
  static void OnPublishError(jsCtx* js, jsPubAckErr* error, void* closure);
  void PublishOne(const Pending& p);

  bus::Connection& connection_;
  ShipperOptions options_;
  std::string subject_;
  std::string message_id_prefix_;  // "<service>.<instance>.<boot nonce>."
  jsCtx* js_ = nullptr;
  std::atomic<uint64_t> next_seq_;
  std::atomic<uint64_t> published_through_;  // highest seq handed to nats.c
  std::atomic<uint64_t> dropped_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Queued> queue_;
  std::deque<Pending> retry_;
  std::chrono::steady_clock::time_point last_publish_{};
  bool stop_ = false;
  std::thread thread_;
};

// Sends a process's own structured log records (muon::log) to the log stream as well as stderr:
// what every platform service installs at start-up (source platform).
class ShipperSink : public log::Sink {
 public:
  explicit ShipperSink(Shipper& shipper) : shipper_(shipper) {}
  void Write(const log::Record& record) override;

 private:
  Shipper& shipper_;
};

}  // namespace muon::loglines
