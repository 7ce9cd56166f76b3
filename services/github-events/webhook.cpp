#include "webhook.h"

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <sodium.h>

#include <algorithm>
#include <array>

#include "muon/common/errors.h"

namespace muon::github_events {
namespace {

constexpr std::string_view kSignaturePrefix = "sha256=";

std::string_view Get(const std::map<std::string, std::string>& headers, const std::string& name) {
  auto it = headers.find(name);
  return it == headers.end() ? std::string_view() : std::string_view(it->second);
}

bool IsTokenChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

std::array<unsigned char, crypto_auth_hmacsha256_BYTES> Mac(std::string_view secret,
                                                            std::string_view body) {
  crypto_auth_hmacsha256_state state;
  crypto_auth_hmacsha256_init(&state, reinterpret_cast<const unsigned char*>(secret.data()),
                              secret.size());
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(body.data()),
                                body.size());
  std::array<unsigned char, crypto_auth_hmacsha256_BYTES> mac{};
  crypto_auth_hmacsha256_final(&state, mac.data());
  return mac;
}

}  // namespace

WebhookHeaders ParseWebhookHeaders(const std::map<std::string, std::string>& headers) {
  WebhookHeaders out;
  const std::string_view content_type = Get(headers, "content-type");
  const std::string_view media = content_type.substr(0, content_type.find(';'));
  if (media != "application/json") {
    throw Error::BadRequest(fmt::format(
        "content type \"{}\" is not application/json; set the webhook's content type to "
        "application/json on GitHub",
        content_type.substr(0, 100)));
  }
  const std::string_view event = Get(headers, "x-github-event");
  if (event.empty() || event.size() > 64 || !std::all_of(event.begin(), event.end(), IsTokenChar)) {
    throw Error::BadRequest("X-GitHub-Event is missing or not an event name");
  }
  const std::string_view delivery = Get(headers, "x-github-delivery");
  if (delivery.empty() || delivery.size() > 64 ||
      !std::all_of(delivery.begin(), delivery.end(), IsTokenChar)) {
    throw Error::BadRequest("X-GitHub-Delivery is missing or not a delivery id");
  }
  out.event = std::string(event);
  out.delivery_id = std::string(delivery);
  out.signature = std::string(Get(headers, "x-hub-signature-256"));
  return out;
}

std::string SignatureHeader(std::string_view secret, std::string_view body) {
  const auto mac = Mac(secret, body);
  std::string hex(mac.size() * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), mac.data(), mac.size());
  hex.pop_back();
  return std::string(kSignaturePrefix) + hex;
}

bool VerifySignature(std::string_view secret, std::string_view body, std::string_view header) {
  if (header.substr(0, kSignaturePrefix.size()) != kSignaturePrefix) return false;
  const std::string_view hex = header.substr(kSignaturePrefix.size());
  std::array<unsigned char, crypto_auth_hmacsha256_BYTES> given{};
  size_t length = 0;
  const char* end = nullptr;
  if (hex.size() != given.size() * 2 ||
      sodium_hex2bin(given.data(), given.size(), hex.data(), hex.size(), nullptr, &length, &end) !=
          0 ||
      length != given.size() || end != hex.data() + hex.size()) {
    return false;
  }
  const auto expected = Mac(secret, body);
  return sodium_memcmp(given.data(), expected.data(), expected.size()) == 0;
}

v1::GithubPayload ParsePayload(std::string_view body) {
  v1::GithubPayload payload;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(body.data(), body.size()), &payload, options);
  if (!status.ok()) {
    throw Error::BadRequest(fmt::format("the payload is not GitHub's JSON: {}",
                                        status.message().as_string().substr(0, 200)));
  }
  if (!IsValidRepoName(payload.repository().full_name())) {
    throw Error::BadRequest("the payload names no repository (repository.full_name)");
  }
  return payload;
}

}  // namespace muon::github_events
