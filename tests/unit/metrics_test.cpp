#include "muon/common/metrics.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using muon::metrics::HistogramCell;
using muon::metrics::Registry;

TEST_CASE("exposition of a small registry", "[metrics]") {
  Registry registry;
  auto& requests = registry.Counter("b_requests_total", "Requests handled.", {"endpoint", "code"});
  requests.With({"Echo", "200"}).Inc(3);
  requests.With({"Add", "500"}).Inc();
  registry.Gauge("a_inflight", "In-flight requests.").With({}).Set(-2);
  auto& latency = registry.Histogram("c_latency_seconds", "Latency.\nIn seconds, \\ escaped.",
                                     {"endpoint"}, {0.25, 0.5, 1});
  auto& echo = latency.With({"Echo"});
  for (double v : {0.125, 0.25, 0.75, 4.0}) echo.Observe(v);
  registry.Counter("d_empty_total", "No series yet.", {"x"});
  registry.Counter("e_plain_total", "Label-less families start at zero.");

  CHECK(registry.Render() ==
        "# HELP a_inflight In-flight requests.\n"
        "# TYPE a_inflight gauge\n"
        "a_inflight -2\n"
        "# HELP b_requests_total Requests handled.\n"
        "# TYPE b_requests_total counter\n"
        "b_requests_total{endpoint=\"Add\",code=\"500\"} 1\n"
        "b_requests_total{endpoint=\"Echo\",code=\"200\"} 3\n"
        "# HELP c_latency_seconds Latency.\\nIn seconds, \\\\ escaped.\n"
        "# TYPE c_latency_seconds histogram\n"
        "c_latency_seconds_bucket{endpoint=\"Echo\",le=\"0.25\"} 2\n"
        "c_latency_seconds_bucket{endpoint=\"Echo\",le=\"0.5\"} 2\n"
        "c_latency_seconds_bucket{endpoint=\"Echo\",le=\"1\"} 3\n"
        "c_latency_seconds_bucket{endpoint=\"Echo\",le=\"+Inf\"} 4\n"
        "c_latency_seconds_sum{endpoint=\"Echo\"} 5.125\n"
        "c_latency_seconds_count{endpoint=\"Echo\"} 4\n"
        "# HELP d_empty_total No series yet.\n"
        "# TYPE d_empty_total counter\n"
        "# HELP e_plain_total Label-less families start at zero.\n"
        "# TYPE e_plain_total counter\n"
        "e_plain_total 0\n");
}

TEST_CASE("histogram without labels and with the default buckets", "[metrics]") {
  Registry registry;
  auto& h = registry.Histogram("rpc_seconds", "RPC latency");
  h.With({}).Observe(0.00005);  // exactly on the first bound: le is inclusive
  h.With({}).Observe(20);

  // Series without labels have no braces at all, not even on _sum and _count.
  CHECK(registry.Render() ==
        "# HELP rpc_seconds RPC latency\n"
        "# TYPE rpc_seconds histogram\n"
        "rpc_seconds_bucket{le=\"5e-05\"} 1\n"
        "rpc_seconds_bucket{le=\"0.0001\"} 1\n"
        "rpc_seconds_bucket{le=\"0.00025\"} 1\n"
        "rpc_seconds_bucket{le=\"0.0005\"} 1\n"
        "rpc_seconds_bucket{le=\"0.001\"} 1\n"
        "rpc_seconds_bucket{le=\"0.0025\"} 1\n"
        "rpc_seconds_bucket{le=\"0.005\"} 1\n"
        "rpc_seconds_bucket{le=\"0.01\"} 1\n"
        "rpc_seconds_bucket{le=\"0.025\"} 1\n"
        "rpc_seconds_bucket{le=\"0.05\"} 1\n"
        "rpc_seconds_bucket{le=\"0.1\"} 1\n"
        "rpc_seconds_bucket{le=\"0.25\"} 1\n"
        "rpc_seconds_bucket{le=\"0.5\"} 1\n"
        "rpc_seconds_bucket{le=\"1\"} 1\n"
        "rpc_seconds_bucket{le=\"2.5\"} 1\n"
        "rpc_seconds_bucket{le=\"5\"} 1\n"
        "rpc_seconds_bucket{le=\"10\"} 1\n"
        "rpc_seconds_bucket{le=\"+Inf\"} 2\n"
        "rpc_seconds_sum 20.00005\n"
        "rpc_seconds_count 2\n");
  CHECK(muon::metrics::DefaultLatencyBuckets() ==
        std::vector<double>{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                            0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
}

TEST_CASE("histogram bucket arithmetic", "[metrics]") {
  const std::vector<double> bounds = {1, 2, 3};
  HistogramCell cell(&bounds);
  CHECK(cell.CumulativeCounts() == std::vector<uint64_t>{0, 0, 0, 0});
  CHECK(cell.Count() == 0);
  CHECK(cell.Sum() == 0.0);

  for (double v : {-1.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 100.0}) cell.Observe(v);
  // Bounds are inclusive upper limits: 1.0 counts in le="1", 3.0 in le="3".
  CHECK(cell.CumulativeCounts() == std::vector<uint64_t>{3, 5, 7, 8});
  CHECK(cell.Count() == 8);
  CHECK(cell.Sum() == 109.5);

  cell.Observe(std::numeric_limits<double>::quiet_NaN());
  CHECK(cell.CumulativeCounts() == std::vector<uint64_t>{3, 5, 7, 9});
  CHECK(std::isnan(cell.Sum()));

  const std::vector<double> none;
  HistogramCell only_inf(&none);
  only_inf.Observe(42);
  CHECK(only_inf.CumulativeCounts() == std::vector<uint64_t>{1});
}

TEST_CASE("label values are escaped", "[metrics]") {
  Registry registry;
  registry.Counter("x_total", "x", {"path"}).With({"a\"b\\c\nd"}).Inc(2);
  CHECK(registry.Render() ==
        "# HELP x_total x\n"
        "# TYPE x_total counter\n"
        "x_total{path=\"a\\\"b\\\\c\\nd\"} 2\n");
}

TEST_CASE("series are sorted by label values", "[metrics]") {
  Registry registry;
  auto& g = registry.Gauge("g", "g", {"a", "b"});
  g.With({"y", "1"}).Set(1);
  g.With({"x", "2"}).Set(2);
  g.With({"x", "1"}).Add(3);
  g.With({"x", "1"}).Add(-1);
  CHECK(registry.Render() ==
        "# HELP g g\n"
        "# TYPE g gauge\n"
        "g{a=\"x\",b=\"1\"} 2\n"
        "g{a=\"x\",b=\"2\"} 2\n"
        "g{a=\"y\",b=\"1\"} 1\n");
}

TEST_CASE("registration rules", "[metrics]") {
  Registry registry;
  auto& c = registry.Counter("requests_total", "help", {"code"});
  CHECK(&registry.Counter("requests_total", "other help", {"code"}) == &c);
  CHECK_THROWS_AS(registry.Counter("requests_total", "help", {"status"}), std::invalid_argument);
  CHECK_THROWS_AS(registry.Counter("requests_total", "help"), std::invalid_argument);
  CHECK_THROWS_AS(registry.Histogram("requests_total", "help", {"code"}), std::invalid_argument);
  CHECK_THROWS_AS(registry.Gauge("requests_total", "help", {"code"}), std::invalid_argument);

  auto& h = registry.Histogram("latency_seconds", "help", {}, {1, 2});
  CHECK(&registry.Histogram("latency_seconds", "help", {}, {1, 2}) == &h);
  CHECK_THROWS_AS(registry.Histogram("latency_seconds", "help", {}, {1, 3}), std::invalid_argument);
  CHECK_THROWS_AS(registry.Counter("latency_seconds", "help"), std::invalid_argument);

  // The same series comes back for the same label values.
  CHECK(&c.With({"200"}) == &c.With({"200"}));
  CHECK(&c.With({"200"}) != &c.With({"500"}));
  CHECK_THROWS_AS(c.With({}), std::invalid_argument);
  CHECK_THROWS_AS(c.With({"200", "extra"}), std::invalid_argument);
}

TEST_CASE("metric and label names are validated", "[metrics]") {
  Registry registry;
  for (const char* good : {"a", "_a", "a:b", "ns:sub_total", "A9_"}) {
    INFO(good);
    CHECK_NOTHROW(registry.Counter(good, "ok"));
  }
  for (const char* bad : {"", "9a", "a-b", "a b", "a.b", "é"}) {
    INFO(bad);
    CHECK_THROWS_AS(registry.Counter(bad, "bad"), std::invalid_argument);
  }
  CHECK_NOTHROW(registry.Counter("l1", "ok", {"_x", "code2"}));
  CHECK_THROWS_AS(registry.Counter("l2", "bad", {"a:b"}), std::invalid_argument);
  CHECK_THROWS_AS(registry.Counter("l3", "bad", {"9a"}), std::invalid_argument);
  CHECK_THROWS_AS(registry.Counter("l4", "bad", {""}), std::invalid_argument);
  CHECK_THROWS_AS(registry.Counter("l5", "bad", {"__name"}), std::invalid_argument);
  CHECK_THROWS_AS(registry.Counter("l6", "bad", {"a", "a"}), std::invalid_argument);
  CHECK_THROWS_AS(registry.Histogram("l7", "bad", {"le"}), std::invalid_argument);
  CHECK_NOTHROW(registry.Counter("l8", "le is fine outside histograms", {"le"}));

  CHECK_THROWS_AS(registry.Histogram("b1", "bad", {}, {2, 1}), std::invalid_argument);
  CHECK_THROWS_AS(registry.Histogram("b2", "bad", {}, {1, 1}), std::invalid_argument);
  CHECK_THROWS_AS(registry.Histogram("b3", "bad", {}, {1, std::numeric_limits<double>::infinity()}),
                  std::invalid_argument);
  // A rejected registration leaves nothing behind.
  CHECK(registry.Render().find("b1") == std::string::npos);
}

TEST_CASE("concurrent recording is exact", "[metrics]") {
  Registry registry;
  auto& counter = registry.Counter("hits_total", "hits", {"worker"});
  auto& shared = registry.Counter("shared_total", "shared").With({});
  auto& hist = registry.Histogram("work_seconds", "work", {}, {0.5, 1.5});
  constexpr int kThreads = 4;
  constexpr int kIterations = 50000;
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        const std::string mine = std::to_string(t % 2);
        for (int i = 0; i < kIterations; ++i) {
          shared.Inc();
          // Looking the series up every time also races the creation of new series.
          counter.With({mine}).Inc(2);
          hist.With({}).Observe(i % 2 == 0 ? 1.0 : 2.0);
        }
      });
    }
    // Rendering concurrently must be safe, even if its numbers are a moving target.
    for (int i = 0; i < 20; ++i) CHECK_FALSE(registry.Render().empty());
  }
  CHECK(shared.Value() == kThreads * kIterations);
  CHECK(counter.With({"0"}).Value() == 2u * (kThreads / 2) * kIterations);
  CHECK(counter.With({"1"}).Value() == 2u * (kThreads / 2) * kIterations);
  auto& cell = hist.With({});
  CHECK(cell.Count() == kThreads * kIterations);
  CHECK(cell.CumulativeCounts() ==
        std::vector<uint64_t>{0, kThreads * kIterations / 2, kThreads * kIterations});
  CHECK(cell.Sum() == 1.5 * kThreads * kIterations);
}
