#pragma once
// The service framework: a service declares typed endpoints and gets queue-group subscriptions,
// Protobuf (or proto3 JSON) decoding and encoding, one conversion of errors into the platform's
// error shape, per-endpoint stats, and the NATS service API ($SRV.PING|INFO|STATS, ADR-32).
//
//   muon::Service service(connection, {.name = "auth", .kind = muon::ServiceKind::kPlatform});
//   service.AddEndpoint<LoginRequest, LoginResponse>("Login", [&](const auto& req, auto& ctx) {
//     ...; throw muon::Error::Unauthorized("wrong email or password");
//   });
//   service.Start();
//
// Subjects: platform services answer muon.rpc.<service>.<Method> (queue group <service>); user
// services answer svc.<service>.<Method> (queue group <service>) and, when a release label is set,
// ver.<service>.<release>.<Method> (queue group <service>.<release>). A preview instance (a
// branch's preview version) answers only ver.<service>.<release>.<Method>: it takes no live
// traffic.

#include <google/protobuf/message.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "muon/auth/v1/auth.pb.h"
#include "muon/common/bus.h"
#include "muon/common/bus_loop.h"
#include "muon/common/errors.h"
#include "muon/common/json_writer.h"

namespace muon {

enum class ServiceKind { kPlatform, kUser };

std::string PlatformSubject(std::string_view service, std::string_view method);
std::string UserSubject(std::string_view service, std::string_view method);
std::string VersionSubject(std::string_view service, std::string_view release,
                           std::string_view method);

// ADR-32: names are A-Z, a-z, 0-9, dash, underscore; versions are SemVer 2.0.0.
bool IsValidServiceName(std::string_view name);
bool IsValidSemver(std::string_view version);
// A release label usable as one subject token (e.g. "v3", "feature-login").
bool IsValidReleaseLabel(std::string_view label);
// A GitHub repository as "owner/name": one '/', each side 1-100 of A-Z a-z 0-9 . _ - and neither
// "." nor "..". The CLI checks it before sending; github-events checks it again.
bool IsValidRepoName(std::string_view name);

struct ServiceOptions {
  std::string name;
  ServiceKind kind = ServiceKind::kPlatform;
  std::string version = "0.1.0";  // SemVer of the code, reported by $SRV
  std::string description;
  std::map<std::string, std::string> metadata;
  std::string instance_id;  // generated when empty
  std::string release;      // user services: also serve ver.<name>.<release>.* when set
  // User services: serve only ver.<name>.<release>.*, not svc.<name>.* (a preview version must
  // not take live traffic). Needs a release label.
  bool preview = false;
  // Queue subscriptions (each with its own delivery thread) per endpoint subject: how many
  // requests of one endpoint this process handles at once.
  int concurrency = 1;
  // RunService drives the bus connection from an event loop of its own (bus_loop.h), so the
  // endpoints declared non_blocking run on that loop's thread as each request is read: no
  // thread hand-off, and the replies of one read leave in one write. Other endpoints keep their
  // delivery threads.
  bool bus_event_loop = false;
};

struct EndpointOptions {
  // The handler never blocks (no I/O, no locks held long, no bus requests): it may run on the
  // connection's event loop thread when the connection has one. A blocking handler there would
  // stall every request of the process.
  bool non_blocking = false;
};

class RequestContext {
 public:
  RequestContext(const bus::Msg& msg, std::string_view endpoint_id, bool json)
      : msg_(msg), endpoint_id_(endpoint_id), json_(json) {}
  std::optional<std::string_view> Header(const char* key) const { return msg_.Header(key); }
  std::string_view authorization() const {
    return msg_.Header(bus::kHeaderAuthorization).value_or("");
  }
  std::string_view request_id() const { return msg_.Header(bus::kHeaderRequestId).value_or(""); }
  std::string_view endpoint_id() const { return endpoint_id_; }  // "<service>.<Method>"
  bool json() const { return json_; }
  const bus::Msg& msg() const { return msg_; }
  std::string_view service() const { return endpoint_id_.substr(0, endpoint_id_.find('.')); }
  std::string_view method() const { return endpoint_id_.substr(endpoint_id_.find('.') + 1); }

  // The verified caller, set by the service's authorizer (nullptr for anonymous callers).
  const auth::v1::Claims* claims() const { return claims_ ? &*claims_ : nullptr; }
  void set_claims(auth::v1::Claims claims) { claims_ = std::move(claims); }

 private:
  const bus::Msg& msg_;
  std::string_view endpoint_id_;
  bool json_;
  std::optional<auth::v1::Claims> claims_;
};

struct EndpointStats {
  std::string name;
  std::string subject;
  std::string queue_group;
  int64_t num_requests = 0;
  int64_t num_errors = 0;
  std::string last_error;  // "<code>:<text>", empty when none
  int64_t processing_time_ns = 0;
  // ADR-32: processing_time / num_requests truncated; 0 when there were no requests.
  int64_t AverageProcessingTimeNs() const {
    return num_requests == 0 ? 0 : processing_time_ns / num_requests;
  }
};

// Decoding helpers shared by the framework and clients. Throw muon::Error(400) on bad input.
void DecodeMessage(std::string_view body, bool json, google::protobuf::Message& out);
std::string EncodeMessage(const google::protobuf::Message& message, bool json);

class Service {
 public:
  // Throws std::invalid_argument on an invalid name, version or release label.
  Service(bus::Connection& connection, ServiceOptions options);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Declares an endpoint; call before Start(). The handler runs on a subscription thread; it
  // returns the response or throws muon::Error (anything else becomes a 500 whose text is logged,
  // not sent).
  template <typename Req, typename Resp>
  void AddEndpoint(std::string method, std::function<Resp(const Req&, RequestContext&)> handler,
                   EndpointOptions endpoint_options = {}) {
    AddRawEndpoint(
        std::move(method),
        [h = std::move(handler)](std::string_view body, RequestContext& ctx) {
          Req request;
          DecodeMessage(body, ctx.json(), request);
          Resp response = h(request, ctx);
          return EncodeMessage(response, ctx.json());
        },
        endpoint_options);
  }

  using RawHandler = std::function<std::string(std::string_view body, RequestContext& ctx)>;
  void AddRawEndpoint(std::string method, RawHandler handler,
                      EndpointOptions endpoint_options = {});

  // Runs before every handler (call before Start()); throws muon::Error (401/403) to refuse the
  // request. Platform services install token verification and rule checks here (authz.h).
  using Authorizer = std::function<void(RequestContext& ctx)>;
  void SetAuthorizer(Authorizer authorizer) { authorizer_ = std::move(authorizer); }

  void Start();
  // Stops taking requests on every endpoint at once, waits for in-flight ones to finish (up to
  // the timeout), then stops answering $SRV. Idempotent.
  void Stop(std::chrono::milliseconds timeout);

  const std::string& name() const { return options_.name; }
  const std::string& id() const { return options_.instance_id; }
  std::vector<EndpointStats> Stats() const;
  void ResetStats();

  std::string PingJson() const;
  std::string InfoJson() const;
  std::string StatsJson() const;

 private:
  struct Endpoint;
  void Handle(Endpoint& endpoint, bus::Msg& msg);
  void HandleDiscovery(bus::Msg& msg);
  void AppendStandardFields(JsonWriter& w, std::string_view type) const;

  bus::Connection& connection_;
  ServiceOptions options_;
  std::chrono::system_clock::time_point started_;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
  std::vector<bus::Subscription> discovery_subscriptions_;
  std::atomic<bool> running_{false};
  Authorizer authorizer_;
};

// Client side of the framework: sends `request` to `subject` and decodes the reply into
// `response`. Throws muon::Error: the service's own error (code and detail from its reply),
// 503 when nobody serves the subject, 504 on timeout.
void Call(bus::Connection& connection, std::string_view subject,
          const google::protobuf::Message& request, google::protobuf::Message& response,
          std::chrono::milliseconds timeout, const bus::Headers& headers = {});

}  // namespace muon
