// The ingress's pure edge logic: routes, trace context, request ids, timeouts, rate limiting,
// and the service catalog built from $SRV.INFO replies.

#include <catch2/catch.hpp>

#include "catalog.h"
#include "edge.h"

using muon::ingress::ParseRoute;
using muon::ingress::RouteKind;
using namespace std::chrono_literals;

TEST_CASE("routes", "[ingress]") {
  auto call = ParseRoute("POST", "/v1/echo/Echo");
  CHECK(call.kind == RouteKind::kCall);
  CHECK(call.service == "echo");
  CHECK(call.method == "Echo");
  CHECK(call.label == "/v1/{service}/{method}");
  CHECK(ParseRoute("POST", "/v1/github-events/Webhook?x=1").service == "github-events");

  CHECK(ParseRoute("GET", "/v1/echo/Echo").kind == RouteKind::kMethodNotAllowed);
  CHECK(ParseRoute("POST", "/v1/echo").kind == RouteKind::kNotFound);
  CHECK(ParseRoute("POST", "/v1/echo/Echo/extra").kind == RouteKind::kNotFound);
  CHECK(ParseRoute("POST", "/v1/ec.ho/Echo").kind == RouteKind::kBadName);
  CHECK(ParseRoute("POST", "/v1/echo/E*").kind == RouteKind::kBadName);
  CHECK(ParseRoute("POST", "/v1//Echo").kind == RouteKind::kBadName);
  CHECK(ParseRoute("GET", "/nope").kind == RouteKind::kNotFound);
  CHECK(ParseRoute("GET", "/nope").label == "other");  // never raw input as a metrics label

  CHECK(ParseRoute("GET", "/healthz").kind == RouteKind::kHealth);
  CHECK(ParseRoute("GET", "/readyz").kind == RouteKind::kReady);
  CHECK(ParseRoute("GET", "/metrics").kind == RouteKind::kMetrics);
  CHECK(ParseRoute("GET", "/v1/services").kind == RouteKind::kServices);
  CHECK(ParseRoute("GET", "/v1/auth/keys").kind == RouteKind::kKeys);
  CHECK(ParseRoute("POST", "/v1/services").kind == RouteKind::kMethodNotAllowed);
}

TEST_CASE("traceparent is kept or started", "[ingress]") {
  const std::string incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  CHECK(muon::ingress::IsValidTraceparent(incoming));
  const auto next = muon::ingress::NextTraceparent(incoming);
  CHECK(muon::ingress::IsValidTraceparent(next));
  CHECK(next.substr(0, 36) == incoming.substr(0, 36));    // same trace
  CHECK(next.substr(36, 16) != incoming.substr(36, 16));  // new span

  for (const char* bad : {"", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                          "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                          "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                          "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"}) {
    INFO(bad);
    CHECK_FALSE(muon::ingress::IsValidTraceparent(bad));
    const auto fresh = muon::ingress::NextTraceparent(bad);
    CHECK(muon::ingress::IsValidTraceparent(fresh));
  }
}

TEST_CASE("request ids", "[ingress]") {
  const auto a = muon::ingress::NewRequestId();
  CHECK(a.size() == 32);
  CHECK(a != muon::ingress::NewRequestId());
  CHECK(muon::ingress::IsAcceptableRequestId("abc-123"));
  CHECK_FALSE(muon::ingress::IsAcceptableRequestId(""));
  CHECK_FALSE(muon::ingress::IsAcceptableRequestId("has space"));
  CHECK_FALSE(muon::ingress::IsAcceptableRequestId(std::string(129, 'a')));
}

TEST_CASE("Muon-Timeout header", "[ingress]") {
  CHECK_FALSE(muon::ingress::ParseTimeoutHeader("", 60s).has_value());
  CHECK(muon::ingress::ParseTimeoutHeader("250ms", 60s) == 250ms);
  CHECK(muon::ingress::ParseTimeoutHeader("5m", 60s) == 60s);  // capped
  CHECK_THROWS_AS(muon::ingress::ParseTimeoutHeader("soon", 60s), std::invalid_argument);
  CHECK_THROWS_AS(muon::ingress::ParseTimeoutHeader("0s", 60s), std::invalid_argument);
}

TEST_CASE("rate limiter: token bucket per client", "[ingress]") {
  muon::ingress::RateLimiter off(0, 0);
  for (int i = 0; i < 1000; ++i) REQUIRE(off.Allow("x"));

  muon::ingress::RateLimiter limiter(10, 5);  // 10/s, burst 10 (at least one second's worth)
  const auto t0 = std::chrono::steady_clock::now();
  int allowed = 0;
  for (int i = 0; i < 20; ++i) allowed += limiter.Allow("a", t0) ? 1 : 0;
  CHECK(allowed == 10);
  CHECK(limiter.Allow("b", t0));  // other clients have their own bucket
  CHECK_FALSE(limiter.Allow("a", t0 + 50ms));
  CHECK(limiter.Allow("a", t0 + 100ms));  // one token refilled after 1/10 s
  CHECK_FALSE(limiter.Allow("a", t0 + 100ms));
}

TEST_CASE("catalog groups $SRV.INFO replies by service", "[ingress]") {
  const std::vector<std::string> replies = {
      R"({"type":"io.nats.micro.v1.info_response","name":"echo","id":"b","version":"1.0.0","metadata":{"region":"eu"},"description":"Echoes","endpoints":[{"name":"Echo","subject":"svc.echo.Echo","queue_group":"echo","metadata":{}}]})",
      R"({"type":"io.nats.micro.v1.info_response","name":"echo","id":"a","version":"1.0.0","metadata":{},"description":"Echoes","endpoints":[{"name":"Echo","subject":"svc.echo.Echo","queue_group":"echo","metadata":{}},{"name":"Sleep","subject":"svc.echo.Sleep","queue_group":"echo","metadata":{}}]})",
      R"({"type":"io.nats.micro.v1.info_response","name":"auth","id":"x","version":"0.1.0","metadata":{},"description":"","endpoints":[]})",
      R"(not json)",
      R"({"type":"io.nats.micro.v1.ping_response","name":"bogus","id":"y","version":"1.0.0"})",
  };
  const auto snapshot = muon::ingress::BuildCatalog(replies);
  REQUIRE(snapshot.services.size() == 2);
  const auto& echo = snapshot.services.at("echo");
  REQUIRE(echo.instances.size() == 2);
  CHECK(echo.instances[0].id() == "a");
  CHECK(echo.methods == std::set<std::string>{"Echo", "Sleep"});
  CHECK(
      muon::ingress::CatalogJson(snapshot) ==
      R"({"services":[{"name":"auth","description":"","instances":[{"id":"x","version":"0.1.0","metadata":{}}],"endpoints":[]},)"
      R"({"name":"echo","description":"Echoes","instances":[{"id":"a","version":"1.0.0","metadata":{}},{"id":"b","version":"1.0.0","metadata":{"region":"eu"}}],)"
      R"("endpoints":[{"name":"Echo","subject":"svc.echo.Echo","queueGroup":"echo"},{"name":"Sleep","subject":"svc.echo.Sleep","queueGroup":"echo"}]}]})");
}
