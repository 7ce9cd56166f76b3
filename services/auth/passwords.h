#pragma once
// Password hashing: Argon2id through libsodium's crypto_pwhash, stored as PHC strings
// ("$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>"). The defaults are OWASP's minimum for Argon2id
// (19 MiB, 2 iterations, parallelism 1 — libsodium's parallelism is always 1).

#include <cstddef>
#include <string>
#include <string_view>

namespace muon::auth {

struct PasswordParams {
  unsigned long long opslimit = 2;    // iterations (t)
  size_t memlimit = 19456ull * 1024;  // bytes (m = 19456 KiB)
};

// Throws std::runtime_error when libsodium cannot allocate the memory.
std::string HashPassword(std::string_view password, const PasswordParams& params = {});
// Constant-time in the password; false for a wrong password or a string that is not ours.
bool VerifyPassword(std::string_view phc, std::string_view password);
// True when `phc` was made with other parameters (or another algorithm) than `params`.
bool NeedsRehash(std::string_view phc, const PasswordParams& params = {});

// Length limits: long enough to resist guessing; short enough that hashing stays bounded.
inline constexpr size_t kMinPasswordLength = 12;
inline constexpr size_t kMaxPasswordLength = 1024;
// An error text for a password that breaks the policy, or "" when it is acceptable.
std::string CheckPasswordPolicy(std::string_view password);

}  // namespace muon::auth
