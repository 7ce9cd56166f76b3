#pragma once
// Runs one `muon` command line: parse, resolve the ingress, talk to it, print. Everything the
// process touches (streams, environment, cwd, terminal, clock) comes in through AppContext, so
// tests run the whole CLI in-process.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "muon/cli/http_client.h"
#include "muon/cli/terminal.h"
#include "muon/common/config.h"

namespace muon::cli {

struct AppContext {
  std::ostream& out;
  std::ostream& err;
  std::istream& in;
  config::Environment env;
  std::filesystem::path cwd;
  Prompter* prompter = nullptr;  // nullptr: nobody to ask (like a non-terminal stdin)
  std::function<int64_t()> now;  // unix seconds; the system clock when empty
  // Client-side deadline of a call with --timeout D is D + timeout_slack, so the ingress's own
  // 504 arrives first; without --timeout it is default_timeout.
  std::chrono::milliseconds timeout_slack{std::chrono::seconds(2)};
  std::chrono::milliseconds default_timeout{std::chrono::seconds(60)};
  bool color = false;  // colour severities (stdout is a terminal and NO_COLOR is unset)
  // Pauses between polls (`muon wait`, `muon events -f`); returns false to stop polling (tests).
  // Empty: the thread sleeps, and polling ends only with the process (Ctrl-C) or the command.
  std::function<bool(std::chrono::milliseconds)> sleep;
};

// Runs the command line `args` (without argv[0]); returns the exit code (exit_codes.h). Never
// throws: every failure is printed to ctx.err as "error: ..." (usage errors with the usage line).
int RunCli(const std::vector<std::string>& args, AppContext& ctx);

// "<detail> (<code> <status>, request <Muon-Request-Id>)" from an error response in the
// platform's shape ({"id","code","detail","status"}); falls back to the HTTP status line and the
// start of the body for anything else.
std::string FormatApiError(const HttpResponse& response);

}  // namespace muon::cli
