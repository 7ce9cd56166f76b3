#pragma once
// The scheduler's commands (`muon status`, `describe`, `releases`, `history`, `events`, `wait`,
// `drift`, `locks`, `deploy`, `rollback`, `scale`, `env set|unset`, `secrets set`, `exec`): the
// pure parsing and formatting they share, kept apart from the network so it is unit-tested
// (tests/unit/cli_scheduler_test.cpp). Times are unix seconds; `now` is passed in.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "muon/scheduler/v1/scheduler.pb.h"

namespace muon::cli {

namespace sched = muon::scheduler::v1;

// ---- parsing --------------------------------------------------------------------------------

// An env or secret key: [A-Z_][A-Z0-9_]*, at most 128 characters.
bool IsValidEnvKey(std::string_view key);
// Keys the platform sets itself (MUON_*): never settable by `muon env` or `muon secrets`.
bool IsReservedEnvKey(std::string_view key);
// nullopt for a key `muon env set|unset` and `muon secrets set` accept, else why not (one line).
std::optional<std::string> EnvKeyProblem(std::string_view key);

// "KEY=VALUE" → (KEY, VALUE): the first '=' splits; VALUE may be empty or contain '='. A bad
// key or a missing '=': nullopt and *problem.
std::optional<std::pair<std::string, std::string>> ParseKeyValue(std::string_view arg,
                                                                 std::string* problem);

// A release number as "v3" or "3" (1 to 2^31-1); nullopt otherwise.
std::optional<int32_t> ParseReleaseVersion(std::string_view text);

// A secret's value from a file or stdin: exactly one trailing "\n" (or "\r\n") removed.
std::string SecretValueFromText(std::string text);

// ---- small formats --------------------------------------------------------------------------

// The two largest non-zero units: 12s, 3m4s, 2h1m, 3d4h; 0 or less → "0s".
std::string FormatUptime(int64_t seconds);
// "v3"; 0 → "-".
std::string VersionLabel(int32_t version);
// The first 12 hex digits of an artifact digest (a "sha256:" prefix dropped); "-" when empty.
std::string ShortDigest(std::string_view digest);
// The first 7 characters of a commit; "-" when empty.
std::string ShortCommit7(std::string_view commit);
// "on", or "paused: <reason>".
std::string AutoDeployText(const sched::ServiceStatus& status);
// "category: detail", either alone, or "-".
std::string CategoryDetail(std::string_view category, std::string_view detail);
// "TIME  SERVICE  TYPE  vN  INSTANCE  MESSAGE" (time in UTC, RFC 3339 with milliseconds).
std::string FormatEventLine(const sched::Event& event);

// ---- renderings -------------------------------------------------------------------------------

// A mutation's receipt: the summary, the change lines, the release (vN, digest, commit) and the
// commands to watch it converge (each with `env_flag`, e.g. " --env eu", appended when not
// already there).
std::string RenderReceipt(const sched::Receipt& receipt, std::string_view env_flag);

// `muon status`: one row per service, then the nodes.
std::string RenderStatusOverview(const sched::StatusResponse& status, int64_t now);
// `muon status SERVICE`: the header block (release, state, detail, rollout, lock) and one row per
// instance.
std::string RenderServiceStatus(const sched::ServiceStatus& status, int64_t now);
// `muon describe SERVICE`: the status block, config keys, releases and recent events.
std::string RenderDescribe(const sched::DescribeResponse& describe, int64_t now);
// `muon releases SERVICE`.
std::string RenderReleases(const google::protobuf::RepeatedPtrField<sched::Release>& releases,
                           int64_t now);
// `muon history SERVICE`: TIME, TYPE, RELEASE, INSTANCE, MESSAGE.
std::string RenderHistory(const google::protobuf::RepeatedPtrField<sched::Event>& events);
// Whether `muon history` shows an event type: release.*, rollout.*, scale, autodeploy.*,
// config.*, lock.*.
bool IsHistoryEvent(std::string_view type);
// `muon drift`: the table, or "No drift.".
std::string RenderDrift(const sched::DriftResponse& drift);
// `muon locks`: the table, or "No deploy locks are held.".
std::string RenderLocks(const sched::ListLocksResponse& locks, int64_t now);

// ---- muon wait ------------------------------------------------------------------------------

enum class WaitVerdict { kWaiting, kConverged, kFailed };

// Where a service stands for `muon wait`: converged (or stopped at 0 replicas) is done, failed
// is failed; everything else (rolling_out, degraded, pending) is waiting. With `version` > 0 the
// wait is for that release: done once it (or a newer one) is live and converged; failed when the
// rollout of that release failed.
WaitVerdict JudgeWait(const sched::ServiceStatus& status, int32_t version);

// One progress line of `muon wait`: "rolling_out  v4  2/3 healthy  <detail>".
std::string WaitProgressLine(const sched::ServiceStatus& status);

// Why a wait failed: the rollout's category and detail, each failed instance's last lines and
// the failed release's (when given) last lines.
std::string RenderWaitFailure(const sched::ServiceStatus& status, const sched::Release* release);

// The exit code of `muon exec` from the command's: its exit code, or 128 + the signal.
int ExecExitCode(const sched::ExecResponse& response);

}  // namespace muon::cli
