#include "auth_service.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "muon/common/authz.h"
#include "muon/common/bus.h"
#include "muon/common/errors.h"
#include "muon/common/log.h"

namespace muon::auth {
namespace {

constexpr std::string_view kWrongLogin = "wrong email or password";
constexpr std::string_view kWrongServiceLogin = "wrong service account name or secret";
constexpr std::string_view kServiceEmailDomain = "@service.muon";
constexpr auto kDefaultInviteTtl = std::chrono::hours(24 * 7);
constexpr auto kMaxInviteTtl = std::chrono::hours(24 * 30);
constexpr auto kCleanupInterval = std::chrono::hours(1);
constexpr size_t kMaxNameLength = 200;
constexpr size_t kMaxEmailLength = 254;
constexpr size_t kMaxSecretLength = 1024;
// 256-bit refresh tokens and service secrets, 128-bit invite codes and jti.
constexpr size_t kRefreshTokenBytes = 32;
constexpr size_t kSecretBytes = 32;
constexpr size_t kInviteCodeBytes = 16;
constexpr size_t kJtiBytes = 16;

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string RandomToken(size_t bytes) {
  std::string raw(bytes, '\0');
  randombytes_buf(raw.data(), raw.size());
  return token::Base64UrlEncode(raw);
}

// Refresh tokens, invite codes and service secrets are high-entropy random values, so a plain
// SHA-256 is enough to make a stolen table useless (no guessing to slow down).
std::string Sha256Hex(std::string_view text) {
  unsigned char hash[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(hash, reinterpret_cast<const unsigned char*>(text.data()), text.size());
  std::string hex(crypto_hash_sha256_BYTES * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), hash, sizeof(hash));
  hex.pop_back();
  return hex;
}

bool EqualHashes(const std::string& a, const std::string& b) {
  return a.size() == b.size() && sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool IsRoleName(std::string_view role) {
  if (role.empty() || role.size() > 64) return false;
  return std::all_of(role.begin(), role.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

// Roles as given (deduplicated), `fallback` when none; 400 on a bad name.
std::vector<std::string> CheckRoles(const google::protobuf::RepeatedPtrField<std::string>& given,
                                    std::vector<std::string> fallback) {
  if (given.empty()) return fallback;
  std::vector<std::string> roles;
  for (const auto& role : given) {
    if (!IsRoleName(role) || role == "public") {
      throw Error::BadRequest(
          fmt::format("role \"{}\" must be a name of a-z, 0-9, '_' and '-'", role));
    }
    if (std::find(roles.begin(), roles.end(), role) == roles.end()) roles.push_back(role);
  }
  return roles;
}

bool IsServiceAccountName(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  if (!((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= '0' && name[0] <= '9'))) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

bool IsPlatformService(std::string_view name) {
  const auto& names = PlatformServiceNames();
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string Trim(std::string_view text) {
  size_t start = 0, end = text.size();
  while (start < end && (text[start] == ' ' || text[start] == '\t')) ++start;
  while (end > start && (text[end - 1] == ' ' || text[end - 1] == '\t')) --end;
  return std::string(text.substr(start, end - start));
}

google::protobuf::Timestamp Timestamp(int64_t micros) {
  google::protobuf::Timestamp t;
  t.set_seconds(micros / 1000000);
  t.set_nanos(static_cast<int32_t>(micros % 1000000) * 1000);
  return t;
}

v1::Account ToAccount(const AccountRow& row) {
  v1::Account account;
  account.set_id(row.id);
  account.set_email(row.email);
  account.set_name(row.name);
  for (const auto& role : row.roles) account.add_roles(role);
  account.set_created_region(row.created_region);
  account.set_disabled(row.disabled);
  account.set_service_account(row.service_account);
  *account.mutable_created_at() = Timestamp(row.created_at_us);
  return account;
}

const v1::Claims& RequireClaims(const RequestContext& ctx) {
  if (ctx.claims() == nullptr) {
    throw Error::Unauthorized(fmt::format("sign in first: {} needs a token", ctx.endpoint_id()));
  }
  return *ctx.claims();
}

std::string Actor(const RequestContext& ctx) {
  return ctx.claims() ? ctx.claims()->email() : std::string("anonymous");
}

std::string TooManyFailures(std::chrono::seconds retry_after) {
  return fmt::format("too many failed logins; try again in {} s", retry_after.count());
}

// Counts this attempt for (email, the caller's address) before any hashing: a locked pair costs
// a row lock, not Argon2. 429 when the pair is locked or the email's ceiling refuses the client.
// Returns the client's key, for LoginSucceeded.
std::string Throttle(Store& store, const std::string& email, const RequestContext& ctx,
                     const ThrottlePolicy& policy) {
  const std::string client = ThrottleClientKey(ctx.Header(bus::kHeaderClientAddress));
  const ThrottleDecision gate = store.BeginLogin(email, client, policy);
  if (gate.account_ceiling_reached) {
    log::Warn(
        "failed logins of one email reached the ceiling over all addresses; addresses that have "
        "not logged in to it are refused until the window ends",
        {{"email", email},
         {"failures", policy.account_max_failures},
         {"window_s", policy.account_window.count()}});
  }
  if (gate.locked) throw Error::TooManyRequests(TooManyFailures(gate.retry_after));
  return client;
}

void ThrowInviteError(InviteStatus status) {
  switch (status) {
    case InviteStatus::kOk:
      return;
    case InviteStatus::kNotFound:
      throw Error::NotFound("invite not found; check the code");
    case InviteStatus::kUsed:
      throw Error::Conflict("invite already used; ask an admin for a new one");
    case InviteStatus::kExpired:
      throw Error::Conflict("invite expired; ask an admin for a new one");
    case InviteStatus::kWrongEmail:
      throw Error::Forbidden("this invite is for another email address");
    case InviteStatus::kEmailTaken:
      throw Error::Conflict("an account with this email already exists; sign in instead");
  }
}

template <typename Req, typename Resp>
void Add(Service& service, AuthService* self, const char* method,
         Resp (AuthService::*handler)(const Req&, RequestContext&)) {
  service.AddEndpoint<Req, Resp>(method, [self, handler](const Req& request, RequestContext& ctx) {
    return (self->*handler)(request, ctx);
  });
}

std::chrono::seconds Seconds(std::chrono::nanoseconds d) {
  return std::chrono::duration_cast<std::chrono::seconds>(d);
}

}  // namespace

const std::vector<std::string>& PlatformServiceNames() {
  static const std::vector<std::string> kNames = {"auth",      "ingress", "builder",
                                                  "scheduler", "logs",    "github-events"};
  return kNames;
}

std::string NormalizeEmail(std::string_view email) {
  std::string out = Trim(email);
  if (out.empty() || out.size() > kMaxEmailLength) return "";
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (static_cast<unsigned char>(c) <= ' ' || c == ',' || c == 0x7f) return "";
  }
  const size_t at = out.find('@');
  if (at == std::string::npos || at == 0 || at + 1 >= out.size() ||
      out.find('@', at + 1) != std::string::npos) {
    return "";
  }
  return out;
}

std::string ThrottleClientKey(std::optional<std::string_view> address) {
  constexpr std::string_view kBus = "bus";
  if (!address || address->empty() || address->size() >= INET6_ADDRSTRLEN) {
    return std::string(kBus);
  }
  const std::string text(*address);  // inet_pton wants a terminated string
  char out[INET6_ADDRSTRLEN] = {};
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    inet_ntop(AF_INET, &v4, out, sizeof(out));
    return fmt::format("ip:{}", out);
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) != 1) return std::string(kBus);
  if (IN6_IS_ADDR_V4MAPPED(&v6)) {
    std::memcpy(&v4, &v6.s6_addr[12], sizeof(v4));
    inet_ntop(AF_INET, &v4, out, sizeof(out));
    return fmt::format("ip:{}", out);
  }
  // One host commonly holds a whole /64: counting single addresses would give it 2^64 budgets.
  std::memset(&v6.s6_addr[8], 0, 8);
  inet_ntop(AF_INET6, &v6, out, sizeof(out));
  return fmt::format("ip6:{}/64", out);
}

AuthService::AuthService(Store& store, KeyManager& keys, AuthSettings settings)
    : store_(store),
      keys_(keys),
      settings_(std::move(settings)),
      dummy_hash_(HashPassword(RandomToken(16), settings_.password_params)),
      verifier_(
          [&keys]() -> std::optional<v1::KeysResponse> {
            try {
              return keys.PublicKeys();
            } catch (const std::exception& e) {
              log::Warn("loading signing keys failed", {{"error", e.what()}});
              return std::nullopt;
            }
          },
          std::chrono::seconds(1)),
      rules_(
          [&store]() -> std::optional<v1::ListRulesResponse> {
            try {
              v1::ListRulesResponse response;
              for (auto& rule : store.ListRules()) *response.add_rules() = std::move(rule);
              return response;
            } catch (const std::exception& e) {
              log::Warn("loading rules failed", {{"error", e.what()}});
              return std::nullopt;
            }
          },
          settings_.rules_max_age) {}

void AuthService::Bootstrap() {
  keys_.EnsureActiveKey();
  (void)keys_.Active();  // fails start-up now rather than at the first login

  if (!settings_.admin_email.empty() && !settings_.admin_password.empty()) {
    const std::string email = NormalizeEmail(settings_.admin_email);
    if (email.empty()) throw std::runtime_error("the admin email is not an email address");
    if (store_.FindAccountByEmail(email)) {
      log::Info("admin account exists", {{"email", email}});
    } else {
      if (auto problem = CheckPasswordPolicy(settings_.admin_password); !problem.empty()) {
        throw std::runtime_error("admin password file: " + problem);
      }
      auto created = store_.CreateAccount(NewAccount{
          .email = email,
          .name = "Admin",
          .roles = {"admin"},
          .password_hash = HashPassword(settings_.admin_password, settings_.password_params),
          .region = settings_.region});
      if (created) {
        store_.Audit("system", "account.admin_created", email);
        log::Info("created the first admin account", {{"email", email}});
      }  // else another replica created it a moment ago
    }
  }

  if (store_.SeedRulesIfEmpty(rules::DefaultRules())) {
    store_.Audit("system", "rules.seeded", "", fmt::format("{}", rules::DefaultRules().size()));
    log::Info("seeded the default access rules");
  }
  store_.Cleanup(settings_.throttle);
  last_cleanup_s_ = NowSeconds();
  if (!verifier_.Refresh()) throw std::runtime_error("cannot load the signing keys");
  if (!rules_.Refresh()) throw std::runtime_error("cannot load the access rules");
}

void AuthService::Register(Service& service) {
  Add(service, this, "Login", &AuthService::Login);
  Add(service, this, "Refresh", &AuthService::Refresh);
  Add(service, this, "Logout", &AuthService::Logout);
  Add(service, this, "Signup", &AuthService::Signup);
  Add(service, this, "Whoami", &AuthService::Whoami);
  Add(service, this, "ChangePassword", &AuthService::ChangePassword);
  Add(service, this, "CreateInvite", &AuthService::CreateInvite);
  Add(service, this, "ListInvites", &AuthService::ListInvites);
  Add(service, this, "ListAccounts", &AuthService::ListAccounts);
  Add(service, this, "SetAccountDisabled", &AuthService::SetAccountDisabled);
  Add(service, this, "Keys", &AuthService::Keys);
  Add(service, this, "RotateKey", &AuthService::RotateKey);
  Add(service, this, "RetireKey", &AuthService::RetireKey);
  Add(service, this, "ListRules", &AuthService::ListRules);
  Add(service, this, "CreateRule", &AuthService::CreateRule);
  Add(service, this, "DeleteRule", &AuthService::DeleteRule);
  Add(service, this, "CreateServiceAccount", &AuthService::CreateServiceAccount);
  Add(service, this, "ServiceToken", &AuthService::ServiceToken);
  service.SetAuthorizer(MakeAuthorizer(verifier_, rules_));
}

v1::TokenResponse AuthService::IssueAccessToken(const AccountRow& account) {
  const token::SigningKey key = keys_.Active();
  v1::Claims claims;
  claims.set_iss(settings_.region);
  claims.set_sub(account.id);
  claims.set_email(account.email);
  for (const auto& role : account.roles) claims.add_roles(role);
  claims.set_iat(NowSeconds());
  claims.set_exp(claims.iat() + settings_.access_token_ttl.count());
  claims.set_jti(RandomToken(kJtiBytes));

  v1::TokenResponse response;
  response.set_access_token(token::Sign(claims, key));
  response.set_expires_in(settings_.access_token_ttl.count());
  response.set_token_type("Bearer");
  *response.mutable_account() = ToAccount(account);
  response.set_region(settings_.region);
  return response;
}

std::string AuthService::NewRefreshToken(const std::string& family_id) {
  std::string refresh = RandomToken(kRefreshTokenBytes);
  store_.AddRefreshToken(family_id, Sha256Hex(refresh), settings_.refresh_token_ttl);
  return refresh;
}

v1::TokenResponse AuthService::IssueTokens(const AccountRow& account,
                                           const std::string& family_id) {
  v1::TokenResponse response = IssueAccessToken(account);
  response.set_refresh_token(NewRefreshToken(family_id));
  return response;
}

void AuthService::MaybeCleanup() {
  int64_t last = last_cleanup_s_.load();
  const int64_t now = NowSeconds();
  if (now - last < std::chrono::duration_cast<std::chrono::seconds>(kCleanupInterval).count()) {
    return;
  }
  if (!last_cleanup_s_.compare_exchange_strong(last, now)) return;  // another thread does it
  try {
    store_.Cleanup(settings_.throttle);
  } catch (const std::exception& e) {
    log::Warn("clean-up of expired auth state failed", {{"error", e.what()}});
  }
}

v1::TokenResponse AuthService::Login(const v1::LoginRequest& request, RequestContext& ctx) {
  if (request.email().empty() || request.password().empty()) {
    throw Error::BadRequest("email and password are required");
  }
  const std::string email = NormalizeEmail(request.email());
  // Neither can belong to an account; refusing them without hashing reveals nothing.
  if (email.empty() || request.password().size() > kMaxPasswordLength) {
    throw Error::Unauthorized(std::string(kWrongLogin));
  }
  MaybeCleanup();
  const std::string client = Throttle(store_, email, ctx, settings_.throttle);

  const auto account = store_.FindAccountByEmail(email);
  bool ok = false;
  if (account && !account->password_hash.empty()) {
    ok = VerifyPassword(account->password_hash, request.password());
  } else {
    // Same work for an unknown email as for a wrong password, so timing tells nothing.
    (void)VerifyPassword(dummy_hash_, request.password());
  }
  // A disabled account gets the same answer as a wrong password: nothing about it leaks.
  if (!ok || account->disabled) throw Error::Unauthorized(std::string(kWrongLogin));

  store_.LoginSucceeded(email, client);
  if (NeedsRehash(account->password_hash, settings_.password_params)) {
    store_.SetPasswordHash(account->id,
                           HashPassword(request.password(), settings_.password_params));
  }
  return IssueTokens(*account, store_.StartFamily(account->id, settings_.region));
}

v1::TokenResponse AuthService::Refresh(const v1::RefreshRequest& request, RequestContext&) {
  if (request.refresh_token().empty()) throw Error::BadRequest("refresh_token is required");
  if (request.refresh_token().size() > kMaxSecretLength) {
    throw Error::Unauthorized("refresh token invalid or expired; sign in again");
  }
  const std::string next = RandomToken(kRefreshTokenBytes);
  const RefreshOutcome outcome = store_.RotateRefreshToken(
      Sha256Hex(request.refresh_token()), Sha256Hex(next), settings_.refresh_token_ttl);
  switch (outcome.status) {
    case RefreshStatus::kOk:
      break;
    case RefreshStatus::kUnknown:
    case RefreshStatus::kExpired:
      throw Error::Unauthorized("refresh token invalid or expired; sign in again");
    case RefreshStatus::kReused:
      store_.Audit("system", "refresh.reused", outcome.account_id,
                   fmt::format("family {} revoked", outcome.family_id));
      log::Warn("refresh token reused; family revoked",
                {{"account", outcome.account_id}, {"family", outcome.family_id}});
      throw Error::Unauthorized("refresh token reused; all sessions of this login were revoked");
    case RefreshStatus::kRevoked:
      throw Error::Unauthorized("session was revoked; sign in again");
  }
  const auto account = store_.FindAccountById(outcome.account_id);
  if (!account || account->disabled) {
    store_.RevokeFamilyById(outcome.family_id, "account disabled");
    throw Error::Unauthorized("session was revoked; sign in again");
  }
  // Roles are read again, so a role change applies at the next refresh.
  v1::TokenResponse response = IssueAccessToken(*account);
  response.set_refresh_token(next);
  return response;
}

v1::LogoutResponse AuthService::Logout(const v1::LogoutRequest& request, RequestContext&) {
  if (request.refresh_token().empty()) throw Error::BadRequest("refresh_token is required");
  // Idempotent: an unknown or already revoked token is a successful logout too.
  if (request.refresh_token().size() <= kMaxSecretLength) {
    store_.RevokeFamilyOf(Sha256Hex(request.refresh_token()), "logout");
  }
  return {};
}

v1::TokenResponse AuthService::Signup(const v1::SignupRequest& request, RequestContext&) {
  if (request.invite_code().empty()) throw Error::BadRequest("invite_code is required");
  const std::string email = NormalizeEmail(request.email());
  if (email.empty()) throw Error::BadRequest("email must look like name@example.com");
  if (email.ends_with(kServiceEmailDomain)) {
    throw Error::BadRequest(fmt::format("emails ending in {} are reserved", kServiceEmailDomain));
  }
  const std::string name = Trim(request.name());
  if (name.size() > kMaxNameLength) {
    throw Error::BadRequest(fmt::format("name must be at most {} bytes", kMaxNameLength));
  }
  if (auto problem = CheckPasswordPolicy(request.password()); !problem.empty()) {
    throw Error::BadRequest(problem);
  }
  if (request.invite_code().size() > kMaxSecretLength) ThrowInviteError(InviteStatus::kNotFound);
  const std::string code_hash = Sha256Hex(request.invite_code());
  // Checked before hashing, so made-up codes cost a lookup, not Argon2.
  ThrowInviteError(store_.CheckInvite(code_hash, email));
  AccountRow account;
  ThrowInviteError(store_.Signup(
      code_hash,
      NewAccount{.email = email,
                 .name = name,
                 .password_hash = HashPassword(request.password(), settings_.password_params),
                 .region = settings_.region},
      account));
  store_.Audit(email, "account.signup", email);
  return IssueTokens(account, store_.StartFamily(account.id, settings_.region));
}

v1::Account AuthService::Whoami(const v1::WhoamiRequest&, RequestContext& ctx) {
  const auto& claims = RequireClaims(ctx);
  const auto account = store_.FindAccountById(claims.sub());
  if (!account) throw Error::NotFound("the account of this token no longer exists");
  return ToAccount(*account);
}

v1::ChangePasswordResponse AuthService::ChangePassword(const v1::ChangePasswordRequest& request,
                                                       RequestContext& ctx) {
  const auto& claims = RequireClaims(ctx);
  const auto account = store_.FindAccountById(claims.sub());
  if (!account) throw Error::NotFound("the account of this token no longer exists");
  if (account->password_hash.empty()) {
    throw Error::BadRequest("service accounts have no password");
  }
  if (auto problem = CheckPasswordPolicy(request.new_password()); !problem.empty()) {
    throw Error::BadRequest("new " + problem);
  }
  if (request.current_password().size() > kMaxPasswordLength) {
    throw Error::Unauthorized("current password is wrong");
  }
  // A stolen access token must not become an unthrottled password oracle.
  const std::string client = Throttle(store_, account->email, ctx, settings_.throttle);
  if (!VerifyPassword(account->password_hash, request.current_password())) {
    throw Error::Unauthorized("current password is wrong");
  }
  store_.LoginSucceeded(account->email, client);
  store_.SetPasswordHash(account->id,
                         HashPassword(request.new_password(), settings_.password_params));
  // Other sessions (refresh tokens) end; access tokens run out within their short lifetime.
  store_.RevokeAccountFamilies(account->id, "password changed");
  store_.Audit(account->email, "account.password_changed", account->email);
  return {};
}

v1::Invite AuthService::CreateInvite(const v1::CreateInviteRequest& request, RequestContext& ctx) {
  const auto& claims = RequireClaims(ctx);
  if (!IsUuid(claims.sub())) throw Error::BadRequest("only accounts can create invites");
  std::string email;
  if (!request.email().empty()) {
    email = NormalizeEmail(request.email());
    if (email.empty()) throw Error::BadRequest("email must look like name@example.com");
  }
  const auto roles = CheckRoles(request.roles(), {"developer"});
  std::chrono::seconds ttl = request.ttl_seconds() == 0
                                 ? std::chrono::seconds(kDefaultInviteTtl)
                                 : std::chrono::seconds(request.ttl_seconds());
  if (ttl.count() < 1 || ttl > kMaxInviteTtl) {
    throw Error::BadRequest(
        fmt::format("ttl_seconds must be between 1 and {}", Seconds(kMaxInviteTtl).count()));
  }
  const std::string code = RandomToken(kInviteCodeBytes);
  const InviteRow row = store_.CreateInvite(Sha256Hex(code), email, roles, ttl, claims.sub());
  store_.Audit(claims.email(), "invite.created", email.empty() ? row.id : email,
               fmt::format("roles={}", fmt::join(roles, ",")));
  v1::Invite invite;
  invite.set_id(row.id);
  invite.set_code(code);
  invite.set_email(email);
  for (const auto& role : roles) invite.add_roles(role);
  *invite.mutable_expires_at() = Timestamp(row.expires_at_us);
  invite.set_created_by(claims.email());
  invite.set_used(false);
  return invite;
}

v1::ListInvitesResponse AuthService::ListInvites(const v1::ListInvitesRequest&, RequestContext&) {
  v1::ListInvitesResponse response;
  for (const auto& row : store_.ListInvites()) {
    auto* invite = response.add_invites();
    invite->set_id(row.id);
    invite->set_email(row.email);
    for (const auto& role : row.roles) invite->add_roles(role);
    *invite->mutable_expires_at() = Timestamp(row.expires_at_us);
    invite->set_created_by(row.created_by);
    invite->set_used(row.used);
  }
  return response;
}

v1::ListAccountsResponse AuthService::ListAccounts(const v1::ListAccountsRequest&,
                                                   RequestContext&) {
  v1::ListAccountsResponse response;
  for (const auto& row : store_.ListAccounts()) *response.add_accounts() = ToAccount(row);
  return response;
}

v1::Account AuthService::SetAccountDisabled(const v1::SetAccountDisabledRequest& request,
                                            RequestContext& ctx) {
  const auto& claims = RequireClaims(ctx);
  const std::string email = NormalizeEmail(request.email());
  if (email.empty()) throw Error::BadRequest("email must look like name@example.com");
  if (request.disabled() && email == claims.email()) {
    throw Error::BadRequest("you cannot disable your own account");
  }
  const auto account = store_.SetAccountDisabled(email, request.disabled());
  if (!account) throw Error::NotFound(fmt::format("no account {}", email));
  store_.Audit(claims.email(), request.disabled() ? "account.disabled" : "account.enabled", email);
  return ToAccount(*account);
}

v1::KeysResponse AuthService::Keys(const v1::KeysRequest&, RequestContext&) {
  return keys_.PublicKeys();
}

v1::Jwk AuthService::RotateKey(const v1::RotateKeyRequest&, RequestContext& ctx) {
  v1::Jwk jwk = keys_.Rotate();
  verifier_.Refresh();
  store_.Audit(Actor(ctx), "key.rotated", jwk.kid(), settings_.region);
  return jwk;
}

v1::Jwk AuthService::RetireKey(const v1::RetireKeyRequest& request, RequestContext& ctx) {
  if (request.kid().empty()) throw Error::BadRequest("kid is required");
  v1::Jwk jwk = keys_.Retire(request.kid());
  verifier_.Refresh();  // drops cached tokens of the retired key
  store_.Audit(Actor(ctx), "key.retired", jwk.kid(), jwk.region());
  return jwk;
}

v1::ListRulesResponse AuthService::ListRules(const v1::ListRulesRequest&, RequestContext&) {
  v1::ListRulesResponse response;
  for (auto& rule : store_.ListRules()) *response.add_rules() = std::move(rule);
  return response;
}

v1::Rule AuthService::CreateRule(const v1::Rule& request, RequestContext& ctx) {
  if (auto problem = rules::Validate(request)) throw Error::BadRequest(*problem);
  v1::Rule rule = request;
  rule.clear_id();
  v1::Rule created = store_.CreateRule(rule);
  rules_.Refresh();  // applies here at once; other replicas within rules_max_age
  store_.Audit(Actor(ctx), "rule.created", created.id(),
               fmt::format("{} {} {}.{} priority {}", created.effect(), created.role(),
                           created.service(), created.endpoint(), created.priority()));
  return created;
}

v1::DeleteRuleResponse AuthService::DeleteRule(const v1::DeleteRuleRequest& request,
                                               RequestContext& ctx) {
  if (request.id().empty()) throw Error::BadRequest("id is required");
  if (!store_.DeleteRule(request.id())) {
    throw Error::NotFound(fmt::format("no rule {}", request.id()));
  }
  rules_.Refresh();
  store_.Audit(Actor(ctx), "rule.deleted", request.id());
  return {};
}

v1::CreateServiceAccountResponse AuthService::CreateServiceAccount(
    const v1::CreateServiceAccountRequest& request, RequestContext& ctx) {
  const auto& claims = RequireClaims(ctx);
  if (!IsServiceAccountName(request.name())) {
    throw Error::BadRequest(
        "name must start with a-z or 0-9 and hold only a-z, 0-9, '_' and '-' (at most 63)");
  }
  if (IsPlatformService(request.name())) {
    throw Error::Conflict(fmt::format(
        "{} is a platform service; it signs in with the platform secret", request.name()));
  }
  const auto roles = CheckRoles(request.roles(), {"developer"});
  const std::string secret = RandomToken(kSecretBytes);
  auto account =
      store_.CreateAccount(NewAccount{.email = request.name() + std::string(kServiceEmailDomain),
                                      .name = request.name(),
                                      .roles = roles,
                                      .secret_hash = Sha256Hex(secret),
                                      .service_account = true,
                                      .region = settings_.region});
  if (!account) {
    throw Error::Conflict(fmt::format("service account {} already exists", request.name()));
  }
  store_.Audit(claims.email(), "service_account.created", account->email,
               fmt::format("roles={}", fmt::join(roles, ",")));
  v1::CreateServiceAccountResponse response;
  *response.mutable_account() = ToAccount(*account);
  response.set_secret(secret);
  return response;
}

v1::TokenResponse AuthService::ServiceToken(const v1::ServiceTokenRequest& request,
                                            RequestContext&) {
  const Error wrong = Error::Unauthorized(std::string(kWrongServiceLogin));
  if (!IsServiceAccountName(request.name()) || request.secret().empty() ||
      request.secret().size() > kMaxSecretLength) {
    throw wrong;
  }
  const std::string email = request.name() + std::string(kServiceEmailDomain);
  const std::string presented = Sha256Hex(request.secret());

  if (IsPlatformService(request.name())) {
    if (settings_.platform_secret.empty() ||
        !EqualHashes(presented, Sha256Hex(settings_.platform_secret))) {
      throw wrong;
    }
    // Platform services get an account row on first use, so they show in ListAccounts and an
    // admin can disable one.
    auto account = store_.FindAccountByEmail(email);
    if (!account) {
      account = store_.CreateAccount(NewAccount{.email = email,
                                                .name = request.name(),
                                                .roles = {"service"},
                                                .service_account = true,
                                                .region = settings_.region});
      if (account) {
        store_.Audit("system", "service_account.platform_created", email);
      } else {
        account = store_.FindAccountByEmail(email);  // created concurrently
      }
    }
    if (!account || account->disabled) throw wrong;
    return IssueAccessToken(*account);
  }

  const auto account = store_.FindAccountByEmail(email);
  if (!account || !account->service_account || account->secret_hash.empty() ||
      !EqualHashes(presented, account->secret_hash) || account->disabled) {
    throw wrong;
  }
  return IssueAccessToken(*account);
}

AuthApp::AuthApp(AppOptions options) {
  store_ = std::make_unique<PgStore>(options.database_url, options.settings.region,
                                     options.max_connections);
  store_->pool().Check();
  store_->Migrate();
  keys_ = std::make_unique<KeyManager>(*store_, options.settings.region,
                                       LoadOrCreateKeyFile(options.key_file));
  service_ = std::make_unique<AuthService>(*store_, *keys_, std::move(options.settings));
  service_->Bootstrap();
}

void AddOptions(config::Spec& spec) {
  spec.String("database-url", "DATABASE_URL", std::nullopt, "PostgreSQL URL (schema auth)", true)
      .String("key-file", "MUON_AUTH_KEY_FILE", std::nullopt,
              "file holding the key that encrypts the region's signing keys; created (0600, "
              "random) when missing; every replica of a region needs the same file")
      .String("admin-email", "MUON_ADMIN_EMAIL", "",
              "email of the first admin, created on first start")
      .String("admin-password-file", "MUON_ADMIN_PASSWORD_FILE", "",
              "file with the first admin's password (at least 12 characters)")
      .String("service-secret-file", "MUON_SERVICE_SECRET_FILE", "",
              "file with the platform secret: platform services exchange it for tokens with "
              "role \"service\" (ServiceToken); empty turns that off")
      .Duration("access-token-ttl", "MUON_ACCESS_TOKEN_TTL", "15m",
                "lifetime of access tokens (at most 15m)")
      .Duration("refresh-token-ttl", "MUON_REFRESH_TOKEN_TTL", "720h",
                "a refresh token unused this long expires")
      .Int("login-max-failures", "MUON_LOGIN_MAX_FAILURES", 5, 1, 100,
           "failed logins of one email from one client address before that address is locked "
           "out of the email for a while (other addresses are not)")
      .Duration("login-lockout", "MUON_LOGIN_LOCKOUT", "30s",
                "first lockout window; it doubles with each further lockout")
      .Duration("login-lockout-max", "MUON_LOGIN_LOCKOUT_MAX", "15m", "longest lockout window")
      .Int("login-account-max-failures", "MUON_LOGIN_ACCOUNT_MAX_FAILURES", 100, 0, 1000000,
           "failed logins of one email from all addresses per --login-account-window; beyond "
           "it, addresses that have not logged in to the email are refused until the window "
           "ends (0 = no ceiling)")
      .Duration("login-account-window", "MUON_LOGIN_ACCOUNT_WINDOW", "5m",
                "window of --login-account-max-failures (at most 1h)")
      .Int("db-connections", "MUON_DB_CONNECTIONS", 8, 1, 256,
           "PostgreSQL connections this process keeps at most");
}

AppOptions AppOptionsFromConfig(const config::Values& values) {
  std::vector<std::string> problems;
  AppOptions options;
  options.database_url = values.String("database-url");
  options.key_file = values.String("key-file");
  options.max_connections = static_cast<size_t>(values.Int("db-connections"));
  AuthSettings& s = options.settings;
  s.region = values.String("region");
  if (!IsValidServiceName(s.region)) {
    problems.push_back("--region (env MUON_REGION): must be a name of A-Z, a-z, 0-9, '_', '-'");
  }

  s.access_token_ttl = Seconds(values.Duration("access-token-ttl"));
  if (s.access_token_ttl.count() < 1 || s.access_token_ttl > kMaxAccessTokenTtl) {
    problems.push_back(
        "--access-token-ttl (env MUON_ACCESS_TOKEN_TTL): must be between 1s and 15m");
  }
  s.refresh_token_ttl = Seconds(values.Duration("refresh-token-ttl"));
  if (s.refresh_token_ttl.count() < 60) {
    problems.push_back("--refresh-token-ttl (env MUON_REFRESH_TOKEN_TTL): must be at least 1m");
  }
  s.throttle.max_failures = static_cast<int>(values.Int("login-max-failures"));
  s.throttle.lockout = Seconds(values.Duration("login-lockout"));
  s.throttle.max_lockout = Seconds(values.Duration("login-lockout-max"));
  if (s.throttle.lockout.count() < 1 || s.throttle.max_lockout < s.throttle.lockout) {
    problems.push_back(
        "--login-lockout / --login-lockout-max: need 1s <= login-lockout <= login-lockout-max");
  }
  s.throttle.account_max_failures = static_cast<int>(values.Int("login-account-max-failures"));
  s.throttle.account_window = Seconds(values.Duration("login-account-window"));
  if (s.throttle.account_window.count() < 1 || s.throttle.account_window > std::chrono::hours(1)) {
    problems.push_back(
        "--login-account-window (env MUON_LOGIN_ACCOUNT_WINDOW): must be between 1s and 1h");
  }

  const std::string& admin_email = values.String("admin-email");
  const std::string& admin_password_file = values.String("admin-password-file");
  if (admin_email.empty() != admin_password_file.empty()) {
    problems.push_back(
        "--admin-email (MUON_ADMIN_EMAIL) and --admin-password-file (MUON_ADMIN_PASSWORD_FILE) "
        "go together: set both or neither");
  } else if (!admin_email.empty()) {
    s.admin_email = NormalizeEmail(admin_email);
    if (s.admin_email.empty()) {
      problems.push_back("--admin-email (env MUON_ADMIN_EMAIL): not an email address");
    }
    try {
      s.admin_password = ReadSecretFile(admin_password_file);
    } catch (const std::exception& e) {
      problems.push_back(
          fmt::format("--admin-password-file (env MUON_ADMIN_PASSWORD_FILE): {}", e.what()));
    }
  }
  if (const std::string& file = values.String("service-secret-file"); !file.empty()) {
    try {
      s.platform_secret = ReadSecretFile(file);
      if (s.platform_secret.size() < 32) {
        problems.push_back(
            "--service-secret-file (env MUON_SERVICE_SECRET_FILE): the secret must be at least "
            "32 characters");
      }
    } catch (const std::exception& e) {
      problems.push_back(
          fmt::format("--service-secret-file (env MUON_SERVICE_SECRET_FILE): {}", e.what()));
    }
  }
  if (!problems.empty()) throw config::ConfigError(fmt::format("{}", fmt::join(problems, "\n")));
  return options;
}

ServiceOptions DefaultServiceOptions() {
  return ServiceOptions{
      .name = "auth",
      .kind = ServiceKind::kPlatform,
      .version = "0.1.0",
      .description = "Accounts, tokens, region signing keys and access rules of Muon"};
}

}  // namespace muon::auth
