#pragma once
// The auth service: accounts, invites, sign-up and login, access and refresh tokens, region
// signing keys, access rules and service accounts, on muon.rpc.auth.<Method>. See README.md.
//
// Wiring (main.cpp, tests):
//   muon::auth::AuthApp app(muon::auth::AppOptionsFromConfig(config));  // migrates, bootstraps
//   app.Register(service);                                               // endpoints + authz

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keys.h"
#include "muon/auth/v1/auth.pb.h"
#include "muon/common/config.h"
#include "muon/common/rules.h"
#include "muon/common/service.h"
#include "muon/common/token.h"
#include "passwords.h"
#include "store.h"

namespace muon::auth {

// Platform services that may exchange the platform secret for a token with role "service".
const std::vector<std::string>& PlatformServiceNames();

inline constexpr auto kMaxAccessTokenTtl = std::chrono::minutes(15);

struct AuthSettings {
  std::string region = "local";
  std::chrono::seconds access_token_ttl{kMaxAccessTokenTtl};
  std::chrono::seconds refresh_token_ttl{std::chrono::hours(24 * 30)};
  ThrottlePolicy throttle;
  PasswordParams password_params;
  // First admin, created on first start when both are set.
  std::string admin_email;
  std::string admin_password;  // never logged
  // Platform bootstrap secret (MUON_SERVICE_SECRET_FILE); empty turns the bootstrap off.
  std::string platform_secret;
  std::chrono::seconds rules_max_age{10};
};

class AuthService {
 public:
  AuthService(Store& store, KeyManager& keys, AuthSettings settings);

  // First-start work, idempotent and safe with several replicas: the region's signing key, the
  // first admin, the default rules (when the rules table is empty), and a clean-up pass.
  void Bootstrap();
  // Declares every method of muon.auth.v1.Auth on `service` and installs the authorizer (this
  // service's own verifier and rules, fed from the store without a bus round trip).
  void Register(Service& service);

  token::Verifier& verifier() { return verifier_; }
  rules::RuleCache& rules() { return rules_; }
  const AuthSettings& settings() const { return settings_; }

  // Handlers. ctx.claims() is set by the authorizer for authenticated callers.
  v1::TokenResponse Login(const v1::LoginRequest& request, RequestContext& ctx);
  v1::TokenResponse Refresh(const v1::RefreshRequest& request, RequestContext& ctx);
  v1::LogoutResponse Logout(const v1::LogoutRequest& request, RequestContext& ctx);
  v1::TokenResponse Signup(const v1::SignupRequest& request, RequestContext& ctx);
  v1::Account Whoami(const v1::WhoamiRequest& request, RequestContext& ctx);
  v1::ChangePasswordResponse ChangePassword(const v1::ChangePasswordRequest& request,
                                            RequestContext& ctx);
  v1::Invite CreateInvite(const v1::CreateInviteRequest& request, RequestContext& ctx);
  v1::ListInvitesResponse ListInvites(const v1::ListInvitesRequest& request, RequestContext& ctx);
  v1::ListAccountsResponse ListAccounts(const v1::ListAccountsRequest& request,
                                        RequestContext& ctx);
  v1::Account SetAccountDisabled(const v1::SetAccountDisabledRequest& request, RequestContext& ctx);
  v1::KeysResponse Keys(const v1::KeysRequest& request, RequestContext& ctx);
  v1::Jwk RotateKey(const v1::RotateKeyRequest& request, RequestContext& ctx);
  v1::Jwk RetireKey(const v1::RetireKeyRequest& request, RequestContext& ctx);
  v1::ListRulesResponse ListRules(const v1::ListRulesRequest& request, RequestContext& ctx);
  v1::Rule CreateRule(const v1::Rule& request, RequestContext& ctx);
  v1::DeleteRuleResponse DeleteRule(const v1::DeleteRuleRequest& request, RequestContext& ctx);
  v1::CreateServiceAccountResponse CreateServiceAccount(
      const v1::CreateServiceAccountRequest& request, RequestContext& ctx);
  v1::TokenResponse ServiceToken(const v1::ServiceTokenRequest& request, RequestContext& ctx);

 private:
  v1::TokenResponse IssueTokens(const AccountRow& account, const std::string& family_id);
  v1::TokenResponse IssueAccessToken(const AccountRow& account);
  std::string NewRefreshToken(const std::string& family_id);
  void MaybeCleanup();

  Store& store_;
  KeyManager& keys_;
  AuthSettings settings_;
  // Verified for the same cost as an unknown account's login: an Argon2id hash of a random
  // password with the current parameters.
  std::string dummy_hash_;
  token::Verifier verifier_;
  rules::RuleCache rules_;
  std::atomic<int64_t> last_cleanup_s_{0};
};

// Everything muon-auth runs in one object: pool, migrations, key manager, service logic.
struct AppOptions {
  std::string database_url;
  std::string key_file;
  AuthSettings settings;
  size_t max_connections = 8;
};

class AuthApp {
 public:
  // Connects, migrates the schema, loads (or creates) the key file and runs Bootstrap().
  // Throws on any start-up failure.
  explicit AuthApp(AppOptions options);
  void Register(Service& service) { service_->Register(service); }
  AuthService& service() { return *service_; }
  PgStore& store() { return *store_; }
  KeyManager& keys() { return *keys_; }

 private:
  std::unique_ptr<PgStore> store_;
  std::unique_ptr<KeyManager> keys_;
  std::unique_ptr<AuthService> service_;
};

// muon-auth's own options (RunService adds the common ones, including --region).
void AddOptions(config::Spec& spec);
// Reads them (and the secret files they name); throws config::ConfigError on bad values.
AppOptions AppOptionsFromConfig(const config::Values& values);

ServiceOptions DefaultServiceOptions();

// Normalised email (trimmed, lower-case), or "" when it does not look like one.
std::string NormalizeEmail(std::string_view email);

// The login throttle's key for the caller, from the Muon-Client-Address header the ingress sets
// (bus::kHeaderClientAddress): "ip:<IPv4>" (an IPv4-mapped IPv6 address too), "ip6:<prefix>/64"
// for IPv6 (one host commonly holds a whole /64), and "bus" when the header is missing or not an
// IP address (callers on the bus that did not come through an ingress share that key).
std::string ThrottleClientKey(std::optional<std::string_view> address);

}  // namespace muon::auth
