#pragma once
// Access tokens: JWTs signed with Ed25519 (alg EdDSA, kid = region key id, iss = region), made by
// the auth service and verified everywhere else with a cached key set. Verification of a token
// seen before costs a hash-map lookup (the cache keeps the verified claims until the token
// expires); a token whose kid is unknown triggers one key refresh (rate-limited), so a key
// created in another region is picked up without a restart.

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>

#include "muon/auth/v1/auth.pb.h"

namespace muon::token {

enum class TokenErrc {
  kOk = 0,
  kMissing,       // no token where one is needed
  kMalformed,     // not three base64url parts, bad JSON, wrong alg
  kUnknownKey,    // kid not in any region's key set (even after a refresh)
  kBadSignature,  // signature does not verify: tampered or forged
  kExpired,       // exp in the past
  kNotYetValid,   // iat too far in the future (clock skew beyond the allowance)
};
const std::error_category& TokenCategory();
std::error_code make_error_code(TokenErrc e);

std::string Base64UrlEncode(std::string_view bytes);                 // no padding
std::optional<std::string> Base64UrlDecode(std::string_view text);  // rejects padding/garbage

struct SigningKey {
  std::string kid;
  std::string region;
  std::array<unsigned char, 64> secret_key{};  // libsodium crypto_sign secret key
  std::array<unsigned char, 32> public_key{};
};
SigningKey GenerateSigningKey(std::string kid, std::string region);
// JWKS entry of a key (status "active").
auth::v1::Jwk ToJwk(const SigningKey& key);

// Header {"alg":"EdDSA","kid":<kid>,"typ":"JWT"}; payload = claims in proto3 JSON with int64
// claims (iat, exp) written as JSON numbers as RFC 7519 requires.
std::string Sign(const auth::v1::Claims& claims, const SigningKey& key);

// Public keys by kid, built from a KeysResponse (every region's keys).
class KeySet {
 public:
  KeySet() = default;
  explicit KeySet(const auth::v1::KeysResponse& keys);
  const std::array<unsigned char, 32>* Find(std::string_view kid) const;
  size_t size() const { return keys_.size(); }

 private:
  std::unordered_map<std::string, std::array<unsigned char, 32>> keys_;
};

// Stateless check of one token against a key set at time `now`.
std::error_code Verify(std::string_view token, const KeySet& keys,
                       std::chrono::system_clock::time_point now, auth::v1::Claims& claims);

// Thread-safe verifier with a key set and a cache of verified tokens.
class Verifier {
 public:
  // fetch_keys returns every region's public keys, or nullopt when auth is unreachable.
  using KeyFetcher = std::function<std::optional<auth::v1::KeysResponse>()>;
  explicit Verifier(KeyFetcher fetch_keys,
                    std::chrono::seconds min_refresh_interval = std::chrono::seconds(5));

  std::error_code Verify(std::string_view token, auth::v1::Claims& claims);
  // Fetches keys now; returns false when the fetch failed (the old set stays).
  bool Refresh();
  bool Ready() const;  // a key set has been loaded
  size_t cache_size() const;

 private:
  KeyFetcher fetch_keys_;
  std::chrono::seconds min_refresh_interval_;
  mutable std::shared_mutex mu_;
  std::shared_ptr<const KeySet> keys_;
  std::chrono::steady_clock::time_point last_refresh_{};
  std::unordered_map<std::string, auth::v1::Claims> cache_;  // token -> claims (until exp)
};

// "Bearer <token>" -> "<token>"; nullopt for anything else.
std::optional<std::string_view> BearerToken(std::string_view authorization_header);

}  // namespace muon::token

template <>
struct std::is_error_code_enum<muon::token::TokenErrc> : std::true_type {};
