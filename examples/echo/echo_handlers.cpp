#include "echo_handlers.h"

#include <fmt/format.h>

#include <thread>

#include "muon/common/log.h"
#include "muon/echo/v1/echo.pb.h"

namespace muon::echo {

void RegisterEndpoints(Service& service, const EchoSettings& settings) {
  const std::string instance = service.id();
  service.AddEndpoint<v1::EchoRequest, v1::EchoResponse>(
      "Echo",
      [instance](const v1::EchoRequest& request, RequestContext&) {
        v1::EchoResponse response;
        response.set_message(request.message());
        response.set_instance(instance);
        return response;
      },
      {.non_blocking = true});
  service.AddEndpoint<v1::SleepRequest, v1::SleepResponse>(
      "Sleep", [instance, settings](const v1::SleepRequest& request, RequestContext& ctx) {
        const std::chrono::milliseconds duration(request.milliseconds());
        if (duration > settings.max_sleep) {
          throw Error::BadRequest(
              fmt::format("milliseconds must be at most {}", settings.max_sleep.count()));
        }
        log::Info("sleep started",
                  {{"milliseconds", duration.count()}, {"request_id", ctx.request_id()}});
        std::this_thread::sleep_for(duration);
        v1::SleepResponse response;
        response.set_slept_milliseconds(request.milliseconds());
        response.set_instance(instance);
        return response;
      });
}

}  // namespace muon::echo
