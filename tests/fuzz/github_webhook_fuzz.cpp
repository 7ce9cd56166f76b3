// Untrusted input of the webhook path: the headers and body GitHub (or anyone) posts to
// /v1/github/events, as github-events reads them (header checks, the payload's JSON, the
// signature check), and WebhookRequest messages anyone may publish on the bus.
// Input: "name: value" lines, an empty line, then the body.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "muon/common/errors.h"
#include "muon/github_events/v1/github_events.pb.h"
#include "webhook.h"

namespace {

void Check(const std::map<std::string, std::string>& headers, const std::string& body) {
  using namespace muon::github_events;
  try {
    const auto meta = ParseWebhookHeaders(headers);
    (void)VerifySignature("fuzz secret", body, meta.signature);
  } catch (const muon::Error&) {
  }
  try {
    const auto payload = ParsePayload(body);
    (void)IsValidRepoName(payload.repository().full_name());
  } catch (const muon::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::map<std::string, std::string> headers;
  size_t pos = 0;
  while (pos < input.size()) {
    const size_t end = input.find('\n', pos);
    const std::string line = input.substr(pos, end == std::string::npos ? end : end - pos);
    pos = end == std::string::npos ? input.size() : end + 1;
    if (line.empty()) break;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    headers[line.substr(0, colon)] = line.substr(std::min(colon + 2, line.size()));
  }
  Check(headers, input.substr(pos));
  Check({{"content-type", "application/json"},
         {"x-github-event", "push"},
         {"x-github-delivery", "d-1"},
         {"x-hub-signature-256", muon::github_events::SignatureHeader("fuzz secret", input)}},
        input);

  muon::github_events::v1::WebhookRequest request;
  if (request.ParseFromString(input)) {
    Check(std::map<std::string, std::string>(request.headers().begin(), request.headers().end()),
          request.body());
  }
  return 0;
}
