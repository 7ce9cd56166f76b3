#pragma once
// Runs one build step: `sh -c <run>` in the service's folder with a clean environment, inside a
// bubblewrap sandbox when one is available (only /usr, /bin, /sbin, /lib*, /etc, read-only; the
// work dir writable; a private /tmp; its own PID namespace; nothing else of the host's file
// system), with a timeout and a cap on the output. The network stays: builds fetch packages. Every
// line goes to a callback (the build's log lines); the last lines are kept for the failure report.

#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "muon/common/process.h"

namespace muon::builder {

enum class Sandbox { kNone, kBubblewrap };

// kBubblewrap when `bwrap` runs here (it needs user namespaces or root), else kNone.
Sandbox DetectSandbox();

struct StepOptions {
  std::string run;                         // the shell command
  std::filesystem::path work_dir;          // writable inside the sandbox
  std::filesystem::path cwd;               // where the command starts (inside work_dir)
  std::map<std::string, std::string> env;  // on top of the clean base (PATH, HOME, LANG)
  std::chrono::seconds timeout{600};
  Sandbox sandbox = Sandbox::kNone;
  std::vector<std::filesystem::path> hidden;  // replaced by an empty tmpfs (inside the binds)
};

struct StepOutcome {
  ExitStatus status;
  bool timed_out = false;
  bool cancelled = false;  // `keep_going` said stop (the lease was lost)
};

// `on_line(line, from_stderr)` is called for every line; `keep_going` is polled about every
// 200 ms and stops the step (SIGKILL to its process group) when it returns false.
StepOutcome RunStep(const StepOptions& options,
                    const std::function<void(std::string line, bool from_stderr)>& on_line,
                    const std::function<bool()>& keep_going);

// The last `capacity` lines seen.
class LastLines {
 public:
  explicit LastLines(size_t capacity) : capacity_(capacity) {}
  void Add(std::string line);
  std::vector<std::string> Get() const { return {lines_.begin(), lines_.end()}; }

 private:
  size_t capacity_;
  std::deque<std::string> lines_;
};

}  // namespace muon::builder
