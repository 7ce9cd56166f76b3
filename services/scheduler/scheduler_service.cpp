#include "scheduler_service.h"

#include <fmt/format.h>
#include <google/protobuf/util/time_util.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <regex>
#include <set>

#include "dry_run_driver.h"
#include "manifest.h"
#include "muon/builder/v1/builder.pb.h"
#include "muon/common/errors.h"
#include "muon/common/events.h"
#include "muon/common/log.h"
#include "muon/common/random_id.h"
#include "muon/github_events/v1/github_events.pb.h"
#include "process_driver.h"

namespace muon::scheduler {

namespace {

using google::protobuf::util::TimeUtil;

constexpr const char* kControllerKick = "muon.scheduler.kick";
constexpr size_t kMaxConfigValueBytes = 64 * 1024;
constexpr int kMaxConfigKeys = 200;

// Names of the platform's own services: a user service may not take them.
const std::set<std::string> kReservedNames = {"auth",   "builder", "scheduler",     "ingress",
                                              "logs",   "muon",    "github-events", "github",
                                              "events", "nats"};

bool IsValidServiceName(const std::string& name) {
  static const std::regex kName("^[a-z][a-z0-9-]{0,62}$");
  return std::regex_match(name, kName);
}

bool IsValidConfigKey(const std::string& key) {
  static const std::regex kKey("^[A-Z_][A-Z0-9_]{0,127}$");
  return std::regex_match(key, kKey);
}

std::string Who(const RequestContext& ctx) {
  return ctx.claims() ? ctx.claims()->email() : std::string("anonymous");
}

std::string Join(const std::vector<std::string>& items, std::string_view separator = ", ") {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

std::vector<std::string> Watch(const std::string& service) {
  return {fmt::format("muon wait {}", service), fmt::format("muon status {}", service),
          fmt::format("muon events {} -f", service)};
}

}  // namespace

std::string ModeFromArgs(int argc, char** argv) {
  std::string mode;
  if (const char* env = std::getenv("MUON_SCHEDULER_MODE")) mode = env;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--node") mode = "node";
    if (arg.starts_with("--mode=")) mode = std::string(arg.substr(7));
    if (arg == "--mode" && i + 1 < argc) mode = argv[i + 1];
  }
  return mode.empty() ? "all" : mode;
}

void AddOptions(config::Spec& spec) {
  AddServiceSecretOption(spec);
  spec.String("database-url", "DATABASE_URL", std::nullopt, "PostgreSQL URL (schema scheduler)",
              true)
      .String("secret-key-file", "MUON_SCHEDULER_SECRET_KEY_FILE", std::nullopt,
              "file holding the key service secrets are encrypted with at rest (64 hex digits)",
              true)
      .String("mode", "MUON_SCHEDULER_MODE", "all",
              "all (controller and node runtime), controller, or node (--node: only run the "
              "instances placed on this host)")
      .Bool("node", "MUON_SCHEDULER_NODE_ONLY", false, "same as --mode node")
      .String("state-dir", "MUON_SCHEDULER_STATE_DIR", "",
              "the node runtime's dir: cached artifacts and the instances' dirs (required unless "
              "--mode controller)")
      .String("node-id", "MUON_NODE_ID", "", "this node's name (default: the hostname)")
      .String("sandbox", "MUON_SCHEDULER_SANDBOX", "auto",
              "instances run in bubblewrap: auto (when it works here), bwrap (required), none")
      .String("driver", "MUON_SCHEDULER_DRIVER", "process",
              "process (run instances) or dry-run (pretend: for benchmarks)")
      .Duration("tick", "MUON_SCHEDULER_TICK", "250ms", "how often the controller reconciles")
      .Duration("node-timeout", "MUON_SCHEDULER_NODE_TIMEOUT", "5s",
                "a node without a heartbeat this long is gone: its instances are replaced")
      .Duration("min-ready", "MUON_SCHEDULER_MIN_READY", "3s",
                "how long a new instance must stay healthy before a rollout counts it and stops "
                "an old one (a release that crashes right after its health check fails)")
      .Duration("lock-ttl", "MUON_SCHEDULER_LOCK_TTL", "30s",
                "how long a deploy lock outlives a controller that stopped renewing it");
}

SchedulerOptions OptionsFromConfig(const config::Values& values) {
  SchedulerOptions o;
  o.database_url = values.String("database-url");
  o.service_secret = ServiceSecretFromConfig(values);
  try {
    o.secret_key_hex = ReadSecretFile(values.String("secret-key-file"));
    SecretBox check(o.secret_key_hex);
  } catch (const std::exception& e) {
    throw config::ConfigError(
        fmt::format("--secret-key-file (env MUON_SCHEDULER_SECRET_KEY_FILE): {}", e.what()));
  }
  o.mode = values.Bool("node") ? "node" : values.String("mode");
  if (o.mode != "all" && o.mode != "controller" && o.mode != "node") {
    throw config::ConfigError("--mode (env MUON_SCHEDULER_MODE) must be all, controller or node");
  }
  o.region = values.String("region");
  o.instance = values.String("instance");
  if (o.instance.empty()) o.instance = "scheduler-" + RandomHex(4);
  o.nats_url = values.String("nats-url");
  auto ms = [&](const char* flag) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(values.Duration(flag));
  };
  o.controller.database_url = o.database_url;
  o.controller.region = o.region;
  o.controller.id = o.instance;
  o.controller.tick = ms("tick");
  o.controller.node_timeout = ms("node-timeout");
  o.controller.min_ready = ms("min-ready");
  o.controller.lock_ttl = std::chrono::duration_cast<std::chrono::seconds>(ms("lock-ttl"));
  if (o.controller.lock_ttl < std::chrono::seconds(3)) {
    throw config::ConfigError("--lock-ttl (env MUON_SCHEDULER_LOCK_TTL) must be at least 3s");
  }
  o.sandbox = values.String("sandbox");
  if (!ParseSandboxMode(o.sandbox)) {
    throw config::ConfigError("--sandbox (env MUON_SCHEDULER_SANDBOX) must be auto, bwrap or none");
  }
  o.driver = values.String("driver");
  if (o.driver != "process" && o.driver != "dry-run") {
    throw config::ConfigError("--driver (env MUON_SCHEDULER_DRIVER) must be process or dry-run");
  }
  if (o.mode != "controller") {
    const std::string state_dir = values.String("state-dir");
    if (state_dir.empty()) {
      throw config::ConfigError(
          "--state-dir (env MUON_SCHEDULER_STATE_DIR) is required to run instances (or use "
          "--mode controller)");
    }
    // Absolute: the sandbox binds instance dirs by their path.
    o.node.state_dir = std::filesystem::absolute(state_dir);
    o.node.node_id = values.String("node-id");
    if (o.node.node_id.empty()) o.node.node_id = NodeAgent::DefaultNodeId();
    o.node.region = o.region;
    o.node.nats_url = o.nats_url;
  }
  return o;
}

ServiceOptions DefaultServiceOptions(const std::string& mode) {
  // A node-only process is not the scheduler API: it announces itself under its own name, so
  // requests to muon.rpc.scheduler.* never reach it.
  if (mode == "node") {
    return {.name = "scheduler-node",
            .kind = ServiceKind::kPlatform,
            .description = "Runs the instances the scheduler placed on this host"};
  }
  return {.name = "scheduler",
          .kind = ServiceKind::kPlatform,
          .description = "Releases, rollouts and the instances that serve them",
          .concurrency = 4};
}

SchedulerApp::SchedulerApp(SchedulerOptions options, bus::Connection& bus)
    : options_(std::move(options)),
      bus_(bus),
      pool_(db::PoolOptions{.url = options_.database_url,
                            .max_connections = 12,
                            .application_name = "muon-scheduler"}),
      box_(options_.secret_key_hex) {
  pool_.Check();
  store_ = std::make_unique<Store>(pool_, box_);
  store_->Migrate();
  events_ = std::make_unique<PgEventLog>(pool_, &bus_, options_.region);
  if (options_.mode != "node") {
    controller_ = std::make_unique<Controller>(options_.controller, *store_, *events_, &bus_);
  }
  if (options_.mode != "controller") {
    node_store_ = std::make_unique<PgNodeStore>(pool_, box_);
    if (options_.driver == "dry-run") {
      driver_ = std::make_unique<DryRunDriver>();
    } else {
      driver_ = std::make_unique<ProcessDriver>(
          bus_, ProcessDriverOptions{.sandbox = *ParseSandboxMode(options_.sandbox),
                                     .state_dir = options_.node.state_dir});
    }
  }
}

SchedulerApp::~SchedulerApp() {
  Stop();
}

void SchedulerApp::Register(Service& service, bool authorize) {
  if (!options_.service_secret.empty()) {
    service_token_ =
        std::make_unique<ServiceTokenSource>(bus_, "scheduler", options_.service_secret);
  }
  if (node_store_) {
    NodeOptions node = options_.node;
    if (service_token_) node.bearer = [this] { return service_token_->Bearer(); };
    node_ = std::make_unique<NodeAgent>(*node_store_, *events_, bus_, *driver_, node);
  }
  if (options_.mode == "node") return;  // no API: only the instances of this host
  if (authorize && service_token_) {
    verifier_ = std::make_unique<token::Verifier>(BusKeyFetcher(bus_));
    rules_ = std::make_unique<rules::RuleCache>(
        BusRuleFetcher(bus_, [this] { return service_token_->Bearer(); }));
    service.SetAuthorizer(MakeAuthorizer(*verifier_, *rules_));
  }
  service.AddEndpoint<v1::StatusRequest, v1::StatusResponse>(
      "Status", [this](const auto& r, RequestContext&) { return Status(r); });
  service.AddEndpoint<v1::GetServiceRequest, v1::DescribeResponse>(
      "Describe", [this](const auto& r, RequestContext&) { return Describe(r); });
  service.AddEndpoint<v1::ListReleasesRequest, v1::ListReleasesResponse>(
      "ListReleases", [this](const auto& r, RequestContext&) { return ListReleases(r); });
  service.AddEndpoint<v1::ListEventsRequest, v1::ListEventsResponse>(
      "ListEvents", [this](const auto& r, RequestContext&) { return ListEvents(r); });
  service.AddEndpoint<v1::ListLocksRequest, v1::ListLocksResponse>(
      "ListLocks", [this](const auto& r, RequestContext&) { return ListLocks(r); });
  service.AddEndpoint<v1::DriftRequest, v1::DriftResponse>(
      "Drift", [this](const auto& r, RequestContext&) { return Drift(r); });
  service.AddEndpoint<v1::DeployRequest, v1::Receipt>(
      "Deploy", [this](const auto& r, RequestContext& ctx) { return Deploy(r, Who(ctx)); });
  service.AddEndpoint<v1::RollbackRequest, v1::Receipt>(
      "Rollback", [this](const auto& r, RequestContext& ctx) { return Rollback(r, Who(ctx)); });
  service.AddEndpoint<v1::ScaleRequest, v1::Receipt>(
      "Scale", [this](const auto& r, RequestContext& ctx) { return Scale(r, Who(ctx)); });
  service.AddEndpoint<v1::SetEnvRequest, v1::Receipt>(
      "SetEnv", [this](const auto& r, RequestContext& ctx) { return SetEnv(r, Who(ctx)); });
  service.AddEndpoint<v1::UnlockRequest, v1::Receipt>(
      "Unlock", [this](const auto& r, RequestContext& ctx) { return Unlock(r, Who(ctx)); });
  service.AddEndpoint<v1::ExecRequest, v1::ExecResponse>(
      "Exec", [this](const auto& r, RequestContext&) { return Exec(r); });
}

void SchedulerApp::Start() {
  if (controller_ && service_token_) {
    controller_->SetBuildProbe(
        [this](const std::string& repo, const std::string& service, const std::string& commit) {
          builder::v1::ListBuildsRequest request;
          request.set_repo(repo);
          request.set_service(service);
          request.set_limit(20);
          bus::Msg reply;
          const auto ec = bus_.Request("muon.rpc.builder.ListBuilds", request.SerializeAsString(),
                                       {{bus::kHeaderAuthorization, service_token_->Bearer()}},
                                       std::chrono::seconds(2), reply);
          builder::v1::ListBuildsResponse builds;
          if (ec || reply.Header(bus::kHeaderServiceErrorCode) ||
              !builds.ParseFromArray(reply.data().data(), static_cast<int>(reply.data().size()))) {
            return false;  // the builder is away: do not hold rollouts back on it
          }
          for (const auto& b : builds.builds()) {
            if (b.commit() == commit && (b.status() == "queued" || b.status() == "running")) {
              return true;
            }
          }
          return false;
        });
  }
  if (controller_) {
    kick_ = bus_.Subscribe(kControllerKick, [this](bus::Msg&) { controller_->Kick(); });
    controller_->Start();
    consumer_ = std::thread([this] { ConsumeEvents(); });
  }
  if (node_) node_->Start();
}

void SchedulerApp::Stop() {
  stop_ = true;
  if (consumer_.joinable()) consumer_.join();
  kick_ = {};
  if (controller_) controller_->Stop();
  if (node_) node_->Stop();
}

void SchedulerApp::KickController() {
  if (controller_) controller_->Kick();
  bus_.Publish(kControllerKick, "");  // the leader may be another process
}

// ---- inputs from the event stream ----

void SchedulerApp::ConsumeEvents() {
  bus::JetStream js(bus_);
  bus::PullConsumer consumer;
  while (!stop_) {
    if (!consumer.Valid()) {
      if (auto ec = js.EnsureStream(events::StreamConfig())) {
        log::Warn("EVENTS stream not ready; retrying", {{"error", ec.message()}});
        std::this_thread::sleep_for(std::chrono::seconds(1));
        continue;
      }
      bus::ConsumerConfig cc{.durable = "scheduler",
                             .filter_subject = "muon.evt.>",
                             .ack_wait = std::chrono::seconds(30),
                             .max_ack_pending = 1000};
      if (auto ec = js.PullSubscribe("EVENTS", cc, consumer)) {
        log::Warn("cannot bind to the EVENTS consumer; retrying", {{"error", ec.message()}});
        std::this_thread::sleep_for(std::chrono::seconds(1));
        continue;
      }
    }
    std::vector<bus::Msg> messages;
    const auto ec = consumer.Fetch(32, std::chrono::milliseconds(500), messages);
    if (ec == bus::BusErrc::kNotFound) {
      consumer = bus::PullConsumer();
      continue;
    }
    for (auto& m : messages) {
      try {
        HandleEvent(m.subject(), m.data());
        consumer.Ack(m);
      } catch (const std::exception& e) {
        // The database is away (or a bug): redelivered after the ack wait; a release made twice
        // is prevented by the releases_candidate key.
        log::Error("event not handled; it is redelivered",
                   {{"subject", m.subject()}, {"error", e.what()}});
        consumer.Nak(m);
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
      }
    }
  }
}

void SchedulerApp::HandleEvent(std::string_view subject, std::string_view data) {
  if (subject.starts_with("muon.evt.build.")) {
    builder::v1::BuildEvent event;
    if (!event.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
      log::Warn("undecodable build event dropped", {{"subject", subject}});
      return;
    }
    if (event.type() != "release_candidate") return;
    const builder::v1::Build& build = event.build();
    if (build.status() != "succeeded" || build.artifact_digest().empty() ||
        !IsValidServiceName(build.service())) {
      log::Warn("release candidate without an artifact, or with a bad name, dropped",
                {{"build", build.id()}, {"service", build.service()}});
      return;
    }
    if (kReservedNames.contains(build.service())) {
      events_->Record({.service = build.service(),
                       .type = "release.refused",
                       .message = fmt::format("build {}: {} is the name of a platform service; "
                                              "rename the service in its muon.yaml",
                                              build.id(), build.service())});
      return;
    }
    const std::string ref = event.ref().empty() ? build.ref() : event.ref();
    const std::string preview = event.default_branch() ? "" : PreviewSlug(ref);
    if (!event.default_branch() && preview.empty()) {
      log::Warn("preview candidate without a usable branch name dropped", {{"ref", ref}});
      return;
    }
    int replicas = 1;
    if (auto parsed = builder::ParseManifest(build.manifest()); parsed.manifest) {
      replicas = parsed.manifest->replicas;
    }
    bool created = false;
    const v1::Release release = store_->CreateRelease({.service = build.service(),
                                                       .repo = build.repo(),
                                                       .folder = build.folder(),
                                                       .artifact_digest = build.artifact_digest(),
                                                       .manifest = build.manifest(),
                                                       .commit = build.commit(),
                                                       .author = build.trigger(),
                                                       .build_id = build.id(),
                                                       .reason = "build",
                                                       .preview = preview,
                                                       .manifest_replicas = replicas},
                                                      created);
    if (!created) return;
    events_->Record(
        {.service = release.service(),
         .type = "release.created",
         .message = fmt::format("v{}{} from build {} of {} ({})", release.version(),
                                preview.empty() ? "" : " (preview " + preview + ")", build.id(),
                                build.commit().substr(0, 7), build.trigger()),
         .version = release.version(),
         .attributes = {{"build", build.id()}, {"commit", build.commit()}, {"ref", ref}}});
    if (preview.empty()) {
      // A new push resumes a paused auto-deploy.
      if (auto svc = store_->GetService(release.service()); svc && svc->paused) {
        store_->SetPaused(release.service(), false, "");
        events_->Record(
            {.service = release.service(),
             .type = "autodeploy.resumed",
             .message = fmt::format("auto-deploy resumed by a new push (v{})", release.version()),
             .version = release.version()});
      }
    }
    KickController();
    return;
  }
  if (subject.starts_with("muon.evt.github.")) {
    github_events::v1::RepoEvent event;
    if (!event.ParseFromArray(data.data(), static_cast<int>(data.size()))) return;
    if (event.type() != "branch_deleted") return;
    const std::string slug = PreviewSlug(event.ref());
    if (slug.empty()) return;
    const int removed = store_->RemovePreview(event.repo(), slug);
    if (removed > 0) {
      events_->Record({.type = "preview.removed",
                       .message = fmt::format("branch {} of {} was deleted: its preview version "
                                              "{} is removed from {} service(s)",
                                              event.ref(), event.repo(), slug, removed)});
      KickController();
    }
  }
}

// ---- reads ----

ServiceRow SchedulerApp::RequireService(const std::string& name) {
  if (name.empty()) throw Error::BadRequest("service is required");
  auto svc = store_->GetService(name);
  if (!svc) {
    throw Error::NotFound(fmt::format(
        "no service {} (a service appears with its first build: push it, or muon deploy {} "
        "--ref REF --repo OWNER/NAME)",
        name, name));
  }
  return *svc;
}

v1::ServiceStatus SchedulerApp::StatusOf(const ServiceRow& svc) {
  v1::ServiceStatus s;
  s.set_name(svc.name);
  s.set_repo(svc.repo);
  s.set_folder(svc.folder);
  s.set_desired_replicas(svc.replicas);
  s.set_live_version(svc.live_version);
  s.set_paused(svc.paused);
  s.set_paused_reason(svc.paused_reason);
  std::set<std::string> previews;
  int healthy = 0;
  for (auto& instance : store_->Instances(svc.name)) {
    if (!instance.preview().empty()) previews.insert(instance.preview());
    if (instance.preview().empty() && instance.version() == svc.live_version &&
        instance.state() == "healthy" && instance.desired() == "running") {
      ++healthy;
    }
    *s.add_instances() = std::move(instance);
  }
  for (const auto& p : previews) s.add_previews(p);
  s.set_healthy(healthy);
  std::vector<std::string> plain, secret;
  store_->ConfigKeys(svc.name, plain, secret);
  for (auto& k : plain) s.add_env_keys(std::move(k));
  for (auto& k : secret) s.add_secret_keys(std::move(k));
  if (auto newest = store_->NewestRelease(svc.name, "", {})) {
    if (auto parsed = builder::ParseManifest(newest->manifest()); parsed.manifest) {
      for (const auto& k : parsed.manifest->required_env) s.add_required_env(k);
    }
  }
  for (const auto& lock : store_->ListLocks()) {
    if (lock.service() == svc.name) *s.mutable_lock() = lock;
  }
  const auto last = store_->LastRollout(svc.name, "");
  if (last) {
    v1::Rollout* r = s.mutable_rollout();
    r->set_id(last->id);
    r->set_service(last->service);
    r->set_version(last->version);
    r->set_from_version(last->from_version);
    r->set_state(last->state);
    r->set_category(last->category);
    r->set_detail(last->detail);
    *r->mutable_started_at() = TimeUtil::MicrosecondsToTimestamp(
        std::chrono::duration_cast<std::chrono::microseconds>(last->started_at.time_since_epoch())
            .count());
  }
  // The one word `muon wait` and the console go by.
  int running_other = 0;
  for (const auto& i : s.instances()) {
    if (i.preview().empty() && i.desired() == "running" && i.version() != svc.live_version) {
      ++running_other;
    }
  }
  if (last && last->state == "running") {
    s.set_state("rolling_out");
    s.set_detail(fmt::format("rolling out v{}: {}/{} of v{} healthy", last->version, healthy,
                             svc.replicas, svc.live_version));
  } else if (last && last->state == "failed") {
    s.set_state("failed");
    s.set_detail(fmt::format(
        "v{} failed ({}: {}); {}", last->version, last->category, last->detail,
        svc.live_version ? fmt::format("v{} serves {}/{}", svc.live_version, healthy, svc.replicas)
                         : std::string("nothing is live")));
  } else if (svc.live_version == 0) {
    const auto pending = store_->NewestRelease(svc.name, "", {});
    s.set_state(pending && pending->status() == "failed" ? "failed" : "pending");
    s.set_detail(pending && pending->status() == "failed"
                     ? fmt::format("v{} failed ({}): {}", pending->version(), pending->category(),
                                   pending->detail())
                     : std::string("no release is live yet"));
  } else if (svc.replicas == 0 && s.instances_size() == 0) {
    s.set_state("stopped");
    s.set_detail("scaled to 0");
  } else if (healthy == svc.replicas && running_other == 0) {
    s.set_state("converged");
    s.set_detail(fmt::format("v{}: {}/{} healthy", svc.live_version, healthy, svc.replicas));
  } else {
    s.set_state("degraded");
    s.set_detail(fmt::format("v{}: {}/{} healthy", svc.live_version, healthy, svc.replicas));
  }
  // A release queued behind nothing yet (the controller takes it at its next tick) already
  // counts as rolling out, so `muon wait` right after a push does not see the old state.
  if (s.state() != "rolling_out") {
    if (auto newest = store_->NewestRelease(svc.name, "", {});
        newest && newest->status() == "pending" && newest->version() > svc.live_version) {
      s.set_state("rolling_out");
      s.set_detail(fmt::format("v{} is queued to roll out", newest->version()));
    }
  }
  // A release that could not even start its rollout (config missing, dependency failed) is the
  // newest word on the service.
  if (s.state() == "converged" || s.state() == "degraded") {
    if (auto newest = store_->NewestRelease(svc.name, "", {});
        newest && newest->status() == "failed" && newest->version() > svc.live_version &&
        (!last || last->version < newest->version())) {
      s.set_state("failed");
      s.set_detail(fmt::format("v{} failed ({}): {}; v{} serves {}/{}", newest->version(),
                               newest->category(), newest->detail(), svc.live_version, healthy,
                               svc.replicas));
    }
  }
  return s;
}

v1::StatusResponse SchedulerApp::Status(const v1::StatusRequest& request) {
  v1::StatusResponse response;
  if (!request.service().empty()) {
    *response.add_services() = StatusOf(RequireService(request.service()));
  } else {
    for (const auto& svc : store_->ListServices()) *response.add_services() = StatusOf(svc);
  }
  for (auto& node : store_->ListNodes(options_.controller.node_timeout)) {
    *response.add_nodes() = std::move(node);
  }
  return response;
}

v1::DescribeResponse SchedulerApp::Describe(const v1::GetServiceRequest& request) {
  v1::DescribeResponse response;
  *response.mutable_status() = StatusOf(RequireService(request.service()));
  for (auto& r : store_->ListReleases(request.service(), 10)) *response.add_releases() = r;
  for (auto& e : store_->ListEvents(request.service(), 0, std::nullopt, 20)) {
    *response.add_events() = e;
  }
  return response;
}

v1::ListReleasesResponse SchedulerApp::ListReleases(const v1::ListReleasesRequest& request) {
  RequireService(request.service());
  if (request.limit() < 0 || request.limit() > 500) {
    throw Error::BadRequest("limit must be between 1 and 500");
  }
  v1::ListReleasesResponse response;
  for (auto& r : store_->ListReleases(request.service(), request.limit() ? request.limit() : 20)) {
    *response.add_releases() = std::move(r);
  }
  return response;
}

v1::ListEventsResponse SchedulerApp::ListEvents(const v1::ListEventsRequest& request) {
  if (request.limit() < 0 || request.limit() > 1000) {
    throw Error::BadRequest("limit must be between 1 and 1000");
  }
  std::optional<TimePoint> since;
  if (request.has_since()) {
    since =
        TimePoint(std::chrono::microseconds(TimeUtil::TimestampToMicroseconds(request.since())));
  }
  v1::ListEventsResponse response;
  int64_t last = request.after_id();
  for (auto& e : store_->ListEvents(request.service(), request.after_id(), since,
                                    request.limit() ? request.limit() : 100)) {
    last = std::max(last, e.id());
    *response.add_events() = std::move(e);
  }
  response.set_last_id(last);
  return response;
}

v1::ListLocksResponse SchedulerApp::ListLocks(const v1::ListLocksRequest&) {
  v1::ListLocksResponse response;
  for (auto& l : store_->ListLocks()) *response.add_locks() = std::move(l);
  return response;
}

v1::DriftResponse SchedulerApp::Drift(const v1::DriftRequest& request) {
  if (!request.service().empty()) RequireService(request.service());
  v1::DriftResponse response;
  std::map<std::string, bool> alive;
  for (const auto& n : store_->Nodes(options_.controller.node_timeout)) alive[n.id] = n.alive;
  for (const auto& [line, infos] : store_->Lines(request.service())) {
    const int want_version = line.target_version ? 0 : line.live_version;
    int running = 0;
    for (const auto& i : infos) {
      auto item = [&](const char* kind, std::string detail) {
        v1::DriftItem* d = response.add_items();
        d->set_service(i.service());
        d->set_instance(i.id());
        d->set_node(i.node());
        d->set_kind(kind);
        d->set_detail(std::move(detail));
      };
      if (i.desired() == "running" && !alive[i.node()]) {
        item("lost", fmt::format("its node {} sends no heartbeat", i.node()));
      } else if (i.desired() == "stopped") {
        item("unexpected", fmt::format("still {} though it was asked to stop", i.state()));
      } else if (want_version && i.version() != want_version) {
        item("unexpected",
             fmt::format("runs v{}, the live release is v{}", i.version(), want_version));
      } else if (i.state() != "healthy") {
        item(
            "wrong_state",
            fmt::format("{}{}", i.state(),
                        i.category().empty() ? "" : " (" + i.category() + ": " + i.detail() + ")"));
      }
      if (i.desired() == "running" && (!want_version || i.version() == want_version)) ++running;
    }
    if (want_version && running < line.replicas) {
      v1::DriftItem* d = response.add_items();
      d->set_service(line.service);
      d->set_kind("missing");
      d->set_detail(
          fmt::format("{} of {} instances of v{} exist", running, line.replicas, want_version));
    }
  }
  return response;
}

// ---- mutations ----

v1::Receipt SchedulerApp::ReleaseReceipt(const std::string& service, const std::string& summary,
                                         std::vector<std::string> changes,
                                         const v1::Release* release) {
  v1::Receipt receipt;
  receipt.set_service(service);
  receipt.set_summary(summary);
  for (auto& c : changes) receipt.add_changes(std::move(c));
  if (release) *receipt.mutable_release() = *release;
  for (auto& w : Watch(service)) receipt.add_watch(std::move(w));
  return receipt;
}

v1::Release SchedulerApp::BaseRelease(const std::string& service) {
  const auto svc = store_->GetService(service);
  if (svc && svc->live_version) {
    if (auto live = store_->GetRelease(service, svc->live_version)) return *live;
  }
  if (auto newest = store_->NewestRelease(service, "", {})) return *newest;
  throw Error::NotFound(
      fmt::format("{} has no release yet: push it or muon deploy {} --ref REF", service, service));
}

void SchedulerApp::CheckRequiredConfig(const std::string& service, const std::string& manifest_text,
                                       const ConfigChange* pending_change) {
  const auto parsed = builder::ParseManifest(manifest_text);
  if (!parsed.manifest) return;  // refused later with manifest_invalid and its errors
  std::vector<std::string> plain, secret;
  store_->ConfigKeys(service, plain, secret);
  std::set<std::string> have(plain.begin(), plain.end());
  have.insert(secret.begin(), secret.end());
  if (pending_change) {
    for (const auto& [k, v] : pending_change->set) have.insert(k);
    for (const auto& [k, v] : pending_change->secrets) have.insert(k);
    for (const auto& k : pending_change->unset) have.erase(k);
  }
  std::vector<std::string> missing, assignments;
  for (const auto& key : parsed.manifest->required_env) {
    if (!have.contains(key)) {
      missing.push_back(key);
      assignments.push_back(key + "=...");
    }
  }
  if (!missing.empty()) {
    throw Error::BadRequest(
        fmt::format("{} requires config that is not set: {}; nothing was changed. Set it with: "
                    "muon env set {} {} (or muon secrets set {} KEY --from-file FILE)",
                    service, Join(missing), service, Join(assignments, " "), service));
  }
}

v1::Receipt SchedulerApp::Deploy(const v1::DeployRequest& request, const std::string& who) {
  const ServiceRow svc = RequireService(request.service());
  if (request.version() < 0) throw Error::BadRequest("version must be positive");
  std::optional<v1::Release> chosen;
  if (request.version() > 0) {
    chosen = store_->GetRelease(svc.name, request.version());
    if (!chosen) {
      throw Error::NotFound(fmt::format("{} has no release v{} (muon releases {})", svc.name,
                                        request.version(), svc.name));
    }
    if (!chosen->preview().empty()) {
      throw Error::BadRequest(fmt::format(
          "v{} is a preview of branch {}; deploy a main-line release (muon releases {})",
          chosen->version(), chosen->preview(), svc.name));
    }
  } else {
    chosen = store_->NewestRelease(svc.name, "", {});
    if (!chosen) throw Error::NotFound(fmt::format("{} has no release yet", svc.name));
  }
  CheckRequiredConfig(svc.name, chosen->manifest(), nullptr);
  std::vector<std::string> changes;
  if (svc.paused) {
    store_->SetPaused(svc.name, false, "");
    events_->Record({.service = svc.name,
                     .type = "autodeploy.resumed",
                     .message = fmt::format("auto-deploy resumed by muon deploy ({})", who)});
    changes.push_back("auto-deploy resumed (was paused: " + svc.paused_reason + ")");
  }
  if (chosen->status() == "pending" || chosen->status() == "rolling_out") {
    changes.push_back(
        fmt::format("v{} is {} already", chosen->version(),
                    chosen->status() == "pending" ? "queued to roll out" : "rolling out"));
    KickController();
    return ReleaseReceipt(svc.name, fmt::format("deploy {} v{}", svc.name, chosen->version()),
                          changes, &*chosen);
  }
  if (chosen->status() == "live" && chosen->version() == svc.live_version &&
      request.version() == 0) {
    changes.push_back(fmt::format("v{} is live already: nothing to roll out", chosen->version()));
    return ReleaseReceipt(svc.name, fmt::format("deploy {}: up to date", svc.name), changes,
                          &*chosen);
  }
  bool created = false;
  const v1::Release release = store_->CreateRelease({.service = svc.name,
                                                     .artifact_digest = chosen->artifact_digest(),
                                                     .manifest = chosen->manifest(),
                                                     .commit = chosen->commit(),
                                                     .author = fmt::format("deploy by {}", who),
                                                     .build_id = chosen->build_id(),
                                                     .reason = "redeploy",
                                                     .from_version = chosen->version()},
                                                    created);
  events_->Record({.service = svc.name,
                   .type = "release.created",
                   .message = fmt::format("v{}: v{}'s artifact with the current config, deployed "
                                          "by {}",
                                          release.version(), chosen->version(), who),
                   .version = release.version()});
  changes.push_back(fmt::format("release v{} = v{}'s artifact {} with config {}", release.version(),
                                chosen->version(), chosen->artifact_digest().substr(0, 12),
                                release.config_version()));
  changes.push_back(fmt::format("rolls out replacing v{}", svc.live_version));
  KickController();
  return ReleaseReceipt(svc.name, fmt::format("deploy {} v{}", svc.name, release.version()),
                        changes, &release);
}

v1::Receipt SchedulerApp::Rollback(const v1::RollbackRequest& request, const std::string& who) {
  const ServiceRow svc = RequireService(request.service());
  if (request.to_version() < 0) throw Error::BadRequest("to_version must be positive");
  std::optional<v1::Release> target;
  if (request.to_version() > 0) {
    target = store_->GetRelease(svc.name, request.to_version());
    if (!target) {
      throw Error::NotFound(fmt::format("{} has no release v{} (muon releases {})", svc.name,
                                        request.to_version(), svc.name));
    }
    if (!target->preview().empty()) {
      throw Error::BadRequest(fmt::format("v{} is a preview release", target->version()));
    }
  } else {
    // The release that was live before the current one.
    for (const auto& r : store_->ListReleases(svc.name, 500)) {
      if (r.preview().empty() && r.version() < svc.live_version && r.status() == "superseded" &&
          r.from_version() != svc.live_version) {
        target = r;
        break;
      }
    }
    if (!target) {
      throw Error::NotFound(
          fmt::format("{} has no earlier live release to roll back to (muon releases {}; "
                      "then muon rollback {} --to vN)",
                      svc.name, svc.name, svc.name));
    }
  }
  if (target->version() == svc.live_version) {
    throw Error::Conflict(fmt::format("v{} is live already", target->version()));
  }
  bool created = false;
  const v1::Release release = store_->CreateRelease({.service = svc.name,
                                                     .artifact_digest = target->artifact_digest(),
                                                     .manifest = target->manifest(),
                                                     .commit = target->commit(),
                                                     .author = fmt::format("rollback by {}", who),
                                                     .build_id = target->build_id(),
                                                     .reason = "rollback",
                                                     .from_version = target->version(),
                                                     .copy_config = true},
                                                    created);
  if (svc.paused) store_->SetPaused(svc.name, false, "");
  events_->Record({.service = svc.name,
                   .type = "release.created",
                   .message = fmt::format("v{}: rollback to v{} (its artifact and config, no "
                                          "build) by {}",
                                          release.version(), target->version(), who),
                   .version = release.version()});
  KickController();
  return ReleaseReceipt(
      svc.name,
      fmt::format("rollback {} to v{} as v{}", svc.name, target->version(), release.version()),
      {fmt::format("release v{} = v{}'s artifact {} and config {} (nothing is rebuilt)",
                   release.version(), target->version(), target->artifact_digest().substr(0, 12),
                   target->config_version()),
       fmt::format("rolls out replacing v{}", svc.live_version)},
      &release);
}

v1::Receipt SchedulerApp::Scale(const v1::ScaleRequest& request, const std::string& who) {
  const ServiceRow svc = RequireService(request.service());
  if (!request.has_replicas()) throw Error::BadRequest("replicas is required (0..100)");
  if (request.replicas() < 0 || request.replicas() > builder::kMaxReplicas) {
    throw Error::BadRequest(
        fmt::format("replicas must be between 0 and {}", builder::kMaxReplicas));
  }
  store_->SetReplicas(svc.name, request.replicas());
  events_->Record({.service = svc.name,
                   .type = "scale",
                   .message = fmt::format("scale {} {} -> {} by {}", svc.name, svc.replicas,
                                          request.replicas(), who),
                   .attributes = {{"from", std::to_string(svc.replicas)},
                                  {"to", std::to_string(request.replicas())}}});
  KickController();
  std::vector<std::string> changes = {
      fmt::format("replicas {} -> {}", svc.replicas, request.replicas())};
  if (svc.live_version == 0) changes.push_back("nothing is live yet: applies to its first release");
  return ReleaseReceipt(
      svc.name, fmt::format("scale {} {} -> {}", svc.name, svc.replicas, request.replicas()),
      changes, nullptr);
}

v1::Receipt SchedulerApp::SetEnv(const v1::SetEnvRequest& request, const std::string& who) {
  const ServiceRow svc = RequireService(request.service());
  ConfigChange change;
  std::vector<std::string> problems;
  auto check_key = [&](const std::string& key) {
    if (!IsValidConfigKey(key)) {
      problems.push_back(fmt::format("{}: keys are A-Z, 0-9 and _ (not starting with a digit)",
                                     key.empty() ? "(empty)" : key));
    } else if (key.starts_with("MUON_") || key == "NATS_URL" || key == "PORT") {
      problems.push_back(fmt::format("{}: set by the platform for every instance", key));
    }
  };
  for (const auto& [k, v] : request.set()) {
    check_key(k);
    if (v.size() > kMaxConfigValueBytes) problems.push_back(k + ": value over 64 KiB");
    change.set[k] = v;
  }
  for (const auto& [k, v] : request.secrets()) {
    check_key(k);
    if (v.size() > kMaxConfigValueBytes) problems.push_back(k + ": value over 64 KiB");
    if (change.set.contains(k)) problems.push_back(k + ": both a value and a secret");
    change.secrets[k] = v;
  }
  for (const auto& k : request.unset()) {
    check_key(k);
    change.unset.push_back(k);
  }
  if (change.set.empty() && change.secrets.empty() && change.unset.empty()) {
    problems.push_back("nothing to change: give KEY=VALUE pairs, keys to unset, or secrets");
  }
  if (static_cast<int>(change.set.size() + change.secrets.size()) > kMaxConfigKeys) {
    problems.push_back(fmt::format("at most {} keys at once", kMaxConfigKeys));
  }
  if (!problems.empty()) throw Error::BadRequest(Join(problems, "; "));
  std::optional<v1::Release> base;
  if (request.deploy()) {
    if (auto newest = store_->NewestRelease(svc.name, "", {}); newest) {
      // A pushed release that was waiting for exactly this config is what goes out with it, not
      // the live one.
      base = newest->status() == "failed" && newest->category() == "config_missing" &&
                     newest->version() > svc.live_version
                 ? *newest
                 : BaseRelease(svc.name);
      CheckRequiredConfig(svc.name, base->manifest(), &change);
    }
  }
  const int64_t config_version = store_->ChangeConfig(svc.name, change);
  std::vector<std::string> changes;
  std::vector<std::string> keys;
  for (const auto& [k, v] : change.set) {
    changes.push_back("set " + k);
    keys.push_back(k);
  }
  for (const auto& [k, v] : change.secrets) {
    changes.push_back("set secret " + k);
    keys.push_back(k + " (secret)");
  }
  for (const auto& k : change.unset) {
    changes.push_back("unset " + k);
    keys.push_back("-" + k);
  }
  events_->Record({.service = svc.name,
                   .type = "config.changed",
                   .message = fmt::format("config {} by {}: {}", config_version, who, Join(keys)),
                   .attributes = {{"config_version", std::to_string(config_version)}}});
  changes.push_back(fmt::format("config version {}", config_version));
  if (!base) {
    changes.push_back(request.deploy() ? "no release yet: the first release runs with it"
                                       : "not deployed (--no-deploy)");
    return ReleaseReceipt(svc.name, fmt::format("config of {} changed", svc.name), changes,
                          nullptr);
  }
  bool created = false;
  const v1::Release release = store_->CreateRelease({.service = svc.name,
                                                     .artifact_digest = base->artifact_digest(),
                                                     .manifest = base->manifest(),
                                                     .commit = base->commit(),
                                                     .author = fmt::format("config by {}", who),
                                                     .build_id = base->build_id(),
                                                     .reason = "config",
                                                     .from_version = base->version()},
                                                    created);
  events_->Record({.service = svc.name,
                   .type = "release.created",
                   .message = fmt::format("v{}: v{}'s artifact with config {} (no build)",
                                          release.version(), base->version(), config_version),
                   .version = release.version()});
  changes.push_back(fmt::format("release v{} = v{}'s artifact {} with config {} (no build)",
                                release.version(), base->version(),
                                base->artifact_digest().substr(0, 12), config_version));
  KickController();
  return ReleaseReceipt(
      svc.name, fmt::format("config of {} changed; v{} rolls out", svc.name, release.version()),
      changes, &release);
}

v1::Receipt SchedulerApp::Unlock(const v1::UnlockRequest& request, const std::string& who) {
  if (request.service().empty()) throw Error::BadRequest("service is required");
  if (!request.force()) {
    throw Error::BadRequest(
        "a deploy lock is released by its rollout; force it open only when its holder is gone "
        "(muon unlock SERVICE --force; the unlock is recorded)");
  }
  const auto lock = store_->ForceUnlock(request.service());
  if (!lock) throw Error::NotFound(fmt::format("{} holds no deploy lock", request.service()));
  const std::string service = request.service().substr(0, request.service().find('@'));
  events_->Record({.service = service,
                   .type = "lock.forced",
                   .message = fmt::format("deploy lock of {} held by {} ({}) forced open by {}",
                                          request.service(), lock->holder(), lock->reason(), who),
                   .attributes = {{"holder", lock->holder()}, {"by", who}}});
  KickController();
  return ReleaseReceipt(
      service, fmt::format("unlock {}", request.service()),
      {fmt::format("removed the lock held by {} ({})", lock->holder(), lock->reason())}, nullptr);
}

v1::ExecResponse SchedulerApp::Exec(const v1::ExecRequest& request) {
  const ServiceRow svc = RequireService(request.service());
  if (request.command().empty()) throw Error::BadRequest("command is required");
  if (request.timeout_ms() < 0 || request.timeout_ms() > 600000) {
    throw Error::BadRequest("timeout_ms must be between 0 and 600000 (10 min)");
  }
  std::optional<v1::InstanceInfo> target;
  for (const auto& i : store_->Instances(svc.name)) {
    if (i.desired() != "running") continue;
    if (!request.instance().empty() ? i.id() == request.instance()
                                    : (i.state() == "healthy" && i.preview().empty() &&
                                       (!target || i.version() == svc.live_version))) {
      target = i;
      if (!request.instance().empty()) break;
    }
  }
  if (!target) {
    throw Error::NotFound(
        request.instance().empty()
            ? fmt::format("{} has no healthy instance to run it in (muon "
                          "status {})",
                          svc.name, svc.name)
            : fmt::format("{} has no running instance {}", svc.name, request.instance()));
  }
  v1::ExecRequest forward = request;
  forward.set_instance(target->id());
  const auto timeout =
      std::chrono::milliseconds(request.timeout_ms() ? request.timeout_ms() : 30000);
  bus::Msg reply;
  const auto ec =
      bus_.Request(fmt::format("muon.node.{}.Exec", target->node()), forward.SerializeAsString(),
                   {}, timeout + std::chrono::seconds(5), reply);
  if (ec == bus::BusErrc::kNoResponders) {
    throw Error::Unavailable(
        fmt::format("node {} of instance {} does not answer", target->node(), target->id()));
  }
  if (ec) throw Error::Timeout(fmt::format("node {}: {}", target->node(), ec.message()));
  if (auto code = reply.Header(bus::kHeaderServiceErrorCode)) {
    const std::string text(reply.Header(bus::kHeaderServiceError).value_or("exec failed"));
    throw Error(std::atoi(std::string(*code).c_str()), text);
  }
  v1::ExecResponse response;
  if (!response.ParseFromArray(reply.data().data(), static_cast<int>(reply.data().size()))) {
    throw Error::Internal("the node's exec answer could not be decoded");
  }
  return response;
}

}  // namespace muon::scheduler
