#include "muon/common/process.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <poll.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include "muon/common/fd.h"

extern char** environ;

namespace muon {
namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void ThrowErrno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

// The exit status we report when the child was reaped behind our back (e.g. SIGCHLD set to
// SIG_IGN). Real statuses always have code >= 0 or signal > 0, so this value is unambiguous, and
// it tells us the pid is no longer ours to signal.
bool ReapedElsewhere(const ExitStatus& s) {
  return s.code == -1 && s.signal == 0;
}

// Waits for the child to exit WITHOUT reaping it (WNOWAIT). While the zombie exists its pid,
// and so its process group id, cannot be reused, so the group can still be killed safely after
// the leader died: this is how leftovers of a group (background helpers) get cleaned up.
// nullopt while it runs (only with WNOHANG).
std::optional<ExitStatus> Peek(pid_t pid, bool block) {
  siginfo_t info{};
  while (true) {
    info.si_pid = 0;
    int r =
        ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT | (block ? 0 : WNOHANG));
    if (r == 0) break;
    if (errno == EINTR) continue;
    return ExitStatus{};  // ECHILD: reaped by someone else
  }
  if (info.si_pid == 0) return std::nullopt;
  ExitStatus result;
  if (info.si_code == CLD_EXITED) {
    result.code = info.si_status;
  } else {
    result.signal = info.si_status;  // CLD_KILLED or CLD_DUMPED
  }
  return result;
}

void ReapNow(pid_t pid) {
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

void SignalChild(pid_t pid, bool group, int signal) {
  if (group && ::kill(-pid, signal) == 0) return;
  ::kill(pid, signal);
}

// Kills the child (and, for a group leader, everything left in its group), then reaps it.
void KillAndReap(pid_t pid, bool group) {
  std::optional<ExitStatus> status = Peek(pid, false);
  if (status && ReapedElsewhere(*status)) return;
  if (!status || group) SignalChild(pid, group, SIGKILL);
  ReapNow(pid);
}

// The user to switch to, resolved in the parent: getpwnam and getgrouplist read files and take
// locks, which must not happen in the child of a multithreaded parent.
struct UserSwitch {
  bool enabled = false;
  bool change_ids = false;  // false when we already are that user (no privilege needed)
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  std::string name;
  std::string home;
};

UserSwitch ResolveUser(const std::string& user) {
  UserSwitch result;
  if (user.empty()) return result;
  long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buffer(hint > 0 ? static_cast<size_t>(hint) : 16384);
  passwd pw{};
  passwd* found = nullptr;
  int err = 0;
  while ((err = ::getpwnam_r(user.c_str(), &pw, buffer.data(), buffer.size(), &found)) == ERANGE) {
    buffer.resize(buffer.size() * 2);
  }
  if (err != 0) ThrowErrno(err, "cannot look up user '" + user + "'");
  if (found == nullptr) ThrowErrno(ENOENT, "no such user '" + user + "'");
  result.enabled = true;
  result.uid = pw.pw_uid;
  result.gid = pw.pw_gid;
  result.name = pw.pw_name;
  result.home = pw.pw_dir;
  result.change_ids = pw.pw_uid != ::geteuid() || pw.pw_gid != ::getegid();
  int count = 32;
  result.groups.resize(count);
  while (::getgrouplist(pw.pw_name, pw.pw_gid, result.groups.data(), &count) < 0) {
    // getgrouplist stores the required size in count when the buffer is too small.
    result.groups.resize(std::max<size_t>(count, result.groups.size() * 2));
    count = static_cast<int>(result.groups.size());
  }
  result.groups.resize(count);
  return result;
}

// Everything the child needs, built before fork so the child only makes system calls.
struct Prepared {
  std::vector<std::string> argv_storage;
  std::vector<std::string> env_storage;
  std::vector<char*> argv;
  std::vector<char*> envp;
  UserSwitch user;
};

Prepared Prepare(const ProcessOptions& options) {
  Prepared p;
  p.user = ResolveUser(options.run_as_user);
  p.argv_storage.push_back(options.program);
  p.argv_storage.insert(p.argv_storage.end(), options.args.begin(), options.args.end());

  std::map<std::string, std::string> env;
  if (!options.clear_env) {
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      std::string_view entry(*e);
      size_t eq = entry.find('=');
      if (eq == std::string_view::npos) continue;
      env[std::string(entry.substr(0, eq))] = std::string(entry.substr(eq + 1));
    }
  }
  if (p.user.enabled) {
    // Programs find their config through these; inheriting root's HOME would point them at a
    // directory they cannot read. Explicit options.env entries still win below.
    env["HOME"] = p.user.home;
    env["USER"] = p.user.name;
    env["LOGNAME"] = p.user.name;
  }
  for (const auto& [key, value] : options.env) env[key] = value;
  for (const auto& [key, value] : env) p.env_storage.push_back(key + "=" + value);

  for (auto& s : p.argv_storage) p.argv.push_back(s.data());
  p.argv.push_back(nullptr);
  for (auto& s : p.env_storage) p.envp.push_back(s.data());
  p.envp.push_back(nullptr);
  return p;
}

// What the child writes to the error pipe when a step before exec fails.
struct ChildError {
  int step;
  int err;
};

enum Step : int {
  kStepGroup,  // setpgid, or the signal mask after it (PrepareChildSignals)
  kStepGroups,
  kStepSetgid,
  kStepSetuid,
  kStepDeathSignal,
  kStepChdir,
  kStepOpenOutput,
  kStepRedirect,
  kStepExec,
};

const char* StepName(int step) {
  switch (step) {
    case kStepGroup:
      return "setpgid";
    case kStepGroups:
      return "setgroups";
    case kStepSetgid:
      return "setgid";
    case kStepSetuid:
      return "setuid";
    case kStepDeathSignal:
      return "prctl(PR_SET_PDEATHSIG)";
    case kStepChdir:
      return "chdir";
    case kStepOpenOutput:
      return "opening the output file";
    case kStepRedirect:
      return "redirecting output";
    case kStepExec:
      return "exec";
  }
  return "unknown step";
}

[[noreturn]] void ChildFail(int pipe_fd, int step) {
  ChildError e{step, errno};
  // Nothing useful can be done if this write fails; the parent then sees exit code 127.
  [[maybe_unused]] ssize_t n = ::write(pipe_fd, &e, sizeof(e));
  ::_exit(127);
}

// Runs in the forked child: async-signal-safe calls only, since the parent may have other threads
// holding locks (malloc, stdio) that would never be released in this copy of the process.
[[noreturn]] void ChildMain(const ProcessOptions& options, const Prepared& p, pid_t parent,
                            int error_fd, int stdin_fd, int output_fd) {
  // Signal dispositions set to SIG_IGN and the blocked mask survive exec; a parent that blocks
  // SIGTERM for sigwait or ignores SIGPIPE would otherwise hand that to servers it starts.
  if (!PrepareChildSignals(options.new_process_group, options.ignored_signals.data(),
                           options.ignored_signals.size())) {
    ChildFail(error_fd, kStepGroup);
  }

  if (p.user.enabled && p.user.change_ids) {
    // Groups first: after setuid we would no longer have the privilege to change them.
    if (::setgroups(p.user.groups.size(), p.user.groups.data()) != 0) {
      ChildFail(error_fd, kStepGroups);
    }
    if (::setgid(p.user.gid) != 0) ChildFail(error_fd, kStepSetgid);
    if (::setuid(p.user.uid) != 0) ChildFail(error_fd, kStepSetuid);
  }

  if (options.parent_death_signal != 0) {
    // After the credential change, which clears the death signal. Note the "parent" is the
    // thread that forked: if that thread exits, the child gets the signal.
    if (::prctl(PR_SET_PDEATHSIG, options.parent_death_signal) != 0) {
      ChildFail(error_fd, kStepDeathSignal);
    }
    // The parent may have died before prctl took effect; then no signal will ever come.
    if (::getppid() != parent) {
      ::raise(options.parent_death_signal);
      ::_exit(128 + options.parent_death_signal);
    }
  }

  if (!options.working_dir.empty() && ::chdir(options.working_dir.c_str()) != 0) {
    ChildFail(error_fd, kStepChdir);
  }

  if (stdin_fd >= 0 && ::dup2(stdin_fd, STDIN_FILENO) < 0) ChildFail(error_fd, kStepRedirect);
  int out = output_fd;
  if (out < 0 && !options.output_file.empty()) {
    // Opened after the user switch and chdir: the file is created as the target user and a
    // relative path means relative to the working dir.
    out = ::open(options.output_file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (out < 0) ChildFail(error_fd, kStepOpenOutput);
  }
  if (out >= 0) {
    if (::dup2(out, STDOUT_FILENO) < 0 || ::dup2(out, STDERR_FILENO) < 0) {
      ChildFail(error_fd, kStepRedirect);
    }
  }
  if (options.stdout_fd >= 0 && ::dup2(options.stdout_fd, STDOUT_FILENO) < 0) {
    ChildFail(error_fd, kStepRedirect);
  }
  if (options.stderr_fd >= 0 && ::dup2(options.stderr_fd, STDERR_FILENO) < 0) {
    ChildFail(error_fd, kStepRedirect);
  }

  // Descriptors the parent opened without O_CLOEXEC (sockets, listeners) must not leak into
  // long-running servers, where they would keep ports and files open. Best effort: needs
  // Linux 5.11.
  ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);

  ::execvpe(options.program.c_str(), p.argv.data(), p.envp.data());
  ChildFail(error_fd, kStepExec);
}

// Forks and execs; returns the pid once exec succeeded, throws otherwise. stdin_fd/output_fd
// (or -1) override stdin and stdout+stderr, for RunCommand.
pid_t Spawn(const ProcessOptions& options, int stdin_fd, int output_fd) {
  if (options.program.empty()) ThrowErrno(EINVAL, "cannot start process: empty program");
  Prepared prepared = Prepare(options);

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) ThrowErrno(errno, "pipe2");
  Fd read_end(fds[0]);
  Fd write_end(fds[1]);

  pid_t parent = ::getpid();
  pid_t pid;
  {
    SignalsBlockedForFork blocked;
    pid = ::fork();
    if (pid == 0) ChildMain(options, prepared, parent, write_end.get(), stdin_fd, output_fd);
  }
  if (pid < 0) ThrowErrno(errno, "fork for '" + options.program + "'");

  // Also set the group from the parent: otherwise a Signal() right after the constructor could
  // reach kill(-pid) before the child ran setpgid. EACCES after the child's exec is harmless.
  if (options.new_process_group) ::setpgid(pid, pid);

  write_end.Reset();  // so read() sees EOF when exec closes the child's copy
  ChildError error{};
  ssize_t n;
  do {
    n = ::read(read_end.get(), &error, sizeof(error));
  } while (n < 0 && errno == EINTR);
  if (n == 0) return pid;  // exec succeeded: the pipe closed on exec

  ReapNow(pid);
  if (n == static_cast<ssize_t>(sizeof(error))) {
    ThrowErrno(error.err, "cannot start '" + options.program + "': " + StepName(error.step));
  }
  ThrowErrno(EIO, "cannot start '" + options.program + "': lost contact with the child");
}

}  // namespace

SignalsBlockedForFork::SignalsBlockedForFork() {
  sigset_t all;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &saved_);
}

SignalsBlockedForFork::~SignalsBlockedForFork() {
  ::pthread_sigmask(SIG_SETMASK, &saved_, nullptr);
}

bool PrepareChildSignals(bool new_process_group, const int* ignored, size_t ignored_count) {
  if (new_process_group && ::setpgid(0, 0) != 0) return false;
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    // Setting SIG_IGN discards a pending signal: what was sent to the parent's group before we
    // left it was never meant for us. Fails harmlessly for KILL, STOP and glibc's own signals.
    if (new_process_group) ::sigaction(sig, &ignore, nullptr);
    ::sigaction(sig, &dfl, nullptr);
  }
  for (size_t i = 0; i < ignored_count; ++i) ::sigaction(ignored[i], &ignore, nullptr);
  sigset_t empty;
  sigemptyset(&empty);
  return ::sigprocmask(SIG_SETMASK, &empty, nullptr) == 0;
}

std::string ExitStatus::Describe() const {
  if (signal != 0) {
    const char* name = ::strsignal(signal);
    return "killed by signal " + std::to_string(signal) + " (" + (name ? name : "?") + ")";
  }
  if (code >= 0) return "exit code " + std::to_string(code);
  return "unknown exit status";
}

Process::Process(const ProcessOptions& options)
    : pid_(Spawn(options, -1, -1)), group_(options.new_process_group) {}

Process::Process(Process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      group_(other.group_),
      exit_(std::exchange(other.exit_, std::nullopt)) {}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0) KillAndReap(pid_, group_);
    pid_ = std::exchange(other.pid_, -1);
    group_ = other.group_;
    exit_ = std::exchange(other.exit_, std::nullopt);
  }
  return *this;
}

// The exited child stays an unreaped zombie until here (see Peek), so the group kill below cannot
// hit a recycled pid.
Process::~Process() {
  if (pid_ > 0) KillAndReap(pid_, group_);
}

bool Process::Running() {
  if (pid_ <= 0) return false;
  if (!exit_) exit_ = Peek(pid_, false);
  return !exit_;
}

void Process::Signal(int signal) {
  // After an exit the zombie still holds the pid, so signaling stays safe (and reaches what is
  // left of the group); only a child reaped elsewhere must not be signaled.
  if (pid_ <= 0 || (exit_ && ReapedElsewhere(*exit_))) return;
  SignalChild(pid_, group_, signal);
}

std::optional<ExitStatus> Process::WaitFor(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  while (Running()) {
    auto now = Clock::now();
    if (now >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - now));
    // Quick exits are noticed within a millisecond, long waits cost little CPU.
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
  return exit_.value_or(ExitStatus{});
}

ExitStatus Process::Wait() {
  if (pid_ > 0 && !exit_) exit_ = Peek(pid_, true);
  return exit_.value_or(ExitStatus{});
}

ExitStatus Process::Stop(std::chrono::milliseconds grace) {
  if (!Running()) return exit_.value_or(ExitStatus{});
  Signal(SIGTERM);
  if (auto status = WaitFor(grace)) return *status;
  Signal(SIGKILL);
  return Wait();
}

pid_t Process::Release() {
  pid_t pid = std::exchange(pid_, -1);
  // A child that already exited is a zombie only we would ever reap.
  if (pid > 0 && exit_ && !ReapedElsewhere(*exit_)) ReapNow(pid);
  exit_.reset();
  return pid;
}

RunResult RunCommand(const ProcessOptions& options, std::chrono::milliseconds timeout) {
  // A pipe rather than a temp file: the child may run as another user who could not open a
  // file we created, and nothing is left behind on disk.
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) ThrowErrno(errno, "pipe2");
  Fd read_end(fds[0]);
  Fd write_end(fds[1]);
  // Commands must not wait on the caller's terminal.
  Fd null_in(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (null_in.get() < 0) ThrowErrno(errno, "open /dev/null");

  ProcessOptions opts = options;
  opts.output_file.clear();
  pid_t pid = Spawn(opts, null_in.get(), write_end.get());
  // On every way out, including exceptions: kill what is left of the command's group (it was
  // meant to finish; background helpers it left behind would hold the pipe and leak) and reap.
  struct Guard {
    pid_t pid;
    bool group;
    ~Guard() { KillAndReap(pid, group); }
  } guard{pid, opts.new_process_group};
  write_end.Reset();  // only the child holds the write end now
  ::fcntl(read_end.get(), F_SETFL, ::fcntl(read_end.get(), F_GETFL) | O_NONBLOCK);

  RunResult result;
  bool open = true;
  auto drain = [&] {
    char buffer[65536];
    while (true) {
      ssize_t n = ::read(read_end.get(), buffer, sizeof(buffer));
      if (n > 0) {
        result.output.append(buffer, static_cast<size_t>(n));
      } else if (n == 0) {
        open = false;  // EOF: every writer is gone
        return;
      } else if (errno != EINTR) {
        return;  // EAGAIN: nothing buffered right now
      }
    }
  };

  auto deadline = Clock::now() + timeout;
  while (true) {
    // Keep reading while waiting: a child writing more than the pipe buffer would otherwise
    // block forever and never exit.
    if (auto status = Peek(pid, false)) {
      // A background grandchild may hold the pipe open forever, so do not wait for EOF: take
      // what is buffered and stop.
      if (open) drain();
      result.status = *status;
      return result;
    }
    auto now = Clock::now();
    if (now >= deadline) break;
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::min<Clock::duration>(deadline - now, std::chrono::milliseconds(10)));
    if (open) {
      pollfd pfd{read_end.get(), POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(std::max<int64_t>(1, wait.count()))) > 0) drain();
    } else {
      std::this_thread::sleep_for(wait);
    }
  }

  // Timed out: kill the whole group so helpers it started die too.
  SignalChild(pid, opts.new_process_group, SIGKILL);
  result.status = Peek(pid, true).value_or(ExitStatus{});
  if (open) drain();
  return result;
}

}  // namespace muon
