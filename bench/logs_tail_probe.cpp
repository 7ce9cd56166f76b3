// logs_tail_probe: the emitting and measuring half of bench/logs_tail_bench. It emits lines of
// service <service> at a steady rate through the Shipper (as an instance's output would be), and
// measures two latencies from each line's emit time:
//   - muon logs -f: the JSON lines the CLI prints, read from stdin (the bench script pipes
//     `muon logs <service> -f --output json` into it);
//   - reference: a plain NATS subscription to the same subjects (what the bus alone costs).
//
//   muon logs bench -f -n 0 --output json | logs_tail_probe --nats URL --rate 10000 --seconds 20

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "muon/common/bus.h"
#include "muon/common/log.h"
#include "muon/common/log_lines.h"

namespace {

using Clock = std::chrono::system_clock;

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch())
      .count();
}

int64_t LineMicros(const muon::logs::v1::LogLine& line) {
  return line.time().seconds() * 1000000 + line.time().nanos() / 1000;
}

struct Latencies {
  std::mutex mu;
  std::vector<int64_t> us;
  void Add(int64_t v) {
    std::lock_guard lock(mu);
    us.push_back(v);
  }
  std::string Summary() {
    std::lock_guard lock(mu);
    if (us.empty()) return "no lines";
    std::sort(us.begin(), us.end());
    auto pct = [&](double p) {
      return us[std::min(us.size() - 1, static_cast<size_t>(p * static_cast<double>(us.size())))];
    };
    char buf[160];
    std::snprintf(buf, sizeof buf, "%zu lines  p50 %.1f ms  p99 %.1f ms  max %.1f ms", us.size(),
                  static_cast<double>(pct(0.50)) / 1000, static_cast<double>(pct(0.99)) / 1000,
                  static_cast<double>(us.back()) / 1000);
    return buf;
  }
};

}  // namespace

int main(int argc, char** argv) {
  muon::log::SetLevel(muon::log::Level::kError);
  std::string nats = "nats://127.0.0.1:4222", service = "bench";
  int rate = 10000, seconds = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--nats")
      nats = value;
    else if (flag == "--rate")
      rate = std::stoi(value);
    else if (flag == "--seconds")
      seconds = std::stoi(value);
    else if (flag == "--service")
      service = value;
  }
  auto conn = muon::bus::Connection::Connect({.url = nats, .name = "logs-tail-probe"});
  if (!conn->WaitConnected(std::chrono::seconds(5))) {
    std::cerr << "cannot reach NATS at " << nats << "\n";
    return 1;
  }
  std::atomic<bool> measuring{false};
  Latencies bus_latency, cli_latency;
  auto reference =
      conn->Subscribe(muon::loglines::FilterSubject(service, ""), [&](muon::bus::Msg& m) {
        muon::logs::v1::LogBatch batch;
        if (!measuring || !batch.ParseFromArray(m.data().data(), static_cast<int>(m.data().size())))
          return;
        const int64_t now = NowMicros();
        for (const auto& line : batch.lines()) {
          if (line.message().rfind("measure ", 0) == 0) bus_latency.Add(now - LineMicros(line));
        }
      });

  std::atomic<bool> cli_live{false};
  std::thread reader([&] {
    std::string json;
    while (std::getline(std::cin, json)) {
      muon::logs::v1::LogLine line;
      if (!google::protobuf::util::JsonStringToMessage(json, &line).ok()) continue;
      if (line.message().rfind("warm-up", 0) == 0) cli_live = true;
      if (line.message().rfind("measure ", 0) == 0) cli_latency.Add(NowMicros() - LineMicros(line));
    }
  });

  muon::loglines::Shipper shipper(*conn, {.service = service, .instance = "probe-1"});
  // Warm up until the CLI's tail prints lines (it is live then).
  const auto warm_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!cli_live && std::chrono::steady_clock::now() < warm_deadline) {
    shipper.Emit(muon::logs::v1::SEVERITY_INFO, "warm-up");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!cli_live) {
    std::cerr << "the tail never printed a warm-up line\n";
    return 1;
  }
  measuring = true;
  const auto start = std::chrono::steady_clock::now();
  const auto period = std::chrono::nanoseconds(1000000000LL / std::max(rate, 1));
  const int64_t total = static_cast<int64_t>(rate) * seconds;
  for (int64_t i = 0; i < total; ++i) {
    std::this_thread::sleep_until(start + period * i);
    shipper.Emit(muon::logs::v1::SEVERITY_INFO,
                 "measure " + std::to_string(i) + " lorem ipsum dolor sit amet consectetur");
  }
  shipper.Flush(std::chrono::seconds(10));
  const double achieved =
      static_cast<double>(total) /
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // Let the tail catch up (at most 10 s), then report.
  const auto catch_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < catch_up) {
    {
      std::lock_guard lock(cli_latency.mu);
      if (static_cast<int64_t>(cli_latency.us.size()) >= total) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::printf("emitted %lld lines at %.0f lines/s (target rate %d)\n",
              static_cast<long long>(total), achieved, rate);
  std::printf("  muon logs -f (emit -> printed): %s\n", cli_latency.Summary().c_str());
  std::printf("  reference, NATS subscription:   %s\n", bus_latency.Summary().c_str());
  std::fflush(stdout);
  std::_Exit(0);  // the reader blocks on stdin until the CLI ends; the script stops it
}
