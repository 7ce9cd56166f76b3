#include "keys.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "muon/common/authz.h"
#include "muon/common/errors.h"
#include "muon/common/log.h"

namespace muon::auth {
namespace {

// Another replica's rotation is picked up within this long; until then this one signs with the
// old key, which still verifies (it is "retiring").
constexpr auto kActiveKeyTtl = std::chrono::seconds(5);
constexpr size_t kMinKeyFileBytes = 32;
// Domain separation: the key file could be reused for something else one day.
constexpr std::string_view kDerivationContext = "muon.auth.signing-key-encryption.v1";

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  randombytes_buf(out.data(), out.size());
  return out;
}

std::string_view Bytes(const unsigned char* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

void CreateKeyFile(const std::string& path) {
  // Written to a private temporary name, then hard-linked into place: link() fails when the
  // file appeared meanwhile, and nobody can ever read a half-written key file.
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  {
    Fd fd{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
    if (fd.fd < 0) {
      throw std::runtime_error(
          fmt::format("cannot create key file {}: {}", path, std::strerror(errno)));
    }
    const std::string content = token::Base64UrlEncode(RandomBytes(32)) + "\n";
    if (::write(fd.fd, content.data(), content.size()) != static_cast<ssize_t>(content.size()) ||
        ::fsync(fd.fd) != 0) {
      ::unlink(tmp.c_str());
      throw std::runtime_error(
          fmt::format("cannot write key file {}: {}", path, std::strerror(errno)));
    }
  }
  const int linked = ::link(tmp.c_str(), path.c_str());
  const int link_errno = errno;
  ::unlink(tmp.c_str());
  if (linked == 0) {
    log::Warn(
        "created a new auth key file; keep it (and back it up): the region's signing key "
        "is encrypted with it",
        {{"path", path}});
  } else if (link_errno != EEXIST) {
    throw std::runtime_error(
        fmt::format("cannot create key file {}: {}", path, std::strerror(link_errno)));
  }
}

}  // namespace

MasterKey LoadOrCreateKeyFile(const std::string& path) {
  if (sodium_init() < 0) throw std::runtime_error("libsodium could not be initialised");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      throw std::runtime_error(
          fmt::format("cannot read key file {}: {}", path, std::strerror(errno)));
    }
    CreateKeyFile(path);
  } else if ((st.st_mode & 0077) != 0) {
    log::Warn("the auth key file is readable by other users; chmod 600 it", {{"path", path}});
  }
  const std::string content = ReadSecretFile(path);
  if (content.size() < kMinKeyFileBytes) {
    throw std::runtime_error(
        fmt::format("key file {} must hold at least {} bytes", path, kMinKeyFileBytes));
  }
  MasterKey key{};
  // BLAKE2b keyed with the context; the whole file content is the input, so any format works
  // (raw bytes, base64, hex) as long as it carries at least 256 bits.
  crypto_generichash(key.data(), key.size(), reinterpret_cast<const unsigned char*>(content.data()),
                     content.size(),
                     reinterpret_cast<const unsigned char*>(kDerivationContext.data()),
                     kDerivationContext.size());
  return key;
}

KeyManager::KeyManager(Store& store, std::string region, const MasterKey& master_key)
    : store_(store), region_(std::move(region)), master_key_(master_key) {}

std::string KeyManager::Seal(const token::SigningKey& key) const {
  std::string box(crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + key.secret_key.size(),
                  '\0');
  auto* out = reinterpret_cast<unsigned char*>(box.data());
  randombytes_buf(out, crypto_secretbox_NONCEBYTES);
  crypto_secretbox_easy(out + crypto_secretbox_NONCEBYTES, key.secret_key.data(),
                        key.secret_key.size(), out, master_key_.data());
  return token::Base64UrlEncode(box);
}

std::optional<token::SigningKey> KeyManager::Open(const SigningKeyRow& row) const {
  const auto box = token::Base64UrlDecode(row.secret_box);
  const auto public_key = token::Base64UrlDecode(row.public_key);
  token::SigningKey key;
  if (!box || !public_key || public_key->size() != key.public_key.size() ||
      box->size() !=
          crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + key.secret_key.size()) {
    return std::nullopt;
  }
  const auto* in = reinterpret_cast<const unsigned char*>(box->data());
  if (crypto_secretbox_open_easy(key.secret_key.data(), in + crypto_secretbox_NONCEBYTES,
                                 box->size() - crypto_secretbox_NONCEBYTES, in,
                                 master_key_.data()) != 0) {
    return std::nullopt;
  }
  std::copy(public_key->begin(), public_key->end(), key.public_key.begin());
  // The row's public key must belong to the secret key (libsodium keeps it in the second half).
  if (sodium_memcmp(key.public_key.data(), key.secret_key.data() + 32, 32) != 0) {
    return std::nullopt;
  }
  key.kid = row.kid;
  key.region = row.region;
  return key;
}

SigningKeyRow KeyManager::NewKeyRow(token::SigningKey& key) const {
  // kid: region plus 72 random bits, readable in logs and unique across regions.
  key = token::GenerateSigningKey(
      fmt::format("{}-{}", region_, token::Base64UrlEncode(RandomBytes(9))), region_);
  return SigningKeyRow{
      .kid = key.kid,
      .region = region_,
      .public_key = token::Base64UrlEncode(Bytes(key.public_key.data(), key.public_key.size())),
      .secret_box = Seal(key),
      .status = "active"};
}

void KeyManager::EnsureActiveKey() {
  std::lock_guard lock(mu_);
  if (auto row = store_.ActiveKey(region_)) {
    if (auto key = Open(*row)) {
      active_ = std::move(key);
      loaded_ = std::chrono::steady_clock::now();
      log::Info("region signing key loaded", {{"kid", row->kid}, {"region", region_}});
      return;
    }
    log::Error(
        "the region's active signing key cannot be decrypted with this key file; rotating to a "
        "new key (the old one keeps verifying until retired)",
        {{"kid", row->kid}, {"region", region_}});
    token::SigningKey key;
    store_.RotateKey(NewKeyRow(key));
    store_.Audit("system", "key.rotated", key.kid, "active key could not be decrypted");
    active_.reset();
    return;
  }
  token::SigningKey key;
  const SigningKeyRow row = NewKeyRow(key);
  if (store_.InsertActiveKeyIfAbsent(row)) {
    store_.Audit("system", "key.created", row.kid, region_);
    log::Info("created the region's signing key", {{"kid", row.kid}, {"region", region_}});
  }
  // Whoever won the insert, the table now has the key to use.
  active_.reset();
}

token::SigningKey KeyManager::Active() {
  std::lock_guard lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  if (active_ && now - loaded_ < kActiveKeyTtl) return *active_;
  auto row = store_.ActiveKey(region_);
  if (!row) throw Error::Unavailable("this region has no signing key yet");
  if (!active_ || active_->kid != row->kid) {
    auto key = Open(*row);
    if (!key) {
      throw Error::Internal("the region's signing key cannot be decrypted with this key file");
    }
    active_ = std::move(key);
  }
  loaded_ = now;
  return *active_;
}

v1::Jwk KeyManager::Rotate() {
  std::lock_guard lock(mu_);
  token::SigningKey key;
  store_.RotateKey(NewKeyRow(key));
  active_ = key;
  loaded_ = std::chrono::steady_clock::now();
  log::Info("rotated the region's signing key", {{"kid", key.kid}, {"region", region_}});
  return token::ToJwk(key);
}

v1::Jwk KeyManager::Retire(const std::string& kid) {
  switch (store_.RetireKey(kid)) {
    case RetireStatus::kNotFound:
      throw Error::NotFound(fmt::format("no signing key {}", kid));
    case RetireStatus::kActive:
      throw Error::Conflict(
          fmt::format("key {} is its region's active key; rotate first, then retire it", kid));
    case RetireStatus::kRetired:
    case RetireStatus::kAlreadyRetired:
      break;
  }
  auto row = store_.FindKey(kid);
  v1::Jwk jwk;
  jwk.set_kty("OKP");
  jwk.set_crv("Ed25519");
  jwk.set_x(row ? row->public_key : "");
  jwk.set_kid(kid);
  jwk.set_alg("EdDSA");
  jwk.set_use("sig");
  jwk.set_region(row ? row->region : "");
  jwk.set_status("retired");
  return jwk;
}

v1::KeysResponse KeyManager::PublicKeys() {
  v1::KeysResponse response;
  for (const auto& row : store_.ListPublishedKeys()) {
    auto* jwk = response.add_keys();
    jwk->set_kty("OKP");
    jwk->set_crv("Ed25519");
    jwk->set_x(row.public_key);
    jwk->set_kid(row.kid);
    jwk->set_alg("EdDSA");
    jwk->set_use("sig");
    jwk->set_region(row.region);
    jwk->set_status(row.status);
  }
  return response;
}

}  // namespace muon::auth
