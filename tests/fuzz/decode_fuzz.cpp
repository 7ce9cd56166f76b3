// Untrusted input: request bodies as the service framework decodes them (Protobuf, or proto3
// JSON when the caller says application/json).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "muon/auth/v1/auth.pb.h"
#include "muon/common/service.h"
#include "muon/echo/v1/echo.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  for (bool json : {false, true}) {
    try {
      muon::echo::v1::EchoRequest echo;
      muon::DecodeMessage(input, json, echo);
      (void)muon::EncodeMessage(echo, !json);
    } catch (const muon::Error&) {
    }
    try {
      muon::auth::v1::Rule rule;
      muon::DecodeMessage(input, json, rule);
    } catch (const muon::Error&) {
    }
  }
  return 0;
}
