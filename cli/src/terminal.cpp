#include "muon/cli/terminal.h"

#include <termios.h>
#include <unistd.h>

#include <csignal>
#include <iostream>

namespace muon::cli {
namespace {

// Saved terminal state for the signal handler; written only while no handler is installed.
struct termios g_saved_termios {};
volatile sig_atomic_t g_echo_off = 0;

extern "C" void RestoreAndReraise(int sig) {
  if (g_echo_off) tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_termios);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

constexpr int kSignals[] = {SIGINT, SIGTERM, SIGQUIT, SIGHUP};

// Turns echo off for its lifetime and restores the terminal on destruction or on a fatal signal.
class EchoOff {
 public:
  EchoOff() {
    if (tcgetattr(STDIN_FILENO, &g_saved_termios) != 0) return;
    struct sigaction sa {};
    sa.sa_handler = RestoreAndReraise;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < std::size(kSignals); ++i) sigaction(kSignals[i], &sa, &old_[i]);
    struct termios quiet = g_saved_termios;
    quiet.c_lflag &= static_cast<tcflag_t>(~ECHO);
    quiet.c_lflag |= ECHONL;
    g_echo_off = 1;
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) != 0) {
      g_echo_off = 0;
      RestoreHandlers();
      return;
    }
    active_ = true;
  }
  EchoOff(const EchoOff&) = delete;
  EchoOff& operator=(const EchoOff&) = delete;
  ~EchoOff() {
    if (!active_) return;
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_termios);
    g_echo_off = 0;
    RestoreHandlers();
  }

 private:
  void RestoreHandlers() {
    for (size_t i = 0; i < std::size(kSignals); ++i) sigaction(kSignals[i], &old_[i], nullptr);
  }
  bool active_ = false;
  struct sigaction old_[std::size(kSignals)]{};
};

}  // namespace

bool TtyPrompter::Interactive() const {
  return isatty(STDIN_FILENO) == 1;
}

std::optional<std::string> TtyPrompter::ReadLine(std::string_view prompt, bool echo) {
  std::cerr << prompt << std::flush;
  std::string line;
  bool ok = false;
  if (echo) {
    ok = static_cast<bool>(std::getline(std::cin, line));
  } else {
    EchoOff quiet;
    ok = static_cast<bool>(std::getline(std::cin, line));
  }
  if (!ok && line.empty()) return std::nullopt;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

}  // namespace muon::cli
