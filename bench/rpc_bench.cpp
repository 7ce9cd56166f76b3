// Framework RPC vs raw nats.c request/reply, in one run, on one nats-server.
//
//   reference: a nats.c responder that publishes the request bytes back (SendAsap on both sides)
//   ours:      the echo service on the framework (Protobuf decode/encode, stats, error handling)
//
// Both get a 64-byte request, one responder thread each (concurrency 1, like for like), and the
// same requester code. Rounds alternate raw/framework so drift hits both. Targets (issue 2):
// serial p50 latency <= 1.2x raw; throughput with 32 concurrent requesters >= 0.8x raw.

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/post.hpp>
#include <functional>
#include <thread>
#include <vector>

#include "echo_handlers.h"
#include "harness.h"
#include "muon/common/bus.h"
#include "muon/common/bus_loop.h"
#include "muon/common/config.h"
#include "muon/common/log.h"
#include "muon/common/service.h"
#include "muon/echo/v1/echo.pb.h"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

struct Serial {
  double p50_us, p90_us, p99_us;
};

Serial MeasureSerial(muon::bus::Connection& conn, const std::string& subject,
                     const std::string& payload, int n) {
  std::vector<double> samples;
  samples.reserve(n);
  muon::bus::Msg reply;
  for (int i = 0; i < n + 2000; ++i) {  // the first 2000 warm up
    const auto start = Clock::now();
    if (auto ec = conn.Request(subject, payload, {}, 2s, reply); ec) {
      throw std::runtime_error("request failed: " + ec.message());
    }
    const auto elapsed = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
    if (i >= 2000) samples.push_back(elapsed);
  }
  std::sort(samples.begin(), samples.end());
  auto at = [&](double q) { return samples[static_cast<size_t>(q * (samples.size() - 1))]; };
  return {at(0.50), at(0.90), at(0.99)};
}

double MeasureThroughput(muon::bus::Connection& conn, const std::string& subject,
                         const std::string& payload, int threads,
                         std::chrono::milliseconds duration) {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> done{0}, failed{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      muon::bus::Msg reply;
      while (!stop.load(std::memory_order_relaxed)) {
        if (conn.Request(subject, payload, {}, 5s, reply)) {
          failed++;
        } else {
          done++;
        }
      }
    });
  }
  std::this_thread::sleep_for(300ms);  // warm-up: let every requester get going
  const uint64_t before = done.load();
  const auto start = Clock::now();
  std::this_thread::sleep_for(duration);
  const uint64_t after = done.load();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  stop = true;
  for (auto& w : workers) w.join();
  if (failed > 0) fmt::print("  warning: {} requests failed\n", failed.load());
  return static_cast<double>(after - before) / seconds;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  muon::log::SetLevel(muon::log::Level::kWarn);
  if (argc == 5 && std::string(argv[1]) == "--direct") {
    // rpc_bench --direct NATS_URL SUBJECT JSON: serial p50 of a plain nats.c request/reply with a
    // JSON body (what the ingress sends), for bench/ingress_bench.
    auto conn = muon::bus::Connection::Connect({.url = argv[2], .name = "bench-direct"});
    if (!conn->WaitConnected(5s)) return 1;
    const muon::bus::Headers headers = {{"Content-Type", "application/json"}};
    std::vector<double> samples;
    muon::bus::Msg reply;
    for (int i = 0; i < 12000; ++i) {
      const auto start = Clock::now();
      if (auto ec = conn->Request(argv[3], argv[4], headers, 2s, reply); ec) {
        fmt::print(stderr, "request failed: {}\n", ec.message());
        return 1;
      }
      if (i >= 2000) {
        samples.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
      }
    }
    std::sort(samples.begin(), samples.end());
    fmt::print("{:.1f}\n", samples[samples.size() / 2]);
    return 0;
  }
  if (argc == 6 && std::string(argv[1]) == "--direct-throughput") {
    // rpc_bench --direct-throughput NATS_URL SUBJECT JSON SECONDS: requests/s with 64 requests
    // kept in flight on one loop-driven connection (bus::LoopRequester, as the ingress's workers
    // do), no HTTP: the ceiling of what any proxy in front of this service can reach here.
    muon::bus::EventLoopThread loop;
    auto conn = muon::bus::Connection::Connect(
        {.url = argv[2], .name = "bench-direct", .event_loop = &loop.context()});
    if (!conn->WaitConnected(5s)) return 1;
    muon::bus::LoopRequester requester(*conn);
    const muon::bus::Headers headers = {{"Content-Type", "application/json"}};
    const std::string subject = argv[3], body = argv[4];
    const auto seconds = std::chrono::seconds(std::stoi(argv[5]));
    std::atomic<uint64_t> done{0}, failed{0};
    std::atomic<bool> stop{false};
    std::function<void()> issue = [&] {
      if (stop) return;
      requester.Request(subject, body, headers, 5s, [&](std::error_code ec, muon::bus::Msg) {
        if (ec) {
          failed++;  // stop this lane: a synchronous failure must not recurse
          return;
        }
        done++;
        issue();
      });
    };
    for (int i = 0; i < 64; ++i) issue();
    std::atomic<bool> sweeping{true};
    std::thread sweeper([&] {
      while (sweeping) {
        boost::asio::post(loop.context(), [&] { requester.Sweep(); });
        std::this_thread::sleep_for(20ms);
      }
    });
    std::this_thread::sleep_for(1s);
    const uint64_t before = done;
    const auto start = Clock::now();
    std::this_thread::sleep_for(seconds);
    const uint64_t after = done;
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    stop = true;
    while (requester.pending() > 0) std::this_thread::sleep_for(10ms);
    sweeping = false;
    sweeper.join();
    loop.Stop();  // the requester and the connection go after their loop stopped
    fmt::print("{:.0f}\n", static_cast<double>(after - before) / elapsed);
    return failed > 0 ? 1 : 0;
  }
  int rounds = 3;
  int serial_n = 20000;
  auto duration = 5000ms;
  int concurrency = 32;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      rounds = 1;
      serial_n = 3000;
      duration = 1000ms;
    } else if (a.rfind("--rounds=", 0) == 0) {
      rounds = std::stoi(a.substr(9));
    } else {
      fmt::print(stderr, "usage: rpc_bench [--quick] [--rounds=N]\n");
      return 2;
    }
  }

  muon::testing::NatsServer nats;
  auto responder_conn =
      muon::bus::Connection::Connect({.url = nats.url(), .name = "raw-responder"});
  auto service_conn = muon::bus::Connection::Connect({.url = nats.url(), .name = "framework"});
  auto client = muon::bus::Connection::Connect({.url = nats.url(), .name = "bench-client"});
  if (!responder_conn->WaitConnected(5s) || !service_conn->WaitConnected(5s) ||
      !client->WaitConnected(5s)) {
    fmt::print(stderr, "cannot connect to nats-server\n");
    return 1;
  }

  // Reference responder: plain nats.c, reply with the request's bytes.
  muon::bus::Connection& raw_conn = *responder_conn;
  auto raw_sub = raw_conn.QueueSubscribe("bench.raw.echo", "raw", [&raw_conn](muon::bus::Msg& m) {
    natsConnection_Publish(raw_conn.raw(), natsMsg_GetReply(m.raw()), natsMsg_GetData(m.raw()),
                           natsMsg_GetDataLength(m.raw()));
  });

  auto options = muon::echo::DefaultOptions();
  options.concurrency = 1;
  muon::Service service(*service_conn, options);
  muon::echo::RegisterEndpoints(service);
  service.Start();
  (void)raw_conn.Flush(2s);

  muon::echo::v1::EchoRequest request;
  request.set_message(std::string(62, 'x'));
  const std::string framework_payload = request.SerializeAsString();
  const std::string raw_payload(framework_payload.size(), 'x');
  fmt::print("rpc_bench: payload {} bytes, {} round(s), serial n={}, {} requesters for {}s\n",
             framework_payload.size(), rounds, serial_n, concurrency, duration.count() / 1000.0);

  std::vector<double> raw_p50, fw_p50, raw_p99, fw_p99, raw_tp, fw_tp;
  for (int r = 0; r < rounds; ++r) {
    auto rs = MeasureSerial(*client, "bench.raw.echo", raw_payload, serial_n);
    auto fs = MeasureSerial(*client, "svc.echo.Echo", framework_payload, serial_n);
    raw_p50.push_back(rs.p50_us);
    fw_p50.push_back(fs.p50_us);
    raw_p99.push_back(rs.p99_us);
    fw_p99.push_back(fs.p99_us);
    double rt = MeasureThroughput(*client, "bench.raw.echo", raw_payload, concurrency, duration);
    double ft =
        MeasureThroughput(*client, "svc.echo.Echo", framework_payload, concurrency, duration);
    raw_tp.push_back(rt);
    fw_tp.push_back(ft);
    fmt::print(
        "  round {}: serial p50 raw {:.1f}us fw {:.1f}us | p99 raw {:.1f}us fw {:.1f}us | "
        "{}x throughput raw {:.0f}/s fw {:.0f}/s\n",
        r + 1, rs.p50_us, fs.p50_us, rs.p99_us, fs.p99_us, concurrency, rt, ft);
  }
  const double p50_ratio = Median(fw_p50) / Median(raw_p50);
  const double tp_ratio = Median(fw_tp) / Median(raw_tp);
  fmt::print("\n{:<36} {:>12} {:>12} {:>8} {:>10}\n", "metric (median of rounds)", "raw nats.c",
             "framework", "ratio", "target");
  fmt::print("{:<36} {:>10.1f}us {:>10.1f}us {:>8.2f} {:>10}\n", "serial p50 latency",
             Median(raw_p50), Median(fw_p50), p50_ratio, "<= 1.20");
  fmt::print("{:<36} {:>10.1f}us {:>10.1f}us {:>8.2f} {:>10}\n", "serial p99 latency",
             Median(raw_p99), Median(fw_p99), Median(fw_p99) / Median(raw_p99), "-");
  fmt::print("{:<36} {:>10.0f}/s {:>10.0f}/s {:>8.2f} {:>10}\n",
             fmt::format("throughput, {} requesters", concurrency), Median(raw_tp), Median(fw_tp),
             tp_ratio, ">= 0.80");
  const bool ok = p50_ratio <= 1.2 && tp_ratio >= 0.8;
  fmt::print("\nresult: {}\n", ok ? "targets met" : "TARGETS MISSED");
  service.Stop(5s);
  return 0;
}
