#pragma once
// What every service's main() shares: configuration (with the options every service has),
// logging set-up, the bus connection, the Service, and a clean drain on SIGTERM/SIGINT.
//
//   int main(int argc, char** argv) {
//     muon::config::Spec spec("muon-echo", "Example service");
//     return muon::RunService(argc, argv, spec, {.name = "echo", .kind = muon::ServiceKind::kUser},
//                             [](muon::ServiceContext& ctx) { RegisterEcho(ctx.service, ...); });
//   }
//
// Exit codes: 0 after a clean drain, 1 on a start-up failure, 2 on bad configuration.

#include <functional>
#include <memory>

#include "muon/common/bus.h"
#include "muon/common/config.h"
#include "muon/common/service.h"

namespace muon {

inline constexpr int kExitStartupFailure = 1;

// Adds the options every service understands:
//   --nats-url (NATS_URL), --log-level (MUON_LOG_LEVEL), --region (MUON_REGION),
//   --instance (MUON_INSTANCE), --release (MUON_VERSION), --preview (MUON_PREVIEW),
//   --drain-timeout (MUON_DRAIN_TIMEOUT), --concurrency (MUON_CONCURRENCY).
void AddCommonOptions(config::Spec& spec);

struct ServiceContext {
  const config::Values& config;
  bus::Connection& bus;
  Service& service;
  // Called after the service stopped taking requests and before the bus closes.
  std::vector<std::function<void()>>& on_shutdown;
};

// Parses the configuration (AddCommonOptions is applied to `spec`), connects to NATS, builds the
// Service from `options` plus the common settings, lets `setup` declare endpoints (and start
// whatever else the service runs), starts it, and blocks until SIGTERM or SIGINT, then drains.
int RunService(int argc, char** argv, config::Spec spec, ServiceOptions options,
               const std::function<void(ServiceContext&)>& setup);

}  // namespace muon
