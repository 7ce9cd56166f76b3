// github-events' pure logic: webhook headers, X-Hub-Signature-256, payload parsing, repository
// names, and the secret box webhook secrets are stored in.

#include <catch2/catch.hpp>
#include <string>

#include "muon/common/errors.h"
#include "muon/common/secret_box.h"
#include "webhook.h"

using namespace muon::github_events;
using muon::SecretBox;

namespace {

std::map<std::string, std::string> Headers() {
  return {{"content-type", "application/json"},
          {"x-github-event", "push"},
          {"x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"},
          {"x-hub-signature-256", "sha256=00"},
          {"user-agent", "GitHub-Hookshot/044aadd"}};
}

}  // namespace

TEST_CASE("SignatureHeader matches GitHub's documented example", "[github]") {
  // docs.github.com, "Validating webhook deliveries": this secret and payload give this header.
  CHECK(SignatureHeader("It's a Secret to Everybody", "Hello, World!") ==
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
}

TEST_CASE("VerifySignature accepts only the exact signature of the exact body", "[github]") {
  const std::string body = R"({"repository":{"full_name":"acme/shop"}})";
  const std::string good = SignatureHeader("s3cret", body);
  CHECK(VerifySignature("s3cret", body, good));
  CHECK_FALSE(VerifySignature("s3cret", body + " ", good));      // body changed
  CHECK_FALSE(VerifySignature("other", body, good));             // another secret
  CHECK_FALSE(VerifySignature("s3cret", body, ""));              // missing
  CHECK_FALSE(VerifySignature("s3cret", body, good.substr(7)));  // no sha256= prefix
  CHECK_FALSE(VerifySignature("s3cret", body, "sha1=" + good.substr(7)));
  CHECK_FALSE(VerifySignature("s3cret", body, good.substr(0, good.size() - 2)));  // short
  CHECK_FALSE(VerifySignature("s3cret", body, good + "00"));                      // long
  std::string upper = good;
  for (size_t i = 7; i < upper.size(); ++i) upper[i] = static_cast<char>(std::toupper(upper[i]));
  // Hex digits in either case decode to the same bytes.
  CHECK(VerifySignature("s3cret", body, upper));
  std::string flipped = good;
  flipped.back() = flipped.back() == '0' ? '1' : '0';
  CHECK_FALSE(VerifySignature("s3cret", body, flipped));
  std::string not_hex = good;
  not_hex[10] = 'g';
  CHECK_FALSE(VerifySignature("s3cret", body, not_hex));
}

TEST_CASE("ParseWebhookHeaders reads event, delivery and signature and refuses the rest",
          "[github]") {
  const auto h = ParseWebhookHeaders(Headers());
  CHECK(h.event == "push");
  CHECK(h.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958");
  CHECK(h.signature == "sha256=00");

  auto with = [](const std::string& name, const std::string& value) {
    auto headers = Headers();
    if (value.empty()) {
      headers.erase(name);
    } else {
      headers[name] = value;
    }
    return headers;
  };
  CHECK(ParseWebhookHeaders(with("content-type", "application/json; charset=utf-8")).event ==
        "push");
  CHECK(ParseWebhookHeaders(with("x-hub-signature-256", "")).signature.empty());
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"content-type", "application/x-www-form-urlencoded"},
           {"content-type", ""},
           {"x-github-event", ""},
           {"x-github-event", "push; rm -rf"},
           {"x-github-delivery", ""},
           {"x-github-delivery", std::string(65, 'a')},
           {"x-github-delivery", "../../etc"}}) {
    INFO(name << ": " << value);
    try {
      ParseWebhookHeaders(with(name, value));
      FAIL("accepted");
    } catch (const muon::Error& e) {
      CHECK(e.code() == 400);
    }
  }
}

TEST_CASE("ParsePayload reads a push and refuses what is not GitHub's JSON", "[github]") {
  const auto push = ParsePayload(R"({
    "ref": "refs/heads/main", "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "created": false, "deleted": false,
    "forced": false, "base_ref": null, "compare": "https://github.com/acme/shop/compare/x...y",
    "commits": [{"id": "0d1a26e6", "distinct": true, "message": "Fix", "timestamp": "2026-12-01T03:04:05Z",
                 "author": {"name": "A", "email": "a@example.com", "username": "a"},
                 "added": ["greeter/new.txt"], "removed": [], "modified": ["greeter/main.py"]}],
    "head_commit": {"id": "0d1a26e6"},
    "repository": {"id": 35129377, "name": "shop", "full_name": "acme/shop", "private": false,
                   "owner": {"name": "acme", "login": "acme"}, "created_at": 1430869212,
                   "clone_url": "https://github.com/acme/shop.git", "default_branch": "main"},
    "pusher": {"name": "a", "email": null}, "sender": {"login": "a", "id": 1}
  })");
  CHECK(push.repository().full_name() == "acme/shop");
  CHECK(push.repository().default_branch() == "main");
  CHECK(push.ref() == "refs/heads/main");
  CHECK(push.after() == "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");
  REQUIRE(push.commits_size() == 1);
  CHECK(push.commits(0).added(0) == "greeter/new.txt");
  CHECK(push.commits(0).modified(0) == "greeter/main.py");

  const auto ping = ParsePayload(
      R"({"zen":"Keep it logically awesome.","hook_id":1,"repository":{"full_name":"acme/shop"}})");
  CHECK(ping.zen() == "Keep it logically awesome.");

  for (const char* bad : {"", "not json", "[]", "{}", R"({"repository":{}})",
                          R"({"repository":{"full_name":"no-slash"}})",
                          R"({"repository":{"full_name":5}})", R"({"ref":"x")"}) {
    INFO(bad);
    try {
      ParsePayload(bad);
      FAIL("accepted");
    } catch (const muon::Error& e) {
      CHECK(e.code() == 400);
    }
  }
}

TEST_CASE("IsValidRepoName", "[github]") {
  CHECK(IsValidRepoName("acme/shop"));
  CHECK(IsValidRepoName("a-b_c.d/e.f-g_h"));
  CHECK(IsValidRepoName(std::string(100, 'a') + "/" + std::string(100, 'b')));
  for (const std::string& bad : std::vector<std::string>{
           "", "acme", "/shop", "acme/", "acme/shop/x", "../shop", "acme/..", "acme/.",
           "ac me/shop", "acme/sh;op", std::string(101, 'a') + "/b"}) {
    INFO(bad);
    CHECK_FALSE(IsValidRepoName(bad));
  }
}

TEST_CASE("SecretBox opens what it sealed and nothing else", "[github]") {
  const std::string key(64, 'a');
  SecretBox box(key);
  const std::string sealed = box.Seal("webhook secret");
  CHECK(sealed.find("webhook secret") == std::string::npos);
  CHECK(box.Open(sealed) == "webhook secret");
  CHECK(box.Seal("webhook secret") != sealed);  // a fresh nonce each time
  std::string tampered = sealed;
  tampered.back() ^= 1;
  CHECK_FALSE(box.Open(tampered));
  CHECK_FALSE(box.Open(sealed.substr(0, 10)));
  SecretBox other(std::string(64, 'b'));
  CHECK_FALSE(other.Open(sealed));
  CHECK_THROWS_AS(SecretBox("abc"), std::invalid_argument);
  CHECK_THROWS_AS(SecretBox(std::string(64, 'z')), std::invalid_argument);
}
