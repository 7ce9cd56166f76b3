#include "step_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <system_error>

namespace muon::builder {
namespace fs = std::filesystem;
namespace {

// A pipe whose ends close with the object.
struct Pipe {
  int read = -1;
  int write = -1;
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      throw std::system_error(errno, std::generic_category(), "pipe");
    read = fds[0];
    write = fds[1];
  }
  ~Pipe() {
    CloseRead();
    CloseWrite();
  }
  void CloseRead() {
    if (read >= 0) ::close(read);
    read = -1;
  }
  void CloseWrite() {
    if (write >= 0) ::close(write);
    write = -1;
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
};

// Splits a stream into lines; a line longer than the cap is passed on in pieces.
class LineSplitter {
 public:
  explicit LineSplitter(size_t max_line) : max_line_(max_line) {}
  template <typename F>
  void Feed(const char* data, size_t n, F&& emit) {
    for (size_t i = 0; i < n; ++i) {
      if (data[i] == '\n') {
        emit(std::move(buffer_));
        buffer_.clear();
      } else if (data[i] != '\r') {
        buffer_ += data[i];
        if (buffer_.size() >= max_line_) {
          emit(std::move(buffer_));
          buffer_.clear();
        }
      }
    }
  }
  template <typename F>
  void Finish(F&& emit) {
    if (!buffer_.empty()) emit(std::move(buffer_));
    buffer_.clear();
  }

 private:
  size_t max_line_;
  std::string buffer_;
};

}  // namespace

void LastLines::Add(std::string line) {
  lines_.push_back(std::move(line));
  while (lines_.size() > capacity_) lines_.pop_front();
}

Sandbox DetectSandbox() {
  ProcessOptions o;
  o.program = "bwrap";
  o.args = {"--ro-bind",         "/",   "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
            "--die-with-parent", "true"};
  try {
    const RunResult r = RunCommand(o, std::chrono::seconds(10));
    return r.status.Success() ? Sandbox::kBubblewrap : Sandbox::kNone;
  } catch (const std::exception&) {
    return Sandbox::kNone;  // not installed
  }
}

StepOutcome RunStep(const StepOptions& options,
                    const std::function<void(std::string line, bool from_stderr)>& on_line,
                    const std::function<bool()>& keep_going) {
  Pipe out, err;
  ProcessOptions p;
  p.clear_env = true;
  p.env = {{"PATH", "/usr/local/bin:/usr/bin:/bin"},
           {"HOME", options.work_dir.string()},
           {"LANG", "C.UTF-8"},
           {"TMPDIR", "/tmp"}};
  for (const auto& [k, v] : options.env) p.env[k] = v;
  p.stdout_fd = out.write;
  p.stderr_fd = err.write;
  if (options.sandbox == Sandbox::kBubblewrap) {
    p.program = "bwrap";
    // An allow-list, not "/ minus some dirs": the system's programs and libraries and /etc,
    // read-only; nothing of /var, /home, /root, /srv, /opt or the platform's state dir (its
    // secrets, the mirrors, other builds) is there at all.
    p.args = {"--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"};
    for (const char* dir :
         {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"}) {
      p.args.insert(p.args.end(), {"--ro-bind-try", dir, dir});
    }
    for (const auto& dir : options.hidden) {
      p.args.insert(p.args.end(), {"--tmpfs", dir.string()});
    }
    p.args.insert(p.args.end(), {"--bind", options.work_dir.string(), options.work_dir.string(),
                                 "--unshare-pid", "--die-with-parent", "--chdir",
                                 options.cwd.string(), "--", "sh", "-c", options.run});
  } else {
    p.program = "sh";
    p.args = {"-c", options.run};
    p.working_dir = options.cwd.string();
  }
  Process process(p);
  out.CloseWrite();
  err.CloseWrite();

  StepOutcome outcome;
  constexpr size_t kMaxLine = 16 * 1024;
  LineSplitter split_out(kMaxLine), split_err(kMaxLine);
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  std::array<char, 65536> buffer;
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    if (std::chrono::steady_clock::now() >= deadline) {
      outcome.timed_out = true;
      break;
    }
    if (!keep_going()) {
      outcome.cancelled = true;
      break;
    }
    pollfd fds[2];
    int n = 0;
    if (out_open) fds[n++] = {out.read, POLLIN, 0};
    if (err_open) fds[n++] = {err.read, POLLIN, 0};
    const int ready = ::poll(fds, n, 200);
    if (ready < 0 && errno != EINTR) break;
    for (int i = 0; i < n && ready > 0; ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const bool is_err = fds[i].fd == err.read;
      const ssize_t got = ::read(fds[i].fd, buffer.data(), buffer.size());
      if (got <= 0) {
        if (got < 0 && errno == EINTR) continue;
        (is_err ? err_open : out_open) = false;
        continue;
      }
      auto emit = [&](std::string line) { on_line(std::move(line), is_err); };
      (is_err ? split_err : split_out).Feed(buffer.data(), static_cast<size_t>(got), emit);
    }
  }
  split_out.Finish([&](std::string line) { on_line(std::move(line), false); });
  split_err.Finish([&](std::string line) { on_line(std::move(line), true); });
  if (outcome.timed_out || outcome.cancelled) {
    process.Signal(SIGKILL);
    outcome.status = process.Wait();
    return outcome;
  }
  // Both pipes closed: the step (and whatever it started that held them) is done, or has
  // detached; wait for the shell itself within what is left of the timeout.
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (auto status = process.WaitFor(std::max(left, std::chrono::milliseconds(0)))) {
    outcome.status = *status;
  } else {
    outcome.timed_out = true;
    process.Signal(SIGKILL);
    outcome.status = process.Wait();
  }
  return outcome;
}

}  // namespace muon::builder
