#pragma once
// `muon-bus serve`: a user service whose endpoints are shell commands, for services written in any
// language without a NATS client (examples/monorepo/hello and clock). It is a real service of the
// libs/common framework (RunService): svc.<name>.<Method>, ver.<name>.<release>.<Method>, the
// NATS service API, drain on SIGTERM, the common options and their environment variables.
//
// Each request runs its endpoint's command with `/bin/sh -c` in the current directory, in a
// process group of its own, with the request body on stdin and MUON_METHOD and MUON_CONTENT_TYPE
// added to the environment:
//   exit 0              stdout (at most kMaxReplyBytes; the rest is dropped) is the reply body
//   exit 2              error 400 "bad request: <last stderr line>"
//   other exit/signal   error 500 with the last stderr line as detail
//   longer than timeout the group is killed (SIGKILL), error 504
// The command's stderr lines are copied to muon-bus's stderr as they come, so the node runtime
// ships them to the service's logs.

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace muon::bus_tool {

inline constexpr size_t kMaxReplyBytes = 1 << 20;  // 1 MiB of stdout
inline constexpr int kExitBadRequest = 2;          // the command's "your input is wrong"

struct ShellResult {
  int exit_code = -1;  // when it exited normally, else -1
  int signal = 0;      // terminating signal, else 0
  bool timed_out = false;
  std::string output;  // stdout, at most the cap
  bool output_truncated = false;
  std::string last_error_line;  // last non-empty stderr line
};

// Runs `/bin/sh -c command` as described above; `env` is the complete environment (KEY=VALUE).
// Calls `on_stderr_line` (on the calling thread) for every stderr line. Throws std::system_error
// when the process cannot be started.
ShellResult RunShell(const std::string& command, std::string_view input,
                     const std::vector<std::string>& env, std::chrono::milliseconds timeout,
                     size_t output_cap,
                     const std::function<void(std::string_view line)>& on_stderr_line);

// `muon-bus [--server URL] serve NAME --endpoint METHOD=COMMAND ...`: `args` are the arguments
// after "serve"; `server` the global --server when given. Returns the process exit code.
int Serve(const std::vector<std::string>& args, const std::optional<std::string>& server);

}  // namespace muon::bus_tool
