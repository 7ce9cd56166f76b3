// The measuring half of bench/push_deploy_bench: push -> new release serving, through a running
// local stack.
//   push_deploy_probe --ingress URL --nats URL --repo-dir DIR --origin DIR --secret S
//                     --echo-bin PATH --artifact-dir DIR [--runs 5] [--repo acme/bench]
// DIR is a clone of the bare origin holding echo/ (muon-echo and a muon.yaml whose build step
// copies it). Each run: a commit under echo/, pushed to the origin, announced by a signed push
// webhook; the clock starts when the webhook's 2xx arrives ("accepted") and every later step is
// the time this probe saw it: the builder's build events (muon.evt.build.echo), the scheduler's
// (muon.evt.release|rollout|instance.echo), and the first answer of ver.echo.v<N>.Echo from the
// new release (polled every 5 ms with a 250 ms request timeout).
// References, same run: `git clone` of the origin (what the builder cannot avoid fetching), and
// muon-echo started by hand until it answers $SRV.PING.echo.<id> (what a node cannot avoid), and
// `tar -cz` of the files the artifact holds (DIR's bin/ and VERSION; GNU tar's gzip, level 6 as
// the builder's libarchive): what packing a 14 MB binary costs at that compression.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "http_client.h"
#include "muon/builder/v1/builder.pb.h"
#include "muon/common/bus.h"
#include "muon/common/process.h"
#include "muon/common/service.h"
#include "muon/echo/v1/echo.pb.h"
#include "muon/scheduler/v1/scheduler.pb.h"
#include "webhook.h"

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

std::map<std::string, std::string> ParseArgs(int argc, char** argv) {
  std::map<std::string, std::string> out{{"--runs", "5"}, {"--repo", "acme/bench"}};
  for (int i = 1; i + 1 < argc; i += 2) out[argv[i]] = argv[i + 1];
  for (const char* required : {"--ingress", "--nats", "--repo-dir", "--origin", "--secret",
                               "--echo-bin", "--artifact-dir"}) {
    if (!out.count(required)) {
      std::fprintf(stderr, "push_deploy_probe: %s is required\n", required);
      std::exit(2);
    }
  }
  return out;
}

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

using muon::testing::Git;

// GitHub's push payload, with the fields github-events reads.
std::string PushBody(const std::string& repo, const std::string& before, const std::string& after,
                     const std::string& path) {
  return fmt::format(
      R"({{"ref":"refs/heads/main","before":"{0}","after":"{1}","created":false,"deleted":false,)"
      R"("forced":false,"base_ref":null,"commits":[{{"id":"{1}","distinct":true,)"
      R"("message":"bench","timestamp":"2026-01-01T00:00:00Z","author":{{"name":"Bench",)"
      R"("email":"bench@example.com"}},"added":[],"removed":[],"modified":["{2}"]}}],)"
      R"("head_commit":{{"id":"{1}","message":"bench","added":[],"removed":[],"modified":["{2}"]}},)"
      R"("repository":{{"full_name":"{3}","default_branch":"main"}},)"
      R"("pusher":{{"name":"bench","email":"bench@example.com"}}}})",
      before, after, path, repo);
}

// What the probe saw, keyed by "<commit>/<type>" (build events) and "v<N>/<type>" (scheduler).
struct Seen {
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, Clock::time_point> at;  // first sighting
  std::map<std::string, int> version_of_commit;

  void Mark(const std::string& key) {
    std::lock_guard lock(mu);
    at.emplace(key, Clock::now());
    cv.notify_all();
  }
  template <typename Pred>
  bool WaitFor(std::chrono::milliseconds timeout, Pred pred) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, pred);
  }
};

// The steps of one run, in ms after the webhook's 2xx.
const std::vector<std::pair<std::string, std::string>> kSteps = {
    {"build started", "build/started"},        {"build succeeded", "build/succeeded"},
    {"release created", "release.created"},    {"rollout started", "rollout.started"},
    {"instance started", "instance.started"},  {"instance healthy", "instance.healthy"},
    {"serving (ver.echo.vN.Echo)", "serving"}, {"rollout succeeded", "rollout.succeeded"},
};

}  // namespace

int main(int argc, char** argv) {
  auto args = ParseArgs(argc, argv);
  const std::string repo_dir = args["--repo-dir"];
  const std::string repo = args["--repo"];
  const std::string url = args["--ingress"] + "/v1/github/events";
  const int runs = std::max(1, std::stoi(args["--runs"]));

  auto bus = muon::bus::Connection::Connect({.url = args["--nats"], .name = "push-deploy-probe"});
  if (!bus->WaitConnected(5s)) throw std::runtime_error("NATS not reachable");
  Seen seen;
  auto build_sub = bus->Subscribe("muon.evt.build.echo", [&](muon::bus::Msg& m) {
    muon::builder::v1::BuildEvent e;
    if (!e.ParseFromArray(m.data().data(), static_cast<int>(m.data().size()))) return;
    seen.Mark(e.build().commit() + "/build/" + e.type());
  });
  std::vector<muon::bus::Subscription> subs;
  for (const char* kind : {"release", "rollout", "instance"}) {
    subs.push_back(bus->Subscribe(fmt::format("muon.evt.{}.echo", kind), [&](muon::bus::Msg& m) {
      muon::scheduler::v1::Event e;
      if (!e.ParseFromArray(m.data().data(), static_cast<int>(m.data().size()))) return;
      if (e.type() == "release.created") {
        std::lock_guard lock(seen.mu);
        const auto commit = e.attributes().find("commit");
        if (commit != e.attributes().end()) {
          seen.version_of_commit[commit->second] = e.version();
        }
      }
      // instance.* events carry the instance's version too: the first of each kind counts.
      seen.Mark(fmt::format("v{}/{}", e.version(), e.type()));
    }));
  }

  std::string before = Git(repo_dir, {"rev-parse", "HEAD"}).substr(0, 40);
  std::map<std::string, std::vector<double>> steps;  // step key -> ms per run
  std::vector<double> ack_ms;
  std::printf("%-4s %8s", "run", "2xx");
  for (const auto& [label, key] : kSteps) std::printf(" %*s", 11, key.c_str());
  std::printf("   (ms: the webhook's own latency, then each step after the 2xx)\n");
  for (int run = 1; run <= runs; ++run) {
    std::ofstream(repo_dir + "/echo/VERSION") << "bench " << ::getpid() << " " << run << "\n";
    Git(repo_dir, {"add", "echo/VERSION"});
    Git(repo_dir, {"commit", "--quiet", "-m", fmt::format("echo {}", run)});
    Git(repo_dir, {"push", "--quiet", "origin", "HEAD"});
    const std::string after = Git(repo_dir, {"rev-parse", "HEAD"}).substr(0, 40);
    const std::string body = PushBody(repo, before, after, "echo/VERSION");
    const auto t0 = Clock::now();
    auto r = muon::testing::HttpRequest(
        "POST", url, body,
        {{"Content-Type", "application/json"},
         {"User-Agent", "GitHub-Hookshot/bench"},
         {"X-GitHub-Event", "push"},
         {"X-GitHub-Delivery", fmt::format("push-deploy-{}-{}", ::getpid(), run)},
         {"X-GitHub-Hook-ID", "1"},
         {"X-Hub-Signature-256", muon::github_events::SignatureHeader(args["--secret"], body)}},
        30s);
    const auto accepted = Clock::now();
    if (r.status / 100 != 2) throw std::runtime_error("webhook refused: " + r.body);
    ack_ms.push_back(Ms(accepted - t0));

    // The release this commit became.
    int version = 0;
    if (!seen.WaitFor(120s, [&] {
          auto it = seen.version_of_commit.find(after);
          if (it == seen.version_of_commit.end()) return false;
          version = it->second;
          return true;
        })) {
      std::lock_guard lock(seen.mu);
      throw std::runtime_error(fmt::format(
          "no release.created for {} within 120 s (build {})", after,
          seen.at.count(after + "/build/failed") ? "failed" : "not finished or not started"));
    }
    // Serving: the first answer of ver.echo.v<N>.Echo.
    const std::string subject = muon::VersionSubject("echo", fmt::format("v{}", version), "Echo");
    muon::echo::v1::EchoRequest req;
    req.set_message("bench");
    const std::string payload = req.SerializeAsString();
    std::string instance;
    const auto serve_deadline = Clock::now() + 120s;
    while (true) {
      muon::bus::Msg reply;
      if (!bus->Request(subject, payload, {}, 250ms, reply) &&
          !reply.Header(muon::bus::kHeaderServiceError)) {
        seen.Mark(fmt::format("v{}/serving", version));
        muon::echo::v1::EchoResponse resp;
        resp.ParseFromArray(reply.data().data(), static_cast<int>(reply.data().size()));
        instance = resp.instance();
        break;
      }
      if (Clock::now() > serve_deadline) {
        throw std::runtime_error(fmt::format("{} did not answer within 120 s", subject));
      }
      std::this_thread::sleep_for(5ms);
    }
    const std::string vkey = fmt::format("v{}/rollout", version);
    if (!seen.WaitFor(120s, [&] {
          return seen.at.count(vkey + ".succeeded") > 0 || seen.at.count(vkey + ".failed") > 0;
        })) {
      throw std::runtime_error(fmt::format("the rollout of v{} did not end within 120 s", version));
    }
    if (seen.WaitFor(0ms, [&] { return seen.at.count(vkey + ".failed") > 0; })) {
      throw std::runtime_error(fmt::format("the rollout of v{} failed", version));
    }
    std::printf("%-4d %8.1f", run, ack_ms.back());
    {
      std::lock_guard lock(seen.mu);
      for (const auto& [label, key] : kSteps) {
        const std::string full =
            key.starts_with("build/") ? after + "/" + key : fmt::format("v{}/{}", version, key);
        const auto it = seen.at.find(full);
        if (it == seen.at.end()) {
          std::printf(" %11s", "-");
          continue;
        }
        const double ms = Ms(it->second - accepted);
        steps[key].push_back(ms);
        std::printf(" %11.1f", ms);
      }
    }
    std::printf("   v%d, answered by %s\n", version, instance.c_str());
    std::fflush(stdout);
    before = after;
  }

  // ---- references ----
  std::vector<double> clone_ms, start_ms;
  const fs::path tmp = fs::temp_directory_path() / fmt::format("push-deploy-ref-{}", ::getpid());
  for (int i = 0; i < runs; ++i) {
    fs::remove_all(tmp);
    const auto t = Clock::now();
    Git("/", {"clone", "--quiet", args["--origin"], tmp.string()});
    clone_ms.push_back(Ms(Clock::now() - t));
  }
  fs::remove_all(tmp);
  std::vector<double> pack_ms;
  for (int i = 0; i < runs; ++i) {
    muon::ProcessOptions o;
    o.program = "tar";
    o.args = {"-czf", tmp.string() + ".tar.gz", "-C", args["--artifact-dir"], "bin", "VERSION"};
    const auto t = Clock::now();
    if (!muon::RunCommand(o, 60s).status.Success()) throw std::runtime_error("tar -cz failed");
    pack_ms.push_back(Ms(Clock::now() - t));
  }
  fs::remove(tmp.string() + ".tar.gz");
  for (int i = 0; i < runs; ++i) {
    const std::string id = fmt::format("bench-ref-{}-{}", ::getpid(), i);
    muon::ProcessOptions o;
    o.program = args["--echo-bin"];
    o.env = {{"NATS_URL", args["--nats"]},
             {"MUON_SERVICE", "echo"},
             {"MUON_INSTANCE", id},
             {"MUON_VERSION", "vref"},
             {"MUON_LOG_LEVEL", "error"}};
    o.output_file = "/dev/null";
    const auto t = Clock::now();
    muon::Process p(o);
    const std::string ping = "$SRV.PING.echo." + id;
    bool up = false;
    while (Clock::now() - t < 20s) {
      muon::bus::Msg reply;
      if (!bus->Request(ping, "", {}, 100ms, reply)) {
        up = true;
        break;
      }
      std::this_thread::sleep_for(2ms);
    }
    if (!up) throw std::runtime_error("muon-echo started by hand did not answer $SRV.PING");
    start_ms.push_back(Ms(Clock::now() - t));
    p.Stop(5s);
  }

  std::printf("\nmedian over %d runs, ms after the webhook's 2xx (the 2xx itself: %.1f ms):\n",
              runs, Median(ack_ms));
  for (const auto& [label, key] : kSteps) {
    std::printf("  %-30s %8.1f\n", label.c_str(), Median(steps[key]));
  }
  const double serving = Median(steps["serving"]);
  const double clone = Median(clone_ms), start = Median(start_ms), pack = Median(pack_ms);
  std::printf("references, same run (median of %d):\n", runs);
  std::printf("  %-30s %8.1f\n", "git clone of the origin", clone);
  std::printf("  %-30s %8.1f\n", "muon-echo by hand to PING", start);
  std::printf("  %-30s %8.1f   (%.1f MB)\n", "tar -cz of the artifact's files", pack,
              static_cast<double>(fs::file_size(args["--echo-bin"])) / 1e6);
  std::printf("  %-30s %8.1f   (serving - clone - start)\n", "platform overhead",
              serving - clone - start);
  std::printf("  %-30s %8.1f   (serving - clone - start - tar -cz)\n", "  of which not packing",
              serving - clone - start - pack);
  std::printf(
      "RESULT serving_median_ms=%.1f rollout_succeeded_median_ms=%.1f clone_ms=%.1f "
      "start_ms=%.1f pack_ms=%.1f\n",
      serving, Median(steps["rollout.succeeded"]), clone, start, pack);
  return 0;
}
