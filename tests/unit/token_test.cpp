// Access tokens: base64url, Ed25519 JWT signing and verification, and the caching Verifier.

#include "muon/common/token.h"

#include <fmt/format.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

using muon::token::TokenErrc;
using namespace std::chrono_literals;

namespace {

muon::auth::v1::Claims MakeClaims(int64_t iat, int64_t exp) {
  muon::auth::v1::Claims claims;
  claims.set_iss("eu");
  claims.set_sub("7d0c5a3e-0000-4000-8000-000000000001");
  claims.set_email("dev@example.com");
  claims.add_roles("developer");
  claims.add_roles("ops");
  claims.set_iat(iat);
  claims.set_exp(exp);
  claims.set_jti("jti-1");
  return claims;
}

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

muon::auth::v1::KeysResponse KeysOf(std::initializer_list<const muon::token::SigningKey*> keys) {
  muon::auth::v1::KeysResponse response;
  for (const auto* key : keys) *response.add_keys() = muon::token::ToJwk(*key);
  return response;
}

// Replaces one of the three parts of a token.
std::string WithPart(const std::string& token, int index, const std::string& part) {
  const size_t dot1 = token.find('.');
  const size_t dot2 = token.find('.', dot1 + 1);
  std::string parts[3] = {token.substr(0, dot1), token.substr(dot1 + 1, dot2 - dot1 - 1),
                          token.substr(dot2 + 1)};
  parts[index] = part;
  return parts[0] + "." + parts[1] + "." + parts[2];
}

std::string Part(const std::string& token, int index) {
  const size_t dot1 = token.find('.');
  const size_t dot2 = token.find('.', dot1 + 1);
  if (index == 0) return token.substr(0, dot1);
  if (index == 1) return token.substr(dot1 + 1, dot2 - dot1 - 1);
  return token.substr(dot2 + 1);
}

}  // namespace

TEST_CASE("base64url follows RFC 4648 without padding", "[token]") {
  using muon::token::Base64UrlDecode;
  using muon::token::Base64UrlEncode;
  const std::pair<std::string, std::string> vectors[] = {
      {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
      {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff\xbf", "-_-_"},
  };
  for (const auto& [raw, encoded] : vectors) {
    CHECK(Base64UrlEncode(raw) == encoded);
    CHECK(Base64UrlDecode(encoded) == std::optional<std::string>(raw));
  }
  CHECK(Base64UrlEncode(std::string("\0\x01", 2)) == "AAE");

  CHECK_FALSE(Base64UrlDecode("Zg=="));   // padding
  CHECK_FALSE(Base64UrlDecode("Zm9v="));  // padding
  CHECK_FALSE(Base64UrlDecode("+/8"));    // standard alphabet
  CHECK_FALSE(Base64UrlDecode("Zm9v!"));  // garbage
  CHECK_FALSE(Base64UrlDecode("Zm 9v"));  // whitespace
  CHECK_FALSE(Base64UrlDecode("Z"));      // a lone character carries no byte
  CHECK_FALSE(Base64UrlDecode("Zh"));     // non-canonical trailing bits
}

TEST_CASE("a signed token verifies and carries its claims", "[token]") {
  const auto key = muon::token::GenerateSigningKey("eu-k1", "eu");
  const muon::token::KeySet keys(KeysOf({&key}));
  REQUIRE(keys.size() == 1);
  const int64_t now = Now();
  const std::string token = muon::token::Sign(MakeClaims(now, now + 900), key);

  // Header is exactly what RFC 8037 tooling expects; iat/exp are JSON numbers.
  CHECK(muon::token::Base64UrlDecode(Part(token, 0)) ==
        std::optional<std::string>(R"({"alg":"EdDSA","kid":"eu-k1","typ":"JWT"})"));
  const auto payload = muon::token::Base64UrlDecode(Part(token, 1));
  REQUIRE(payload);
  CHECK(payload->find(fmt::format("\"iat\":{},", now)) != std::string::npos);
  CHECK(payload->find(fmt::format("\"exp\":{},", now + 900)) != std::string::npos);
  CHECK(payload->find(R"("roles":["developer","ops"])") != std::string::npos);

  muon::auth::v1::Claims claims;
  REQUIRE_FALSE(muon::token::Verify(token, keys, std::chrono::system_clock::now(), claims));
  CHECK(claims.iss() == "eu");
  CHECK(claims.email() == "dev@example.com");
  CHECK(claims.roles_size() == 2);
  CHECK(claims.exp() == now + 900);
  CHECK(claims.jti() == "jti-1");

  const auto jwk = muon::token::ToJwk(key);
  CHECK(jwk.kty() == "OKP");
  CHECK(jwk.crv() == "Ed25519");
  CHECK(jwk.alg() == "EdDSA");
  CHECK(jwk.use() == "sig");
  CHECK(jwk.status() == "active");
  CHECK(jwk.region() == "eu");
  CHECK(muon::token::Base64UrlDecode(jwk.x())->size() == 32);
}

TEST_CASE("tampered, forged and malformed tokens are refused", "[token]") {
  const auto key = muon::token::GenerateSigningKey("eu-k1", "eu");
  const auto other = muon::token::GenerateSigningKey("eu-k1", "eu");  // same kid, other key
  const muon::token::KeySet keys(KeysOf({&key}));
  const auto now = std::chrono::system_clock::now();
  const int64_t now_s = Now();
  const std::string token = muon::token::Sign(MakeClaims(now_s, now_s + 900), key);
  muon::auth::v1::Claims claims;

  // A payload with an added role, under the original signature.
  auto admin = MakeClaims(now_s, now_s + 900);
  admin.add_roles("admin");
  const std::string forged_payload = Part(muon::token::Sign(admin, other), 1);
  CHECK(muon::token::Verify(WithPart(token, 1, forged_payload), keys, now, claims) ==
        TokenErrc::kBadSignature);
  // Signed by a different key that claims the same kid.
  CHECK(muon::token::Verify(muon::token::Sign(admin, other), keys, now, claims) ==
        TokenErrc::kBadSignature);

  // alg "none" (and anything else) is refused before any key is looked at.
  for (const char* header :
       {R"({"alg":"none","kid":"eu-k1","typ":"JWT"})",
        R"({"alg":"HS256","kid":"eu-k1","typ":"JWT"})", R"({"kid":"eu-k1","typ":"JWT"})"}) {
    const std::string none = WithPart(token, 0, muon::token::Base64UrlEncode(header));
    CHECK(muon::token::Verify(none, keys, now, claims) == TokenErrc::kMalformed);
    CHECK(muon::token::Verify(WithPart(none, 2, ""), keys, now, claims) == TokenErrc::kMalformed);
  }

  CHECK(muon::token::Verify("", keys, now, claims) == TokenErrc::kMissing);
  CHECK(muon::token::Verify("abc", keys, now, claims) == TokenErrc::kMalformed);
  CHECK(muon::token::Verify(Part(token, 0) + "." + Part(token, 1), keys, now, claims) ==
        TokenErrc::kMalformed);
  CHECK(muon::token::Verify(token + ".x", keys, now, claims) == TokenErrc::kMalformed);
  CHECK(muon::token::Verify(WithPart(token, 0, "e30="), keys, now, claims) ==
        TokenErrc::kMalformed);
  CHECK(muon::token::Verify(WithPart(token, 0, muon::token::Base64UrlEncode("not json")), keys, now,
                            claims) == TokenErrc::kMalformed);
  CHECK(muon::token::Verify(WithPart(token, 2, "AAAA"), keys, now, claims) ==
        TokenErrc::kMalformed);
  CHECK(muon::token::Verify(std::string(9000, 'a'), keys, now, claims) == TokenErrc::kMalformed);

  // Unknown kid.
  const auto stranger = muon::token::GenerateSigningKey("us-k9", "us");
  CHECK(muon::token::Verify(muon::token::Sign(MakeClaims(now_s, now_s + 900), stranger), keys, now,
                            claims) == TokenErrc::kUnknownKey);
}

TEST_CASE("exp has no leeway; iat may be up to 60 s in the future", "[token]") {
  const auto key = muon::token::GenerateSigningKey("eu-k1", "eu");
  const muon::token::KeySet keys(KeysOf({&key}));
  const auto now = std::chrono::system_clock::now();
  const int64_t now_s = Now();
  muon::auth::v1::Claims claims;
  auto verify = [&](int64_t iat, int64_t exp) {
    return muon::token::Verify(muon::token::Sign(MakeClaims(iat, exp), key), keys, now, claims);
  };
  CHECK(verify(now_s - 900, now_s - 1) == TokenErrc::kExpired);
  CHECK(verify(now_s - 900, now_s) == TokenErrc::kExpired);  // exp <= now
  CHECK(verify(now_s - 900, 0) == TokenErrc::kMalformed);    // no exp at all
  CHECK_FALSE(verify(now_s + 30, now_s + 900));              // small skew is fine
  CHECK(verify(now_s + 120, now_s + 900) == TokenErrc::kNotYetValid);
}

TEST_CASE("token errors read well", "[token]") {
  using muon::token::make_error_code;
  CHECK(make_error_code(TokenErrc::kExpired).message() == "token expired");
  CHECK(make_error_code(TokenErrc::kUnknownKey).message() == "token signed with an unknown key");
  CHECK(make_error_code(TokenErrc::kBadSignature).message() == "token signature invalid");
  CHECK(make_error_code(TokenErrc::kMalformed).message() == "token malformed");
  std::error_code ec = TokenErrc::kMissing;
  CHECK(ec.category().name() == std::string("muon.token"));
}

TEST_CASE("the Verifier answers repeated tokens from its cache", "[token]") {
  const auto key = muon::token::GenerateSigningKey("eu-k1", "eu");
  std::atomic<int> fetches{0};
  muon::token::Verifier verifier([&] {
    ++fetches;
    return std::optional(KeysOf({&key}));
  });
  CHECK_FALSE(verifier.Ready());
  const int64_t now = Now();
  const std::string token = muon::token::Sign(MakeClaims(now, now + 900), key);
  muon::auth::v1::Claims claims;
  REQUIRE_FALSE(verifier.Verify(token, claims));
  CHECK(verifier.Ready());
  CHECK(fetches == 1);
  CHECK(verifier.cache_size() == 1);

  constexpr int kRounds = 20000;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kRounds; ++i) {
    muon::auth::v1::Claims warm;
    REQUIRE_FALSE(verifier.Verify(token, warm));
  }
  const auto per_call = (std::chrono::steady_clock::now() - start) / kRounds;
  WARN("warm verify: " << std::chrono::duration_cast<std::chrono::nanoseconds>(per_call).count()
                       << " ns per call");
  CHECK(fetches == 1);
  CHECK(verifier.cache_size() == 1);
  CHECK(claims.email() == "dev@example.com");

  // A failed verification is not cached.
  muon::auth::v1::Claims unused;
  CHECK(
      verifier.Verify(WithPart(token, 2, Part(muon::token::Sign(MakeClaims(now, now + 1), key), 2)),
                      unused) == TokenErrc::kBadSignature);
  CHECK(verifier.cache_size() == 1);
  CHECK(verifier.Verify("", unused) == TokenErrc::kMissing);
}

TEST_CASE("a cached token stops verifying when it expires", "[token]") {
  const auto key = muon::token::GenerateSigningKey("eu-k1", "eu");
  muon::token::Verifier verifier([&] { return std::optional(KeysOf({&key})); });
  const int64_t now = Now();
  const std::string token = muon::token::Sign(MakeClaims(now, now + 1), key);
  muon::auth::v1::Claims claims;
  REQUIRE_FALSE(verifier.Verify(token, claims));
  REQUIRE(verifier.cache_size() == 1);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  std::error_code ec;
  while (!(ec = verifier.Verify(token, claims)) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);  // polling until the second turns, not a readiness wait
  }
  CHECK(ec == TokenErrc::kExpired);
}

TEST_CASE("an unknown kid refreshes the keys once per interval", "[token]") {
  const auto eu = muon::token::GenerateSigningKey("eu-k1", "eu");
  const auto us = muon::token::GenerateSigningKey("us-k1", "us");
  std::atomic<int> fetches{0};
  std::atomic<bool> us_published{false};
  muon::token::Verifier verifier(
      [&] {
        ++fetches;
        return us_published ? std::optional(KeysOf({&eu, &us})) : std::optional(KeysOf({&eu}));
      },
      std::chrono::seconds(60));
  REQUIRE(verifier.Refresh());
  CHECK(fetches == 1);
  const int64_t now = Now();
  muon::auth::v1::Claims claims;

  // us's key appeared after the last fetch: the unknown kid triggers a refresh... but only one
  // per interval, and the refresh at start-up just happened.
  us_published = true;
  const std::string from_us = muon::token::Sign(MakeClaims(now, now + 900), us);
  CHECK(verifier.Verify(from_us, claims) == TokenErrc::kUnknownKey);
  CHECK(fetches == 1);

  muon::token::Verifier eager(
      [&] {
        ++fetches;
        return us_published ? std::optional(KeysOf({&eu, &us})) : std::optional(KeysOf({&eu}));
      },
      std::chrono::seconds(0));
  us_published = false;
  REQUIRE(eager.Refresh());
  us_published = true;
  const int before = fetches;
  CHECK_FALSE(eager.Verify(from_us, claims));
  CHECK(fetches == before + 1);
  CHECK(claims.iss() == "eu");  // MakeClaims' iss; the key decides validity, not iss

  // A made-up kid costs one fetch and still fails.
  const auto ghost = muon::token::GenerateSigningKey("xx-k1", "xx");
  CHECK(eager.Verify(muon::token::Sign(MakeClaims(now, now + 900), ghost), claims) ==
        TokenErrc::kUnknownKey);
}

TEST_CASE("a key that leaves the key set stops verifying, cached or not", "[token]") {
  const auto old_key = muon::token::GenerateSigningKey("eu-k1", "eu");
  const auto new_key = muon::token::GenerateSigningKey("eu-k2", "eu");
  std::atomic<bool> retired{false};
  muon::token::Verifier verifier(
      [&] {
        return retired ? std::optional(KeysOf({&new_key}))
                       : std::optional(KeysOf({&old_key, &new_key}));
      },
      std::chrono::seconds(0));
  const int64_t now = Now();
  const std::string old_token = muon::token::Sign(MakeClaims(now, now + 900), old_key);
  const std::string new_token = muon::token::Sign(MakeClaims(now, now + 900), new_key);
  muon::auth::v1::Claims claims;
  REQUIRE_FALSE(verifier.Verify(old_token, claims));
  REQUIRE_FALSE(verifier.Verify(new_token, claims));
  retired = true;
  REQUIRE(verifier.Refresh());
  CHECK(verifier.Verify(old_token, claims) == TokenErrc::kUnknownKey);
  CHECK_FALSE(verifier.Verify(new_token, claims));
}

TEST_CASE("a failing key fetch keeps the old keys", "[token]") {
  const auto key = muon::token::GenerateSigningKey("eu-k1", "eu");
  std::atomic<bool> down{false};
  muon::token::Verifier verifier(
      [&]() -> std::optional<muon::auth::v1::KeysResponse> {
        if (down) return std::nullopt;
        return KeysOf({&key});
      },
      std::chrono::seconds(0));
  REQUIRE(verifier.Refresh());
  down = true;
  CHECK_FALSE(verifier.Refresh());
  CHECK(verifier.Ready());
  const int64_t now = Now();
  muon::auth::v1::Claims claims;
  CHECK_FALSE(verifier.Verify(muon::token::Sign(MakeClaims(now, now + 900), key), claims));
}

TEST_CASE("Bearer tokens are taken from the Authorization header", "[token]") {
  using muon::token::BearerToken;
  CHECK(BearerToken("Bearer abc.def.ghi") == std::optional<std::string_view>("abc.def.ghi"));
  CHECK(BearerToken("bearer abc") == std::optional<std::string_view>("abc"));
  CHECK_FALSE(BearerToken("Bearer "));
  CHECK_FALSE(BearerToken("Bearer"));
  CHECK_FALSE(BearerToken("Basic dXNlcjpwYXNz"));
  CHECK_FALSE(BearerToken("Bearer a b"));
  CHECK_FALSE(BearerToken("Bearer  abc"));
  CHECK_FALSE(BearerToken(""));
}
