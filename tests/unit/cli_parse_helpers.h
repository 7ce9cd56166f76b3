#pragma once
// Helpers of the CLI's argument-parsing tests: the parsed command of a type, or the problem a
// UsageError names.

#include <catch2/catch.hpp>
#include <string>
#include <variant>
#include <vector>

#include "muon/cli/commands.h"

namespace muon::cli::testing {

template <typename T>
T As(const std::vector<std::string>& args) {
  const Invocation inv = ParseArgs(args);
  const T* cmd = std::get_if<T>(&inv.command);
  REQUIRE(cmd != nullptr);
  return *cmd;
}

// The UsageError's problem text (fails the test when parsing succeeds).
inline std::string Problem(const std::vector<std::string>& args) {
  try {
    ParseArgs(args);
  } catch (const UsageError& e) {
    CHECK_FALSE(e.usage().empty());
    return e.what();
  }
  FAIL("ParseArgs did not throw UsageError");
  return {};
}

}  // namespace muon::cli::testing
