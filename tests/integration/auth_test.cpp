// The auth service against a real nats-server and PostgreSQL: the service runs in-process on a
// bus connection, clients call it with muon::Call over NATS with Authorization headers, exactly
// as the ingress and other platform services do.

#include <fmt/format.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <functional>
#include <thread>

#include "auth_service.h"
#include "harness.h"
#include "muon/auth/v1/auth.pb.h"
#include "muon/common/authz.h"
#include "muon/common/bus.h"
#include "muon/common/service.h"
#include "muon/common/token.h"

using namespace std::chrono_literals;
namespace v1 = muon::auth::v1;

namespace {

constexpr const char* kAdminEmail = "admin@muon.local";
constexpr const char* kAdminPassword = "admin password of the test";
constexpr const char* kPlatformSecret = "platform-secret-of-the-test-0123456789abcdef";

std::unique_ptr<muon::bus::Connection> Connect(const std::string& url, const std::string& name) {
  auto conn = muon::bus::Connection::Connect({.url = url, .name = name});
  REQUIRE(conn->WaitConnected(5s));
  return conn;
}

// Files and database shared by the auth instances of one test.
struct Deployment {
  muon::testing::TempDir dir{"muon-test-auth"};
  std::string database_url = muon::testing::Postgres::Shared().CreateDatabase();
  std::string key_file = dir.path() + "/auth.key";

  muon::auth::AppOptions Options(const std::string& region) const {
    muon::auth::AppOptions options;
    options.database_url = database_url;
    options.key_file = key_file;
    options.max_connections = 4;
    options.settings.region = region;
    options.settings.admin_email = kAdminEmail;
    options.settings.admin_password = kAdminPassword;
    options.settings.platform_secret = kPlatformSecret;
    options.settings.rules_max_age = 1s;
    return options;
  }
};

// One auth process: its own bus connection, the app and the Service answering muon.rpc.auth.*.
struct AuthInstance {
  std::unique_ptr<muon::bus::Connection> conn;
  std::unique_ptr<muon::auth::AuthApp> app;
  std::unique_ptr<muon::Service> service;

  AuthInstance(const std::string& nats_url, muon::auth::AppOptions options) {
    conn = Connect(nats_url, "auth-" + options.settings.region);
    app = std::make_unique<muon::auth::AuthApp>(std::move(options));
    auto service_options = muon::auth::DefaultServiceOptions();
    service_options.concurrency = 2;
    service = std::make_unique<muon::Service>(*conn, service_options);
    app->Register(*service);
    service->Start();
  }
  ~AuthInstance() {
    service->Stop(2s);
    service.reset();
    app.reset();
  }
};

// client_address: the Muon-Client-Address header, as an ingress sets it (none: a bus caller).
template <typename Resp, typename Req>
Resp CallAuth(muon::bus::Connection& conn, const std::string& method, const Req& request,
              const std::string& access_token = "", const std::string& client_address = "") {
  muon::bus::Headers headers;
  if (!access_token.empty()) headers.emplace_back("Authorization", "Bearer " + access_token);
  if (!client_address.empty()) {
    headers.emplace_back(muon::bus::kHeaderClientAddress, client_address);
  }
  Resp response;
  muon::Call(conn, muon::PlatformSubject("auth", method), request, response, 5s, headers);
  return response;
}

// Runs fn and returns the muon::Error it throws; fails the test when it does not throw.
muon::Error ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const muon::Error& e) {
    return e;
  }
  FAIL("expected a muon::Error");
  return muon::Error(0, "");
}

v1::TokenResponse Login(muon::bus::Connection& conn, const std::string& email,
                        const std::string& password, const std::string& client_address = "") {
  v1::LoginRequest request;
  request.set_email(email);
  request.set_password(password);
  return CallAuth<v1::TokenResponse>(conn, "Login", request, "", client_address);
}

// The status a login answers with: 200, or the muon::Error's code.
int LoginStatus(muon::bus::Connection& conn, const std::string& email, const std::string& password,
                const std::string& client_address = "") {
  try {
    Login(conn, email, password, client_address);
    return 200;
  } catch (const muon::Error& e) {
    return e.code();
  }
}

std::string KidOf(const std::string& token) {
  auto header = muon::token::Base64UrlDecode(token.substr(0, token.find('.')));
  REQUIRE(header);
  const std::string marker = "\"kid\":\"";
  const size_t start = header->find(marker) + marker.size();
  return header->substr(start, header->find('"', start) - start);
}

v1::Invite Invite(muon::bus::Connection& conn, const std::string& admin_token,
                  const std::string& email, int64_t ttl_seconds = 0,
                  std::vector<std::string> roles = {}) {
  v1::CreateInviteRequest request;
  request.set_email(email);
  request.set_ttl_seconds(ttl_seconds);
  for (auto& role : roles) request.add_roles(role);
  return CallAuth<v1::Invite>(conn, "CreateInvite", request, admin_token);
}

v1::TokenResponse Signup(muon::bus::Connection& conn, const std::string& code,
                         const std::string& email, const std::string& password) {
  v1::SignupRequest request;
  request.set_invite_code(code);
  request.set_email(email);
  request.set_name("Dev Eloper");
  request.set_password(password);
  return CallAuth<v1::TokenResponse>(conn, "Signup", request);
}

std::string Refresh(muon::bus::Connection& conn, const std::string& refresh_token,
                    v1::TokenResponse* out = nullptr) {
  v1::RefreshRequest request;
  request.set_refresh_token(refresh_token);
  auto response = CallAuth<v1::TokenResponse>(conn, "Refresh", request);
  if (out) *out = response;
  return response.refresh_token();
}

// One NATS server with one auth instance (region "us") and a client connection.
struct Single {
  muon::testing::NatsServer nats;
  Deployment deployment;
  std::unique_ptr<AuthInstance> auth;
  std::unique_ptr<muon::bus::Connection> client = Connect(nats.url(), "test-client");
  std::string admin_token;

  explicit Single(const std::function<void(muon::auth::AppOptions&)>& tweak = {}) {
    auto options = deployment.Options("us");
    if (tweak) tweak(options);
    auth = std::make_unique<AuthInstance>(nats.url(), std::move(options));
    admin_token = Login(*client, kAdminEmail, kAdminPassword).access_token();
  }

  // A developer account signed up through an invite; returns its tokens.
  v1::TokenResponse Developer(const std::string& email, const std::string& password) {
    const auto invite = Invite(*client, admin_token, email);
    return Signup(*client, invite.code(), email, password);
  }
};

}  // namespace

TEST_CASE("signup with an invite, then login and whoami", "[auth]") {
  Single s;
  const auto invite = Invite(*s.client, s.admin_token, "Dev@Example.com", 0, {"developer"});
  CHECK(invite.code().size() == 22);  // 128 bits, base64url
  CHECK(invite.email() == "dev@example.com");
  CHECK(invite.created_by() == kAdminEmail);

  const auto signed_up =
      Signup(*s.client, invite.code(), "dev@example.com", "a good long password");
  CHECK_FALSE(signed_up.access_token().empty());
  CHECK_FALSE(signed_up.refresh_token().empty());
  CHECK(signed_up.token_type() == "Bearer");
  CHECK(signed_up.expires_in() == 900);
  CHECK(signed_up.region() == "us");
  CHECK(signed_up.account().email() == "dev@example.com");
  REQUIRE(signed_up.account().roles_size() == 1);
  CHECK(signed_up.account().roles(0) == "developer");

  // The invite is single use.
  auto used =
      ErrorOf([&] { Signup(*s.client, invite.code(), "dev@example.com", "another password!"); });
  CHECK(used.code() == 409);
  CHECK(used.detail() == "invite already used; ask an admin for a new one");

  // An invite naming an email is only for that email; unknown codes are 404.
  const auto named = Invite(*s.client, s.admin_token, "ops@example.com");
  CHECK(ErrorOf([&] {
          Signup(*s.client, named.code(), "eve@example.com", "a good long password");
        }).code() == 403);
  CHECK(ErrorOf([&] {
          Signup(*s.client, "nope", "x@example.com", "a good long password");
        }).code() == 404);
  CHECK(ErrorOf([&] { Signup(*s.client, named.code(), "ops@example.com", "short"); }).code() ==
        400);

  // An expired invite is refused. (Polled with another email, which can never succeed, so the
  // invite is still unused when it expires.)
  const auto brief = Invite(*s.client, s.admin_token, "late@example.com", 1);
  REQUIRE(muon::testing::WaitUntil(
      [&] {
        return ErrorOf([&] {
                 Signup(*s.client, brief.code(), "other@example.com", "a good long password");
               }).detail() == "invite expired; ask an admin for a new one";
      },
      10s, 100ms));
  CHECK(ErrorOf([&] {
          Signup(*s.client, brief.code(), "late@example.com", "a good long password");
        }).detail() == "invite expired; ask an admin for a new one");

  const auto logged_in = Login(*s.client, "DEV@example.com ", "a good long password");
  CHECK(logged_in.account().id() == signed_up.account().id());
  const auto me =
      CallAuth<v1::Account>(*s.client, "Whoami", v1::WhoamiRequest(), logged_in.access_token());
  CHECK(me.email() == "dev@example.com");
  CHECK(me.name() == "Dev Eloper");
  CHECK(me.created_region() == "us");

  // The admin sees accounts and invites (codes are never listed).
  const auto accounts = CallAuth<v1::ListAccountsResponse>(
      *s.client, "ListAccounts", v1::ListAccountsRequest(), s.admin_token);
  CHECK(accounts.accounts_size() == 2);
  const auto invites = CallAuth<v1::ListInvitesResponse>(*s.client, "ListInvites",
                                                         v1::ListInvitesRequest(), s.admin_token);
  CHECK(invites.invites_size() == 3);
  for (const auto& i : invites.invites()) CHECK(i.code().empty());

  // Wrong password and unknown account: one generic answer.
  CHECK(ErrorOf([&] { Login(*s.client, "dev@example.com", "wrong password!!"); }).detail() ==
        "wrong email or password");
  const auto unknown = ErrorOf([&] { Login(*s.client, "ghost@example.com", "whatever12345"); });
  CHECK(unknown.code() == 401);
  CHECK(unknown.detail() == "wrong email or password");
}

TEST_CASE("refresh rotates, reuse revokes the family, logout revokes", "[auth]") {
  Single s;
  const auto first = s.Developer("dev@example.com", "a good long password");

  v1::TokenResponse second;
  const std::string r2 = Refresh(*s.client, first.refresh_token(), &second);
  CHECK(r2 != first.refresh_token());
  CHECK(second.refresh_token() == r2);
  CHECK(second.account().email() == "dev@example.com");
  CHECK(second.access_token() != first.access_token());
  const std::string r3 = Refresh(*s.client, r2);

  // r2 was spent: presenting it again revokes the whole family, including r3.
  auto reused = ErrorOf([&] { Refresh(*s.client, r2); });
  CHECK(reused.code() == 401);
  CHECK(reused.detail() == "refresh token reused; all sessions of this login were revoked");
  CHECK(ErrorOf([&] { Refresh(*s.client, r3); }).detail() == "session was revoked; sign in again");

  // Other logins (families) are unaffected; logout ends one.
  const auto other = Login(*s.client, "dev@example.com", "a good long password");
  const std::string o2 = Refresh(*s.client, other.refresh_token());
  v1::LogoutRequest logout;
  logout.set_refresh_token(o2);
  CallAuth<v1::LogoutResponse>(*s.client, "Logout", logout);
  CHECK(ErrorOf([&] { Refresh(*s.client, o2); }).code() == 401);
  CallAuth<v1::LogoutResponse>(*s.client, "Logout", logout);  // idempotent

  CHECK(ErrorOf([&] { Refresh(*s.client, "made-up"); }).detail() ==
        "refresh token invalid or expired; sign in again");

  // Disabling an account ends its sessions and its logins.
  const auto third = Login(*s.client, "dev@example.com", "a good long password");
  v1::SetAccountDisabledRequest disable;
  disable.set_email("dev@example.com");
  disable.set_disabled(true);
  CHECK(CallAuth<v1::Account>(*s.client, "SetAccountDisabled", disable, s.admin_token).disabled());
  CHECK(ErrorOf([&] { Refresh(*s.client, third.refresh_token()); }).code() == 401);
  CHECK(ErrorOf([&] { Login(*s.client, "dev@example.com", "a good long password"); }).detail() ==
        "wrong email or password");
  disable.set_disabled(false);
  CallAuth<v1::Account>(*s.client, "SetAccountDisabled", disable, s.admin_token);
  CHECK_FALSE(Login(*s.client, "dev@example.com", "a good long password").access_token().empty());
}

TEST_CASE("logins lock per (email, client address) and unlock when the window ends", "[auth]") {
  Single s([](muon::auth::AppOptions& o) {
    o.settings.throttle.lockout = 1s;
    o.settings.throttle.max_lockout = 2s;
  });
  s.Developer("dev@example.com", "a good long password");
  const std::string a = "203.0.113.7";    // a stranger guessing
  const std::string b = "198.51.100.20";  // the account's owner, elsewhere
  const std::string good = "a good long password";
  const std::string bad = "wrong password!!";

  for (int i = 0; i < 5; ++i) CHECK(LoginStatus(*s.client, "dev@example.com", bad, a) == 401);
  // Client A is locked: even the right password is refused from A, without hashing.
  auto locked = ErrorOf([&] { Login(*s.client, "dev@example.com", good, a); });
  CHECK(locked.code() == 429);
  CHECK(locked.detail() == "too many failed logins; try again in 1 s");

  // The same email from client B (and from a bus caller without the header) logs in, and B's
  // success does not lift A's lockout.
  CHECK_FALSE(Login(*s.client, "dev@example.com", good, b).access_token().empty());
  CHECK_FALSE(Login(*s.client, "dev@example.com", good).access_token().empty());
  CHECK(LoginStatus(*s.client, "dev@example.com", good, a) == 429);
  // Another address of A's IPv4 is another client; B still has its full count.
  for (int i = 0; i < 5; ++i) CHECK(LoginStatus(*s.client, "dev@example.com", bad, b) == 401);
  CHECK(LoginStatus(*s.client, "dev@example.com", bad, b) == 429);

  // A's window ends on its own; a wrong guess from A counts again (401 instead of 429).
  REQUIRE(muon::testing::WaitUntil(
      [&] { return LoginStatus(*s.client, "dev@example.com", bad, a) == 401; }, 10s, 100ms));
  for (int i = 0; i < 4; ++i) CHECK(LoginStatus(*s.client, "dev@example.com", bad, a) == 401);
  // The second lockout of A in a row is twice as long.
  CHECK(ErrorOf([&] { Login(*s.client, "dev@example.com", bad, a); }).detail() ==
        "too many failed logins; try again in 2 s");

  // Recovery: after the window the right password works from A and clears A's count.
  REQUIRE(muon::testing::WaitUntil(
      [&] { return LoginStatus(*s.client, "dev@example.com", good, a) == 200; }, 10s, 100ms));
  for (int i = 0; i < 4; ++i) CHECK(LoginStatus(*s.client, "dev@example.com", bad, a) == 401);
  CHECK(LoginStatus(*s.client, "dev@example.com", good, a) == 200);

  // IPv6 clients are counted per /64: other addresses of one /64 share the lockout.
  for (int i = 1; i <= 5; ++i) {
    CHECK(LoginStatus(*s.client, "dev@example.com", bad, fmt::format("2001:db8:7:7::{}", i)) ==
          401);
  }
  CHECK(LoginStatus(*s.client, "dev@example.com", good, "2001:db8:7:7:abcd::1") == 429);
  CHECK(LoginStatus(*s.client, "dev@example.com", good, "2001:db8:7:8::1") == 200);

  // Unknown emails are throttled the same way, so a lockout reveals nothing about existence.
  for (int i = 0; i < 5; ++i) CHECK(LoginStatus(*s.client, "ghost@example.com", bad, a) == 401);
  CHECK(LoginStatus(*s.client, "ghost@example.com", bad, a) == 429);
  CHECK(LoginStatus(*s.client, "ghost@example.com", bad, b) == 401);
}

TEST_CASE("the ceiling over all addresses of an email refuses only addresses it does not know",
          "[auth]") {
  Single s([](muon::auth::AppOptions& o) {
    o.settings.throttle.account_max_failures = 8;
    o.settings.throttle.account_window = 5s;
  });
  s.Developer("dev@example.com", "a good long password");
  const std::string good = "a good long password";
  const std::string bad = "wrong password!!";
  const std::string home = "192.0.2.10";  // where the owner logged in from before
  REQUIRE(LoginStatus(*s.client, "dev@example.com", good, home) == 200);

  // Guesses spread over many addresses (one each: no address reaches its own lockout) until
  // the email's ceiling is reached. (A fresh window starts with the first guess; 8 guesses take
  // far less than its 5 s.)
  for (int i = 1; i <= 8; ++i) {
    CHECK(LoginStatus(*s.client, "dev@example.com", bad, fmt::format("203.0.113.{}", i)) == 401);
  }
  // Now a new address is refused, even with the right password...
  auto refused = ErrorOf([&] { Login(*s.client, "dev@example.com", good, "203.0.113.99"); });
  CHECK(refused.code() == 429);
  CHECK(refused.detail().rfind("too many failed logins; try again in ", 0) == 0);
  CHECK(LoginStatus(*s.client, "dev@example.com", good) == 429);  // bus callers are new too
  // ...but the owner's known address is not.
  CHECK(LoginStatus(*s.client, "dev@example.com", good, home) == 200);

  // The window is short and ends on its own: then new addresses log in again.
  REQUIRE(muon::testing::WaitUntil(
      [&] { return LoginStatus(*s.client, "dev@example.com", good, "203.0.113.99") == 200; }, 15s,
      100ms));

  // Unknown emails have the same ceiling (no address is known for them).
  for (int i = 1; i <= 8; ++i) {
    CHECK(LoginStatus(*s.client, "ghost@example.com", bad, fmt::format("203.0.113.{}", i)) == 401);
  }
  CHECK(LoginStatus(*s.client, "ghost@example.com", bad, home) == 429);
}

TEST_CASE("login time with the production Argon2id parameters", "[auth][timing]") {
  Single s;
  s.Developer("dev@example.com", "a good long password");
  auto time_logins = [&](const std::function<std::string(int)>& email,
                         const std::string& password) {
    std::vector<double> ms;
    for (int i = 0; i < 20; ++i) {
      const auto start = std::chrono::steady_clock::now();
      try {
        Login(*s.client, email(i), password);
      } catch (const muon::Error&) {
      }
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count());
      if (password != "a good long password" && i % 4 == 3) {
        Login(*s.client, "dev@example.com", "a good long password");  // resets dev's throttle
      }
    }
    std::sort(ms.begin(), ms.end());
    return ms;
  };
  auto dev = [](int) { return std::string("dev@example.com"); };
  const auto ok = time_logins(dev, "a good long password");
  const auto wrong = time_logins(dev, "wrong password!!");
  // A new unknown email each time, so the throttle never short-cuts the work.
  const auto unknown =
      time_logins([](int i) { return fmt::format("nobody{}@example.com", i); }, "wrong password!!");
  WARN(
      fmt::format("login over NATS, 20 each: ok p50 {:.1f} ms (min {:.1f}, max {:.1f}); wrong "
                  "password p50 {:.1f} ms; unknown account p50 {:.1f} ms",
                  ok[10], ok.front(), ok.back(), wrong[10], unknown[10]));
  CHECK(ok.size() == 20);
}

TEST_CASE("rules decide through the authorizer: 401 vs 403, priority, tie", "[auth]") {
  Single s;
  const auto dev = s.Developer("dev@example.com", "a good long password");
  const std::string dev_token = dev.access_token();
  auto list_accounts = [&](const std::string& token) {
    return CallAuth<v1::ListAccountsResponse>(*s.client, "ListAccounts", v1::ListAccountsRequest(),
                                              token);
  };

  CHECK(list_accounts(s.admin_token).accounts_size() == 2);
  auto forbidden = ErrorOf([&] { list_accounts(dev_token); });
  CHECK(forbidden.code() == 403);
  CHECK(forbidden.detail() == "dev@example.com may not call auth.ListAccounts");
  auto anonymous = ErrorOf([&] { list_accounts(""); });
  CHECK(anonymous.code() == 401);
  CHECK(anonymous.detail() == "sign in first: auth.ListAccounts needs a token");

  // Bad tokens: 401 with the reason.
  std::string tampered = dev_token;
  tampered[tampered.find('.') + 5] = tampered[tampered.find('.') + 5] == 'A' ? 'B' : 'A';
  CHECK(ErrorOf([&] { list_accounts(tampered); }).detail() == "token signature invalid");
  CHECK(ErrorOf([&] { list_accounts("not-a-jwt"); }).detail() == "token malformed");
  const auto key = s.auth->app->keys().Active();
  v1::Claims claims;
  claims.set_iss("us");
  claims.set_sub(dev.account().id());
  claims.set_email("dev@example.com");
  claims.add_roles("admin");
  claims.set_iat(1);
  claims.set_exp(2);
  const auto expired = ErrorOf([&] { list_accounts(muon::token::Sign(claims, key)); });
  CHECK(expired.code() == 401);
  CHECK(expired.detail() == "token expired");
  const auto stranger = muon::token::GenerateSigningKey("xx-unknown", "xx");
  claims.set_exp(claims.iat() + 4000000000);
  CHECK(ErrorOf([&] { list_accounts(muon::token::Sign(claims, stranger)); }).detail() ==
        "token signed with an unknown key");
  {
    muon::bus::Msg reply;
    REQUIRE_FALSE(s.client->Request("muon.rpc.auth.ListAccounts",
                                    v1::ListAccountsRequest().SerializeAsString(),
                                    {{"Authorization", "Basic dXNlcjpwYXNz"}}, 5s, reply));
    CHECK(reply.Header("Nats-Service-Error-Code") == std::optional<std::string_view>("401"));
  }
  // A stale token does not block a public endpoint.
  CHECK_FALSE(
      CallAuth<v1::KeysResponse>(*s.client, "Keys", v1::KeysRequest(), tampered).keys().empty());

  // An allow above the default deny (400) opens the endpoint to developers...
  v1::Rule allow;
  allow.set_role("developer");
  allow.set_service("auth");
  allow.set_endpoint("List*");
  allow.set_effect("allow");
  allow.set_priority(450);
  const auto allow_rule = CallAuth<v1::Rule>(*s.client, "CreateRule", allow, s.admin_token);
  CHECK_FALSE(allow_rule.id().empty());
  CHECK(list_accounts(dev_token).accounts_size() == 2);
  // ... a deny of equal priority wins the tie ...
  v1::Rule deny = allow;
  deny.set_endpoint("ListAccounts");
  deny.set_effect("deny");
  const auto deny_rule = CallAuth<v1::Rule>(*s.client, "CreateRule", deny, s.admin_token);
  CHECK(ErrorOf([&] { list_accounts(dev_token); }).code() == 403);
  CHECK(CallAuth<v1::ListInvitesResponse>(*s.client, "ListInvites", v1::ListInvitesRequest(),
                                          dev_token)
            .invites_size() == 1);
  // ... and deleting it opens the endpoint again.
  v1::DeleteRuleRequest del;
  del.set_id(deny_rule.id());
  CallAuth<v1::DeleteRuleResponse>(*s.client, "DeleteRule", del, s.admin_token);
  CHECK(list_accounts(dev_token).accounts_size() == 2);
  CHECK(ErrorOf([&] {
          CallAuth<v1::DeleteRuleResponse>(*s.client, "DeleteRule", del, s.admin_token);
        }).code() == 404);

  // Rules are validated; developers cannot edit rules.
  v1::Rule bad = allow;
  bad.set_effect("permit");
  CHECK(ErrorOf([&] { CallAuth<v1::Rule>(*s.client, "CreateRule", bad, s.admin_token); }).code() ==
        400);
  CHECK(ErrorOf([&] { CallAuth<v1::Rule>(*s.client, "CreateRule", allow, dev_token); }).code() ==
        403);
  const auto rules = CallAuth<v1::ListRulesResponse>(*s.client, "ListRules", v1::ListRulesRequest(),
                                                     s.admin_token);
  CHECK(rules.rules_size() == static_cast<int>(muon::rules::DefaultRules().size()) + 1);
  CHECK(rules.rules(0).priority() == 1000);  // highest first
}

TEST_CASE("key rotation: old tokens verify until their key is retired", "[auth]") {
  Single s;
  const auto dev = s.Developer("dev@example.com", "a good long password");
  const std::string old_token = dev.access_token();
  const std::string old_kid = KidOf(old_token);
  auto keys = CallAuth<v1::KeysResponse>(*s.client, "Keys", v1::KeysRequest());
  REQUIRE(keys.keys_size() == 1);
  CHECK(keys.keys(0).kid() == old_kid);
  CHECK(keys.keys(0).status() == "active");
  CHECK(keys.keys(0).region() == "us");

  const auto rotated =
      CallAuth<v1::Jwk>(*s.client, "RotateKey", v1::RotateKeyRequest(), s.admin_token);
  CHECK(rotated.kid() != old_kid);
  CHECK(rotated.status() == "active");
  keys = CallAuth<v1::KeysResponse>(*s.client, "Keys", v1::KeysRequest());
  REQUIRE(keys.keys_size() == 2);
  for (const auto& k : keys.keys()) {
    CHECK(k.status() == (k.kid() == old_kid ? "retiring" : "active"));
  }

  // The old token still works; new tokens carry the new kid.
  CHECK(CallAuth<v1::Account>(*s.client, "Whoami", v1::WhoamiRequest(), old_token).email() ==
        "dev@example.com");
  const auto fresh = Login(*s.client, "dev@example.com", "a good long password");
  CHECK(KidOf(fresh.access_token()) == rotated.kid());

  // A verifier elsewhere (fed over the bus) agrees.
  muon::token::Verifier remote(muon::BusKeyFetcher(*s.client), 0s);
  v1::Claims claims;
  CHECK_FALSE(remote.Verify(old_token, claims));
  CHECK_FALSE(remote.Verify(fresh.access_token(), claims));

  // The active key cannot be retired; the retiring one can, and then its tokens are refused.
  v1::RetireKeyRequest retire;
  retire.set_kid(rotated.kid());
  CHECK(ErrorOf([&] { CallAuth<v1::Jwk>(*s.client, "RetireKey", retire, s.admin_token); }).code() ==
        409);
  retire.set_kid("us-nonexistent");
  CHECK(ErrorOf([&] { CallAuth<v1::Jwk>(*s.client, "RetireKey", retire, s.admin_token); }).code() ==
        404);
  retire.set_kid(old_kid);
  CHECK(CallAuth<v1::Jwk>(*s.client, "RetireKey", retire, s.admin_token).status() == "retired");
  keys = CallAuth<v1::KeysResponse>(*s.client, "Keys", v1::KeysRequest());
  REQUIRE(keys.keys_size() == 1);
  CHECK(keys.keys(0).kid() == rotated.kid());

  const auto refused =
      ErrorOf([&] { CallAuth<v1::Account>(*s.client, "Whoami", v1::WhoamiRequest(), old_token); });
  CHECK(refused.code() == 401);
  CHECK(refused.detail() == "token signed with an unknown key");
  REQUIRE(remote.Refresh());  // drops the cached verdict for the retired key
  CHECK(remote.Verify(old_token, claims) == muon::token::TokenErrc::kUnknownKey);
  CHECK_FALSE(remote.Verify(fresh.access_token(), claims));
}

TEST_CASE("a token from region eu is accepted in region us", "[auth]") {
  // Two regions: two NATS servers (clusters), one shared PostgreSQL.
  muon::testing::NatsServer us_nats;
  muon::testing::NatsServer eu_nats;
  Deployment deployment;
  AuthInstance us(us_nats.url(), deployment.Options("us"));
  AuthInstance eu(eu_nats.url(), deployment.Options("eu"));
  auto us_client = Connect(us_nats.url(), "client-us");
  auto eu_client = Connect(eu_nats.url(), "client-eu");

  // Login at eu.
  const auto login = Login(*eu_client, kAdminEmail, kAdminPassword);
  CHECK(login.region() == "eu");
  const std::string eu_kid = eu.app->keys().Active().kid;
  CHECK(eu_kid != us.app->keys().Active().kid);
  CHECK(KidOf(login.access_token()) == eu_kid);
  const auto payload = muon::token::Base64UrlDecode(login.access_token().substr(
      login.access_token().find('.') + 1,
      login.access_token().rfind('.') - login.access_token().find('.') - 1));
  REQUIRE(payload);
  CHECK(payload->find("\"iss\":\"eu\"") != std::string::npos);

  // us publishes every region's keys...
  const auto keys = CallAuth<v1::KeysResponse>(*us_client, "Keys", v1::KeysRequest());
  CHECK(keys.keys_size() == 2);
  // ... so a verifier fed from us's Keys accepts the eu token ...
  muon::token::Verifier verifier(muon::BusKeyFetcher(*us_client));
  v1::Claims claims;
  REQUIRE_FALSE(verifier.Verify(login.access_token(), claims));
  CHECK(claims.iss() == "eu");
  CHECK(claims.email() == kAdminEmail);
  // ... and so does us's own auth service. Its verifier learns a new kid through the
  // unknown-kid refresh, which runs at most once a second: the token is accepted within that.
  auto accepted_by_us = [&](const std::string& token) {
    return muon::testing::WaitUntil(
        [&] {
          try {
            return CallAuth<v1::Account>(*us_client, "Whoami", v1::WhoamiRequest(), token)
                       .email() == kAdminEmail;
          } catch (const muon::Error& e) {
            return false;
          }
        },
        5s, 100ms);
  };
  CHECK(accepted_by_us(login.access_token()));
  // A key created in eu after us loaded its keys is picked up the same way.
  CallAuth<v1::Jwk>(*eu_client, "RotateKey", v1::RotateKeyRequest(), login.access_token());
  const auto later = Login(*eu_client, kAdminEmail, kAdminPassword);
  CHECK(KidOf(later.access_token()) != eu_kid);
  CHECK(accepted_by_us(later.access_token()));

  // A refresh token is valid in any region too (one table).
  v1::TokenResponse refreshed;
  Refresh(*us_client, login.refresh_token(), &refreshed);
  CHECK(refreshed.region() == "us");
}

TEST_CASE("admin bootstrap, keys and rules survive restarts without duplicates", "[auth]") {
  muon::testing::NatsServer nats;
  Deployment deployment;
  auto client = Connect(nats.url(), "client");
  std::string kid;
  std::string admin_id;
  {
    AuthInstance first(nats.url(), deployment.Options("us"));
    kid = first.app->keys().Active().kid;
    admin_id = Login(*client, kAdminEmail, kAdminPassword).account().id();
  }
  {
    // A restart with another admin password does not touch the existing admin.
    auto options = deployment.Options("us");
    options.settings.admin_password = "a different admin password";
    AuthInstance second(nats.url(), std::move(options));
    CHECK(second.app->keys().Active().kid == kid);
    const auto login = Login(*client, kAdminEmail, kAdminPassword);
    CHECK(login.account().id() == admin_id);
    CHECK(ErrorOf([&] { Login(*client, kAdminEmail, "a different admin password"); }).code() ==
          401);
    const auto accounts = CallAuth<v1::ListAccountsResponse>(
        *client, "ListAccounts", v1::ListAccountsRequest(), login.access_token());
    REQUIRE(accounts.accounts_size() == 1);
    CHECK(accounts.accounts(0).roles(0) == "admin");
    const auto rules = CallAuth<v1::ListRulesResponse>(*client, "ListRules", v1::ListRulesRequest(),
                                                       login.access_token());
    CHECK(rules.rules_size() == static_cast<int>(muon::rules::DefaultRules().size()));
  }
  // Two replicas starting at once create one key and one admin.
  std::string other_db = muon::testing::Postgres::Shared().CreateDatabase();
  std::vector<std::thread> starters;
  std::vector<std::string> kids(2), failures(2);
  for (int i = 0; i < 2; ++i) {
    starters.emplace_back([&, i] {
      try {
        auto options = deployment.Options("eu");
        options.database_url = other_db;
        muon::auth::AuthApp app(std::move(options));
        kids[i] = app.keys().Active().kid;
      } catch (const std::exception& e) {
        failures[i] = e.what();
      }
    });
  }
  for (auto& t : starters) t.join();
  CHECK(failures[0].empty());
  CHECK(failures[1].empty());
  CHECK(kids[0] == kids[1]);
  auto options = deployment.Options("eu");
  options.database_url = other_db;
  muon::auth::AuthApp app(std::move(options));
  CHECK(app.store().ListAccounts().size() == 1);
  CHECK(app.store().ListPublishedKeys().size() == 1);
  CHECK(app.store().ListRules().size() == muon::rules::DefaultRules().size());
}

TEST_CASE("service accounts and the platform secret", "[auth]") {
  Single s;
  // A platform service exchanges the platform secret for a token with role "service".
  v1::ServiceTokenRequest request;
  request.set_name("builder");
  request.set_secret(kPlatformSecret);
  const auto builder = CallAuth<v1::TokenResponse>(*s.client, "ServiceToken", request);
  CHECK(builder.refresh_token().empty());
  CHECK(builder.account().email() == "builder@service.muon");
  CHECK(builder.account().service_account());
  REQUIRE(builder.account().roles_size() == 1);
  CHECK(builder.account().roles(0) == "service");
  // It may load rules and keys, not call admin endpoints.
  CHECK(CallAuth<v1::ListRulesResponse>(*s.client, "ListRules", v1::ListRulesRequest(),
                                        builder.access_token())
            .rules_size() > 0);
  CHECK(ErrorOf([&] {
          CallAuth<v1::ListAccountsResponse>(*s.client, "ListAccounts", v1::ListAccountsRequest(),
                                             builder.access_token());
        }).detail() == "builder@service.muon may not call auth.ListAccounts");

  request.set_secret("wrong secret");
  CHECK(ErrorOf([&] {
          CallAuth<v1::TokenResponse>(*s.client, "ServiceToken", request);
        }).detail() == "wrong service account name or secret");
  request.set_name("not-a-platform-service");
  request.set_secret(kPlatformSecret);
  CHECK(ErrorOf([&] { CallAuth<v1::TokenResponse>(*s.client, "ServiceToken", request); }).code() ==
        401);

  // ServiceTokenSource + BusRuleFetcher: what a platform service does at start-up.
  muon::ServiceTokenSource source(*s.client, "scheduler", kPlatformSecret);
  const std::string bearer = source.Bearer();
  CHECK(bearer.rfind("Bearer ", 0) == 0);
  CHECK(source.Bearer() == bearer);  // cached
  muon::rules::RuleCache rules(muon::BusRuleFetcher(*s.client, [&] { return source.Bearer(); }));
  CHECK(rules.Refresh());
  CHECK(rules.Evaluate({.authenticated = true, .roles = {"developer"}}, "echo", "Echo") ==
        muon::rules::Decision::kAllow);
  muon::ServiceTokenSource wrong(*s.client, "scheduler", "nope");
  CHECK(wrong.Bearer().empty());

  // Service accounts made by an admin get a secret once.
  v1::CreateServiceAccountRequest create;
  create.set_name("ci-bot");
  create.add_roles("developer");
  const auto created = CallAuth<v1::CreateServiceAccountResponse>(*s.client, "CreateServiceAccount",
                                                                  create, s.admin_token);
  CHECK(created.secret().size() == 43);
  CHECK(created.account().email() == "ci-bot@service.muon");
  CHECK(ErrorOf([&] {
          CallAuth<v1::CreateServiceAccountResponse>(*s.client, "CreateServiceAccount", create,
                                                     s.admin_token);
        }).code() == 409);
  create.set_name("builder");
  CHECK(ErrorOf([&] {
          CallAuth<v1::CreateServiceAccountResponse>(*s.client, "CreateServiceAccount", create,
                                                     s.admin_token);
        }).code() == 409);
  request.set_name("ci-bot");
  request.set_secret(created.secret());
  const auto bot = CallAuth<v1::TokenResponse>(*s.client, "ServiceToken", request);
  CHECK(bot.account().roles(0) == "developer");
  CHECK(CallAuth<v1::Account>(*s.client, "Whoami", v1::WhoamiRequest(), bot.access_token())
            .service_account());
}

TEST_CASE("changing the password ends other sessions", "[auth]") {
  Single s;
  const auto dev = s.Developer("dev@example.com", "a good long password");
  v1::ChangePasswordRequest change;
  change.set_current_password("not the password");
  change.set_new_password("a brand new password");
  CHECK(ErrorOf([&] {
          CallAuth<v1::ChangePasswordResponse>(*s.client, "ChangePassword", change,
                                               dev.access_token());
        }).detail() == "current password is wrong");
  change.set_current_password("a good long password");
  CallAuth<v1::ChangePasswordResponse>(*s.client, "ChangePassword", change, dev.access_token());
  CHECK(ErrorOf([&] { Refresh(*s.client, dev.refresh_token()); }).code() == 401);
  CHECK(ErrorOf([&] { Login(*s.client, "dev@example.com", "a good long password"); }).code() ==
        401);
  CHECK_FALSE(Login(*s.client, "dev@example.com", "a brand new password").access_token().empty());
}
