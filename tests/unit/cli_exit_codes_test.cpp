// The documented exit codes of `muon` per class of HTTP status.

#include <catch2/catch.hpp>
#include <string>

#include "muon/cli/exit_codes.h"

using muon::cli::ExitCodeForStatus;

TEST_CASE("cli: exit code per HTTP status", "[cli]") {
  struct Case {
    int status;
    int exit_code;
  };
  const Case cases[] = {
      {200, 0}, {204, 0}, {400, 6}, {401, 3}, {403, 4}, {404, 5}, {405, 6},
      {408, 7}, {409, 6}, {413, 6}, {415, 6}, {422, 6}, {429, 7}, {500, 1},
      {501, 1}, {502, 7}, {503, 7}, {504, 7}, {302, 1}, {0, 1},
  };
  for (const auto& c : cases) {
    INFO("status " << c.status);
    CHECK(ExitCodeForStatus(c.status) == c.exit_code);
  }
}

TEST_CASE("cli: the exit code names match the documented numbers", "[cli]") {
  STATIC_REQUIRE(muon::cli::kExitOk == 0);
  STATIC_REQUIRE(muon::cli::kExitError == 1);
  STATIC_REQUIRE(muon::cli::kExitUsage == 2);
  STATIC_REQUIRE(muon::cli::kExitUnauthorized == 3);
  STATIC_REQUIRE(muon::cli::kExitForbidden == 4);
  STATIC_REQUIRE(muon::cli::kExitNotFound == 5);
  STATIC_REQUIRE(muon::cli::kExitBadRequest == 6);
  STATIC_REQUIRE(muon::cli::kExitUnavailable == 7);
  const std::string help(muon::cli::kExitCodeHelp);
  for (const char* line : {"  0  ok", "  2  usage error", "  3  unauthorized", "  4  forbidden",
                           "  5  not found", "  6  bad request", "  7  unavailable or timeout"}) {
    CHECK(help.find(line) != std::string::npos);
  }
}
