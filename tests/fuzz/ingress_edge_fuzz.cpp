// Untrusted input at the ingress's edge: request targets, trace context, timeout headers, and
// $SRV.INFO replies from anything on the bus.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "catalog.h"
#include "edge.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  (void)muon::ingress::ParseRoute("POST", input);
  (void)muon::ingress::ParseRoute("GET", input);
  (void)muon::ingress::IsValidTraceparent(input);
  (void)muon::ingress::NextTraceparent(input);
  (void)muon::ingress::IsAcceptableRequestId(input);
  try {
    (void)muon::ingress::ParseTimeoutHeader(input, std::chrono::seconds(60));
  } catch (const std::invalid_argument&) {
  }
  (void)muon::ingress::CatalogJson(muon::ingress::BuildCatalog({input}));
  return 0;
}
