#include "node_agent.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <deque>
#include <set>

#include "artifact.h"
#include "backoff.h"
#include "muon/common/errors.h"
#include "muon/common/log.h"
#include "muon/common/service.h"
#include "muon/scheduler/v1/scheduler.pb.h"

namespace muon::scheduler {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr size_t kExecOutputCap = 1024 * 1024;
constexpr auto kFastProbeFor = 5s;          // right after a start, PING is polled often...
constexpr auto kFastProbeInterval = 150ms;  // ...this often
constexpr auto kMaxStartingInterval = 1s;   // health.interval is capped at this while starting
constexpr auto kRunningTick = 250ms;        // how often a running instance is looked at

std::string Hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "node";
  return name;
}

// A TCP port free on loopback right now (bound to port 0 and read back).
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// GET http://127.0.0.1:<port><path>: the status code, or 0 with `error` set.
int HttpGetStatus(int port, const std::string& path, std::chrono::milliseconds timeout,
                  std::string& error) {
  const auto deadline = Clock::now() + timeout;
  auto left = [&] {
    return static_cast<int>(std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count()));
  };
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    error = "socket failed";
    return 0;
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS) {
    error = fmt::format("GET {} on port {}: connection refused", path, port);
    return 0;
  }
  pollfd p{fd, POLLOUT, 0};
  int so_error = 0;
  socklen_t so_len = sizeof so_error;
  if (::poll(&p, 1, left()) <= 0 ||
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &so_len) != 0 || so_error != 0) {
    error = fmt::format("GET {} on port {}: cannot connect", path, port);
    return 0;
  }
  const std::string request =
      fmt::format("GET {} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", path, port);
  size_t sent = 0;
  while (sent < request.size()) {
    p = {fd, POLLOUT, 0};
    if (::poll(&p, 1, left()) <= 0) break;
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string response;
  while (response.find("\r\n") == std::string::npos && response.size() < 4096) {
    p = {fd, POLLIN, 0};
    if (::poll(&p, 1, left()) <= 0) break;
    char buffer[1024];
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    response.append(buffer, static_cast<size_t>(n));
  }
  // "HTTP/1.1 200 OK"
  if (response.rfind("HTTP/", 0) != 0 || response.find(' ') == std::string::npos) {
    error = fmt::format("GET {} on port {}: no HTTP answer", path, port);
    return 0;
  }
  const int status = std::atoi(response.c_str() + response.find(' ') + 1);
  if (status < 200 || status > 299) {
    error = fmt::format("GET {} on port {} answered {}", path, port, status);
  }
  return status;
}

std::string LastLine(const std::vector<std::string>& lines) {
  return lines.empty() ? std::string() : lines.back();
}

std::string Seconds(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0) return fmt::format("{}s", d.count() / 1000);
  return fmt::format("{:.1f}s", static_cast<double>(d.count()) / 1000.0);
}

}  // namespace

// One instance's thread and what the main loop tells it.
struct NodeAgent::Runner {
  std::string id;
  std::mutex mu;
  std::condition_variable cv;
  Assignment assignment;  // the latest row (desired changes)
  bool shutdown = false;  // the node stops
  bool gone = false;      // the row disappeared: stop it
  std::atomic<bool> done{false};
  std::optional<InstanceSpec> live;  // while a process runs: what Exec needs
  std::thread thread;

  bool WantRunning() {
    std::lock_guard lock(mu);
    return !shutdown && !gone && assignment.desired == "running";
  }
  Assignment Current() {
    std::lock_guard lock(mu);
    return assignment;
  }
};

namespace {

// What one instance thread reports: the row's current values, re-sent until the store takes
// them (the database may be away), and the events not recorded yet.
class Reporter {
 public:
  Reporter(NodeStore& store, EventLog& events, std::string id) : store_(store), events_(events) {
    report_.id = std::move(id);
  }

  InstanceReport& row() { return report_; }

  void Send() {
    dirty_ = true;
    Flush();
  }
  void Event(EventInput event) {
    queued_.push_back(std::move(event));
    Flush();
  }
  // Retries what is pending; true when nothing is.
  bool Flush() {
    if (dirty_) {
      try {
        store_.Report(report_);
        dirty_ = false;
      } catch (const std::exception& e) {
        Warn("instance state not reported yet", e);
      }
    }
    while (!dirty_ && !queued_.empty()) {
      try {
        events_.Record(queued_.front());
        queued_.pop_front();
      } catch (const std::exception& e) {
        Warn("instance event not recorded yet", e);
        break;
      }
    }
    const bool clean = !dirty_ && queued_.empty();
    if (clean) warned_ = false;
    return clean;
  }

 private:
  void Warn(const char* what, const std::exception& e) {
    if (warned_) return;  // once per outage
    warned_ = true;
    log::Warn(what, {{"instance", report_.id}, {"error", e.what()}});
  }

  NodeStore& store_;
  EventLog& events_;
  InstanceReport report_;
  bool dirty_ = false;
  bool warned_ = false;
  std::deque<EventInput> queued_;
};

}  // namespace

NodeAgent::NodeAgent(NodeStore& store, EventLog& events, bus::Connection& bus,
                     InstanceDriver& driver, NodeOptions options)
    : store_(store),
      events_(events),
      bus_(bus),
      driver_(driver),
      options_(std::move(options)),
      artifacts_(bus, fs::absolute(options_.state_dir) / "artifacts", options_.bearer) {
  if (options_.node_id.empty()) throw std::invalid_argument("node id required");
  if (options_.host.empty()) options_.host = Hostname();
  options_.state_dir = fs::absolute(options_.state_dir);
  fs::create_directories(options_.state_dir / "instances");
}

NodeAgent::~NodeAgent() {
  Stop();
}

std::string NodeAgent::DefaultNodeId() {
  if (const char* id = std::getenv("MUON_NODE_ID"); id != nullptr && *id != '\0') return id;
  return Hostname();
}

std::string NodeAgent::ReleaseLabel(int version, const std::string& preview) {
  return preview.empty() ? fmt::format("v{}", version) : preview;
}

void NodeAgent::Start() {
  {
    std::lock_guard lock(mu_);
    if (started_) return;
    started_ = true;
  }
  kick_sub_ = bus_.Subscribe(fmt::format("muon.node.{}.kick", options_.node_id),
                             [this](bus::Msg&) { Kick(); });
  exec_sub_ = bus_.Subscribe(fmt::format("muon.node.{}.Exec", options_.node_id),
                             [this](bus::Msg& msg) { HandleExec(msg); });
  loop_ = std::thread([this] { Loop(); });
  log::Info("node runtime started", {{"node", options_.node_id},
                                     {"region", options_.region},
                                     {"driver", driver_.name()},
                                     {"state_dir", options_.state_dir.string()}});
}

void NodeAgent::Stop() {
  {
    std::lock_guard lock(mu_);
    if (!started_ || stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  kick_sub_.Unsubscribe();
  exec_sub_.Unsubscribe();
  if (loop_.joinable()) loop_.join();
  std::map<std::string, std::unique_ptr<Runner>> runners;
  {
    std::lock_guard lock(mu_);
    runners.swap(runners_);
  }
  for (auto& [id, r] : runners) {
    {
      std::lock_guard lock(r->mu);
      r->shutdown = true;
    }
    r->cv.notify_all();
  }
  for (auto& [id, r] : runners) {
    if (r->thread.joinable()) r->thread.join();
  }
  std::lock_guard lock(exec_mu_);
  for (auto& t : exec_threads_) {
    if (t.thread.joinable()) t.thread.join();
  }
  exec_threads_.clear();
  log::Info("node runtime stopped", {{"node", options_.node_id}});
}

void NodeAgent::Kick() {
  {
    std::lock_guard lock(mu_);
    kicked_ = true;
  }
  cv_.notify_all();
}

size_t NodeAgent::instances() const {
  std::lock_guard lock(mu_);
  return static_cast<size_t>(std::count_if(runners_.begin(), runners_.end(),
                                           [](const auto& r) { return !r.second->done.load(); }));
}

void NodeAgent::Loop() {
  auto next_heartbeat = Clock::now();
  bool db_warned = false;
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      kicked_ = false;
    }
    bool ok = true;
    std::string error;
    if (Clock::now() >= next_heartbeat) {
      try {
        store_.Heartbeat(options_.node_id, options_.region, options_.host);
        next_heartbeat = Clock::now() + options_.heartbeat;
      } catch (const std::exception& e) {
        ok = false;
        error = e.what();
      }
    }
    if (ok) {
      try {
        Reconcile(store_.Assigned(options_.node_id));
      } catch (const std::exception& e) {
        ok = false;
        error = e.what();
      }
    }
    if (!ok && !db_warned) {
      log::Warn("cannot reach the database: instances keep running as they are; retrying",
                {{"node", options_.node_id}, {"error", error}});
    } else if (ok && db_warned) {
      log::Info("database reachable again", {{"node", options_.node_id}});
    }
    db_warned = !ok;
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, options_.poll, [&] { return stopping_ || kicked_; });
  }
}

void NodeAgent::Reconcile(const std::vector<Assignment>& assigned) {
  std::lock_guard lock(mu_);
  if (stopping_) return;
  // Threads whose instance reached stopped are done: forget them first, so a row that wants
  // running again gets a fresh one.
  for (auto it = runners_.begin(); it != runners_.end();) {
    if (it->second->done.load()) {
      if (it->second->thread.joinable()) it->second->thread.join();
      it = runners_.erase(it);
    } else {
      ++it;
    }
  }
  std::set<std::string> seen;
  for (const auto& a : assigned) {
    seen.insert(a.id);
    auto it = runners_.find(a.id);
    if (it != runners_.end()) {
      Runner& r = *it->second;
      {
        std::lock_guard rlock(r.mu);
        r.assignment.desired = a.desired;
      }
      r.cv.notify_all();
      continue;
    }
    if (a.desired != "running" && a.state == "stopped") continue;
    auto runner = std::make_unique<Runner>();
    runner->id = a.id;
    runner->assignment = a;
    Runner* raw = runner.get();
    runners_.emplace(a.id, std::move(runner));
    raw->thread = std::thread([this, raw] { RunInstance(*raw); });
  }
  for (auto& [id, r] : runners_) {
    if (seen.count(id) != 0) continue;
    {
      std::lock_guard rlock(r->mu);
      r->gone = true;
    }
    r->cv.notify_all();
  }
}

void NodeAgent::RunInstance(Runner& runner) {
  const Assignment first = runner.Current();
  const std::string& id = first.id;
  const std::string label = ReleaseLabel(first.version, first.preview);
  Reporter rep(store_, events_, id);
  auto event = [&](std::string type, std::string message,
                   std::map<std::string, std::string> attributes = {}) {
    rep.Event(EventInput{.service = first.service,
                         .type = std::move(type),
                         .message = std::move(message),
                         .version = first.version,
                         .instance = id,
                         .attributes = std::move(attributes)});
  };
  // Waits up to `d` (or until the row or the node changes), retrying pending reports meanwhile.
  auto wait = [&](Clock::duration d) {
    const auto until = Clock::now() + d;
    while (true) {
      const auto now = Clock::now();
      if (now >= until || !runner.WantRunning()) return;
      rep.Flush();
      std::unique_lock lock(runner.mu);
      runner.cv.wait_for(lock, std::min<Clock::duration>(until - now, 1s), [&] {
        return runner.shutdown || runner.gone || runner.assignment.desired != "running";
      });
    }
  };

  // A pid on the row is from an earlier run of this node (this thread has started nothing yet):
  // if that process is still there, it is an orphan of a crashed node.
  if (first.pid > 0 && driver_.KillOrphan(id, first.pid)) {
    event("instance.orphan_killed",
          fmt::format("{}: killed process {} left by an earlier run of node {}", id, first.pid,
                      options_.node_id),
          {{"pid", std::to_string(first.pid)}, {"node", options_.node_id}});
  }

  const fs::path dir = options_.state_dir / "instances" / id;
  int restarts = first.restarts;
  RestartBackoff backoff(options_.backoff_initial, options_.backoff_max);
  CrashLoop crash_loop;
  std::unique_ptr<RunningInstance> inst;
  std::string why_restart;  // the last exit or failure, for the restarted event
  bool ever_started = false;

  while (runner.WantRunning()) {
    const Assignment a = runner.Current();
    if (ever_started) ++restarts;
    const auto& m = a.manifest;

    auto fail = [&](const std::string& category, const std::string& detail,
                    const std::vector<std::string>& lines, Clock::duration healthy_for) {
      const auto delay =
          backoff.Next(std::chrono::duration_cast<std::chrono::milliseconds>(healthy_for));
      auto& row = rep.row();
      row.state = "backoff";
      row.pid = 0;
      row.restarts = restarts;
      row.category = category;
      row.detail = detail;
      row.last_lines = lines;
      rep.Send();
      why_restart = detail;
      log::Info(
          "instance waits to restart",
          {{"instance", id}, {"category", category}, {"detail", detail}, {"in", Seconds(delay)}});
      wait(delay);
    };

    // Prepare and start.
    std::string problem = a.problem;
    InstanceSpec spec;
    if (problem.empty()) {
      std::error_code ec;
      fs::remove_all(dir, ec);
      fs::create_directories(dir, ec);
      if (ec) problem = fmt::format("cannot create {}: {}", dir.string(), ec.message());
    }
    if (problem.empty() && driver_.real()) {
      fs::path file;
      try {
        file = artifacts_.Get(a.artifact_digest);
      } catch (const std::exception& e) {
        problem = fmt::format("artifact {} could not be fetched: {}", a.artifact_digest, e.what());
      }
      if (problem.empty()) {
        try {
          builder::UnpackArtifact(file, dir);
        } catch (const std::exception& e) {
          problem =
              fmt::format("artifact {} could not be unpacked: {}", a.artifact_digest, e.what());
        }
      }
    }
    if (problem.empty()) {
      spec.id = id;
      spec.service = a.service;
      spec.release = label;
      spec.region = options_.region;
      spec.dir = dir;
      spec.command = m.run_command;
      spec.secrets = a.secret_values;
      spec.port = FreePort();
      spec.env = {
          {"PATH", "/usr/local/bin:/usr/bin:/bin"}, {"HOME", dir.string()}, {"LANG", "C.UTF-8"}};
      for (const auto& [k, v] : m.run_env) spec.env[k] = v;
      for (const auto& [k, v] : a.env) spec.env[k] = v;
      spec.env["MUON_SERVICE"] = a.service;
      spec.env["MUON_VERSION"] = label;
      spec.env["MUON_INSTANCE"] = id;
      spec.env["MUON_REGION"] = options_.region;
      spec.env["NATS_URL"] = options_.nats_url;
      spec.env["PORT"] = std::to_string(spec.port);
      if (!a.preview.empty()) spec.env["MUON_PREVIEW"] = "1";
      if (m.run_command.empty()) problem = "the manifest has no run command";
    }
    if (problem.empty()) {
      try {
        inst = driver_.Start(spec);
      } catch (const std::exception& e) {
        problem = fmt::format("could not start: {}", e.what());
      }
    }
    if (!problem.empty()) {
      event("instance.start_failed", fmt::format("{} could not start: {}", id, problem),
            {{"category", "start_failed"}});
      fail("start_failed", problem, {}, Clock::duration::zero());
      ever_started = true;  // the next attempt is a restart
      continue;
    }

    const auto started = Clock::now();
    {
      std::lock_guard lock(runner.mu);
      runner.live = spec;
    }
    auto& row = rep.row();
    row.state = "starting";
    row.pid = inst->pid();
    row.restarts = restarts;
    row.started_at = std::chrono::system_clock::now();
    rep.Send();
    if (ever_started) {
      event("instance.restarted",
            fmt::format("{} restarted (restart {}) after: {}", id, restarts, why_restart),
            {{"restarts", std::to_string(restarts)}, {"pid", std::to_string(inst->pid())}});
    } else {
      event("instance.started", fmt::format("{} started (pid {})", id, inst->pid()),
            {{"pid", std::to_string(inst->pid())}, {"release", label}});
    }
    ever_started = true;

    // Until healthy.
    enum class Outcome { kHealthy, kExited, kTimeout, kStop } outcome = Outcome::kStop;
    std::optional<ExitStatus> exit;
    std::string not_yet = "not started";
    const auto health_deadline = started + m.health.timeout;
    while (true) {
      if ((exit = inst->Exited())) {
        outcome = Outcome::kExited;
        break;
      }
      if (!runner.WantRunning()) {
        outcome = Outcome::kStop;
        break;
      }
      bool healthy = !driver_.real();
      if (!healthy) {
        bus::Msg reply;
        const std::string ping = fmt::format("$SRV.PING.{}.{}", a.service, id);
        if (auto ec = bus_.Request(ping, "", {}, 500ms, reply)) {
          not_yet = fmt::format("no answer to {} ({})", ping, ec.message());
        } else if (!m.health.rpc.empty()) {
          const std::string subject = VersionSubject(a.service, label, m.health.rpc);
          if (auto ec2 = bus_.Request(subject, "", {}, 2s, reply)) {
            not_yet = fmt::format("{}: {}", subject, ec2.message());
          } else if (auto err = reply.Header(bus::kHeaderServiceError)) {
            not_yet = fmt::format("{} answered {} {}", subject,
                                  reply.Header(bus::kHeaderServiceErrorCode).value_or("?"), *err);
          } else {
            healthy = true;
          }
        } else if (!m.health.http_path.empty()) {
          std::string error;
          const int status = HttpGetStatus(spec.port, m.health.http_path, 2s, error);
          if (status >= 200 && status <= 299) {
            healthy = true;
          } else {
            not_yet = error;
          }
        } else {
          healthy = true;
        }
      }
      if (healthy) {
        outcome = Outcome::kHealthy;
        break;
      }
      const auto now = Clock::now();
      if (now >= health_deadline) {
        outcome = Outcome::kTimeout;
        break;
      }
      const Clock::duration interval =
          now - started < kFastProbeFor
              ? Clock::duration(kFastProbeInterval)
              : std::min<Clock::duration>(m.health.interval, kMaxStartingInterval);
      wait(std::min<Clock::duration>(interval, health_deadline - now));
    }

    auto end_process = [&](std::chrono::milliseconds grace) -> ExitStatus {
      if (auto st = inst->Exited()) return *st;
      inst->Terminate();
      const auto until = Clock::now() + grace;
      while (Clock::now() < until) {
        if (auto st = inst->Exited()) return *st;
        std::this_thread::sleep_for(20ms);
      }
      inst->Kill();
      while (true) {
        if (auto st = inst->Exited()) return *st;
        std::this_thread::sleep_for(10ms);
      }
    };
    auto forget_process = [&] {
      inst.reset();
      std::lock_guard lock(runner.mu);
      runner.live.reset();
    };

    if (outcome == Outcome::kExited) {
      const auto lines = inst->LastLines();
      const std::string detail = exit->Describe();
      event("instance.exited",
            fmt::format("{} exited before it was healthy: {}{}", id, detail,
                        lines.empty() ? "" : "; last line: " + LastLine(lines)),
            {{"exit", detail}, {"category", "start_failed"}});
      forget_process();
      fail("start_failed", detail, lines, Clock::duration::zero());
      continue;
    }
    if (outcome == Outcome::kTimeout) {
      const std::string detail =
          fmt::format("not healthy within {}s: {}", m.health.timeout.count(), not_yet);
      inst->Kill();
      const ExitStatus st = end_process(0ms);
      const auto lines = inst->LastLines();
      event("instance.health_timeout", fmt::format("{} {}; killed ({})", id, detail, st.Describe()),
            {{"category", "health_timeout"}});
      forget_process();
      fail("health_timeout", detail, lines, Clock::duration::zero());
      continue;
    }
    if (outcome == Outcome::kHealthy) {
      const auto healthy_since = Clock::now();
      row.state = "healthy";
      row.healthy_at = std::chrono::system_clock::now();
      row.category = "";
      row.detail = "";
      rep.Send();
      event("instance.healthy",
            fmt::format("{} healthy after {}", id,
                        Seconds(std::chrono::duration_cast<std::chrono::milliseconds>(
                            healthy_since - started))),
            {{"pid", std::to_string(inst->pid())}});
      while (runner.WantRunning()) {
        if ((exit = inst->Exited())) break;
        wait(kRunningTick);
      }
      if (exit) {
        const auto lines = inst->LastLines();
        const std::string detail = exit->Describe();
        const bool looping = crash_loop.ExitAfterHealthy(Clock::now());
        event("instance.exited",
              fmt::format("{} exited: {}{}", id, detail,
                          lines.empty() ? "" : "; last line: " + LastLine(lines)),
              {{"exit", detail}, {"category", looping ? "crash_loop" : ""}});
        forget_process();
        if (looping) {
          fail("crash_loop", fmt::format("exited 3 times within 5 minutes; last: {}", detail),
               lines, Clock::now() - healthy_since);
        } else {
          fail("", fmt::format("exited: {}", detail), lines, Clock::now() - healthy_since);
        }
        continue;
      }
    }
    // Stop requested (desired stopped, row gone, or the node stops): drain, then kill.
    if (inst) {
      row.state = "stopping";
      rep.Send();
      const ExitStatus st =
          end_process(std::chrono::duration_cast<std::chrono::milliseconds>(m.drain_grace));
      why_restart = st.Describe();
      forget_process();
    }
  }

  // Not wanted (or the node stops): nothing runs now.
  {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  bool shutdown = false;
  {
    std::lock_guard lock(runner.mu);
    shutdown = runner.shutdown;
  }
  auto& row = rep.row();
  row.pid = 0;
  row.restarts = restarts;
  if (shutdown && runner.Current().desired == "running") {
    row.state = "pending";
    row.detail = fmt::format("node {} stopped; starts again when it is back", options_.node_id);
    rep.Send();
    if (ever_started) event("instance.stopped", fmt::format("{} stopped with its node", id));
  } else {
    row.state = "stopped";
    rep.Send();
    if (ever_started) {
      event("instance.stopped", fmt::format("{} stopped ({})", id, why_restart),
            {{"exit", why_restart}});
    }
  }
  // The final state must reach the row; give up only when the node stops.
  while (!rep.Flush()) {
    std::unique_lock lock(runner.mu);
    if (runner.shutdown) break;
    runner.cv.wait_for(lock, 1s, [&] { return runner.shutdown; });
  }
  runner.done = true;
}

void NodeAgent::HandleExec(bus::Msg& msg) {
  // Runs on its own thread: a command may take minutes, other execs must not wait for it.
  auto request = std::make_shared<bus::Msg>(std::move(msg));
  std::lock_guard lock(exec_mu_);
  {
    std::lock_guard agent_lock(mu_);
    if (stopping_) return;
  }
  // Forget the threads of finished commands.
  for (auto it = exec_threads_.begin(); it != exec_threads_.end();) {
    if (it->done->load()) {
      it->thread.join();
      it = exec_threads_.erase(it);
    } else {
      ++it;
    }
  }
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::thread thread([this, request, done] {
    struct MarkDone {
      std::atomic<bool>& done;
      ~MarkDone() { done = true; }
    } mark{*done};
    auto error = [&](const Error& e) {
      bus_.Respond(*request, ToProto(e, "node.Exec").SerializeAsString(),
                   {{bus::kHeaderServiceError, e.detail()},
                    {bus::kHeaderServiceErrorCode, std::to_string(e.code())}});
    };
    v1::ExecRequest req;
    if (!req.ParseFromArray(request->data().data(), static_cast<int>(request->data().size()))) {
      error(Error::BadRequest("not an ExecRequest"));
      return;
    }
    if (req.command().empty()) {
      error(Error::BadRequest("no command given"));
      return;
    }
    std::optional<InstanceSpec> spec;
    {
      std::lock_guard agent_lock(mu_);
      for (const auto& [id, r] : runners_) {
        if (!req.instance().empty() && id != req.instance()) continue;
        std::lock_guard rlock(r->mu);
        if (r->assignment.service != req.service() && !req.service().empty()) continue;
        if (r->live) {
          spec = r->live;
          break;
        }
      }
    }
    if (!spec) {
      error(Error::NotFound(
          req.instance().empty()
              ? fmt::format("no running instance of {} on node {}", req.service(), options_.node_id)
              : fmt::format("instance {} does not run on node {}", req.instance(),
                            options_.node_id)));
      return;
    }
    const auto timeout = std::chrono::milliseconds(
        req.timeout_ms() <= 0 ? 30000 : std::min(req.timeout_ms(), 600000));
    v1::ExecResponse response;
    response.set_instance(spec->id);
    response.set_node(options_.node_id);
    try {
      const ExecOutcome out = driver_.Exec(*spec, {req.command().begin(), req.command().end()},
                                           timeout, kExecOutputCap);
      response.set_exit_code(out.status.code);
      response.set_signal(out.status.signal);
      response.set_output(out.output);
      response.set_truncated(out.truncated);
    } catch (const std::exception& e) {
      error(Error::BadRequest(fmt::format("cannot run {}: {}", req.command(0), e.what())));
      return;
    }
    bus_.Respond(*request, response.SerializeAsString(),
                 {{bus::kHeaderContentType, std::string(bus::kContentTypeProtobuf)}});
  });
  exec_threads_.push_back(ExecThread{std::move(thread), std::move(done)});
}

}  // namespace muon::scheduler
