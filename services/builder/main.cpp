// muon-builder: wiring only. Handlers and the build itself are in builder_service.cpp, the queue's
// SQL in build_store.cpp, git in git_mirror.cpp, steps in step_runner.cpp, artifacts in
// artifact.cpp and artifact_store.cpp, the manifest in manifest.cpp.
#include <memory>

#include "builder_service.h"
#include "muon/common/service_main.h"

int main(int argc, char** argv) {
  muon::config::Spec spec("muon-builder",
                          "Muon's builder: builds the services a push changed into "
                          "content-addressed artifacts.");
  muon::builder::AddOptions(spec);
  std::unique_ptr<muon::builder::BuilderApp> app;
  return muon::RunService(argc, argv, spec, muon::builder::DefaultServiceOptions(),
                          [&app](muon::ServiceContext& ctx) {
                            app = std::make_unique<muon::builder::BuilderApp>(
                                muon::builder::OptionsFromConfig(ctx.config), ctx.bus);
                            app->Register(ctx.service);
                            app->Start();
                            ctx.on_shutdown.push_back([&app] { app->Stop(); });
                          });
}
