#pragma once
// A build's artifact: the service's outputs packed into one gzip-compressed POSIX tar that is
// byte-for-byte reproducible, so that the same outputs always give the same digest (sha256 of the
// file) whatever the mtimes, owners, umask or directory order of the build machine were. The
// digest names the artifact in the content-addressed store (artifact_store.h) and lets a rebuild
// of an identical commit reuse what is already there.

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace muon::builder {

// A refused output or archive entry; what() names the path and why.
class ArtifactError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct PackedArtifact {
  std::string digest;  // sha256 hex (lowercase) of the packed file
  int64_t size = 0;    // bytes of the packed file
  int64_t files = 0;   // regular files and symlinks packed (directories not counted)
};

// Packs `outputs` (paths relative to `root`; a directory is packed recursively, "." is all of
// root) into `out_file`. The archive holds every output, its parent directories and, for a
// directory, everything below it, sorted by path, with mtime 0, uid/gid 0, no user/group names,
// mode 0755 for directories and files with any exec bit and 0644 for other files, and no
// atime/ctime/xattrs/ACLs; the gzip header carries no timestamp or name. A symlink is kept as a
// symlink when its (relative) target resolves inside root. Throws ArtifactError for an output
// that does not exist, a path or symlink leaving root, or a device, fifo or socket; out_file is
// removed then.
PackedArtifact PackArtifact(const std::filesystem::path& root,
                            const std::vector<std::string>& outputs,
                            const std::filesystem::path& out_file);

// Unpacks an artifact into `dest`, an existing empty directory. Refuses (ArtifactError, with dest
// emptied again) absolute paths, "..", duplicate paths, symlinks whose target leaves dest,
// anything extracted through a symlink, hard links and device/fifo entries, so that a crafted
// archive never writes outside dest. Modes are restored as PackArtifact normalises them (0755 for
// directories and executables, 0644 otherwise).
void UnpackArtifact(const std::filesystem::path& file, const std::filesystem::path& dest);

// sha256 of the file's bytes as 64 lowercase hex digits; throws ArtifactError when unreadable.
std::string Sha256FileHex(const std::filesystem::path& file);

}  // namespace muon::builder
