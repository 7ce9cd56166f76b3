#include "app.h"

#include <boost/asio/steady_timer.hpp>

#include "muon/common/log.h"

namespace muon::ingress {
namespace {

std::pair<std::string, uint16_t> ParseListen(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    throw config::ConfigError(
        fmt::format("--listen (env MUON_INGRESS_LISTEN): \"{}\" is not HOST:PORT", listen));
  }
  int port = 0;
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (const std::exception&) {
    port = -1;
  }
  if (port < 0 || port > 65535) {
    throw config::ConfigError(
        fmt::format("--listen (env MUON_INGRESS_LISTEN): \"{}\" is not HOST:PORT", listen));
  }
  return {listen.substr(0, colon), static_cast<uint16_t>(port)};
}

void ArmSweeper(boost::asio::steady_timer& timer, bus::LoopRequester& requester) {
  timer.expires_after(std::chrono::milliseconds(20));
  timer.async_wait([&timer, &requester](boost::system::error_code ec) {
    if (ec) return;
    requester.Sweep();
    ArmSweeper(timer, requester);
  });
}

}  // namespace

void AddIngressOptions(config::Spec& spec) {
  spec.String("listen", "MUON_INGRESS_LISTEN", "127.0.0.1:8080", "HOST:PORT to serve HTTP on")
      .Int("workers", "MUON_INGRESS_WORKERS", 2, 1, 64,
           "HTTP worker threads, each with its own NATS connection")
      .String("tls-cert", "MUON_TLS_CERT", "", "PEM certificate chain; with --tls-key: HTTPS")
      .String("tls-key", "MUON_TLS_KEY", "", "PEM private key")
      .Int("max-body", "MUON_INGRESS_MAX_BODY", 1024 * 1024, 1024, 64 * 1024 * 1024,
           "largest request body in bytes (413 above)")
      .Duration("timeout", "MUON_INGRESS_TIMEOUT", "10s", "default time a call may take (504)")
      .Duration("max-timeout", "MUON_INGRESS_MAX_TIMEOUT", "60s",
                "upper bound for a caller's Muon-Timeout header")
      .Int("rate-limit", "MUON_INGRESS_RATE_LIMIT", 0, 0, 10'000'000,
           "requests per second per client (account, else IP); 0 = no limit")
      .Int("rate-burst", "MUON_INGRESS_RATE_BURST", 0, 0, 10'000'000,
           "burst size of the rate limit (default: one second's worth)")
      .String("service-secret-file", "MUON_SERVICE_SECRET_FILE", "",
              "platform service secret, used to fetch the access rules from auth");
}

IngressApp::IngressApp(const config::Values& config, bus::Connection& control_bus)
    : control_bus_(control_bus) {
  const auto [address, port] = ParseListen(config.String("listen"));
  const size_t workers = static_cast<size_t>(config.Int("workers"));

  std::string secret;
  if (const auto& path = config.String("service-secret-file"); !path.empty()) {
    secret = ReadSecretFile(path);
  }
  service_token_ = std::make_unique<ServiceTokenSource>(control_bus_, "ingress", secret);
  verifier_ = std::make_unique<token::Verifier>(BusKeyFetcher(control_bus_));
  rules_ = std::make_unique<rules::RuleCache>(
      BusRuleFetcher(control_bus_, [this] { return service_token_->Bearer(); }),
      std::chrono::hours(24 * 365));  // refreshed by RefreshLoop, never on a request
  catalog_ = std::make_unique<Catalog>(control_bus_, std::chrono::seconds(2),
                                       std::chrono::milliseconds(250));

  GatewayOptions options;
  options.region = config.String("region");
  options.default_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(config.Duration("timeout"));
  options.max_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(config.Duration("max-timeout"));
  options.rate_limit_per_second = static_cast<double>(config.Int("rate-limit"));
  options.rate_limit_burst = static_cast<double>(config.Int("rate-burst"));
  gateway_ = std::make_unique<Gateway>(options, buses_, control_bus_, *verifier_, *rules_,
                                       *catalog_, metrics_);

  ServerOptions server_options;
  server_options.address = address;
  server_options.port = port;
  server_options.workers = workers;
  server_options.max_body_bytes = static_cast<size_t>(config.Int("max-body"));
  server_options.path_body_limits.emplace(std::string(kWebhookPath), kWebhookMaxBody);
  server_options.tls_cert_file = config.String("tls-cert");
  server_options.tls_key_file = config.String("tls-key");
  server_ = std::make_unique<HttpServer>(server_options, *gateway_);
  // Each worker's bus runs on the worker's own io_context (filled in before any request comes).
  for (size_t i = 0; i < workers; ++i) {
    WorkerBus worker;
    worker.connection = bus::Connection::Connect({.url = config.String("nats-url"),
                                                  .name = fmt::format("muon-ingress-w{}", i),
                                                  .event_loop = &server_->worker_context(i)});
    worker.requester = std::make_unique<bus::LoopRequester>(*worker.connection);
    buses_.push_back(std::move(worker));
    sweepers_.push_back(std::make_unique<boost::asio::steady_timer>(server_->worker_context(i)));
    ArmSweeper(*sweepers_.back(), *buses_.back().requester);
  }

  refresher_ = std::thread([this] { RefreshLoop(); });
  server_->Start();
  log::Info("ingress listening", {{"address", address},
                                  {"port", server_->port()},
                                  {"workers", workers},
                                  {"tls", !server_options.tls_cert_file.empty()}});
}

void IngressApp::RefreshLoop() {
  // Keys and rules come from auth, which may start after us: retry quickly until both are
  // loaded, then refresh every 10 s so rule changes and new region keys arrive by themselves.
  std::unique_lock lock(mu_);
  while (!stop_) {
    lock.unlock();
    const bool keys = verifier_->Refresh();
    const bool rules = rules_->Refresh();
    if (!keys || !rules) {
      log::Debug("waiting for auth", {{"keys", keys}, {"rules", rules}});
    }
    lock.lock();
    cv_.wait_for(lock, (keys && rules) ? std::chrono::seconds(10) : std::chrono::milliseconds(250),
                 [this] { return stop_; });
  }
}

void IngressApp::Drain(std::chrono::milliseconds timeout) {
  log::Info("draining HTTP", {{"in_flight", server_->in_flight()}});
  server_->Drain(timeout);
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (refresher_.joinable()) refresher_.join();
  for (auto& bus : buses_) bus.requester->CancelAll();
}

IngressApp::~IngressApp() {
  Drain(std::chrono::seconds(0));  // the workers' threads are joined after this
  // The buses run on the workers' io_contexts: they go first, while those still exist.
  sweepers_.clear();
  buses_.clear();
  server_.reset();
}

}  // namespace muon::ingress
