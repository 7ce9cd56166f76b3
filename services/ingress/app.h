#pragma once
// Everything the ingress runs, owned in one place so main() only wires and shutdown has one
// order: stop HTTP (finishing in-flight requests), then background refreshers, then the bus.

#include <memory>
#include <thread>
#include <vector>

#include "catalog.h"
#include "gateway.h"
#include "http_server.h"
#include "muon/common/authz.h"
#include "muon/common/config.h"
#include "muon/common/metrics.h"
#include "muon/common/service.h"

namespace muon::ingress {

void AddIngressOptions(config::Spec& spec);

class IngressApp {
 public:
  // Connects the workers' buses, starts discovery, key and rule refresh, and the HTTP server.
  IngressApp(const config::Values& config, bus::Connection& control_bus);
  ~IngressApp();

  void Drain(std::chrono::milliseconds timeout);
  uint16_t port() const { return server_->port(); }

 private:
  void RefreshLoop();

  bus::Connection& control_bus_;
  std::vector<WorkerBus> buses_;
  std::unique_ptr<ServiceTokenSource> service_token_;
  std::unique_ptr<token::Verifier> verifier_;
  std::unique_ptr<rules::RuleCache> rules_;
  std::unique_ptr<Catalog> catalog_;
  metrics::Registry metrics_;
  std::unique_ptr<Gateway> gateway_;
  std::unique_ptr<HttpServer> server_;
  std::vector<std::unique_ptr<boost::asio::steady_timer>> sweepers_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread refresher_;
};

}  // namespace muon::ingress
