// Argon2id password hashing of the auth service (services/auth/passwords.h).

#include "passwords.h"

#include <catch2/catch.hpp>

TEST_CASE("passwords are Argon2id PHC strings with OWASP parameters", "[passwords]") {
  const std::string hash = muon::auth::HashPassword("correct horse battery staple");
  CHECK(hash.rfind("$argon2id$v=19$m=19456,t=2,p=1$", 0) == 0);
  // $argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>: six '$'-separated parts.
  CHECK(std::count(hash.begin(), hash.end(), '$') == 5);
  CHECK(muon::auth::VerifyPassword(hash, "correct horse battery staple"));
  CHECK_FALSE(muon::auth::VerifyPassword(hash, "correct horse battery stapl"));
  CHECK_FALSE(muon::auth::VerifyPassword(hash, ""));
  CHECK_FALSE(muon::auth::VerifyPassword("", "anything"));
  CHECK_FALSE(muon::auth::VerifyPassword("$2b$12$notargon", "anything"));

  // A fresh salt every time.
  CHECK(muon::auth::HashPassword("correct horse battery staple") != hash);
}

TEST_CASE("hashes made with other parameters need a rehash", "[passwords]") {
  const muon::auth::PasswordParams weak{.opslimit = 1, .memlimit = 8192ull * 1024};
  const std::string old_hash = muon::auth::HashPassword("a long enough password", weak);
  CHECK(old_hash.rfind("$argon2id$v=19$m=8192,t=1,p=1$", 0) == 0);
  CHECK(muon::auth::VerifyPassword(old_hash, "a long enough password"));
  CHECK(muon::auth::NeedsRehash(old_hash));
  CHECK_FALSE(muon::auth::NeedsRehash(old_hash, weak));
  CHECK_FALSE(muon::auth::NeedsRehash(muon::auth::HashPassword("a long enough password")));
  CHECK(muon::auth::NeedsRehash("not a hash"));
}

TEST_CASE("password policy", "[passwords]") {
  CHECK(muon::auth::CheckPasswordPolicy("short") == "password must be at least 12 characters");
  CHECK(muon::auth::CheckPasswordPolicy("twelve chars").empty());
  CHECK_FALSE(muon::auth::CheckPasswordPolicy(std::string(2000, 'x')).empty());
}
