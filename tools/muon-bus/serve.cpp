#include "serve.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <system_error>

#include "muon/common/config.h"
#include "muon/common/errors.h"
#include "muon/common/fd.h"
#include "muon/common/log.h"
#include "muon/common/process.h"
#include "muon/common/service.h"
#include "muon/common/service_main.h"

extern char** environ;

namespace muon::bus_tool {
namespace {

using muon::Fd;

using Clock = std::chrono::steady_clock;

constexpr const char* kServeSynopsis =
    R"(usage: muon-bus [--server URL] serve NAME --endpoint METHOD=COMMAND [--endpoint ...]
                 [--description TEXT] [--concurrency N] [--timeout D] [common service flags])";

constexpr const char* kServeDetails =
    R"(Serves user service NAME: svc.NAME.METHOD, plus ver.NAME.<release>.METHOD when MUON_VERSION is
set (only that when MUON_PREVIEW is set), and the NATS service API ($SRV.PING|INFO|STATS).

  --endpoint METHOD=COMMAND   one endpoint (repeatable; at least one); METHOD is 1-64 of
                              A-Z a-z 0-9 - _
  --description TEXT          what $SRV.INFO says about the service

Each request runs COMMAND with /bin/sh -c in the current directory, the request body on stdin,
MUON_METHOD and MUON_CONTENT_TYPE (the request's Content-Type) in the environment:
  exit 0           stdout (up to 1 MiB) is the reply body
  exit 2           error 400 "bad request: <last line of stderr>"
  any other exit   error 500, the last line of stderr as detail
  over --timeout   the command's process group is killed, error 504
The command's stderr goes to muon-bus's stderr (the node ships it to the logs). SIGTERM drains:
requests in flight finish (up to --drain-timeout), then muon-bus exits 0.)";

constexpr size_t kMaxErrorLineBytes = 16 * 1024;

[[noreturn]] void ThrowErrno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void MakePipe(Fd& read_end, Fd& write_end) {
  int fds[2];
  // O_CLOEXEC: a command started by another request at the same time must not inherit our ends,
  // or we would never see EOF.
  if (::pipe2(fds, O_CLOEXEC) != 0) ThrowErrno("pipe2");
  read_end.Reset(fds[0]);
  write_end.Reset(fds[1]);
}

void SetNonBlocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

// The forked child: async-signal-safe calls only (the parent has other threads).
[[noreturn]] void ChildMain(pid_t parent, int in_fd, int out_fd, int err_fd, char* const argv[],
                            char* const envp[]) {
  // The service blocks SIGTERM/SIGINT for sigwait and ignores SIGPIPE; both survive exec. And a
  // SIGTERM sent to the service's group while we were still in it was meant for the service,
  // which drains and waits for this very command.
  if (!PrepareChildSignals(true)) ::_exit(127);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);
  if (::dup2(in_fd, STDIN_FILENO) < 0 || ::dup2(out_fd, STDOUT_FILENO) < 0 ||
      ::dup2(err_fd, STDERR_FILENO) < 0) {
    ::_exit(127);
  }
  ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
  ::execve(argv[0], argv, envp);
  static constexpr char kMessage[] = "muon-bus: cannot execute /bin/sh\n";
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
  ::_exit(127);
}

// The exit of `pid` without reaping it: while the zombie exists its process group id cannot be
// reused, so the group's leftovers can still be killed safely.
std::optional<std::pair<int, int>> PeekExit(pid_t pid) {
  siginfo_t info{};
  while (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT | WNOHANG) != 0) {
    if (errno != EINTR) return std::pair{-1, 0};  // ECHILD: gone
  }
  if (info.si_pid == 0) return std::nullopt;
  if (info.si_code == CLD_EXITED) return std::pair{info.si_status, 0};
  return std::pair{-1, info.si_status};
}

void Reap(pid_t pid) {
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

// Splits stderr into lines for the callback and remembers the last non-empty one.
class ErrorLines {
 public:
  explicit ErrorLines(const std::function<void(std::string_view)>& emit) : emit_(emit) {}
  void Add(std::string_view data) {
    for (char c : data) {
      if (c == '\n') {
        Flush();
      } else {
        partial_ += c;
        if (partial_.size() >= kMaxErrorLineBytes) Flush();
      }
    }
  }
  void Flush() {
    if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
    if (emit_) emit_(partial_);
    if (partial_.find_first_not_of(" \t") != std::string::npos) last_ = partial_;
    partial_.clear();
  }
  void Finish() {
    if (!partial_.empty()) Flush();
  }
  const std::string& last() const { return last_; }

 private:
  const std::function<void(std::string_view)>& emit_;
  std::string partial_;
  std::string last_;
};

// Writes one line to our stderr in one write(), so lines of concurrent requests do not mix.
void CopyToStderr(std::string_view line) {
  static std::mutex mu;
  std::string out(line);
  out += '\n';
  std::lock_guard lock(mu);
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::write(STDERR_FILENO, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

struct Endpoint {
  std::string method;
  std::string command;
};

// The process's own environment without the per-request variables.
std::vector<std::string> BaseEnvironment() {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    if (entry.starts_with("MUON_METHOD=") || entry.starts_with("MUON_CONTENT_TYPE=")) continue;
    env.emplace_back(entry);
  }
  return env;
}

int UsageError(const std::string& problem) {
  std::cerr << "muon-bus serve: " << problem << "\n\n"
            << kServeSynopsis << "\nRun muon-bus serve --help for every option." << std::endl;
  return config::kExitBadConfig;
}

// A descriptor 0-2 that is closed would be handed out by pipe2 and clobbered by the dup2s of the
// next command: keep them open (on /dev/null).
void EnsureStandardDescriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
      const int opened = ::open("/dev/null", O_RDWR);
      if (opened >= 0 && opened != fd) {
        ::dup2(opened, fd);
        ::close(opened);
      }
    }
  }
}

}  // namespace

ShellResult RunShell(const std::string& command, std::string_view input,
                     const std::vector<std::string>& env, std::chrono::milliseconds timeout,
                     size_t output_cap,
                     const std::function<void(std::string_view line)>& on_stderr_line) {
  // Everything the child needs is built before fork.
  std::string sh = "/bin/sh", dash_c = "-c", cmd = command;
  std::vector<char*> argv = {sh.data(), dash_c.data(), cmd.data(), nullptr};
  std::vector<std::string> env_storage = env;
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);

  Fd in_read, in_write, out_read, out_write, err_read, err_write;
  MakePipe(in_read, in_write);
  MakePipe(out_read, out_write);
  MakePipe(err_read, err_write);

  const pid_t parent = ::getpid();
  pid_t pid;
  {
    SignalsBlockedForFork blocked;
    pid = ::fork();
    if (pid == 0) {
      ChildMain(parent, in_read.get(), out_write.get(), err_write.get(), argv.data(), envp.data());
    }
  }
  if (pid < 0) ThrowErrno("fork");
  // Also from here, so a timeout right away cannot signal a group that does not exist yet.
  ::setpgid(pid, pid);
  in_read.Reset();
  out_write.Reset();
  err_write.Reset();
  SetNonBlocking(in_write.get());
  SetNonBlocking(out_read.get());
  SetNonBlocking(err_read.get());
  // Wakes poll() when the command exits (Linux 5.3); without it we look every 50 ms.
  Fd exit_fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));

  ShellResult result;
  ErrorLines errors(on_stderr_line);
  size_t written = 0;
  if (input.empty()) in_write.Reset();
  bool exited = false;
  const auto deadline = Clock::now() + timeout;
  // Once the command exited, its leftovers are killed; output still in the pipes is read for at
  // most this long (a process that left the group could keep them open forever).
  auto read_deadline = deadline;
  char buffer[65536];

  while (true) {
    if (!exited) {
      if (auto status = PeekExit(pid)) {
        exited = true;
        result.exit_code = status->first;
        result.signal = status->second;
        ::kill(-pid, SIGKILL);  // background helpers left in the group
        in_write.Reset();
        read_deadline = std::min(deadline, Clock::now() + std::chrono::seconds(1));
      }
    }
    if (exited && !out_read && !err_read) break;
    const auto now = Clock::now();
    if (now >= (exited ? read_deadline : deadline)) {
      if (!exited) {
        result.timed_out = true;
        ::kill(-pid, SIGKILL);
      }
      break;
    }

    std::vector<pollfd> fds;
    if (in_write) fds.push_back({in_write.get(), POLLOUT, 0});
    if (out_read) fds.push_back({out_read.get(), POLLIN, 0});
    if (err_read) fds.push_back({err_read.get(), POLLIN, 0});
    if (exit_fd && !exited) fds.push_back({exit_fd.get(), POLLIN, 0});
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
                    (exited ? read_deadline : deadline) - now) +
                std::chrono::milliseconds(1);
    if (!exit_fd && !exited) wait = std::min(wait, std::chrono::milliseconds(50));
    if (::poll(fds.data(), fds.size(), static_cast<int>(wait.count())) < 0 && errno != EINTR) {
      ThrowErrno("poll");
    }

    if (in_write) {
      const ssize_t n = ::write(in_write.get(), input.data() + written, input.size() - written);
      if (n > 0) written += static_cast<size_t>(n);
      // EPIPE: the command does not read (all of) its input, which is its business.
      if (written == input.size() || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        in_write.Reset();
      }
    }
    while (out_read) {
      const ssize_t n = ::read(out_read.get(), buffer, sizeof(buffer));
      if (n > 0) {
        const size_t room = output_cap - std::min(output_cap, result.output.size());
        const size_t take = std::min(room, static_cast<size_t>(n));
        result.output.append(buffer, take);
        if (take < static_cast<size_t>(n)) result.output_truncated = true;
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) out_read.Reset();
      break;
    }
    while (err_read) {
      const ssize_t n = ::read(err_read.get(), buffer, sizeof(buffer));
      if (n > 0) {
        errors.Add(std::string_view(buffer, static_cast<size_t>(n)));
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) err_read.Reset();
      break;
    }
  }
  errors.Finish();
  result.last_error_line = errors.last();
  Reap(pid);
  return result;
}

int Serve(const std::vector<std::string>& args, const std::optional<std::string>& server) {
  config::Spec spec("muon-bus serve",
                    fmt::format("a user service whose endpoints are shell commands\n\n{}\n\n{}",
                                kServeSynopsis, kServeDetails));
  spec.Duration("timeout", "", "30s",
                "longest a command may run; then its process group is killed and the caller "
                "gets 504");
  // Which of the flags RunService parses take a value, to tell "--release v7" from NAME.
  config::Spec known = spec;
  AddCommonOptions(known);
  auto takes_value = [&](std::string_view name) {
    for (const auto& o : known.options()) {
      if (o.flag == name) return o.kind != config::Kind::kBool;
    }
    return false;
  };

  std::string name;
  std::string description;
  std::vector<Endpoint> endpoints;
  std::vector<std::string> forwarded = {"muon-bus serve"};
  if (server) forwarded.push_back("--nats-url=" + *server);
  bool help = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value_of = [&](std::string_view flag, std::string& out) -> bool {
      const std::string prefix = std::string(flag) + "=";
      if (a.starts_with(prefix)) {
        out = a.substr(prefix.size());
        return true;
      }
      if (i + 1 >= args.size()) return false;
      out = args[++i];
      return true;
    };
    if (a == "-h" || a == "--help") {
      help = true;
    } else if (a == "--endpoint" || a.starts_with("--endpoint=")) {
      std::string spec_text;
      if (!value_of("--endpoint", spec_text)) return UsageError("--endpoint needs METHOD=COMMAND");
      const auto eq = spec_text.find('=');
      if (eq == std::string::npos) {
        return UsageError("--endpoint \"" + spec_text + "\" is not METHOD=COMMAND");
      }
      Endpoint e{spec_text.substr(0, eq), spec_text.substr(eq + 1)};
      if (!IsValidServiceName(e.method)) {
        return UsageError("--endpoint: method name \"" + e.method +
                          "\" is invalid: use 1-64 of A-Z, a-z, 0-9, dash, underscore");
      }
      if (e.command.find_first_not_of(" \t\n") == std::string::npos) {
        return UsageError("--endpoint " + e.method + ": the command is empty");
      }
      for (const auto& other : endpoints) {
        if (other.method == e.method) {
          return UsageError("--endpoint " + e.method + " is given twice");
        }
      }
      endpoints.push_back(std::move(e));
    } else if (a == "--description" || a.starts_with("--description=")) {
      if (!value_of("--description", description)) return UsageError("--description needs TEXT");
    } else if (a.starts_with("--")) {
      // The rest (--timeout, --concurrency, --release, ...) is RunService's to parse and check.
      forwarded.push_back(a);
      if (a.find('=') == std::string::npos && takes_value(std::string_view(a).substr(2)) &&
          i + 1 < args.size()) {
        forwarded.push_back(args[++i]);
      }
    } else if (name.empty()) {
      name = a;
    } else {
      return UsageError("unexpected argument \"" + a + "\" (the service name is \"" + name + "\")");
    }
  }
  if (help) {
    forwarded.push_back("--help");
  } else {
    if (name.empty()) return UsageError("missing the service NAME");
    if (!IsValidServiceName(name)) {
      return UsageError("service name \"" + name +
                        "\" is invalid: use 1-64 of A-Z, a-z, 0-9, dash, underscore");
    }
    if (endpoints.empty()) return UsageError("give at least one --endpoint METHOD=COMMAND");
  }

  EnsureStandardDescriptors();
  // A command that does not read its whole input must not kill us with SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);

  ServiceOptions options{
      .name = help ? "muon-bus" : name,
      .kind = ServiceKind::kUser,
      .description = description.empty() ? "shell endpoints served by muon-bus" : description};
  std::vector<char*> argv;
  for (auto& f : forwarded) argv.push_back(f.data());
  argv.push_back(nullptr);
  const std::vector<std::string> base_env = BaseEnvironment();
  std::error_code cwd_error;
  const std::string cwd = std::filesystem::current_path(cwd_error).string();
  return RunService(
      static_cast<int>(forwarded.size()), argv.data(), spec, options, [&](ServiceContext& ctx) {
        const auto timeout =
            std::chrono::duration_cast<std::chrono::milliseconds>(ctx.config.Duration("timeout"));
        if (timeout <= std::chrono::milliseconds::zero()) {
          throw config::ConfigError("--timeout: must be more than 0s");
        }
        for (const auto& endpoint : endpoints) {
          ctx.service.AddRawEndpoint(endpoint.method, [endpoint, timeout, &base_env](
                                                          std::string_view body,
                                                          RequestContext& request) {
            std::vector<std::string> env = base_env;
            env.push_back("MUON_METHOD=" + endpoint.method);
            env.push_back("MUON_CONTENT_TYPE=" +
                          std::string(request.Header(bus::kHeaderContentType).value_or("")));
            const ShellResult r =
                RunShell(endpoint.command, body, env, timeout, kMaxReplyBytes, CopyToStderr);
            if (r.timed_out) {
              log::Warn(
                  "command timed out and was killed",
                  {{"endpoint", endpoint.method}, {"timeout", config::FormatDuration(timeout)}});
              throw Error::Timeout(fmt::format("{} did not finish within {}", request.endpoint_id(),
                                               config::FormatDuration(timeout)));
            }
            const std::string& last = r.last_error_line;
            if (r.signal != 0) {
              throw Error::Internal(
                  last.empty() ? fmt::format("command killed by signal {}", r.signal) : last);
            }
            if (r.exit_code == kExitBadRequest) {
              throw Error::BadRequest(last.empty() ? "bad request" : "bad request: " + last);
            }
            if (r.exit_code != 0) {
              throw Error::Internal(
                  last.empty() ? fmt::format("command exited with code {}", r.exit_code) : last);
            }
            if (r.output_truncated) {
              log::Warn("reply cut to the cap",
                        {{"endpoint", endpoint.method}, {"cap_bytes", kMaxReplyBytes}});
            }
            return r.output;
          });
        }
        log::Info("serving", {{"endpoints", endpoints.size()}, {"dir", cwd}});
      });
}

}  // namespace muon::bus_tool
