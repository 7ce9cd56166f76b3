// muon-auth: wiring only. The service logic is in auth_service.cpp, SQL in store.cpp.
#include <memory>

#include "auth_service.h"
#include "muon/common/service_main.h"

int main(int argc, char** argv) {
  muon::config::Spec spec("muon-auth",
                          "Muon's auth service: accounts, tokens, signing keys, access rules.");
  muon::auth::AddOptions(spec);
  // Declared outside RunService so it outlives the Service that calls into it.
  std::unique_ptr<muon::auth::AuthApp> app;
  return muon::RunService(
      argc, argv, spec, muon::auth::DefaultServiceOptions(), [&app](muon::ServiceContext& ctx) {
        app = std::make_unique<muon::auth::AuthApp>(muon::auth::AppOptionsFromConfig(ctx.config));
        app->Register(ctx.service);
      });
}
