#include "artifact_cache.h"

#include <fmt/format.h>

#include <fstream>
#include <stdexcept>

#include "artifact.h"
#include "muon/builder/v1/builder.pb.h"
#include "muon/common/errors.h"
#include "muon/common/random_id.h"
#include "muon/common/service.h"

namespace muon::scheduler {
namespace fs = std::filesystem;
namespace {

constexpr int32_t kChunkBytes = 4 * 1024 * 1024;

bool IsDigest(const std::string& d) {
  return d.size() == 64 && d.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

ArtifactCache::ArtifactCache(bus::Connection& bus, fs::path dir,
                             std::function<std::string()> bearer, std::chrono::milliseconds timeout)
    : bus_(bus), dir_(std::move(dir)), bearer_(std::move(bearer)), timeout_(timeout) {
  fs::create_directories(dir_);
}

fs::path ArtifactCache::Get(const std::string& digest) {
  if (!IsDigest(digest)) throw std::runtime_error("not a sha256 digest");
  const fs::path file = dir_ / (digest + ".tar.gz");
  std::shared_ptr<std::mutex> one;
  {
    std::lock_guard lock(mu_);
    auto& slot = fetching_[digest];
    if (!slot) slot = std::make_shared<std::mutex>();
    one = slot;
  }
  std::lock_guard fetch_lock(*one);
  if (fs::exists(file)) return file;  // complete: only renamed into place after the check
  return Fetch(digest);
}

fs::path ArtifactCache::Fetch(const std::string& digest) {
  const fs::path file = dir_ / (digest + ".tar.gz");
  const fs::path tmp = dir_ / fmt::format(".{}.{}.part", digest, RandomHex(4));
  struct Cleanup {
    const fs::path& path;
    ~Cleanup() {
      std::error_code ec;
      fs::remove(path, ec);
    }
  } cleanup{tmp};
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write " + tmp.string());
    bus::Headers headers;
    if (bearer_) {
      if (std::string bearer = bearer_(); !bearer.empty()) {
        headers.emplace_back(bus::kHeaderAuthorization, std::move(bearer));
      }
    }
    int64_t offset = 0;
    int64_t size = -1;
    while (true) {
      builder::v1::FetchArtifactRequest request;
      request.set_digest(digest);
      request.set_offset(offset);
      request.set_max_bytes(kChunkBytes);
      builder::v1::FetchArtifactResponse response;
      try {
        Call(bus_, PlatformSubject("builder", "FetchArtifact"), request, response, timeout_,
             headers);
      } catch (const Error& e) {
        throw std::runtime_error(
            fmt::format("builder answered {} {}: {}", e.code(), e.status(), e.detail()));
      }
      size = response.size();
      if (response.data().empty()) break;
      out.write(response.data().data(), static_cast<std::streamsize>(response.data().size()));
      offset += static_cast<int64_t>(response.data().size());
      if (offset > size) throw std::runtime_error("builder sent more bytes than the size it gave");
    }
    out.close();
    if (!out) throw std::runtime_error("cannot write " + tmp.string());
    if (offset != size) {
      throw std::runtime_error(fmt::format("got {} of {} bytes", offset, size));
    }
  }
  const std::string actual = builder::Sha256FileHex(tmp);
  if (actual != digest) throw std::runtime_error("content does not match (sha256 " + actual + ")");
  fs::rename(tmp, file);
  return file;
}

void ArtifactCache::Unpack(const std::string& digest, const fs::path& dest) {
  const fs::path file = Get(digest);
  fs::create_directories(dest);
  builder::UnpackArtifact(file, dest);
}

}  // namespace muon::scheduler
