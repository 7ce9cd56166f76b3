#pragma once
// Pure logic of a GitHub webhook delivery: the headers GitHub sends, the X-Hub-Signature-256
// check (HMAC-SHA256 of the raw body, compared in constant time), the payload fields Muon reads,
// and repository names. Everything here is untrusted input; failures are muon::Error (400/401)
// with a detail that says what to fix.

#include <map>
#include <string>
#include <string_view>

#include "muon/common/service.h"
#include "muon/github_events/v1/payload.pb.h"

namespace muon::github_events {

struct WebhookHeaders {
  std::string event;        // X-GitHub-Event, e.g. "push", "ping"
  std::string delivery_id;  // X-GitHub-Delivery (a GUID)
  std::string signature;    // X-Hub-Signature-256 ("sha256=<hex>"); empty when absent
};

// Reads and validates the headers (names in lower case). Throws Error 400 when the event or the
// delivery id is missing or malformed, or the content type is not application/json.
WebhookHeaders ParseWebhookHeaders(const std::map<std::string, std::string>& headers);

// "sha256=" + hex HMAC-SHA256(secret, body): what GitHub sends.
std::string SignatureHeader(std::string_view secret, std::string_view body);
// True when `header` is SignatureHeader(secret, body); the comparison takes the same time
// wherever the first difference is.
bool VerifySignature(std::string_view secret, std::string_view body, std::string_view header);

// Parses GitHub's JSON (unknown fields ignored). Throws Error 400 when it is not JSON of that
// shape or names no repository.
v1::GithubPayload ParsePayload(std::string_view body);

using muon::IsValidRepoName;  // libs/common service.h: the rule the CLI checks too

inline constexpr std::string_view kZeroCommit = "0000000000000000000000000000000000000000";

}  // namespace muon::github_events
