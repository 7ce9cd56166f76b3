#include "muon/common/service_main.h"

#include <signal.h>

#include <cstdio>
#include <iostream>

#include "muon/common/log.h"
#include "muon/common/log_lines.h"

namespace muon {

void AddCommonOptions(config::Spec& spec) {
  spec.String("nats-url", "NATS_URL", "nats://127.0.0.1:4222",
              "NATS server URL(s), comma-separated")
      .String("log-level", "MUON_LOG_LEVEL", "info", "debug, info, warn or error")
      .String("region", "MUON_REGION", "local", "region this process runs in")
      .String("instance", "MUON_INSTANCE", "", "instance id (generated when empty)")
      .String("release", "MUON_VERSION", "",
              "release label; user services also answer ver.<service>.<release>.*")
      .Bool("preview", "MUON_PREVIEW", false,
            "a preview version: answer only ver.<service>.<release>.*, never svc.<service>.* "
            "(needs --release)")
      .Duration("drain-timeout", "MUON_DRAIN_TIMEOUT", "30s",
                "how long in-flight requests may take to finish on shutdown")
      .Int("concurrency", "MUON_CONCURRENCY", 4, 1, 256,
           "requests per endpoint handled at once (one delivery thread each)");
}

int RunService(int argc, char** argv, config::Spec spec, ServiceOptions options,
               const std::function<void(ServiceContext&)>& setup) {
  // Block the shutdown signals before any thread exists, so every thread inherits the mask and
  // only sigwait() below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  AddCommonOptions(spec);
  std::optional<config::Values> parsed;
  try {
    parsed = spec.Parse(argc, argv, config::ProcessEnvironment());
  } catch (const config::HelpRequested& help) {
    std::cout << help.what() << std::endl;
    return 0;
  } catch (const config::ConfigError& e) {
    std::cerr << argv[0] << ": invalid configuration:\n"
              << e.what() << "\n"
              << "Run " << argv[0] << " --help for every option." << std::endl;
    return config::kExitBadConfig;
  }
  const config::Values& cfg = *parsed;
  const auto level = log::ParseLevel(cfg.String("log-level"));
  if (!level) {
    std::cerr << argv[0] << ": invalid configuration:\n--log-level (env MUON_LOG_LEVEL): \""
              << cfg.String("log-level") << "\" is not one of debug, info, warn, error"
              << std::endl;
    return config::kExitBadConfig;
  }
  log::SetLevel(*level);
  log::SetComponent(options.name);

  // The loop outlives the connection and stops before it is destroyed (bus_loop.h).
  std::unique_ptr<bus::EventLoopThread> loop;
  std::unique_ptr<bus::Connection> connection;
  struct LoopStopper {
    std::unique_ptr<bus::EventLoopThread>& loop;
    ~LoopStopper() {
      if (loop) loop->Stop();
    }
  } stop_loop{loop};
  std::unique_ptr<Service> service;
  std::unique_ptr<loglines::Shipper> shipper;
  std::shared_ptr<loglines::ShipperSink> shipper_sink;
  // The sink goes before the shipper, and both before the connection.
  struct SinkRemover {
    std::shared_ptr<loglines::ShipperSink>& sink;
    ~SinkRemover() {
      if (sink) log::RemoveSink(sink);
    }
  } remove_sink{shipper_sink};
  std::vector<std::function<void()>> on_shutdown;
  try {
    options.instance_id = cfg.String("instance");
    options.release = cfg.String("release");
    options.preview = cfg.Bool("preview");
    if (options.preview && options.release.empty()) {
      throw config::ConfigError(
          "--preview (env MUON_PREVIEW) needs a release label (--release, env MUON_VERSION): a "
          "preview instance answers only ver.<service>.<release>.*");
    }
    options.concurrency = static_cast<int>(cfg.Int("concurrency"));
    options.metadata.emplace("region", cfg.String("region"));
    if (options.bus_event_loop) loop = std::make_unique<bus::EventLoopThread>();
    connection = bus::Connection::Connect({.url = cfg.String("nats-url"),
                                           .name = fmt::format("muon-{}", options.name),
                                           .event_loop = loop ? &loop->context() : nullptr});
    service = std::make_unique<Service>(*connection, options);
    if (options.kind == ServiceKind::kPlatform) {
      // Platform services' own logs go to the log stream too (user services' output is
      // captured by the node runtime instead).
      shipper = std::make_unique<loglines::Shipper>(
          *connection, loglines::ShipperOptions{.service = options.name,
                                                .instance = service->id(),
                                                .release = options.version,
                                                .region = cfg.String("region"),
                                                .source = logs::v1::SOURCE_PLATFORM});
      shipper_sink = std::make_shared<loglines::ShipperSink>(*shipper);
      log::AddSink(shipper_sink);
    }
    ServiceContext ctx{cfg, *connection, *service, on_shutdown};
    setup(ctx);
    service->Start();
  } catch (const config::ConfigError& e) {
    // Settings that can only be checked while starting (a file that cannot be read, ...).
    std::cerr << argv[0] << ": invalid configuration:\n" << e.what() << std::endl;
    return config::kExitBadConfig;
  } catch (const std::exception& e) {
    log::Error("start-up failed", {{"error", e.what()}});
    return kExitStartupFailure;
  }
  log::Info("service started", {{"name", options.name},
                                {"id", service->id()},
                                {"version", options.version},
                                {"nats", cfg.String("nats-url")}});

  int received = 0;
  sigwait(&signals, &received);
  const auto drain_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(cfg.Duration("drain-timeout"));
  log::Info("draining", {{"signal", received == SIGTERM ? "SIGTERM" : "SIGINT"}});
  service->Stop(drain_timeout);
  for (auto& fn : on_shutdown) fn();
  service.reset();
  log::Info("stopped");
  log::RemoveSink(shipper_sink);
  shipper_sink.reset();
  shipper.reset();  // flushes what is queued
  connection->DrainAndClose(std::chrono::seconds(5));
  if (loop) loop->Stop();
  return 0;
}

}  // namespace muon
