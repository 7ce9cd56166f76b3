#include "muon/common/output_capture.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace muon {
namespace {

struct Pipe {
  int read = -1;
  int write = -1;
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      throw std::system_error(errno, std::generic_category(), "pipe2");
    }
    read = fds[0];
    write = fds[1];
  }
  ~Pipe() {
    if (read >= 0) ::close(read);
    if (write >= 0) ::close(write);
  }
};

}  // namespace

CapturedProcess::CapturedProcess(bus::Connection& connection, CaptureOptions options)
    : options_(std::move(options)) {
  auto log = options_.log;
  log.source = logs::v1::SOURCE_APP;
  shipper_ = std::make_unique<loglines::Shipper>(connection, log);

  Pipe out, err;
  options_.process.stdout_fd = out.write;
  options_.process.stderr_fd = err.write;
  try {
    process_ = Process(options_.process);
  } catch (const std::exception& e) {
    shipper_->EmitFrom(logs::v1::SOURCE_SYSTEM, logs::v1::SEVERITY_ERROR,
                       std::string("could not start: ") + e.what());
    shipper_->Flush(std::chrono::seconds(5));
    throw;
  }
  // Only the child writes now: EOF on both pipes means it (and whatever inherited them) is done.
  ::close(out.write);
  out.write = -1;
  ::close(err.write);
  err.write = -1;
  shipper_->EmitFrom(
      logs::v1::SOURCE_SYSTEM, logs::v1::SEVERITY_INFO,
      "started " + options_.process.program + " (pid " + std::to_string(process_.pid()) + ")");
  const int out_fd = std::exchange(out.read, -1);
  const int err_fd = std::exchange(err.read, -1);
  reader_ = std::thread([this, out_fd, err_fd] { Pump(out_fd, err_fd); });
}

CapturedProcess::~CapturedProcess() {
  if (process_.pid() > 0 && process_.Running()) process_.Stop(std::chrono::seconds(2));
  if (reader_.joinable()) reader_.join();
}

void CapturedProcess::Pump(int stdout_fd, int stderr_fd) {
  struct Stream {
    int fd;
    bool from_stderr;
    std::string partial;
  } streams[2] = {{stdout_fd, false, {}}, {stderr_fd, true, {}}};
  auto emit = [&](Stream& s, std::string line, bool cut) {
    loglines::SanitizeText(line);
    loglines::MaskSecrets(line, options_.secrets);
    const bool truncated = loglines::CapMessage(line, options_.max_line_bytes) || cut;
    while (!line.empty() && line.back() == '\r') line.pop_back();
    const auto severity = loglines::DetectSeverity(line, s.from_stderr);
    if (truncated) line += " [truncated]";
    if (options_.on_line) options_.on_line(line, s.from_stderr);
    shipper_->Emit(severity, std::move(line));
  };
  char buffer[65536];
  int open = 2;
  while (open > 0) {
    pollfd fds[2];
    for (int i = 0; i < 2; ++i) fds[i] = {streams[i].fd, POLLIN, 0};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      Stream& s = streams[i];
      if (s.fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const ssize_t n = ::read(s.fd, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        if (!s.partial.empty()) emit(s, std::move(s.partial), false);
        s.partial.clear();
        ::close(s.fd);
        s.fd = -1;
        --open;
        continue;
      }
      s.partial.append(buffer, static_cast<size_t>(n));
      size_t start = 0;
      for (size_t nl; (nl = s.partial.find('\n', start)) != std::string::npos; start = nl + 1) {
        emit(s, s.partial.substr(start, nl - start), false);
      }
      s.partial.erase(0, start);
      // A line without an end that outgrows the cap is shipped in pieces.
      while (s.partial.size() > options_.max_line_bytes) {
        emit(s, s.partial.substr(0, options_.max_line_bytes), true);
        s.partial.erase(0, options_.max_line_bytes);
      }
    }
  }
  for (auto& s : streams) {
    if (s.fd >= 0) ::close(s.fd);
  }
}

ExitStatus CapturedProcess::Wait() {
  const ExitStatus status = process_.Wait();
  // Background children of the command may keep the pipes open; their lines still count, but
  // the exit is noted only after everything the command itself wrote.
  if (reader_.joinable()) reader_.join();
  shipper_->EmitFrom(logs::v1::SOURCE_SYSTEM,
                     status.Success() ? logs::v1::SEVERITY_INFO : logs::v1::SEVERITY_ERROR,
                     "process ended: " + status.Describe());
  shipper_->Flush(std::chrono::seconds(5));
  return status;
}

}  // namespace muon
