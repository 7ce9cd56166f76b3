#include "passwords.h"

#include <fmt/format.h>
#include <sodium.h>

#include <stdexcept>

namespace muon::auth {
namespace {

void EnsureSodium() {
  static const bool ok = sodium_init() >= 0;
  if (!ok) throw std::runtime_error("libsodium could not be initialised");
}

}  // namespace

std::string HashPassword(std::string_view password, const PasswordParams& params) {
  EnsureSodium();
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str_alg(out, password.data(), password.size(), params.opslimit, params.memlimit,
                            crypto_pwhash_ALG_ARGON2ID13) != 0) {
    throw std::runtime_error("password hashing ran out of memory");
  }
  return out;
}

bool VerifyPassword(std::string_view phc, std::string_view password) {
  EnsureSodium();
  if (phc.empty() || phc.size() >= crypto_pwhash_STRBYTES) return false;
  // crypto_pwhash_str_verify wants a NUL-terminated string.
  const std::string stored(phc);
  return crypto_pwhash_str_verify(stored.c_str(), password.data(), password.size()) == 0;
}

bool NeedsRehash(std::string_view phc, const PasswordParams& params) {
  EnsureSodium();
  const std::string stored(phc);
  // 0: same parameters; 1: other parameters; -1: not an Argon2id string at all.
  return crypto_pwhash_str_needs_rehash(stored.c_str(), params.opslimit, params.memlimit) != 0 ||
         stored.rfind("$argon2id$", 0) != 0;
}

std::string CheckPasswordPolicy(std::string_view password) {
  if (password.size() < kMinPasswordLength) {
    return fmt::format("password must be at least {} characters", kMinPasswordLength);
  }
  if (password.size() > kMaxPasswordLength) {
    return fmt::format("password must be at most {} bytes", kMaxPasswordLength);
  }
  return "";
}

}  // namespace muon::auth
