#include "muon/common/token.h"

#include <google/protobuf/util/json_util.h>
#include <sodium.h>

#include <stdexcept>
#include <unordered_set>

#include "muon/common/json_writer.h"
#include "muon/common/log.h"

namespace muon::token {
namespace {

// A token is a few hundred bytes; anything far larger is garbage or an attempt to make us hash
// and cache megabytes.
constexpr size_t kMaxTokenSize = 8192;
// Clock skew tolerated for iat: tokens are made by another region's auth on another host.
constexpr auto kIatSkew = std::chrono::seconds(60);
// The cache holds verified tokens until they expire; this bounds its memory (a token plus its
// claims is well under 1 KiB).
constexpr size_t kMaxCacheEntries = 100000;
// Without a refresh triggered by an unknown kid, the key set is re-fetched this often (on the
// cold path only), so a key retired elsewhere stops verifying here too.
constexpr auto kMaxKeyAge = std::chrono::minutes(5);

void EnsureSodium() {
  // sodium_init() is thread-safe and idempotent, but the function-local static also makes the
  // cost a single load after the first call.
  static const bool ok = sodium_init() >= 0;
  if (!ok) throw std::runtime_error("libsodium could not be initialised");
}

class TokenCategoryImpl : public std::error_category {
 public:
  const char* name() const noexcept override { return "muon.token"; }
  std::string message(int ev) const override {
    switch (static_cast<TokenErrc>(ev)) {
      case TokenErrc::kOk:
        return "ok";
      case TokenErrc::kMissing:
        return "token missing";
      case TokenErrc::kMalformed:
        return "token malformed";
      case TokenErrc::kUnknownKey:
        return "token signed with an unknown key";
      case TokenErrc::kBadSignature:
        return "token signature invalid";
      case TokenErrc::kExpired:
        return "token expired";
      case TokenErrc::kNotYetValid:
        return "token not valid yet (issued in the future)";
    }
    return "unknown token error";
  }
};

google::protobuf::util::JsonParseOptions LenientJson() {
  google::protobuf::util::JsonParseOptions options;
  // JWTs may carry registered claims we do not model (nbf, aud, ...).
  options.ignore_unknown_fields = true;
  return options;
}

int64_t Seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

}  // namespace

const std::error_category& TokenCategory() {
  static const TokenCategoryImpl category;
  return category;
}

std::error_code make_error_code(TokenErrc e) {
  return {static_cast<int>(e), TokenCategory()};
}

std::string Base64UrlEncode(std::string_view bytes) {
  EnsureSodium();
  constexpr int kVariant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), kVariant), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), kVariant);
  out.resize(out.size() - 1);  // the encoded length counts the terminating NUL
  return out;
}

std::optional<std::string> Base64UrlDecode(std::string_view text) {
  EnsureSodium();
  // Every 4 characters carry 3 bytes; a remainder of 1 character cannot be valid.
  std::string out(text.size() / 4 * 3 + 3, '\0');
  size_t length = 0;
  // b64_end = nullptr: any character outside the URL-safe alphabet ('=' included) fails the call,
  // and libsodium also rejects non-canonical trailing bits.
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &length, nullptr,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0) {
    return std::nullopt;
  }
  out.resize(length);
  return out;
}

SigningKey GenerateSigningKey(std::string kid, std::string region) {
  EnsureSodium();
  SigningKey key;
  key.kid = std::move(kid);
  key.region = std::move(region);
  crypto_sign_keypair(key.public_key.data(), key.secret_key.data());
  return key;
}

auth::v1::Jwk ToJwk(const SigningKey& key) {
  auth::v1::Jwk jwk;
  jwk.set_kty("OKP");
  jwk.set_crv("Ed25519");
  jwk.set_x(Base64UrlEncode(std::string_view(reinterpret_cast<const char*>(key.public_key.data()),
                                             key.public_key.size())));
  jwk.set_kid(key.kid);
  jwk.set_alg("EdDSA");
  jwk.set_use("sig");
  jwk.set_region(key.region);
  jwk.set_status("active");
  return jwk;
}

std::string Sign(const auth::v1::Claims& claims, const SigningKey& key) {
  EnsureSodium();
  JsonWriter header;
  header.BeginObject().Key("alg").String("EdDSA").Key("kid").String(key.kid).Key("typ").String(
      "JWT");
  header.EndObject();

  // Written by hand rather than with protobuf's JSON printer: proto3 JSON quotes int64 values,
  // and RFC 7519 NumericDate claims must be JSON numbers.
  JsonWriter payload;
  payload.BeginObject();
  payload.Key("iss").String(claims.iss());
  payload.Key("sub").String(claims.sub());
  payload.Key("email").String(claims.email());
  payload.Key("roles").BeginArray();
  for (const auto& role : claims.roles()) payload.String(role);
  payload.EndArray();
  payload.Key("iat").Int(claims.iat());
  payload.Key("exp").Int(claims.exp());
  payload.Key("jti").String(claims.jti());
  payload.EndObject();

  std::string token = Base64UrlEncode(header.str());
  token += '.';
  token += Base64UrlEncode(payload.str());
  unsigned char signature[crypto_sign_BYTES];
  crypto_sign_detached(signature, nullptr, reinterpret_cast<const unsigned char*>(token.data()),
                       token.size(), key.secret_key.data());
  token += '.';
  token += Base64UrlEncode(
      std::string_view(reinterpret_cast<const char*>(signature), sizeof(signature)));
  return token;
}

KeySet::KeySet(const auth::v1::KeysResponse& keys) {
  for (const auto& jwk : keys.keys()) {
    // Only Ed25519 keys can verify our tokens; anything else in the set is ignored, as JWKS
    // consumers do with keys they do not understand.
    if (jwk.kty() != "OKP" || jwk.crv() != "Ed25519" || jwk.kid().empty()) continue;
    if (!jwk.alg().empty() && jwk.alg() != "EdDSA") continue;
    auto raw = Base64UrlDecode(jwk.x());
    if (!raw || raw->size() != 32) continue;
    std::array<unsigned char, 32> public_key{};
    std::copy(raw->begin(), raw->end(), public_key.begin());
    keys_[jwk.kid()] = public_key;
  }
}

const std::array<unsigned char, 32>* KeySet::Find(std::string_view kid) const {
  auto it = keys_.find(std::string(kid));
  return it == keys_.end() ? nullptr : &it->second;
}

std::error_code Verify(std::string_view token, const KeySet& keys,
                       std::chrono::system_clock::time_point now, auth::v1::Claims& claims) {
  EnsureSodium();
  if (token.empty()) return TokenErrc::kMissing;
  if (token.size() > kMaxTokenSize) return TokenErrc::kMalformed;
  const size_t dot1 = token.find('.');
  if (dot1 == std::string_view::npos) return TokenErrc::kMalformed;
  const size_t dot2 = token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return TokenErrc::kMalformed;
  }
  const std::string_view header_b64 = token.substr(0, dot1);
  const std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  const std::string_view signature_b64 = token.substr(dot2 + 1);

  auto header_json = Base64UrlDecode(header_b64);
  if (!header_json) return TokenErrc::kMalformed;
  auth::v1::JwtHeader header;
  if (!google::protobuf::util::JsonStringToMessage(*header_json, &header, LenientJson()).ok()) {
    return TokenErrc::kMalformed;
  }
  // The algorithm is fixed: a token naming another (or "none") is refused before any key is
  // looked at, which rules out algorithm-confusion attacks.
  if (header.alg() != "EdDSA") return TokenErrc::kMalformed;
  const auto* public_key = keys.Find(header.kid());
  if (public_key == nullptr) return TokenErrc::kUnknownKey;

  auto signature = Base64UrlDecode(signature_b64);
  if (!signature || signature->size() != crypto_sign_BYTES) return TokenErrc::kMalformed;
  const std::string_view signed_part = token.substr(0, dot2);
  if (crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(signature->data()),
                                  reinterpret_cast<const unsigned char*>(signed_part.data()),
                                  signed_part.size(), public_key->data()) != 0) {
    return TokenErrc::kBadSignature;
  }

  // Only a payload with a valid signature is parsed.
  auto payload_json = Base64UrlDecode(payload_b64);
  if (!payload_json) return TokenErrc::kMalformed;
  auth::v1::Claims parsed;
  if (!google::protobuf::util::JsonStringToMessage(*payload_json, &parsed, LenientJson()).ok()) {
    return TokenErrc::kMalformed;
  }
  if (parsed.exp() <= 0) return TokenErrc::kMalformed;  // a token without exp never expires
  const int64_t now_s = Seconds(now);
  if (parsed.exp() <= now_s) return TokenErrc::kExpired;
  if (parsed.iat() > now_s + kIatSkew.count()) return TokenErrc::kNotYetValid;
  claims = std::move(parsed);
  return {};
}

Verifier::Verifier(KeyFetcher fetch_keys, std::chrono::seconds min_refresh_interval)
    : fetch_keys_(std::move(fetch_keys)), min_refresh_interval_(min_refresh_interval) {}

std::error_code Verifier::Verify(std::string_view token, auth::v1::Claims& claims) {
  if (token.empty()) return TokenErrc::kMissing;
  if (token.size() > kMaxTokenSize) return TokenErrc::kMalformed;
  const auto now = std::chrono::system_clock::now();
  const std::string key(token);
  std::shared_ptr<const KeySet> keys;
  std::chrono::steady_clock::time_point last_refresh;
  {
    // Warm path: a token verified before is answered from the cache, under a shared lock.
    std::shared_lock lock(mu_);
    if (auto it = cache_.find(key); it != cache_.end()) {
      if (it->second.exp() <= Seconds(now)) return TokenErrc::kExpired;
      claims = it->second;
      return {};
    }
    keys = keys_;
    last_refresh = last_refresh_;
  }

  // Cold path. Refreshes happen outside the lock (they are bus calls) and at most once per
  // min_refresh_interval_ however many threads ask, so an unreachable auth cannot stall every
  // request and a flood of made-up kids cannot flood auth.
  auto try_refresh = [&]() -> bool {
    {
      std::unique_lock lock(mu_);
      const auto steady_now = std::chrono::steady_clock::now();
      if (last_refresh_ != std::chrono::steady_clock::time_point{} &&
          steady_now - last_refresh_ < min_refresh_interval_) {
        keys = keys_;  // someone else refreshed (or tried) just now
        return false;
      }
      last_refresh_ = steady_now;  // claims the refresh for this thread
    }
    const bool ok = Refresh();
    std::shared_lock lock(mu_);
    keys = keys_;
    return ok;
  };
  if (!keys || std::chrono::steady_clock::now() - last_refresh > kMaxKeyAge) try_refresh();
  if (!keys) return TokenErrc::kUnknownKey;  // no key set at all: auth unreachable so far

  auth::v1::Claims verified;
  std::error_code ec = token::Verify(token, *keys, now, verified);
  if (ec == TokenErrc::kUnknownKey && try_refresh() && keys) {
    ec = token::Verify(token, *keys, now, verified);
  }
  if (ec) return ec;

  {
    std::unique_lock lock(mu_);
    if (cache_.size() >= kMaxCacheEntries) {
      const int64_t now_s = Seconds(now);
      std::erase_if(cache_, [now_s](const auto& entry) { return entry.second.exp() <= now_s; });
      // Still full of live tokens: start over rather than track recency on the warm path.
      if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    }
    cache_.emplace(key, verified);
  }
  claims = std::move(verified);
  return {};
}

bool Verifier::Refresh() {
  std::optional<auth::v1::KeysResponse> fetched;
  try {
    fetched = fetch_keys_();
  } catch (const std::exception& e) {
    log::Warn("fetching token keys failed", {{"error", e.what()}});
  }
  std::unique_lock lock(mu_);
  last_refresh_ = std::chrono::steady_clock::now();
  if (!fetched) return false;
  auto next = std::make_shared<const KeySet>(*fetched);
  // A key that disappeared was retired (or withdrawn): tokens it signed must stop verifying
  // now, not when they expire, so cached verdicts are dropped.
  if (keys_) {
    // KeySet does not list its kids; count the old kids that are still present instead.
    std::unordered_set<std::string_view> kept;
    for (const auto& jwk : fetched->keys()) {
      if (next->Find(jwk.kid()) != nullptr && keys_->Find(jwk.kid()) != nullptr) {
        kept.insert(jwk.kid());
      }
    }
    if (kept.size() < keys_->size()) cache_.clear();
  }
  keys_ = std::move(next);
  return true;
}

bool Verifier::Ready() const {
  std::shared_lock lock(mu_);
  return keys_ != nullptr;
}

size_t Verifier::cache_size() const {
  std::shared_lock lock(mu_);
  return cache_.size();
}

std::optional<std::string_view> BearerToken(std::string_view authorization_header) {
  // The scheme is case-insensitive (RFC 7235); exactly one space, then a non-empty token with no
  // whitespace in it.
  constexpr std::string_view kScheme = "bearer ";
  if (authorization_header.size() <= kScheme.size()) return std::nullopt;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    const char c = authorization_header[i];
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != kScheme[i]) {
      return std::nullopt;
    }
  }
  const std::string_view token = authorization_header.substr(kScheme.size());
  for (char c : token) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') return std::nullopt;
  }
  return token;
}

}  // namespace muon::token
