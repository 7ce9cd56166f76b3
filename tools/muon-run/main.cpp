// muon-run: runs a command with its output captured into the log stream, as the node runtime
// runs an instance (stdout/stderr line by line as source app, start and exit as source system).
// For scripts, tests and jobs outside the scheduler.
//
//   muon-run --service greeter --instance i-1 [--release v3] [--region eu] -- ./greeter --port 0

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "muon/common/bus.h"
#include "muon/common/log.h"
#include "muon/common/output_capture.h"

namespace {

constexpr const char* kUsage =
    R"(usage: muon-run --service S --instance I [options] -- COMMAND [ARGS...]

options:
  --service S      service the lines belong to (required)
  --instance I     instance id (required)
  --release R      release label, e.g. v3
  --region R       region (default $MUON_REGION, else local)
  --server URL     NATS URL (default $NATS_URL, else nats://127.0.0.1:4222)
  --mask-env NAME  mask the value of environment variable NAME in every line (repeatable)

Runs COMMAND with stdout and stderr shipped line by line to muon.log.<S>.<I> and the exit noted
as a system line; the output is not printed. Exits with COMMAND's exit code (128+N when killed
by signal N), 2 on a usage error, 1 when COMMAND could not be started.)";

int Usage(const std::string& problem) {
  std::cerr << "muon-run: " << problem << "\n\n" << kUsage << std::endl;
  return 2;
}

std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  muon::log::SetLevel(muon::log::Level::kError);
  std::vector<std::string> args(argv + 1, argv + argc);
  muon::CaptureOptions options;
  options.log.region = Env("MUON_REGION", "local");
  std::string server = Env("NATS_URL", "nats://127.0.0.1:4222");
  size_t i = 0;
  for (; i < args.size() && args[i] != "--"; ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      std::cout << kUsage << std::endl;
      return 0;
    }
    if (i + 1 >= args.size() || args[i + 1] == "--") return Usage(a + " needs a value");
    const std::string& v = args[++i];
    if (a == "--service") {
      options.log.service = v;
    } else if (a == "--instance") {
      options.log.instance = v;
    } else if (a == "--release") {
      options.log.release = v;
    } else if (a == "--region") {
      options.log.region = v;
    } else if (a == "--server") {
      server = v;
    } else if (a == "--mask-env") {
      if (const char* value = std::getenv(v.c_str()); value != nullptr) {
        options.secrets.emplace_back(value);
      }
    } else {
      return Usage("unknown option " + a);
    }
  }
  if (i + 1 >= args.size()) return Usage("no COMMAND after --");
  if (!muon::loglines::IsValidToken(options.log.service) ||
      !muon::loglines::IsValidToken(options.log.instance)) {
    return Usage("--service and --instance are required: letters, digits, '_', '-'");
  }
  options.process.program = args[i + 1];
  options.process.args.assign(args.begin() + static_cast<long>(i) + 2, args.end());
  options.process.parent_death_signal = SIGTERM;

  auto connection = muon::bus::Connection::Connect({.url = server, .name = "muon-run"});
  if (!connection->WaitConnected(std::chrono::seconds(5))) {
    std::cerr << "muon-run: cannot reach NATS at " << server << std::endl;
    return 1;
  }
  try {
    muon::CapturedProcess run(*connection, options);
    const muon::ExitStatus status = run.Wait();
    if (status.signal != 0) return 128 + status.signal;
    return status.code;
  } catch (const std::exception& e) {
    std::cerr << "muon-run: " << e.what() << std::endl;
    return 1;
  }
}
