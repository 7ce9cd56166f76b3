#include "muon/common/config.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cctype>
#include <charconv>
#include <cstdint>
#include <limits>
#include <set>
#include <utility>

namespace muon::config {
namespace {

constexpr uint64_t kMaxNanos = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

bool IsDigit(char c) {
  return c >= '0' && c <= '9';
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Control characters in user input are escaped so that one problem always stays on one line.
std::string Escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  return out;
}

std::string Quote(std::string_view s) {
  return "\"" + Escape(s) + "\"";
}

std::optional<bool> ParseBool(std::string_view text) {
  const std::string v = ToLower(text);
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return false;
  return std::nullopt;
}

std::optional<int64_t> ParseInt(std::string_view text) {
  int64_t v = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || ptr != end) return std::nullopt;
  return v;
}

uint64_t UnitNanos(std::string_view unit) {
  if (unit == "ns") return 1;
  // Both the micro sign (U+00B5) and the Greek mu (U+03BC) are typed for "µ" in practice.
  if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") return 1'000;
  if (unit == "ms") return 1'000'000;
  if (unit == "s") return 1'000'000'000;
  if (unit == "m") return 60'000'000'000;
  if (unit == "h") return 3'600'000'000'000;
  if (unit == "d") return 86'400'000'000'000;
  return 0;
}

// "1.5" with unit 1e9 -> "1.5"; trailing zeros of the fraction are dropped.
std::string FormatFraction(uint64_t value, uint64_t unit, int digits) {
  const uint64_t whole = value / unit;
  const uint64_t rem = value % unit;
  if (rem == 0) return fmt::format("{}", whole);
  std::string frac = fmt::format("{:0{}}", rem, digits);
  while (!frac.empty() && frac.back() == '0') frac.pop_back();
  return fmt::format("{}.{}", whole, frac);
}

std::string Describe(const Option& o) {
  if (o.env.empty()) return "--" + o.flag;
  return fmt::format("--{} (env {})", o.flag, o.env);
}

// Checks a raw value against the option's kind and returns the form stored in Values, or sets
// *error to a message that never contains a secret value.
std::optional<std::string> Normalize(const Option& o, const std::string& raw, std::string* error) {
  const std::string shown = o.secret ? "value" : Quote(raw);
  switch (o.kind) {
    case Kind::kString:
      if (raw.empty() && !o.default_value) {
        *error = "required but empty";
        return std::nullopt;
      }
      return raw;
    case Kind::kInt: {
      auto v = ParseInt(raw);
      if (!v) {
        *error = fmt::format("{} is not an integer", shown);
        return std::nullopt;
      }
      if (*v < o.min || *v > o.max) {
        *error = fmt::format("{} is out of range [{}, {}]", o.secret ? "value" : std::to_string(*v),
                             o.min, o.max);
        return std::nullopt;
      }
      return std::to_string(*v);
    }
    case Kind::kDuration:
      if (!ParseDuration(raw)) {
        *error = fmt::format("{} is not a duration (expected e.g. 250ms, 5s, 1m30s)", shown);
        return std::nullopt;
      }
      return raw;
    case Kind::kBool: {
      auto b = ParseBool(raw);
      if (!b) {
        *error =
            fmt::format("{} is not a boolean (expected true/false, 1/0, yes/no, on/off)", shown);
        return std::nullopt;
      }
      return *b ? "true" : "false";
    }
  }
  *error = "unsupported option kind";
  return std::nullopt;
}

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kString:
      return "string";
    case Kind::kInt:
      return "int";
    case Kind::kDuration:
      return "duration";
    case Kind::kBool:
      return "bool";
  }
  return "?";
}

}  // namespace

Environment ProcessEnvironment() {
  Environment env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    const auto eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
  }
  return env;
}

std::optional<std::chrono::nanoseconds> ParseDuration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  uint64_t total = 0;
  while (!text.empty()) {
    size_t i = 0;
    bool any_digit = false;
    uint64_t whole = 0;
    while (i < text.size() && IsDigit(text[i])) {
      const uint64_t d = static_cast<uint64_t>(text[i] - '0');
      if (whole > (kMaxNanos - d) / 10) return std::nullopt;
      whole = whole * 10 + d;
      any_digit = true;
      ++i;
    }
    uint64_t frac = 0;
    double scale = 1;
    if (i < text.size() && text[i] == '.') {
      ++i;
      while (i < text.size() && IsDigit(text[i])) {
        // Digits beyond what fits cannot change the result by a nanosecond; skip them.
        if (frac <= (kMaxNanos - 9) / 10) {
          frac = frac * 10 + static_cast<uint64_t>(text[i] - '0');
          scale *= 10;
        }
        any_digit = true;
        ++i;
      }
    }
    if (!any_digit) return std::nullopt;
    text.remove_prefix(i);

    size_t u = 0;
    while (u < text.size() && !IsDigit(text[u]) && text[u] != '.') ++u;
    const uint64_t unit = UnitNanos(text.substr(0, u));
    if (unit == 0) return std::nullopt;  // also rejects a bare number (empty unit)
    text.remove_prefix(u);

    if (whole > kMaxNanos / unit) return std::nullopt;
    uint64_t v = whole * unit;
    if (frac > 0) v += static_cast<uint64_t>(static_cast<double>(frac) * (unit / scale));
    if (v > kMaxNanos || total > kMaxNanos - v) return std::nullopt;
    total += v;
  }
  return std::chrono::nanoseconds(static_cast<int64_t>(total));
}

std::string FormatDuration(std::chrono::nanoseconds d) {
  const int64_t n = d.count();
  if (n == 0) return "0s";
  // Negating in unsigned arithmetic keeps INT64_MIN well defined.
  uint64_t u = n < 0 ? 0 - static_cast<uint64_t>(n) : static_cast<uint64_t>(n);
  std::string out;
  if (u < 1'000) {
    out = fmt::format("{}ns", u);
  } else if (u < 1'000'000) {
    out = FormatFraction(u, 1'000, 3) + "us";
  } else if (u < 1'000'000'000) {
    out = FormatFraction(u, 1'000'000, 6) + "ms";
  } else {
    const uint64_t hours = u / 3'600'000'000'000;
    u %= 3'600'000'000'000;
    const uint64_t minutes = u / 60'000'000'000;
    u %= 60'000'000'000;
    const std::string seconds = FormatFraction(u, 1'000'000'000, 9) + "s";
    if (hours > 0) {
      out = fmt::format("{}h{}m{}", hours, minutes, seconds);
    } else if (minutes > 0) {
      out = fmt::format("{}m{}", minutes, seconds);
    } else {
      out = seconds;
    }
  }
  return n < 0 ? "-" + out : out;
}

// --- Values ---------------------------------------------------------------------------------

namespace {

const std::pair<std::string, std::string>& Lookup(
    const std::map<std::string, std::pair<std::string, std::string>, std::less<>>& values,
    std::string_view flag) {
  auto it = values.find(flag);
  if (it == values.end()) {
    throw std::logic_error(fmt::format("config: no option --{} in the spec", flag));
  }
  return it->second;
}

}  // namespace

const std::string& Values::String(std::string_view flag) const {
  return Lookup(values_, flag).first;
}

int64_t Values::Int(std::string_view flag) const {
  auto v = ParseInt(Lookup(values_, flag).first);
  if (!v) throw std::logic_error(fmt::format("config: --{} is not an int option", flag));
  return *v;
}

std::chrono::nanoseconds Values::Duration(std::string_view flag) const {
  auto v = ParseDuration(Lookup(values_, flag).first);
  if (!v) throw std::logic_error(fmt::format("config: --{} is not a duration option", flag));
  return *v;
}

bool Values::Bool(std::string_view flag) const {
  auto v = ParseBool(Lookup(values_, flag).first);
  if (!v) throw std::logic_error(fmt::format("config: --{} is not a bool option", flag));
  return *v;
}

std::string_view Values::Source(std::string_view flag) const {
  return Lookup(values_, flag).second;
}

void Values::Set(std::string flag, std::string value, std::string source) {
  values_.insert_or_assign(std::move(flag), std::make_pair(std::move(value), std::move(source)));
}

// --- Spec -----------------------------------------------------------------------------------

namespace {

// Mistakes in a Spec are bugs in the service, not in its configuration, so they are logic_errors
// raised while the Spec is built rather than ConfigErrors shown to the operator.
void CheckNewOption(const std::vector<Option>& existing, const Option& o) {
  auto fail = [&](std::string_view why) {
    throw std::logic_error(fmt::format("config: option --{}: {}", o.flag, why));
  };
  if (o.flag.empty()) fail("empty flag name");
  for (char c : o.flag) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || IsDigit(c) || c == '-' ||
                    c == '_' || c == '.';
    if (!ok) fail("flag names may only contain letters, digits, '-', '_' and '.'");
  }
  if (o.flag.front() == '-') fail("give the flag name without dashes");
  if (o.flag == "help" || o.flag == "h") fail("--help is reserved");
  for (const Option& e : existing) {
    if (e.flag == o.flag) fail("declared twice");
    if (!o.env.empty() && e.env == o.env)
      fail(fmt::format("env {} already used by --{}", o.env, e.flag));
  }
  if (o.kind == Kind::kInt && o.min > o.max) fail("min > max");
  if (o.default_value) {
    std::string error;
    if (!Normalize(o, *o.default_value, &error)) fail("bad default: " + error);
  }
}

}  // namespace

Spec::Spec(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

Spec& Spec::String(std::string flag, std::string env, std::optional<std::string> default_value,
                   std::string help, bool secret) {
  Option o;
  o.flag = std::move(flag);
  o.env = std::move(env);
  o.kind = Kind::kString;
  o.default_value = std::move(default_value);
  o.help = std::move(help);
  o.secret = secret;
  CheckNewOption(options_, o);
  options_.push_back(std::move(o));
  return *this;
}

Spec& Spec::Int(std::string flag, std::string env, std::optional<int64_t> default_value,
                int64_t min, int64_t max, std::string help) {
  Option o;
  o.flag = std::move(flag);
  o.env = std::move(env);
  o.kind = Kind::kInt;
  if (default_value) o.default_value = std::to_string(*default_value);
  o.help = std::move(help);
  o.min = min;
  o.max = max;
  CheckNewOption(options_, o);
  options_.push_back(std::move(o));
  return *this;
}

Spec& Spec::Duration(std::string flag, std::string env, std::optional<std::string> default_value,
                     std::string help) {
  Option o;
  o.flag = std::move(flag);
  o.env = std::move(env);
  o.kind = Kind::kDuration;
  o.default_value = std::move(default_value);
  o.help = std::move(help);
  CheckNewOption(options_, o);
  options_.push_back(std::move(o));
  return *this;
}

Spec& Spec::Bool(std::string flag, std::string env, bool default_value, std::string help) {
  Option o;
  o.flag = std::move(flag);
  o.env = std::move(env);
  o.kind = Kind::kBool;
  o.default_value = default_value ? "true" : "false";
  o.help = std::move(help);
  CheckNewOption(options_, o);
  options_.push_back(std::move(o));
  return *this;
}

Values Spec::Parse(int argc, const char* const* argv, const Environment& env) const {
  std::vector<std::string> args;
  // argv[0] is the program name, not an argument.
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return Parse(args, env);
}

Values Spec::Parse(const std::vector<std::string>& args, const Environment& env) const {
  std::vector<std::string> problems;
  std::vector<std::optional<std::string>> from_flag(options_.size());
  bool help = false;
  bool after_terminator = false;

  auto find = [&](std::string_view name) -> std::optional<size_t> {
    for (size_t i = 0; i < options_.size(); ++i) {
      if (options_[i].flag == name) return i;
    }
    return std::nullopt;
  };

  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (after_terminator || arg.size() < 2 || arg[0] != '-') {
      problems.push_back(
          fmt::format("unexpected argument {} (settings are given as --flags)", Quote(arg)));
      continue;
    }
    if (arg == "--") {
      after_terminator = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      help = true;
      continue;
    }
    if (arg[1] != '-') {
      problems.push_back(Escape(arg.substr(0, arg.find('='))) + ": unknown flag");
      continue;
    }
    std::string_view name = std::string_view(arg).substr(2);
    std::optional<std::string> inline_value;
    if (const auto eq = name.find('='); eq != std::string_view::npos) {
      inline_value = std::string(name.substr(eq + 1));
      name = name.substr(0, eq);
    }
    // Only the name is echoed: the value of a mistyped secret flag must not leak.
    const std::string shown_name = "--" + std::string(name);

    auto idx = find(name);
    if (!idx && name.starts_with("no-")) {
      if (auto base = find(name.substr(3))) {
        const Option& o = options_[*base];
        if (o.kind != Kind::kBool) {
          problems.push_back(fmt::format("{}: unknown flag ({} is not a boolean)",
                                         Escape(shown_name), Describe(o)));
        } else if (inline_value) {
          problems.push_back(fmt::format("{}: {} takes no value", Describe(o), shown_name));
        } else {
          from_flag[*base] = "false";
        }
        continue;
      }
    }
    if (!idx) {
      problems.push_back(Escape(shown_name) + ": unknown flag");
      continue;
    }
    const Option& o = options_[*idx];
    if (inline_value) {
      from_flag[*idx] = std::move(inline_value);
    } else if (o.kind == Kind::kBool) {
      from_flag[*idx] = "true";
    } else if (i + 1 < args.size() && !args[i + 1].starts_with("--")) {
      // A following "--flag" is taken as a forgotten value rather than swallowed; a value that
      // really starts with "--" can still be given as --name=--value.
      from_flag[*idx] = args[++i];
    } else {
      problems.push_back(Describe(o) + ": missing value");
    }
  }

  if (help) throw HelpRequested(Usage());

  Values values;
  for (size_t i = 0; i < options_.size(); ++i) {
    const Option& o = options_[i];
    std::optional<std::string> raw;
    std::string source;
    if (from_flag[i]) {
      raw = from_flag[i];
      source = "flag";
    } else if (!o.env.empty()) {
      // An empty variable counts as unset: compose files and shell wrappers commonly export
      // VAR= to mean "not configured".
      if (auto it = env.find(o.env); it != env.end() && !it->second.empty()) {
        raw = it->second;
        source = "env";
      }
    }
    if (!raw && o.default_value) {
      raw = o.default_value;
      source = "default";
    }
    if (!raw) {
      problems.push_back(Describe(o) + ": required but not set");
      continue;
    }
    std::string error;
    auto normalized = Normalize(o, *raw, &error);
    if (!normalized) {
      problems.push_back(Describe(o) + ": " + error);
      continue;
    }
    values.Set(o.flag, std::move(*normalized), std::move(source));
  }

  if (!problems.empty()) {
    std::string message;
    for (const std::string& p : problems) {
      if (!message.empty()) message += '\n';
      message += p;
    }
    throw ConfigError(message);
  }
  return values;
}

std::string Spec::Usage() const {
  std::string out = fmt::format("{}: {}\n\nUsage: {} [flags]\n\n", program_, summary_, program_);
  out += "Flags (each can also be set through the environment variable shown; a flag wins):\n";
  for (const Option& o : options_) {
    std::string line = o.kind == Kind::kBool ? fmt::format("  --[no-]{}", o.flag)
                                             : fmt::format("  --{} <{}>", o.flag, KindName(o.kind));
    std::vector<std::string> notes;
    if (!o.env.empty()) notes.push_back("env " + o.env);
    if (!o.default_value) {
      notes.push_back("required");
    } else if (o.secret) {
      notes.push_back("default hidden");
    } else if (o.kind == Kind::kString) {
      notes.push_back("default " + Quote(*o.default_value));
    } else {
      notes.push_back("default " + *o.default_value);
    }
    if (o.kind == Kind::kInt && (o.min != std::numeric_limits<int64_t>::min() ||
                                 o.max != std::numeric_limits<int64_t>::max())) {
      notes.push_back(fmt::format("range [{}, {}]", o.min, o.max));
    }
    if (o.secret) notes.push_back("secret");
    line += "    (";
    for (size_t i = 0; i < notes.size(); ++i) {
      if (i > 0) line += ", ";
      line += notes[i];
    }
    line += ")\n";
    out += line;
    if (!o.help.empty()) out += "      " + o.help + "\n";
  }
  out += "  -h, --help\n      show this help and exit\n";
  return out;
}

}  // namespace muon::config
