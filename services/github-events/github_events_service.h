#pragma once
// muon-github-events: registered repositories and the webhook intake. A delivery is verified
// (X-Hub-Signature-256 against the repo's secret, or its previous one during a rotation's
// grace), committed to PostgreSQL keyed by X-GitHub-Delivery and only then answered, so GitHub's
// 2xx means the delivery is durable; a redelivery is recognised and counted, not stored again.
//
//   muon::github_events::GithubEventsApp app(OptionsFromConfig(config));
//   app.Register(service, bus);  // endpoints + authorization

#include <chrono>
#include <memory>
#include <string>

#include "muon/common/authz.h"
#include "muon/common/bus.h"
#include "muon/common/config.h"
#include "muon/common/service.h"
#include "push_processor.h"
#include "muon/common/secret_box.h"
#include "store.h"

namespace muon::github_events {

struct GithubEventsOptions {
  std::string database_url;
  std::string service_secret;  // empty: admin endpoints refuse every caller (no rules)
  std::string secret_key_hex;  // SecretBox key for webhook secrets at rest
  size_t db_connections = 8;
  ProcessorOptions processor;
};

void AddOptions(config::Spec& spec);
GithubEventsOptions OptionsFromConfig(const config::Values& values);
ServiceOptions DefaultServiceOptions();

class GithubEventsApp {
 public:
  // Connects to Postgres and migrates the schema; throws on failure.
  explicit GithubEventsApp(GithubEventsOptions options);

  // The endpoints; tokens and rules are checked unless `authorize` is false (tests of the
  // handlers alone).
  void Register(Service& service, bus::Connection& bus, bool authorize = true);

  v1::Repo AddRepo(const v1::AddRepoRequest& request);
  v1::ListReposResponse ListRepos();
  v1::RemoveRepoResponse RemoveRepo(const v1::RemoveRepoRequest& request);
  v1::Repo RotateSecret(const v1::RotateSecretRequest& request);
  v1::WebhookResponse Webhook(const v1::WebhookRequest& request);
  v1::ListDeliveriesResponse ListDeliveries(const v1::ListDeliveriesRequest& request);
  // Asks the builder (over `bus`, set by StartProcessing) to build the branch head.
  v1::SyncRepoResponse SyncRepo(const v1::SyncRepoRequest& request, const std::string& who);

  // Starts processing accepted pushes (asking the builder over `bus`); StopProcessing ends it.
  void StartProcessing(bus::Connection& bus);
  void StopProcessing();

  PgStore& store() { return store_; }

 private:
  // Throws Error 401 (counting the rejection) unless `signature` is right for one of the repo's
  // secrets.
  void Authenticate(const std::string& repo, const std::string& body, const std::string& signature);

  GithubEventsOptions options_;
  SecretBox box_;
  PgStore store_;
  std::unique_ptr<ServiceTokenSource> service_token_;
  std::unique_ptr<BuildPlanner> planner_;
  std::unique_ptr<PushProcessor> processor_;
  bus::Connection* bus_ = nullptr;
  std::unique_ptr<token::Verifier> verifier_;
  std::unique_ptr<rules::RuleCache> rules_;
};

}  // namespace muon::github_events
