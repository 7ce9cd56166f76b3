#include "git_mirror.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <sstream>

#include "muon/common/process.h"

namespace muon::builder {
namespace fs = std::filesystem;
namespace {

constexpr std::chrono::seconds kQuickTimeout{60};

// An exclusive flock held for the object's lifetime.
class FileLock {
 public:
  explicit FileLock(const fs::path& file) {
    fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0) throw GitError(fmt::format("cannot open the lock file {}", file.string()));
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) {
        ::close(fd_);
        throw GitError(fmt::format("cannot lock {}", file.string()));
      }
    }
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the lock
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

// The last lines of a command's output, joined: what an error message quotes.
std::string Tail(const std::string& output, size_t n = 5) {
  std::vector<std::string> lines;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  std::string out;
  for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i) {
    if (!out.empty()) out += " | ";
    out += lines[i];
  }
  return out;
}

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

std::vector<std::string> SplitNul(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t end; (end = text.find('\0', start)) != std::string::npos; start = end + 1) {
    if (end > start) out.push_back(text.substr(start, end - start));
  }
  return out;
}

// "fetch" out of {"--git-dir", "/x", "fetch", ...}: for error messages.
std::string Subcommand(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--git-dir" || args[i] == "-c") {
      ++i;
    } else if (!args[i].starts_with("-")) {
      return args[i];
    }
  }
  return "";
}

bool IsHex(const std::string& s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

bool IsZeroSha(const std::string& sha) {
  return sha.size() == 40 && std::all_of(sha.begin(), sha.end(), [](char c) { return c == '0'; });
}

bool IsFullSha(const std::string& sha) {
  return sha.size() == 40 && IsHex(sha);
}

std::optional<std::string> OwningFolder(const std::vector<std::string>& folders,
                                        const std::string& path) {
  std::optional<std::string> best;
  for (const auto& folder : folders) {
    const bool contains =
        folder.empty() || path == folder ||
        (path.size() > folder.size() && path.compare(0, folder.size(), folder) == 0 &&
         path[folder.size()] == '/');
    if (contains && (!best || folder.size() > best->size())) best = folder;
  }
  return best;
}

GitMirror::GitMirror(fs::path mirrors_dir, std::string repo, std::string clone_url,
                     std::chrono::seconds fetch_timeout)
    : mirrors_dir_(std::move(mirrors_dir)),
      clone_url_(std::move(clone_url)),
      fetch_timeout_(fetch_timeout) {
  // "owner/name" is validated by the caller (IsValidRepoName): no "..", no leading "/".
  path_ = mirrors_dir_ / (repo + ".git");
}

std::string GitMirror::Git(const std::vector<std::string>& args, std::chrono::seconds timeout,
                           bool check, int* exit_code) {
  ProcessOptions o;
  o.program = "git";
  o.args = args;
  // No prompts for credentials, no user or system config that could change the output.
  o.env = {{"GIT_TERMINAL_PROMPT", "0"},
           {"GIT_CONFIG_NOSYSTEM", "1"},
           {"GIT_CONFIG_GLOBAL", "/dev/null"},
           {"LC_ALL", "C"}};
  const RunResult r = RunCommand(o, timeout);
  if (exit_code) *exit_code = r.status.code;
  if (check && !r.status.Success()) {
    throw GitError(fmt::format("git {} failed ({}): {}", Subcommand(args), r.status.Describe(),
                               Tail(r.output)));
  }
  return r.output;
}

void GitMirror::Fetch() {
  fs::create_directories(path_.parent_path());
  FileLock lock(fs::path(path_.string() + ".lock"));
  if (!fs::exists(path_ / "HEAD")) {
    // Cloned beside and renamed, so a clone cut short never looks like a mirror.
    const fs::path partial = path_.string() + ".partial";
    fs::remove_all(partial);
    Git({"clone", "--mirror", "--quiet", "--", clone_url_, partial.string()}, fetch_timeout_);
    fs::rename(partial, path_);
    return;
  }
  Git({"--git-dir", path_.string(), "remote", "set-url", "--", "origin", clone_url_},
      kQuickTimeout);
  Git({"--git-dir", path_.string(), "fetch", "--prune", "--quiet", "origin"}, fetch_timeout_);
}

bool GitMirror::HasCommit(const std::string& commit) {
  int code = 0;
  Git({"--git-dir", path_.string(), "cat-file", "-e", commit + "^{commit}"}, kQuickTimeout, false,
      &code);
  return code == 0;
}

bool GitMirror::IsBranch(const std::string& name) {
  int code = 0;
  Git({"--git-dir", path_.string(), "show-ref", "--verify", "--quiet", "refs/heads/" + name},
      kQuickTimeout, false, &code);
  return code == 0;
}

std::optional<std::string> GitMirror::Resolve(const std::string& ref) {
  int code = 0;
  for (const std::string& candidate : {"refs/heads/" + ref, ref}) {
    const std::string out = Git(
        {"--git-dir", path_.string(), "rev-parse", "--verify", "--quiet", candidate + "^{commit}"},
        kQuickTimeout, false, &code);
    if (code == 0) {
      auto lines = SplitLines(out);
      if (!lines.empty() && IsFullSha(lines.back())) return lines.back();
    }
  }
  return std::nullopt;
}

std::vector<std::string> GitMirror::ServiceFolders(const std::string& commit) {
  const std::string out =
      Git({"--git-dir", path_.string(), "ls-tree", "-r", "--name-only", "--full-tree", commit},
          kQuickTimeout);
  std::set<std::string> folders;
  for (const auto& path : SplitLines(out)) {
    if (path == "muon.yaml") {
      folders.insert("");
    } else if (path.size() > 10 && path.ends_with("/muon.yaml")) {
      folders.insert(path.substr(0, path.size() - 10));
    }
  }
  return {folders.begin(), folders.end()};
}

std::optional<std::string> GitMirror::Show(const std::string& commit, const std::string& path) {
  int code = 0;
  std::string out = Git({"--git-dir", path_.string(), "cat-file", "blob", commit + ":" + path},
                        kQuickTimeout, false, &code);
  if (code != 0) return std::nullopt;
  return out;
}

std::vector<std::string> GitMirror::ChangedPaths(const std::string& before,
                                                 const std::string& after) {
  const std::string out =
      Git({"--git-dir", path_.string(), "diff", "-z", "--name-only", "--no-renames", before, after},
          kQuickTimeout);
  return SplitNul(out);
}

std::string GitMirror::TreeId(const std::string& commit, const std::string& folder) {
  const std::string spec = folder.empty() ? commit + "^{tree}" : commit + ":" + folder;
  auto lines = SplitLines(Git({"--git-dir", path_.string(), "rev-parse", spec}, kQuickTimeout));
  if (lines.empty() || !IsFullSha(lines.back())) {
    throw GitError(
        fmt::format("no tree for {} at {}", folder.empty() ? "the root" : folder, commit));
  }
  return lines.back();
}

void GitMirror::Export(const std::string& commit, const fs::path& dest) {
  fs::create_directories(dest);
  Git({"-c", "core.quotepath=off", "--git-dir", path_.string(), "archive", "--format=tar",
       "--output", (dest / ".muon-source.tar").string(), commit},
      fetch_timeout_);
  ProcessOptions o;
  o.program = "tar";
  o.args = {"-x", "-f",          (dest / ".muon-source.tar").string(),
            "-C", dest.string(), "--no-same-owner"};
  const RunResult r = RunCommand(o, fetch_timeout_);
  fs::remove(dest / ".muon-source.tar");
  if (!r.status.Success()) {
    throw GitError(
        fmt::format("unpacking {} failed ({}): {}", commit, r.status.Describe(), Tail(r.output)));
  }
}

}  // namespace muon::builder
