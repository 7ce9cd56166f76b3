#include "echo_handlers.h"
#include "muon/common/service_main.h"

int main(int argc, char** argv) {
  muon::config::Spec spec("muon-echo", "The Muon example service: Echo and Sleep.");
  spec.Duration("max-sleep", "ECHO_MAX_SLEEP", "60s", "longest Sleep a caller may ask for");
  return muon::RunService(
      argc, argv, spec, muon::echo::DefaultOptions(), [](muon::ServiceContext& ctx) {
        muon::echo::EchoSettings settings;
        settings.max_sleep =
            std::chrono::duration_cast<std::chrono::milliseconds>(ctx.config.Duration("max-sleep"));
        muon::echo::RegisterEndpoints(ctx.service, settings);
      });
}
