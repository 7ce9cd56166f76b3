#pragma once
// Access rules: (role or "*" or "public", service, endpoint pattern with "*", allow/deny,
// priority). Evaluated at the ingress and again by the platform service that owns the action.
// The highest-priority matching rule decides; on equal priority deny beats allow; no match
// denies.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "muon/auth/v1/auth.pb.h"

namespace muon::rules {

// "*" matches any run of characters (including none); everything else literally.
bool MatchPattern(std::string_view pattern, std::string_view text);

struct Caller {
  bool authenticated = false;
  std::vector<std::string> roles;
};

enum class Decision { kAllow, kDeny };

Decision Evaluate(const std::vector<auth::v1::Rule>& rules, const Caller& caller,
                  std::string_view service, std::string_view endpoint);

// Validation for CreateRule; returns an error text or nullopt.
std::optional<std::string> Validate(const auth::v1::Rule& rule);

// Rules the auth service seeds on first start (see services/auth/README.md).
std::vector<auth::v1::Rule> DefaultRules();

// A thread-safe, periodically refreshed copy of the rules (fetched from auth).
class RuleCache {
 public:
  using Fetcher = std::function<std::optional<auth::v1::ListRulesResponse>()>;
  RuleCache(Fetcher fetch, std::chrono::seconds max_age = std::chrono::seconds(10));
  Decision Evaluate(const Caller& caller, std::string_view service, std::string_view endpoint);
  bool Refresh();
  bool Ready() const;

 private:
  Fetcher fetch_;
  std::chrono::seconds max_age_;
  mutable std::shared_mutex mu_;
  std::shared_ptr<const std::vector<auth::v1::Rule>> rules_;
  std::chrono::steady_clock::time_point fetched_{};
};

}  // namespace muon::rules
