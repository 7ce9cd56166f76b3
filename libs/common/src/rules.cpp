#include "muon/common/rules.h"

#include <fmt/format.h>

#include <algorithm>

#include "muon/common/log.h"
#include "muon/common/service.h"

namespace muon::rules {
namespace {

constexpr int kMinPriority = -10000;
constexpr int kMaxPriority = 10000;
constexpr size_t kMaxRoleLength = 64;
constexpr size_t kMaxEndpointLength = 128;
constexpr size_t kMaxDescriptionLength = 500;
// When no rules were ever loaded (auth unreachable since start-up) a failed fetch is retried
// this often instead of waiting max_age.
constexpr auto kRetryWithoutRules = std::chrono::seconds(1);

bool RoleMatches(const std::string& role, const Caller& caller) {
  if (role == "public") return true;
  if (!caller.authenticated) return false;
  if (role == "*") return true;
  return std::find(caller.roles.begin(), caller.roles.end(), role) != caller.roles.end();
}

bool IsRoleName(std::string_view role) {
  if (role.empty() || role.size() > kMaxRoleLength) return false;
  return std::all_of(role.begin(), role.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

bool IsEndpointPattern(std::string_view pattern) {
  if (pattern.empty() || pattern.size() > kMaxEndpointLength) return false;
  return std::all_of(pattern.begin(), pattern.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '*' || c == '.';
  });
}

auth::v1::Rule MakeRule(std::string role, std::string service, std::string endpoint,
                        std::string effect, int priority, std::string description) {
  auth::v1::Rule rule;
  rule.set_role(std::move(role));
  rule.set_service(std::move(service));
  rule.set_endpoint(std::move(endpoint));
  rule.set_effect(std::move(effect));
  rule.set_priority(priority);
  rule.set_description(std::move(description));
  return rule;
}

}  // namespace

bool MatchPattern(std::string_view pattern, std::string_view text) {
  // Classic iterative wildcard matching: on a mismatch, back up to the last '*' and let it
  // swallow one more character. Linear in practice, never exponential, no regex.
  size_t p = 0, t = 0;
  size_t star = std::string_view::npos, star_text = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      star_text = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++star_text;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

Decision Evaluate(const std::vector<auth::v1::Rule>& rules, const Caller& caller,
                  std::string_view service, std::string_view endpoint) {
  bool matched = false;
  int best_priority = 0;
  Decision decision = Decision::kDeny;
  for (const auto& rule : rules) {
    if (!RoleMatches(rule.role(), caller)) continue;
    if (rule.service() != "*" && rule.service() != service) continue;
    if (!MatchPattern(rule.endpoint(), endpoint)) continue;
    // Anything but an explicit "allow" counts as deny: a corrupt rule must not open access.
    const Decision effect = rule.effect() == "allow" ? Decision::kAllow : Decision::kDeny;
    if (!matched || rule.priority() > best_priority ||
        (rule.priority() == best_priority && effect == Decision::kDeny)) {
      matched = true;
      best_priority = rule.priority();
      decision = effect;
    }
  }
  return matched ? decision : Decision::kDeny;
}

std::optional<std::string> Validate(const auth::v1::Rule& rule) {
  if (rule.role() != "*" && rule.role() != "public" && !IsRoleName(rule.role())) {
    return fmt::format(
        "role \"{}\" must be \"*\", \"public\" or a role name of a-z, 0-9, '_' and '-'",
        rule.role());
  }
  if (rule.service() != "*" && !IsValidServiceName(rule.service())) {
    return fmt::format(
        "service \"{}\" must be \"*\" or a service name of A-Z, a-z, 0-9, '_' and '-'",
        rule.service());
  }
  if (!IsEndpointPattern(rule.endpoint())) {
    return fmt::format(
        "endpoint \"{}\" must be a method name or pattern of A-Z, a-z, 0-9, '_', '-', '.' and '*'",
        rule.endpoint());
  }
  if (rule.effect() != "allow" && rule.effect() != "deny") {
    return fmt::format("effect \"{}\" must be \"allow\" or \"deny\"", rule.effect());
  }
  if (rule.priority() < kMinPriority || rule.priority() > kMaxPriority) {
    return fmt::format("priority {} must be between {} and {}", rule.priority(), kMinPriority,
                       kMaxPriority);
  }
  if (rule.description().size() > kMaxDescriptionLength) {
    return fmt::format("description must be at most {} bytes", kMaxDescriptionLength);
  }
  return std::nullopt;
}

std::vector<auth::v1::Rule> DefaultRules() {
  std::vector<auth::v1::Rule> out;
  for (const char* method : {"Login", "Refresh", "Logout", "Signup", "Keys", "ServiceToken"}) {
    out.push_back(MakeRule("public", "auth", method, "allow", 1000,
                           "signing in and the public keys need no token"));
  }
  out.push_back(MakeRule("public", "github-events", "Webhook", "allow", 1000,
                         "GitHub's webhooks carry their own HMAC signature"));
  out.push_back(MakeRule("admin", "*", "*", "allow", 900, "admins may call everything"));
  for (const char* method : {"Keys", "ListRules"}) {
    out.push_back(
        MakeRule("service", "auth", method, "allow", 800, "platform services load keys and rules"));
  }
  // Platform services call each other with service-account tokens (role "service"); auth's own
  // admin endpoints stay closed to them.
  for (const char* service : {"builder", "scheduler", "logs", "github-events", "ingress"}) {
    out.push_back(
        MakeRule("service", service, "*", "allow", 800, "platform services call each other"));
  }
  for (const char* method : {"Whoami", "ChangePassword"}) {
    out.push_back(
        MakeRule("*", "auth", method, "allow", 500, "every account manages its own password"));
  }
  // Developers read logs (logs.Read.<service> is checked on top of Query/Tail; narrow it per
  // service with rules of higher priority).
  for (const char* method : {"Query", "Tail", "Read.*"}) {
    out.push_back(MakeRule("developer", "logs", method, "allow", 500, "developers read logs"));
  }
  // Developers follow and start builds (muon builds, muon deploy); planning pushes and fetching
  // artifacts stay with the platform's services.
  for (const char* method : {"ListBuilds", "GetBuild", "StartBuild"}) {
    out.push_back(
        MakeRule("developer", "builder", method, "allow", 500, "developers build and deploy"));
  }
  // Developers run their services: status, deploys, rollbacks, scale, config, exec. Forcing a
  // deploy lock open stays with admins (muon unlock --force).
  for (const char* method : {"Status", "Describe", "ListReleases", "ListEvents", "ListLocks",
                             "Drift", "Deploy", "Rollback", "Scale", "SetEnv", "Exec"}) {
    out.push_back(MakeRule("developer", "scheduler", method, "allow", 500,
                           "developers deploy and operate their services"));
  }
  for (const char* service : {"auth", "builder", "scheduler", "logs", "github-events", "ingress"}) {
    out.push_back(MakeRule("*", service, "*", "deny", 400,
                           "platform endpoints are admin endpoints unless a rule opens them"));
  }
  out.push_back(MakeRule("developer", "*", "*", "allow", 100, "developers call user services"));
  return out;
}

RuleCache::RuleCache(Fetcher fetch, std::chrono::seconds max_age)
    : fetch_(std::move(fetch)), max_age_(max_age) {}

Decision RuleCache::Evaluate(const Caller& caller, std::string_view service,
                             std::string_view endpoint) {
  std::shared_ptr<const std::vector<auth::v1::Rule>> rules;
  bool refresh = false;
  {
    std::shared_lock lock(mu_);
    rules = rules_;
    const auto age = std::chrono::steady_clock::now() - fetched_;
    refresh = rules ? age > max_age_ : age > kRetryWithoutRules;
  }
  if (refresh) {
    {
      // fetched_ doubles as "last attempt": claiming it under the lock means one thread fetches
      // while the others go on with the rules they have.
      std::unique_lock lock(mu_);
      const auto now = std::chrono::steady_clock::now();
      const auto age = now - fetched_;
      refresh = rules_ ? age > max_age_ : age > kRetryWithoutRules;
      if (refresh) fetched_ = now;
    }
    if (refresh) {
      Refresh();
      std::shared_lock lock(mu_);
      rules = rules_;
    }
  }
  // Never loaded (auth unreachable since start): fail closed.
  if (!rules) return Decision::kDeny;
  return rules::Evaluate(*rules, caller, service, endpoint);
}

bool RuleCache::Refresh() {
  std::optional<auth::v1::ListRulesResponse> fetched;
  try {
    fetched = fetch_();
  } catch (const std::exception& e) {
    log::Warn("fetching access rules failed", {{"error", e.what()}});
  }
  std::unique_lock lock(mu_);
  fetched_ = std::chrono::steady_clock::now();
  if (!fetched) return false;  // keep the rules we have
  rules_ = std::make_shared<const std::vector<auth::v1::Rule>>(fetched->rules().begin(),
                                                               fetched->rules().end());
  return true;
}

bool RuleCache::Ready() const {
  std::shared_lock lock(mu_);
  return rules_ != nullptr;
}

}  // namespace muon::rules
