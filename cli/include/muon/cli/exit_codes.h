#pragma once
// The `muon` command's documented exit codes (also in `muon --help` and cli/README.md). Scripts
// rely on them: keep the numbers stable.

#include <string_view>

namespace muon::cli {

enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,          // anything else: 5xx, TLS failure, local I/O problems
  kExitUsage = 2,          // bad command line, invalid JSON body, nothing to talk to
  kExitUnauthorized = 3,   // 401: not logged in, token expired and refresh failed
  kExitForbidden = 4,      // 403: a rule denies
  kExitNotFound = 5,       // 404: unknown service, method, account, rule
  kExitBadRequest = 6,     // 400, 409, 413, 422 and other 4xx
  kExitUnavailable = 7,    // 408, 429, 502, 503, 504, connection refused, client-side timeout
  kExitRolloutFailed = 8,  // muon wait: the rollout (or the build) it waited for failed
  kExitWaitTimeout = 9,    // muon wait: not converged within --timeout
};

// Maps an HTTP status (the platform error's `code`) to the exit code of its class.
constexpr int ExitCodeForStatus(int status) {
  if (status >= 200 && status < 300) return kExitOk;
  switch (status) {
    case 401:
      return kExitUnauthorized;
    case 403:
      return kExitForbidden;
    case 404:
      return kExitNotFound;
    case 408:
    case 429:
    case 502:
    case 503:
    case 504:
      return kExitUnavailable;
    default:
      break;
  }
  if (status >= 400 && status < 500) return kExitBadRequest;
  return kExitError;
}

// The table printed by `muon --help` and documented in cli/README.md.
inline constexpr std::string_view kExitCodeHelp =
    R"(exit codes:
  0  ok
  1  other error (5xx, TLS, local files)
  2  usage error (bad flags or arguments, invalid JSON body, no ingress configured)
  3  unauthorized (401; not logged in or the session expired: muon login)
  4  forbidden (403; a rule denies)
  5  not found (404)
  6  bad request (400, 409, 413, 422 and other 4xx)
  7  unavailable or timeout (408, 429, 502, 503, 504, connection failure)
  8  muon wait: the rollout (or build) failed
  9  muon wait: not converged within --timeout
muon exec exits with the command's own exit code (128 + N when killed by signal N).)";

}  // namespace muon::cli
