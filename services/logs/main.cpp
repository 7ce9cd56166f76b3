// muon-logs: wiring only. Ingest and queries are in logs_service.cpp, SQL in store.cpp.
#include <memory>

#include "logs_service.h"
#include "muon/common/service_main.h"

int main(int argc, char** argv) {
  muon::config::Spec spec("muon-logs",
                          "Muon's logs service: stores the log stream in PostgreSQL, answers "
                          "history queries.");
  muon::logs::AddOptions(spec);
  // Declared outside RunService so it outlives the Service that calls into it.
  std::unique_ptr<muon::logs::LogsApp> app;
  return muon::RunService(argc, argv, spec, muon::logs::DefaultServiceOptions(),
                          [&app](muon::ServiceContext& ctx) {
                            app = std::make_unique<muon::logs::LogsApp>(
                                muon::logs::OptionsFromConfig(ctx.config), ctx.bus);
                            app->Register(ctx.service);
                            app->Start();
                            ctx.on_shutdown.push_back([&app] { app->Stop(); });
                          });
}
