#pragma once
// The CLI's files and where it finds the ingress.
//
// $XDG_CONFIG_HOME/muon/ (default ~/.config/muon/, mode 0700) holds config.json (envs, current
// env) and credentials.json (per env: tokens, expiry, email, region), both mode 0600, written
// atomically (temp file + fsync + rename + fsync of the directory), in the proto3 JSON mapping of
// cli/proto/config.proto. Read-modify-write of credentials (login, refresh, logout) happens under
// an exclusive lock on credentials.lock, so concurrent `muon` processes do not spend one refresh
// token twice (which would revoke the session's whole token family).

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "muon/cli/http_client.h"
#include "muon/common/config.h"
#include "proto/config.pb.h"

namespace muon::cli {

// A failure with a message for the user and the exit code of its class (see exit_codes.h).
class CliError : public std::runtime_error {
 public:
  CliError(int exit_code, const std::string& message)
      : std::runtime_error(message), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

using Environment = config::Environment;

// $XDG_CONFIG_HOME/muon, else $HOME/.config/muon. Throws CliError when neither is set.
std::filesystem::path ConfigDir(const Environment& env);

// Replaces `file` with `content` atomically, mode 0600; creates the directory (mode 0700) when
// missing. Throws CliError.
void WriteFileAtomic(const std::filesystem::path& file, std::string_view content);

// nullopt when the file does not exist; throws CliError on any other failure.
std::optional<std::string> ReadFileIfExists(const std::filesystem::path& file);

class Store {
 public:
  explicit Store(std::filesystem::path dir) : dir_(std::move(dir)) {}

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path config_path() const { return dir_ / "config.json"; }
  std::filesystem::path credentials_path() const { return dir_ / "credentials.json"; }

  // Missing files read as empty messages; a corrupt file is a CliError naming it.
  v1::Config LoadConfig() const;
  void SaveConfig(const v1::Config& config) const;
  v1::Credentials LoadCredentials() const;
  void SaveCredentials(const v1::Credentials& credentials) const;

  // Exclusive advisory lock (flock) on credentials.lock, released on destruction.
  class Lock {
   public:
    explicit Lock(int fd) : fd_(fd) {}
    Lock(Lock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    Lock& operator=(Lock&&) = delete;
    ~Lock();

   private:
    int fd_;
  };
  Lock LockCredentials() const;

 private:
  std::filesystem::path dir_;
};

// Finds an env by name; nullptr when there is none.
const v1::Env* FindEnv(const v1::Config& config, std::string_view name);
// The env whose region is `region`, else the one named `region`; prefers the current env.
const v1::Env* FindEnvForRegion(const v1::Config& config, std::string_view region);

// stack.env: KEY=value lines; blank lines and # comments skipped; an `export ` prefix and
// matching quotes around the value are removed.
std::map<std::string, std::string> ParseStackEnv(std::string_view text);

// The stack.env the CLI falls back to: $MUON_STATE_DIR/stack.env (relative to cwd when
// relative), else <git toplevel of cwd, or cwd>/.muon/stack.env.
std::filesystem::path StackEnvPath(const Environment& env, const std::filesystem::path& cwd);

// The nearest directory at or above `start` that contains .git; nullopt when there is none.
std::optional<std::filesystem::path> GitToplevel(const std::filesystem::path& start);

// The name credentials are kept under when the ingress comes from MUON_INGRESS_URL or stack.env.
inline constexpr std::string_view kImplicitEnvName = "default";

struct Endpoint {
  std::string name;  // env name (kImplicitEnvName for the fallbacks)
  Url url;
  std::string region;  // may be empty
  std::string source;  // "config", "MUON_INGRESS_URL" or the stack.env path
  bool configured = false;
};

// The ingress without a configured env: $MUON_INGRESS_URL (region $MUON_REGION), else stack.env.
// nullopt when neither has one; CliError (usage) when the URL found is malformed.
std::optional<Endpoint> ImplicitEndpoint(const Environment& env, const std::filesystem::path& cwd);

// Which ingress a command talks to: `env_name` (from --env or $MUON_ENV) must name a configured
// env; else the current env; else ImplicitEndpoint. Throws CliError (usage) when there is none.
Endpoint ResolveEndpoint(const v1::Config& config, const std::string& env_name,
                         const Environment& env, const std::filesystem::path& cwd);

Endpoint EndpointFromEnv(const v1::Env& env);

// True when the access token expiring at `expires_at` (unix seconds) should be refreshed before a
// call made at `now`: it has expired or expires within `margin_seconds`.
bool NeedsRefresh(int64_t expires_at, int64_t now, int64_t margin_seconds = 60);

}  // namespace muon::cli
