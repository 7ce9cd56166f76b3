#pragma once
// Command-line parsing for `muon`: one typed struct per command, validated up front, so a bad
// command line is a UsageError (exit code 2) with a clear reason and the command's usage line
// before anything touches the network or the config files.
//
// Global flags (--output, --env, --insecure) are accepted before or after the command words;
// `--` ends the flags. `-h`/`--help` anywhere asks for the command's help.

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "muon/common/service.h"

namespace muon::cli {

enum class OutputFormat { kTable, kJson };

struct GlobalOptions {
  OutputFormat output = OutputFormat::kTable;
  std::string env;        // --env NAME; empty = the current env (or $MUON_ENV)
  bool insecure = false;  // --insecure: skip TLS verification
};

struct HelpCmd {
  std::string text;
};
struct VersionCmd {};

struct EnvListCmd {};
struct EnvAddCmd {
  std::string name;
  std::string url;
  std::string region;
};
struct EnvUseCmd {
  std::string name;
};
struct EnvRemoveCmd {
  std::string name;
};

struct LoginCmd {
  std::string region;
  std::string email;
  bool password_stdin = false;
};
struct LogoutCmd {};
struct WhoamiCmd {};
struct TokenCmd {};
struct SignupCmd {
  std::string invite;
  std::string email;
  std::optional<std::string> name;
  bool password_stdin = false;
};
struct PasswdCmd {
  bool password_stdin = false;  // two lines: current password, new password
};

struct CallCmd {
  std::string service;
  std::string method;
  std::string body = "{}";                          // ignored when body_from_stdin
  bool body_from_stdin = false;                     // the body argument was "-"
  std::string version;                              // --version → Muon-Version
  std::optional<std::chrono::nanoseconds> timeout;  // --timeout → Muon-Timeout
};
struct ServicesCmd {};
struct LogsCmd {
  std::string service;  // empty only with --build
  bool follow = false;  // -f
  std::string instance;
  std::string release;
  std::string source;    // app|system|build|platform (validated)
  std::string severity;  // minimum: debug|info|warn|error|fatal (validated)
  std::string since;     // a duration back from now or an RFC 3339 time (validated)
  std::string until;
  std::string grep;
  int lines = 100;    // -n
  std::string build;  // --build ID: the build's output (source build, instance ID)
};

struct AccountsListCmd {};
struct AccountsSetDisabledCmd {
  std::string email;
  bool disabled = true;
};
struct InvitesListCmd {};
struct InvitesCreateCmd {
  std::string email;
  std::vector<std::string> roles;      // empty = the server's default
  std::optional<int64_t> ttl_seconds;  // empty = the server's default
};
struct RulesListCmd {};
struct RulesAddCmd {
  std::string role;
  std::string service;
  std::string endpoint;
  std::string effect;  // "allow" or "deny"
  int32_t priority = 0;
  std::string description;
};
struct RulesDeleteCmd {
  std::string id;
};

// github-events: registered repositories and their webhook deliveries.
struct ReposListCmd {};
struct ReposAddCmd {
  std::string name;         // OWNER/NAME (IsValidRepoName)
  std::string secret_file;  // read when the command runs (ReadSecretFile)
  std::string clone_url;    // empty = the server's default, https://github.com/<name>.git
  std::string branch;       // empty = the server's default, main
};
struct ReposRemoveCmd {
  std::string name;
};
struct ReposRotateSecretCmd {
  std::string name;
  std::string secret_file;
  std::string grace;  // as given (validated: a duration, 0s allowed); empty = the server's 24h
};
// The recovery path for a webhook that never arrived: build what is missing at the branch head.
struct ReposSyncCmd {
  std::string name;
  std::string branch;  // empty = the repo's default branch
};
struct DeliveriesCmd {
  std::string repo;  // empty = every repo
  int limit = 0;     // -n; 0 = the server's default (50)
};

// builder: builds of services and starting one. `muon builds logs ID [-f]` is a LogsCmd with
// `build` set: the path of `muon logs --build ID`.
struct BuildsListCmd {
  std::string service;  // empty = every service
  std::string repo;     // OWNER/NAME; empty = every repo
  int limit = 0;        // -n; 0 = the server's default (20)
};
struct BuildsShowCmd {
  std::string id;
};
// With --ref: builder.StartBuild (the scheduler rolls out the release the build makes). Without:
// scheduler.Deploy of release `release` (0 = the newest; resumes a paused auto-deploy).
struct DeployCmd {
  std::string service;  // muon::IsValidServiceName, the builder's own rule
  std::string ref;      // a commit sha or a branch name (one word); empty = no build
  std::string repo;     // OWNER/NAME (only with ref); empty = the repo of the service's last build
  int32_t release = 0;  // --release vN; 0 = the newest main-line release
};

// scheduler: desired state and what runs.
struct StatusCmd {
  std::string service;  // empty = every service, and the nodes
};
struct DescribeCmd {
  std::string service;
};
struct ReleasesCmd {
  std::string service;
  int limit = 0;  // -n; 0 = the server's default (20)
};
struct HistoryCmd {
  std::string service;
  int limit = 50;  // -n: the newest N events shown
};
struct EventsCmd {
  std::string service;  // empty = every service
  bool follow = false;  // -f: poll for new events every 500 ms until Ctrl-C
  std::string since;    // a duration back from now or an RFC 3339 time (validated); empty = all
  int limit = 0;        // -n; 0 = the server's default (100)
};
struct WaitCmd {
  std::string service;
  int32_t release = 0;  // --release vN: wait for that release (or a newer one); 0 = any
  std::string build;    // --build ID: wait for the build, then for the release made of it
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
};
struct DriftCmd {
  std::string service;  // empty = every service
};
struct LocksCmd {};
struct UnlockCmd {
  std::string service;  // --force is required to parse at all
};
struct RollbackCmd {
  std::string service;
  int32_t to_version = 0;  // --to vN; 0 = the release live before the current one
};
struct ScaleCmd {
  std::string service;
  int32_t replicas = 0;  // 0..100
};
// `muon env set|unset` (a service's config; not to be confused with the CLI's own envs) and
// `muon secrets set`: one SetEnv request.
struct EnvSetCmd {
  std::string service;
  std::vector<std::pair<std::string, std::string>> set;  // KEY=VALUE, in the given order
  std::vector<std::string> unset;
  bool deploy = true;  // --no-deploy: store the config, make no release
};
struct SecretsSetCmd {
  std::string service;
  std::string key;
  std::string file;         // --from-file F; empty with from_stdin
  bool from_stdin = false;  // --from-stdin
  bool deploy = true;
};
struct ExecCmd {
  std::string service;
  std::string instance;  // empty = any running instance
  std::vector<std::string> command;
  std::chrono::milliseconds timeout{0};  // 0 = the server's default (30 s)
};

using Command =
    std::variant<HelpCmd, VersionCmd, EnvListCmd, EnvAddCmd, EnvUseCmd, EnvRemoveCmd, LoginCmd,
                 LogoutCmd, WhoamiCmd, TokenCmd, SignupCmd, PasswdCmd, CallCmd, ServicesCmd,
                 LogsCmd, AccountsListCmd, AccountsSetDisabledCmd, InvitesListCmd, InvitesCreateCmd,
                 RulesListCmd, RulesAddCmd, RulesDeleteCmd, ReposListCmd, ReposAddCmd,
                 ReposRemoveCmd, ReposRotateSecretCmd, ReposSyncCmd, DeliveriesCmd, BuildsListCmd,
                 BuildsShowCmd, DeployCmd, StatusCmd, DescribeCmd, ReleasesCmd, HistoryCmd,
                 EventsCmd, WaitCmd, DriftCmd, LocksCmd, UnlockCmd, RollbackCmd, ScaleCmd,
                 EnvSetCmd, SecretsSetCmd, ExecCmd>;

struct Invocation {
  GlobalOptions global;
  Command command;
};

// A bad command line: what() is the problem (one line), usage() the command's usage text.
class UsageError : public std::runtime_error {
 public:
  UsageError(const std::string& problem, std::string usage)
      : std::runtime_error(problem), usage_(std::move(usage)) {}
  const std::string& usage() const { return usage_; }

 private:
  std::string usage_;
};

// Parses the arguments after argv[0]. Throws UsageError.
Invocation ParseArgs(const std::vector<std::string>& args);

// `muon --help`: commands, global flags, environment variables, exit codes.
std::string MainHelp();

// The version `muon --version` prints.
std::string_view CliVersion();

// Names the CLI accepts: env names and regions ([A-Za-z0-9][A-Za-z0-9._-]*, at most 63),
// service names ([a-z0-9][a-z0-9_-]*; no dots, they separate NATS subject tokens) and method
// names ([A-Za-z_][A-Za-z0-9_]*).
bool IsValidEnvName(std::string_view name);
bool IsValidServiceName(std::string_view name);
bool IsValidMethodName(std::string_view name);

// A GitHub repository as OWNER/NAME: the rule github-events applies (libs/common service.h).
using muon::IsValidRepoName;

// The webhook secret in the text of a --secret-file: trailing line breaks (LF, CR) removed. The
// result must be non-empty and one line; otherwise nullopt and *problem says why.
std::optional<std::string> SecretFromFileText(std::string_view text, std::string* problem);

// Reads a --secret-file (at most 64 KiB) through SecretFromFileText. A missing, unreadable or
// unsuitable file: nullopt and *problem, a one-line reason naming the file, never its content.
std::optional<std::string> ReadSecretFile(const std::string& path, std::string* problem);

}  // namespace muon::cli
