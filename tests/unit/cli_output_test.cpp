// Output formatting: aligned tables, JSON validation and re-rendering, durations, times, shell
// quoting, and the error line printed for a platform error.

#include <catch2/catch.hpp>
#include <string>

#include "muon/cli/app.h"
#include "muon/cli/output.h"

TEST_CASE("cli: tables align columns", "[cli]") {
  const std::string table =
      muon::cli::RenderTable({"NAME", "VERSIONS", "INSTANCES"},
                             {{"echo", "v1,v2", "3"}, {"github-events", "-", "12"}, {"x", "", ""}});
  CHECK(table ==
        "NAME            VERSIONS   INSTANCES\n"
        "echo            v1,v2      3\n"
        "github-events   -          12\n"
        "x\n");
}

TEST_CASE("cli: tables count UTF-8 code points and neutralise control characters", "[cli]") {
  const std::string table =
      muon::cli::RenderTable({"NAME", "ROLE"}, {{"Zoë", "admin"}, {"a\x1b[31mb\tc", "dev"}});
  CHECK(table ==
        "NAME        ROLE\n"
        "Zoë         admin\n"
        "a [31mb c   dev\n");
  CHECK(muon::cli::DisplayWidth("Zoë") == 3);
  CHECK(muon::cli::Sanitize("a\nb\x7f") == "a b ");
}

TEST_CASE("cli: call bodies must be valid JSON", "[cli]") {
  for (const char* ok : {"{}", R"({"message":"hi","n":[1,2,{"x":null}]})", "[]", "42", "\"s\"",
                         "true", "null", " {\"a\" : 1 } "}) {
    INFO(ok);
    CHECK_FALSE(muon::cli::JsonError(ok));
  }
  for (const char* bad : {"", "   ", "{", "{\"a\":}", "{\"a\":1} trailing", "nul",
                          "{\"a\":1,\"a\":2}", "{\"a\":\"\\ud800\"}"}) {
    INFO(bad);
    const auto problem = muon::cli::JsonError(bad);
    REQUIRE(problem);
    CHECK_FALSE(problem->empty());
    CHECK(problem->find('\n') == std::string::npos);
  }
}

TEST_CASE("cli: JSON is re-rendered with sorted keys, pretty or compact", "[cli]") {
  const std::string body = R"({"zeta":1,"alpha":{"b":[true,null],"a":"x"},"m":1.5})";
  CHECK(muon::cli::ReformatJson(body, false) ==
        std::optional<std::string>(R"({"alpha":{"a":"x","b":[true,null]},"m":1.5,"zeta":1})"));
  CHECK(muon::cli::ReformatJson(R"({"message":"hi"})", true) ==
        std::optional<std::string>("{\n \"message\": \"hi\"\n}"));
  CHECK(muon::cli::ReformatJson("[1, 2]", false) == std::optional<std::string>("[1,2]"));
  CHECK_FALSE(muon::cli::ReformatJson("<html>", false));
}

TEST_CASE("cli: durations and times", "[cli]") {
  CHECK(muon::cli::FormatSeconds(900) == "15m");
  CHECK(muon::cli::FormatSeconds(5400) == "1h30m");
  CHECK(muon::cli::FormatSeconds(45) == "45s");
  CHECK(muon::cli::FormatSeconds(90061) == "1d1h1m1s");
  CHECK(muon::cli::FormatSeconds(0) == "0s");
  CHECK(muon::cli::FormatSeconds(-5) == "0s");
  CHECK(muon::cli::FormatUnixTime(1700000000) == "2023-11-14 22:13:20 UTC");
}

TEST_CASE("cli: shell quoting for printed commands", "[cli]") {
  CHECK(muon::cli::ShellQuote("bob@example.com") == "bob@example.com");
  CHECK(muon::cli::ShellQuote("https://eu.example.com:8443/x") == "https://eu.example.com:8443/x");
  CHECK(muon::cli::ShellQuote("a b") == "'a b'");
  CHECK(muon::cli::ShellQuote("it's") == "'it'\\''s'");
  CHECK(muon::cli::ShellQuote("$(rm -rf ~)") == "'$(rm -rf ~)'");
  CHECK(muon::cli::ShellQuote("") == "''");
}

TEST_CASE("cli: error lines from platform errors", "[cli]") {
  muon::cli::HttpResponse r;
  r.status = 403;
  r.reason = "Forbidden";
  r.body =
      R"({"id":"echo.Echo","code":403,"detail":"no rule allows echo.Echo","status":"Forbidden"})";
  r.headers["muon-request-id"] = "req-1";
  CHECK(muon::cli::FormatApiError(r) == "no rule allows echo.Echo (403 Forbidden, request req-1)");

  // No request id, no status in the body: the reason phrase of the code.
  r.headers.clear();
  r.body = R"({"code":404,"detail":"unknown service nope"})";
  r.status = 404;
  CHECK(muon::cli::FormatApiError(r) == "unknown service nope (404 Not Found)");

  // Not the platform's shape: the first line of the body, or the status for HTML.
  r.status = 502;
  r.reason = "Bad Gateway";
  r.body = "upstream connect error\nmore";
  CHECK(muon::cli::FormatApiError(r) == "upstream connect error (502 Bad Gateway)");
  r.headers["content-type"] = "text/html";
  r.body = "<html><body>502</body></html>";
  CHECK(muon::cli::FormatApiError(r) == "Bad Gateway (502 Bad Gateway)");

  // Server text cannot drive the terminal.
  r.headers.clear();
  r.status = 400;
  r.reason = "Bad Request";
  r.body = R"({"code":400,"detail":"bad \u001b[2J field","status":"Bad Request"})";
  CHECK(muon::cli::FormatApiError(r) == "bad  [2J field (400 Bad Request)");
}
