#include "github_events_service.h"

#include <fmt/format.h>

#include "muon/common/errors.h"
#include "muon/common/log.h"
#include "muon/common/random_id.h"
#include "webhook.h"

namespace muon::github_events {
namespace {

constexpr size_t kMaxSecretBytes = 1024;
constexpr std::chrono::seconds kDefaultGrace = std::chrono::hours(24);
constexpr std::chrono::seconds kMaxGrace = std::chrono::hours(24 * 30);
constexpr int kMaxDeliveries = 1000;

void CheckRepoName(const std::string& name) {
  if (!IsValidRepoName(name)) {
    throw Error::BadRequest(fmt::format(
        "repo \"{}\" must be owner/name (letters, digits, '.', '_' and '-', at most 100 each)",
        name.substr(0, 210)));
  }
}

void CheckSecret(const std::string& secret) {
  if (secret.empty()) throw Error::BadRequest("secret must not be empty");
  if (secret.size() > kMaxSecretBytes) {
    throw Error::BadRequest(fmt::format("secret is longer than {} bytes", kMaxSecretBytes));
  }
}

bool IsValidCloneUrl(std::string_view url) {
  if (url.empty() || url.size() > 2048) return false;
  if (url.find_first_of(" \t\r\n") != std::string_view::npos) return false;
  // Remote URLs and local paths (a bare repository on this machine) are what git fetches from.
  for (std::string_view scheme : {"https://", "http://", "ssh://", "git://", "file://", "/"}) {
    if (url.substr(0, scheme.size()) == scheme) return true;
  }
  return url.find('@') != std::string_view::npos && url.find(':') != std::string_view::npos;
}

bool IsValidBranch(std::string_view branch) {
  if (branch.empty() || branch.size() > 255 || branch.front() == '-' || branch.front() == '/' ||
      branch.back() == '/' || branch.find("..") != std::string_view::npos) {
    return false;
  }
  for (char c : branch) {
    if (c <= ' ' || c == '~' || c == '^' || c == ':' || c == '?' || c == '*' || c == '[' ||
        c == '\\' || c == 0x7f) {
      return false;
    }
  }
  return true;
}

}  // namespace

void AddOptions(config::Spec& spec) {
  AddServiceSecretOption(spec);
  spec.String("database-url", "DATABASE_URL", std::nullopt, "PostgreSQL URL (schema github)", true)
      .String("secret-key-file", "MUON_GITHUB_SECRET_KEY_FILE", std::nullopt,
              "file holding the key webhook secrets are encrypted with at rest (64 hex digits)",
              true)
      .Duration("process-lease", "MUON_GITHUB_PROCESS_LEASE", "30s",
                "how long a push being processed stays this process's without a renewal (another "
                "one takes it over after a crash)")
      .Duration("process-poll", "MUON_GITHUB_PROCESS_POLL", "1s",
                "how often an idle processor looks for accepted pushes");
}

GithubEventsOptions OptionsFromConfig(const config::Values& values) {
  GithubEventsOptions o;
  o.database_url = values.String("database-url");
  auto read = [&](const char* flag, const char* env) {
    try {
      return ReadSecretFile(values.String(flag));
    } catch (const std::exception& e) {
      throw config::ConfigError(fmt::format("--{} (env {}): {}", flag, env, e.what()));
    }
  };
  o.service_secret = ServiceSecretFromConfig(values);
  o.secret_key_hex = read("secret-key-file", "MUON_GITHUB_SECRET_KEY_FILE");
  o.processor.owner = values.String("instance");
  o.processor.lease =
      std::chrono::duration_cast<std::chrono::seconds>(values.Duration("process-lease"));
  if (o.processor.lease < std::chrono::seconds(3)) {
    throw config::ConfigError(
        "--process-lease (env MUON_GITHUB_PROCESS_LEASE) must be at least 3s");
  }
  o.processor.poll =
      std::chrono::duration_cast<std::chrono::milliseconds>(values.Duration("process-poll"));
  try {
    SecretBox check(o.secret_key_hex);
  } catch (const std::invalid_argument& e) {
    throw config::ConfigError(
        fmt::format("--secret-key-file (env MUON_GITHUB_SECRET_KEY_FILE): {}", e.what()));
  }
  return o;
}

ServiceOptions DefaultServiceOptions() {
  return {.name = "github-events",
          .kind = ServiceKind::kPlatform,
          .description = "GitHub webhooks: registered repositories and their deliveries",
          .concurrency = 4};
}

GithubEventsApp::GithubEventsApp(GithubEventsOptions options)
    : options_(std::move(options)),
      box_(options_.secret_key_hex),
      store_(options_.database_url, options_.db_connections) {
  store_.pool().Check();
  store_.Migrate();
}

void GithubEventsApp::Register(Service& service, bus::Connection& bus, bool authorize) {
  if (authorize) {
    service_token_ =
        std::make_unique<ServiceTokenSource>(bus, "github-events", options_.service_secret);
    verifier_ = std::make_unique<token::Verifier>(BusKeyFetcher(bus));
    rules_ = std::make_unique<rules::RuleCache>(
        BusRuleFetcher(bus, [this] { return service_token_->Bearer(); }));
    service.SetAuthorizer(MakeAuthorizer(*verifier_, *rules_));
  }
  service.AddEndpoint<v1::AddRepoRequest, v1::Repo>(
      "AddRepo", [this](const auto& request, RequestContext&) { return AddRepo(request); });
  service.AddEndpoint<v1::ListReposRequest, v1::ListReposResponse>(
      "ListRepos", [this](const auto&, RequestContext&) { return ListRepos(); });
  service.AddEndpoint<v1::RemoveRepoRequest, v1::RemoveRepoResponse>(
      "RemoveRepo", [this](const auto& request, RequestContext&) { return RemoveRepo(request); });
  service.AddEndpoint<v1::RotateSecretRequest, v1::Repo>(
      "RotateSecret",
      [this](const auto& request, RequestContext&) { return RotateSecret(request); });
  service.AddEndpoint<v1::WebhookRequest, v1::WebhookResponse>(
      "Webhook", [this](const auto& request, RequestContext&) { return Webhook(request); });
  service.AddEndpoint<v1::SyncRepoRequest, v1::SyncRepoResponse>(
      "SyncRepo", [this](const auto& request, RequestContext& ctx) {
        return SyncRepo(request, ctx.claims() ? ctx.claims()->email() : "anonymous");
      });
  service.AddEndpoint<v1::ListDeliveriesRequest, v1::ListDeliveriesResponse>(
      "ListDeliveries",
      [this](const auto& request, RequestContext&) { return ListDeliveries(request); });
}

v1::Repo GithubEventsApp::AddRepo(const v1::AddRepoRequest& request) {
  CheckRepoName(request.name());
  CheckSecret(request.secret());
  v1::Repo repo;
  repo.set_name(request.name());
  repo.set_clone_url(request.clone_url().empty()
                         ? fmt::format("https://github.com/{}.git", request.name())
                         : request.clone_url());
  repo.set_branch(request.branch().empty() ? "main" : request.branch());
  if (!IsValidCloneUrl(repo.clone_url())) {
    throw Error::BadRequest(
        "clone_url must be an https://, ssh://, git://, file:// URL, user@host:path or an "
        "absolute path");
  }
  if (!IsValidBranch(repo.branch())) {
    throw Error::BadRequest(
        fmt::format("branch \"{}\" is not a valid git branch name", repo.branch().substr(0, 100)));
  }
  if (!store_.AddRepo(repo, box_.Seal(request.secret()))) {
    throw Error::Conflict(fmt::format(
        "repo {} is registered already; change its secret with RotateSecret (muon repos "
        "rotate-secret {} --secret-file F)",
        request.name(), request.name()));
  }
  log::Info("repo registered", {{"repo", repo.name()}, {"branch", repo.branch()}});
  return *store_.GetRepo(repo.name());
}

v1::ListReposResponse GithubEventsApp::ListRepos() {
  v1::ListReposResponse response;
  for (auto& repo : store_.ListRepos()) *response.add_repos() = std::move(repo);
  return response;
}

v1::RemoveRepoResponse GithubEventsApp::RemoveRepo(const v1::RemoveRepoRequest& request) {
  CheckRepoName(request.name());
  if (!store_.RemoveRepo(request.name())) {
    throw Error::NotFound(fmt::format("repo {} is not registered", request.name()));
  }
  log::Info("repo removed", {{"repo", request.name()}});
  return {};
}

v1::Repo GithubEventsApp::RotateSecret(const v1::RotateSecretRequest& request) {
  CheckRepoName(request.name());
  CheckSecret(request.secret());
  std::chrono::seconds grace = kDefaultGrace;
  if (!request.grace().empty()) {
    const auto parsed = config::ParseDuration(request.grace());
    if (!parsed || *parsed > kMaxGrace) {
      throw Error::BadRequest("grace must be a duration such as 24h, at most 720h");
    }
    grace = std::chrono::duration_cast<std::chrono::seconds>(*parsed);
  }
  auto repo = store_.RotateSecret(request.name(), box_.Seal(request.secret()), grace);
  if (!repo) throw Error::NotFound(fmt::format("repo {} is not registered", request.name()));
  log::Info("repo secret rotated", {{"repo", request.name()}, {"grace_s", grace.count()}});
  return *repo;
}

void GithubEventsApp::Authenticate(const std::string& repo, const std::string& body,
                                   const std::string& signature) {
  const auto secrets = store_.Secrets(repo);
  if (!secrets) {
    // The name comes from an unverified payload: counted without it, so strangers cannot fill
    // the table with names.
    store_.CountRejection("", "unknown repository");
    throw Error::Unauthorized(
        fmt::format("repository {} is not registered with Muon (muon repos add {})", repo, repo));
  }
  if (signature.empty()) {
    store_.CountRejection(repo, "missing signature");
    throw Error::Unauthorized("X-Hub-Signature-256 is missing; set a secret on the GitHub webhook");
  }
  for (const auto* sealed :
       {&secrets->sealed, secrets->previous_sealed ? &*secrets->previous_sealed : nullptr}) {
    if (sealed == nullptr) continue;
    const auto secret = box_.Open(*sealed);
    if (!secret) {
      throw Error::Internal(fmt::format(
          "the secret of repo {} cannot be decrypted: MUON_GITHUB_SECRET_KEY_FILE holds another "
          "key than the one it was stored with",
          repo));
    }
    if (VerifySignature(*secret, body, signature)) return;
  }
  store_.CountRejection(repo, "bad signature");
  throw Error::Unauthorized(
      "X-Hub-Signature-256 does not match the body signed with the repo's secret");
}

v1::WebhookResponse GithubEventsApp::Webhook(const v1::WebhookRequest& request) {
  const std::map<std::string, std::string> headers(request.headers().begin(),
                                                   request.headers().end());
  const WebhookHeaders meta = ParseWebhookHeaders(headers);
  const v1::GithubPayload payload = ParsePayload(request.body());
  const std::string& repo = payload.repository().full_name();
  Authenticate(repo, request.body(), meta.signature);

  NewDelivery delivery{.delivery_id = meta.delivery_id,
                       .repo = repo,
                       .event = meta.event,
                       .body_bytes = static_cast<int64_t>(request.body().size())};
  v1::WebhookResponse response;
  response.set_delivery_id(meta.delivery_id);
  if (meta.event == "push") {
    delivery.status = "accepted";
    delivery.ref = payload.ref();
    delivery.before = payload.before();
    delivery.after = payload.after();
    delivery.body = request.body();
    response.set_outcome("accepted");
  } else if (meta.event == "ping") {
    delivery.status = "processed";
    delivery.detail = "pong: the webhook reaches Muon and its signature is right";
    response.set_outcome("pong");
  } else {
    delivery.status = "ignored";
    delivery.detail = fmt::format("Muon acts on push events only, not {}", meta.event);
    response.set_outcome("ignored");
  }
  if (store_.InsertDelivery(delivery) == DeliveryOutcome::kDuplicate) {
    response.set_outcome("duplicate");
  } else if (response.outcome() == "accepted" && processor_) {
    processor_->Wake();
  }
  log::Info("webhook delivery", {{"repo", repo},
                                 {"event", meta.event},
                                 {"delivery", meta.delivery_id},
                                 {"outcome", response.outcome()},
                                 {"bytes", request.body().size()}});
  return response;
}

v1::SyncRepoResponse GithubEventsApp::SyncRepo(const v1::SyncRepoRequest& request,
                                               const std::string& who) {
  CheckRepoName(request.name());
  if (!request.branch().empty() && !IsValidBranch(request.branch())) {
    throw Error::BadRequest("branch is not a valid git branch name");
  }
  auto repo = store_.GetRepo(request.name());
  if (!repo) {
    throw Error::NotFound(fmt::format("repo {} is not registered (muon repos add {} ...)",
                                      request.name(), request.name()));
  }
  if (!bus_) throw Error::Unavailable("github-events is not connected to the builder");
  builder::v1::StartBuildRequest start;
  start.set_repo(repo->name());
  start.set_clone_url(repo->clone_url());
  start.set_ref(request.branch().empty() ? repo->branch() : request.branch());
  start.set_trigger(fmt::format("sync {}", who));
  builder::v1::StartBuildResponse started;
  bus::Headers headers;
  if (service_token_) {
    if (const std::string bearer = service_token_->Bearer(); !bearer.empty()) {
      headers.emplace_back("Authorization", bearer);
    }
  }
  Call(*bus_, PlatformSubject("builder", "StartBuild"), start, started, std::chrono::minutes(5),
       headers);
  v1::SyncRepoResponse response;
  response.set_commit(started.commit());
  for (auto& b : *started.mutable_builds()) *response.add_builds() = std::move(b);
  return response;
}

void GithubEventsApp::StartProcessing(bus::Connection& bus) {
  bus_ = &bus;
  planner_ = std::make_unique<BusBuildPlanner>(
      bus, [this] { return service_token_ ? service_token_->Bearer() : std::string(); });
  ProcessorOptions o = options_.processor;
  if (o.owner.empty()) o.owner = "github-events-" + RandomHex(6);
  processor_ = std::make_unique<PushProcessor>(store_, *planner_, bus, o);
  processor_->Start();
}

void GithubEventsApp::StopProcessing() {
  if (processor_) processor_->Stop();
}

v1::ListDeliveriesResponse GithubEventsApp::ListDeliveries(
    const v1::ListDeliveriesRequest& request) {
  if (!request.repo().empty()) CheckRepoName(request.repo());
  if (request.limit() < 0 || request.limit() > kMaxDeliveries) {
    throw Error::BadRequest(fmt::format("limit must be between 1 and {}", kMaxDeliveries));
  }
  const int limit = request.limit() == 0 ? 50 : request.limit();
  v1::ListDeliveriesResponse response;
  for (auto& d : store_.ListDeliveries(request.repo(), limit)) {
    *response.add_deliveries() = std::move(d);
  }
  for (auto& r : store_.ListRejections(request.repo())) *response.add_rejections() = std::move(r);
  return response;
}

}  // namespace muon::github_events
