#pragma once
// A bare mirror of one repository under the builder's state dir, fetched incrementally, and the
// questions the builder asks it: which folders hold a muon.yaml at a commit, what changed between
// two commits, the tree id of a folder (identical inputs), and a commit's files in a fresh dir.
// Each call runs `git` with a timeout; one flock per mirror keeps builders on the same host (and
// their threads) from fetching into it at once.

#include <chrono>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace muon::builder {

// A git command failed; what() holds its last output lines.
class GitError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class GitMirror {
 public:
  // repo: "owner/name" (names the directory); clone_url: where to fetch from.
  GitMirror(std::filesystem::path mirrors_dir, std::string repo, std::string clone_url,
            std::chrono::seconds fetch_timeout = std::chrono::minutes(10));

  // Clones the mirror if it is missing, else fetches every branch (pruning deleted ones).
  void Fetch();
  // True when `commit` is a commit in the mirror.
  bool HasCommit(const std::string& commit);
  // True when `name` is a branch of the mirror.
  bool IsBranch(const std::string& name);
  // A branch name or a (possibly abbreviated) sha, as a full sha; nullopt when unknown.
  std::optional<std::string> Resolve(const std::string& ref);
  // Folders (relative, "" = the root) holding a muon.yaml at the commit, sorted.
  std::vector<std::string> ServiceFolders(const std::string& commit);
  // A file's content at the commit; nullopt when absent.
  std::optional<std::string> Show(const std::string& commit, const std::string& path);
  // Paths that differ between the two commits (added, modified, removed, both sides of a rename).
  std::vector<std::string> ChangedPaths(const std::string& before, const std::string& after);
  // The git tree id of `folder` at the commit ("" = the root tree).
  std::string TreeId(const std::string& commit, const std::string& folder);
  // Writes the commit's files into `dest` (an empty directory).
  void Export(const std::string& commit, const std::filesystem::path& dest);

  const std::filesystem::path& path() const { return path_; }

 private:
  std::string Git(const std::vector<std::string>& args, std::chrono::seconds timeout,
                  bool check = true, int* exit_code = nullptr);

  std::filesystem::path mirrors_dir_;
  std::filesystem::path path_;
  std::string clone_url_;
  std::chrono::seconds fetch_timeout_;
};

// The folder (from `folders`, "" = the root) that owns `path`: the longest one containing it;
// nullopt when none does.
std::optional<std::string> OwningFolder(const std::vector<std::string>& folders,
                                        const std::string& path);

// True for a 40-hex sha of all zeros (GitHub's "no commit": a created or deleted branch).
bool IsZeroSha(const std::string& sha);
bool IsFullSha(const std::string& sha);

}  // namespace muon::builder
