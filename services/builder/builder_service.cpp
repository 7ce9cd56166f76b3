#include "builder_service.h"

#include <fmt/format.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <set>

#include "artifact.h"
#include "git_mirror.h"
#include "manifest.h"
#include "muon/common/errors.h"
#include "muon/common/events.h"
#include "muon/common/lease.h"
#include "muon/common/log.h"
#include "muon/common/log_lines.h"
#include "muon/common/random_id.h"

namespace muon::builder {
namespace fs = std::filesystem;
namespace {

constexpr const char* kKickSubject = "muon.builder.queued";
constexpr size_t kLastLines = 20;
constexpr int64_t kMaxFetchBytes = 4 << 20;
// Takes of one build (each after the previous taker died or hit an error) before it is failed.
constexpr int kMaxAttempts = 5;

// Removes a work dir even when a build left read-only directories in it (Go's module cache);
// never throws: a leftover dir is not worth failing a build for.
void RemoveTree(const fs::path& dir) {
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (!ec || !fs::exists(dir, ec)) return;
  for (auto it =
           fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code ignored;
    if (it->is_directory(ignored)) {
      fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ignored);
    }
  }
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::add, ec);
  fs::remove_all(dir, ec);
  if (ec)
    log::Warn("a build's work dir could not be removed",
              {{"dir", dir.string()}, {"error", ec.message()}});
}

std::string Short(const std::string& sha) {
  return sha.substr(0, 12);
}

// The service name a folder gets when its manifest cannot be read: the build then fails with
// the manifest's errors under a recognisable name.
std::string FallbackName(const std::string& repo, const std::string& folder) {
  std::string base = folder.empty() ? repo.substr(repo.find('/') + 1) : folder;
  if (auto slash = base.rfind('/'); slash != std::string::npos) base = base.substr(slash + 1);
  std::string out;
  for (char c : base) {
    const char l = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out += (std::isalnum(static_cast<unsigned char>(l)) ? l : '-');
  }
  while (!out.empty() && !std::isalpha(static_cast<unsigned char>(out.front()))) out.erase(0, 1);
  if (out.size() > 63) out.resize(63);
  return out.empty() ? "unnamed" : out;
}

std::string ManifestPath(const std::string& folder) {
  return folder.empty() ? "muon.yaml" : folder + "/muon.yaml";
}

void CheckRepo(const std::string& repo, const std::string& clone_url) {
  if (!IsValidRepoName(repo)) throw Error::BadRequest("repo must be \"owner/name\"");
  if (clone_url.empty()) throw Error::BadRequest("clone_url is required");
}

}  // namespace

void AddOptions(config::Spec& spec) {
  AddServiceSecretOption(spec);
  spec.String("database-url", "DATABASE_URL", std::nullopt, "PostgreSQL URL (schema builder)", true)
      .String("state-dir", "MUON_BUILDER_STATE_DIR", std::nullopt,
              "where the repository mirrors and the build work dirs live", true)
      .Int("workers", "MUON_BUILDER_WORKERS", 1, 1, 64, "builds run at once by this builder")
      .Duration("lease", "MUON_BUILDER_LEASE", "30s",
                "how long a build stays this builder's without a renewal (another builder takes "
                "it after a crash)")
      .Duration("poll-interval", "MUON_BUILDER_POLL_INTERVAL", "1s",
                "how often an idle worker looks for queued builds (queued builds also wake it)")
      .String("sandbox", "MUON_BUILDER_SANDBOX", "auto",
              "auto (bubblewrap when it works here), bwrap (required), or none");
}

BuilderOptions OptionsFromConfig(const config::Values& values) {
  BuilderOptions o;
  o.database_url = values.String("database-url");
  o.service_secret = ServiceSecretFromConfig(values);
  // Absolute: the sandbox binds the work dir by its path.
  o.state_dir = std::filesystem::absolute(values.String("state-dir"));
  o.workers = static_cast<int>(values.Int("workers"));
  o.lease = std::chrono::duration_cast<std::chrono::seconds>(values.Duration("lease"));
  if (o.lease < std::chrono::seconds(3)) {
    throw config::ConfigError("--lease (env MUON_BUILDER_LEASE) must be at least 3s");
  }
  o.poll = std::chrono::duration_cast<std::chrono::milliseconds>(values.Duration("poll-interval"));
  o.sandbox = values.String("sandbox");
  if (o.sandbox != "auto" && o.sandbox != "bwrap" && o.sandbox != "none") {
    throw config::ConfigError("--sandbox (env MUON_BUILDER_SANDBOX) must be auto, bwrap or none");
  }
  o.owner = values.String("instance");
  o.region = values.String("region");
  return o;
}

ServiceOptions DefaultServiceOptions() {
  return {.name = "builder",
          .kind = ServiceKind::kPlatform,
          .description = "Builds the services a push changed into content-addressed artifacts",
          .concurrency = 8};
}

BuilderApp::BuilderApp(BuilderOptions options, bus::Connection& bus)
    : options_(std::move(options)),
      bus_(bus),
      pool_(db::PoolOptions{.url = options_.database_url,
                            .max_connections = static_cast<size_t>(options_.workers) * 2 + 4,
                            .application_name = "muon-builder"}),
      builds_(pool_),
      artifacts_(pool_) {
  pool_.Check();
  builds_.Migrate();
  fs::create_directories(MirrorsDir());
  fs::create_directories(options_.state_dir / "work");
  if (options_.owner.empty()) options_.owner = "builder-" + RandomHex(6);
  js_ = std::make_unique<bus::JetStream>(bus_);
  if (auto ec = js_->EnsureStream(events::StreamConfig())) {
    throw std::runtime_error("cannot create the EVENTS stream: " + ec.message());
  }
  sandbox_ = options_.sandbox == "none" ? Sandbox::kNone : DetectSandbox();
  if (options_.sandbox == "bwrap" && sandbox_ != Sandbox::kBubblewrap) {
    throw std::runtime_error(
        "--sandbox bwrap: bubblewrap does not work here (install the bubblewrap package; it needs "
        "root or unprivileged user namespaces)");
  }
  if (options_.sandbox == "auto" && sandbox_ == Sandbox::kNone) {
    log::Warn("bubblewrap does not work here: build steps run without a sandbox");
  }
}

BuilderApp::~BuilderApp() {
  Stop();
}

void BuilderApp::Register(Service& service, bool authorize) {
  if (authorize) {
    service_token_ = std::make_unique<ServiceTokenSource>(bus_, "builder", options_.service_secret);
    verifier_ = std::make_unique<token::Verifier>(BusKeyFetcher(bus_));
    rules_ = std::make_unique<rules::RuleCache>(
        BusRuleFetcher(bus_, [this] { return service_token_->Bearer(); }));
    service.SetAuthorizer(MakeAuthorizer(*verifier_, *rules_));
  }
  service.AddEndpoint<v1::PlanPushRequest, v1::PlanPushResponse>(
      "PlanPush", [this](const auto& request, RequestContext&) { return PlanPush(request); });
  service.AddEndpoint<v1::StartBuildRequest, v1::StartBuildResponse>(
      "StartBuild", [this](const auto& request, RequestContext& ctx) {
        // A clone URL rewrites the repo's shared mirror: only platform services (github-events'
        // SyncRepo, with the registered URL) may name one; people build registered repos.
        if (!request.clone_url().empty() && ctx.claims()) {
          const auto& roles = ctx.claims()->roles();
          if (std::find(roles.begin(), roles.end(), "service") == roles.end()) {
            throw Error::Forbidden(
                "clone_url is set by the platform: build a registered repo (muon repos add), "
                "e.g. muon deploy SERVICE --ref REF --repo OWNER/NAME");
          }
        }
        v1::StartBuildRequest r = request;
        if (r.trigger().empty()) {
          r.set_trigger(
              fmt::format("deploy {}", ctx.claims() ? ctx.claims()->email() : "anonymous"));
        }
        return StartBuild(r);
      });
  service.AddEndpoint<v1::ListBuildsRequest, v1::ListBuildsResponse>(
      "ListBuilds", [this](const auto& request, RequestContext&) { return ListBuilds(request); });
  service.AddEndpoint<v1::GetBuildRequest, v1::Build>(
      "GetBuild", [this](const auto& request, RequestContext&) { return GetBuild(request); });
  service.AddEndpoint<v1::FetchArtifactRequest, v1::FetchArtifactResponse>(
      "FetchArtifact",
      [this](const auto& request, RequestContext&) { return FetchArtifact(request); });
}

void BuilderApp::Start() {
  kick_ = bus_.Subscribe(kKickSubject, [this](bus::Msg&) { Wake(); });
  for (int i = 0; i < options_.workers; ++i) {
    threads_.emplace_back([this, i] { WorkerLoop(i); });
  }
}

void BuilderApp::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void BuilderApp::Wake() {
  {
    std::lock_guard lock(mu_);
    ++wakeups_;
  }
  cv_.notify_all();
}

namespace {

void PublishEvent(bus::JetStream& js, const v1::BuildEvent& event, const std::string& id) {
  const std::string data = event.SerializeAsString();
  const std::string subject = "muon.evt.build." + events::SubjectToken(event.build().service());
  std::error_code ec;
  for (int attempt = 0; attempt < 3; ++attempt) {
    bus::PubAck ack;
    if (!(ec = js.Publish(subject, data, id, ack))) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(200 << attempt));
  }
  log::Error("publishing a build event failed; the build's state is in builder.builds",
             {{"build", event.build().id()}, {"type", event.type()}, {"error", ec.message()}});
}

// One id per state change: a retried publish of it is dropped by the stream, while a build
// queued again (created_at moves) is a new event.
std::string EventId(const std::string& type, const v1::Build& build) {
  return fmt::format("build.{}.{}.{}.{}", build.id(), type, build.attempts(),
                     google::protobuf::util::TimeUtil::TimestampToMicroseconds(build.created_at()));
}

}  // namespace

void BuilderApp::Publish(const std::string& type, const v1::Build& build) {
  v1::BuildEvent event;
  event.set_type(type);
  *event.mutable_build() = build;
  *event.mutable_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
  PublishEvent(*js_, event, EventId(type, build));
}

void BuilderApp::PublishCandidate(const v1::Build& build, const Handover& handover, bool again) {
  v1::BuildEvent event;
  event.set_type("release_candidate");
  *event.mutable_build() = build;
  *event.mutable_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
  event.set_ref(handover.ref);
  event.set_default_branch(handover.default_branch);
  // The ref is part of the id: the same build handed over for another branch is a new event,
  // while a repeat for the same ref (a redelivered push) within the duplicate window is dropped.
  std::string id = fmt::format("{}.{}.{}", EventId(event.type(), build),
                               handover.ref.empty() ? "-" : handover.ref,
                               handover.default_branch ? "live" : "preview");
  if (again) id += "." + RandomHex(6);
  PublishEvent(*js_, event, id);
}

void BuilderApp::HandOver(v1::Build& build, const Handover& handover, bool again) {
  if (build.status() == "queued" || build.status() == "running") {
    if (builds_.AddHandover(build.id(), handover)) return;  // its worker hands it over
    // It finished in the meantime.
    if (auto stored = builds_.Get(build.id())) build = std::move(*stored);
  }
  if (build.status() == "succeeded") PublishCandidate(build, handover, again);
}

v1::PlanPushResponse BuilderApp::PlanPush(const v1::PlanPushRequest& request) {
  CheckRepo(request.repo(), request.clone_url());
  if (!IsFullSha(request.after()) || IsZeroSha(request.after())) {
    throw Error::BadRequest("after must be a 40-hex commit id");
  }
  if (!request.before().empty() && !IsFullSha(request.before())) {
    throw Error::BadRequest("before must be a 40-hex commit id");
  }
  if (!request.ref().starts_with("refs/heads/")) {
    throw Error::BadRequest("ref must be a branch (refs/heads/...)");
  }
  GitMirror mirror(MirrorsDir(), request.repo(), request.clone_url());
  try {
    mirror.Fetch();
  } catch (const GitError& e) {
    throw Error::Unavailable(fmt::format("fetching {} failed: {}", request.repo(), e.what()));
  }
  if (!mirror.HasCommit(request.after())) {
    throw Error::NotFound(fmt::format("commit {} is not in {} after a fetch",
                                      Short(request.after()), request.clone_url()));
  }
  const std::vector<std::string> folders = mirror.ServiceFolders(request.after());
  std::vector<std::string> paths(request.changed_paths().begin(), request.changed_paths().end());
  std::string how;
  const bool before_known = !request.before().empty() && !IsZeroSha(request.before()) &&
                            mirror.HasCommit(request.before());
  bool every_service = false;
  if (request.truncated()) {
    if (before_known) {
      paths = mirror.ChangedPaths(request.before(), request.after());
      how = "GitHub truncated the push; diffed before..after in the mirror: ";
    } else {
      every_service = true;
      how = "GitHub truncated the push and its first commit is unknown: every service builds. ";
    }
  } else if (!before_known && paths.empty()) {
    // A branch created at an existing commit lists no commits: its services still need builds
    // (a new branch's preview versions).
    every_service = true;
    how = "a new branch: every service builds. ";
  }

  // A push to the default branch deploys; any other branch makes a preview version.
  const Handover handover{
      .ref = request.ref(),
      .default_branch =
          request.ref() ==
          "refs/heads/" + (request.default_branch().empty() ? "main" : request.default_branch())};
  v1::PlanPushResponse response;
  std::set<std::string> affected;
  for (const auto& folder : folders) {
    if (every_service) affected.insert(folder);
  }
  for (const auto& path : paths) {
    if (auto folder = OwningFolder(folders, path)) affected.insert(*folder);
  }
  for (const auto& folder : folders) {
    std::string name = FallbackName(request.repo(), folder);
    if (auto text = mirror.Show(request.after(), ManifestPath(folder))) {
      auto parsed = ParseManifest(*text);
      if (parsed.manifest) name = parsed.manifest->name;
    }
    response.add_services(name);
    if (!affected.count(folder)) continue;
    BuildSpec spec{.repo = request.repo(),
                   .clone_url = request.clone_url(),
                   .ref = request.ref(),
                   .commit = request.after(),
                   .service = name,
                   .folder = folder,
                   .trigger = request.trigger(),
                   .default_branch = handover.default_branch};
    bool created = false;
    v1::Build build = builds_.Enqueue(spec, created);
    if (created) {
      Publish("queued", build);
    } else {
      // Built (or building) for another push: the same commit pushed to another branch (a
      // feature branch fast-forwarded into main) is handed over for this ref too, or it would
      // never be deployed there.
      HandOver(build, handover, /*again=*/false);
    }
    *response.add_builds() = std::move(build);
  }
  if (response.builds_size() == 0) {
    std::string listed;
    for (size_t i = 0; i < paths.size() && i < 5; ++i) listed += (i ? ", " : "") + paths[i];
    if (paths.size() > 5) listed += fmt::format(", and {} more", paths.size() - 5);
    response.set_detail(folders.empty()
                            ? fmt::format("{}no service: no folder holds a muon.yaml at {}", how,
                                          Short(request.after()))
                            : fmt::format("{}no service changed ({} path{}: {})", how, paths.size(),
                                          paths.size() == 1 ? "" : "s", listed));
  } else {
    std::string names;
    for (const auto& b : response.builds()) names += (names.empty() ? "" : ", ") + b.service();
    response.set_detail(fmt::format("{}builds: {}", how, names));
    Wake();
    bus_.Publish(kKickSubject, "");
  }
  return response;
}

v1::StartBuildResponse BuilderApp::StartBuild(const v1::StartBuildRequest& request) {
  if (request.ref().empty()) throw Error::BadRequest("ref is required (a commit or a branch)");
  if (!request.service().empty() && !IsValidServiceName(request.service())) {
    throw Error::BadRequest("service is not a valid service name");
  }
  std::string repo = request.repo();
  std::string clone_url = request.clone_url();
  if (repo.empty() || clone_url.empty()) {
    if (repo.empty() && request.service().empty()) {
      throw Error::BadRequest("name the service, the repo, or both");
    }
    auto last = builds_.List(repo.empty() ? request.service() : "", repo, 1);
    if (last.empty()) {
      throw Error::NotFound(
          repo.empty()
              ? fmt::format("{} was never built: name its repo (muon deploy {} --ref {} --repo "
                            "owner/name)",
                            request.service(), request.service(), request.ref())
              : fmt::format("no build of {} yet: give its clone URL", repo));
    }
    if (repo.empty()) repo = last[0].repo();
    if (clone_url.empty()) clone_url = last[0].clone_url();
  }
  CheckRepo(repo, clone_url);
  GitMirror mirror(MirrorsDir(), repo, clone_url);
  try {
    mirror.Fetch();
  } catch (const GitError& e) {
    throw Error::Unavailable(fmt::format("fetching {} failed: {}", repo, e.what()));
  }
  auto commit = mirror.Resolve(request.ref());
  if (!commit) {
    throw Error::NotFound(fmt::format("{} is neither a branch nor a commit of {}",
                                      request.ref().substr(0, 100), repo));
  }
  v1::StartBuildResponse response;
  response.set_commit(*commit);
  std::vector<std::string> names;
  bool queued_any = false;
  for (const auto& folder : mirror.ServiceFolders(*commit)) {
    std::string name = FallbackName(repo, folder);
    if (auto text = mirror.Show(*commit, ManifestPath(folder))) {
      auto parsed = ParseManifest(*text);
      if (parsed.manifest) name = parsed.manifest->name;
    }
    names.push_back(name);
    if (!request.service().empty() && name != request.service()) continue;
    const std::string ref = mirror.IsBranch(request.ref()) ? "refs/heads/" + request.ref() : "";
    bool created = false;
    v1::Build build = builds_.Enqueue({.repo = repo,
                                       .clone_url = clone_url,
                                       .ref = ref,
                                       .commit = *commit,
                                       .service = name,
                                       .folder = folder,
                                       .trigger = request.trigger(),
                                       .default_branch = true},
                                      created);
    // An explicit deploy goes live, whichever branch the build was first made for.
    const Handover handover{.ref = ref, .default_branch = true};
    if (created) {
      Publish("queued", build);
      queued_any = true;
    } else if (build.status() == "failed" && builds_.Requeue(build.id())) {
      // Asked again by hand: a failed build gets another go (the cause may be fixed outside the
      // repo, e.g. a flaky fetch), and goes live when it succeeds.
      builds_.AddHandover(build.id(), handover);
      build = *builds_.Get(build.id());
      Publish("queued", build);
      queued_any = true;
    } else {
      // Identical inputs: a succeeded build's artifact is handed over again, nothing is rebuilt;
      // a queued or running one is handed over for this deploy too when it succeeds.
      HandOver(build, handover, /*again=*/true);
    }
    *response.add_builds() = std::move(build);
  }
  if (response.builds_size() == 0) {
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    throw Error::NotFound(
        names.empty() ? fmt::format("no folder of {} holds a muon.yaml at {}", repo, Short(*commit))
                      : fmt::format("{} has no service {} at {}; its services: {}", repo,
                                    request.service(), Short(*commit), list));
  }
  if (queued_any) {
    Wake();
    bus_.Publish(kKickSubject, "");
  }
  return response;
}

v1::ListBuildsResponse BuilderApp::ListBuilds(const v1::ListBuildsRequest& request) {
  if (!request.service().empty() && !IsValidServiceName(request.service())) {
    throw Error::BadRequest("service is not a valid service name");
  }
  if (!request.repo().empty() && !IsValidRepoName(request.repo())) {
    throw Error::BadRequest("repo must be \"owner/name\"");
  }
  if (request.limit() < 0 || request.limit() > 500) throw Error::BadRequest("limit must be 1..500");
  v1::ListBuildsResponse response;
  for (auto& b : builds_.List(request.service(), request.repo(),
                              request.limit() == 0 ? 20 : request.limit())) {
    *response.add_builds() = std::move(b);
  }
  return response;
}

v1::Build BuilderApp::GetBuild(const v1::GetBuildRequest& request) {
  if (request.id().empty() || request.id().size() > 64) throw Error::BadRequest("id is required");
  auto build = builds_.Get(request.id());
  if (!build) throw Error::NotFound(fmt::format("no build {}", request.id()));
  return *build;
}

v1::FetchArtifactResponse BuilderApp::FetchArtifact(const v1::FetchArtifactRequest& request) {
  const std::string& digest = request.digest();
  if (!IsValidDigest(digest))
    throw Error::BadRequest("digest must be 64 lowercase hex digits (sha256)");
  if (request.offset() < 0) throw Error::BadRequest("offset must be >= 0");
  if (request.max_bytes() < 0 || request.max_bytes() > kMaxFetchBytes) {
    throw Error::BadRequest("max_bytes must be 1..4194304");
  }
  auto size = artifacts_.Size(digest);
  if (!size) throw Error::NotFound(fmt::format("no artifact {}", digest));
  v1::FetchArtifactResponse response;
  response.set_size(*size);
  response.set_data(artifacts_.Read(digest, request.offset(),
                                    request.max_bytes() == 0 ? 512 * 1024 : request.max_bytes()));
  return response;
}

void BuilderApp::WorkerLoop(int worker) {
  // Each worker holds leases under its own name: a build whose lease ran out while its worker was
  // cut off from the database, taken again by a sibling, must not look like the sibling's own.
  const std::string owner = fmt::format("{}/{}", options_.owner, worker);
  while (true) {
    uint64_t seen = 0;
    {
      std::lock_guard lock(mu_);
      if (stop_) return;
      seen = wakeups_;
    }
    std::optional<v1::Build> build;
    try {
      build = builds_.Claim(owner, options_.lease);
    } catch (const std::exception& e) {
      log::Warn("taking a queued build failed", {{"worker", worker}, {"error", e.what()}});
    }
    if (build) {
      RunBuild(std::move(*build), owner);
      continue;
    }
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, options_.poll, [&] { return stop_ || wakeups_ != seen; });
  }
}

void BuilderApp::RunBuild(v1::Build build, const std::string& owner) {
  using Clock = std::chrono::steady_clock;
  const auto started = Clock::now();
  log::Info("build started", {{"build", build.id()},
                              {"service", build.service()},
                              {"commit", Short(build.commit())},
                              {"attempt", build.attempts()}});
  Publish("started", build);
  // The lease is renewed while the build runs; losing it (another builder took the build after
  // this one stalled) stops the build without writing anything.
  LeaseRenewer lease(options_.lease / 3, options_.lease,
                     [&] { return builds_.Renew(build.id(), owner, options_.lease); });
  loglines::Shipper shipper(bus_, {.service = build.service(),
                                   .instance = build.id(),
                                   .release = Short(build.commit()),
                                   .region = options_.region,
                                   .source = logs::v1::SOURCE_BUILD});
  auto note = [&](std::string text) {
    shipper.EmitFrom(logs::v1::SOURCE_BUILD, logs::v1::SEVERITY_INFO, std::move(text));
  };
  LastLines last(kLastLines);
  const fs::path work =
      options_.state_dir / "work" / fmt::format("{}-{}", build.id(), build.attempts());
  auto finish = [&] {
    lease.Stop();
    RemoveTree(work);
    shipper.Flush(std::chrono::seconds(5));
  };
  auto fail = [&](Failure failure) {
    if (failure.last_lines.empty()) failure.last_lines = last.Get();
    // Build output is anything a step printed (Latin-1, binary, a line cut mid-character): the
    // database takes UTF-8 only.
    for (auto& line : failure.last_lines) loglines::SanitizeText(line);
    loglines::SanitizeText(failure.detail);
    note(fmt::format(
        "build failed ({}{}{})", failure.category,
        failure.step.empty() ? "" : ", step " + failure.step,
        failure.exit_code >= 0 ? fmt::format(", exit code {}", failure.exit_code) : ""));
    if (!builds_.Fail(build.id(), owner, failure)) return;
    if (auto stored = builds_.Get(build.id())) Publish("failed", *stored);
    log::Info("build failed",
              {{"build", build.id()}, {"category", failure.category}, {"step", failure.step}});
  };
  auto succeed = [&](const std::string& digest, int64_t size, bool reused, const std::string& tree,
                     const std::string& manifest_text) {
    if (!builds_.Succeed(build.id(), owner, digest, size, reused, tree, manifest_text)) return;
    if (auto stored = builds_.Get(build.id())) {
      Publish("succeeded", *stored);
      // For the ref that created the build, then for those asked for while it ran.
      for (const auto& handover : builds_.Handovers(build.id()))
        PublishCandidate(*stored, handover);
    }
    log::Info("build succeeded", {{"build", build.id()}, {"digest", digest}, {"reused", reused}});
  };
  try {
    note(fmt::format("build {} of {} at {} (attempt {}) on {}", build.id(), build.service(),
                     Short(build.commit()), build.attempts(), owner));
    // Work dirs of earlier attempts (their builders died) go first.
    for (int attempt = 1; attempt < build.attempts(); ++attempt) {
      RemoveTree(options_.state_dir / "work" / fmt::format("{}-{}", build.id(), attempt));
    }
    RemoveTree(work);
    if (build.attempts() > kMaxAttempts) {
      fail({.category = "internal_error",
            .detail = fmt::format("{} builders stopped while running this build (killed, out of "
                                  "memory?); muon deploy {} --ref {} tries again",
                                  build.attempts() - 1, build.service(), build.commit())});
      finish();
      return;
    }
    GitMirror mirror(MirrorsDir(), build.repo(), build.clone_url());
    try {
      mirror.Fetch();
      if (!mirror.HasCommit(build.commit())) {
        throw GitError(fmt::format("commit {} is not in {}", build.commit(), build.clone_url()));
      }
    } catch (const GitError& e) {
      fail({.category = "fetch_failed", .last_lines = {e.what()}, .detail = e.what()});
      finish();
      return;
    }
    // The manifest first: a reused build carries it too (the scheduler runs the service by it).
    std::optional<Manifest> manifest;
    std::string manifest_text;
    {
      auto text = mirror.Show(build.commit(), ManifestPath(build.folder()));
      ManifestResult parsed = text ? ParseManifest(*text) : ManifestResult{};
      if (!text) parsed.errors.push_back({"", "muon.yaml is missing"});
      if (!parsed.manifest) {
        std::vector<std::string> lines;
        for (const auto& e : parsed.errors) {
          lines.push_back(FormatManifestErrors({e}, ManifestPath(build.folder())));
          note(lines.back());
        }
        fail({.category = "manifest_invalid",
              .last_lines = lines,
              .detail = fmt::format("{} is not valid", ManifestPath(build.folder()))});
        finish();
        return;
      }
      manifest = std::move(parsed.manifest);
      manifest_text = std::move(*text);
      // Stored in the database: UTF-8 only (a valid manifest is text, but be sure).
      loglines::SanitizeText(manifest_text);
    }
    const std::string tree = mirror.TreeId(build.commit(), build.folder());
    if (auto reusable = builds_.Reusable(build.repo(), build.service(), tree);
        reusable && artifacts_.Has(reusable->first)) {
      note(fmt::format("the folder {} is unchanged since an earlier build: reusing artifact {}",
                       build.folder().empty() ? "(root)" : build.folder(), reusable->first));
      succeed(reusable->first, reusable->second, true, tree, manifest_text);
      finish();
      return;
    }
    mirror.Export(build.commit(), work / "src");
    const fs::path folder = work / "src" / build.folder();
    const auto build_deadline = Clock::now() + manifest->build_timeout;
    int64_t output_bytes = 0;
    bool capped = false;
    std::map<std::string, std::string> env = manifest->build_env;
    env["MUON_SERVICE"] = build.service();
    env["MUON_BUILD_ID"] = build.id();
    env["MUON_COMMIT"] = build.commit();
    for (const auto& step : manifest->steps) {
      note(fmt::format("==> {}: {}", step.name, step.run));
      const auto left =
          std::chrono::duration_cast<std::chrono::seconds>(build_deadline - Clock::now());
      StepOptions so{.run = step.run,
                     .work_dir = work,
                     .cwd = folder,
                     .env = env,
                     .timeout = std::max(std::chrono::seconds(1), std::min(step.timeout, left)),
                     .sandbox = sandbox_,
                     .hidden = {options_.state_dir}};
      const StepOutcome outcome = RunStep(
          so,
          [&](std::string line, bool from_stderr) {
            last.Add(line);
            output_bytes += static_cast<int64_t>(line.size()) + 1;
            if (output_bytes > manifest->output_cap_bytes) {
              if (!capped) {
                capped = true;
                note(
                    fmt::format("output cap of {} bytes reached: the rest of this build's "
                                "output is not shipped",
                                manifest->output_cap_bytes));
              }
              return;
            }
            shipper.EmitLine(std::move(line), from_stderr);
          },
          [&] {
            std::lock_guard lock(mu_);
            return !stop_ && !lease.lost();
          });
      if (outcome.cancelled) {
        note(lease.lost() ? "this builder lost the build's lease; another builder takes it over"
                          : "the builder is stopping; another builder takes the build over");
        finish();
        return;
      }
      if (outcome.timed_out) {
        const bool whole = so.timeout < step.timeout;  // cut short by the build's own timeout
        fail({.category = "timeout",
              .step = step.name,
              .exit_code = -1,
              .detail = whole ? fmt::format("the build ran past its timeout ({})",
                                            config::FormatDuration(manifest->build_timeout))
                              : fmt::format("step {} ran past its timeout ({})", step.name,
                                            config::FormatDuration(step.timeout))});
        finish();
        return;
      }
      if (!outcome.status.Success()) {
        fail({.category = "build_failed",
              .step = step.name,
              .exit_code = outcome.status.code,
              .detail = fmt::format("step {} failed: {}", step.name, outcome.status.Describe())});
        finish();
        return;
      }
    }
    const fs::path packed = work / "artifact.tar.gz";
    PackedArtifact artifact;
    try {
      artifact = PackArtifact(folder, manifest->outputs, packed);
    } catch (const ArtifactError& e) {
      fail({.category = "output_invalid", .last_lines = {e.what()}, .detail = e.what()});
      finish();
      return;
    }
    artifacts_.Put(artifact.digest, packed);
    note(fmt::format(
        "artifact {} ({} bytes, {} files) in {} ms", artifact.digest, artifact.size, artifact.files,
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count()));
    succeed(artifact.digest, artifact.size, false, tree, manifest_text);
  } catch (const std::exception& e) {
    if (build.attempts() >= kMaxAttempts) {
      // The same failure every time (not the database or the disk coming back): say so.
      try {
        fail({.category = "internal_error",
              .last_lines = {e.what()},
              .detail = fmt::format("the builder failed {} times on this build: {}",
                                    build.attempts(), e.what())});
      } catch (const std::exception&) {
        // The database is still away: the lease runs out and the next attempt ends it.
      }
    } else {
      // The database or the disk failed under us: the lease runs out and a builder tries again.
      log::Error("build interrupted; it is retried after its lease expires",
                 {{"build", build.id()}, {"error", e.what()}});
      note(fmt::format("build interrupted ({}); it is retried", e.what()));
    }
  }
  finish();
}

}  // namespace muon::builder
