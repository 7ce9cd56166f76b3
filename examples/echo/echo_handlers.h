#pragma once
// The echo example's endpoints, kept apart from main() so tests and benchmarks can run the same
// service in-process.

#include <chrono>
#include <string>

#include "muon/common/service.h"

namespace muon::echo {

struct EchoSettings {
  // Upper bound for Sleep, so a caller cannot park a handler thread for hours.
  std::chrono::milliseconds max_sleep{std::chrono::seconds(60)};
};

// Declares Echo and Sleep on `service`.
void RegisterEndpoints(Service& service, const EchoSettings& settings = {});

inline ServiceOptions DefaultOptions() {
  return ServiceOptions{.name = "echo",
                        .kind = ServiceKind::kUser,
                        .version = "1.0.0",
                        .description = "Echoes messages back; the example service of Muon",
                        // Echo never blocks: it runs on the bus's event loop (Sleep does not).
                        .bus_event_loop = true};
}

}  // namespace muon::echo
