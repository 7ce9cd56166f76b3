#include "muon/cli/store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "muon/cli/exit_codes.h"
#include "muon/cli/output.h"
#include "muon/common/fd.h"

namespace muon::cli {
namespace fs = std::filesystem;

namespace {

using muon::Fd;

[[noreturn]] void FailErrno(std::string_view what, const fs::path& path) {
  throw CliError(kExitError, fmt::format("{} {}: {}", what, path.string(), std::strerror(errno)));
}

// Creates `dir` (and its parents) and makes `dir` itself 0700.
void EnsurePrivateDir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir.parent_path(), ec);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) FailErrno("cannot create", dir);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) FailErrno("cannot stat", dir);
  if (!S_ISDIR(st.st_mode)) {
    throw CliError(kExitError, fmt::format("{} is not a directory", dir.string()));
  }
  if ((st.st_mode & 0777) != 0700 && ::chmod(dir.c_str(), 0700) != 0) {
    FailErrno("cannot chmod 0700", dir);
  }
}

template <typename Message>
Message LoadMessage(const fs::path& path) {
  Message message;
  auto text = ReadFileIfExists(path);
  if (!text || text->find_first_not_of(" \t\r\n") == std::string::npos) return message;
  std::string error;
  if (!FromJson(*text, &message, &error)) {
    throw CliError(kExitError, fmt::format("cannot read {}: {} (fix or delete the file)",
                                           path.string(), error));
  }
  return message;
}

}  // namespace

fs::path ConfigDir(const Environment& env) {
  auto get = [&](const char* key) -> std::string {
    auto it = env.find(key);
    return it == env.end() ? std::string{} : it->second;
  };
  // The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
  const std::string xdg = get("XDG_CONFIG_HOME");
  if (!xdg.empty() && fs::path(xdg).is_absolute()) return fs::path(xdg) / "muon";
  const std::string home = get("HOME");
  if (!home.empty()) return fs::path(home) / ".config" / "muon";
  throw CliError(kExitUsage, "cannot find the config directory: set HOME or XDG_CONFIG_HOME");
}

void WriteFileAtomic(const fs::path& file, std::string_view content) {
  const fs::path dir = file.parent_path().empty() ? fs::path(".") : file.parent_path();
  EnsurePrivateDir(dir);
  std::string tmp_name = (dir / ("." + file.filename().string() + ".tmp-XXXXXX")).string();
  // mkstemp creates the file with mode 0600 and O_EXCL, so no one else can have it open.
  Fd fd(::mkstemp(tmp_name.data()));
  if (fd.get() < 0) FailErrno("cannot create a temporary file in", dir);
  const fs::path tmp(tmp_name);
  auto fail = [&](std::string_view what) {
    const int saved = errno;
    fd.Close();
    ::unlink(tmp.c_str());
    errno = saved;
    FailErrno(what, file);
  };
  if (::fchmod(fd.get(), 0600) != 0) fail("cannot chmod");
  size_t written = 0;
  while (written < content.size()) {
    const ssize_t n = ::write(fd.get(), content.data() + written, content.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot write");
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) fail("cannot fsync");
  if (fd.Close() != 0) fail("cannot close");
  if (::rename(tmp.c_str(), file.c_str()) != 0) fail("cannot replace");
  // Make the rename itself durable.
  Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() >= 0) (void)::fsync(dir_fd.get());
}

std::optional<std::string> ReadFileIfExists(const fs::path& file) {
  Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return std::nullopt;
    FailErrno("cannot open", file);
  }
  std::string out;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      FailErrno("cannot read", file);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (size_t{16} << 20)) {
      throw CliError(kExitError, fmt::format("{} is larger than 16 MiB", file.string()));
    }
  }
  return out;
}

v1::Config Store::LoadConfig() const {
  return LoadMessage<v1::Config>(config_path());
}

void Store::SaveConfig(const v1::Config& config) const {
  WriteFileAtomic(config_path(), ToJson(config, true) + "\n");
}

v1::Credentials Store::LoadCredentials() const {
  return LoadMessage<v1::Credentials>(credentials_path());
}

void Store::SaveCredentials(const v1::Credentials& credentials) const {
  WriteFileAtomic(credentials_path(), ToJson(credentials, true) + "\n");
}

Store::Lock::~Lock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

Store::Lock Store::LockCredentials() const {
  EnsurePrivateDir(dir_);
  const fs::path path = dir_ / "credentials.lock";
  Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (fd.get() < 0) FailErrno("cannot open", path);
  while (::flock(fd.get(), LOCK_EX) != 0) {
    if (errno != EINTR) FailErrno("cannot lock", path);
  }
  return Lock(fd.Release());
}

const v1::Env* FindEnv(const v1::Config& config, std::string_view name) {
  for (const auto& env : config.envs()) {
    if (env.name() == name) return &env;
  }
  return nullptr;
}

const v1::Env* FindEnvForRegion(const v1::Config& config, std::string_view region) {
  const v1::Env* current = FindEnv(config, config.current_env());
  if (current != nullptr && current->region() == region) return current;
  for (const auto& env : config.envs()) {
    if (env.region() == region) return &env;
  }
  return FindEnv(config, region);
}

std::map<std::string, std::string> ParseStackEnv(std::string_view text) {
  auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
      s.remove_suffix(1);
    }
    return s;
  };
  std::map<std::string, std::string> out;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = trim(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (line.empty() || line.front() == '#') continue;
    if (line.substr(0, 7) == "export ") line = trim(line.substr(7));
    const auto eq = line.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    std::string_view key = trim(line.substr(0, eq));
    std::string_view value = trim(line.substr(eq + 1));
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
        value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    }
    out[std::string(key)] = std::string(value);
  }
  return out;
}

std::optional<fs::path> GitToplevel(const fs::path& start) {
  std::error_code ec;
  for (fs::path dir = start; !dir.empty(); dir = dir.parent_path()) {
    if (fs::exists(dir / ".git", ec)) return dir;
    if (dir == dir.root_path() || dir == dir.parent_path()) break;
  }
  return std::nullopt;
}

fs::path StackEnvPath(const Environment& env, const fs::path& cwd) {
  auto it = env.find("MUON_STATE_DIR");
  if (it != env.end() && !it->second.empty()) {
    fs::path state(it->second);
    if (state.is_relative()) state = cwd / state;
    return state / "stack.env";
  }
  return GitToplevel(cwd).value_or(cwd) / ".muon" / "stack.env";
}

namespace {

Url ParseUrlOrThrow(const std::string& text, const std::string& source) {
  std::string error;
  auto url = ParseUrl(text, &error);
  if (!url) {
    throw CliError(kExitUsage,
                   fmt::format("{}: '{}' is not an ingress URL: {}", source, text, error));
  }
  return *url;
}

}  // namespace

Endpoint EndpointFromEnv(const v1::Env& env) {
  Endpoint ep;
  ep.name = env.name();
  ep.url = ParseUrlOrThrow(env.url(), "env " + env.name());
  ep.region = env.region();
  ep.source = "config";
  ep.configured = true;
  return ep;
}

std::optional<Endpoint> ImplicitEndpoint(const Environment& env, const fs::path& cwd) {
  auto get = [&](const std::map<std::string, std::string>& m, const char* key) {
    auto it = m.find(key);
    return it == m.end() ? std::string{} : it->second;
  };
  Endpoint ep;
  ep.name = std::string(kImplicitEnvName);
  if (std::string url = get(env, "MUON_INGRESS_URL"); !url.empty()) {
    ep.url = ParseUrlOrThrow(url, "MUON_INGRESS_URL");
    ep.region = get(env, "MUON_REGION");
    ep.source = "MUON_INGRESS_URL";
    return ep;
  }
  const fs::path path = StackEnvPath(env, cwd);
  auto text = ReadFileIfExists(path);
  if (!text) return std::nullopt;
  const auto values = ParseStackEnv(*text);
  const std::string url = get(values, "MUON_INGRESS_URL");
  if (url.empty()) return std::nullopt;
  ep.url = ParseUrlOrThrow(url, path.string());
  ep.region = get(values, "MUON_REGION");
  ep.source = path.string();
  return ep;
}

Endpoint ResolveEndpoint(const v1::Config& config, const std::string& env_name,
                         const Environment& env, const fs::path& cwd) {
  if (!env_name.empty()) {
    if (const v1::Env* found = FindEnv(config, env_name)) return EndpointFromEnv(*found);
    std::string known;
    for (const auto& e : config.envs()) known += (known.empty() ? "" : ", ") + e.name();
    throw CliError(kExitUsage,
                   fmt::format("unknown env '{}' ({}); add it with `muon env add {} URL`", env_name,
                               known.empty() ? "none configured" : "known: " + known, env_name));
  }
  if (const v1::Env* current = FindEnv(config, config.current_env())) {
    return EndpointFromEnv(*current);
  }
  if (auto implicit = ImplicitEndpoint(env, cwd)) return *implicit;
  if (config.envs_size() > 0) {
    throw CliError(kExitUsage,
                   "no current env: pick one with `muon env use NAME` (see `muon env list`)");
  }
  throw CliError(kExitUsage,
                 "no ingress configured: add one with `muon env add NAME URL`, set "
                 "MUON_INGRESS_URL, or start the local stack (scripts/up)");
}

bool NeedsRefresh(int64_t expires_at, int64_t now, int64_t margin_seconds) {
  return expires_at - now <= margin_seconds;
}

}  // namespace muon::cli
