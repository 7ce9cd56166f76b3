// Untrusted input: the bearer token of every request (ingress and platform services).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "muon/common/token.h"

namespace {
const muon::token::KeySet& Keys() {
  static const muon::token::KeySet keys = [] {
    auto key = muon::token::GenerateSigningKey("fuzz-key", "fuzz");
    muon::auth::v1::KeysResponse response;
    *response.add_keys() = muon::token::ToJwk(key);
    return muon::token::KeySet(response);
  }();
  return keys;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  muon::auth::v1::Claims claims;
  (void)muon::token::Verify(input, Keys(), std::chrono::system_clock::now(), claims);
  (void)muon::token::Base64UrlDecode(input);
  (void)muon::token::BearerToken(input);
  return 0;
}
