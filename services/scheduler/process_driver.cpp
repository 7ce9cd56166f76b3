#include "process_driver.h"

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <deque>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "muon/common/log.h"
#include "muon/common/output_capture.h"

namespace muon::scheduler {
namespace fs = std::filesystem;
namespace {

constexpr size_t kLastLines = 20;
// What an instance gets when its env has no PATH (the node agent always sets one).
constexpr std::string_view kDefaultPath = "/usr/local/bin:/usr/bin:/bin";

class ProcessInstance : public RunningInstance {
 public:
  ProcessInstance(bus::Connection& bus, CaptureOptions options) {
    options.on_line = [this](const std::string& line, bool) {
      std::lock_guard lock(mu_);
      lines_.push_back(line);
      while (lines_.size() > kLastLines) lines_.pop_front();
    };
    capture_ = std::make_unique<CapturedProcess>(bus, std::move(options));
  }

  ~ProcessInstance() override {
    if (!exit_) Kill();
    capture_.reset();  // reaps, joins the reader
  }

  int pid() const override { return capture_->process().pid(); }

  std::optional<ExitStatus> Exited() override {
    if (exit_) return exit_;
    if (capture_->process().Running()) return std::nullopt;
    // Whatever the command left in its group (background helpers holding the output pipes)
    // goes with it; the zombie keeps the group id from being reused meanwhile.
    capture_->process().Signal(SIGKILL);
    exit_ = capture_->Wait();
    return exit_;
  }

  void Terminate() override {
    // To the whole group in one kill(): the instance and the helpers it started. In the sandbox
    // bwrap, the group's leader, ignores SIGTERM (see ProcessDriver::Command).
    if (!exit_) capture_->process().Signal(SIGTERM);
  }

  void Kill() override {
    if (!exit_) capture_->process().Signal(SIGKILL);
  }

  std::vector<std::string> LastLines() const override {
    std::lock_guard lock(mu_);
    return {lines_.begin(), lines_.end()};
  }

 private:
  std::unique_ptr<CapturedProcess> capture_;
  std::optional<ExitStatus> exit_;
  mutable std::mutex mu_;
  std::deque<std::string> lines_;
};

// `sh -c` with a simple command line (one program and its arguments, maybe redirections) gets
// `exec` in front, so the shell is replaced by the program: SIGTERM then reaches the program
// alone, which drains, instead of a shell that dies at once and takes the program's group (and,
// in the sandbox, its PID namespace) with it. Lists, pipes and subshells stay as written.
std::string ShellLine(const std::string& command) {
  if (command.find_first_of(";&|\n()`") != std::string::npos) return command;
  const size_t start = command.find_first_not_of(" \t");
  if (start == std::string::npos || command.compare(start, 5, "exec ") == 0) return command;
  return "exec " + command.substr(start);
}

// The directory holding the running binary (muon-scheduler, or a test binary) when muon-bus is in
// it, else empty: instances find the platform's own tools (`muon-bus serve`, the SDK for services
// without a NATS client) there. Read once.
const std::string& NodeToolsDir() {
  static const std::string dir = [] {
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (ec) return std::string();
    const fs::path tool = exe.parent_path() / "muon-bus";
    if (!fs::is_regular_file(tool, ec) || ::access(tool.c_str(), X_OK) != 0) return std::string();
    return exe.parent_path().string();
  }();
  return dir;
}

}  // namespace

std::optional<SandboxMode> ParseSandboxMode(std::string_view text) {
  if (text == "auto") return SandboxMode::kAuto;
  if (text == "bwrap") return SandboxMode::kBubblewrap;
  if (text == "none") return SandboxMode::kNone;
  return std::nullopt;
}

bool BubblewrapWorks() {
  ProcessOptions o;
  o.program = "bwrap";
  o.args = {"--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--unshare-pid",
            "--unshare-ipc",
            "--die-with-parent",
            "true"};
  try {
    return RunCommand(o, std::chrono::seconds(10)).status.Success();
  } catch (const std::exception&) {
    return false;  // not installed
  }
}

ProcessDriver::ProcessDriver(bus::Connection& bus, ProcessDriverOptions options)
    : bus_(bus), options_(std::move(options)) {
  switch (options_.sandbox) {
    case SandboxMode::kNone:
      sandboxed_ = false;
      break;
    case SandboxMode::kBubblewrap:
      if (!BubblewrapWorks()) {
        throw std::runtime_error(
            "sandbox bwrap: bubblewrap does not work here (install it; it needs user namespaces "
            "or root)");
      }
      sandboxed_ = true;
      break;
    case SandboxMode::kAuto:
      sandboxed_ = BubblewrapWorks();
      if (!sandboxed_) {
        log::Warn(
            "bubblewrap does not work here: instances run unsandboxed (they can see the node's "
            "files)");
      }
      break;
  }
  if (!options_.state_dir.empty()) options_.state_dir = fs::absolute(options_.state_dir);
}

ProcessOptions ProcessDriver::Command(const InstanceSpec& spec,
                                      const std::vector<std::string>& argv) const {
  ProcessOptions p;
  p.clear_env = true;
  p.env = spec.env;
  // The node's tools come first in PATH, so `exec muon-bus serve ...` works in a run command.
  const std::string& tools = NodeToolsDir();
  if (!tools.empty()) {
    auto path = p.env.find("PATH");
    p.env["PATH"] =
        tools + ":" +
        (path == p.env.end() || path->second.empty() ? std::string(kDefaultPath) : path->second);
  }
  const std::string dir = fs::absolute(spec.dir).string();
  if (!sandboxed_) {
    p.program = argv.at(0);
    p.args.assign(argv.begin() + 1, argv.end());
    p.working_dir = dir;
    return p;
  }
  p.program = "bwrap";
  p.args = {"--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"};
  for (const char* d : {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"}) {
    p.args.insert(p.args.end(), {"--ro-bind-try", d, d});
  }
  // Read-only, and before the state dir is hidden: a tools dir above the state dir must not
  // bring it back.
  if (!tools.empty()) p.args.insert(p.args.end(), {"--ro-bind", tools, tools});
  if (!options_.state_dir.empty()) {
    p.args.insert(p.args.end(), {"--tmpfs", options_.state_dir.string()});
  }
  p.args.insert(p.args.end(), {"--bind", dir, dir, "--unshare-pid", "--unshare-ipc",
                               "--die-with-parent", "--chdir", dir, "--"});
  // bwrap leads the instance's process group and dies of SIGTERM, taking the instance down with
  // SIGKILL (--die-with-parent). Started with SIGTERM ignored it lets Terminate signal the whole
  // group at once; the instance gets the default back from env. (Signalling every member but
  // the leader instead meant reading /proc, then killing: a child that left the group in between,
  // like a muon-bus serve command, was killed by a SIGTERM never meant for it.)
  p.ignored_signals = {SIGTERM};
  p.args.insert(p.args.end(), {"env", "--default-signal=TERM", "--"});
  p.args.insert(p.args.end(), argv.begin(), argv.end());
  return p;
}

std::unique_ptr<RunningInstance> ProcessDriver::Start(const InstanceSpec& spec) {
  CaptureOptions capture;
  capture.process = Command(spec, {"sh", "-c", ShellLine(spec.command)});
  capture.log = loglines::ShipperOptions{
      .service = spec.service, .instance = spec.id, .release = spec.release, .region = spec.region};
  capture.secrets = spec.secrets;
  return std::make_unique<ProcessInstance>(bus_, std::move(capture));
}

ExecOutcome ProcessDriver::Exec(const InstanceSpec& spec, const std::vector<std::string>& argv,
                                std::chrono::milliseconds timeout, size_t output_cap) {
  if (argv.empty()) throw std::invalid_argument("no command given");
  const auto started = std::chrono::steady_clock::now();
  RunResult r = RunCommand(Command(spec, argv), timeout);
  ExecOutcome out;
  out.status = r.status;
  out.timed_out = std::chrono::steady_clock::now() - started >= timeout && r.status.signal == 9;
  if (r.output.size() > output_cap) {
    r.output.resize(output_cap);
    out.truncated = true;
  }
  out.output = std::move(r.output);
  return out;
}

bool ProcessDriver::KillOrphan(const std::string& id, int pid) {
  if (pid <= 0) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  if (!in) return false;
  const std::string wanted = "MUON_INSTANCE=" + id;
  bool ours = false;
  for (std::string entry; std::getline(in, entry, '\0');) {
    if (entry == wanted) {
      ours = true;
      break;
    }
  }
  if (!ours) return false;
  // It was started in its own group (its pid is the group id): take what it started too.
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
  // Not our child: its parent (init, after the node died) reaps it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (fs::exists("/proc/" + std::to_string(pid) + "/environ") &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

}  // namespace muon::scheduler
