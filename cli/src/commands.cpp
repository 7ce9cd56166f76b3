#include "muon/cli/commands.h"

#include <fmt/format.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "muon/cli/exit_codes.h"
#include "muon/cli/output.h"
#include "muon/cli/scheduler_output.h"
#include "muon/common/config.h"
#include "muon/common/log_lines.h"
#include "muon/common/service.h"

#ifndef MUON_CLI_VERSION
#define MUON_CLI_VERSION "0.0.0"
#endif

namespace muon::cli {
namespace {

struct FlagSpec {
  std::string name;        // without dashes
  std::string value_name;  // empty for a boolean flag
  bool repeatable = false;
  std::string help;
};

struct Positional {
  std::string name;
  bool required = true;
  bool variadic = false;  // the last one only: takes every remaining argument
  bool rest = false;      // variadic, and from its first word on nothing is a flag (a command)
};

struct CommandSpec {
  std::vector<std::string> path;  // {"env", "add"}
  std::vector<Positional> positionals;
  std::vector<FlagSpec> flags;
  std::string summary;
  std::string details;  // optional extra paragraph for --help
};

const std::vector<FlagSpec>& GlobalFlags() {
  static const std::vector<FlagSpec> kFlags = {
      {"output", "json|table", false, "table for humans (default), json for scripts"},
      {"env", "NAME", false, "use this env for one command (default: the current env)"},
      {"insecure", "", false, "do not verify the ingress's TLS certificate"},
  };
  return kFlags;
}

const std::vector<CommandSpec>& Specs() {
  static const std::vector<CommandSpec> kSpecs = {
      {{"env", "list"}, {}, {}, "list the configured ingress endpoints"},
      {{"env", "add"},
       {{"NAME"}, {"URL"}},
       {{"region", "R", false, "the region this ingress serves (matched by login --region)"}},
       "add a named ingress endpoint (the first one becomes current)",
       "URL is http(s)://host[:port][/prefix]."},
      {{"env", "use"}, {{"NAME"}}, {}, "make NAME the current env"},
      {{"env", "remove"}, {{"NAME"}}, {}, "remove an env and its stored credentials"},
      {{"login"},
       {},
       {{"region", "R", false, "log in at the env whose region (or name) is R"},
        {"email", "E", false, "account email (prompted for on a terminal)"},
        {"password-stdin", "", false, "read the password from the first line of stdin"}},
       "log in and store the tokens",
       "Without --password-stdin the password is prompted for on the terminal (not echoed)."},
      {{"logout"}, {}, {}, "revoke the session and delete the stored credentials"},
      {{"whoami"},
       {},
       {},
       "show the logged-in account, its roles and the token's region and expiry"},
      {{"token"},
       {},
       {},
       "print a valid access token for scripts (refreshed when needed)",
       "e.g. curl -H \"Authorization: Bearer $(muon token)\" URL\n"
       "MUON_TOKEN=<token> makes any command use that token instead of the stored session."},
      {{"signup"},
       {},
       {{"invite", "CODE", false, "the invite code an admin gave you (required)"},
        {"email", "E", false, "the invited email address (required)"},
        {"name", "N", false, "your name"},
        {"password-stdin", "", false, "read the new password from the first line of stdin"}},
       "create your account with an invite and log in"},
      {{"passwd"},
       {},
       {{"password-stdin", "", false,
         "read the current password, then the new one, from two lines of stdin"}},
       "change your password"},
      {{"call"},
       {{"SERVICE"}, {"METHOD"}, {"JSON|-", false}},
       {{"version", "V", false,
         "call this release or preview version, e.g. v3 (header Muon-Version)"},
        {"timeout", "D", false, "give up after D, e.g. 500ms, 5s (header Muon-Timeout)"}},
       "call a method of a service through the ingress",
       "The body is the JSON argument, stdin with '-', or {} when omitted; it must be valid JSON.\n"
       "The reply is pretty-printed; with --output json it is printed on one line."},
      {{"services"}, {}, {}, "list the running services, their versions, instances and endpoints"},
      {{"logs"},
       {{"SERVICE", false}},
       {{"follow", "", false, "keep printing new lines as they arrive (-f)"},
        {"instance", "I", false, "only this instance"},
        {"release", "R", false, "only this release, e.g. v3"},
        {"source", "app|system|build|platform", false, "only lines from this source"},
        {"severity", "LEVEL", false, "this severity and above: debug, info, warn, error, fatal"},
        {"since", "D|TIME", false,
         "from D ago (90s, 15m, 2h, 7d) or an RFC 3339 time (default 24h)"},
        {"until", "D|TIME", false, "up to D ago or an RFC 3339 time (not with -f)"},
        {"grep", "TEXT", false, "only lines containing TEXT (case-insensitive)"},
        {"lines", "N", false, "how many of the latest lines to show first (-n, default 100)"},
        {"build", "ID", false, "the output of build ID instead of a service's lines"}},
       "show a service's log lines; -f follows them live",
       "Each line: time source service/instance severity message.\n"
       "With --output json every line is one JSON object (one per line of output)."},
      {{"accounts", "list"}, {}, {}, "list accounts (admin)"},
      {{"accounts", "disable"}, {{"EMAIL"}}, {}, "disable an account (admin)"},
      {{"accounts", "enable"}, {{"EMAIL"}}, {}, "enable a disabled account (admin)"},
      {{"invites", "list"}, {}, {}, "list invites (admin)"},
      {{"invites", "create"},
       {{"EMAIL"}},
       {{"role", "R", true, "grant role R (repeatable, or comma-separated; default: developer)"},
        {"ttl", "D", false, "how long the invite is valid, e.g. 48h (default: 7 days)"}},
       "invite someone; prints the code and the signup command to give them (admin)"},
      {{"rules", "list"}, {}, {}, "list access rules, highest priority first (admin)"},
      {{"rules", "add"},
       {},
       {{"role", "R", false, "a role, '*' (any logged-in caller) or 'public' (required)"},
        {"service", "S", false, "a service name or '*' (required)"},
        {"endpoint", "P", false, "a method pattern, '*' matches any run of characters (required)"},
        {"effect", "allow|deny", false, "(required)"},
        {"priority", "N", false, "highest wins; on a tie deny wins (required)"},
        {"description", "T", false, "why the rule exists"}},
       "add an access rule (admin)"},
      {{"rules", "delete"}, {{"ID"}}, {}, "delete an access rule (admin)"},
      {{"repos", "list"},
       {},
       {},
       "list the GitHub repositories whose webhooks Muon accepts (admin)",
       "PREVIOUS SECRET UNTIL: after rotate-secret, the old secret is still accepted until then.\n"
       "REJECTED: deliveries refused for a bad or missing signature (see `muon deliveries`)."},
      {{"repos", "add"},
       {{"OWNER/NAME"}},
       {{"secret-file", "F", false,
         "file holding the webhook secret set on GitHub, one line (required)"},
        {"clone-url", "URL", false,
         "where to fetch from (default https://github.com/OWNER/NAME.git)"},
        {"branch", "B", false, "the default branch: pushes to it deploy (default main)"}},
       "register a GitHub repository and its webhook secret (admin)",
       "Prints where to point the repository's GitHub webhook. The secret is never printed."},
      {{"repos", "remove"},
       {{"OWNER/NAME"}},
       {},
       "unregister a repository: its webhooks are refused from then on (admin)"},
      {{"repos", "rotate-secret"},
       {{"OWNER/NAME"}},
       {{"secret-file", "F", false, "file holding the new webhook secret, one line (required)"},
        {"grace", "D", false,
         "how long the old secret stays valid, e.g. 1h, 24h; 0s for not at all (default 24h)"}},
       "replace a repo's webhook secret; the old one stays valid for --grace (admin)",
       "Set the new secret on GitHub before the grace period ends."},
      {{"repos", "sync"},
       {{"OWNER/NAME"}},
       {{"branch", "B", false, "the branch to build (default: the repo's default branch)"}},
       "build what is missing at a branch's head: the recovery for a webhook that never arrived",
       "Every service at the head is asked for; one whose folder is unchanged since its last\n"
       "build reuses that artifact, so only what is missing runs."},
      {{"deliveries"},
       {},
       {{"repo", "OWNER/NAME", false, "only this repository's deliveries"},
        {"lines", "N", false,
         "how many of the newest deliveries to show (-n, 1-1000, default 50)"}},
       "list the newest GitHub webhook deliveries and the rejected ones (admin)",
       "DETAIL: for a push, the ref and the new commit, then what processing did.\n"
       "Rejected deliveries (bad or missing signature, unknown repository) are not stored, only\n"
       "counted per repository and reason; they are listed under the deliveries."},
      {{"builds", "list"},
       {},
       {{"service", "S", false, "only this service's builds"},
        {"repo", "OWNER/NAME", false, "only builds from this repository"},
        {"lines", "N", false, "how many of the newest builds to show (-n, 1-500, default 20)"}},
       "list the newest builds of services, newest first",
       "COMMIT: the first 12 characters. STATUS: queued, running, succeeded, or failed (with the\n"
       "category: build_failed, timeout, fetch_failed, manifest_invalid, output_invalid).\n"
       "DURATION: from start to finish (so far, while running)."},
      {{"builds", "show"},
       {{"ID"}},
       {},
       "show a build: commit, trigger, status, times, artifact; why it failed",
       "A failed build shows its category, step, exit code and the last lines of its output."},
      {{"builds", "logs"},
       {{"ID"}},
       {{"follow", "", false, "keep printing new lines as they arrive (-f)"},
        {"lines", "N", false, "how many of the latest lines to show first (-n, default 100)"}},
       "show a build's output; -f follows it live",
       "The same as `muon logs --build ID`."},
      {{"deploy"},
       {{"SERVICE"}},
       {{"ref", "REF", false, "build SERVICE at this commit sha or branch name, then roll it out"},
        {"repo", "OWNER/NAME", false,
         "with --ref: the repository holding SERVICE (default: the repo of its last build)"},
        {"release", "vN", false, "roll out this existing release again (v3 or 3)"}},
       "deploy SERVICE: build it at --ref, roll out --release vN, or the newest release",
       "--ref REF asks the builder for a build (a build with identical inputs done before is not\n"
       "repeated: its artifact is reused); the scheduler rolls out the release it makes.\n"
       "--release vN rolls out that release again. With neither, the newest release is rolled\n"
       "out and a paused auto-deploy resumes. Every deploy prints its receipt and how to watch\n"
       "it: muon wait SERVICE, muon events SERVICE -f."},
      {{"status"},
       {{"SERVICE", false}},
       {},
       "what runs: every service (and the nodes), or one service and its instances",
       "REPLICAS: healthy instances of the live release / desired. STATE: converged, rolling_out,\n"
       "degraded, failed (the last rollout failed; the previous release serves), pending (no\n"
       "release yet), stopped (0 replicas). AUTO-DEPLOY: on, or paused after a failed rollout\n"
       "until a push or `muon deploy SERVICE`."},
      {{"describe"},
       {{"SERVICE"}},
       {},
       "a service in full: status, instances, config keys, releases and recent events",
       "Config keys only, never values; secrets are marked (secret), required keys that are not\n"
       "set are marked MISSING."},
      {{"releases"},
       {{"SERVICE"}},
       {{"lines", "N", false, "how many of the newest releases to show (-n, 1-500, default 20)"}},
       "list a service's releases, newest first",
       "A release is immutable: an artifact plus a config version. REASON: build, config,\n"
       "rollback or redeploy (of vN). A failed release's category, detail and last lines are\n"
       "shown."},
      {{"history"},
       {{"SERVICE"}},
       {{"lines", "N", false, "how many of the newest entries to show (-n, 1-1000, default 50)"}},
       "a service's deploy history: releases, rollouts, scaling, config, auto-deploy, locks",
       "Oldest first, like a log; `muon events SERVICE` shows every event, instances too."},
      {{"events"},
       {{"SERVICE", false}},
       {{"follow", "", false, "keep printing new events as they happen (-f), until Ctrl-C"},
        {"since", "D|TIME", false, "from D ago (90s, 15m, 2h, 1d) or an RFC 3339 time"},
        {"lines", "N", false, "how many events to show first (-n, 1-1000, default 100)"}},
       "the event trail of a service (or of every service); -f follows it",
       "Each line: TIME SERVICE TYPE RELEASE INSTANCE MESSAGE, oldest first.\n"
       "With --output json every event is one JSON object on a line of its own."},
      {{"wait"},
       {{"SERVICE"}},
       {{"release", "vN", false, "wait until this release (or a newer one) is live"},
        {"build", "ID", false,
         "wait for build ID (muon deploy --ref), then until the release made of it is live"},
        {"timeout", "D", false, "give up after D (default 5m)"}},
       "wait until a service has converged; fails when its rollout fails",
       "Polls the service's status every 500 ms and prints a line whenever its state or healthy\n"
       "count changes. Exit 0: converged (or stopped at 0 replicas). Exit 8: the rollout failed\n"
       "(its category, detail and last lines are printed), or the build failed. Exit 9: not\n"
       "converged within --timeout. Without --release or --build it waits for the service as it\n"
       "is now: right after a push or `muon deploy --ref`, use --build ID."},
      {{"drift"},
       {{"SERVICE", false}},
       {},
       "where what runs differs from what is desired (missing, unexpected, wrong_state, lost)"},
      {{"locks"}, {}, {}, "list the deploy locks held: by which rollout, why, until when"},
      {{"unlock"},
       {{"SERVICE"}},
       {{"force", "", false, "yes, release a lock its rollout still holds (required; audited)"}},
       "release a service's deploy lock by force",
       "A deploy lock is released by the rollout that holds it, or expires. Forcing it is for a\n"
       "holder that is gone; it is recorded as a lock.forced event with your name."},
      {{"rollback"},
       {{"SERVICE"}},
       {{"to", "vN", false, "the release to go back to (default: the one live before)"}},
       "roll a service back: a new release with an earlier release's artifact and config"},
      {{"scale"}, {{"SERVICE"}, {"N"}}, {}, "run N instances of a service (0-100; 0 stops it)"},
      {{"env", "set"},
       {{"SERVICE"}, {"KEY=VALUE", true, true}},
       {{"no-deploy", "", false, "store the config only; the next release picks it up"}},
       "set a service's env variables (not the CLI's envs), then deploy",
       "KEY: upper-case letters, digits and '_' (e.g. DATABASE_URL); MUON_* keys are reserved.\n"
       "Without --no-deploy a release with the new config is rolled out. For secrets use\n"
       "`muon secrets set`: values given here are stored and shown as plain config."},
      {{"env", "unset"},
       {{"SERVICE"}, {"KEY", true, true}},
       {{"no-deploy", "", false, "store the config only; the next release picks it up"}},
       "remove env variables from a service's config, then deploy"},
      {{"secrets", "set"},
       {{"SERVICE"}, {"KEY"}},
       {{"from-file", "F", false, "the value is the content of F (one trailing newline removed)"},
        {"from-stdin", "", false, "read the value from stdin (one trailing newline removed)"},
        {"no-deploy", "", false, "store the secret only; the next release picks it up"}},
       "set a secret env variable of a service: stored encrypted, never shown again",
       "The value never appears on the command line; give exactly one of --from-file and\n"
       "--from-stdin."},
      {{"exec"},
       {{"SERVICE"}, {"CMD", true, true, true}},
       {{"instance", "I", false, "run it in this instance (default: any running instance)"},
        {"timeout", "D", false, "give up after D (default 30s, at most 10m)"}},
       "run a command in an instance's directory and print its output",
       "Everything from CMD on is the command and its arguments (`--` before CMD also works):\n"
       "  muon exec api -- ls -la\n"
       "Exits with the command's exit code (128 + N when killed by signal N). The output\n"
       "(stdout and stderr together) is printed when the command ends, at most 1 MiB."},
  };
  return kSpecs;
}

// Group commands: their subcommands and the one used when none is given.
const std::map<std::string, std::pair<std::vector<std::string>, std::string>>& Groups() {
  static const std::map<std::string, std::pair<std::vector<std::string>, std::string>> kGroups = {
      {"env", {{"list", "add", "use", "remove", "set", "unset"}, "list"}},
      {"secrets", {{"set"}, ""}},
      {"accounts", {{"list", "disable", "enable"}, "list"}},
      {"invites", {{"list", "create"}, "list"}},
      {"rules", {{"list", "add", "delete"}, "list"}},
      {"repos", {{"list", "add", "remove", "rotate-secret", "sync"}, "list"}},
      {"builds", {{"list", "show", "logs"}, "list"}},
  };
  return kGroups;
}

std::string Join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += sep;
    out += parts[i];
  }
  return out;
}

std::string PathString(const CommandSpec& spec) {
  return Join(spec.path, " ");
}

std::string UsageLine(const CommandSpec& spec) {
  std::string line = "usage: muon " + PathString(spec);
  for (const auto& p : spec.positionals) {
    const std::string name = p.name + (p.variadic ? "..." : "");
    line += p.required ? " " + name : " [" + name + "]";
  }
  for (const auto& f : spec.flags) {
    std::string flag = "--" + f.name + (f.value_name.empty() ? "" : " " + f.value_name);
    const bool required = f.help.find("(required)") != std::string::npos;
    line += required ? " " + flag : " [" + flag + "]";
    if (f.repeatable) line += "...";
  }
  return line;
}

// Two columns: the flags and their help; `extra` rows (already spelled out) go last.
std::string FlagTable(const std::vector<FlagSpec>& flags,
                      const std::vector<std::pair<std::string, std::string>>& extra = {}) {
  std::vector<std::pair<std::string, std::string>> rows;
  for (const auto& f : flags) {
    rows.emplace_back("--" + f.name + (f.value_name.empty() ? "" : " " + f.value_name), f.help);
  }
  rows.insert(rows.end(), extra.begin(), extra.end());
  size_t width = 0;
  for (const auto& row : rows) width = std::max(width, row.first.size());
  std::string out;
  for (const auto& [left, help] : rows) out += fmt::format("  {:<{}}  {}\n", left, width, help);
  return out;
}

std::string CommandHelp(const CommandSpec& spec) {
  std::string out = UsageLine(spec) + "\n\n" + spec.summary + ".\n";
  if (!spec.details.empty()) out += spec.details + "\n";
  if (!spec.flags.empty()) out += "\nflags:\n" + FlagTable(spec.flags);
  out += "\nglobal flags:\n" + FlagTable(GlobalFlags(), {{"-h, --help", "show this help"}});
  return out;
}

std::string ShortUsage(const CommandSpec& spec) {
  return UsageLine(spec) + "\n(run `muon " + PathString(spec) + " --help` for details)";
}

const CommandSpec* FindSpec(const std::vector<std::string>& path) {
  for (const auto& spec : Specs()) {
    if (spec.path == path) return &spec;
  }
  return nullptr;
}

// Groups whose `muon GROUP --help` lists every subcommand rather than the default one's help.
bool HasOverview(const std::string& group) {
  return group == "env" || group == "secrets";
}

std::string GroupHelp(const std::string& group) {
  std::string out;
  if (group == "env") {
    out =
        "muon env: two kinds of env share this command.\n\n"
        "The CLI's own ingress endpoints (stored in ~/.config/muon; chosen per command with\n"
        "--env NAME):\n";
  } else {
    out = fmt::format("muon {}:\n", group);
  }
  auto list = [&](const std::vector<std::string>& names) {
    for (const auto& name : names) {
      const CommandSpec* spec = FindSpec({group, name});
      if (spec == nullptr) continue;
      out += fmt::format("  {}\n      {}\n", UsageLine(*spec).substr(7), spec->summary);
    }
  };
  if (group == "env") {
    list({"list", "add", "use", "remove"});
    out +=
        "\nA service's env variables (its config, stored by the scheduler; a new release rolls\n"
        "out unless --no-deploy; secrets: muon secrets set):\n";
    list({"set", "unset"});
    out += "\n`muon env` alone is `muon env list`. Run `muon env SUBCOMMAND --help` for details.\n";
  } else {
    list(Groups().at(group).first);
    out += fmt::format("\nRun `muon {} SUBCOMMAND --help` for details.\n", group);
  }
  return out;
}

std::string MainUsage() {
  return "usage: muon [--output json|table] [--env NAME] COMMAND [args]\n"
         "(run `muon --help` for the list of commands)";
}

struct Parsed {
  std::vector<std::string> positionals;
  std::map<std::string, std::vector<std::string>> flags;

  bool Has(const std::string& name) const { return flags.count(name) > 0; }
  std::string Get(const std::string& name) const {
    auto it = flags.find(name);
    return it == flags.end() || it->second.empty() ? std::string{} : it->second.back();
  }
};

const FlagSpec* FindFlag(const std::vector<FlagSpec>& flags, std::string_view name) {
  for (const auto& f : flags) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

void ApplyGlobal(GlobalOptions& global, const std::string& name, const std::string& value,
                 const std::string& usage) {
  if (name == "output") {
    if (value == "json") {
      global.output = OutputFormat::kJson;
    } else if (value == "table") {
      global.output = OutputFormat::kTable;
    } else {
      throw UsageError(fmt::format("--output must be json or table, not '{}'", value), usage);
    }
  } else if (name == "env") {
    if (!IsValidEnvName(value)) {
      throw UsageError(fmt::format("--env: '{}' is not a valid env name", value), usage);
    }
    global.env = value;
  } else if (name == "insecure") {
    global.insecure = true;
  }
}

// Reads one flag token at args[i] (a global flag, or one of `flags` when given). Returns false
// when the token is not a flag. Advances i past a separate value.
bool TakeFlag(const std::vector<std::string>& args, size_t& i, const std::vector<FlagSpec>* flags,
              GlobalOptions& global, Parsed* parsed, const std::string& usage,
              const std::string& where) {
  const std::string& arg = args[i];
  std::string name;
  std::optional<std::string> inline_value;
  if (arg == "-o") {
    name = "output";
  } else if (arg == "-f" || arg == "-n") {
    name = arg == "-f" ? "follow" : "lines";
  } else if (arg.size() > 2 && arg.compare(0, 2, "--") == 0) {
    const auto eq = arg.find('=');
    name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    if (eq != std::string::npos) inline_value = arg.substr(eq + 1);
  } else if (arg.size() > 1 && arg[0] == '-') {
    throw UsageError(fmt::format("{}unknown flag {}", where, arg), usage);
  } else {
    return false;
  }
  const FlagSpec* spec = flags != nullptr ? FindFlag(*flags, name) : nullptr;
  const bool global_flag = spec == nullptr && FindFlag(GlobalFlags(), name) != nullptr;
  if (spec == nullptr) spec = FindFlag(GlobalFlags(), name);
  if (spec == nullptr) throw UsageError(fmt::format("{}unknown flag --{}", where, name), usage);

  std::string value;
  if (spec->value_name.empty()) {
    if (inline_value) {
      throw UsageError(fmt::format("{}flag --{} takes no value", where, name), usage);
    }
  } else if (inline_value) {
    value = *inline_value;
  } else {
    if (i + 1 >= args.size()) {
      throw UsageError(fmt::format("{}flag --{} needs a value ({})", where, name, spec->value_name),
                       usage);
    }
    value = args[++i];
  }
  if (global_flag) {
    ApplyGlobal(global, name, value, usage);
    return true;
  }
  auto& values = parsed->flags[name];
  if (!values.empty() && !spec->repeatable) {
    throw UsageError(fmt::format("{}flag --{} given more than once", where, name), usage);
  }
  values.push_back(value);
  return true;
}

bool IsHelp(const std::string& arg) {
  return arg == "-h" || arg == "--help";
}

std::string Trimmed(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

void RequireEmail(const std::string& email, const std::string& what, const std::string& usage) {
  if (email.empty() || email.find('@') == std::string::npos ||
      std::any_of(email.begin(), email.end(),
                  [](unsigned char c) { return std::isspace(c) || std::iscntrl(c); })) {
    throw UsageError(fmt::format("{}: '{}' is not an email address", what, email), usage);
  }
}

std::string Required(const Parsed& p, const std::string& flag, const std::string& usage) {
  std::string value = p.Get(flag);
  if (value.empty()) throw UsageError(fmt::format("--{} is required", flag), usage);
  return value;
}

std::chrono::nanoseconds PositiveDuration(const std::string& flag, const std::string& text,
                                          const std::string& usage) {
  auto d = config::ParseDuration(text);
  if (!d) {
    throw UsageError(
        fmt::format("--{}: '{}' is not a duration (e.g. 500ms, 5s, 1m30s, 48h)", flag, text),
        usage);
  }
  if (d->count() <= 0) throw UsageError(fmt::format("--{} must be more than 0", flag), usage);
  return *d;
}

bool IsTimeArg(const std::string& text) {
  if (config::ParseDuration(text)) return true;
  google::protobuf::Timestamp ts;
  return google::protobuf::util::TimeUtil::FromString(text, &ts);
}

LogsCmd BuildLogs(const Parsed& p, const std::string& service, const std::string& usage) {
  LogsCmd cmd;
  cmd.service = service;
  cmd.follow = p.Has("follow");
  cmd.build = p.Get("build");
  if (cmd.service.empty() && cmd.build.empty()) {
    throw UsageError("name a SERVICE (or --build ID)", usage);
  }
  auto token = [&](const std::string& what, const std::string& value) {
    if (!value.empty() && !loglines::IsValidToken(value)) {
      throw UsageError(
          fmt::format("{}: '{}' is not a valid name (letters, digits, '_', '-')", what, value),
          usage);
    }
  };
  token("SERVICE", cmd.service);
  token("--build", cmd.build);
  cmd.instance = p.Get("instance");
  token("--instance", cmd.instance);
  cmd.release = p.Get("release");
  if (!cmd.build.empty() && !cmd.instance.empty()) {
    throw UsageError("--build and --instance cannot be combined", usage);
  }
  cmd.source = p.Get("source");
  if (!cmd.source.empty() && !loglines::ParseSourceName(cmd.source)) {
    throw UsageError(
        fmt::format("--source: '{}' is not one of app, system, build, platform", cmd.source),
        usage);
  }
  cmd.severity = p.Get("severity");
  if (!cmd.severity.empty() && !loglines::ParseSeverityName(cmd.severity)) {
    throw UsageError(
        fmt::format("--severity: '{}' is not one of debug, info, warn, error, fatal", cmd.severity),
        usage);
  }
  for (const char* flag : {"since", "until"}) {
    const std::string value = p.Get(flag);
    if (!value.empty() && !IsTimeArg(value)) {
      throw UsageError(fmt::format("--{}: '{}' is neither a duration (90s, 15m, 2h, 7d) nor an "
                                   "RFC 3339 time (2026-11-30T10:00:00Z)",
                                   flag, value),
                       usage);
    }
  }
  cmd.since = p.Get("since");
  cmd.until = p.Get("until");
  if (cmd.follow && !cmd.until.empty()) {
    throw UsageError("--until cannot be combined with -f (following has no end)", usage);
  }
  if (cmd.follow && !cmd.since.empty()) {
    throw UsageError(
        "--since cannot be combined with -f; -n N sets how many recent lines come first", usage);
  }
  cmd.grep = p.Get("grep");
  if (p.Has("lines")) {
    const std::string n = p.Get("lines");
    int value = -1;
    auto [ptr, ec] = std::from_chars(n.data(), n.data() + n.size(), value);
    const int max = cmd.follow ? 1000 : 10000;
    if (ec != std::errc() || ptr != n.data() + n.size() || value < (cmd.follow ? 0 : 1) ||
        value > max) {
      throw UsageError(fmt::format("-n: '{}' is not a number of lines from {} to {}", n,
                                   cmd.follow ? 0 : 1, max),
                       usage);
    }
    cmd.lines = value;
  }
  return cmd;
}

// `what` is "" for the OWNER/NAME argument, else the flag.
std::string RepoName(const std::string& what, const std::string& name, const std::string& usage) {
  if (!IsValidRepoName(name)) {
    throw UsageError(fmt::format("{}'{}' is not a GitHub repository as OWNER/NAME (each part 1 "
                                 "to 100 letters, digits, '.', '_', '-'; not . or ..)",
                                 what.empty() ? "" : what + ": ", Sanitize(name)),
                     usage);
  }
  return name;
}

// --clone-url and --branch are checked by github-events; locally only that they are one word.
std::string OneWord(const Parsed& p, const std::string& flag, const std::string& usage) {
  const std::string value = p.Get(flag);
  if (p.Has(flag) && (value.empty() || std::any_of(value.begin(), value.end(), [](unsigned char c) {
                        return std::isspace(c) || std::iscntrl(c);
                      }))) {
    throw UsageError(fmt::format("--{}: '{}' must be non-empty, without spaces or control "
                                 "characters",
                                 flag, Sanitize(value)),
                     usage);
  }
  return value;
}

// A service name the builder takes: its own rule (muon::IsValidServiceName, 1 to 64 of
// A-Z a-z 0-9 _ -), so a name it would refuse with 400 never leaves the machine. `what` is "" for
// the SERVICE argument, else the flag.
std::string BuildService(const std::string& what, const std::string& name,
                         const std::string& usage) {
  if (!muon::IsValidServiceName(name)) {
    throw UsageError(fmt::format("{}'{}' is not a service name (1 to 64 letters, digits, '_', '-')",
                                 what.empty() ? "" : what + ": ", Sanitize(name)),
                     usage);
  }
  return name;
}

// A build id as `muon logs --build` takes it (b-1a2b3c4d5e6f).
std::string BuildId(const std::string& id, const std::string& usage) {
  if (!loglines::IsValidToken(id)) {
    throw UsageError(fmt::format("ID: '{}' is not a build id (letters, digits, '_', '-'; e.g. "
                                 "b-1a2b3c4d5e6f)",
                                 Sanitize(id)),
                     usage);
  }
  return id;
}

// -n N: a number from 1 to max of `what`.
int Count(const std::string& n, int max, const std::string& what, const std::string& usage) {
  int value = 0;
  auto [ptr, ec] = std::from_chars(n.data(), n.data() + n.size(), value);
  if (ec != std::errc() || ptr != n.data() + n.size() || value < 1 || value > max) {
    throw UsageError(
        fmt::format("-n: '{}' is not a number of {} from 1 to {}", Sanitize(n), what, max), usage);
  }
  return value;
}

// --release vN, --to vN: "v3" or "3".
int32_t ReleaseArg(const std::string& what, const std::string& text, const std::string& usage) {
  auto version = ParseReleaseVersion(text);
  if (!version) {
    throw UsageError(
        fmt::format("{}: '{}' is not a release number (e.g. v3 or 3)", what, Sanitize(text)),
        usage);
  }
  return *version;
}

Command Build(const CommandSpec& spec, const Parsed& p, const std::string& usage) {
  const std::string path = PathString(spec);
  auto pos = [&](size_t i) { return i < p.positionals.size() ? p.positionals[i] : std::string{}; };

  if (path == "env list") return EnvListCmd{};
  if (path == "env add") {
    EnvAddCmd cmd{pos(0), pos(1), p.Get("region")};
    if (!IsValidEnvName(cmd.name)) {
      throw UsageError(
          fmt::format("'{}' is not a valid env name (letters, digits, '.', '_', '-')", cmd.name),
          usage);
    }
    if (!cmd.region.empty() && !IsValidEnvName(cmd.region)) {
      throw UsageError(fmt::format("--region: '{}' is not a valid region name", cmd.region), usage);
    }
    return cmd;
  }
  if (path == "env use" || path == "env remove") {
    if (!IsValidEnvName(pos(0))) {
      throw UsageError(fmt::format("'{}' is not a valid env name", pos(0)), usage);
    }
    if (path == "env use") return EnvUseCmd{pos(0)};
    return EnvRemoveCmd{pos(0)};
  }
  if (path == "login") {
    LoginCmd cmd{p.Get("region"), Trimmed(p.Get("email")), p.Has("password-stdin")};
    if (p.Has("region") && !IsValidEnvName(cmd.region)) {
      throw UsageError(fmt::format("--region: '{}' is not a valid region name", cmd.region), usage);
    }
    if (p.Has("email")) RequireEmail(cmd.email, "--email", usage);
    return cmd;
  }
  if (path == "logout") return LogoutCmd{};
  if (path == "whoami") return WhoamiCmd{};
  if (path == "token") return TokenCmd{};
  if (path == "signup") {
    SignupCmd cmd;
    cmd.invite = Trimmed(Required(p, "invite", usage));
    cmd.email = Trimmed(Required(p, "email", usage));
    RequireEmail(cmd.email, "--email", usage);
    if (p.Has("name")) cmd.name = p.Get("name");
    cmd.password_stdin = p.Has("password-stdin");
    return cmd;
  }
  if (path == "passwd") return PasswdCmd{p.Has("password-stdin")};
  if (path == "call") {
    CallCmd cmd;
    cmd.service = pos(0);
    cmd.method = pos(1);
    if (!IsValidServiceName(cmd.service)) {
      throw UsageError(
          fmt::format("'{}' is not a service name (letters, digits, '_', '-')", cmd.service),
          usage);
    }
    if (!IsValidMethodName(cmd.method)) {
      throw UsageError(
          fmt::format("'{}' is not a method name (letters, digits, '_'; e.g. Echo)", cmd.method),
          usage);
    }
    if (p.positionals.size() > 2) {
      if (pos(2) == "-") {
        cmd.body_from_stdin = true;
      } else {
        cmd.body = pos(2);
      }
    }
    if (p.Has("version")) {
      cmd.version = p.Get("version");
      // The ingress's own rule for Muon-Version (one NATS subject token), so a label it would
      // refuse with 400 never leaves the machine.
      if (!muon::IsValidReleaseLabel(cmd.version)) {
        throw UsageError(fmt::format("--version: '{}' is not a release label (letters, digits, "
                                     "'_' and '-', at most 64; e.g. v3 or a branch slug)",
                                     cmd.version),
                         usage);
      }
    }
    if (p.Has("timeout")) cmd.timeout = PositiveDuration("timeout", p.Get("timeout"), usage);
    return cmd;
  }
  if (path == "services") return ServicesCmd{};
  if (path == "logs") return BuildLogs(p, pos(0), usage);
  if (path == "accounts list") return AccountsListCmd{};
  if (path == "accounts disable" || path == "accounts enable") {
    RequireEmail(pos(0), "EMAIL", usage);
    return AccountsSetDisabledCmd{pos(0), path == "accounts disable"};
  }
  if (path == "invites list") return InvitesListCmd{};
  if (path == "invites create") {
    InvitesCreateCmd cmd;
    cmd.email = pos(0);
    RequireEmail(cmd.email, "EMAIL", usage);
    auto it = p.flags.find("role");
    if (it != p.flags.end()) {
      for (const auto& value : it->second) {
        size_t start = 0;
        while (start <= value.size()) {
          const auto comma = value.find(',', start);
          std::string role = Trimmed(
              value.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
          if (role.empty()) throw UsageError("--role: empty role name", usage);
          if (std::find(cmd.roles.begin(), cmd.roles.end(), role) == cmd.roles.end()) {
            cmd.roles.push_back(role);
          }
          if (comma == std::string::npos) break;
          start = comma + 1;
        }
      }
    }
    if (p.Has("ttl")) {
      const auto ttl = PositiveDuration("ttl", p.Get("ttl"), usage);
      const auto seconds = std::chrono::ceil<std::chrono::seconds>(ttl).count();
      cmd.ttl_seconds = seconds;
    }
    return cmd;
  }
  if (path == "rules list") return RulesListCmd{};
  if (path == "rules add") {
    RulesAddCmd cmd;
    cmd.role = Required(p, "role", usage);
    cmd.service = Required(p, "service", usage);
    cmd.endpoint = Required(p, "endpoint", usage);
    cmd.effect = Required(p, "effect", usage);
    if (cmd.effect != "allow" && cmd.effect != "deny") {
      throw UsageError(fmt::format("--effect must be allow or deny, not '{}'", cmd.effect), usage);
    }
    const std::string priority = Required(p, "priority", usage);
    int32_t value = 0;
    const char* end = priority.data() + priority.size();
    auto [ptr, ec] = std::from_chars(priority.data(), end, value);
    if (ec != std::errc() || ptr != end) {
      throw UsageError(fmt::format("--priority: '{}' is not a whole number", priority), usage);
    }
    cmd.priority = value;
    cmd.description = p.Get("description");
    return cmd;
  }
  if (path == "rules delete") {
    if (pos(0).empty()) throw UsageError("ID must not be empty", usage);
    return RulesDeleteCmd{pos(0)};
  }
  if (path == "repos list") return ReposListCmd{};
  if (path == "repos add") {
    ReposAddCmd cmd;
    cmd.name = RepoName("", pos(0), usage);
    cmd.secret_file = Required(p, "secret-file", usage);
    cmd.clone_url = OneWord(p, "clone-url", usage);
    cmd.branch = OneWord(p, "branch", usage);
    return cmd;
  }
  if (path == "repos remove") return ReposRemoveCmd{RepoName("", pos(0), usage)};
  if (path == "repos rotate-secret") {
    ReposRotateSecretCmd cmd;
    cmd.name = RepoName("", pos(0), usage);
    cmd.secret_file = Required(p, "secret-file", usage);
    if (p.Has("grace")) {
      cmd.grace = p.Get("grace");
      // The parser of --timeout and --ttl; 0s is allowed here (the old secret ends at once).
      if (!config::ParseDuration(cmd.grace)) {
        throw UsageError(fmt::format("--grace: '{}' is not a duration (e.g. 0s, 30m, 24h, 7d)",
                                     Sanitize(cmd.grace)),
                         usage);
      }
    }
    return cmd;
  }
  if (path == "repos sync") {
    ReposSyncCmd cmd;
    cmd.name = RepoName("", pos(0), usage);
    cmd.branch = OneWord(p, "branch", usage);
    return cmd;
  }
  if (path == "deliveries") {
    DeliveriesCmd cmd;
    if (p.Has("repo")) cmd.repo = RepoName("--repo", p.Get("repo"), usage);
    if (p.Has("lines")) cmd.limit = Count(p.Get("lines"), 1000, "deliveries", usage);
    return cmd;
  }
  if (path == "builds list") {
    BuildsListCmd cmd;
    if (p.Has("service")) cmd.service = BuildService("--service", p.Get("service"), usage);
    if (p.Has("repo")) cmd.repo = RepoName("--repo", p.Get("repo"), usage);
    if (p.Has("lines")) cmd.limit = Count(p.Get("lines"), 500, "builds", usage);
    return cmd;
  }
  if (path == "builds show") return BuildsShowCmd{BuildId(pos(0), usage)};
  if (path == "builds logs") {
    // `muon logs --build ID`: the same command, parsed by the same function.
    Parsed logs = p;
    logs.flags["build"] = {BuildId(pos(0), usage)};
    return BuildLogs(logs, "", usage);
  }
  if (path == "deploy") {
    DeployCmd cmd;
    cmd.service = BuildService("", pos(0), usage);
    // No spaces or control characters: not a commit or a branch.
    if (p.Has("ref")) cmd.ref = OneWord(p, "ref", usage);
    if (p.Has("release")) {
      if (p.Has("ref")) {
        throw UsageError(
            "--ref and --release cannot be combined: --ref builds a new release, --release rolls "
            "out an existing one",
            usage);
      }
      cmd.release = ReleaseArg("--release", p.Get("release"), usage);
    }
    if (p.Has("repo")) {
      if (!p.Has("ref")) {
        throw UsageError("--repo goes with --ref (the repository to build SERVICE from)", usage);
      }
      cmd.repo = RepoName("--repo", p.Get("repo"), usage);
    }
    return cmd;
  }
  if (path == "status") {
    StatusCmd cmd;
    if (!pos(0).empty()) cmd.service = BuildService("", pos(0), usage);
    return cmd;
  }
  if (path == "describe") return DescribeCmd{BuildService("", pos(0), usage)};
  if (path == "releases") {
    ReleasesCmd cmd;
    cmd.service = BuildService("", pos(0), usage);
    if (p.Has("lines")) cmd.limit = Count(p.Get("lines"), 500, "releases", usage);
    return cmd;
  }
  if (path == "history") {
    HistoryCmd cmd;
    cmd.service = BuildService("", pos(0), usage);
    if (p.Has("lines")) cmd.limit = Count(p.Get("lines"), 1000, "entries", usage);
    return cmd;
  }
  if (path == "events") {
    EventsCmd cmd;
    if (!pos(0).empty()) cmd.service = BuildService("", pos(0), usage);
    cmd.follow = p.Has("follow");
    if (p.Has("since")) {
      cmd.since = p.Get("since");
      if (!IsTimeArg(cmd.since)) {
        throw UsageError(fmt::format("--since: '{}' is neither a duration (90s, 15m, 2h, 1d) nor "
                                     "an RFC 3339 time (2026-11-30T10:00:00Z)",
                                     Sanitize(cmd.since)),
                         usage);
      }
    }
    if (p.Has("lines")) cmd.limit = Count(p.Get("lines"), 1000, "events", usage);
    return cmd;
  }
  if (path == "wait") {
    WaitCmd cmd;
    cmd.service = BuildService("", pos(0), usage);
    if (p.Has("release")) cmd.release = ReleaseArg("--release", p.Get("release"), usage);
    if (p.Has("build")) {
      if (p.Has("release")) throw UsageError("--build and --release cannot be combined", usage);
      cmd.build = BuildId(p.Get("build"), usage);
    }
    if (p.Has("timeout")) {
      cmd.timeout = std::chrono::ceil<std::chrono::milliseconds>(
          PositiveDuration("timeout", p.Get("timeout"), usage));
    }
    return cmd;
  }
  if (path == "drift") {
    DriftCmd cmd;
    if (!pos(0).empty()) cmd.service = BuildService("", pos(0), usage);
    return cmd;
  }
  if (path == "locks") return LocksCmd{};
  if (path == "unlock") {
    UnlockCmd cmd{BuildService("", pos(0), usage)};
    if (!p.Has("force")) {
      throw UsageError(
          "a deploy lock is released by the rollout that holds it, or when it expires; to "
          "release it anyway add --force (recorded as a lock.forced event with your name)",
          usage);
    }
    return cmd;
  }
  if (path == "rollback") {
    RollbackCmd cmd;
    cmd.service = BuildService("", pos(0), usage);
    if (p.Has("to")) cmd.to_version = ReleaseArg("--to", p.Get("to"), usage);
    return cmd;
  }
  if (path == "scale") {
    ScaleCmd cmd;
    cmd.service = BuildService("", pos(0), usage);
    const std::string n = pos(1);
    int value = -1;
    auto [ptr, ec] = std::from_chars(n.data(), n.data() + n.size(), value);
    if (ec != std::errc() || ptr != n.data() + n.size() || value < 0 || value > 100) {
      throw UsageError(
          fmt::format("N: '{}' is not a number of replicas from 0 to 100", Sanitize(n)), usage);
    }
    cmd.replicas = value;
    return cmd;
  }
  if (path == "env set" || path == "env unset") {
    EnvSetCmd cmd;
    cmd.service = BuildService("", pos(0), usage);
    cmd.deploy = !p.Has("no-deploy");
    std::set<std::string> seen;
    for (size_t i = 1; i < p.positionals.size(); ++i) {
      std::string key;
      if (path == "env set") {
        std::string problem;
        auto kv = ParseKeyValue(p.positionals[i], &problem);
        if (!kv) throw UsageError(problem, usage);
        key = kv->first;
        cmd.set.push_back(std::move(*kv));
      } else {
        key = p.positionals[i];
        if (auto problem = EnvKeyProblem(key)) throw UsageError(*problem, usage);
        cmd.unset.push_back(key);
      }
      if (!seen.insert(key).second) {
        throw UsageError(fmt::format("{} is given more than once", key), usage);
      }
    }
    return cmd;
  }
  if (path == "secrets set") {
    SecretsSetCmd cmd;
    cmd.service = BuildService("", pos(0), usage);
    cmd.key = pos(1);
    if (auto problem = EnvKeyProblem(cmd.key)) throw UsageError(*problem, usage);
    cmd.from_stdin = p.Has("from-stdin");
    if (p.Has("from-file")) {
      cmd.file = p.Get("from-file");
      if (cmd.file.empty()) throw UsageError("--from-file: no file named", usage);
    }
    if (cmd.from_stdin == p.Has("from-file")) {
      throw UsageError(
          "give the value with exactly one of --from-file F and --from-stdin (never "
          "on the command line)",
          usage);
    }
    cmd.deploy = !p.Has("no-deploy");
    return cmd;
  }
  if (path == "exec") {
    ExecCmd cmd;
    cmd.service = BuildService("", pos(0), usage);
    cmd.command.assign(p.positionals.begin() + 1, p.positionals.end());
    if (cmd.command.front().empty()) throw UsageError("CMD must not be empty", usage);
    if (p.Has("instance")) {
      cmd.instance = p.Get("instance");
      if (!loglines::IsValidToken(cmd.instance)) {
        throw UsageError(fmt::format("--instance: '{}' is not an instance id (letters, digits, "
                                     "'_', '-')",
                                     Sanitize(cmd.instance)),
                         usage);
      }
    }
    if (p.Has("timeout")) {
      cmd.timeout = std::chrono::ceil<std::chrono::milliseconds>(
          PositiveDuration("timeout", p.Get("timeout"), usage));
      if (cmd.timeout > std::chrono::minutes(10)) {
        throw UsageError("--timeout: at most 10m", usage);
      }
    }
    return cmd;
  }
  throw UsageError(fmt::format("unknown command '{}'", path), MainUsage());
}

bool NameChars(std::string_view name, bool allow_dot) {
  return std::all_of(name.begin(), name.end(), [&](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '-' || (allow_dot && c == '.');
  });
}

}  // namespace

bool IsValidEnvName(std::string_view name) {
  return !name.empty() && name.size() <= 63 && std::isalnum(static_cast<unsigned char>(name[0])) &&
         NameChars(name, true);
}

bool IsValidServiceName(std::string_view name) {
  return !name.empty() && name.size() <= 128 && std::isalnum(static_cast<unsigned char>(name[0])) &&
         NameChars(name, false);
}

bool IsValidMethodName(std::string_view name) {
  return !name.empty() && name.size() <= 128 &&
         (std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_') &&
         std::all_of(name.begin(), name.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '_'; });
}

std::optional<std::string> SecretFromFileText(std::string_view text, std::string* problem) {
  auto fail = [&](std::string why) -> std::optional<std::string> {
    if (problem != nullptr) *problem = std::move(why);
    return std::nullopt;
  };
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  if (text.empty()) return fail("it is empty");
  if (text.find_first_of("\r\n") != std::string_view::npos) {
    return fail("it has more than one line (the secret is one line, as set on GitHub)");
  }
  if (text.find('\0') != std::string_view::npos) return fail("it contains a NUL byte");
  return std::string(text);
}

std::optional<std::string> ReadSecretFile(const std::string& path, std::string* problem) {
  constexpr size_t kMaxSecretFile = size_t{64} << 10;
  auto fail = [&](const std::string& why) -> std::optional<std::string> {
    if (problem != nullptr) {
      *problem = fmt::format("--secret-file: cannot use '{}': {}", Sanitize(path), why);
    }
    return std::nullopt;
  };
  if (path.empty()) return fail("no file named");
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return fail("it is a directory");
  std::ifstream file(path, std::ios::binary);
  if (!file) return fail(std::strerror(errno));
  std::string text;
  char buf[4096];
  while (file.read(buf, sizeof buf) || file.gcount() > 0) {
    text.append(buf, static_cast<size_t>(file.gcount()));
    if (text.size() > kMaxSecretFile) return fail("it is larger than 64 KiB");
  }
  if (file.bad()) return fail("read error");
  std::string why;
  auto secret = SecretFromFileText(text, &why);
  if (!secret) return fail(why);
  return secret;
}

std::string_view CliVersion() {
  return MUON_CLI_VERSION;
}

std::string MainHelp() {
  std::string out = fmt::format(
      "muon {} — the command line of the Muon platform\n\n"
      "usage: muon [global flags] COMMAND [args]\n\ncommands:\n",
      CliVersion());
  size_t width = 0;
  for (const auto& spec : Specs()) width = std::max(width, PathString(spec).size());
  for (const auto& spec : Specs()) {
    out += fmt::format("  {:<{}}  {}\n", PathString(spec), width, spec.summary);
  }
  out += "\nglobal flags:\n" +
         FlagTable(GlobalFlags(), {{"-o json|table", "short for --output"},
                                   {"-h, --help", "show help (also `muon COMMAND --help`)"},
                                   {"--version", "print the CLI version"}});
  out += R"(
which ingress: --env NAME (or $MUON_ENV), else the current env (`muon env use`), else
$MUON_INGRESS_URL (with $MUON_REGION), else MUON_INGRESS_URL in $MUON_STATE_DIR/stack.env or
<git toplevel or cwd>/.muon/stack.env, which the local stack (scripts/up) writes.

environment:
  XDG_CONFIG_HOME   config and credentials go to $XDG_CONFIG_HOME/muon (default ~/.config/muon)
  MUON_ENV          same as --env
  MUON_INSECURE=1   same as --insecure
  MUON_CA_FILE      PEM file of CA certificates to trust instead of the system's
  MUON_TOKEN        an access token to use instead of the stored session (never refreshed)

)";
  out += std::string(kExitCodeHelp) + "\n";
  return out;
}

Invocation ParseArgs(const std::vector<std::string>& args) {
  Invocation inv;
  size_t i = 0;
  // Global flags before the command.
  for (; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (IsHelp(arg)) {
      inv.command = HelpCmd{MainHelp()};
      return inv;
    }
    if (arg == "--version") {
      inv.command = VersionCmd{};
      return inv;
    }
    if (arg == "--") {
      ++i;
      break;
    }
    if (!TakeFlag(args, i, nullptr, inv.global, nullptr, MainUsage(), "")) break;
  }
  if (i >= args.size()) throw UsageError("missing command", MainUsage());

  // The command words.
  std::vector<std::string> path = {args[i++]};
  bool help_topic = false;
  if (path[0] == "help" || path[0] == "version") {
    if (path[0] == "version") {
      inv.command = VersionCmd{};
      return inv;
    }
    help_topic = true;
    if (i >= args.size()) {
      inv.command = HelpCmd{MainHelp()};
      return inv;
    }
    path = {args[i++]};
  }
  auto group = Groups().find(path[0]);
  if (group != Groups().end()) {
    const auto& [subcommands, fallback] = group->second;
    const bool named = i < args.size() && !args[i].empty() && args[i][0] != '-';
    if (!named && HasOverview(path[0])) {
      // `muon env --help`, `muon help env`: the whole group, since its subcommands differ in kind.
      bool help = help_topic;
      for (size_t j = i; j < args.size() && args[j] != "--"; ++j) help = help || IsHelp(args[j]);
      if (help) {
        inv.command = HelpCmd{GroupHelp(path[0])};
        return inv;
      }
    }
    if (!named && fallback.empty()) {
      throw UsageError(
          fmt::format("muon {} needs a subcommand: {}", path[0], Join(subcommands, ", ")),
          fmt::format("(run `muon {} --help` for details)", path[0]));
    }
    if (named) {
      if (std::find(subcommands.begin(), subcommands.end(), args[i]) == subcommands.end()) {
        throw UsageError(fmt::format("unknown command 'muon {} {}' (expected one of: {})", path[0],
                                     args[i], Join(subcommands, ", ")),
                         fmt::format("(run `muon {} --help` for details)", path[0]));
      }
      path.push_back(args[i++]);
    } else {
      path.push_back(fallback);
    }
  }
  const CommandSpec* spec = FindSpec(path);
  if (spec == nullptr) {
    throw UsageError(fmt::format("unknown command '{}'", Join(path, " ")), MainUsage());
  }
  if (help_topic) {
    inv.command = HelpCmd{CommandHelp(*spec)};
    return inv;
  }
  const std::string usage = ShortUsage(*spec);
  const std::string where = PathString(*spec) + ": ";

  // A help flag wins over any other problem on the line.
  for (size_t j = i; j < args.size() && args[j] != "--"; ++j) {
    if (IsHelp(args[j])) {
      inv.command = HelpCmd{CommandHelp(*spec)};
      return inv;
    }
  }

  Parsed parsed;
  bool only_positionals = false;
  for (; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (!only_positionals && arg == "--") {
      only_positionals = true;
      continue;
    }
    if (!only_positionals && TakeFlag(args, i, &spec->flags, inv.global, &parsed, usage, where)) {
      continue;
    }
    parsed.positionals.push_back(arg);
    // From the first word of a command on (muon exec SERVICE CMD ARGS...) nothing is a flag.
    if (!spec->positionals.empty() && spec->positionals.back().rest &&
        parsed.positionals.size() >= spec->positionals.size()) {
      only_positionals = true;
    }
  }
  const bool variadic = !spec->positionals.empty() && spec->positionals.back().variadic;
  const size_t max = variadic ? args.size() : spec->positionals.size();
  size_t min = 0;
  for (const auto& p : spec->positionals) min += p.required ? 1 : 0;
  if (parsed.positionals.size() < min) {
    throw UsageError(
        fmt::format("{}missing {}", where, spec->positionals[parsed.positionals.size()].name),
        usage);
  }
  if (parsed.positionals.size() > max) {
    throw UsageError(fmt::format("{}unexpected argument '{}'", where, parsed.positionals[max]),
                     usage);
  }
  inv.command = Build(*spec, parsed, usage);
  return inv;
}

}  // namespace muon::cli
