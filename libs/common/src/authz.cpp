#include "muon/common/authz.h"

#include <fmt/format.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

#include "muon/common/log.h"

namespace muon {
namespace {

constexpr auto kFetchTimeout = std::chrono::seconds(2);
constexpr auto kRetryAfterFailure = std::chrono::seconds(1);

}  // namespace

rules::Caller CallerOf(const auth::v1::Claims* claims) {
  rules::Caller caller;
  if (claims != nullptr) {
    caller.authenticated = true;
    caller.roles.assign(claims->roles().begin(), claims->roles().end());
  }
  return caller;
}

Service::Authorizer MakeAuthorizer(token::Verifier& verifier, rules::RuleCache& rules) {
  return [&verifier, &rules](RequestContext& ctx) {
    const std::string_view header = ctx.authorization();
    const std::string_view service = ctx.service();
    const std::string_view method = ctx.method();
    auto public_endpoint = [&] {
      return rules.Evaluate(rules::Caller{}, service, method) == rules::Decision::kAllow;
    };
    if (!header.empty()) {
      auto bearer = token::BearerToken(header);
      if (!bearer) {
        if (public_endpoint()) return;
        throw Error::Unauthorized(
            "malformed Authorization header: expected \"Bearer <access token>\"");
      }
      auth::v1::Claims claims;
      if (const auto ec = verifier.Verify(*bearer, claims); ec) {
        // A stale token on a public endpoint (Refresh, Login) must not stand in the way.
        if (public_endpoint()) return;
        throw Error::Unauthorized(ec.message());
      }
      ctx.set_claims(std::move(claims));
    }
    if (rules.Evaluate(CallerOf(ctx.claims()), service, method) == rules::Decision::kAllow) {
      return;
    }
    if (const auto* claims = ctx.claims()) {
      const std::string& who = claims->email().empty() ? claims->sub() : claims->email();
      throw Error::Forbidden(fmt::format("{} may not call {}.{}", who, service, method));
    }
    throw Error::Unauthorized(fmt::format("sign in first: {}.{} needs a token", service, method));
  };
}

token::Verifier::KeyFetcher BusKeyFetcher(bus::Connection& connection) {
  return [&connection]() -> std::optional<auth::v1::KeysResponse> {
    auth::v1::KeysRequest request;
    auth::v1::KeysResponse response;
    try {
      Call(connection, PlatformSubject("auth", "Keys"), request, response, kFetchTimeout);
    } catch (const Error& e) {
      log::Warn("could not load token keys from auth", {{"error", e.detail()}});
      return std::nullopt;
    }
    return response;
  };
}

rules::RuleCache::Fetcher BusRuleFetcher(bus::Connection& connection,
                                         std::function<std::string()> bearer_token) {
  return [&connection,
          bearer_token = std::move(bearer_token)]() -> std::optional<auth::v1::ListRulesResponse> {
    auth::v1::ListRulesRequest request;
    auth::v1::ListRulesResponse response;
    bus::Headers headers;
    if (bearer_token) {
      if (std::string bearer = bearer_token(); !bearer.empty()) {
        headers.emplace_back(bus::kHeaderAuthorization, std::move(bearer));
      }
    }
    try {
      Call(connection, PlatformSubject("auth", "ListRules"), request, response, kFetchTimeout,
           headers);
    } catch (const Error& e) {
      log::Warn("could not load access rules from auth", {{"error", e.detail()}});
      return std::nullopt;
    }
    return response;
  };
}

ServiceTokenSource::ServiceTokenSource(bus::Connection& connection, std::string name,
                                       std::string secret, std::chrono::milliseconds timeout)
    : connection_(connection),
      name_(std::move(name)),
      secret_(std::move(secret)),
      timeout_(timeout) {}

std::string ServiceTokenSource::Bearer() {
  std::unique_lock lock(mu_);
  auto now = std::chrono::steady_clock::now();
  const bool valid = !token_.empty() && now < expires_at_;
  if (valid && now < renew_at_) return "Bearer " + token_;
  // Someone else is renewing, or the last attempt failed a moment ago: use what we have.
  if (renewing_ || (last_failure_ != std::chrono::steady_clock::time_point{} &&
                    now - last_failure_ < kRetryAfterFailure)) {
    return valid ? "Bearer " + token_ : "";
  }
  renewing_ = true;
  lock.unlock();

  auth::v1::ServiceTokenRequest request;
  request.set_name(name_);
  request.set_secret(secret_);
  auth::v1::TokenResponse response;
  std::optional<std::string> failure;
  const auto asked = std::chrono::steady_clock::now();
  try {
    Call(connection_, PlatformSubject("auth", "ServiceToken"), request, response, timeout_);
  } catch (const Error& e) {
    failure = e.detail();
  }

  lock.lock();
  renewing_ = false;
  now = std::chrono::steady_clock::now();
  if (failure || response.access_token().empty() || response.expires_in() <= 0) {
    last_failure_ = now;
    log::Warn("could not get a service token",
              {{"account", name_}, {"error", failure.value_or("empty token in the reply")}});
    return !token_.empty() && now < expires_at_ ? "Bearer " + token_ : "";
  }
  // Lifetimes are measured from when we asked, so a slow reply errs towards renewing early.
  const auto lifetime = std::chrono::seconds(response.expires_in());
  token_ = response.access_token();
  expires_at_ = asked + lifetime;
  renew_at_ = asked + lifetime * 2 / 3;
  last_failure_ = {};
  return "Bearer " + token_;
}

std::string ReadSecretFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot read secret file {}", path));
  std::ostringstream content;
  content << in.rdbuf();
  std::string secret = content.str();
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r' ||
                             secret.back() == ' ' || secret.back() == '\t')) {
    secret.pop_back();
  }
  if (secret.empty()) throw std::runtime_error(fmt::format("secret file {} is empty", path));
  return secret;
}

void AddServiceSecretOption(config::Spec& spec) {
  spec.String("service-secret-file", "MUON_SERVICE_SECRET_FILE", "",
              "file holding the platform services' shared secret (service account token)");
}

std::string ServiceSecretFromConfig(const config::Values& values) {
  const std::string& file = values.String("service-secret-file");
  if (file.empty()) return "";
  try {
    return ReadSecretFile(file);
  } catch (const std::exception& e) {
    throw config::ConfigError(
        fmt::format("--service-secret-file (env MUON_SERVICE_SECRET_FILE): {}", e.what()));
  }
}

}  // namespace muon
