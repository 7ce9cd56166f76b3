#include "muon/common/service.h"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>

#include <random>
#include <regex>

#include "muon/common/log.h"

namespace muon {
namespace {

constexpr std::string_view kPingType = "io.nats.micro.v1.ping_response";
constexpr std::string_view kInfoType = "io.nats.micro.v1.info_response";
constexpr std::string_view kStatsType = "io.nats.micro.v1.stats_response";

std::string GenerateInstanceId() {
  // Same alphabet and length as a NATS NUID: 22 base62 characters.
  static constexpr char kAlphabet[] =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::random_device device;
  std::mt19937_64 rng((static_cast<uint64_t>(device()) << 32) ^ device());
  std::uniform_int_distribution<int> pick(0, 61);
  std::string id(22, '0');
  for (auto& c : id) c = kAlphabet[pick(rng)];
  return id;
}

bool IsJson(const bus::Msg& msg) {
  auto content_type = msg.Header(bus::kHeaderContentType);
  if (!content_type) return false;
  // "application/json; charset=utf-8" counts too.
  return content_type->substr(0, bus::kContentTypeJson.size()) == bus::kContentTypeJson;
}

std::string Rfc3339(std::chrono::system_clock::time_point t) {
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count() % 1000000;
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:06}Z",
                     fmt::gmtime(std::chrono::system_clock::to_time_t(t)), micros);
}

void WriteMetadata(JsonWriter& w, const std::map<std::string, std::string>& metadata) {
  w.Key("metadata").BeginObject();
  for (const auto& [k, v] : metadata) w.Key(k).String(v);
  w.EndObject();
}

}  // namespace

std::string PlatformSubject(std::string_view service, std::string_view method) {
  return fmt::format("muon.rpc.{}.{}", service, method);
}
std::string UserSubject(std::string_view service, std::string_view method) {
  return fmt::format("svc.{}.{}", service, method);
}
std::string VersionSubject(std::string_view service, std::string_view release,
                           std::string_view method) {
  return fmt::format("ver.{}.{}.{}", service, release, method);
}

bool IsValidServiceName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  }
  return true;
}

bool IsValidRepoName(std::string_view name) {
  auto part_ok = [](std::string_view part) {
    return !part.empty() && part.size() <= 100 && part != "." && part != ".." &&
           std::all_of(part.begin(), part.end(), [](char c) {
             return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
           });
  };
  const size_t slash = name.find('/');
  return slash != std::string_view::npos && part_ok(name.substr(0, slash)) &&
         part_ok(name.substr(slash + 1));
}

bool IsValidSemver(std::string_view version) {
  // The official SemVer 2.0.0 regular expression (semver.org).
  static const std::regex kSemver(
      R"(^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$)");
  return std::regex_match(version.begin(), version.end(), kSemver);
}

bool IsValidReleaseLabel(std::string_view label) {
  return IsValidServiceName(label);
}

void DecodeMessage(std::string_view body, bool json, google::protobuf::Message& out) {
  if (json) {
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    auto status = google::protobuf::util::JsonStringToMessage(
        google::protobuf::StringPiece(body.data(), body.size()), &out, options);
    if (!status.ok()) {
      throw Error::BadRequest(fmt::format("request is not valid JSON for {}: {}", out.GetTypeName(),
                                          status.message().as_string()));
    }
    return;
  }
  if (!out.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    throw Error::BadRequest(
        fmt::format("request is not a valid {} protobuf message", out.GetTypeName()));
  }
}

std::string EncodeMessage(const google::protobuf::Message& message, bool json) {
  if (json) {
    std::string out;
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = false;  // proto3 JSON: lowerCamelCase names
    auto status = google::protobuf::util::MessageToJsonString(message, &out, options);
    if (!status.ok()) {
      throw Error::Internal("cannot encode the response as JSON");
    }
    return out;
  }
  return message.SerializeAsString();
}

struct Service::Endpoint {
  std::string name;
  std::string subject;
  std::string queue_group;
  std::string id;  // "<service>.<Method>" as in error replies
  std::shared_ptr<RawHandler> handler;
  bool non_blocking = false;
  std::vector<bus::Subscription> subscriptions;
  std::optional<bus::LoopSubscription> loop_subscription;  // non-blocking, on the event loop

  mutable std::mutex mu;
  EndpointStats stats;
};

Service::Service(bus::Connection& connection, ServiceOptions options)
    : connection_(connection), options_(std::move(options)) {
  if (!IsValidServiceName(options_.name)) {
    throw std::invalid_argument(
        fmt::format("service name \"{}\" is invalid: use 1-64 of A-Z, a-z, 0-9, dash, underscore",
                    options_.name));
  }
  if (!IsValidSemver(options_.version)) {
    throw std::invalid_argument(
        fmt::format("service version \"{}\" is not SemVer (e.g. 1.2.3)", options_.version));
  }
  if (!options_.release.empty() && !IsValidReleaseLabel(options_.release)) {
    throw std::invalid_argument(fmt::format(
        "release label \"{}\" is invalid: use A-Z, a-z, 0-9, dash, underscore", options_.release));
  }
  if (options_.preview && options_.release.empty()) {
    throw std::invalid_argument(
        "a preview instance needs a release label: it answers only ver.<service>.<release>.*");
  }
  if (options_.concurrency < 1) throw std::invalid_argument("concurrency must be at least 1");
  if (options_.instance_id.empty()) options_.instance_id = GenerateInstanceId();
  if (!IsValidServiceName(options_.instance_id)) {
    throw std::invalid_argument(
        fmt::format("instance id \"{}\" is invalid: use A-Z, a-z, 0-9, dash, underscore",
                    options_.instance_id));
  }
  if (!options_.release.empty()) options_.metadata.emplace("release", options_.release);
  if (options_.preview) options_.metadata.emplace("preview", "true");
}

Service::~Service() {
  Stop(std::chrono::seconds(30));
}

void Service::AddRawEndpoint(std::string method, RawHandler handler,
                             EndpointOptions endpoint_options) {
  if (running_) throw std::logic_error("AddEndpoint after Start");
  if (!IsValidServiceName(method)) {
    throw std::invalid_argument(fmt::format("endpoint name \"{}\" is invalid", method));
  }
  auto shared = std::make_shared<RawHandler>(std::move(handler));
  auto add = [&](std::string subject, std::string queue) {
    auto endpoint = std::make_unique<Endpoint>();
    endpoint->name = method;
    endpoint->subject = std::move(subject);
    endpoint->queue_group = std::move(queue);
    endpoint->id = fmt::format("{}.{}", options_.name, method);
    endpoint->handler = shared;
    endpoint->non_blocking = endpoint_options.non_blocking;
    endpoint->stats.name = endpoint->name;
    endpoint->stats.subject = endpoint->subject;
    endpoint->stats.queue_group = endpoint->queue_group;
    endpoints_.push_back(std::move(endpoint));
  };
  if (options_.kind == ServiceKind::kPlatform) {
    add(PlatformSubject(options_.name, method), options_.name);
  } else {
    // A preview version takes no live traffic: only its own version subject.
    if (!options_.preview) add(UserSubject(options_.name, method), options_.name);
    if (!options_.release.empty()) {
      add(VersionSubject(options_.name, options_.release, method),
          fmt::format("{}.{}", options_.name, options_.release));
    }
  }
}

void Service::Start() {
  if (running_.exchange(true)) return;
  started_ = std::chrono::system_clock::now();
  for (auto& endpoint : endpoints_) {
    Endpoint* ep = endpoint.get();
    if (ep->non_blocking && connection_.loop_driver()) {
      ep->loop_subscription = bus::SubscribeOnLoop(connection_, ep->subject, ep->queue_group,
                                                   [this, ep](bus::Msg& msg) { Handle(*ep, msg); });
      continue;
    }
    for (int i = 0; i < options_.concurrency; ++i) {
      ep->subscriptions.push_back(connection_.QueueSubscribe(
          ep->subject, ep->queue_group, [this, ep](bus::Msg& msg) { Handle(*ep, msg); }));
    }
  }
  for (const auto& pattern : {std::string("$SRV.*"), fmt::format("$SRV.*.{}", options_.name),
                              fmt::format("$SRV.*.{}.{}", options_.name, options_.instance_id)}) {
    discovery_subscriptions_.push_back(
        connection_.Subscribe(pattern, [this](bus::Msg& msg) { HandleDiscovery(msg); }));
  }
  // Make sure the server has our interest before anyone is told we are up.
  if (auto ec = connection_.Flush(std::chrono::seconds(5)); ec) {
    log::Warn("subscriptions not confirmed by the server yet", {{"error", ec.message()}});
  }
}

void Service::Stop(std::chrono::milliseconds timeout) {
  if (!running_.exchange(false)) return;
  for (auto& endpoint : endpoints_) {
    for (auto& sub : endpoint->subscriptions) sub.StartDrain(timeout);
    if (endpoint->loop_subscription) endpoint->loop_subscription->StartDrain(timeout);
  }
  for (auto& endpoint : endpoints_) {
    for (auto& sub : endpoint->subscriptions) {
      if (!sub.WaitDrained(timeout)) {
        log::Warn("endpoint did not finish in-flight requests in time",
                  {{"endpoint", endpoint->id}});
      }
    }
    if (endpoint->loop_subscription && !endpoint->loop_subscription->WaitDrained(timeout)) {
      log::Warn("endpoint did not finish in-flight requests in time", {{"endpoint", endpoint->id}});
    }
    endpoint->subscriptions.clear();
    endpoint->loop_subscription.reset();
  }
  discovery_subscriptions_.clear();
  (void)connection_.Flush(std::chrono::seconds(2));
}

void Service::Handle(Endpoint& endpoint, bus::Msg& msg) {
  const auto start = std::chrono::steady_clock::now();
  const bool json = IsJson(msg);
  RequestContext ctx(msg, endpoint.id, json);
  std::string body;
  std::optional<Error> failure;
  try {
    if (authorizer_) authorizer_(ctx);
    body = (*endpoint.handler)(msg.data(), ctx);
  } catch (const Error& e) {
    failure = e;
  } catch (const std::exception& e) {
    log::Error("request handler failed",
               {{"endpoint", endpoint.id}, {"request_id", ctx.request_id()}, {"error", e.what()}});
    failure = Error::Internal("internal error while handling the request");
  }

  {
    // Counted before the reply leaves, so a caller that has its answer sees it in $SRV.STATS.
    const auto elapsed = std::chrono::steady_clock::now() - start;
    std::lock_guard lock(endpoint.mu);
    endpoint.stats.num_requests++;
    endpoint.stats.processing_time_ns +=
        std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count();
    if (failure) {
      endpoint.stats.num_errors++;
      endpoint.stats.last_error = fmt::format("{}:{}", failure->code(), failure->detail());
    }
  }

  std::error_code sent;
  if (!failure) {
    sent = json ? connection_.Respond(
                      msg, body, {{bus::kHeaderContentType, std::string(bus::kContentTypeJson)}})
                : connection_.Respond(msg, body);
  } else {
    const auto proto = ToProto(*failure, endpoint.id);
    bus::Headers headers = {
        {bus::kHeaderServiceError, failure->detail()},
        {bus::kHeaderServiceErrorCode, std::to_string(failure->code())},
        {bus::kHeaderContentType,
         std::string(json ? bus::kContentTypeJson : bus::kContentTypeProtobuf)},
    };
    sent = connection_.Respond(msg, json ? ErrorJson(proto) : proto.SerializeAsString(), headers);
  }
  if (sent) {
    log::Warn("could not send reply", {{"endpoint", endpoint.id}, {"error", sent.message()}});
  }
}

std::vector<EndpointStats> Service::Stats() const {
  std::vector<EndpointStats> out;
  out.reserve(endpoints_.size());
  for (const auto& endpoint : endpoints_) {
    std::lock_guard lock(endpoint->mu);
    out.push_back(endpoint->stats);
  }
  return out;
}

void Service::ResetStats() {
  for (auto& endpoint : endpoints_) {
    std::lock_guard lock(endpoint->mu);
    endpoint->stats.num_requests = 0;
    endpoint->stats.num_errors = 0;
    endpoint->stats.last_error.clear();
    endpoint->stats.processing_time_ns = 0;
  }
}

void Service::AppendStandardFields(JsonWriter& w, std::string_view type) const {
  w.Key("type").String(type);
  w.Key("name").String(options_.name);
  w.Key("id").String(options_.instance_id);
  w.Key("version").String(options_.version);
  WriteMetadata(w, options_.metadata);
}

std::string Service::PingJson() const {
  JsonWriter w;
  w.BeginObject();
  AppendStandardFields(w, kPingType);
  w.EndObject();
  return w.Take();
}

std::string Service::InfoJson() const {
  JsonWriter w;
  w.BeginObject();
  AppendStandardFields(w, kInfoType);
  w.Key("description").String(options_.description);
  w.Key("endpoints").BeginArray();
  for (const auto& endpoint : endpoints_) {
    w.BeginObject();
    w.Key("name").String(endpoint->name);
    w.Key("subject").String(endpoint->subject);
    w.Key("queue_group").String(endpoint->queue_group);
    WriteMetadata(w, {});
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.Take();
}

std::string Service::StatsJson() const {
  JsonWriter w;
  w.BeginObject();
  AppendStandardFields(w, kStatsType);
  w.Key("started").String(Rfc3339(started_));
  w.Key("endpoints").BeginArray();
  for (const auto& stats : Stats()) {
    w.BeginObject();
    w.Key("name").String(stats.name);
    w.Key("subject").String(stats.subject);
    w.Key("queue_group").String(stats.queue_group);
    w.Key("num_requests").Int(stats.num_requests);
    w.Key("num_errors").Int(stats.num_errors);
    w.Key("last_error").String(stats.last_error);
    w.Key("processing_time").Int(stats.processing_time_ns);
    w.Key("average_processing_time").Int(stats.AverageProcessingTimeNs());
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.Take();
}

void Service::HandleDiscovery(bus::Msg& msg) {
  // Subject is $SRV.<VERB>[.<name>[.<id>]]; the subscriptions already matched name and id.
  const std::string_view subject = msg.subject();
  const auto verb_start = subject.find('.') + 1;
  const auto verb_end = subject.find('.', verb_start);
  const std::string_view verb = subject.substr(verb_start, verb_end - verb_start);
  std::string body;
  if (verb == "PING") {
    body = PingJson();
  } else if (verb == "INFO") {
    body = InfoJson();
  } else if (verb == "STATS") {
    body = StatsJson();
  } else {
    return;  // an unknown verb is somebody else's business
  }
  (void)connection_.Respond(msg, body,
                            {{bus::kHeaderContentType, std::string(bus::kContentTypeJson)}});
}

void Call(bus::Connection& connection, std::string_view subject,
          const google::protobuf::Message& request, google::protobuf::Message& response,
          std::chrono::milliseconds timeout, const bus::Headers& headers) {
  bus::Msg reply;
  const std::error_code ec =
      connection.Request(subject, request.SerializeAsString(), headers, timeout, reply);
  if (ec == bus::BusErrc::kNoResponders) {
    throw Error::Unavailable(fmt::format("no service is answering {}", subject));
  }
  if (ec == bus::BusErrc::kTimeout) {
    throw Error::Timeout(fmt::format("no reply from {} within {}ms", subject, timeout.count()));
  }
  if (ec) throw Error::Unavailable(fmt::format("bus error calling {}: {}", subject, ec.message()));
  if (auto code = reply.Header(bus::kHeaderServiceErrorCode)) {
    common::v1::Error error;
    if (error.ParseFromArray(reply.data().data(), static_cast<int>(reply.data().size())) &&
        error.code() != 0) {
      throw FromProto(error);
    }
    int parsed = 500;
    try {
      parsed = std::stoi(std::string(*code));
    } catch (const std::exception&) {
    }
    throw Error(parsed, std::string(reply.Header(bus::kHeaderServiceError).value_or("error")));
  }
  if (!response.ParseFromArray(reply.data().data(), static_cast<int>(reply.data().size()))) {
    throw Error(502,
                fmt::format("reply from {} is not a valid {}", subject, response.GetTypeName()));
  }
}

}  // namespace muon
