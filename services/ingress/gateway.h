#pragma once
// The ingress's request handling: routes, authentication and rules at the edge, JSON <->
// Protobuf for platform services, pass-through for user services, asynchronous requests over the
// bus, and every failure in the platform's error shape with the right HTTP status.

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "catalog.h"
#include "edge.h"
#include "http_server.h"
#include "muon/common/bus_loop.h"
#include "muon/common/metrics.h"
#include "muon/common/rules.h"
#include "muon/common/token.h"

namespace muon::ingress {

struct GatewayOptions {
  std::string region = "local";
  std::chrono::milliseconds default_timeout{10000};
  std::chrono::milliseconds max_timeout{60000};
  double rate_limit_per_second = 0;  // per client; 0 = off
  double rate_limit_burst = 0;
};

// The bus side of one HTTP worker: its own NATS connection, driven by the worker's io_context
// (bus_loop.h), and a requester whose replies arrive on the worker's thread: a call is read,
// sent, answered and written back without leaving that thread.
struct WorkerBus {
  std::unique_ptr<bus::Connection> connection;
  std::unique_ptr<bus::LoopRequester> requester;
};

class Gateway : public RequestHandler {
 public:
  // `stream_bus` is a connection with nats.c's own threads: a log tail's JetStream consumer is
  // set up with blocking requests, which must not run on a worker's event loop.
  Gateway(GatewayOptions options, std::vector<WorkerBus>& buses, bus::Connection& stream_bus,
          token::Verifier& verifier, rules::RuleCache& rules, Catalog& catalog,
          metrics::Registry& metrics);

  void Handle(Request request, const ClientInfo& client, size_t worker, Respond respond,
              Stream stream) override;
  Response Refused(unsigned status, const std::string& detail) override;

  bool Ready(std::string& why) const;

 private:
  struct Call;
  void HandleCall(std::shared_ptr<Call> call);
  void StartLogTail(std::shared_ptr<Call> call, const rules::Caller& caller,
                    const std::string& email, bus::Headers headers);
  void Finish(Call& call, Response response);
  Response ErrorResponse(const Call& call, int code, const std::string& detail) const;
  Response FromReply(Call& call, std::error_code ec, bus::Msg reply);

  GatewayOptions options_;
  metrics::Registry& metrics_;
  std::vector<WorkerBus>& buses_;
  bus::Connection& stream_bus_;
  token::Verifier& verifier_;
  rules::RuleCache& rules_;
  Catalog& catalog_;
  RateLimiter limiter_;
  metrics::CounterFamily& requests_;
  metrics::HistogramFamily& latency_;
  metrics::GaugeCell& in_flight_;
  metrics::CounterFamily& bus_errors_;
};

// Platform services: their methods are looked up in the compiled-in descriptors.
bool IsPlatformService(std::string_view service);
// The github-events.Webhook request for a webhook POST: the body byte for byte (moved out of
// `request`) and every header, names in lower case.
std::string WebhookPayload(Request& request);

}  // namespace muon::ingress
