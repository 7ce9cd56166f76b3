// Access rules: pattern matching, evaluation order, validation, the seeded defaults and the cache.

#include "muon/common/rules.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

using muon::rules::Caller;
using muon::rules::Decision;

namespace {

muon::auth::v1::Rule R(std::string role, std::string service, std::string endpoint,
                       std::string effect, int priority) {
  muon::auth::v1::Rule rule;
  rule.set_role(std::move(role));
  rule.set_service(std::move(service));
  rule.set_endpoint(std::move(endpoint));
  rule.set_effect(std::move(effect));
  rule.set_priority(priority);
  return rule;
}

const Caller kAnonymous{};
const Caller kAdmin{.authenticated = true, .roles = {"admin"}};
const Caller kDeveloper{.authenticated = true, .roles = {"developer"}};
const Caller kNobody{.authenticated = true, .roles = {}};
const Caller kService{.authenticated = true, .roles = {"service"}};

}  // namespace

TEST_CASE("endpoint patterns: '*' matches any run, everything else literally", "[rules]") {
  struct Case {
    const char* pattern;
    const char* text;
    bool match;
  };
  const Case cases[] = {
      {"*", "", true},
      {"*", "Login", true},
      {"Login", "Login", true},
      {"Login", "login", false},
      {"Login", "Logins", false},
      {"Log*", "Login", true},
      {"Log*", "Log", true},
      {"Log*", "Lo", false},
      {"*Rule*", "ListRules", true},
      {"*Rule*", "DeleteRule", true},
      {"*Rule*", "Rules", true},
      {"*Rule*", "Role", false},
      {"List*s", "ListRules", true},
      {"List*s", "ListRule", false},
      {"a*b*c", "abc", true},
      {"a*b*c", "aXbYc", true},
      {"a*b*c", "aXbYcZ", false},
      {"a*b*c", "acb", false},
      {"**", "x", true},
      {"", "", true},
      {"", "x", false},
      {"a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},  // no blow-up
      {"Get-*_v2", "Get-Item_v2", true},
  };
  for (const auto& c : cases) {
    INFO(c.pattern << " vs " << c.text);
    CHECK(muon::rules::MatchPattern(c.pattern, c.text) == c.match);
  }
}

TEST_CASE("highest priority wins, deny wins ties, no match denies", "[rules]") {
  using muon::rules::Evaluate;
  CHECK(Evaluate({}, kAdmin, "echo", "Echo") == Decision::kDeny);

  const std::vector<muon::auth::v1::Rule> rules = {
      R("developer", "*", "*", "allow", 100),      R("developer", "echo", "Sleep", "deny", 200),
      R("developer", "billing", "*", "deny", 100),  // ties with the allow above
      R("*", "status", "Get*", "allow", 10),       R("public", "docs", "*", "allow", 10),
  };
  CHECK(Evaluate(rules, kDeveloper, "echo", "Echo") == Decision::kAllow);
  CHECK(Evaluate(rules, kDeveloper, "echo", "Sleep") == Decision::kDeny);
  CHECK(Evaluate(rules, kDeveloper, "billing", "Charge") == Decision::kDeny);
  CHECK(Evaluate(rules, kNobody, "echo", "Echo") == Decision::kDeny);
  CHECK(Evaluate(rules, kNobody, "status", "GetAll") == Decision::kAllow);
  CHECK(Evaluate(rules, kNobody, "status", "Put") == Decision::kDeny);
  // "*" means any authenticated caller, "public" means anyone.
  CHECK(Evaluate(rules, kAnonymous, "status", "GetAll") == Decision::kDeny);
  CHECK(Evaluate(rules, kAnonymous, "docs", "Read") == Decision::kAllow);
  CHECK(Evaluate(rules, kDeveloper, "docs", "Read") == Decision::kAllow);

  // A higher allow beats a lower deny; an unknown effect counts as deny.
  std::vector<muon::auth::v1::Rule> more = rules;
  more.push_back(R("developer", "echo", "Sleep", "allow", 300));
  CHECK(Evaluate(more, kDeveloper, "echo", "Sleep") == Decision::kAllow);
  more.push_back(R("developer", "echo", "Sleep", "maybe", 300));
  CHECK(Evaluate(more, kDeveloper, "echo", "Sleep") == Decision::kDeny);
}

TEST_CASE("the default rules", "[rules]") {
  const auto rules = muon::rules::DefaultRules();
  auto eval = [&](const Caller& caller, const char* service, const char* endpoint) {
    return muon::rules::Evaluate(rules, caller, service, endpoint);
  };
  for (const auto& rule : rules) {
    INFO(rule.ShortDebugString());
    CHECK_FALSE(muon::rules::Validate(rule));
  }
  // Public: signing in, keys, webhooks.
  for (const char* method : {"Login", "Refresh", "Logout", "Signup", "Keys", "ServiceToken"}) {
    CHECK(eval(kAnonymous, "auth", method) == Decision::kAllow);
  }
  CHECK(eval(kAnonymous, "github-events", "Webhook") == Decision::kAllow);
  CHECK(eval(kAnonymous, "auth", "Whoami") == Decision::kDeny);
  CHECK(eval(kAnonymous, "auth", "ListRules") == Decision::kDeny);
  CHECK(eval(kAnonymous, "echo", "Echo") == Decision::kDeny);

  // Admin endpoints: admins only.
  CHECK(eval(kAdmin, "auth", "ListAccounts") == Decision::kAllow);
  CHECK(eval(kAdmin, "scheduler", "Scale") == Decision::kAllow);
  CHECK(eval(kAdmin, "echo", "Echo") == Decision::kAllow);
  CHECK(eval(kDeveloper, "auth", "ListAccounts") == Decision::kDeny);
  CHECK(eval(kDeveloper, "auth", "CreateRule") == Decision::kDeny);
  CHECK(eval(kDeveloper, "builder", "Build") == Decision::kDeny);

  // Developers call user services; everyone manages their own account.
  CHECK(eval(kDeveloper, "echo", "Echo") == Decision::kAllow);
  CHECK(eval(kDeveloper, "auth", "Whoami") == Decision::kAllow);
  CHECK(eval(kNobody, "auth", "ChangePassword") == Decision::kAllow);
  CHECK(eval(kNobody, "echo", "Echo") == Decision::kDeny);

  // Platform service accounts: keys and rules from auth, each other's endpoints, not auth admin.
  CHECK(eval(kService, "auth", "ListRules") == Decision::kAllow);
  CHECK(eval(kService, "auth", "Keys") == Decision::kAllow);
  CHECK(eval(kService, "builder", "Build") == Decision::kAllow);
  CHECK(eval(kService, "auth", "ListAccounts") == Decision::kDeny);
  CHECK(eval(kService, "auth", "CreateRule") == Decision::kDeny);
}

TEST_CASE("rule validation", "[rules]") {
  using muon::rules::Validate;
  CHECK_FALSE(Validate(R("developer", "echo", "Echo", "allow", 0)));
  CHECK_FALSE(Validate(R("*", "*", "*", "deny", -10000)));
  CHECK_FALSE(Validate(R("public", "github-events", "Web*", "allow", 10000)));
  CHECK_FALSE(Validate(R("team_a-1", "my_svc", "Get-Item_*", "allow", 5)));

  CHECK(Validate(R("", "echo", "Echo", "allow", 0)));
  CHECK(Validate(R("Developer", "echo", "Echo", "allow", 0)));
  CHECK(Validate(R("dev ops", "echo", "Echo", "allow", 0)));
  CHECK(Validate(R("developer", "", "Echo", "allow", 0)));
  CHECK(Validate(R("developer", "ec.ho", "Echo", "allow", 0)));
  CHECK(Validate(R("developer", "echo", "", "allow", 0)));
  CHECK(Validate(R("developer", "echo", "Echo.>", "allow", 0)));
  CHECK(Validate(R("developer", "echo", "Echo", "permit", 0)));
  CHECK(Validate(R("developer", "echo", "Echo", "allow", 10001)));
  CHECK(Validate(R("developer", "echo", "Echo", "allow", -10001)));
  CHECK(*Validate(R("developer", "echo", "Echo", "permit", 0)) ==
        "effect \"permit\" must be \"allow\" or \"deny\"");
}

TEST_CASE("the rule cache refreshes when stale and keeps its rules when auth is down", "[rules]") {
  std::atomic<int> fetches{0};
  std::atomic<bool> down{false};
  std::atomic<bool> opened{false};
  muon::rules::RuleCache cache(
      [&]() -> std::optional<muon::auth::v1::ListRulesResponse> {
        ++fetches;
        if (down) return std::nullopt;
        muon::auth::v1::ListRulesResponse response;
        *response.add_rules() = R("developer", "echo", "*", "allow", 1);
        if (opened) *response.add_rules() = R("developer", "billing", "*", "allow", 1);
        return response;
      },
      std::chrono::seconds(3600));
  CHECK_FALSE(cache.Ready());
  CHECK(cache.Evaluate(kDeveloper, "echo", "Echo") == Decision::kAllow);  // first use fetches
  CHECK(cache.Ready());
  CHECK(fetches == 1);
  for (int i = 0; i < 100; ++i) cache.Evaluate(kDeveloper, "echo", "Echo");
  CHECK(fetches == 1);  // fresh enough: no fetch

  opened = true;
  CHECK(cache.Evaluate(kDeveloper, "billing", "Pay") == Decision::kDeny);  // not stale yet
  REQUIRE(cache.Refresh());
  CHECK(cache.Evaluate(kDeveloper, "billing", "Pay") == Decision::kAllow);

  down = true;
  CHECK_FALSE(cache.Refresh());
  CHECK(cache.Evaluate(kDeveloper, "billing", "Pay") == Decision::kAllow);  // old rules stay

  // Stale rules are refreshed lazily by Evaluate.
  std::atomic<int> stale_fetches{0};
  muon::rules::RuleCache stale(
      [&]() -> std::optional<muon::auth::v1::ListRulesResponse> {
        ++stale_fetches;
        return muon::auth::v1::ListRulesResponse{};
      },
      std::chrono::seconds(0));
  stale.Evaluate(kDeveloper, "echo", "Echo");
  const int after_first = stale_fetches;
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // let max_age (0 s) pass
  stale.Evaluate(kDeveloper, "echo", "Echo");
  CHECK(stale_fetches > after_first);

  // Never loaded: everything is denied (fail closed).
  muon::rules::RuleCache empty([] { return std::optional<muon::auth::v1::ListRulesResponse>(); });
  CHECK(empty.Evaluate(kAdmin, "echo", "Echo") == Decision::kDeny);
  CHECK_FALSE(empty.Ready());
}
