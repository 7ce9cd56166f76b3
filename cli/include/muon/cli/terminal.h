#pragma once
// Reading what the user types: prompts go to stderr (stdout stays clean for --output json);
// passwords are read with echo off (termios), restored even when the user presses Ctrl-C.

#include <optional>
#include <string>
#include <string_view>

namespace muon::cli {

class Prompter {
 public:
  virtual ~Prompter() = default;
  // True when there is a person to ask (stdin is a terminal).
  virtual bool Interactive() const = 0;
  // Shows `prompt` and reads one line without its newline; nullopt at end of input.
  virtual std::optional<std::string> ReadLine(std::string_view prompt, bool echo) = 0;
};

// The real terminal: stdin and stderr.
class TtyPrompter : public Prompter {
 public:
  bool Interactive() const override;
  std::optional<std::string> ReadLine(std::string_view prompt, bool echo) override;
};

}  // namespace muon::cli
