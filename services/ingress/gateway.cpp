#include "gateway.h"

#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/util/json_util.h>

#include "log_tail.h"
#include "muon/auth/v1/auth.pb.h"
#include "muon/builder/v1/builder.pb.h"
#include "muon/common/errors.h"
#include "muon/common/log.h"
#include "muon/common/log_lines.h"
#include "muon/common/proto_registry.h"
#include "muon/common/service.h"
#include "muon/github_events/v1/github_events.pb.h"
#include "muon/scheduler/v1/scheduler.pb.h"

namespace muon::ingress {
namespace http = boost::beast::http;
using Clock = std::chrono::steady_clock;

namespace {

const google::protobuf::MethodDescriptor* FindPlatformMethod(const std::string& service,
                                                             const std::string& method) {
  // Touch one message of every platform service's proto so its descriptors are linked in and
  // registered; the lookup itself goes by the proto layout rule.
  static const bool linked = [] {
    (void)auth::v1::LoginRequest::descriptor();
    (void)builder::v1::Build::descriptor();
    (void)github_events::v1::Repo::descriptor();
    (void)logs::v1::QueryRequest::descriptor();
    (void)scheduler::v1::StatusRequest::descriptor();
    return true;
  }();
  (void)linked;
  return proto::FindMethod(service, method);
}

std::unique_ptr<google::protobuf::Message> NewMessage(const google::protobuf::Descriptor* type) {
  const auto* prototype = google::protobuf::MessageFactory::generated_factory()->GetPrototype(type);
  return std::unique_ptr<google::protobuf::Message>(prototype->New());
}

std::string_view HeaderOr(const Request& request, std::string_view name,
                          std::string_view fallback) {
  auto it = request.find(boost::beast::string_view(name.data(), name.size()));
  if (it == request.end()) return fallback;
  return std::string_view(it->value().data(), it->value().size());
}

}  // namespace

std::string WebhookPayload(Request& request) {
  github_events::v1::WebhookRequest webhook;
  auto& headers = *webhook.mutable_headers();
  for (const auto& field : request) {
    std::string name(field.name_string());
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    std::string& value = headers[name];
    // A repeated header keeps all its values, as HTTP allows combining them.
    if (!value.empty()) value += ", ";
    value += std::string(field.value());
  }
  webhook.set_body(std::move(request.body()));
  return webhook.SerializeAsString();
}

bool IsPlatformService(std::string_view service) {
  static const std::set<std::string_view> kPlatform = {"auth",    "builder", "scheduler",
                                                       "ingress", "logs",    "github-events"};
  return kPlatform.contains(service);
}

struct Gateway::Call {
  Request request;
  ClientInfo client;
  size_t worker = 0;
  Respond respond;
  Stream stream;
  Route route;
  std::string request_id;
  std::string traceparent;
  std::string error_id;  // "<service>.<Method>" or "ingress"
  Clock::time_point start;
  const google::protobuf::MethodDescriptor* method = nullptr;  // platform calls
  bool json_request = false;
  std::chrono::milliseconds timeout{0};
};

Gateway::Gateway(GatewayOptions options, std::vector<WorkerBus>& buses, bus::Connection& stream_bus,
                 token::Verifier& verifier, rules::RuleCache& rules, Catalog& catalog,
                 metrics::Registry& metrics)
    : options_(std::move(options)),
      metrics_(metrics),
      buses_(buses),
      stream_bus_(stream_bus),
      verifier_(verifier),
      rules_(rules),
      catalog_(catalog),
      limiter_(options_.rate_limit_per_second, options_.rate_limit_burst),
      requests_(metrics.Counter("muon_ingress_requests_total", "HTTP requests by route and status",
                                {"route", "status"})),
      latency_(metrics.Histogram("muon_ingress_request_duration_seconds",
                                 "HTTP request latency by route", {"route"})),
      in_flight_(
          metrics.Gauge("muon_ingress_in_flight_requests", "requests being handled").With({})),
      bus_errors_(metrics.Counter("muon_ingress_bus_errors_total",
                                  "bus failures: timeout, no_responders, unavailable", {"kind"})) {}

Response Gateway::Refused(unsigned status, const std::string& detail) {
  Call call;
  call.error_id = "ingress";
  call.request_id = NewRequestId();
  call.traceparent = NextTraceparent("");
  requests_.With({"refused", std::to_string(status)}).Inc();
  return ErrorResponse(call, static_cast<int>(status), detail);
}

Response Gateway::ErrorResponse(const Call& call, int code, const std::string& detail) const {
  Response response{static_cast<http::status>(code), 11};
  response.set(http::field::content_type, "application/json");
  response.set("Muon-Request-Id", call.request_id);
  response.set("traceparent", call.traceparent);
  Error error(code, detail);
  response.body() = ErrorJson(ToProto(error, call.error_id));
  return response;
}

void Gateway::Finish(Call& call, Response response) {
  response.set("Muon-Request-Id", call.request_id);
  response.set("traceparent", call.traceparent);
  const double seconds = std::chrono::duration<double>(Clock::now() - call.start).count();
  requests_.With({call.route.label, std::to_string(response.result_int())}).Inc();
  latency_.With({call.route.label}).Observe(seconds);
  in_flight_.Add(-1);
  call.respond(std::move(response));
}

bool Gateway::Ready(std::string& why) const {
  for (const auto& bus : buses_) {
    if (!bus.connection->IsConnected()) {
      why = "not connected to NATS";
      return false;
    }
  }
  if (!verifier_.Ready()) {
    why = "signing keys not loaded from auth yet";
    return false;
  }
  if (!rules_.Ready()) {
    why = "access rules not loaded from auth yet";
    return false;
  }
  return true;
}

void Gateway::Handle(Request request, const ClientInfo& client, size_t worker, Respond respond,
                     Stream stream) {
  auto call = std::make_shared<Call>();
  call->start = Clock::now();
  in_flight_.Add(1);
  const std::string_view incoming_id = HeaderOr(request, "Muon-Request-Id", "");
  call->request_id = IsAcceptableRequestId(incoming_id) ? std::string(incoming_id) : NewRequestId();
  call->traceparent = NextTraceparent(HeaderOr(request, "traceparent", ""));
  call->client = client;
  call->worker = worker;
  call->respond = std::move(respond);
  call->stream = std::move(stream);
  call->route =
      ParseRoute(std::string_view(request.method_string().data(), request.method_string().size()),
                 std::string_view(request.target().data(), request.target().size()));
  call->request = std::move(request);
  call->error_id =
      call->route.service.empty() ? "ingress" : call->route.service + "." + call->route.method;

  switch (call->route.kind) {
    case RouteKind::kHealth: {
      Response response{http::status::ok, 11};
      response.set(http::field::content_type, "application/json");
      response.body() = R"({"status":"ok"})";
      return Finish(*call, std::move(response));
    }
    case RouteKind::kReady: {
      std::string why;
      if (!Ready(why)) return Finish(*call, ErrorResponse(*call, 503, why));
      Response response{http::status::ok, 11};
      response.set(http::field::content_type, "application/json");
      response.body() = R"({"status":"ready"})";
      return Finish(*call, std::move(response));
    }
    case RouteKind::kMetrics: {
      Response response{http::status::ok, 11};
      response.set(http::field::content_type, "text/plain; version=0.0.4");
      response.body() = metrics_.Render();
      return Finish(*call, std::move(response));
    }
    default:
      break;
  }
  HandleCall(std::move(call));
}

void Gateway::HandleCall(std::shared_ptr<Call> call) {
  Call& c = *call;
  const Request& request = c.request;
  switch (c.route.kind) {
    case RouteKind::kNotFound:
      return Finish(c, ErrorResponse(c, 404,
                                     fmt::format("no route for {} {}; calls are POST "
                                                 "/v1/<service>/<Method>",
                                                 std::string(request.method_string()),
                                                 std::string(request.target()))));
    case RouteKind::kMethodNotAllowed:
      return Finish(c, ErrorResponse(c, 405,
                                     fmt::format("{} is not allowed on {}",
                                                 std::string(request.method_string()),
                                                 std::string(request.target()))));
    case RouteKind::kBadName:
      return Finish(c, ErrorResponse(c, 400,
                                     "service and method names are 1-64 letters, digits, '-' "
                                     "and '_'"));
    case RouteKind::kKeys:
      // Public, and the same thing as POST /v1/auth/Keys.
      c.route.service = "auth";
      c.route.method = "Keys";
      c.error_id = "auth.Keys";
      break;
    default:
      break;
  }

  // Who is calling: a bearer token verified here (signature, exp, known kid of any region).
  rules::Caller caller;
  std::string client_key = "ip:" + c.client.address;
  std::string email;
  const std::string_view authorization = HeaderOr(request, "Authorization", "");
  if (!authorization.empty()) {
    auto bearer = token::BearerToken(authorization);
    if (!bearer) {
      return Finish(c, ErrorResponse(c, 401, "the Authorization header must be 'Bearer <token>'"));
    }
    auth::v1::Claims claims;
    if (auto ec = verifier_.Verify(*bearer, claims); ec) {
      // A stale token does not stop a call that is public anyway (Login, Refresh, Keys).
      if (c.route.kind == RouteKind::kServices ||
          rules_.Evaluate(rules::Caller{}, c.route.service, c.route.method) ==
              rules::Decision::kDeny) {
        return Finish(c, ErrorResponse(c, 401, fmt::format("{}; log in again", ec.message())));
      }
    } else {
      caller.authenticated = true;
      caller.roles.assign(claims.roles().begin(), claims.roles().end());
      client_key = "sub:" + claims.sub();
      email = claims.email();
    }
  }

  if (c.route.kind == RouteKind::kServices) {
    if (!caller.authenticated) {
      return Finish(c, ErrorResponse(c, 401, "sign in first: listing services needs a token"));
    }
    Response response{http::status::ok, 11};
    response.set(http::field::content_type, "application/json");
    response.body() = CatalogJson(*catalog_.Snapshot());
    return Finish(c, std::move(response));
  }

  if (rules_.Evaluate(caller, c.route.service, c.route.method) == rules::Decision::kDeny) {
    if (!caller.authenticated) {
      return Finish(
          c, ErrorResponse(c, 401, fmt::format("sign in first: {} needs a token", c.error_id)));
    }
    return Finish(c, ErrorResponse(c, 403, fmt::format("{} may not call {}", email, c.error_id)));
  }
  if (!limiter_.Allow(client_key)) {
    return Finish(c, ErrorResponse(c, 429,
                                   fmt::format("rate limit of {:g} requests/s exceeded; slow down",
                                               options_.rate_limit_per_second)));
  }

  try {
    c.timeout = ParseTimeoutHeader(HeaderOr(request, "Muon-Timeout", ""), options_.max_timeout)
                    .value_or(options_.default_timeout);
  } catch (const std::invalid_argument& e) {
    return Finish(c, ErrorResponse(c, 400, e.what()));
  }

  // The bus headers are built here, never copied from the HTTP request: a client cannot choose
  // its Muon-Client-Address (auth throttles logins by it), nor any other platform header.
  bus::Headers headers;
  headers.reserve(5);
  if (!authorization.empty()) headers.emplace_back(bus::kHeaderAuthorization, authorization);
  headers.emplace_back(bus::kHeaderRequestId, c.request_id);
  headers.emplace_back(bus::kHeaderTraceparent, c.traceparent);
  headers.emplace_back(bus::kHeaderClientAddress, c.client.address);

  if (c.route.kind == RouteKind::kLogTail) {
    return StartLogTail(std::move(call), caller, email, std::move(headers));
  }

  std::string subject;
  std::string payload;
  if (IsPlatformService(c.route.service)) {
    c.method = FindPlatformMethod(c.route.service, c.route.method);
    if (c.method == nullptr) {
      return Finish(
          c,
          ErrorResponse(c, 404,
                        proto::FindService(c.route.service) == nullptr
                            ? fmt::format("service {} has no HTTP API yet", c.route.service)
                            : fmt::format("{} has no method {}", c.route.service, c.route.method)));
    }
    if (c.route.kind == RouteKind::kWebhook) {
      payload = WebhookPayload(c.request);
      subject = PlatformSubject(c.route.service, c.route.method);
    } else {
      auto input = NewMessage(c.method->input_type());
      const std::string_view body =
          request.body().empty() ? std::string_view("{}") : std::string_view(request.body());
      google::protobuf::util::JsonParseOptions parse;
      parse.ignore_unknown_fields = false;
      auto status = google::protobuf::util::JsonStringToMessage(
          google::protobuf::StringPiece(body.data(), body.size()), input.get(), parse);
      if (!status.ok()) {
        return Finish(c, ErrorResponse(c, 400,
                                       fmt::format("request body is not valid JSON for {}: {}",
                                                   c.method->input_type()->full_name(),
                                                   status.message().as_string())));
      }
      payload = input->SerializeAsString();
      subject = PlatformSubject(c.route.service, c.route.method);
    }
  } else {
    const std::string_view content_type = HeaderOr(request, "Content-Type", "");
    if (!content_type.empty()) headers.emplace_back(bus::kHeaderContentType, content_type);
    c.json_request = content_type.substr(0, bus::kContentTypeJson.size()) == bus::kContentTypeJson;
    const std::string_view version = HeaderOr(request, "Muon-Version", "");
    if (!version.empty()) {
      if (!IsValidReleaseLabel(version)) {
        return Finish(c, ErrorResponse(c, 400,
                                       "Muon-Version must be a release label such as v3 or a "
                                       "branch slug"));
      }
      subject = VersionSubject(c.route.service, version, c.route.method);
    } else {
      subject = UserSubject(c.route.service, c.route.method);
    }
    payload = std::move(c.request.body());
  }

  buses_[c.worker].requester->Request(
      subject, payload, headers, c.timeout,
      [this, call = std::move(call)](std::error_code ec, bus::Msg reply) {
        Finish(*call, FromReply(*call, ec, std::move(reply)));
      });
}

void Gateway::StartLogTail(std::shared_ptr<Call> call, const rules::Caller& caller,
                           const std::string& email, bus::Headers headers) {
  Call& c = *call;
  TailRequest tail;
  try {
    tail = ParseTailRequest(std::string_view(c.request.target().data(), c.request.target().size()));
  } catch (const Error& e) {
    return Finish(c, ErrorResponse(c, e.code(), e.detail()));
  }
  // Reading one service's logs is a rule of its own (logs.Read.<service>).
  if (rules_.Evaluate(caller, "logs", loglines::ReadEndpoint(tail.filter.service())) ==
      rules::Decision::kDeny) {
    return Finish(c, ErrorResponse(c, 403,
                                   tail.filter.service().empty()
                                       ? fmt::format("{} may not read every service's logs; name "
                                                     "a service",
                                                     email)
                                       : fmt::format("{} may not read the logs of {}", email,
                                                     tail.filter.service())));
  }
  logs::v1::QueryRequest query;
  *query.mutable_filter() = tail.filter;
  query.set_limit(std::max(tail.backlog, 1));
  query.set_want_watermark(true);
  c.method = FindPlatformMethod("logs", "Query");
  c.error_id = "logs.Tail";
  buses_[c.worker].requester->Request(
      PlatformSubject("logs", "Query"), query.SerializeAsString(), headers, c.timeout,
      [this, call = std::move(call), tail = std::move(tail)](std::error_code ec,
                                                             bus::Msg reply) mutable {
        Call& c = *call;
        logs::v1::QueryResponse history;
        if (ec || reply.Header(bus::kHeaderServiceErrorCode) ||
            !history.ParseFromArray(reply.data().data(), static_cast<int>(reply.data().size()))) {
          return Finish(c, FromReply(c, ec, std::move(reply)));
        }
        if (tail.backlog == 0) history.clear_lines();
        Response head{http::status::ok, 11};
        head.set(http::field::content_type, "text/event-stream");
        head.set(http::field::cache_control, "no-cache");
        head.set("Muon-Request-Id", c.request_id);
        head.set("traceparent", c.traceparent);
        requests_.With({c.route.label, "200"}).Inc();
        in_flight_.Add(-1);
        auto out = c.stream(std::move(head));
        auto& io = out->io();
        auto log_tail = std::make_shared<LogTail>(std::move(tail), stream_bus_, io, out);
        // Start on the worker thread: the tail's timer lives there.
        boost::asio::post(io, [log_tail, history = std::move(history), out] {
          if (auto start_ec = log_tail->Start(history)) {
            out->Send(fmt::format(
                "event: error\ndata: {{\"detail\":\"cannot follow the log stream: {}\"}}\n\n",
                start_ec.message()));
            out->End();
          }
        });
      });
}

Response Gateway::FromReply(Call& c, std::error_code ec, bus::Msg reply) {
  if (ec == bus::BusErrc::kNoResponders) {
    bus_errors_.With({"no_responders"}).Inc();
    if (!IsPlatformService(c.route.service)) {
      const auto snapshot = catalog_.Snapshot();
      const auto it = snapshot->services.find(c.route.service);
      if (it == snapshot->services.end()) {
        return ErrorResponse(c, 404,
                             fmt::format("no service named {} is running", c.route.service));
      }
      if (!it->second.methods.contains(c.route.method)) {
        return ErrorResponse(
            c, 404, fmt::format("service {} has no method {}", c.route.service, c.route.method));
      }
    }
    return ErrorResponse(
        c, 503, fmt::format("no instance of {} is answering; try again shortly", c.route.service));
  }
  if (ec == bus::BusErrc::kTimeout) {
    bus_errors_.With({"timeout"}).Inc();
    return ErrorResponse(
        c, 504, fmt::format("{} did not answer within {}ms", c.error_id, c.timeout.count()));
  }
  if (ec == bus::BusErrc::kPayloadTooLarge) {
    return ErrorResponse(c, 413, "request body is over the bus's maximum message size");
  }
  if (ec) {
    bus_errors_.With({"unavailable"}).Inc();
    return ErrorResponse(c, 503, fmt::format("the bus is unavailable: {}", ec.message()));
  }

  const auto reply_type = reply.Header(bus::kHeaderContentType);
  if (auto code_text = reply.Header(bus::kHeaderServiceErrorCode)) {
    int code = 500;
    try {
      code = std::stoi(std::string(*code_text));
    } catch (const std::exception&) {
    }
    if (code < 400 || code > 599) code = 500;
    common::v1::Error error;
    if (reply_type &&
        reply_type->substr(0, bus::kContentTypeJson.size()) == bus::kContentTypeJson) {
      Response response{static_cast<http::status>(code), 11};
      response.set(http::field::content_type, "application/json");
      response.body() = std::string(reply.data());
      return response;
    }
    if (error.ParseFromArray(reply.data().data(), static_cast<int>(reply.data().size())) &&
        !error.id().empty()) {
      Response response{static_cast<http::status>(code), 11};
      response.set(http::field::content_type, "application/json");
      error.set_code(code);
      error.set_status(std::string(StatusText(code)));
      response.body() = ErrorJson(error);
      return response;
    }
    return ErrorResponse(c, code, std::string(reply.Header(bus::kHeaderServiceError).value_or("")));
  }

  Response response{http::status::ok, 11};
  if (c.method != nullptr) {
    auto output = NewMessage(c.method->output_type());
    std::string json;
    google::protobuf::util::JsonPrintOptions print;
    print.always_print_primitive_fields = true;
    if (!output->ParseFromArray(reply.data().data(), static_cast<int>(reply.data().size())) ||
        !google::protobuf::util::MessageToJsonString(*output, &json, print).ok()) {
      return ErrorResponse(c, 502,
                           fmt::format("{} answered with something that is not a {}", c.error_id,
                                       c.method->output_type()->full_name()));
    }
    response.set(http::field::content_type, "application/json");
    response.body() = std::move(json);
    return response;
  }
  response.set(
      http::field::content_type,
      reply_type ? std::string(*reply_type)
                 : std::string(c.json_request ? bus::kContentTypeJson : bus::kContentTypeProtobuf));
  response.body() = std::string(reply.data());
  return response;
}

}  // namespace muon::ingress
