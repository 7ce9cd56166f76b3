#pragma once
// Runs a command with its stdout and stderr read line by line into the log stream (source app;
// severity detected, else info for stdout and error for stderr) and notes its start and exit as
// system lines: how the node runtime runs an instance, so an instance's last lines and its exit
// code are stored even when it crashes. `muon-run` (tools/muon-run) wraps it for scripts.

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "muon/common/bus.h"
#include "muon/common/log_lines.h"
#include "muon/common/process.h"

namespace muon {

struct CaptureOptions {
  ProcessOptions process;        // stdout_fd / stderr_fd are set by the capture
  loglines::ShipperOptions log;  // service, instance, release, region (source is set per line)
  size_t max_line_bytes = loglines::kDefaultMaxMessageBytes;  // longer lines are cut (truncated)
  std::vector<std::string> secrets;  // values masked in every line (the service's secrets)
  // Called on the reader thread with every line as shipped (sanitised, masked, cut), e.g. to keep
  // the last lines for a failure report. Must not block.
  std::function<void(const std::string& line, bool from_stderr)> on_line;
};

class CapturedProcess {
 public:
  // Starts the command (throws std::system_error when it cannot be started; that failure is
  // also shipped as a system line).
  CapturedProcess(bus::Connection& connection, CaptureOptions options);
  ~CapturedProcess();  // kills the command if it still runs
  CapturedProcess(const CapturedProcess&) = delete;
  CapturedProcess& operator=(const CapturedProcess&) = delete;

  Process& process() { return process_; }
  // Waits for the exit and for every line, ships the exit note, and flushes (up to 5 s).
  ExitStatus Wait();

 private:
  void Pump(int stdout_fd, int stderr_fd);

  CaptureOptions options_;
  std::unique_ptr<loglines::Shipper> shipper_;
  Process process_;
  std::thread reader_;
};

}  // namespace muon
