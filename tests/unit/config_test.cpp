#include "muon/common/config.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using muon::config::ConfigError;
using muon::config::Environment;
using muon::config::HelpRequested;
using muon::config::ParseDuration;
using muon::config::Spec;
using muon::config::Values;

namespace {

Spec TestSpec() {
  Spec spec("muon-test", "a service used by the tests");
  spec.String("nats-url", "NATS_URL", std::nullopt, "NATS server URL")
      .String("db-password", "DB_PASSWORD", "", "database password", /*secret=*/true)
      .Int("port", "PORT", 8080, 1, 65535, "HTTP listen port")
      .Duration("timeout", "TIMEOUT", "5s", "request timeout")
      .Bool("verbose", "VERBOSE", false, "chatty logging")
      .String("region", "REGION", "local", "region name");
  return spec;
}

std::string ErrorOf(const Spec& spec, const std::vector<std::string>& args,
                    const Environment& env) {
  try {
    spec.Parse(args, env);
  } catch (const ConfigError& e) {
    return e.what();
  }
  FAIL("Parse did not throw ConfigError");
  return {};
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = text.find('\n', start);
    lines.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return lines;
}

}  // namespace

TEST_CASE("defaults apply when neither flag nor env is set", "[config]") {
  const Values v = TestSpec().Parse({}, {{"NATS_URL", "nats://a:4222"}});
  CHECK(v.Int("port") == 8080);
  CHECK(v.String("port") == "8080");
  CHECK(v.Source("port") == "default");
  CHECK(v.Duration("timeout") == 5s);
  CHECK_FALSE(v.Bool("verbose"));
  CHECK(v.String("region") == "local");
  CHECK(v.String("nats-url") == "nats://a:4222");
  CHECK(v.Source("nats-url") == "env");
}

TEST_CASE("flag beats env beats default", "[config]") {
  const Environment env = {{"NATS_URL", "nats://env:4222"}, {"PORT", "9000"}, {"REGION", "eu"}};
  const Values v = TestSpec().Parse({"--nats-url=nats://flag:4222", "--port", "9100"}, env);
  CHECK(v.String("nats-url") == "nats://flag:4222");
  CHECK(v.Source("nats-url") == "flag");
  CHECK(v.Int("port") == 9100);
  CHECK(v.Source("port") == "flag");
  CHECK(v.String("region") == "eu");
  CHECK(v.Source("region") == "env");
  CHECK(v.Source("timeout") == "default");
}

TEST_CASE("an empty environment variable counts as unset", "[config]") {
  const Values v = TestSpec().Parse({}, {{"NATS_URL", "nats://x"}, {"REGION", ""}});
  CHECK(v.String("region") == "local");
  CHECK(v.Source("region") == "default");
}

TEST_CASE("bool flags and env values", "[config]") {
  const Spec spec = TestSpec();
  const Environment base = {{"NATS_URL", "nats://x"}};

  CHECK(spec.Parse({"--verbose"}, base).Bool("verbose"));
  CHECK(spec.Parse({"--verbose=true"}, base).Bool("verbose"));
  CHECK_FALSE(spec.Parse({"--verbose=off"}, base).Bool("verbose"));

  Environment env = base;
  env["VERBOSE"] = "1";
  CHECK(spec.Parse({}, env).Bool("verbose"));
  CHECK_FALSE(spec.Parse({"--no-verbose"}, env).Bool("verbose"));
  CHECK(spec.Parse({"--no-verbose"}, env).Source("verbose") == "flag");

  for (const char* yes : {"1", "true", "TRUE", "Yes", "on", "ON"}) {
    env["VERBOSE"] = yes;
    CHECK(spec.Parse({}, env).Bool("verbose"));
  }
  for (const char* no : {"0", "false", "False", "NO", "off", "Off"}) {
    env["VERBOSE"] = no;
    CHECK_FALSE(spec.Parse({}, env).Bool("verbose"));
  }
  env["VERBOSE"] = "maybe";
  CHECK(ErrorOf(spec, {}, env) ==
        "--verbose (env VERBOSE): \"maybe\" is not a boolean (expected true/false, 1/0, yes/no, "
        "on/off)");
}

TEST_CASE("a required option without a value is an error", "[config]") {
  CHECK(ErrorOf(TestSpec(), {}, {}) == "--nats-url (env NATS_URL): required but not set");
}

TEST_CASE("int values are validated", "[config]") {
  const Spec spec = TestSpec();
  const Environment base = {{"NATS_URL", "nats://x"}};
  CHECK(ErrorOf(spec, {"--port=abc"}, base) == "--port (env PORT): \"abc\" is not an integer");
  CHECK(ErrorOf(spec, {"--port=70000"}, base) ==
        "--port (env PORT): 70000 is out of range [1, 65535]");
  CHECK(ErrorOf(spec, {"--port=0"}, base) == "--port (env PORT): 0 is out of range [1, 65535]");
  CHECK(ErrorOf(spec, {"--port=80x"}, base) == "--port (env PORT): \"80x\" is not an integer");
  CHECK(ErrorOf(spec, {"--port=99999999999999999999"}, base) ==
        "--port (env PORT): \"99999999999999999999\" is not an integer");
  CHECK(spec.Parse({"--port=1"}, base).Int("port") == 1);
  CHECK(spec.Parse({"--port=65535"}, base).Int("port") == 65535);
  Environment env = base;
  env["PORT"] = "443";
  CHECK(spec.Parse({}, env).Int("port") == 443);
}

TEST_CASE("duration values are validated", "[config]") {
  const Spec spec = TestSpec();
  const Environment base = {{"NATS_URL", "nats://x"}};
  CHECK(spec.Parse({"--timeout", "1m30s"}, base).Duration("timeout") == 90s);
  CHECK(ErrorOf(spec, {"--timeout=30"}, base) ==
        "--timeout (env TIMEOUT): \"30\" is not a duration (expected e.g. 250ms, 5s, 1m30s)");
}

TEST_CASE("every problem is reported, one per line", "[config]") {
  const Environment env = {{"PORT", "abc"}, {"TIMEOUT", "soon"}};
  const std::string message =
      ErrorOf(TestSpec(), {"--bogus=1", "stray", "--verbose=perhaps", "-x"}, env);
  const std::vector<std::string> expected = {
      "--bogus: unknown flag",
      "unexpected argument \"stray\" (settings are given as --flags)",
      "-x: unknown flag",
      "--nats-url (env NATS_URL): required but not set",
      "--port (env PORT): \"abc\" is not an integer",
      "--timeout (env TIMEOUT): \"soon\" is not a duration (expected e.g. 250ms, 5s, 1m30s)",
      "--verbose (env VERBOSE): \"perhaps\" is not a boolean (expected true/false, 1/0, yes/no, "
      "on/off)",
  };
  CHECK(Lines(message) == expected);
}

TEST_CASE("flag syntax errors", "[config]") {
  const Spec spec = TestSpec();
  const Environment base = {{"NATS_URL", "nats://x"}};
  CHECK(ErrorOf(spec, {"--port"}, base) == "--port (env PORT): missing value");
  // A following flag is not swallowed as the value.
  CHECK(ErrorOf(spec, {"--region", "--verbose"}, base) == "--region (env REGION): missing value");
  CHECK(ErrorOf(spec, {"--no-port"}, base) ==
        "--no-port: unknown flag (--port (env PORT) is not a boolean)");
  CHECK(ErrorOf(spec, {"--no-verbose=1"}, base) ==
        "--verbose (env VERBOSE): --no-verbose takes no value");
  CHECK(ErrorOf(spec, {"--", "--port=1"}, base) ==
        "unexpected argument \"--port=1\" (settings are given as --flags)");
  // "--verbose false" is a bool flag followed by a positional argument, as in Go's flag package.
  CHECK(ErrorOf(spec, {"--verbose", "false"}, base) ==
        "unexpected argument \"false\" (settings are given as --flags)");
  // A value that begins with dashes can still be given with '='.
  CHECK(spec.Parse({"--region=--odd"}, base).String("region") == "--odd");
  // The last occurrence wins.
  CHECK(spec.Parse({"--port=1", "--port=2"}, base).Int("port") == 2);
}

TEST_CASE("secret values never appear in errors or usage", "[config]") {
  Spec spec("svc", "secrets");
  spec.String("token", "TOKEN", "hunter2-default", "API token", /*secret=*/true);
  const std::string usage = spec.Usage();
  CHECK(usage.find("hunter2") == std::string::npos);
  CHECK(usage.find("default hidden") != std::string::npos);

  // A mistyped secret flag must not echo its value either.
  const std::string message = ErrorOf(spec, {"--tokn=hunter2-typo"}, {});
  CHECK(message == "--tokn: unknown flag");

  const Values v = spec.Parse({}, {{"TOKEN", "hunter2-env"}});
  CHECK(v.String("token") == "hunter2-env");

  // A required secret that is explicitly empty is reported without any value.
  Spec required("svc", "secrets");
  required.String("token", "TOKEN", std::nullopt, "API token", /*secret=*/true);
  CHECK(ErrorOf(required, {"--token="}, {}) == "--token (env TOKEN): required but empty");
}

TEST_CASE("help throws HelpRequested with the usage text", "[config]") {
  const Spec spec = TestSpec();
  for (const char* flag : {"--help", "-h"}) {
    try {
      // Help wins even over other problems (here: a missing required option).
      spec.Parse({flag}, {});
      FAIL("no HelpRequested");
    } catch (const HelpRequested& e) {
      CHECK(std::string(e.what()) == spec.Usage());
    }
  }
  const std::string usage = spec.Usage();
  CHECK(usage.find("Usage: muon-test [flags]") != std::string::npos);
  CHECK(usage.find("a service used by the tests") != std::string::npos);
  CHECK(usage.find("--nats-url <string>    (env NATS_URL, required)\n      NATS server URL\n") !=
        std::string::npos);
  CHECK(usage.find("--port <int>    (env PORT, default 8080, range [1, 65535])\n"
                   "      HTTP listen port\n") != std::string::npos);
  CHECK(usage.find("--timeout <duration>    (env TIMEOUT, default 5s)") != std::string::npos);
  CHECK(usage.find("--[no-]verbose    (env VERBOSE, default false)") != std::string::npos);
  CHECK(usage.find("--region <string>    (env REGION, default \"local\")") != std::string::npos);
  CHECK(usage.find("-h, --help") != std::string::npos);
}

TEST_CASE("argc/argv parsing skips the program name", "[config]") {
  const char* argv[] = {"/usr/bin/muon-test", "--port=81", nullptr};
  const Values v = TestSpec().Parse(2, argv, {{"NATS_URL", "nats://x"}});
  CHECK(v.Int("port") == 81);
}

TEST_CASE("unknown names in Values are programming errors", "[config]") {
  const Values v = TestSpec().Parse({}, {{"NATS_URL", "nats://x"}});
  CHECK_THROWS_AS(v.String("nope"), std::logic_error);
  CHECK_THROWS_AS(v.Int("nope"), std::logic_error);
  CHECK_THROWS_AS(v.Duration("nope"), std::logic_error);
  CHECK_THROWS_AS(v.Bool("nope"), std::logic_error);
  CHECK_THROWS_AS(v.Source("nope"), std::logic_error);
  // Reading a value as the wrong kind is one as well.
  CHECK_THROWS_AS(v.Int("region"), std::logic_error);
}

TEST_CASE("mistakes in the spec itself are logic errors", "[config]") {
  Spec spec("svc", "bad");
  CHECK_THROWS_AS(spec.Duration("wait", "WAIT", "10", "bare number default"), std::logic_error);
  CHECK_THROWS_AS(spec.Int("n", "N", 0, 1, 10, "default outside range"), std::logic_error);
  spec.String("a", "A", "", "");
  CHECK_THROWS_AS(spec.String("a", "A2", "", ""), std::logic_error);
  CHECK_THROWS_AS(spec.String("b", "A", "", ""), std::logic_error);
  CHECK_THROWS_AS(spec.Bool("help", "", false, ""), std::logic_error);
}

TEST_CASE("ParseDuration", "[config][duration]") {
  struct Case {
    const char* text;
    std::optional<std::chrono::nanoseconds> want;
  };
  const Case cases[] = {
      {"0s", 0ns},
      {"1ns", 1ns},
      {"1500us", 1500us},
      {"1500\xC2\xB5s", 1500us},  // micro sign
      {"7\xCE\xBCs", 7us},        // Greek mu
      {"250ms", 250ms},
      {"5s", 5s},
      {"2m", 2min},
      {"1h", 1h},
      {"1m30s", 90s},
      {"1h2m3s4ms5us6ns", 1h + 2min + 3s + 4ms + 5us + 6ns},
      {"1.5s", 1500ms},
      {".5s", 500ms},
      {"2.25h", 2h + 15min},
      {"0.000000001s", 1ns},
      {"2562047h", 2562047h},  // near the int64 limit of nanoseconds
      {"", std::nullopt},
      {"5", std::nullopt},
      {"0", std::nullopt},
      {"1m30", std::nullopt},
      {"-5s", std::nullopt},
      {"+5s", std::nullopt},
      {"5d", 5 * 24h},
      {"5S", std::nullopt},
      {"5 s", std::nullopt},
      {" 5s", std::nullopt},
      {"5s ", std::nullopt},
      {"s", std::nullopt},
      {".s", std::nullopt},
      {"1.2.3s", std::nullopt},
      {"9999999999999h", std::nullopt},  // overflow
      {"2562048h", std::nullopt},        // just past the int64 limit
  };
  for (const Case& c : cases) {
    INFO("text: \"" << c.text << "\"");
    const auto got = ParseDuration(c.text);
    REQUIRE(got.has_value() == c.want.has_value());
    if (got) CHECK(got->count() == c.want->count());
  }
}

TEST_CASE("FormatDuration", "[config][duration]") {
  using muon::config::FormatDuration;
  CHECK(FormatDuration(0s) == "0s");
  CHECK(FormatDuration(1500ms) == "1.5s");
  CHECK(FormatDuration(250ms) == "250ms");
  CHECK(FormatDuration(1500us) == "1.5ms");
  CHECK(FormatDuration(42ns) == "42ns");
  CHECK(FormatDuration(90s) == "1m30s");
  CHECK(FormatDuration(1h) == "1h0m0s");
  CHECK(FormatDuration(-2s) == "-2s");
  // What FormatDuration prints, ParseDuration reads back.
  for (std::chrono::nanoseconds d :
       std::vector<std::chrono::nanoseconds>{1ns, 1500us, 1500ms, 90s, 3h + 1ns}) {
    INFO(FormatDuration(d));
    CHECK(ParseDuration(FormatDuration(d)) == d);
  }
}
