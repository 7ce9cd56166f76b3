// The measuring half of bench/github_bench: webhooks through a running local stack.
//   github_probe --ingress URL --nats URL --database-url URL --repo-dir DIR --secret S
// Phase 1: 200 signed push deliveries in 10 s (20/s from 4 senders); the latency of each 2xx,
// next to GET /healthz on the same ingress and an INSERT+COMMIT of the same body into the same
// PostgreSQL at the same rate (the floors: HTTP through the ingress, a durable write).
// Phase 2: push -> build started: 10 real commits to hello/, each pushed to the bare origin and
// announced by a webhook; the time from sending it to the builder's `started` event, next to the
// webhook's own 2xx.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "http_client.h"
#include "muon/builder/v1/builder.pb.h"
#include "muon/common/bus.h"
#include "muon/common/process.h"
#include "webhook.h"

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

std::map<std::string, std::string> ParseArgs(int argc, char** argv) {
  std::map<std::string, std::string> out;
  for (int i = 1; i + 1 < argc; i += 2) out[argv[i]] = argv[i + 1];
  for (const char* required : {"--ingress", "--nats", "--database-url", "--repo-dir", "--secret"}) {
    if (!out.count(required)) {
      std::fprintf(stderr, "github_probe: %s is required\n", required);
      std::exit(2);
    }
  }
  return out;
}

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

std::string Pct(std::vector<double> v) {
  if (v.empty()) return "n/a";
  std::sort(v.begin(), v.end());
  auto at = [&](double p) { return v[std::min(v.size() - 1, size_t(p * double(v.size())))]; };
  return fmt::format("p50 {:.1f} ms, p95 {:.1f} ms, p99 {:.1f} ms, max {:.1f} ms", at(0.50),
                     at(0.95), at(0.99), v.back());
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, size_t(p * double(v.size())))];
}

using muon::testing::Git;

std::string PushBody(const std::string& before, const std::string& after, const std::string& path) {
  return fmt::format(
      R"({{"ref":"refs/heads/main","before":"{}","after":"{}","created":false,"deleted":false,)"
      R"("forced":false,"commits":[{{"id":"{}","message":"bench","added":[],"removed":[],)"
      R"("modified":["{}"]}}],"repository":{{"full_name":"acme/bench","default_branch":"main"}},)"
      R"("pusher":{{"name":"bench","email":"bench@example.com"}}}})",
      before, after, after, path);
}

struct Poster {
  std::string url, secret;
  muon::testing::HttpResponse Post(const std::string& delivery, const std::string& body) const {
    return muon::testing::HttpRequest(
        "POST", url, body,
        {{"Content-Type", "application/json"},
         {"User-Agent", "GitHub-Hookshot/bench"},
         {"X-GitHub-Event", "push"},
         {"X-GitHub-Delivery", delivery},
         {"X-GitHub-Hook-ID", "1"},
         {"X-Hub-Signature-256", muon::github_events::SignatureHeader(secret, body)}},
        30s);
  }
};

// Runs `send(i)` for i in [0, count) at `rate` per second from `senders` threads; returns each
// call's latency in ms.
std::vector<double> Paced(int count, int rate, int senders, const std::function<void(int)>& send) {
  std::vector<double> latencies(count);
  const auto start = Clock::now() + 100ms;
  std::vector<std::thread> threads;
  for (int t = 0; t < senders; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < count; i += senders) {
        std::this_thread::sleep_until(start + std::chrono::microseconds(int64_t(1e6) * i / rate));
        const auto t0 = Clock::now();
        send(i);
        latencies[i] = Ms(Clock::now() - t0);
      }
    });
  }
  for (auto& th : threads) th.join();
  return latencies;
}

}  // namespace

int main(int argc, char** argv) {
  auto args = ParseArgs(argc, argv);
  const std::string repo = args["--repo-dir"];
  Poster poster{args["--ingress"] + "/v1/github/events", args["--secret"]};
  const std::string head0 = Git(repo, {"rev-parse", "HEAD"}).substr(0, 40);

  // ---- phase 1: webhook 2xx latency at 20 deliveries/s ----
  std::ofstream(repo + "/README.md", std::ios::app) << "bench\n";
  Git(repo, {"commit", "--quiet", "-am", "readme"});
  Git(repo, {"push", "--quiet", "origin", "HEAD"});
  const std::string head1 = Git(repo, {"rev-parse", "HEAD"}).substr(0, 40);
  const std::string readme_body = PushBody(head0, head1, "README.md");
  constexpr int kDeliveries = 200, kRate = 20, kSenders = 4;
  std::atomic<int> not_2xx{0};
  auto webhook = Paced(kDeliveries, kRate, kSenders, [&](int i) {
    auto r = poster.Post(fmt::format("bench-{}-{}", ::getpid(), i), readme_body);
    if (r.status / 100 != 2) not_2xx++;
  });
  auto healthz = Paced(kDeliveries, kRate, kSenders, [&](int) {
    muon::testing::HttpRequest("GET", args["--ingress"] + "/healthz", "", {}, 10s);
  });
  std::vector<std::unique_ptr<pqxx::connection>> conns;
  for (int t = 0; t < kSenders; ++t) {
    conns.push_back(std::make_unique<pqxx::connection>(args["--database-url"]));
  }
  {
    pqxx::work tx(*conns[0]);
    tx.exec0("CREATE TABLE IF NOT EXISTS bench_webhook_ref (id text PRIMARY KEY, body bytea)");
    tx.commit();
  }
  auto insert = Paced(kDeliveries, kRate, kSenders, [&](int i) {
    pqxx::work tx(*conns[i % kSenders]);
    tx.exec_params("INSERT INTO bench_webhook_ref VALUES ($1, $2)",
                   fmt::format("ref-{}-{}", ::getpid(), i), pqxx::binarystring(readme_body));
    tx.commit();
  });
  {
    pqxx::work tx(*conns[0]);
    tx.exec0("DROP TABLE bench_webhook_ref");
    tx.commit();
  }
  std::printf("webhook 2xx, %d deliveries in %d s (%d senders): %s; not 2xx: %d\n", kDeliveries,
              kDeliveries / kRate, kSenders, Pct(webhook).c_str(), not_2xx.load());
  std::printf("  reference, same rate: GET /healthz %s\n", Pct(healthz).c_str());
  std::printf("  reference, same rate: INSERT+COMMIT of the body %s\n", Pct(insert).c_str());

  // ---- phase 2: push -> build started ----
  auto bus = muon::bus::Connection::Connect({.url = args["--nats"], .name = "github-probe"});
  if (!bus->WaitConnected(5s)) throw std::runtime_error("NATS not reachable");
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, std::pair<std::string, Clock::time_point>> events;  // commit -> type
  auto sub = bus->Subscribe("muon.evt.build.hello", [&](muon::bus::Msg& m) {
    muon::builder::v1::BuildEvent e;
    if (!e.ParseFromArray(m.data().data(), int(m.data().size()))) return;
    std::lock_guard lock(mu);
    auto& slot = events[e.build().commit() + "/" + e.type()];
    slot = {e.type(), Clock::now()};
    cv.notify_all();
  });
  std::vector<double> started_ms, ack_ms;
  std::string before = head1;
  constexpr int kPushes = 10;
  for (int i = 0; i < kPushes; ++i) {
    std::ofstream(repo + "/hello/VERSION") << "bench " << i << "\n";
    Git(repo, {"commit", "--quiet", "-am", fmt::format("hello {}", i)});
    Git(repo, {"push", "--quiet", "origin", "HEAD"});
    const std::string after = Git(repo, {"rev-parse", "HEAD"}).substr(0, 40);
    const auto t0 = Clock::now();
    auto r = poster.Post(fmt::format("bench-push-{}-{}", ::getpid(), i),
                         PushBody(before, after, "hello/VERSION"));
    ack_ms.push_back(Ms(Clock::now() - t0));
    if (r.status / 100 != 2) throw std::runtime_error("webhook refused: " + r.body);
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, 60s, [&] { return events.count(after + "/started") > 0; })) {
      throw std::runtime_error("no started event for " + after);
    }
    started_ms.push_back(Ms(events[after + "/started"].second - t0));
    if (!cv.wait_for(lock, 120s, [&] {
          return events.count(after + "/succeeded") || events.count(after + "/failed");
        })) {
      throw std::runtime_error("build of " + after + " did not finish");
    }
    before = after;
  }
  std::printf("push -> build started, %d pushes: %s (median %.1f ms)\n", kPushes,
              Pct(started_ms).c_str(), Percentile(started_ms, 0.5));
  std::printf("  reference, same run: the webhook's own 2xx %s\n", Pct(ack_ms).c_str());
  std::printf("LAST_COMMIT=%s\n", before.c_str());
  std::printf("RESULT webhook_p99_ms=%.1f push_to_started_median_ms=%.1f\n",
              Percentile(webhook, 0.99), Percentile(started_ms, 0.5));
  return 0;
}
