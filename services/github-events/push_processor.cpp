#include "push_processor.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "muon/common/errors.h"
#include "muon/common/events.h"
#include "muon/common/lease.h"
#include "muon/common/log.h"
#include "muon/common/service.h"
#include "webhook.h"

namespace muon::github_events {
namespace {

constexpr size_t kGithubMaxCommits = 2048;
constexpr size_t kGithubMaxFilesPerCommit = 3000;

bool IsRetryable(const Error& e) {
  return e.code() == 503 || e.code() == 504 || e.code() == 500;
}

}  // namespace

builder::v1::PlanPushResponse BusBuildPlanner::PlanPush(
    const builder::v1::PlanPushRequest& request) {
  builder::v1::PlanPushResponse response;
  bus::Headers headers;
  if (const std::string bearer = bearer_(); !bearer.empty())
    headers.emplace_back("Authorization", bearer);
  Call(bus_, PlatformSubject("builder", "PlanPush"), request, response, timeout_, headers);
  return response;
}

bool NeedsDiff(const v1::GithubPayload& push) {
  if (push.forced() || push.commits_size() >= static_cast<int>(kGithubMaxCommits)) return true;
  return std::any_of(push.commits().begin(), push.commits().end(), [](const auto& c) {
    return static_cast<size_t>(c.added_size() + c.modified_size() + c.removed_size()) >=
           kGithubMaxFilesPerCommit;
  });
}

std::vector<std::string> ChangedPaths(const v1::GithubPayload& push) {
  std::set<std::string> paths;
  for (const auto& c : push.commits()) {
    paths.insert(c.added().begin(), c.added().end());
    paths.insert(c.modified().begin(), c.modified().end());
    paths.insert(c.removed().begin(), c.removed().end());
  }
  return {paths.begin(), paths.end()};
}

PushProcessor::PushProcessor(Store& store, BuildPlanner& planner, bus::Connection& bus,
                             ProcessorOptions options)
    : store_(store), planner_(planner), bus_(bus), options_(std::move(options)) {
  js_ = std::make_unique<bus::JetStream>(bus_);
  if (auto ec = js_->EnsureStream(events::StreamConfig())) {
    throw std::runtime_error("cannot create the EVENTS stream: " + ec.message());
  }
}

PushProcessor::~PushProcessor() {
  Stop();
}

void PushProcessor::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void PushProcessor::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void PushProcessor::Wake() {
  {
    std::lock_guard lock(mu_);
    ++wakeups_;
  }
  cv_.notify_all();
}

void PushProcessor::Loop() {
  while (true) {
    uint64_t seen = 0;
    {
      std::lock_guard lock(mu_);
      if (stop_) return;
      seen = wakeups_;
    }
    bool did = false;
    try {
      did = ProcessOne();
    } catch (const std::exception& e) {
      log::Warn("processing deliveries failed; retrying", {{"error", e.what()}});
    }
    if (did) continue;
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, options_.poll, [&] { return stop_ || wakeups_ != seen; });
  }
}

void PushProcessor::PublishEvent(const v1::RepoEvent& event) {
  bus::PubAck ack;
  const std::string id = fmt::format("github.{}.{}", event.delivery_id(), event.type());
  if (auto ec = js_->Publish("muon.evt.github." + events::SubjectToken(event.repo()),
                             event.SerializeAsString(), id, ack)) {
    // The delivery is retried, so the event is too (the stream drops a repeat by its id).
    throw Error::Unavailable("publishing the " + event.type() + " event failed: " + ec.message());
  }
}

bool PushProcessor::ProcessOne() {
  auto claimed = store_.ClaimDelivery(options_.owner, options_.lease);
  if (!claimed) return false;
  const std::string id = claimed->delivery_id;
  // The lease is renewed while the builder works on the plan (a first clone can take minutes).
  LeaseRenewer lease(options_.lease / 3, options_.lease,
                     [&] { return store_.RenewDelivery(id, options_.owner, options_.lease); });
  auto stop_renewing = [&] { lease.Stop(); };
  if (claimed->attempts > options_.max_attempts) {
    // Taken this often without an end: its processors keep dying on it.
    stop_renewing();
    store_.FinishDelivery(id, options_.owner, "failed",
                          fmt::format("gave up after {} attempts (its processors stopped while "
                                      "handling it); muon repos sync {} builds what is missing",
                                      claimed->attempts - 1, claimed->repo),
                          {});
    return true;
  }
  try {
    v1::GithubPayload push;
    try {
      push = ParsePayload(claimed->body);
    } catch (const std::exception& e) {
      stop_renewing();
      store_.FinishDelivery(id, options_.owner, "failed",
                            fmt::format("the stored payload does not parse: {}", e.what()), {});
      return true;
    }
    std::string status = "processed", detail;
    std::vector<std::string> builds;
    const std::string branch =
        push.ref().starts_with("refs/heads/") ? push.ref().substr(11) : std::string();
    if (branch.empty()) {
      detail = fmt::format("not a branch ({}): nothing to build", push.ref());
    } else if (push.deleted()) {
      v1::RepoEvent event;
      event.set_type("branch_deleted");
      event.set_repo(claimed->repo);
      event.set_ref(push.ref());
      event.set_delivery_id(id);
      event.set_detail(fmt::format("branch {} was deleted; its preview versions go", branch));
      PublishEvent(event);
      detail = event.detail();
    } else {
      auto repo = store_.GetRepo(claimed->repo);
      if (!repo) {
        detail = fmt::format("repo {} is no longer registered: nothing to build", claimed->repo);
      } else {
        builder::v1::PlanPushRequest request;
        request.set_repo(claimed->repo);
        request.set_clone_url(repo->clone_url());
        request.set_ref(push.ref());
        // A push to it deploys; to any other branch, a preview version.
        request.set_default_branch(repo->branch());
        request.set_before(push.before());
        request.set_after(push.after());
        for (auto& p : ChangedPaths(push)) request.add_changed_paths(std::move(p));
        request.set_truncated(NeedsDiff(push));
        request.set_trigger(fmt::format("push {}", id));
        const auto plan = planner_.PlanPush(request);
        for (const auto& b : plan.builds()) builds.push_back(b.id());
        detail = plan.detail();
        if (plan.builds_size() == 0 && branch == repo->branch()) {
          v1::RepoEvent event;
          event.set_type("no_service_changes");
          event.set_repo(claimed->repo);
          event.set_ref(push.ref());
          event.set_after(push.after());
          event.set_delivery_id(id);
          event.set_detail(plan.detail());
          PublishEvent(event);
        }
      }
    }
    stop_renewing();
    if (!store_.FinishDelivery(id, options_.owner, status, detail, builds)) {
      log::Warn("a delivery's lease ran out while it was processed; another processor redoes it",
                {{"delivery", id}});
    }
    log::Info("push processed", {{"delivery", id}, {"repo", claimed->repo}, {"detail", detail}});
  } catch (const Error& e) {
    stop_renewing();
    if (IsRetryable(e) && claimed->attempts < options_.max_attempts) {
      const auto delay = std::min<std::chrono::seconds>(
          options_.max_backoff, std::chrono::seconds(1 << std::min(claimed->attempts, 8)));
      store_.RetryDelivery(id, options_.owner,
                           fmt::format("attempt {} failed, retrying in {}s: {}", claimed->attempts,
                                       delay.count(), e.detail()),
                           delay);
    } else {
      store_.FinishDelivery(
          id, options_.owner, "failed",
          IsRetryable(e) ? fmt::format("gave up after {} attempts: {} (muon repos sync {} builds "
                                       "what is missing once the cause is fixed)",
                                       claimed->attempts, e.detail(), claimed->repo)
                         : e.detail(),
          {});
    }
  } catch (const std::exception& e) {
    stop_renewing();
    if (claimed->attempts < options_.max_attempts) {
      store_.RetryDelivery(id, options_.owner, fmt::format("attempt failed: {}", e.what()),
                           std::chrono::seconds(5));
    } else {
      store_.FinishDelivery(
          id, options_.owner, "failed",
          fmt::format("gave up after {} attempts: {}", claimed->attempts, e.what()), {});
    }
  }
  return true;
}

}  // namespace muon::github_events
