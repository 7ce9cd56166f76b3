// muon-github-events: wiring only. Handlers are in github_events_service.cpp, SQL in store.cpp,
// webhook parsing and signatures in webhook.cpp.
#include <memory>

#include "github_events_service.h"
#include "muon/common/service_main.h"

int main(int argc, char** argv) {
  muon::config::Spec spec("muon-github-events",
                          "Muon's GitHub webhook intake: registered repositories, verified and "
                          "recorded deliveries.");
  muon::github_events::AddOptions(spec);
  std::unique_ptr<muon::github_events::GithubEventsApp> app;
  return muon::RunService(argc, argv, spec, muon::github_events::DefaultServiceOptions(),
                          [&app](muon::ServiceContext& ctx) {
                            app = std::make_unique<muon::github_events::GithubEventsApp>(
                                muon::github_events::OptionsFromConfig(ctx.config));
                            app->Register(ctx.service, ctx.bus);
                            app->StartProcessing(ctx.bus);
                            ctx.on_shutdown.push_back([&app] { app->StopProcessing(); });
                          });
}
