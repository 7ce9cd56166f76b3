// muon: the command line of the Muon platform. All logic lives in muon_cli_lib (cli/src); this
// file only wires it to the process: arguments, streams, environment, cwd and the terminal.

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>
#include <vector>

#include "muon/cli/app.h"
#include "muon/cli/terminal.h"
#include "muon/common/config.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::error_code ec;
  std::filesystem::path cwd = std::filesystem::current_path(ec);
  if (ec) cwd = ".";
  muon::cli::TtyPrompter prompter;
  muon::cli::AppContext ctx{
      .out = std::cout,
      .err = std::cerr,
      .in = std::cin,
      .env = muon::config::ProcessEnvironment(),
      .cwd = cwd,
      .prompter = &prompter,
      .color = isatty(STDOUT_FILENO) == 1 && std::getenv("NO_COLOR") == nullptr,
  };
  return muon::cli::RunCli(args, ctx);
}
