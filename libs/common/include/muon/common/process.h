#pragma once
// Child processes with RAII: a Process that goes out of scope is killed (its whole process group)
// and reaped, so a failing test or a crashed parent leaves nothing behind. Used by the test
// harness, the local tooling, and later by the node runtime.

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace muon {

struct ProcessOptions {
  std::string program;  // path, or a name looked up in PATH
  std::vector<std::string> args;  // without argv[0]
  // Variables to set on top of the inherited environment (or of nothing if clear_env).
  std::map<std::string, std::string> env;
  bool clear_env = false;
  std::string working_dir;  // empty = inherit
  std::string output_file;  // stdout+stderr appended here; empty = inherit
  // Descriptors (owned by the caller) the child gets as stdout / stderr; -1 = as above.
  int stdout_fd = -1;
  int stderr_fd = -1;
  std::string run_as_user;  // switch to this user before exec (needs root); empty = stay
  bool new_process_group = true;
  // Signal the child gets when the parent dies (prctl PR_SET_PDEATHSIG); 0 = none.
  int parent_death_signal = 9;
  // Signals the child starts with ignored (SIG_IGN survives exec); every other one is reset to
  // its default.
  std::vector<int> ignored_signals;
};

struct ExitStatus {
  int code = -1;    // exit code when exited normally, else -1
  int signal = 0;   // terminating signal, else 0
  bool Success() const { return code == 0 && signal == 0; }
  std::string Describe() const;  // "exit code 3", "killed by signal 9 (Killed)"
};

class Process {
 public:
  Process() = default;
  // Starts the process; throws std::system_error when fork/exec fails (exec failure is reported
  // through a pipe, so a missing program is an exception here, not a silent exit 127).
  explicit Process(const ProcessOptions& options);
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();  // Kill(SIGKILL) + reap if still running

  pid_t pid() const { return pid_; }
  bool Running();  // reaps if it exited
  void Signal(int signal);  // to the process group when new_process_group, else the process
  // Waits up to `timeout`; nullopt when still running.
  std::optional<ExitStatus> WaitFor(std::chrono::milliseconds timeout);
  ExitStatus Wait();
  // SIGTERM, wait up to grace, then SIGKILL; returns how it ended.
  ExitStatus Stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
  // Forget the child without killing it (it keeps running).
  pid_t Release();

 private:
  pid_t pid_ = -1;
  bool group_ = true;
  std::optional<ExitStatus> exit_;
};

// Runs to completion and returns the exit status and captured stdout+stderr.
struct RunResult {
  ExitStatus status;
  std::string output;
};
RunResult RunCommand(const ProcessOptions& options, std::chrono::milliseconds timeout);

// Forking a child that moves to a process group of its own has a window: between fork() and the
// child's setpgid() it is still in the parent's group, and a signal sent to that group (a service
// told to drain, Ctrl-C) reaches it too. With the signal blocked it stays pending and kills the
// child once it unblocks: a command the service was still serving dies of its parent's SIGTERM.
// So every signal is blocked across fork (this guard, in the forking thread), and the child calls
// PrepareChildSignals before anything else.
class SignalsBlockedForFork {
 public:
  SignalsBlockedForFork();
  ~SignalsBlockedForFork();
  SignalsBlockedForFork(const SignalsBlockedForFork&) = delete;
  SignalsBlockedForFork& operator=(const SignalsBlockedForFork&) = delete;

 private:
  sigset_t saved_;
};

// In the forked child (async-signal-safe; every signal still blocked): joins a new process group
// when asked and then drops the signals that reached it while it still shared the parent's group;
// resets every disposition to the default (those in `ignored` to SIG_IGN) and unblocks all.
// Returns false with errno set when setpgid fails.
bool PrepareChildSignals(bool new_process_group, const int* ignored = nullptr,
                         size_t ignored_count = 0);

}  // namespace muon
