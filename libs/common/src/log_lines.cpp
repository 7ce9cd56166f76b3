#include "muon/common/log_lines.h"

#include <fmt/format.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <random>
#include <stdexcept>

namespace muon::loglines {
namespace {

using logs::v1::Severity;
using logs::v1::Source;

char Lower(char c) {
  return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

// Severity words applications print; "err", "crit" etc. included because loggers abbreviate.
std::optional<Severity> SeverityWord(std::string_view w) {
  static constexpr std::pair<std::string_view, Severity> kWords[] = {
      {"trace", logs::v1::SEVERITY_DEBUG},    {"debug", logs::v1::SEVERITY_DEBUG},
      {"dbg", logs::v1::SEVERITY_DEBUG},      {"info", logs::v1::SEVERITY_INFO},
      {"notice", logs::v1::SEVERITY_INFO},    {"warn", logs::v1::SEVERITY_WARN},
      {"warning", logs::v1::SEVERITY_WARN},   {"error", logs::v1::SEVERITY_ERROR},
      {"err", logs::v1::SEVERITY_ERROR},      {"fatal", logs::v1::SEVERITY_FATAL},
      {"critical", logs::v1::SEVERITY_FATAL}, {"crit", logs::v1::SEVERITY_FATAL},
      {"panic", logs::v1::SEVERITY_FATAL},    {"emerg", logs::v1::SEVERITY_FATAL},
  };
  for (const auto& [word, severity] : kWords) {
    if (EqualsIgnoreCase(w, word)) return severity;
  }
  return std::nullopt;
}

std::string_view TrimLeft(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  return s;
}

// The value of "key":"value" in a JSON object line (no full parse: only a string value right
// after the key is taken).
std::optional<std::string_view> JsonStringField(std::string_view line, std::string_view key) {
  const std::string quoted = "\"" + std::string(key) + "\"";
  size_t pos = line.find(quoted);
  if (pos == std::string_view::npos) return std::nullopt;
  pos += quoted.size();
  while (pos < line.size() && (line[pos] == ' ' || line[pos] == '\t')) ++pos;
  if (pos >= line.size() || line[pos] != ':') return std::nullopt;
  ++pos;
  while (pos < line.size() && (line[pos] == ' ' || line[pos] == '\t')) ++pos;
  if (pos >= line.size() || line[pos] != '"') return std::nullopt;
  const size_t end = line.find('"', pos + 1);
  if (end == std::string_view::npos) return std::nullopt;
  return line.substr(pos + 1, end - pos - 1);
}

// level=error or severity=warn anywhere in a logfmt line (value optionally quoted).
std::optional<std::string_view> LogfmtField(std::string_view line, std::string_view key) {
  const std::string needle = std::string(key) + "=";
  size_t pos = 0;
  while ((pos = line.find(needle, pos)) != std::string_view::npos) {
    if (pos == 0 || line[pos - 1] == ' ') {
      size_t start = pos + needle.size();
      if (start < line.size() && line[start] == '"') ++start;
      size_t end = start;
      while (end < line.size() && line[end] != ' ' && line[end] != '"') ++end;
      return line.substr(start, end - start);
    }
    pos += needle.size();
  }
  return std::nullopt;
}

}  // namespace

bool IsValidToken(std::string_view token) {
  if (token.empty() || token.size() > 128) return false;
  return std::all_of(token.begin(), token.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

std::string Subject(std::string_view service, std::string_view instance) {
  if (!IsValidToken(service) || !IsValidToken(instance)) {
    throw std::invalid_argument("log subject needs service and instance made of A-Z a-z 0-9 _ -");
  }
  std::string s(kSubjectPrefix);
  s.append(service).append(".").append(instance);
  return s;
}

std::string FilterSubject(std::string_view service, std::string_view instance) {
  std::string s(kSubjectPrefix);
  if (service.empty()) return instance.empty() ? s + ">" : s.append("*.").append(instance);
  s.append(service).append(".");
  if (instance.empty()) return s + "*";
  return s.append(instance);
}

bus::StreamConfig StreamConfig(std::chrono::seconds max_age, int64_t max_bytes) {
  bus::StreamConfig config;
  config.name = std::string(kStreamName);
  config.subjects = {std::string(kSubjectPrefix) + ">"};
  config.max_age = max_age;
  config.max_bytes = max_bytes;
  return config;
}

std::string_view SeverityName(Severity severity) {
  switch (severity) {
    case logs::v1::SEVERITY_DEBUG:
      return "debug";
    case logs::v1::SEVERITY_INFO:
      return "info";
    case logs::v1::SEVERITY_WARN:
      return "warn";
    case logs::v1::SEVERITY_ERROR:
      return "error";
    case logs::v1::SEVERITY_FATAL:
      return "fatal";
    default:
      return "";
  }
}

std::optional<Severity> ParseSeverityName(std::string_view name) {
  for (auto s : {logs::v1::SEVERITY_DEBUG, logs::v1::SEVERITY_INFO, logs::v1::SEVERITY_WARN,
                 logs::v1::SEVERITY_ERROR, logs::v1::SEVERITY_FATAL}) {
    if (EqualsIgnoreCase(name, SeverityName(s))) return s;
  }
  if (EqualsIgnoreCase(name, "warning")) return logs::v1::SEVERITY_WARN;
  return std::nullopt;
}

std::string_view SourceName(Source source) {
  switch (source) {
    case logs::v1::SOURCE_APP:
      return "app";
    case logs::v1::SOURCE_SYSTEM:
      return "system";
    case logs::v1::SOURCE_BUILD:
      return "build";
    case logs::v1::SOURCE_PLATFORM:
      return "platform";
    default:
      return "";
  }
}

std::optional<Source> ParseSourceName(std::string_view name) {
  for (auto s : {logs::v1::SOURCE_APP, logs::v1::SOURCE_SYSTEM, logs::v1::SOURCE_BUILD,
                 logs::v1::SOURCE_PLATFORM}) {
    if (EqualsIgnoreCase(name, SourceName(s))) return s;
  }
  return std::nullopt;
}

Severity DetectSeverity(std::string_view message, bool from_stderr) {
  const Severity fallback = from_stderr ? logs::v1::SEVERITY_ERROR : logs::v1::SEVERITY_INFO;
  std::string_view line = TrimLeft(message);
  if (line.empty()) return fallback;
  if (line.front() == '{') {
    for (std::string_view key : {"level", "severity", "lvl"}) {
      if (auto v = JsonStringField(line, key)) {
        if (auto s = SeverityWord(*v)) return *s;
      }
    }
    return fallback;
  }
  for (std::string_view key : {"level", "lvl", "severity"}) {
    if (auto v = LogfmtField(line, key)) {
      if (auto s = SeverityWord(*v)) return *s;
    }
  }
  // A leading word: "ERROR ...", "[warn] ...", "<error>", "error: ...", "WARN|...".
  size_t start = 0;
  if (line.front() == '[' || line.front() == '<' || line.front() == '(') start = 1;
  size_t end = start;
  while (end < line.size() && std::isalpha(static_cast<unsigned char>(line[end]))) ++end;
  if (end > start) {
    if (auto s = SeverityWord(line.substr(start, end - start))) return *s;
  }
  // glog/klog: a severity letter followed by MMDD ("E1122 10:00:00.000 ...").
  if (line.size() >= 6 && std::string_view("DIWEF").find(line[0]) != std::string_view::npos &&
      std::all_of(line.begin() + 1, line.begin() + 5,
                  [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }) &&
      line[5] == ' ') {
    switch (line[0]) {
      case 'D':
        return logs::v1::SEVERITY_DEBUG;
      case 'I':
        return logs::v1::SEVERITY_INFO;
      case 'W':
        return logs::v1::SEVERITY_WARN;
      case 'E':
        return logs::v1::SEVERITY_ERROR;
      default:
        return logs::v1::SEVERITY_FATAL;
    }
  }
  return fallback;
}

void SanitizeText(std::string& text) {
  // Fast path: plain ASCII without NUL needs no copy.
  bool clean = true;
  for (unsigned char c : text) {
    if (c == 0 || c >= 0x80) {
      clean = false;
      break;
    }
  }
  if (clean) return;
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(text.size());
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c == 0) {
      ++i;
      continue;
    }
    if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t min = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      min = 0x10000;
    }
    bool valid = len > 0 && i + len <= n;
    uint32_t cp = len > 0 ? (c & (0x7F >> len)) : 0;
    for (size_t k = 1; valid && k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) {
        valid = false;
      } else {
        cp = (cp << 6) | (p[i + k] & 0x3F);
      }
    }
    if (valid && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) valid = false;
    if (valid) {
      out.append(text, i, len);
      i += len;
    } else {
      out += kReplacement;
      ++i;
    }
  }
  text = std::move(out);
}

void MaskSecrets(std::string& text, const std::vector<std::string>& secrets) {
  for (const auto& secret : secrets) {
    if (secret.size() < 4) continue;
    size_t pos = 0;
    while ((pos = text.find(secret, pos)) != std::string::npos) {
      text.replace(pos, secret.size(), "[masked]");
      pos += 8;
    }
  }
}

bool CapMessage(std::string& message, size_t cap) {
  if (message.size() <= cap) return false;
  size_t cut = cap;
  // Step back over UTF-8 continuation bytes so no character is split.
  while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xC0) == 0x80) --cut;
  message.resize(cut);
  return true;
}

bool ContainsIgnoreCase(std::string_view haystack, std::string_view needle) {
  if (needle.empty()) return true;
  auto it = std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(),
                        [](char a, char b) { return Lower(a) == Lower(b); });
  return it != haystack.end();
}

void AppendToBatch(std::string& batch, std::string_view serialized_line) {
  batch.push_back(static_cast<char>((1 << 3) | 2));  // field 1 (lines), length-delimited
  uint64_t n = serialized_line.size();
  while (n >= 0x80) {
    batch.push_back(static_cast<char>((n & 0x7F) | 0x80));
    n >>= 7;
  }
  batch.push_back(static_cast<char>(n));
  batch.append(serialized_line);
}

std::string ReadEndpoint(std::string_view service) {
  return "Read." + (service.empty() ? std::string("*") : std::string(service));
}

bool Matches(const logs::v1::Filter& filter, const logs::v1::LogLine& line) {
  if (!filter.service().empty() && filter.service() != line.service()) return false;
  if (!filter.instance().empty() && filter.instance() != line.instance()) return false;
  if (!filter.release().empty() && filter.release() != line.release()) return false;
  if (filter.source() != logs::v1::SOURCE_UNSPECIFIED && filter.source() != line.source()) {
    return false;
  }
  if (filter.min_severity() != logs::v1::SEVERITY_UNSPECIFIED &&
      line.severity() < filter.min_severity()) {
    return false;
  }
  return ContainsIgnoreCase(line.message(), filter.grep());
}

// ---- Shipper ----

Shipper::Shipper(bus::Connection& connection, ShipperOptions options)
    : connection_(connection),
      options_(std::move(options)),
      subject_(Subject(options_.service, options_.instance)),
      next_seq_(options_.first_seq == 0 ? 1 : options_.first_seq),
      published_through_(next_seq_.load() - 1) {
  // The boot nonce keeps a restarted emitter that reuses its instance id (and so numbers from 1
  // again) from having its first lines dropped as repeats of the previous run's.
  message_id_prefix_ = fmt::format("{}.{}.{:08x}.", options_.service, options_.instance,
                                   static_cast<uint32_t>(std::random_device{}()));
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = 4096;
  jo.PublishAsync.ErrHandler = &Shipper::OnPublishError;
  jo.PublishAsync.ErrHandlerClosure = this;
  jo.PublishAsync.StallWait = 1000;
  if (natsConnection_JetStream(&js_, connection_.raw(), &jo) != NATS_OK) {
    throw std::runtime_error("cannot create a JetStream context for the log shipper");
  }
  thread_ = std::thread([this] { Run(); });
}

Shipper::~Shipper() {
  Flush(std::chrono::seconds(2));
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  // Waits for (or gives up on) acks still in flight so no callback runs after destruction.
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 500;
  js_PublishAsyncComplete(js_, &po);
  jsCtx_Destroy(js_);
}

void Shipper::Emit(Severity severity, std::string message, std::string trace_id,
                   std::optional<std::chrono::system_clock::time_point> time) {
  EmitImpl(options_.source, severity, std::move(message), std::move(trace_id),
           time.value_or(std::chrono::system_clock::now()));
}

void Shipper::EmitFrom(Source source, Severity severity, std::string message) {
  EmitImpl(source, severity, std::move(message), {}, std::chrono::system_clock::now());
}

void Shipper::EmitImpl(Source source, Severity severity, std::string message, std::string trace_id,
                       std::chrono::system_clock::time_point now) {
  logs::v1::LogLine line;
  const int64_t ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
  line.mutable_time()->set_seconds(ns / 1000000000);
  line.mutable_time()->set_nanos(static_cast<int32_t>(ns % 1000000000));
  line.set_service(options_.service);
  line.set_instance(options_.instance);
  line.set_release(options_.release);
  line.set_region(options_.region);
  line.set_source(source);
  line.set_severity(severity);
  SanitizeText(message);
  SanitizeText(trace_id);
  line.set_truncated(CapMessage(message, options_.max_message_bytes));
  line.set_message(std::move(message));
  line.set_trace_id(std::move(trace_id));
  std::lock_guard lock(mu_);
  // The sequence is taken under the lock so queue order is sequence order.
  const uint64_t seq = next_seq_++;
  line.set_seq(seq);
  if (queue_.size() >= options_.max_queued) {
    queue_.pop_front();
    dropped_++;
  }
  queue_.push_back({seq, line.SerializeAsString()});
  // The publisher thread needs a wake-up for the first line (it may then linger) and for a full
  // batch; the lines in between would only cost futex calls.
  if (queue_.size() == 1 || queue_.size() == kMaxLinesPerBatch) cv_.notify_one();
}

void Shipper::EmitLine(std::string line, bool from_stderr) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  const Severity severity = DetectSeverity(line, from_stderr);
  Emit(severity, std::move(line));
}

void Shipper::PublishOne(const Pending& p) {
  natsMsg* msg = nullptr;
  if (natsMsg_Create(&msg, subject_.c_str(), nullptr, p.data.data(),
                     static_cast<int>(p.data.size())) != NATS_OK) {
    return;
  }
  const std::string id = message_id_prefix_ + std::to_string(p.seq);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = id.c_str();
  po.MaxWait = 5000;
  const natsStatus status = js_PublishMsgAsync(js_, &msg, &po);
  if (msg != nullptr) natsMsg_Destroy(msg);  // not taken: the publish failed at once
  if (status != NATS_OK) {
    std::lock_guard lock(mu_);
    retry_.push_back(p);
  }
}

void Shipper::OnPublishError(jsCtx*, jsPubAckErr* error, void* closure) {
  auto* self = static_cast<Shipper*>(closure);
  const char* id = nullptr;
  natsMsgHeader_Get(error->Msg, bus::kHeaderMsgId, &id);
  if (id == nullptr) return;
  const std::string_view id_view(id);
  const uint64_t seq =
      std::strtoull(std::string(id_view.substr(id_view.rfind('.') + 1)).c_str(), nullptr, 10);
  Pending p{seq, std::string(natsMsg_GetData(error->Msg),
                             static_cast<size_t>(natsMsg_GetDataLength(error->Msg)))};
  std::lock_guard lock(self->mu_);
  self->retry_.push_back(std::move(p));
  self->cv_.notify_one();
}

void Shipper::Run() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait_for(lock, std::chrono::milliseconds(500),
                 [this] { return stop_ || !queue_.empty() || !retry_.empty(); });
    if (stop_) return;
    if (!retry_.empty()) {
      // Retries go first so a stream that was missing for a moment gets lines in order again;
      // a short pause keeps a dead stream from turning this into a busy loop.
      std::deque<Pending> retry;
      retry.swap(retry_);
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      std::sort(retry.begin(), retry.end(),
                [](const Pending& a, const Pending& b) { return a.seq < b.seq; });
      for (const auto& p : retry) PublishOne(p);
      lock.lock();
      continue;
    }
    if (queue_.empty()) continue;
    cv_.wait_until(lock, last_publish_ + options_.linger,
                   [this] { return stop_ || queue_.size() >= kMaxLinesPerBatch; });
    last_publish_ = std::chrono::steady_clock::now();
    std::deque<Queued> lines;
    lines.swap(queue_);
    lock.unlock();
    Pending batch;
    size_t in_batch = 0;
    uint64_t last_seq = 0;
    auto publish = [&] {
      PublishOne(batch);
      published_through_ = last_seq;
      batch.data.clear();
      in_batch = 0;
    };
    for (auto& q : lines) {
      if (in_batch > 0 && (in_batch == kMaxLinesPerBatch ||
                           batch.data.size() + q.line.size() + 8 > kMaxBatchBytes)) {
        publish();
      }
      if (in_batch == 0) batch.seq = q.seq;
      AppendToBatch(batch.data, q.line);
      last_seq = q.seq;
      ++in_batch;
    }
    if (in_batch > 0) publish();
    lock.lock();
  }
}

bool Shipper::Flush(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    bool handed_over;
    {
      std::lock_guard lock(mu_);
      handed_over =
          queue_.empty() && retry_.empty() && published_through_.load() + 1 >= next_seq_.load();
    }
    if (handed_over) {
      jsPubOptions po;
      jsPubOptions_Init(&po);
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          until - std::chrono::steady_clock::now());
      po.MaxWait = std::max<int64_t>(1, left.count());
      if (js_PublishAsyncComplete(js_, &po) == NATS_OK) {
        std::lock_guard lock(mu_);
        if (retry_.empty()) return true;  // every ack arrived and none failed
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

void ShipperSink::Write(const log::Record& record) {
  Severity severity = logs::v1::SEVERITY_INFO;
  switch (record.level) {
    case log::Level::kDebug:
      severity = logs::v1::SEVERITY_DEBUG;
      break;
    case log::Level::kInfo:
      severity = logs::v1::SEVERITY_INFO;
      break;
    case log::Level::kWarn:
      severity = logs::v1::SEVERITY_WARN;
      break;
    case log::Level::kError:
      severity = logs::v1::SEVERITY_ERROR;
      break;
  }
  std::string trace_id;
  for (const auto& f : record.fields) {
    if (f.key == "trace_id") trace_id = f.value;
  }
  shipper_.Emit(severity, log::FormatMessage(record), std::move(trace_id), record.time);
}

}  // namespace muon::loglines
