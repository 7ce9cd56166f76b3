#include "controller.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "manifest.h"
#include "muon/common/log.h"

namespace muon::scheduler {

namespace {

std::string Label(int version, const std::string& preview) {
  return preview.empty() ? fmt::format("v{}", version)
                         : fmt::format("v{} (preview {})", version, preview);
}

std::string Join(const std::vector<std::string>& items, std::string_view separator = ", ") {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

std::string ShortCommit(const std::string& commit) {
  return commit.substr(0, 7);
}

}  // namespace

Controller::Controller(ControllerOptions options, Store& store, EventLog& events,
                       bus::Connection* bus)
    : options_(std::move(options)), store_(store), events_(events), bus_(bus) {}

Controller::~Controller() {
  Stop();
}

void Controller::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Controller::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  leader_conn_.reset();  // ends the session: a standby takes over at once
  leader_ = false;
}

void Controller::Kick() {
  {
    std::lock_guard lock(mu_);
    kicked_ = true;
  }
  cv_.notify_all();
}

std::string Controller::LockKey(const std::string& service, const std::string& preview) {
  return preview.empty() ? service : fmt::format("{}@{}", service, preview);
}

std::string Controller::LockHolder(int64_t rollout_id) const {
  // Not the controller's name: a leader that takes over goes on holding the same lock.
  return fmt::format("rollout {}", rollout_id);
}

bool Controller::TryLead() {
  try {
    if (!leader_conn_) leader_conn_ = std::make_unique<pqxx::connection>(options_.database_url);
    pqxx::nontransaction tx(*leader_conn_);
    const bool got = tx.exec_params1("SELECT pg_try_advisory_lock(hashtext($1))",
                                     "muon.scheduler.controller." + options_.region)[0]
                         .as<bool>();
    return got;
  } catch (const std::exception& e) {
    log::Warn("controller election: database unreachable", {{"error", e.what()}});
    leader_conn_.reset();
    return false;
  }
}

bool Controller::StillLeading() {
  try {
    pqxx::nontransaction tx(*leader_conn_);
    tx.exec("SELECT 1");
    return true;
  } catch (const std::exception& e) {
    // The session (and with it the advisory lock) is gone: another controller may lead now.
    log::Error("controller lost its database session; it stops leading", {{"error", e.what()}});
    leader_conn_.reset();
    return false;
  }
}

void Controller::Loop() {
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stop_) return;
    }
    if (!leader_) {
      if (TryLead()) {
        leader_ = true;
        log::Info("this controller leads", {{"region", options_.region}, {"id", options_.id}});
        try {
          events_.Record(
              {.type = "controller.leading",
               .message = fmt::format("controller {} (pid {}) leads region {}", options_.id,
                                      getpid(), options_.region),
               .attributes = {{"controller", options_.id}, {"pid", std::to_string(getpid())}}});
        } catch (const std::exception& e) {
          log::Warn("event not recorded", {{"error", e.what()}});
        }
      } else {
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, options_.election_retry, [this] { return stop_; });
        continue;
      }
    } else if (!StillLeading()) {
      leader_ = false;
      continue;
    }
    try {
      ReconcileOnce();
    } catch (const std::exception& e) {
      log::Error("reconcile pass failed; it runs again at the next tick", {{"error", e.what()}});
    }
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, options_.tick, [this] { return stop_ || kicked_; });
    kicked_ = false;
  }
}

int Controller::ReconcileOnce() {
  StartPendingRollouts();
  std::vector<NodeView> nodes = store_.Nodes(options_.node_timeout);
  std::set<std::string> kicked;
  int placed = 0;
  // Lines in a rollout are handled one by one (each takes its lock and may end its rollout);
  // the steady ones are planned together and applied in one transaction, with their events in
  // one statement: a pass that places thousands of instances costs a few round trips.
  auto lines = store_.Lines("");
  const PlannerSettings settings{.min_ready = options_.min_ready};
  const auto now = std::chrono::system_clock::now();
  std::vector<Plan> plans;
  plans.reserve(lines.size());  // LinePlan points into it
  std::vector<Store::LinePlan> steady;
  std::vector<const LineView*> steady_lines;
  for (auto& [line, infos] : lines) {
    if (line.target_version != 0) {
      placed += ReconcileLine(line, nodes, kicked);
      continue;
    }
    plans.push_back(PlanLine(line, nodes, now, settings));
    if (plans.back().starts.empty() && plans.back().stops.empty()) continue;
    steady.push_back({.service = line.service, .preview = line.preview, .plan = &plans.back()});
    steady_lines.push_back(&line);
  }
  const auto ids = store_.ApplyPlans(steady);
  std::vector<EventInput> trail;
  for (size_t i = 0; i < steady.size(); ++i) {
    DescribePlan(*steady_lines[i], *steady[i].plan, ids[i], false, trail, kicked);
    placed += static_cast<int>(ids[i].size());
  }
  events_.RecordMany(trail);
  if (bus_) {
    for (const auto& node : kicked) bus_->Publish(fmt::format("muon.node.{}.kick", node), "");
  }
  const auto mono = std::chrono::steady_clock::now();
  if (mono - last_prune_ > std::chrono::minutes(1)) {
    last_prune_ = mono;
    store_.PruneStopped(std::chrono::minutes(10));
  }
  return placed;
}

void Controller::StartPendingRollouts() {
  for (const v1::Release& release : store_.PendingReleases()) {
    const std::string& service = release.service();
    const std::string& preview = release.preview();
    const std::string key = LockKey(service, preview);
    const std::string label = Label(release.version(), preview);
    auto note_once = [&](const std::string& what, const std::string& message) {
      if (noted_.insert(fmt::format("{}/{}/{}", key, release.version(), what)).second) {
        events_.Record({.service = service,
                        .type = "rollout.waiting",
                        .message = message,
                        .version = release.version()});
      }
    };
    if (auto running = store_.RunningRollout(service, preview)) {
      note_once("rollout",
                fmt::format("{} waits for the rollout of v{} to end", label, running->version));
      continue;
    }
    if (store_.SupersedePending(service, preview, release.version()) > 0) {
      events_.Record(
          {.service = service,
           .type = "release.superseded",
           .message = fmt::format("older pending releases are skipped: {} is newer", label),
           .version = release.version()});
    }
    auto fail = [&](const std::string& category, const std::string& detail) {
      store_.SetReleaseStatus(service, release.version(), "failed", category, detail);
      events_.Record({.service = service,
                      .type = "release.failed",
                      .message = fmt::format("{} cannot roll out: {}", label, detail),
                      .version = release.version(),
                      .attributes = {{"category", category}}});
    };
    const builder::ManifestResult parsed = builder::ParseManifest(release.manifest());
    if (!parsed.manifest) {
      fail("manifest_invalid",
           fmt::format("its muon.yaml is not valid: {}",
                       builder::FormatManifestErrors(parsed.errors, "muon.yaml")));
      continue;
    }
    const builder::Manifest& manifest = *parsed.manifest;
    std::vector<std::string> missing;
    for (const auto& key_name : manifest.required_env) {
      if (std::find(release.env_keys().begin(), release.env_keys().end(), key_name) ==
          release.env_keys().end()) {
        missing.push_back(key_name);
      }
    }
    if (!missing.empty()) {
      std::vector<std::string> assignments;
      for (const auto& m : missing) assignments.push_back(m + "=...");
      fail("config_missing",
           fmt::format("required config not set: {} (set it with: muon env set {} {})",
                       Join(missing), service, Join(assignments, " ")));
      continue;
    }
    // Waves: a service waits while a dependency rolls out, and does not roll out when the same
    // commit failed to roll out for a dependency.
    bool wait = false;
    std::string dependency_failure;
    if (preview.empty()) {
      for (const auto& dependency : manifest.depends_on) {
        if (store_.RunningRollout(dependency, "")) {
          note_once("dep-" + dependency,
                    fmt::format("{} waits for its dependency {} to finish rolling out", label,
                                dependency));
          wait = true;
          continue;
        }
        const auto dep_release = store_.NewestRelease(dependency, "", {});
        if (!dep_release || release.commit().empty() || dep_release->commit() != release.commit()) {
          // Not released for this commit (yet): is it still being built for it? (Services that
          // change together are in one repo: the dependent's.)
          const auto own = store_.GetService(service);
          if (build_probe_ && own && !release.commit().empty() &&
              build_probe_(own->repo, dependency, release.commit())) {
            note_once("build-" + dependency,
                      fmt::format("{} waits for its dependency {} to be built for {}", label,
                                  dependency, ShortCommit(release.commit())));
            wait = true;
          }
          continue;
        }
        if (dep_release->status() == "pending") {
          note_once("dep-" + dependency,
                    fmt::format("{} waits for its dependency {} (v{}) to roll out", label,
                                dependency, dep_release->version()));
          wait = true;
        } else if (dep_release->status() == "failed") {
          dependency_failure =
              fmt::format("its dependency {} failed to roll out the same commit (v{}: {})",
                          dependency, dep_release->version(), dep_release->category());
        }
      }
    }
    if (!dependency_failure.empty()) {
      fail("dependency_failed", dependency_failure);
      continue;
    }
    if (wait) continue;

    int from_version = 0;
    if (preview.empty()) {
      if (auto svc = store_.GetService(service)) from_version = svc->live_version;
    } else if (auto live = store_.NewestRelease(service, preview, {"live"})) {
      from_version = live->version();
    }
    auto rollout = store_.StartRollout(service, release.version(), from_version, preview);
    if (!rollout) continue;  // another controller was quicker (a leader change mid-pass)
    // The deploy lock is taken by the line's reconcile, right after this, like at every tick.
    events_.Record(
        {.service = service,
         .type = "rollout.started",
         .message = fmt::format(
             "rolling out {}{} ({}){}", label,
             release.commit().empty() ? "" : " of " + ShortCommit(release.commit()),
             release.reason(),
             from_version ? fmt::format(", replacing v{} one instance at a time", from_version)
                          : std::string()),
         .version = release.version(),
         .attributes = {{"rollout", std::to_string(rollout->id)},
                        {"from", std::to_string(from_version)}}});
  }
}

void Controller::DescribePlan(const LineView& line, const Plan& plan,
                              const std::vector<std::string>& ids, bool rollout,
                              std::vector<EventInput>& trail, std::set<std::string>& kicked) {
  for (const auto& s : plan.starts) kicked.insert(s.node);
  std::map<std::string, std::string> node_of;
  for (const auto& i : line.instances) node_of[i.id] = i.node;
  for (const auto& s : plan.stops) {
    if (!s.lost) kicked.insert(node_of[s.id]);
  }
  // One event per pass and kind, not per instance: a scale to 50 is one line in the trail.
  if (!ids.empty()) {
    std::vector<std::string> where;
    for (size_t i = 0; i < ids.size(); ++i) {
      where.push_back(fmt::format("{} on {}", ids[i], plan.starts[i].node));
    }
    trail.push_back(
        {.service = line.service,
         .type = rollout ? "rollout.step" : "instance.scheduled",
         .message = fmt::format(
             "starting {} of {}: {}",
             ids.size() == 1 ? std::string("an instance") : fmt::format("{} instances", ids.size()),
             Label(plan.starts.front().version, line.preview), Join(where)),
         .version = plan.starts.front().version});
  }
  for (const auto& s : plan.stops) {
    trail.push_back(
        {.service = line.service,
         .type = s.lost    ? "drift.repaired"
                 : rollout ? "rollout.step"
                           : "instance.stopping",
         .message = s.lost ? fmt::format("instance {} is lost: {}; it is replaced", s.id, s.reason)
                           : fmt::format("stopping {}: {}", s.id, s.reason),
         .instance = s.id});
  }
}

int Controller::ReconcileLine(const LineView& line, std::vector<NodeView>& nodes,
                              std::set<std::string>& kicked) {
  std::optional<RolloutRow> rollout;
  if (line.target_version != 0) {
    rollout = store_.RunningRollout(line.service, line.preview);
    if (!rollout) return 0;  // ended since the lines were read
    v1::Lock held;
    v1::Lock expired;
    const bool got =
        store_.AcquireLock(LockKey(line.service, line.preview), LockHolder(rollout->id),
                           fmt::format("rolling out {} (controller {})",
                                       Label(rollout->version, line.preview), options_.id),
                           options_.lock_ttl, &held, &expired);
    if (got && !expired.holder().empty()) {
      events_.Record({.service = line.service,
                      .type = "lock.expired",
                      .message = fmt::format("the deploy lock held by {} ({}) expired without a "
                                             "renewal; the rollout of v{} takes it over",
                                             expired.holder(), expired.reason(), rollout->version),
                      .version = rollout->version,
                      .attributes = {{"holder", expired.holder()}}});
    }
    if (!got) {
      if (noted_.insert(fmt::format("lock/{}", rollout->id)).second) {
        events_.Record({.service = line.service,
                        .type = "rollout.waiting",
                        .message = fmt::format("the rollout of v{} waits for the deploy lock held "
                                               "by {} ({})",
                                               rollout->version, held.holder(), held.reason()),
                        .version = rollout->version});
      }
      return 0;
    }
  }
  const PlannerSettings settings{.min_ready = options_.min_ready};
  Plan plan = PlanLine(line, nodes, std::chrono::system_clock::now(), settings);

  // A rollout that cannot place anything for long enough fails instead of waiting forever.
  const bool no_node = std::find(plan.notes.begin(), plan.notes.end(),
                                 "no live node to place an instance on") != plan.notes.end();
  if (rollout && !plan.rollout && no_node &&
      std::chrono::system_clock::now() - rollout->started_at > options_.no_node_timeout) {
    plan.rollout = RolloutOutcome{
        .succeeded = false,
        .category = "no_nodes",
        .detail = fmt::format("no live node ran an instance for {} s (start one with "
                              "muon-scheduler --node)",
                              options_.no_node_timeout.count())};
  }

  const std::vector<std::string> ids = store_.ApplyInstances(line.service, line.preview, plan);
  std::vector<EventInput> trail;
  DescribePlan(line, plan, ids, rollout.has_value(), trail, kicked);
  events_.RecordMany(trail);
  if (rollout && no_node && noted_.insert(fmt::format("nonode/{}", rollout->id)).second) {
    events_.Record({.service = line.service,
                    .type = "rollout.waiting",
                    .message = fmt::format("the rollout of v{} waits: no live node to place an "
                                           "instance on",
                                           rollout->version),
                    .version = rollout->version});
  }

  if (rollout && plan.rollout) {
    const RolloutOutcome& outcome = *plan.rollout;
    const std::string label = Label(rollout->version, line.preview);
    std::string pause_reason;
    if (!outcome.succeeded) {
      pause_reason = fmt::format("{} failed: {}{}", label, outcome.category,
                                 outcome.detail.empty() ? "" : " (" + outcome.detail + ")");
    }
    store_.EndRollout(*rollout, outcome, LockHolder(rollout->id), pause_reason);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now() - rollout->started_at);
    if (outcome.succeeded) {
      events_.Record({.service = line.service,
                      .type = "rollout.succeeded",
                      .message = fmt::format("{} is live: {} instance{} available, in {:.1f} s",
                                             label, line.replicas, line.replicas == 1 ? "" : "s",
                                             static_cast<double>(took.count()) / 1000.0),
                      .version = rollout->version,
                      .attributes = {{"rollout", std::to_string(rollout->id)},
                                     {"duration_ms", std::to_string(took.count())}}});
    } else {
      std::string last;
      if (!outcome.last_lines.empty()) last = "; last line: " + outcome.last_lines.back();
      events_.Record(
          {.service = line.service,
           .type = "rollout.failed",
           .message = fmt::format("{} failed ({}): {}{}; {} keeps serving", label, outcome.category,
                                  outcome.detail, last,
                                  rollout->from_version ? fmt::format("v{}", rollout->from_version)
                                                        : std::string("nothing")),
           .version = rollout->version,
           .instance = outcome.instance,
           .attributes = {{"category", outcome.category},
                          {"rollout", std::to_string(rollout->id)}}});
      if (line.preview.empty()) {
        events_.Record({.service = line.service,
                        .type = "autodeploy.paused",
                        .message = fmt::format("auto-deploy paused: {} (a new push or muon deploy "
                                               "{} resumes it)",
                                               pause_reason, line.service),
                        .version = rollout->version});
      }
    }
  }
  return static_cast<int>(ids.size());
}

}  // namespace muon::scheduler
