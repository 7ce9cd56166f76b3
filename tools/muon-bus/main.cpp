// muon-bus: talks to services directly over NATS, for operators and scripts (scripts/up waits on
// `muon-bus ping`). Discovery uses the NATS service API, so it sees every Muon service and every
// user service built with the SDK. `muon-bus serve` is that SDK for any language: a user service
// whose endpoints are shell commands (serve.h).

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "muon/common/bus.h"
#include "muon/common/config.h"
#include "muon/common/log.h"
#include "serve.h"

namespace {

constexpr const char* kUsage = R"(usage: muon-bus [--server URL] <command> [args]

commands:
  ping [service] [--count N] [--timeout D]   who answers $SRV.PING[.<service>]; exits 0 once
                                             N (default 1) instances answered, 3 if fewer did
  info [service] [--timeout D]               $SRV.INFO replies, one JSON document per line
  stats [service] [--timeout D]              $SRV.STATS replies, one JSON document per line
  request <subject> <body> [--header K=V]... [--timeout D]
                                             one request; prints the reply body
  serve <name> --endpoint METHOD=COMMAND [--endpoint ...] [--description TEXT]
        [--concurrency N] [--timeout D]      serve user service <name> until SIGTERM: each
                                             request runs COMMAND with /bin/sh -c, body on
                                             stdin, stdout the reply; exit 2 -> 400, other
                                             non-zero -> 500 (last stderr line as detail),
                                             over --timeout (default 30s) -> 504
                                             (`muon-bus serve --help` for every option)

--server defaults to $NATS_URL, else nats://127.0.0.1:4222; --timeout defaults to 2s.
exit codes: 0 ok, 2 usage error, 3 not enough answers / timeout / no responders, 4 error reply;
serve: 0 after a drain, 1 start-up failure, 2 bad arguments)";

int Usage(const std::string& problem) {
  std::cerr << "muon-bus: " << problem << "\n\n" << kUsage << std::endl;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  muon::log::SetLevel(muon::log::Level::kError);
  std::vector<std::string> args(argv + 1, argv + argc);
  // `serve` has options of its own (its --timeout is per command): hand it everything after it.
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--server" && i + 1 < args.size()) {
      ++i;
    } else if (args[i].rfind("--server=", 0) == 0) {
      continue;
    } else if (args[i] == "serve") {
      std::optional<std::string> server;
      for (size_t j = 0; j < i; ++j) {
        if (args[j] == "--server") server = args[++j];
        if (args[j].rfind("--server=", 0) == 0) server = args[j].substr(9);
      }
      return muon::bus_tool::Serve({args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end()},
                                   server);
    } else {
      break;
    }
  }
  std::string server = std::getenv("NATS_URL") ? std::getenv("NATS_URL") : "nats://127.0.0.1:4222";
  std::chrono::milliseconds timeout(2000);
  size_t count = 1;
  muon::bus::Headers headers;
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const char* flag) -> std::string {
      if (i + 1 >= args.size()) throw std::invalid_argument(std::string(flag) + " needs a value");
      return args[++i];
    };
    try {
      if (a == "-h" || a == "--help") {
        std::cout << kUsage << std::endl;
        return 0;
      } else if (a == "--server") {
        server = value("--server");
      } else if (a == "--timeout") {
        auto d = muon::config::ParseDuration(value("--timeout"));
        if (!d) return Usage("--timeout wants a duration such as 500ms or 5s");
        timeout = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
      } else if (a == "--count") {
        count = std::stoul(value("--count"));
      } else if (a == "--header") {
        const std::string kv = value("--header");
        const auto eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) return Usage("--header wants KEY=VALUE");
        headers.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
      } else if (a.rfind("--", 0) == 0) {
        return Usage("unknown option " + a);
      } else {
        positional.push_back(a);
      }
    } catch (const std::exception& e) {
      return Usage(e.what());
    }
  }
  if (positional.empty()) return Usage("missing command");
  const std::string command = positional[0];

  std::unique_ptr<muon::bus::Connection> bus;
  try {
    bus = muon::bus::Connection::Connect(
        {.url = server, .name = "muon-bus", .retry_on_failed_connect = false});
  } catch (const std::exception& e) {
    std::cerr << "muon-bus: cannot connect to NATS at " << server << ": " << e.what() << std::endl;
    return 3;
  }

  if (command == "ping" || command == "info" || command == "stats") {
    if (positional.size() > 2) return Usage(command + " takes at most one service name");
    std::string verb = command == "ping" ? "PING" : command == "info" ? "INFO" : "STATS";
    std::string subject = "$SRV." + verb;
    if (positional.size() == 2) subject += "." + positional[1];
    const size_t want = command == "ping" ? count : 0;
    auto replies = muon::bus::Gather(*bus, subject, "", timeout, want);
    for (const auto& r : replies) std::cout << r.data() << "\n";
    std::cout.flush();
    if (command == "ping" && replies.size() < count) {
      std::cerr << "muon-bus: " << replies.size() << " of " << count << " expected instance(s) of "
                << (positional.size() == 2 ? positional[1] : std::string("any service"))
                << " answered " << subject << " within " << timeout.count() << "ms" << std::endl;
      return 3;
    }
    return 0;
  }
  if (command == "request") {
    if (positional.size() != 3) return Usage("request wants <subject> <body>");
    muon::bus::Msg reply;
    auto ec = bus->Request(positional[1], positional[2], headers, timeout, reply);
    if (ec) {
      std::cerr << "muon-bus: " << positional[1] << ": " << ec.message() << std::endl;
      return 3;
    }
    std::cout << reply.data() << std::endl;
    if (auto code = reply.Header(muon::bus::kHeaderServiceErrorCode)) {
      std::cerr << "muon-bus: error " << *code << ": "
                << reply.Header(muon::bus::kHeaderServiceError).value_or("") << std::endl;
      return 4;
    }
    return 0;
  }
  return Usage("unknown command " + command);
}
