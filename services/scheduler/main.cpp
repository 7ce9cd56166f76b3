// muon-scheduler: wiring only. The API and event intake are in scheduler_service.cpp, the
// controller in controller.cpp (decisions in planner.cpp), the node runtime in node_agent.cpp
// (processes in process_driver.cpp), SQL in store.cpp and node_store.cpp.
#include <memory>

#include "muon/common/service_main.h"
#include "scheduler_service.h"

int main(int argc, char** argv) {
  muon::config::Spec spec("muon-scheduler",
                          "Muon's scheduler: releases, rolling updates, and (as a node) the "
                          "instances that serve them.");
  muon::scheduler::AddOptions(spec);
  const std::string mode = muon::scheduler::ModeFromArgs(argc, argv);
  std::unique_ptr<muon::scheduler::SchedulerApp> app;
  return muon::RunService(argc, argv, spec, muon::scheduler::DefaultServiceOptions(mode),
                          [&app](muon::ServiceContext& ctx) {
                            app = std::make_unique<muon::scheduler::SchedulerApp>(
                                muon::scheduler::OptionsFromConfig(ctx.config), ctx.bus);
                            app->Register(ctx.service);
                            app->Start();
                            ctx.on_shutdown.push_back([&app] { app->Stop(); });
                          });
}
