#include "muon/cli/output.h"

#include <fmt/format.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/type_resolver.h>
#include <google/protobuf/util/type_resolver_util.h>

#include <algorithm>
#include <ctime>
#include <memory>

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

}  // namespace muon::cli
