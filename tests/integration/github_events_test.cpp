// github-events over a real PostgreSQL: repositories, the webhook intake (signature, storage,
// redelivery, ping, other events), secret rotation, and that a refused delivery stores nothing
// but a count. The HTTP path (ingress -> github-events) is covered end to end in tests/e2e.

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <pqxx/pqxx>
#include <string>

#include "github_events_service.h"
#include "harness.h"
#include "muon/common/errors.h"
#include "webhook.h"

using namespace std::chrono_literals;
namespace v1 = muon::github_events::v1;
using muon::github_events::GithubEventsApp;

namespace {

const std::string kKey(64, '7');

struct Fixture {
  std::string url = muon::testing::Postgres::Shared().CreateDatabase();
  GithubEventsApp app{{.database_url = url, .secret_key_hex = kKey}};

  int64_t Count(const std::string& sql) {
    pqxx::connection c(url);
    pqxx::read_transaction tx(c);
    return tx.exec1(sql)[0].as<int64_t>();
  }

  v1::Repo Add(const std::string& name, const std::string& secret) {
    v1::AddRepoRequest request;
    request.set_name(name);
    request.set_secret(secret);
    return app.AddRepo(request);
  }
};

std::string PushBody(const std::string& repo, const std::string& after = std::string(40, 'a')) {
  return fmt::format(
      R"({{"ref":"refs/heads/main","before":"{}","after":"{}","created":false,"deleted":false,)"
      R"("commits":[{{"id":"{}","added":[],"removed":[],"modified":["greeter/main.py"]}}],)"
      R"("repository":{{"full_name":"{}","clone_url":"https://github.com/{}.git",)"
      R"("default_branch":"main"}},"pusher":{{"name":"a","email":null}}}})",
      std::string(40, 'b'), after, after, repo, repo);
}

v1::WebhookRequest Delivery(const std::string& event, const std::string& id,
                            const std::string& body, const std::string& signature) {
  v1::WebhookRequest request;
  auto& h = *request.mutable_headers();
  h["content-type"] = "application/json";
  h["x-github-event"] = event;
  h["x-github-delivery"] = id;
  h["x-github-hook-id"] = "123";
  h["user-agent"] = "GitHub-Hookshot/044aadd";
  if (!signature.empty()) h["x-hub-signature-256"] = signature;
  request.set_body(body);
  return request;
}

int CodeOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const muon::Error& e) {
    return e.code();
  }
  return 0;
}

}  // namespace

TEST_CASE("repos: add, list, refuse a second add and bad input, remove", "[github]") {
  Fixture f;
  const auto repo = f.Add("acme/shop", "first secret");
  CHECK(repo.name() == "acme/shop");
  CHECK(repo.branch() == "main");
  CHECK(repo.clone_url() == "https://github.com/acme/shop.git");
  CHECK_FALSE(repo.has_previous_secret_valid_until());

  // The secret is stored sealed, never in the clear.
  CHECK(f.Count("SELECT count(*) FROM github.repos WHERE position('first secret'::bytea IN "
                "secret_sealed) > 0") == 0);
  CHECK(CodeOf([&] { f.Add("acme/shop", "again"); }) == 409);
  CHECK(CodeOf([&] { f.Add("acme", "x"); }) == 400);
  CHECK(CodeOf([&] { f.Add("acme/other", ""); }) == 400);
  v1::AddRepoRequest bad_branch;
  bad_branch.set_name("acme/other");
  bad_branch.set_secret("x");
  bad_branch.set_branch("a..b");
  CHECK(CodeOf([&] { f.app.AddRepo(bad_branch); }) == 400);
  v1::AddRepoRequest local;
  local.set_name("acme/local");
  local.set_secret("x");
  local.set_clone_url("/srv/git/local.git");
  local.set_branch("trunk");
  CHECK(f.app.AddRepo(local).branch() == "trunk");

  const auto listed = f.app.ListRepos();
  REQUIRE(listed.repos_size() == 2);
  CHECK(listed.repos(0).name() == "acme/local");
  CHECK(listed.repos(1).name() == "acme/shop");

  v1::RemoveRepoRequest remove;
  remove.set_name("acme/local");
  f.app.RemoveRepo(remove);
  CHECK(CodeOf([&] { f.app.RemoveRepo(remove); }) == 404);
  CHECK(f.app.ListRepos().repos_size() == 1);
}

TEST_CASE(
    "webhook: a signed push is stored before the answer; a redelivery is counted, not "
    "stored again",
    "[github]") {
  Fixture f;
  f.Add("acme/shop", "s3cret");
  const std::string body = PushBody("acme/shop");
  const auto request =
      Delivery("push", "d-1", body, muon::github_events::SignatureHeader("s3cret", body));
  const auto first = f.app.Webhook(request);
  CHECK(first.outcome() == "accepted");
  CHECK(first.delivery_id() == "d-1");
  CHECK(f.Count("SELECT count(*) FROM github.deliveries WHERE delivery_id = 'd-1' AND status = "
                "'accepted' AND body = convert_to(" +
                pqxx::connection(f.url).quote(body) + ", 'UTF8')") == 1);

  const auto again = f.app.Webhook(request);
  CHECK(again.outcome() == "duplicate");
  CHECK(f.Count("SELECT count(*) FROM github.deliveries") == 1);

  v1::ListDeliveriesRequest list;
  const auto deliveries = f.app.ListDeliveries(list);
  REQUIRE(deliveries.deliveries_size() == 1);
  const auto& d = deliveries.deliveries(0);
  CHECK(d.repo() == "acme/shop");
  CHECK(d.event() == "push");
  CHECK(d.status() == "accepted");
  CHECK(d.ref() == "refs/heads/main");
  CHECK(d.after() == std::string(40, 'a'));
  CHECK(d.redeliveries() == 1);
  CHECK(d.body_bytes() == static_cast<int64_t>(body.size()));
}

TEST_CASE("webhook: ping is answered and recorded; other events are acknowledged and ignored",
          "[github]") {
  Fixture f;
  f.Add("acme/shop", "s3cret");
  const std::string ping =
      R"({"zen":"Design for failure.","hook_id":1,"repository":{"full_name":"acme/shop"}})";
  CHECK(f.app
            .Webhook(
                Delivery("ping", "p-1", ping, muon::github_events::SignatureHeader("s3cret", ping)))
            .outcome() == "pong");
  const std::string star = R"({"action":"created","repository":{"full_name":"acme/shop"}})";
  CHECK(f.app
            .Webhook(
                Delivery("star", "s-1", star, muon::github_events::SignatureHeader("s3cret", star)))
            .outcome() == "ignored");
  CHECK(f.Count("SELECT count(*) FROM github.deliveries WHERE status = 'processed' AND "
                "event = 'ping' AND processed_at IS NOT NULL") == 1);
  CHECK(f.Count("SELECT count(*) FROM github.deliveries WHERE status = 'ignored' AND body IS "
                "NULL") == 1);
}

TEST_CASE("webhook: unknown repo, missing or bad signature are 401 and store only a count",
          "[github]") {
  Fixture f;
  f.Add("acme/shop", "s3cret");
  const std::string body = PushBody("acme/shop");
  CHECK(CodeOf([&] { f.app.Webhook(Delivery("push", "x-1", body, "")); }) == 401);
  CHECK(CodeOf([&] {
          f.app.Webhook(
              Delivery("push", "x-2", body, muon::github_events::SignatureHeader("wrong", body)));
        }) == 401);
  const std::string other = PushBody("evil/repo");
  CHECK(CodeOf([&] {
          f.app.Webhook(Delivery("push", "x-3", other,
                                 muon::github_events::SignatureHeader("s3cret", other)));
        }) == 401);
  // Malformed input is 400 and stores nothing either.
  CHECK(CodeOf([&] { f.app.Webhook(Delivery("push", "x-4", "{not json", "sha256=00")); }) == 400);
  auto form = Delivery("push", "x-5", body, muon::github_events::SignatureHeader("s3cret", body));
  (*form.mutable_headers())["content-type"] = "application/x-www-form-urlencoded";
  CHECK(CodeOf([&] { f.app.Webhook(form); }) == 400);

  CHECK(f.Count("SELECT count(*) FROM github.deliveries") == 0);
  const auto list = f.app.ListDeliveries({});
  CHECK(list.deliveries_size() == 0);
  std::map<std::string, int64_t> counts;
  for (const auto& r : list.rejections()) counts[r.repo() + ": " + r.reason()] = r.count();
  CHECK(counts == std::map<std::string, int64_t>{{"acme/shop: missing signature", 1},
                                                 {"acme/shop: bad signature", 1},
                                                 {": unknown repository", 1}});
  CHECK(f.app.ListRepos().repos(0).rejected_deliveries() == 2);
}

TEST_CASE("rotate-secret: both secrets verify during the grace, only the new one after it",
          "[github]") {
  Fixture f;
  f.Add("acme/shop", "old secret");
  v1::RotateSecretRequest rotate;
  rotate.set_name("acme/shop");
  rotate.set_secret("new secret");
  rotate.set_grace("1h");
  const auto rotated = f.app.RotateSecret(rotate);
  CHECK(rotated.has_previous_secret_valid_until());

  int n = 0;
  auto deliver = [&](const std::string& secret) {
    const std::string body = PushBody("acme/shop", std::string(39, 'c') + std::to_string(n % 10));
    return CodeOf([&] {
      f.app.Webhook(Delivery("push", "r-" + std::to_string(n++), body,
                             muon::github_events::SignatureHeader(secret, body)));
    });
  };
  CHECK(deliver("new secret") == 0);
  CHECK(deliver("old secret") == 0);
  CHECK(deliver("never the secret") == 401);

  rotate.set_secret("newest secret");
  rotate.set_grace("0s");  // the previous one ("new secret") stops at once
  CHECK_FALSE(f.app.RotateSecret(rotate).has_previous_secret_valid_until());
  CHECK(deliver("newest secret") == 0);
  CHECK(deliver("new secret") == 401);
  CHECK(deliver("old secret") == 401);

  rotate.set_grace("forever");
  CHECK(CodeOf([&] { f.app.RotateSecret(rotate); }) == 400);
  rotate.set_name("acme/none");
  rotate.set_grace("");
  CHECK(CodeOf([&] { f.app.RotateSecret(rotate); }) == 404);
}

TEST_CASE("a key other than the one secrets were sealed with is a loud error, not a 401",
          "[github]") {
  Fixture f;
  f.Add("acme/shop", "s3cret");
  GithubEventsApp other({.database_url = f.url, .secret_key_hex = std::string(64, '8')});
  const std::string body = PushBody("acme/shop");
  CHECK(CodeOf([&] {
          other.Webhook(
              Delivery("push", "k-1", body, muon::github_events::SignatureHeader("s3cret", body)));
        }) == 500);
}
