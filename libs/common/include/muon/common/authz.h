#pragma once
// Authorization for platform services: the caller's token (NATS header Authorization: Bearer
// <jwt>) is verified with a cached key set, then the access rules decide.
//
//   muon::ServiceTokenSource me(ctx.bus, "builder", muon::ReadSecretFile(secret_file));
//   muon::token::Verifier verifier(muon::BusKeyFetcher(ctx.bus));
//   muon::rules::RuleCache rules(muon::BusRuleFetcher(ctx.bus, [&] { return me.Bearer(); }));
//   ctx.service.SetAuthorizer(muon::MakeAuthorizer(verifier, rules));
//
// (verifier, rules and me must outlive the service.)
//
// Refusals: 401 for a malformed Authorization header, a token that does not verify (detail from
// the token error, e.g. "token expired"), or an anonymous caller on a non-public endpoint
// ("sign in first: auth.ListAccounts needs a token"); 403 when a rule denies an authenticated
// caller ("dev@example.com may not call auth.ListAccounts"). A token that does not verify on an
// endpoint that is public anyway is ignored (the request runs anonymously), so a client holding
// an expired access token can still call Refresh or Login.

#include <chrono>
#include <functional>
#include <mutex>
#include <string>

#include "muon/common/bus.h"
#include "muon/common/config.h"
#include "muon/common/rules.h"
#include "muon/common/service.h"
#include "muon/common/token.h"

namespace muon {

// Verifies the caller's token, sets ctx.set_claims() and checks the rules for
// (ctx.service(), ctx.method()). Throws muon::Error 401/403.
Service::Authorizer MakeAuthorizer(token::Verifier& verifier, rules::RuleCache& rules);

// The authenticated caller as the rules see it (anonymous for nullptr).
rules::Caller CallerOf(const auth::v1::Claims* claims);

// Fetches every region's public keys with muon.rpc.auth.Keys (2 s timeout); nullopt on error.
token::Verifier::KeyFetcher BusKeyFetcher(bus::Connection& connection);

// Fetches the rules with muon.rpc.auth.ListRules, authenticated with bearer_token() (the
// service's own "Bearer <jwt>", e.g. ServiceTokenSource::Bearer); nullopt on error.
rules::RuleCache::Fetcher BusRuleFetcher(bus::Connection& connection,
                                         std::function<std::string()> bearer_token);

// A service account's access token, obtained with muon.rpc.auth.ServiceToken {name, secret} and
// renewed when two thirds of its lifetime have passed (or it is about to expire). Thread-safe;
// while one thread renews, the others keep using the current token.
class ServiceTokenSource {
 public:
  ServiceTokenSource(bus::Connection& connection, std::string name, std::string secret,
                     std::chrono::milliseconds timeout = std::chrono::seconds(2));

  // "Bearer <jwt>", or "" when no valid token can be had (auth unreachable, bad secret). Failed
  // attempts are retried at most once a second.
  std::string Bearer();

 private:
  bus::Connection& connection_;
  std::string name_;
  std::string secret_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;
  bool renewing_ = false;
  std::string token_;
  std::chrono::steady_clock::time_point renew_at_{};
  std::chrono::steady_clock::time_point expires_at_{};
  std::chrono::steady_clock::time_point last_failure_{};
};

// Reads a secret from a file (e.g. MUON_SERVICE_SECRET_FILE), without trailing whitespace.
// Throws std::runtime_error when the file cannot be read or is empty; the message never contains
// the content.
std::string ReadSecretFile(const std::string& path);

// --service-secret-file (env MUON_SERVICE_SECRET_FILE), declared alike by the platform services
// that get a service token: the file holding the platform services' shared secret.
void AddServiceSecretOption(config::Spec& spec);
// That file's content, or "" when the option is unset; config::ConfigError naming the option when
// the file cannot be read or is empty.
std::string ServiceSecretFromConfig(const config::Values& values);

}  // namespace muon
