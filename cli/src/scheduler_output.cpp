#include "muon/cli/scheduler_output.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <ctime>
#include <map>
#include <set>
#include <vector>

#include "muon/cli/output.h"

namespace muon::cli {
namespace {

using Rows = std::vector<std::vector<std::string>>;

std::string OrDash(std::string_view s) {
  return s.empty() ? std::string("-") : Sanitize(s);
}

// "key:  value" lines, values aligned, no header.
std::string KeyValues(const Rows& rows) {
  std::string table = RenderTable({"", ""}, rows);
  return table.substr(table.find('\n') + 1);
}

int64_t Seconds(const google::protobuf::Timestamp& ts) {
  return ts.seconds();
}

bool IsSet(const google::protobuf::Timestamp& ts) {
  return ts.seconds() != 0 || ts.nanos() != 0;
}

std::string Ago(const google::protobuf::Timestamp& ts, int64_t now) {
  if (!IsSet(ts)) return "-";
  return FormatUptime(now - Seconds(ts)) + " ago";
}

std::string In(const google::protobuf::Timestamp& ts, int64_t now) {
  if (!IsSet(ts)) return "-";
  const int64_t left = Seconds(ts) - now;
  return left <= 0 ? std::string("expired") : "in " + FormatUptime(left);
}

std::string Replicas(const sched::ServiceStatus& s) {
  return fmt::format("{}/{}", s.healthy(), s.desired_replicas());
}

std::string RolloutText(const sched::Rollout& r, int64_t now) {
  if (r.id() == 0 && r.version() == 0) return "-";
  std::string text = fmt::format("#{} {} -> {} {}", r.id(), VersionLabel(r.from_version()),
                                 VersionLabel(r.version()), OrDash(r.state()));
  if (r.state() == "running" && IsSet(r.started_at())) {
    text += ", started " + Ago(r.started_at(), now);
  } else if (IsSet(r.finished_at())) {
    text += ", finished " + Ago(r.finished_at(), now);
  }
  if (!r.category().empty() || !r.detail().empty()) {
    text += " (" + CategoryDetail(r.category(), r.detail()) + ")";
  }
  return text;
}

std::string LockText(const sched::Lock& l, int64_t now) {
  if (l.holder().empty()) return "-";
  std::string text = "held by " + Sanitize(l.holder());
  if (!l.reason().empty()) text += " (" + Sanitize(l.reason()) + ")";
  if (IsSet(l.expires_at())) text += ", expires " + In(l.expires_at(), now);
  return text;
}

std::string Uptime(const sched::InstanceInfo& i, int64_t now) {
  const bool running = i.state() == "starting" || i.state() == "healthy";
  if (!running || !IsSet(i.started_at())) return "-";
  return FormatUptime(now - Seconds(i.started_at()));
}

std::string ReleaseVersionText(const sched::Release& r) {
  std::string text = VersionLabel(r.version());
  if (!r.preview().empty()) text += " (preview " + Sanitize(r.preview()) + ")";
  return text;
}

std::string ReasonText(const sched::Release& r) {
  std::string text = OrDash(r.reason());
  if (r.from_version() > 0) text += " of " + VersionLabel(r.from_version());
  return text;
}

std::string LastLines(const google::protobuf::RepeatedPtrField<std::string>& lines,
                      std::string_view indent) {
  std::string out;
  for (const auto& line : lines) out += fmt::format("{}{}\n", indent, Sanitize(line));
  return out;
}

std::string TimeMillis(const google::protobuf::Timestamp& ts) {
  const std::time_t t = static_cast<std::time_t>(ts.seconds());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", stamp, ts.nanos() / 1000000);
}

}  // namespace

// ---- parsing --------------------------------------------------------------------------------

bool IsValidEnvKey(std::string_view key) {
  if (key.empty() || key.size() > 128) return false;
  if (!(key[0] == '_' || (key[0] >= 'A' && key[0] <= 'Z'))) return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return c == '_' || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  });
}

bool IsReservedEnvKey(std::string_view key) {
  return key.substr(0, 5) == "MUON_";
}

std::optional<std::string> EnvKeyProblem(std::string_view key) {
  if (!IsValidEnvKey(key)) {
    return fmt::format(
        "'{}' is not an env key (upper-case letters, digits and '_', not starting with a digit; "
        "e.g. DATABASE_URL)",
        Sanitize(key));
  }
  if (IsReservedEnvKey(key)) {
    return fmt::format("'{}': MUON_* keys are reserved for the platform", Sanitize(key));
  }
  return std::nullopt;
}

std::optional<std::pair<std::string, std::string>> ParseKeyValue(std::string_view arg,
                                                                 std::string* problem) {
  const size_t eq = arg.find('=');
  if (eq == std::string_view::npos) {
    if (problem != nullptr) {
      *problem = fmt::format("'{}' is not KEY=VALUE (to remove a key: muon env unset SERVICE KEY)",
                             Sanitize(arg));
    }
    return std::nullopt;
  }
  std::string key(arg.substr(0, eq));
  if (auto why = EnvKeyProblem(key)) {
    if (problem != nullptr) *problem = *why;
    return std::nullopt;
  }
  return std::make_pair(std::move(key), std::string(arg.substr(eq + 1)));
}

std::optional<int32_t> ParseReleaseVersion(std::string_view text) {
  if (!text.empty() && (text[0] == 'v' || text[0] == 'V')) text.remove_prefix(1);
  if (text.empty() || text[0] == '+' || text[0] == '-') return std::nullopt;
  int32_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || value < 1) return std::nullopt;
  return value;
}

std::string SecretValueFromText(std::string text) {
  if (!text.empty() && text.back() == '\n') {
    text.pop_back();
    if (!text.empty() && text.back() == '\r') text.pop_back();
  }
  return text;
}

// ---- small formats --------------------------------------------------------------------------

std::string FormatUptime(int64_t seconds) {
  if (seconds <= 0) return "0s";
  const int64_t units[] = {seconds / 86400, seconds % 86400 / 3600, seconds % 3600 / 60,
                           seconds % 60};
  const char* names[] = {"d", "h", "m", "s"};
  size_t first = 0;
  while (units[first] == 0) ++first;
  std::string out = fmt::format("{}{}", units[first], names[first]);
  if (first + 1 < 4 && units[first + 1] > 0) {
    out += fmt::format("{}{}", units[first + 1], names[first + 1]);
  }
  return out;
}

std::string VersionLabel(int32_t version) {
  return version > 0 ? fmt::format("v{}", version) : std::string("-");
}

std::string ShortDigest(std::string_view digest) {
  if (digest.substr(0, 7) == "sha256:") digest.remove_prefix(7);
  return OrDash(digest.substr(0, 12));
}

std::string ShortCommit7(std::string_view commit) {
  return OrDash(commit.substr(0, 7));
}

std::string AutoDeployText(const sched::ServiceStatus& status) {
  if (!status.paused()) return "on";
  return status.paused_reason().empty() ? std::string("paused")
                                        : "paused: " + Sanitize(status.paused_reason());
}

std::string CategoryDetail(std::string_view category, std::string_view detail) {
  if (category.empty()) return OrDash(detail);
  if (detail.empty()) return Sanitize(category);
  return Sanitize(category) + ": " + Sanitize(detail);
}

std::string FormatEventLine(const sched::Event& e) {
  return fmt::format("{}  {:<12}  {:<18}  {:<4}  {:<10}  {}", TimeMillis(e.time()),
                     OrDash(e.service()), OrDash(e.type()), VersionLabel(e.version()),
                     OrDash(e.instance()), Sanitize(e.message()));
}

// ---- renderings -------------------------------------------------------------------------------

std::string RenderReceipt(const sched::Receipt& receipt, std::string_view env_flag) {
  std::string out =
      receipt.summary().empty() ? std::string("Accepted.") : Sanitize(receipt.summary());
  out += "\n";
  for (const auto& change : receipt.changes()) out += "  " + Sanitize(change) + "\n";
  if (receipt.has_release() && receipt.release().version() > 0) {
    const auto& r = receipt.release();
    out += fmt::format("release: {}  artifact {}  commit {}", ReleaseVersionText(r),
                       ShortDigest(r.artifact_digest()), ShortCommit7(r.commit()));
    if (!r.reason().empty()) out += "  reason " + ReasonText(r);
    if (!r.status().empty()) out += "  (" + Sanitize(r.status()) + ")";
    out += "\n";
  }
  if (receipt.rollout_id() != 0) out += fmt::format("rollout: #{}\n", receipt.rollout_id());
  std::vector<std::string> watch(receipt.watch().begin(), receipt.watch().end());
  if (watch.empty() && !receipt.service().empty()) {
    watch = {"muon wait " + receipt.service(), "muon events " + receipt.service() + " -f"};
  }
  if (!watch.empty()) {
    out += "\nWatch with:\n";
    for (const auto& command : watch) {
      std::string line = Sanitize(command);
      if (!env_flag.empty() && line.rfind("muon ", 0) == 0 &&
          line.find("--env") == std::string::npos) {
        line += env_flag;
      }
      out += "  " + line + "\n";
    }
  }
  return out;
}

std::string RenderStatusOverview(const sched::StatusResponse& status, int64_t now) {
  std::string out;
  if (status.services_size() == 0) {
    out =
        "No services yet. Register a repository (muon repos add) and push, or run: muon deploy "
        "SERVICE --ref REF --repo OWNER/NAME\n";
  } else {
    Rows rows;
    for (const auto& s : status.services()) {
      rows.push_back({OrDash(s.name()), VersionLabel(s.live_version()), Replicas(s),
                      OrDash(s.state()), AutoDeployText(s), OrDash(s.detail())});
    }
    out = RenderTable({"NAME", "RELEASE", "REPLICAS", "STATE", "AUTO-DEPLOY", "DETAIL"}, rows);
  }
  if (status.nodes_size() > 0) {
    Rows rows;
    for (const auto& n : status.nodes()) {
      rows.push_back({OrDash(n.id()), OrDash(n.region()), OrDash(n.host()),
                      n.alive() ? "yes" : "no", Ago(n.last_seen(), now),
                      std::to_string(n.instances())});
    }
    out += "\n" + RenderTable({"NODE", "REGION", "HOST", "ALIVE", "LAST SEEN", "INSTANCES"}, rows);
  }
  return out;
}

std::string RenderServiceStatus(const sched::ServiceStatus& s, int64_t now) {
  Rows rows = {{"service:", OrDash(s.name())}};
  if (!s.repo().empty()) {
    rows.push_back({"repo:", Sanitize(s.repo()) +
                                 (s.folder().empty() ? "" : ", folder " + Sanitize(s.folder()))});
  }
  rows.push_back(
      {"release:", VersionLabel(s.live_version()) + (s.live_version() > 0 ? " live" : "")});
  rows.push_back({"replicas:", Replicas(s) + " healthy"});
  rows.push_back({"state:", OrDash(s.state())});
  if (!s.detail().empty()) rows.push_back({"detail:", Sanitize(s.detail())});
  rows.push_back({"auto-deploy:", AutoDeployText(s)});
  if (s.has_rollout()) rows.push_back({"rollout:", RolloutText(s.rollout(), now)});
  rows.push_back({"lock:", s.has_lock() ? LockText(s.lock(), now) : std::string("-")});
  if (s.previews_size() > 0) {
    std::string previews;
    for (const auto& p : s.previews()) previews += (previews.empty() ? "" : ", ") + Sanitize(p);
    rows.push_back({"previews:", previews});
  }
  std::string out = KeyValues(rows);
  if (s.instances_size() == 0) {
    out += "\nNo instances.\n";
    return out;
  }
  Rows instances;
  for (const auto& i : s.instances()) {
    std::string release = VersionLabel(i.version());
    if (!i.preview().empty()) release += " (" + Sanitize(i.preview()) + ")";
    std::string state = OrDash(i.state());
    if (!i.desired().empty() && i.desired() != "running") state += " -> " + Sanitize(i.desired());
    instances.push_back({OrDash(i.id()), release, OrDash(i.node()), state,
                         i.pid() > 0 ? std::to_string(i.pid()) : "-", Uptime(i, now),
                         std::to_string(i.restarts()), CategoryDetail(i.category(), i.detail())});
  }
  out += "\n" + RenderTable({"INSTANCE", "RELEASE", "NODE", "STATE", "PID", "UPTIME", "RESTARTS",
                             "CATEGORY/DETAIL"},
                            instances);
  return out;
}

std::string RenderDescribe(const sched::DescribeResponse& d, int64_t now) {
  const auto& s = d.status();
  std::string out = RenderServiceStatus(s, now);

  out += "\nConfig:\n";
  std::set<std::string> env(s.env_keys().begin(), s.env_keys().end());
  std::set<std::string> secrets(s.secret_keys().begin(), s.secret_keys().end());
  std::set<std::string> missing;
  for (const auto& key : s.required_env()) {
    if (!env.contains(key) && !secrets.contains(key)) missing.insert(key);
  }
  std::set<std::string> required(s.required_env().begin(), s.required_env().end());
  std::map<std::string, std::string> keys;
  for (const auto& key : env) keys[key] = required.contains(key) ? " (required)" : "";
  for (const auto& key : secrets) {
    keys[key] = required.contains(key) ? " (secret, required)" : " (secret)";
  }
  for (const auto& key : missing) keys[key] = " (required, MISSING)";
  if (keys.empty()) out += "  no env keys set\n";
  for (const auto& [key, note] : keys) out += "  " + Sanitize(key) + note + "\n";
  if (!missing.empty()) {
    out += fmt::format("  {} required key{} missing: set with muon env set {} KEY=VALUE\n",
                       missing.size(), missing.size() == 1 ? " is" : "s are", s.name());
  }

  out += "\nReleases:\n";
  out += d.releases_size() == 0 ? std::string("  none yet\n") : RenderReleases(d.releases(), now);

  out += "\nRecent events:\n";
  if (d.events_size() == 0) out += "  none\n";
  for (const auto& e : d.events()) out += FormatEventLine(e) + "\n";
  return out;
}

std::string RenderReleases(const google::protobuf::RepeatedPtrField<sched::Release>& releases,
                           int64_t now) {
  Rows rows;
  const sched::Release* failed = nullptr;
  for (const auto& r : releases) {
    rows.push_back({ReleaseVersionText(r), OrDash(r.status()), ReasonText(r),
                    ShortCommit7(r.commit()), ShortDigest(r.artifact_digest()), OrDash(r.author()),
                    Ago(r.created_at(), now), CategoryDetail(r.category(), r.detail())});
    if (failed == nullptr && r.status() == "failed" && r.last_lines_size() > 0) failed = &r;
  }
  std::string out = RenderTable(
      {"VERSION", "STATUS", "REASON", "COMMIT", "ARTIFACT", "AUTHOR", "AGE", "CATEGORY/DETAIL"},
      rows);
  if (failed != nullptr) {
    out += fmt::format("\n{} failed ({}); its last lines:\n", VersionLabel(failed->version()),
                       CategoryDetail(failed->category(), ""));
    out += LastLines(failed->last_lines(), "  ");
  }
  return out;
}

bool IsHistoryEvent(std::string_view type) {
  for (std::string_view prefix : {"release.", "rollout.", "autodeploy.", "config.", "lock."}) {
    if (type.substr(0, prefix.size()) == prefix) return true;
  }
  return type == "scale" || type.substr(0, 6) == "scale.";
}

std::string RenderHistory(const google::protobuf::RepeatedPtrField<sched::Event>& events) {
  Rows rows;
  for (const auto& e : events) {
    rows.push_back(
        {TimeMillis(e.time()), OrDash(e.type()), VersionLabel(e.version()), OrDash(e.message())});
  }
  return RenderTable({"TIME", "TYPE", "RELEASE", "MESSAGE"}, rows);
}

std::string RenderDrift(const sched::DriftResponse& drift) {
  if (drift.items_size() == 0) return "No drift: every instance is as desired.\n";
  Rows rows;
  for (const auto& i : drift.items()) {
    rows.push_back({OrDash(i.service()), OrDash(i.instance()), OrDash(i.node()), OrDash(i.kind()),
                    OrDash(i.detail())});
  }
  return RenderTable({"SERVICE", "INSTANCE", "NODE", "KIND", "DETAIL"}, rows);
}

std::string RenderLocks(const sched::ListLocksResponse& locks, int64_t now) {
  if (locks.locks_size() == 0) return "No deploy locks are held.\n";
  Rows rows;
  for (const auto& l : locks.locks()) {
    rows.push_back({OrDash(l.service()), OrDash(l.holder()), OrDash(l.reason()),
                    Ago(l.acquired_at(), now), In(l.expires_at(), now)});
  }
  return RenderTable({"SERVICE", "HOLDER", "REASON", "ACQUIRED", "EXPIRES"}, rows);
}

// ---- muon wait ------------------------------------------------------------------------------

WaitVerdict JudgeWait(const sched::ServiceStatus& s, int32_t version) {
  const bool settled = s.state() == "converged" || s.state() == "stopped";
  if (version <= 0) {
    if (settled) return WaitVerdict::kConverged;
    if (s.state() == "failed") return WaitVerdict::kFailed;
    return WaitVerdict::kWaiting;
  }
  const auto& r = s.rollout();
  if (r.version() >= version && r.state() == "failed") return WaitVerdict::kFailed;
  if (s.state() == "failed" && r.version() >= version) return WaitVerdict::kFailed;
  if (settled && s.live_version() >= version) return WaitVerdict::kConverged;
  return WaitVerdict::kWaiting;
}

std::string WaitProgressLine(const sched::ServiceStatus& s) {
  std::string line = fmt::format("{}  {}  {} healthy", OrDash(s.state()),
                                 VersionLabel(s.live_version()), Replicas(s));
  const auto& r = s.rollout();
  if (r.state() == "running") {
    line += fmt::format("  rolling out {} -> {}", VersionLabel(r.from_version()),
                        VersionLabel(r.version()));
  }
  if (!s.detail().empty()) line += "  " + Sanitize(s.detail());
  return line;
}

std::string RenderWaitFailure(const sched::ServiceStatus& s, const sched::Release* release) {
  const auto& r = s.rollout();
  std::string out;
  // A release newer than the last rollout that failed before a rollout of it started
  // (config_missing, manifest_invalid, dependency_failed): the last rollout is not what failed.
  if (release != nullptr && release->status() == "failed" && release->version() > r.version()) {
    out += fmt::format("release {} failed before its rollout started: {}\n",
                       VersionLabel(release->version()),
                       CategoryDetail(release->category(), release->detail()));
  } else if (r.version() > 0) {
    out += fmt::format("rollout #{} of {} failed: {}\n", r.id(), VersionLabel(r.version()),
                       CategoryDetail(r.category(), r.detail()));
  } else {
    out += fmt::format("{} failed: {}\n", OrDash(s.name()), OrDash(s.detail()));
  }
  if (s.live_version() > 0) {
    out +=
        fmt::format("{} keeps serving ({} healthy)\n", VersionLabel(s.live_version()), Replicas(s));
  }
  for (const auto& i : s.instances()) {
    if (i.state() != "failed" && i.category().empty()) continue;
    out += fmt::format("instance {} ({}) {}: {}\n", OrDash(i.id()), VersionLabel(i.version()),
                       OrDash(i.state()), CategoryDetail(i.category(), i.detail()));
    out += LastLines(i.last_lines(), "  ");
  }
  if (release != nullptr && release->last_lines_size() > 0) {
    out += fmt::format("release {} ({}), last lines:\n", VersionLabel(release->version()),
                       CategoryDetail(release->category(), release->detail()));
    out += LastLines(release->last_lines(), "  ");
  }
  return out;
}

int ExecExitCode(const sched::ExecResponse& response) {
  if (response.signal() > 0) return 128 + std::min(response.signal(), 127);
  if (response.exit_code() < 0) return 1;  // no exit code (it could not be run, or was lost)
  return std::min(response.exit_code(), 255);
}

}  // namespace muon::cli
