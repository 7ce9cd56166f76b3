#pragma once
// Start-up configuration: every setting has an environment variable and a --flag that overrides
// it; everything is validated before the service does any work. A bad or missing value is a
// ConfigError whose message names the flag, the variable and what was expected; RunMain (see
// service_main.h) prints it and exits with code 2.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace muon::config {

inline constexpr int kExitBadConfig = 2;

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Thrown by Parse when --help was given; what() holds the usage text.
class HelpRequested : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

using Environment = std::map<std::string, std::string>;
Environment ProcessEnvironment();  // snapshot of environ

// "250ms", "5s", "2m", "1h", "1500us", combinations like "1m30s"; a bare number is rejected.
std::optional<std::chrono::nanoseconds> ParseDuration(std::string_view text);
std::string FormatDuration(std::chrono::nanoseconds d);  // "1.5s", "250ms", "0s"

enum class Kind { kString, kInt, kDuration, kBool };

struct Option {
  std::string flag;  // without dashes: "nats-url"
  std::string env;   // "NATS_URL"; empty if only a flag
  Kind kind = Kind::kString;
  std::optional<std::string> default_value;  // nullopt = required
  std::string help;
  int64_t min = INT64_MIN;  // kInt only
  int64_t max = INT64_MAX;  // kInt only
  bool secret = false;      // never echoed back in errors or dumps
};

class Values {
 public:
  const std::string& String(std::string_view flag) const;
  int64_t Int(std::string_view flag) const;
  std::chrono::nanoseconds Duration(std::string_view flag) const;
  bool Bool(std::string_view flag) const;
  // Where the value came from: "flag", "env" or "default" (for start-up logs).
  std::string_view Source(std::string_view flag) const;

  // Used by Spec::Parse.
  void Set(std::string flag, std::string value, std::string source);

 private:
  std::map<std::string, std::pair<std::string, std::string>, std::less<>> values_;
};

class Spec {
 public:
  Spec(std::string program, std::string summary);

  Spec& String(std::string flag, std::string env, std::optional<std::string> default_value,
               std::string help, bool secret = false);
  Spec& Int(std::string flag, std::string env, std::optional<int64_t> default_value, int64_t min,
            int64_t max, std::string help);
  Spec& Duration(std::string flag, std::string env, std::optional<std::string> default_value,
                 std::string help);
  Spec& Bool(std::string flag, std::string env, bool default_value, std::string help);

  // Flags: --name=value, --name value, and for bools --name / --no-name. Unknown flags,
  // positional arguments, missing required values and values of the wrong type throw ConfigError
  // (all problems are collected into one message, one per line); --help throws HelpRequested.
  Values Parse(int argc, const char* const* argv, const Environment& env) const;
  Values Parse(const std::vector<std::string>& args, const Environment& env) const;

  std::string Usage() const;
  const std::vector<Option>& options() const { return options_; }

 private:
  std::string program_;
  std::string summary_;
  std::vector<Option> options_;
};

}  // namespace muon::config
