#include "muon/cli/output.h"

#include <fmt/format.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/type_resolver.h>
#include <google/protobuf/util/type_resolver_util.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <iterator>
#include <memory>

#include "muon/common/log_lines.h"

namespace muon::cli {
namespace {

namespace pb = google::protobuf;

constexpr std::string_view kTypeUrlPrefix = "type.googleapis.com";

pb::util::TypeResolver* Resolver() {
  static const std::unique_ptr<pb::util::TypeResolver> kResolver(
      pb::util::NewTypeResolverForDescriptorPool(std::string(kTypeUrlPrefix),
                                                 pb::DescriptorPool::generated_pool()));
  return kResolver.get();
}

}  // namespace

std::string ToJson(const google::protobuf::Message& message, bool pretty) {
  pb::util::JsonPrintOptions options;
  options.add_whitespace = pretty;
  std::string out;
  // Only fails for messages that cannot be represented (e.g. a bad Any); ours always can.
  (void)pb::util::MessageToJsonString(message, &out, options);
  if (pretty && !out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

bool FromJson(std::string_view json, google::protobuf::Message* message, std::string* error) {
  pb::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const auto status =
      pb::util::JsonStringToMessage(pb::StringPiece(json.data(), json.size()), message, options);
  if (!status.ok() && error != nullptr) *error = std::string(status.message());
  return status.ok();
}

std::optional<std::string> JsonError(std::string_view text) {
  pb::Value value;
  const auto status =
      pb::util::JsonStringToMessage(pb::StringPiece(text.data(), text.size()), &value);
  if (status.ok()) return std::nullopt;
  // The parser's message may quote the input over several lines; the first line is the reason.
  std::string reason(status.message());
  reason = reason.substr(0, reason.find('\n'));
  return reason.empty() ? std::string("not valid JSON") : reason;
}

std::optional<std::string> ReformatJson(std::string_view text, bool pretty) {
  pb::Value value;
  if (!pb::util::JsonStringToMessage(pb::StringPiece(text.data(), text.size()), &value).ok()) {
    return std::nullopt;
  }
  // Deterministic serialization sorts map keys; printing from the wire keeps that order, so
  // objects come out with sorted keys instead of hash order.
  std::string wire;
  {
    pb::io::StringOutputStream stream(&wire);
    pb::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    if (!value.SerializeToCodedStream(&coded)) return std::nullopt;
  }
  pb::util::JsonPrintOptions options;
  options.add_whitespace = pretty;
  std::string out;
  const auto status = pb::util::BinaryToJsonString(
      Resolver(), fmt::format("{}/google.protobuf.Value", kTypeUrlPrefix), wire, &out, options);
  if (!status.ok()) return std::nullopt;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string Sanitize(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = ' ';
  }
  return out;
}

size_t DisplayWidth(std::string_view text) {
  return static_cast<size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

std::string RenderTable(const std::vector<std::string>& headers,
                        const std::vector<std::vector<std::string>>& rows) {
  const size_t columns = headers.size();
  std::vector<size_t> widths(columns, 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t c = 0; c < columns && c < row.size(); ++c) {
      widths[c] = std::max(widths[c], DisplayWidth(Sanitize(row[c])));
    }
  };
  measure(headers);
  for (const auto& row : rows) measure(row);

  std::string out;
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t c = 0; c < columns; ++c) {
      const std::string cell = c < row.size() ? Sanitize(row[c]) : std::string{};
      line += cell;
      if (c + 1 < columns) line += std::string(widths[c] - DisplayWidth(cell) + 3, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  };
  emit(headers);
  for (const auto& row : rows) emit(row);
  return out;
}

std::string FormatSeconds(int64_t seconds) {
  if (seconds <= 0) return "0s";
  std::string out;
  const int64_t days = seconds / 86400;
  const int64_t hours = seconds % 86400 / 3600;
  const int64_t minutes = seconds % 3600 / 60;
  const int64_t secs = seconds % 60;
  if (days > 0) out += fmt::format("{}d", days);
  if (hours > 0) out += fmt::format("{}h", hours);
  if (minutes > 0) out += fmt::format("{}m", minutes);
  if (secs > 0) out += fmt::format("{}s", secs);
  return out;
}

std::string FormatMillis(int64_t ms) {
  if (ms < 1000) return fmt::format("{}ms", std::max<int64_t>(ms, 0));
  return FormatSeconds(ms / 1000);
}

std::string FormatBytes(int64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", std::max<int64_t>(bytes, 0));
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  // Round first, so 1048575 bytes is "1.0 MiB", not "1024.0 KiB".
  while (std::round(value * 10) / 10 >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  return fmt::format("{:.1f} {}", value, kUnits[unit]);
}

std::string FormatUnixTime(int64_t unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr) return std::to_string(unix_seconds);
  char buf[64];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return std::string(buf, n);
}

std::string ShellQuote(std::string_view text) {
  const bool plain = !text.empty() && std::all_of(text.begin(), text.end(), [](unsigned char c) {
    return std::isalnum(c) ||
           std::string_view("@%+=:,./_-").find(static_cast<char>(c)) != std::string_view::npos;
  });
  if (plain) return std::string(text);
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string FormatLogLine(const logs::v1::LogLine& line, bool color) {
  const int64_t seconds = line.time().seconds();
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string severity(loglines::SeverityName(line.severity()));
  if (severity.empty()) severity = "info";
  std::string shown = fmt::format("{:<5}", severity);
  if (color) {
    const char* code = "";
    switch (line.severity()) {
      case logs::v1::SEVERITY_DEBUG:
        code = "\x1b[2m";
        break;
      case logs::v1::SEVERITY_WARN:
        code = "\x1b[33m";
        break;
      case logs::v1::SEVERITY_ERROR:
        code = "\x1b[31m";
        break;
      case logs::v1::SEVERITY_FATAL:
        code = "\x1b[1;31m";
        break;
      default:
        break;
    }
    if (*code != '\0') shown = fmt::format("{}{}\x1b[0m", code, shown);
  }
  std::string source(loglines::SourceName(line.source()));
  if (source.empty()) source = "app";
  return fmt::format("{}.{:03}Z {:<8} {}/{} {} {}{}", stamp, line.time().nanos() / 1000000, source,
                     line.service(), line.instance(), shown, line.message(),
                     line.truncated() ? " [truncated]" : "");
}

std::vector<std::pair<std::string, std::string>> TakeSseEvents(std::string& buffer) {
  std::vector<std::pair<std::string, std::string>> events;
  size_t start = 0;
  while (true) {
    const size_t end = buffer.find("\n\n", start);
    if (end == std::string::npos) break;
    std::string_view block(buffer.data() + start, end - start);
    std::string type = "message";
    std::string data;
    bool any_field = false;
    while (!block.empty()) {
      const size_t nl = block.find('\n');
      std::string_view field = block.substr(0, nl);
      block = nl == std::string_view::npos ? std::string_view{} : block.substr(nl + 1);
      if (field.empty() || field.front() == ':') continue;
      const size_t colon = field.find(':');
      std::string_view name = field.substr(0, colon);
      std::string_view value =
          colon == std::string_view::npos ? std::string_view{} : field.substr(colon + 1);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      any_field = true;
      if (name == "event") {
        type = std::string(value);
      } else if (name == "data") {
        if (!data.empty()) data += '\n';
        data += value;
      }
    }
    if (any_field) events.emplace_back(std::move(type), std::move(data));
    start = end + 2;
  }
  buffer.erase(0, start);
  return events;
}

}  // namespace muon::cli
