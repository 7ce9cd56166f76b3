#pragma once
// Output for humans (aligned tables, short durations and times) and for scripts (JSON), plus the
// JSON plumbing: everything goes through protobuf's JSON mapping, free-form JSON through
// google.protobuf.Value.

#include <google/protobuf/message.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "muon/logs/v1/logs.pb.h"

namespace muon::cli {

// proto3 JSON (lowerCamelCase names, default values omitted).
std::string ToJson(const google::protobuf::Message& message, bool pretty = false);

// Parses proto3 JSON into `message`, ignoring unknown fields (servers may add some). On failure
// returns false and sets *error.
bool FromJson(std::string_view json, google::protobuf::Message* message, std::string* error);

// One log line as `muon logs` prints it: "time source service/instance severity message", time
// in UTC with milliseconds; with `color` the severity is coloured (ANSI).
std::string FormatLogLine(const logs::v1::LogLine& line, bool color);

// Splits server-sent events out of a growing buffer: every complete event (ended by a blank
// line) is removed from `buffer` and returned as (event type, data); comments are skipped.
std::vector<std::pair<std::string, std::string>> TakeSseEvents(std::string& buffer);

// nullopt when `text` is one valid JSON value (object, array, string, number, true/false/null);
// else the parser's reason.
std::optional<std::string> JsonError(std::string_view text);

// Re-renders a JSON value with object keys sorted: indented when `pretty`, else on one line.
// nullopt when `text` is not JSON. Numbers go through double (integers beyond 2^53 lose digits).
std::optional<std::string> ReformatJson(std::string_view text, bool pretty);

// Columns padded to the widest cell (counted in UTF-8 code points), three spaces apart, the last
// column unpadded; one line per row, each ending in '\n'. Control characters in cells become
// spaces so server-supplied text cannot drive the terminal.
std::string RenderTable(const std::vector<std::string>& headers,
                        const std::vector<std::vector<std::string>>& rows);

// Replaces control characters (and DEL) with spaces; keeps UTF-8 as is.
std::string Sanitize(std::string_view text);

// Display width of UTF-8 text in code points.
size_t DisplayWidth(std::string_view text);

// 900 → "15m", 5400 → "1h30m", 45 → "45s", 90061 → "1d1h1m1s" (units that are 0 are left out);
// 0 or less → "0s".
std::string FormatSeconds(int64_t seconds);

// A duration in milliseconds: under a second "350ms", else as FormatSeconds (the rest of the
// second dropped): 65400 → "1m5s"; less than 0 → "0ms".
std::string FormatMillis(int64_t ms);

// A size for humans, in binary units with one decimal above bytes: 512 → "512 B", 1536 →
// "1.5 KiB", 13000000 → "12.4 MiB"; less than 0 → "0 B".
std::string FormatBytes(int64_t bytes);

// "2026-11-22 05:00:00 UTC"
std::string FormatUnixTime(int64_t unix_seconds);

// Quotes `text` for a POSIX shell when it contains anything beyond [A-Za-z0-9@%+=:,./_-].
std::string ShellQuote(std::string_view text);

}  // namespace muon::cli
