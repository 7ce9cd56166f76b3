#include "app.h"
#include "muon/common/service_main.h"

int main(int argc, char** argv) {
  muon::config::Spec spec("muon-ingress",
                          "The global proxy: HTTP(S) API in front of every service on the bus.");
  muon::ingress::AddIngressOptions(spec);
  std::unique_ptr<muon::ingress::IngressApp> app;
  return muon::RunService(argc, argv, spec,
                          {.name = "ingress",
                           .kind = muon::ServiceKind::kPlatform,
                           .version = "0.1.0",
                           .description = "HTTP(S) proxy: /v1/<service>/<Method> to the bus"},
                          [&app](muon::ServiceContext& ctx) {
                            app = std::make_unique<muon::ingress::IngressApp>(ctx.config, ctx.bus);
                            const auto drain =
                                std::chrono::duration_cast<std::chrono::milliseconds>(
                                    ctx.config.Duration("drain-timeout"));
                            ctx.on_shutdown.push_back([&app, drain] {
                              app->Drain(drain);
                              app.reset();  // before RunService closes the bus the app still uses
                            });
                          });
}
