#include "manifest.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <exception>
#include <set>
#include <utility>

#include "muon/common/config.h"
#include "muon/common/service.h"

namespace muon::builder {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

// A file with thousands of mistakes (or a list aliased many times) would otherwise produce an
// error report larger than the file itself.
constexpr size_t kMaxErrors = 100;
constexpr size_t kMaxQuotedChars = 80;
constexpr size_t kMaxStepNameChars = 100;
constexpr size_t kMaxMethodNameChars = 128;
constexpr size_t kMaxHttpPathChars = 1024;
constexpr int64_t kMaxOutputCapBytes = int64_t{1} << 30;

constexpr seconds kMaxStepTimeout = hours(2);
constexpr seconds kMaxBuildTimeout = hours(2);
constexpr seconds kMaxHealthTimeout = minutes(10);
constexpr seconds kMaxHealthInterval = minutes(1);
constexpr seconds kMaxDrainGrace = minutes(10);

constexpr std::array<std::string_view, 7> kPlatformServices = {
    "auth", "builder", "scheduler", "ingress", "logs", "github-events", "muon"};

constexpr std::array<std::string_view, 4> kTopLevelKeys = {"name", "build", "run", "depends_on"};
constexpr std::array<std::string_view, 5> kBuildKeys = {"steps", "env", "outputs", "timeout",
                                                        "output_cap"};
constexpr std::array<std::string_view, 3> kStepKeys = {"name", "run", "timeout"};
constexpr std::array<std::string_view, 6> kRunKeys = {"command",      "replicas", "env",
                                                      "required_env", "health",   "drain_grace"};
constexpr std::array<std::string_view, 4> kHealthKeys = {"rpc", "http_path", "timeout", "interval"};

template <size_t N>
std::string JoinNames(const std::array<std::string_view, N>& names) {
  return fmt::format("{}", fmt::join(names, ", "));
}

// User text echoed into a message: bounded and printable, so one error stays one line.
std::string Quote(std::string_view text) {
  std::string out = "\"";
  for (size_t i = 0; i < text.size(); ++i) {
    if (i == kMaxQuotedChars) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
  return out;
}

std::string FormatSeconds(seconds s) {
  const int64_t n = s.count();
  if (n != 0 && n % 3600 == 0) return fmt::format("{}h", n / 3600);
  if (n != 0 && n % 60 == 0) return fmt::format("{}m", n / 60);
  return fmt::format("{}s", n);
}

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return Quote(node.Scalar());
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

std::string Child(std::string_view path, std::string_view key) {
  return path.empty() ? std::string(key) : fmt::format("{}.{}", path, key);
}

std::string Element(std::string_view path, size_t index) {
  return fmt::format("{}[{}]", path, index);
}

bool IsBlank(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
}

bool HasControlCharacter(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

bool IsEnvName(std::string_view name) {
  if (name.empty()) return false;
  const auto head = static_cast<unsigned char>(name.front());
  if (!(std::isalpha(head) || head == '_')) return false;
  return std::all_of(name.begin() + 1, name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

bool IsMethodName(std::string_view name) {
  if (name.empty() || name.size() > kMaxMethodNameChars) return false;
  if (!std::isalpha(static_cast<unsigned char>(name.front()))) return false;
  return std::all_of(name.begin() + 1, name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

// Case-insensitive so that "Auth" cannot pass for the auth service in listings and logs.
bool IsPlatformService(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return std::find(kPlatformServices.begin(), kPlatformServices.end(), lower) !=
         kPlatformServices.end();
}

struct NormalisedPath {
  std::string path;
  std::string problem;  // non-empty when the path is refused
};

// Strips "./", empty segments and a trailing '/'; refuses anything that could leave the service
// folder.
NormalisedPath NormaliseOutputPath(std::string_view raw) {
  if (raw.empty() || IsBlank(raw)) return {{}, "must not be empty"};
  if (raw.front() == '/') {
    return {{},
            fmt::format("{} is absolute; outputs are relative to the service folder", Quote(raw))};
  }
  if (HasControlCharacter(raw))
    return {{}, fmt::format("{} contains a control character", Quote(raw))};
  std::string normalised;
  size_t start = 0;
  while (start <= raw.size()) {
    size_t end = raw.find('/', start);
    if (end == std::string_view::npos) end = raw.size();
    const std::string_view segment = raw.substr(start, end - start);
    if (segment == "..") {
      return {{},
              fmt::format("{} contains \"..\"; outputs must stay inside the service folder",
                          Quote(raw))};
    }
    if (!segment.empty() && segment != ".") {
      if (!normalised.empty()) normalised += '/';
      normalised += segment;
    }
    start = end + 1;
  }
  if (normalised.empty()) normalised = ".";
  return {normalised, {}};
}

class ManifestParser {
 public:
  ManifestResult Parse(std::string_view yaml_text) {
    if (yaml_text.size() > kMaxManifestBytes) {
      Error("", fmt::format("the manifest is {} bytes; the limit is {} bytes (256 KiB)",
                            yaml_text.size(), kMaxManifestBytes));
      return Finish();
    }
    try {
      const std::vector<YAML::Node> documents = YAML::LoadAll(std::string(yaml_text));
      if (documents.size() > 1) {
        Error("", fmt::format("expected one YAML document, found {}", documents.size()));
      } else if (documents.empty() || documents.front().IsNull()) {
        Error("", fmt::format("the manifest is empty; expected a mapping with keys: {}",
                              JoinNames(kTopLevelKeys)));
      } else {
        ParseTopLevel(documents.front());
      }
    } catch (const YAML::ParserException& e) {
      // yaml-cpp's marks are 0-based; editors count from 1.
      if (e.mark.is_null()) {
        Error("", fmt::format("YAML syntax error: {}", e.msg));
      } else {
        Error("", fmt::format("YAML syntax error at line {}, column {}: {}", e.mark.line + 1,
                              e.mark.column + 1, e.msg));
      }
    } catch (const std::exception& e) {
      Error("", fmt::format("could not read the manifest: {}", e.what()));
    }
    return Finish();
  }

 private:
  using Fields = std::map<std::string, YAML::Node, std::less<>>;

  void Error(std::string path, std::string message) {
    if (errors_.size() < kMaxErrors) {
      errors_.push_back({std::move(path), std::move(message)});
    } else if (errors_.size() == kMaxErrors) {
      errors_.push_back(
          {"", fmt::format("more than {} errors; the rest are not shown", kMaxErrors)});
    }
  }

  ManifestResult Finish() {
    ManifestResult result;
    result.errors = std::move(errors_);
    if (result.errors.empty()) result.manifest = std::move(manifest_);
    return result;
  }

  // Reads a mapping's keys, reporting non-string, duplicate (yaml-cpp keeps both silently) and
  // unknown keys. Null values are left out: an emptied `env:` means "none", like a missing key.
  template <size_t N>
  std::optional<Fields> ReadMapping(const YAML::Node& node, const std::string& path,
                                    const std::array<std::string_view, N>& allowed) {
    if (!node.IsMap()) {
      Error(path, fmt::format("expected a mapping with keys {}, got {}", JoinNames(allowed),
                              Describe(node)));
      return std::nullopt;
    }
    Fields fields;
    std::set<std::string, std::less<>> seen;
    for (const auto& entry : node) {
      if (!entry.first.IsScalar()) {
        Error(path, fmt::format("keys must be strings, got {}", Describe(entry.first)));
        continue;
      }
      const std::string& key = entry.first.Scalar();
      if (!seen.insert(key).second) {
        Error(path, fmt::format("duplicate key {}", Quote(key)));
        continue;
      }
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        Error(path, fmt::format("unknown key {}; allowed: {}", Quote(key), JoinNames(allowed)));
        continue;
      }
      if (!entry.second.IsNull()) fields.emplace(key, entry.second);
    }
    return fields;
  }

  static const YAML::Node* Find(const Fields& fields, std::string_view key) {
    const auto it = fields.find(key);
    return it == fields.end() ? nullptr : &it->second;
  }

  std::optional<std::string> ReadString(const YAML::Node& node, const std::string& path) {
    if (!node.IsScalar()) {
      Error(path, fmt::format("expected a string, got {}", Describe(node)));
      return std::nullopt;
    }
    return node.Scalar();
  }

  std::optional<std::string> ReadNonEmptyString(const YAML::Node& node, const std::string& path) {
    auto text = ReadString(node, path);
    if (text && IsBlank(*text)) {
      Error(path, "must not be empty");
      return std::nullopt;
    }
    return text;
  }

  std::optional<seconds> ReadDuration(const YAML::Node& node, const std::string& path, seconds min,
                                      seconds max) {
    auto text = ReadString(node, path);
    if (!text) return std::nullopt;
    const auto parsed = config::ParseDuration(*text);
    const std::string range =
        min.count() == 0 ? fmt::format("between 0s and {}", FormatSeconds(max))
                         : fmt::format("between {} and {}", FormatSeconds(min), FormatSeconds(max));
    if (!parsed) {
      Error(path, fmt::format("expected a duration like \"30s\", \"5m\" or \"1h30m\" ({}), got {}",
                              range, Quote(*text)));
      return std::nullopt;
    }
    if (*parsed % seconds(1) != std::chrono::nanoseconds(0)) {
      Error(path, fmt::format("{} is not a whole number of seconds", Quote(*text)));
      return std::nullopt;
    }
    const auto value = std::chrono::duration_cast<seconds>(*parsed);
    if (value < min || value > max) {
      Error(path, fmt::format("{} is out of range; must be {}", Quote(*text), range));
      return std::nullopt;
    }
    return value;
  }

  std::optional<int> ReadInt(const YAML::Node& node, const std::string& path, int min, int max) {
    auto text = ReadString(node, path);
    if (!text) return std::nullopt;
    int64_t value = 0;
    const char* end = text->data() + text->size();
    const auto [ptr, ec] = std::from_chars(text->data(), end, value);
    if (text->empty() || ec == std::errc::invalid_argument || ptr != end) {
      Error(path,
            fmt::format("expected an integer between {} and {}, got {}", min, max, Quote(*text)));
      return std::nullopt;
    }
    if (ec == std::errc::result_out_of_range || value < min || value > max) {
      Error(path, fmt::format("{} is out of range; must be between {} and {}", *text, min, max));
      return std::nullopt;
    }
    return static_cast<int>(value);
  }

  // Bytes as an integer or with a KiB / MiB suffix: binary units only, so "8MiB" is never
  // mistaken for 8,000,000.
  std::optional<int64_t> ReadByteSize(const YAML::Node& node, const std::string& path) {
    auto text = ReadString(node, path);
    if (!text) return std::nullopt;
    const std::string_view view = *text;
    const size_t digits = view.find_first_not_of("0123456789");
    const std::string_view number = view.substr(0, digits);
    const std::string_view unit = digits == std::string_view::npos ? "" : view.substr(digits);
    int64_t multiplier = 0;
    if (unit.empty()) {
      multiplier = 1;
    } else if (unit == "KiB") {
      multiplier = 1024;
    } else if (unit == "MiB") {
      multiplier = 1024 * 1024;
    }
    int64_t value = 0;
    const auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
    const std::string range = fmt::format("between 1 byte and {} MiB", kMaxOutputCapBytes >> 20);
    if (number.empty() || multiplier == 0 || ec == std::errc::invalid_argument ||
        ptr != number.data() + number.size()) {
      Error(path, fmt::format("expected a size in bytes or with a KiB or MiB suffix, like "
                              "\"8MiB\" or \"512KiB\" ({}), got {}",
                              range, Quote(*text)));
      return std::nullopt;
    }
    if (ec == std::errc::result_out_of_range || value > kMaxOutputCapBytes / multiplier ||
        value == 0) {
      Error(path, fmt::format("{} is out of range; must be {}", Quote(*text), range));
      return std::nullopt;
    }
    return value * multiplier;
  }

  // Yields each element with its path; reports a non-list once.
  template <typename Visit>
  void ForEachElement(const YAML::Node& node, const std::string& path, std::string_view what,
                      Visit visit) {
    if (!node.IsSequence()) {
      Error(path, fmt::format("expected a list of {}, got {}", what, Describe(node)));
      return;
    }
    size_t index = 0;
    for (const auto& element : node) {
      visit(element, Element(path, index));
      ++index;
    }
  }

  std::map<std::string, std::string> ReadEnv(const YAML::Node& node, const std::string& path) {
    std::map<std::string, std::string> env;
    if (!node.IsMap()) {
      Error(path,
            fmt::format("expected a mapping of environment variables, got {}", Describe(node)));
      return env;
    }
    for (const auto& entry : node) {
      if (!entry.first.IsScalar()) {
        Error(path, fmt::format("keys must be strings, got {}", Describe(entry.first)));
        continue;
      }
      const std::string& key = entry.first.Scalar();
      if (!CheckEnvName(key, path)) continue;
      if (env.count(key) != 0) {
        Error(path, fmt::format("duplicate key {}", Quote(key)));
        continue;
      }
      const std::string value_path = Child(path, key);
      if (entry.second.IsNull()) {
        Error(value_path, "has no value; write \"\" for an empty string");
        continue;
      }
      if (!entry.second.IsScalar()) {
        Error(value_path,
              fmt::format("expected a string, number or boolean, got {}", Describe(entry.second)));
        continue;
      }
      env.emplace(key, entry.second.Scalar());
    }
    return env;
  }

  bool CheckEnvName(const std::string& key, const std::string& path) {
    if (!IsEnvName(key)) {
      Error(path, fmt::format("{} is not a valid environment variable name: use letters, digits "
                              "and '_', not starting with a digit",
                              Quote(key)));
      return false;
    }
    if (key.rfind("MUON_", 0) == 0) {
      Error(path, fmt::format("{} is reserved: names starting with MUON_ are set by the platform",
                              Quote(key)));
      return false;
    }
    return true;
  }

  bool CheckServiceName(const std::string& name, const std::string& path) {
    if (!IsValidServiceName(name)) {
      Error(path, fmt::format("{} is not a valid service name: use 1-64 letters, digits, '-' or "
                              "'_'",
                              Quote(name)));
      return false;
    }
    if (IsPlatformService(name)) {
      Error(path, fmt::format("{} is reserved for a platform service (reserved: {})", Quote(name),
                              JoinNames(kPlatformServices)));
      return false;
    }
    return true;
  }

  void ParseTopLevel(const YAML::Node& root) {
    const auto fields = ReadMapping(root, "", kTopLevelKeys);
    if (!fields) return;

    if (const auto* name = Find(*fields, "name")) {
      if (auto text = ReadString(*name, "name"); text && CheckServiceName(*text, "name")) {
        manifest_.name = *text;
      }
    } else {
      Error("name", "required: the service name");
    }

    if (const auto* build = Find(*fields, "build")) {
      ParseBuild(*build, "build");
    } else {
      Error("build", "required: a mapping with steps and outputs");
    }

    if (const auto* run = Find(*fields, "run")) {
      ParseRun(*run, "run");
    } else {
      Error("run", "required: a mapping with at least a command");
    }

    if (const auto* depends_on = Find(*fields, "depends_on")) {
      ParseDependsOn(*depends_on, "depends_on");
    }
  }

  void ParseBuild(const YAML::Node& node, const std::string& path) {
    const auto fields = ReadMapping(node, path, kBuildKeys);
    if (!fields) return;

    if (const auto* steps = Find(*fields, "steps")) {
      ParseSteps(*steps, Child(path, "steps"));
    } else {
      Error(Child(path, "steps"), fmt::format("required: a list of 1 to {} steps", kMaxBuildSteps));
    }
    if (const auto* env = Find(*fields, "env")) {
      manifest_.build_env = ReadEnv(*env, Child(path, "env"));
    }
    if (const auto* outputs = Find(*fields, "outputs")) {
      ParseOutputs(*outputs, Child(path, "outputs"));
    } else {
      Error(Child(path, "outputs"),
            "required: a list of paths in the service folder to keep (\".\" for all of it)");
    }
    if (const auto* timeout = Find(*fields, "timeout")) {
      if (auto value =
              ReadDuration(*timeout, Child(path, "timeout"), seconds(1), kMaxBuildTimeout)) {
        manifest_.build_timeout = *value;
      }
    }
    if (const auto* cap = Find(*fields, "output_cap")) {
      if (auto value = ReadByteSize(*cap, Child(path, "output_cap"))) {
        manifest_.output_cap_bytes = *value;
      }
    }
  }

  void ParseSteps(const YAML::Node& node, const std::string& path) {
    if (!node.IsSequence()) {
      Error(path, fmt::format("expected a list of steps, got {}", Describe(node)));
      return;
    }
    if (node.size() == 0 || node.size() > kMaxBuildSteps) {
      Error(path, fmt::format("has {} steps; expected 1 to {}", node.size(), kMaxBuildSteps));
      return;
    }
    std::map<std::string, std::string> path_by_name;
    size_t index = 0;
    for (const auto& element : node) {
      const std::string step_path = Element(path, index);
      ++index;
      if (element.IsScalar()) {
        Error(step_path, fmt::format("expected a mapping with keys {}, got {}; write "
                                     "\"- run: <command>\"",
                                     JoinNames(kStepKeys), Describe(element)));
        continue;
      }
      const auto fields = ReadMapping(element, step_path, kStepKeys);
      if (!fields) continue;
      BuildStep step;
      step.name = fmt::format("step {}", index);
      if (const auto* name = Find(*fields, "name")) {
        const std::string name_path = Child(step_path, "name");
        if (auto text = ReadNonEmptyString(*name, name_path)) {
          if (text->size() > kMaxStepNameChars || HasControlCharacter(*text)) {
            Error(name_path,
                  fmt::format("must be one line of at most {} characters", kMaxStepNameChars));
          } else {
            step.name = *text;
          }
        }
      }
      if (const auto* run = Find(*fields, "run")) {
        if (auto text = ReadNonEmptyString(*run, Child(step_path, "run"))) step.run = *text;
      } else {
        Error(Child(step_path, "run"), "required: the command to run");
      }
      if (const auto* timeout = Find(*fields, "timeout")) {
        if (auto value =
                ReadDuration(*timeout, Child(step_path, "timeout"), seconds(1), kMaxStepTimeout)) {
          step.timeout = *value;
        }
      }
      const auto [existing, inserted] = path_by_name.emplace(step.name, step_path);
      if (!inserted) {
        Error(Child(step_path, "name"),
              fmt::format("{} is already the name of {}", Quote(step.name), existing->second));
      }
      manifest_.steps.push_back(std::move(step));
    }
  }

  void ParseOutputs(const YAML::Node& node, const std::string& path) {
    if (node.IsSequence() && node.size() == 0) {
      Error(path, "must list at least one path (\".\" for the whole service folder)");
      return;
    }
    std::set<std::string> seen;
    ForEachElement(node, path, "paths", [&](const YAML::Node& element, const std::string& at) {
      const auto text = ReadString(element, at);
      if (!text) return;
      NormalisedPath output = NormaliseOutputPath(*text);
      if (!output.problem.empty()) {
        Error(at, output.problem);
      } else if (!seen.insert(output.path).second) {
        Error(at, fmt::format("{} is listed twice", Quote(output.path)));
      } else {
        manifest_.outputs.push_back(std::move(output.path));
      }
    });
  }

  void ParseRun(const YAML::Node& node, const std::string& path) {
    const auto fields = ReadMapping(node, path, kRunKeys);
    if (!fields) return;

    if (const auto* command = Find(*fields, "command")) {
      if (auto text = ReadNonEmptyString(*command, Child(path, "command"))) {
        manifest_.run_command = *text;
      }
    } else {
      Error(Child(path, "command"), "required: the command that starts the service");
    }
    if (const auto* replicas = Find(*fields, "replicas")) {
      if (auto value = ReadInt(*replicas, Child(path, "replicas"), 0, kMaxReplicas)) {
        manifest_.replicas = *value;
      }
    }
    if (const auto* env = Find(*fields, "env")) {
      manifest_.run_env = ReadEnv(*env, Child(path, "env"));
    }
    if (const auto* required_env = Find(*fields, "required_env")) {
      ParseRequiredEnv(*required_env, Child(path, "required_env"));
    }
    if (const auto* health = Find(*fields, "health")) {
      ParseHealth(*health, Child(path, "health"));
    }
    if (const auto* drain_grace = Find(*fields, "drain_grace")) {
      if (auto value =
              ReadDuration(*drain_grace, Child(path, "drain_grace"), seconds(0), kMaxDrainGrace)) {
        manifest_.drain_grace = *value;
      }
    }
  }

  void ParseRequiredEnv(const YAML::Node& node, const std::string& path) {
    std::set<std::string> seen;
    ForEachElement(node, path, "environment variable names",
                   [&](const YAML::Node& element, const std::string& at) {
                     const auto key = ReadString(element, at);
                     if (!key || !CheckEnvName(*key, at)) return;
                     if (!seen.insert(*key).second) {
                       Error(at, fmt::format("{} is listed twice", Quote(*key)));
                       return;
                     }
                     manifest_.required_env.push_back(*key);
                   });
  }

  void ParseHealth(const YAML::Node& node, const std::string& path) {
    const auto fields = ReadMapping(node, path, kHealthKeys);
    if (!fields) return;
    HealthCheck& health = manifest_.health;

    const auto* rpc = Find(*fields, "rpc");
    const auto* http_path = Find(*fields, "http_path");
    if (rpc && http_path) {
      Error(path, "set either rpc or http_path, not both");
    }
    if (rpc) {
      const std::string rpc_path = Child(path, "rpc");
      if (auto method = ReadString(*rpc, rpc_path)) {
        if (IsMethodName(*method)) {
          health.rpc = *method;
        } else {
          Error(rpc_path, fmt::format("{} is not a method name: use letters, digits and '_', "
                                      "starting with a letter",
                                      Quote(*method)));
        }
      }
    }
    if (http_path) {
      const std::string http_path_path = Child(path, "http_path");
      if (auto text = ReadString(*http_path, http_path_path)) {
        const bool has_space = std::any_of(text->begin(), text->end(), [](char c) {
          return std::isspace(static_cast<unsigned char>(c));
        });
        if (text->empty() || text->front() != '/' || has_space || HasControlCharacter(*text) ||
            text->size() > kMaxHttpPathChars) {
          Error(http_path_path,
                fmt::format("{} is not an HTTP path: it must start with '/' and contain no "
                            "spaces (at most {} characters)",
                            Quote(*text), kMaxHttpPathChars));
        } else {
          health.http_path = *text;
        }
      }
    }
    if (const auto* timeout = Find(*fields, "timeout")) {
      if (auto value =
              ReadDuration(*timeout, Child(path, "timeout"), seconds(1), kMaxHealthTimeout)) {
        health.timeout = *value;
      }
    }
    if (const auto* interval = Find(*fields, "interval")) {
      if (auto value =
              ReadDuration(*interval, Child(path, "interval"), seconds(1), kMaxHealthInterval)) {
        health.interval = *value;
      }
    }
  }

  // Runs after `name` is read, so a service depending on itself is caught.
  void ParseDependsOn(const YAML::Node& node, const std::string& path) {
    std::set<std::string> seen;
    ForEachElement(
        node, path, "service names", [&](const YAML::Node& element, const std::string& at) {
          const auto name = ReadString(element, at);
          if (!name) return;
          if (!IsValidServiceName(*name)) {
            Error(at,
                  fmt::format("{} is not a valid service name: use 1-64 letters, digits, '-' or "
                              "'_'",
                              Quote(*name)));
            return;
          }
          if (IsPlatformService(*name)) {
            Error(at, fmt::format("{} is a platform service, which is always running; depends_on "
                                  "lists your own services",
                                  Quote(*name)));
            return;
          }
          if (*name == manifest_.name) {
            Error(at, "a service cannot depend on itself");
            return;
          }
          if (!seen.insert(*name).second) {
            Error(at, fmt::format("{} is listed twice", Quote(*name)));
            return;
          }
          manifest_.depends_on.push_back(*name);
        });
  }

  Manifest manifest_;
  std::vector<ManifestError> errors_;
};

}  // namespace

ManifestResult ParseManifest(std::string_view yaml_text) {
  try {
    return ManifestParser().Parse(yaml_text);
  } catch (const std::exception& e) {
    // Only allocation failures get here; the parser itself catches what yaml-cpp throws.
    ManifestResult result;
    result.errors.push_back({"", fmt::format("could not read the manifest: {}", e.what())});
    return result;
  }
}

std::string FormatManifestErrors(const std::vector<ManifestError>& errors, std::string_view file) {
  std::string out;
  for (const auto& error : errors) {
    if (error.path.empty()) {
      out += fmt::format("{}: {}\n", file, error.message);
    } else {
      out += fmt::format("{}: {}: {}\n", file, error.path, error.message);
    }
  }
  return out;
}

}  // namespace muon::builder
