#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "manifest.h"

using namespace std::chrono_literals;
using muon::builder::FormatManifestErrors;
using muon::builder::Manifest;
using muon::builder::ManifestError;
using muon::builder::ManifestResult;
using muon::builder::ParseManifest;

namespace {

constexpr const char* kFullManifest = R"(name: greeter
build:
  steps:
    - name: compile
      run: cc -O2 -o greeter main.c
      timeout: 5m
    - run: strip greeter
  env:
    CFLAGS: -O2
    JOBS: 4
    DEBUG: false
  outputs: [greeter, static/]
  timeout: 20m
  output_cap: 8MiB
run:
  command: ./greeter --port 0
  replicas: 2
  env: {GREETING: hello}
  required_env: [DATABASE_URL]
  health: {rpc: Health, timeout: 30s}
  drain_grace: 10s
depends_on: [users]
)";

constexpr const char* kMinimalManifest = R"(name: greeter
build:
  steps:
    - run: make
  outputs: [.]
run:
  command: ./greeter
)";

Manifest ParseValid(const std::string& yaml) {
  const ManifestResult result = ParseManifest(yaml);
  INFO(FormatManifestErrors(result.errors, "muon.yaml"));
  REQUIRE(result.errors.empty());
  REQUIRE(result.manifest.has_value());
  return *result.manifest;
}

std::vector<ManifestError> ParseInvalid(const std::string& yaml) {
  const ManifestResult result = ParseManifest(yaml);
  CHECK_FALSE(result.manifest.has_value());
  REQUIRE_FALSE(result.errors.empty());
  return result.errors;
}

// The one error reported at `path` (fails when there is none or several).
std::string ErrorAt(const std::vector<ManifestError>& errors, const std::string& path) {
  std::vector<std::string> messages;
  for (const auto& error : errors) {
    if (error.path == path) messages.push_back(error.message);
  }
  INFO("all errors:\n" << FormatManifestErrors(errors, "muon.yaml"));
  REQUIRE(messages.size() == 1);
  return messages.front();
}

// The minimal manifest with `line` inserted under the top-level key `section` (or at the top
// level when section is empty), so each test shows only what it is about.
std::string MinimalWith(const std::string& section, const std::string& line) {
  std::string yaml = kMinimalManifest;
  if (section.empty()) return yaml + line + "\n";
  const std::string header = section + ":\n";
  const size_t at = yaml.find(header);
  REQUIRE(at != std::string::npos);
  yaml.insert(at + header.size(), "  " + line + "\n");
  return yaml;
}

// The minimal manifest with its first `original` replaced by `replacement`.
std::string MinimalReplacing(const std::string& original, const std::string& replacement) {
  std::string yaml = kMinimalManifest;
  const size_t at = yaml.find(original);
  REQUIRE(at != std::string::npos);
  yaml.replace(at, original.size(), replacement);
  return yaml;
}

std::string MinimalWithSteps(const std::string& steps) {
  return MinimalReplacing("  steps:\n    - run: make\n", "  steps: " + steps + "\n");
}

std::string MinimalWithOutputs(const std::string& outputs) {
  return MinimalReplacing("  outputs: [.]\n", "  outputs: " + outputs + "\n");
}

std::string MinimalNamed(const std::string& name) {
  return MinimalReplacing("name: greeter\n", "name: " + name + "\n");
}

}  // namespace

TEST_CASE("a full manifest is read field by field", "[manifest]") {
  const Manifest m = ParseValid(kFullManifest);
  CHECK(m.name == "greeter");
  REQUIRE(m.steps.size() == 2);
  CHECK(m.steps[0].name == "compile");
  CHECK(m.steps[0].run == "cc -O2 -o greeter main.c");
  CHECK(m.steps[0].timeout == 5min);
  CHECK(m.steps[1].name == "step 2");
  CHECK(m.steps[1].run == "strip greeter");
  CHECK(m.steps[1].timeout == 10min);
  CHECK(m.build_env ==
        std::map<std::string, std::string>{{"CFLAGS", "-O2"}, {"JOBS", "4"}, {"DEBUG", "false"}});
  CHECK(m.outputs == std::vector<std::string>{"greeter", "static"});
  CHECK(m.build_timeout == 20min);
  CHECK(m.output_cap_bytes == 8 * 1024 * 1024);
  CHECK(m.run_command == "./greeter --port 0");
  CHECK(m.replicas == 2);
  CHECK(m.run_env == std::map<std::string, std::string>{{"GREETING", "hello"}});
  CHECK(m.required_env == std::vector<std::string>{"DATABASE_URL"});
  CHECK(m.health.rpc == "Health");
  CHECK(m.health.http_path.empty());
  CHECK(m.health.timeout == 30s);
  CHECK(m.health.interval == 1s);
  CHECK(m.drain_grace == 10s);
  CHECK(m.depends_on == std::vector<std::string>{"users"});
}

TEST_CASE("a minimal manifest gets the documented defaults", "[manifest]") {
  const Manifest m = ParseValid(kMinimalManifest);
  CHECK(m.name == "greeter");
  REQUIRE(m.steps.size() == 1);
  CHECK(m.steps[0].name == "step 1");
  CHECK(m.steps[0].run == "make");
  CHECK(m.steps[0].timeout == 10min);
  CHECK(m.build_env.empty());
  CHECK(m.outputs == std::vector<std::string>{"."});
  CHECK(m.build_timeout == 30min);
  CHECK(m.output_cap_bytes == 8 * 1024 * 1024);
  CHECK(m.run_command == "./greeter");
  CHECK(m.replicas == 1);
  CHECK(m.run_env.empty());
  CHECK(m.required_env.empty());
  CHECK(m.health.rpc.empty());
  CHECK(m.health.http_path.empty());
  CHECK(m.health.timeout == 30s);
  CHECK(m.health.interval == 1s);
  CHECK(m.drain_grace == 10s);
  CHECK(m.depends_on.empty());
}

TEST_CASE("an optional key left empty keeps its default", "[manifest]") {
  const Manifest m = ParseValid(MinimalWith("run", "env:") + "depends_on:\n");
  CHECK(m.run_env.empty());
  CHECK(m.depends_on.empty());
}

TEST_CASE("the top level must be one mapping", "[manifest]") {
  SECTION("empty text") {
    const auto errors = ParseInvalid("");
    CHECK_THAT(ErrorAt(errors, ""), Catch::Contains("empty"));
  }
  SECTION("only a comment") {
    const auto errors = ParseInvalid("# nothing yet\n");
    CHECK_THAT(ErrorAt(errors, ""), Catch::Contains("empty"));
  }
  SECTION("a list") {
    const auto errors = ParseInvalid("- name: greeter\n");
    CHECK_THAT(ErrorAt(errors, ""),
               Catch::Contains("expected a mapping with keys name, build, run, depends_on") &&
                   Catch::Contains("got a list"));
  }
  SECTION("a scalar") {
    const auto errors = ParseInvalid("greeter\n");
    CHECK_THAT(ErrorAt(errors, ""), Catch::Contains("got \"greeter\""));
  }
  SECTION("two documents") {
    const auto errors = ParseInvalid(std::string(kMinimalManifest) + "---\nname: other\n");
    CHECK_THAT(ErrorAt(errors, ""), Catch::Contains("one YAML document, found 2"));
  }
}

TEST_CASE("required sections are reported together", "[manifest]") {
  const auto errors = ParseInvalid("depends_on: [users]\n");
  CHECK(errors.size() == 3);
  CHECK_THAT(ErrorAt(errors, "name"), Catch::StartsWith("required"));
  CHECK_THAT(ErrorAt(errors, "build"), Catch::StartsWith("required"));
  CHECK_THAT(ErrorAt(errors, "run"), Catch::StartsWith("required"));
}

TEST_CASE("every error is collected, not just the first", "[manifest]") {
  const auto errors = ParseInvalid(R"(name: Bad Name
build:
  steps:
    - run: ""
  outputs: [/abs]
  timeout: forever
run:
  command: ./x
  replicas: lots
depends_on: [users, users]
)");
  CHECK(errors.size() == 6);
  ErrorAt(errors, "name");
  ErrorAt(errors, "build.steps[0].run");
  ErrorAt(errors, "build.outputs[0]");
  ErrorAt(errors, "build.timeout");
  ErrorAt(errors, "run.replicas");
  ErrorAt(errors, "depends_on[1]");
}

TEST_CASE("unknown keys are reported at every level with the allowed keys", "[manifest]") {
  SECTION("top level") {
    const auto errors = ParseInvalid(MinimalWith("", "nmae: x"));
    CHECK(ErrorAt(errors, "") == "unknown key \"nmae\"; allowed: name, build, run, depends_on");
  }
  SECTION("build") {
    const auto errors = ParseInvalid(MinimalWith("build", "stepz: []"));
    CHECK(ErrorAt(errors, "build") ==
          "unknown key \"stepz\"; allowed: steps, env, outputs, timeout, output_cap");
  }
  SECTION("a build step") {
    const auto errors = ParseInvalid(MinimalWithSteps("[{run: make, cmd: x}]"));
    CHECK(ErrorAt(errors, "build.steps[0]") == "unknown key \"cmd\"; allowed: name, run, timeout");
  }
  SECTION("run") {
    const auto errors = ParseInvalid(MinimalWith("run", "replica: 2"));
    CHECK(ErrorAt(errors, "run") ==
          "unknown key \"replica\"; allowed: command, replicas, env, required_env, health, "
          "drain_grace");
  }
  SECTION("run.health") {
    const auto errors = ParseInvalid(MinimalWith("run", "health: {rpc: Health, path: /x}"));
    CHECK(ErrorAt(errors, "run.health") ==
          "unknown key \"path\"; allowed: rpc, http_path, timeout, interval");
  }
}

TEST_CASE("duplicate and non-string keys are errors", "[manifest]") {
  SECTION("duplicate top-level key") {
    const auto errors = ParseInvalid(MinimalWith("", "name: other"));
    CHECK(ErrorAt(errors, "") == "duplicate key \"name\"");
  }
  SECTION("duplicate env key") {
    const auto errors = ParseInvalid(MinimalWith("run", "env: {A: 1, A: 2}"));
    CHECK(ErrorAt(errors, "run.env") == "duplicate key \"A\"");
  }
  SECTION("a list as a key") {
    const auto errors = ParseInvalid(MinimalWith("", "? [a, b]\n: c"));
    CHECK_THAT(ErrorAt(errors, ""), Catch::Contains("keys must be strings"));
  }
}

TEST_CASE("service names follow ADR-32 and platform names are reserved", "[manifest]") {
  SECTION("valid names") {
    for (const char* name : {"users", "user-store", "user_store2", "Billing", "a"}) {
      const std::string yaml = MinimalReplacing("name: greeter\n", "") + "name: " + name + "\n";
      CHECK(ParseValid(yaml).name == name);
    }
  }
  SECTION("invalid names") {
    for (const char* name : {"\"has space\"", "dots.in.name", "\"\"", "slash/name", "[a]"}) {
      INFO(name);
      const auto errors = ParseInvalid(MinimalNamed(name));
      CHECK(errors.size() == 1);
      CHECK(errors.front().path == "name");
    }
    const auto errors = ParseInvalid(MinimalNamed(std::string(65, 'a')));
    CHECK_THAT(ErrorAt(errors, "name"), Catch::Contains("not a valid service name"));
  }
  SECTION("reserved platform names, in any case") {
    for (const char* name :
         {"auth", "builder", "scheduler", "ingress", "logs", "github-events", "muon", "Auth"}) {
      INFO(name);
      const auto errors = ParseInvalid(MinimalNamed(name));
      CHECK_THAT(ErrorAt(errors, "name"),
                 Catch::Contains("reserved for a platform service") &&
                     Catch::Contains("auth, builder, scheduler, ingress, logs, github-events, "
                                     "muon"));
    }
  }
  SECTION("a missing name") {
    const auto errors = ParseInvalid(MinimalReplacing("name: greeter\n", ""));
    CHECK(errors.size() == 1);
    CHECK_THAT(ErrorAt(errors, "name"), Catch::StartsWith("required"));
  }
}

TEST_CASE("build steps", "[manifest]") {
  SECTION("steps missing") {
    const auto errors = ParseInvalid(MinimalReplacing("  steps:\n    - run: make\n", ""));
    CHECK_THAT(ErrorAt(errors, "build.steps"), Catch::Contains("required: a list of 1 to 50"));
  }
  SECTION("steps empty") {
    const auto errors = ParseInvalid(MinimalWithSteps("[]"));
    CHECK_THAT(ErrorAt(errors, "build.steps"), Catch::Contains("has 0 steps; expected 1 to 50"));
  }
  SECTION("more than 50 steps") {
    std::string steps = "  steps:\n";
    for (int i = 0; i < 51; ++i) steps += "    - run: echo " + std::to_string(i) + "\n";
    const auto errors = ParseInvalid(MinimalReplacing("  steps:\n    - run: make\n", steps));
    CHECK_THAT(ErrorAt(errors, "build.steps"), Catch::Contains("has 51 steps"));
  }
  SECTION("exactly 50 steps") {
    std::string steps = "  steps:\n";
    for (int i = 0; i < 50; ++i) steps += "    - run: echo " + std::to_string(i) + "\n";
    const Manifest m = ParseValid(MinimalReplacing("  steps:\n    - run: make\n", steps));
    CHECK(m.steps.size() == 50);
    CHECK(m.steps[49].name == "step 50");
  }
  SECTION("steps as a mapping") {
    const auto errors = ParseInvalid(
        MinimalReplacing("  steps:\n    - run: make\n", "  steps:\n    compile: make\n"));
    CHECK(ErrorAt(errors, "build.steps") == "expected a list of steps, got a mapping");
  }
  SECTION("a step written as a bare command") {
    const auto errors = ParseInvalid(MinimalWithSteps("[make]"));
    CHECK_THAT(ErrorAt(errors, "build.steps[0]"),
               Catch::Contains("got \"make\"") && Catch::Contains("- run: <command>"));
  }
  SECTION("run missing, empty, blank or not a string") {
    const auto errors = ParseInvalid(
        MinimalWithSteps("[{name: a}, {run: ''}, {run: '   '}, {run: [make]}, {run: }]"));
    CHECK_THAT(ErrorAt(errors, "build.steps[0].run"), Catch::StartsWith("required"));
    CHECK(ErrorAt(errors, "build.steps[1].run") == "must not be empty");
    CHECK(ErrorAt(errors, "build.steps[2].run") == "must not be empty");
    CHECK(ErrorAt(errors, "build.steps[3].run") == "expected a string, got a list");
    CHECK_THAT(ErrorAt(errors, "build.steps[4].run"), Catch::StartsWith("required"));
  }
  SECTION("names are unique, including the default ones") {
    const auto errors =
        ParseInvalid(MinimalWithSteps("[{name: a, run: x}, {name: a, run: y}, {run: z}, "
                                      "{name: step 3, run: w}]"));
    CHECK(ErrorAt(errors, "build.steps[1].name") == "\"a\" is already the name of build.steps[0]");
    CHECK(ErrorAt(errors, "build.steps[3].name") ==
          "\"step 3\" is already the name of build.steps[2]");
    CHECK(errors.size() == 2);
  }
  SECTION("an empty or multi-line name") {
    const auto errors =
        ParseInvalid(MinimalWithSteps("[{name: '', run: x}, {name: \"a\\nb\", run: y}]"));
    CHECK(ErrorAt(errors, "build.steps[0].name") == "must not be empty");
    CHECK_THAT(ErrorAt(errors, "build.steps[1].name"), Catch::Contains("one line"));
  }
  SECTION("step timeouts") {
    const Manifest m =
        ParseValid(MinimalWithSteps("[{run: a, timeout: 2h}, {run: b, timeout: 1m30s}]"));
    CHECK(m.steps[0].timeout == 2h);
    CHECK(m.steps[1].timeout == 90s);

    const auto errors = ParseInvalid(
        MinimalWithSteps("[{run: a, timeout: 0s}, {run: b, timeout: 2h1s}, {run: c, timeout: 300}, "
                         "{run: d, timeout: 1500ms}, {run: e, timeout: soon}]"));
    CHECK(ErrorAt(errors, "build.steps[0].timeout") ==
          "\"0s\" is out of range; must be between 1s and 2h");
    CHECK(ErrorAt(errors, "build.steps[1].timeout") ==
          "\"2h1s\" is out of range; must be between 1s and 2h");
    CHECK_THAT(ErrorAt(errors, "build.steps[2].timeout"),
               Catch::Contains("expected a duration like \"30s\"") && Catch::Contains("\"300\""));
    CHECK(ErrorAt(errors, "build.steps[3].timeout") ==
          "\"1500ms\" is not a whole number of seconds");
    CHECK_THAT(ErrorAt(errors, "build.steps[4].timeout"), Catch::Contains("got \"soon\""));
  }
}

TEST_CASE("build outputs are normalised relative paths", "[manifest]") {
  SECTION("normalisation") {
    const Manifest m = ParseValid(MinimalWithOutputs("[./bin/, static/, a//b, ./c/./d, \"e\"]"));
    CHECK(m.outputs == std::vector<std::string>{"bin", "static", "a/b", "c/d", "e"});
    for (const char* whole : {".", "./", ".//", "./."}) {
      INFO(whole);
      CHECK(ParseValid(MinimalWithOutputs(std::string("['") + whole + "']")).outputs ==
            std::vector<std::string>{"."});
    }
  }
  SECTION("refused paths") {
    const auto errors = ParseInvalid(
        MinimalWithOutputs("[/usr/bin/x, ../x, a/../../b, '', bin, ./bin/, [x], \"a\\tb\"]"));
    CHECK_THAT(ErrorAt(errors, "build.outputs[0]"), Catch::Contains("absolute"));
    CHECK_THAT(ErrorAt(errors, "build.outputs[1]"), Catch::Contains("\"..\""));
    CHECK_THAT(ErrorAt(errors, "build.outputs[2]"), Catch::Contains("\"..\""));
    CHECK(ErrorAt(errors, "build.outputs[3]") == "must not be empty");
    CHECK(ErrorAt(errors, "build.outputs[5]") == "\"bin\" is listed twice");
    CHECK(ErrorAt(errors, "build.outputs[6]") == "expected a string, got a list");
    CHECK_THAT(ErrorAt(errors, "build.outputs[7]"), Catch::Contains("control character"));
    CHECK(errors.size() == 7);
  }
  SECTION("missing, empty or not a list") {
    CHECK_THAT(ErrorAt(ParseInvalid(MinimalReplacing("  outputs: [.]\n", "")), "build.outputs"),
               Catch::StartsWith("required"));
    CHECK_THAT(ErrorAt(ParseInvalid(MinimalWithOutputs("[]")), "build.outputs"),
               Catch::Contains("at least one path"));
    CHECK(ErrorAt(ParseInvalid(MinimalWithOutputs("bin")), "build.outputs") ==
          "expected a list of paths, got \"bin\"");
  }
}

TEST_CASE("build timeout and output cap", "[manifest]") {
  SECTION("output cap units") {
    CHECK(ParseValid(MinimalWith("build", "output_cap: 512KiB")).output_cap_bytes == 512 * 1024);
    CHECK(ParseValid(MinimalWith("build", "output_cap: 1048576")).output_cap_bytes == 1048576);
    CHECK(ParseValid(MinimalWith("build", "output_cap: 1024MiB")).output_cap_bytes == int64_t{1}
                                                                                          << 30);
  }
  SECTION("refused output caps") {
    for (const char* cap : {"1MB", "8 MiB", "8mib", "-1", "1.5MiB", "MiB", "lots"}) {
      INFO(cap);
      const auto errors = ParseInvalid(MinimalWith("build", std::string("output_cap: ") + cap));
      CHECK_THAT(ErrorAt(errors, "build.output_cap"),
                 Catch::Contains("expected a size in bytes or with a KiB or MiB suffix"));
    }
    for (const char* cap : {"0", "0KiB", "1025MiB", "99999999999999999999999"}) {
      INFO(cap);
      const auto errors = ParseInvalid(MinimalWith("build", std::string("output_cap: ") + cap));
      CHECK_THAT(ErrorAt(errors, "build.output_cap"), Catch::Contains("out of range"));
    }
  }
  SECTION("whole-build timeout") {
    CHECK(ParseValid(MinimalWith("build", "timeout: 1h")).build_timeout == 1h);
    const auto errors = ParseInvalid(MinimalWith("build", "timeout: 3h"));
    CHECK(ErrorAt(errors, "build.timeout") == "\"3h\" is out of range; must be between 1s and 2h");
  }
}

TEST_CASE("environment maps", "[manifest]") {
  SECTION("numbers and booleans are taken as their text") {
    const Manifest m = ParseValid(
        MinimalWith("run", "env: {PORT: 8080, RATIO: 0.5, ON: true, EMPTY: '', _X1: \"a b\"}"));
    CHECK(m.run_env ==
          std::map<std::string, std::string>{
              {"PORT", "8080"}, {"RATIO", "0.5"}, {"ON", "true"}, {"EMPTY", ""}, {"_X1", "a b"}});
  }
  SECTION("invalid names, reserved names and non-scalar values") {
    const auto errors = ParseInvalid(MinimalWith(
        "build", "env: {1ABC: x, MY-VAR: y, MUON_TOKEN: z, LIST: [a], MAP: {a: b}, NONE: }"));
    std::vector<std::string> at_env;
    for (const auto& error : errors) {
      if (error.path == "build.env") at_env.push_back(error.message);
    }
    REQUIRE(at_env.size() == 3);
    CHECK_THAT(at_env[0], Catch::Contains("\"1ABC\" is not a valid environment variable name"));
    CHECK_THAT(at_env[1], Catch::Contains("\"MY-VAR\" is not a valid environment variable name"));
    CHECK_THAT(at_env[2], Catch::Contains("\"MUON_TOKEN\" is reserved"));
    CHECK(ErrorAt(errors, "build.env.LIST") == "expected a string, number or boolean, got a list");
    CHECK(ErrorAt(errors, "build.env.MAP") ==
          "expected a string, number or boolean, got a mapping");
    CHECK_THAT(ErrorAt(errors, "build.env.NONE"), Catch::Contains("has no value"));
    CHECK(errors.size() == 6);
  }
  SECTION("env as a list") {
    const auto errors = ParseInvalid(MinimalWith("run", "env: [A=1]"));
    CHECK(ErrorAt(errors, "run.env") == "expected a mapping of environment variables, got a list");
  }
}

TEST_CASE("run section", "[manifest]") {
  SECTION("command missing or empty") {
    const auto missing = ParseInvalid(MinimalReplacing("  command: ./greeter", "  replicas: 1"));
    CHECK_THAT(ErrorAt(missing, "run.command"), Catch::StartsWith("required"));
    const auto empty = ParseInvalid(MinimalReplacing("./greeter", "''"));
    CHECK(ErrorAt(empty, "run.command") == "must not be empty");
    const auto run_empty = ParseInvalid(MinimalReplacing("  command: ./greeter\n", ""));
    CHECK_THAT(ErrorAt(run_empty, "run"), Catch::StartsWith("required"));
  }
  SECTION("run as a scalar") {
    const std::string yaml =
        "name: greeter\nbuild: {steps: [{run: make}], outputs: [.]}\n"
        "run: ./greeter\n";
    CHECK_THAT(ErrorAt(ParseInvalid(yaml), "run"),
               Catch::Contains("expected a mapping with keys command, replicas") &&
                   Catch::Contains("got \"./greeter\""));
  }
  SECTION("replicas range and type") {
    CHECK(ParseValid(MinimalWith("run", "replicas: 0")).replicas == 0);
    CHECK(ParseValid(MinimalWith("run", "replicas: 100")).replicas == 100);
    CHECK(ErrorAt(ParseInvalid(MinimalWith("run", "replicas: 101")), "run.replicas") ==
          "101 is out of range; must be between 0 and 100");
    CHECK(ErrorAt(ParseInvalid(MinimalWith("run", "replicas: -1")), "run.replicas") ==
          "-1 is out of range; must be between 0 and 100");
    CHECK(ErrorAt(ParseInvalid(MinimalWith("run", "replicas: lots")), "run.replicas") ==
          "expected an integer between 0 and 100, got \"lots\"");
    CHECK(ErrorAt(ParseInvalid(MinimalWith("run", "replicas: 2.5")), "run.replicas") ==
          "expected an integer between 0 and 100, got \"2.5\"");
    CHECK(ErrorAt(ParseInvalid(MinimalWith("run", "replicas: [2]")), "run.replicas") ==
          "expected a string, got a list");
    CHECK_THAT(
        ErrorAt(ParseInvalid(MinimalWith("run", "replicas: 99999999999999999999")), "run.replicas"),
        Catch::Contains("out of range"));
  }
  SECTION("required_env") {
    const Manifest m = ParseValid(MinimalWith("run", "required_env: [DATABASE_URL, API_KEY]"));
    CHECK(m.required_env == std::vector<std::string>{"DATABASE_URL", "API_KEY"});
    const auto errors =
        ParseInvalid(MinimalWith("run", "required_env: [A, A, 'bad name', MUON_NODE, {B: 1}]"));
    CHECK(ErrorAt(errors, "run.required_env[1]") == "\"A\" is listed twice");
    CHECK_THAT(ErrorAt(errors, "run.required_env[2]"),
               Catch::Contains("not a valid environment variable name"));
    CHECK_THAT(ErrorAt(errors, "run.required_env[3]"), Catch::Contains("reserved"));
    CHECK(ErrorAt(errors, "run.required_env[4]") == "expected a string, got a mapping");
    CHECK(errors.size() == 4);
    CHECK(ErrorAt(ParseInvalid(MinimalWith("run", "required_env: DATABASE_URL")),
                  "run.required_env") ==
          "expected a list of environment variable names, got \"DATABASE_URL\"");
  }
  SECTION("drain_grace") {
    CHECK(ParseValid(MinimalWith("run", "drain_grace: 0s")).drain_grace == 0s);
    CHECK(ParseValid(MinimalWith("run", "drain_grace: 10m")).drain_grace == 10min);
    CHECK(ErrorAt(ParseInvalid(MinimalWith("run", "drain_grace: 11m")), "run.drain_grace") ==
          "\"11m\" is out of range; must be between 0s and 10m");
  }
}

TEST_CASE("health checks", "[manifest]") {
  SECTION("http path with timings") {
    const Manifest m =
        ParseValid(MinimalWith("run", "health: {http_path: /healthz, timeout: 1m, interval: 5s}"));
    CHECK(m.health.http_path == "/healthz");
    CHECK(m.health.rpc.empty());
    CHECK(m.health.timeout == 1min);
    CHECK(m.health.interval == 5s);
  }
  SECTION("both rpc and http_path") {
    const auto errors = ParseInvalid(MinimalWith("run", "health: {rpc: Health, http_path: /h}"));
    CHECK(ErrorAt(errors, "run.health") == "set either rpc or http_path, not both");
  }
  SECTION("invalid values") {
    const auto errors =
        ParseInvalid(MinimalWith("run", "health: {rpc: Health.Check, timeout: 0s, interval: 2m}"));
    CHECK_THAT(ErrorAt(errors, "run.health.rpc"),
               Catch::Contains("\"Health.Check\" is not a method name"));
    CHECK_THAT(ErrorAt(errors, "run.health.timeout"), Catch::Contains("between 1s and 10m"));
    CHECK_THAT(ErrorAt(errors, "run.health.interval"), Catch::Contains("between 1s and 1m"));
    for (const char* rpc : {"1Health", "_Health", "''"}) {
      INFO(rpc);
      CHECK_THAT(
          ErrorAt(ParseInvalid(MinimalWith("run", std::string("health: {rpc: ") + rpc + "}")),
                  "run.health.rpc"),
          Catch::Contains("not a method name"));
    }
    for (const char* path : {"healthz", "'/a b'", "''"}) {
      INFO(path);
      CHECK_THAT(ErrorAt(ParseInvalid(
                             MinimalWith("run", std::string("health: {http_path: ") + path + "}")),
                         "run.health.http_path"),
                 Catch::Contains("must start with '/'"));
    }
  }
  SECTION("health as a string") {
    CHECK(ErrorAt(ParseInvalid(MinimalWith("run", "health: Health")), "run.health") ==
          "expected a mapping with keys rpc, http_path, timeout, interval, got \"Health\"");
  }
}

TEST_CASE("depends_on", "[manifest]") {
  CHECK(ParseValid(MinimalWith("", "depends_on: [users, billing-v2]")).depends_on ==
        std::vector<std::string>{"users", "billing-v2"});
  const auto errors =
      ParseInvalid(MinimalWith("", "depends_on: [users, users, greeter, auth, 'bad name', [x]]"));
  CHECK(ErrorAt(errors, "depends_on[1]") == "\"users\" is listed twice");
  CHECK(ErrorAt(errors, "depends_on[2]") == "a service cannot depend on itself");
  CHECK_THAT(ErrorAt(errors, "depends_on[3]"), Catch::Contains("platform service"));
  CHECK_THAT(ErrorAt(errors, "depends_on[4]"), Catch::Contains("not a valid service name"));
  CHECK(ErrorAt(errors, "depends_on[5]") == "expected a string, got a list");
  CHECK(errors.size() == 5);
  CHECK(ErrorAt(ParseInvalid(MinimalWith("", "depends_on: users")), "depends_on") ==
        "expected a list of service names, got \"users\"");
}

TEST_CASE("YAML syntax errors give a 1-based line and column", "[manifest]") {
  SECTION("unclosed flow sequence") {
    const auto errors = ParseInvalid("name: greeter\nbuild:\n  outputs: [a, b\nrun: {}\n");
    REQUIRE(errors.size() == 1);
    CHECK(errors.front().path.empty());
    CHECK_THAT(errors.front().message, Catch::StartsWith("YAML syntax error at line "));
  }
  SECTION("bad indentation on line 4") {
    const auto errors = ParseInvalid("name: greeter\nbuild:\n  steps: x\n bad: y\n");
    REQUIRE(errors.size() == 1);
    CHECK_THAT(errors.front().message, Catch::StartsWith("YAML syntax error at line 4, column"));
  }
  SECTION("an undefined alias") {
    const auto errors = ParseInvalid("name: *nowhere\n");
    REQUIRE(errors.size() == 1);
    CHECK_THAT(errors.front().message, Catch::StartsWith("YAML syntax error at line 1"));
  }
  SECTION("deep nesting is refused, not a stack overflow") {
    const auto errors = ParseInvalid("name: " + std::string(100000, '[') + "\n");
    REQUIRE(errors.size() == 1);
    CHECK_THAT(errors.front().message, Catch::StartsWith("YAML syntax error"));
  }
  SECTION("binary garbage") {
    const std::string garbage("\x00\xff\xfe{[:\x01\"", 9);
    const ManifestResult result = ParseManifest(garbage);
    CHECK_FALSE(result.manifest.has_value());
    CHECK_FALSE(result.errors.empty());
  }
}

TEST_CASE("text over 256 KiB is refused before parsing", "[manifest]") {
  std::string yaml = kMinimalManifest;
  yaml += "# " + std::string(muon::builder::kMaxManifestBytes - yaml.size() - 3, 'x') + "\n";
  REQUIRE(yaml.size() == muon::builder::kMaxManifestBytes);
  ParseValid(yaml);
  yaml += "#";
  const auto errors = ParseInvalid(yaml);
  REQUIRE(errors.size() == 1);
  CHECK_THAT(errors.front().message, Catch::Contains("the limit is 262144 bytes"));
}

TEST_CASE("the number of reported errors is bounded", "[manifest]") {
  std::string outputs = "[";
  for (int i = 0; i < 500; ++i) outputs += "/abs, ";
  outputs += "/abs]";
  const auto errors = ParseInvalid(MinimalWithOutputs(outputs));
  CHECK(errors.size() == 101);
  CHECK(errors.back().message == "more than 100 errors; the rest are not shown");
}

TEST_CASE("errors format one per line with the file name", "[manifest]") {
  const std::vector<ManifestError> errors = {
      {"build.steps[1].run", "must not be empty"},
      {"", "YAML syntax error at line 3, column 1: bad"},
  };
  CHECK(FormatManifestErrors(errors, "services/greeter/muon.yaml") ==
        "services/greeter/muon.yaml: build.steps[1].run: must not be empty\n"
        "services/greeter/muon.yaml: YAML syntax error at line 3, column 1: bad\n");
  CHECK(FormatManifestErrors({}, "muon.yaml").empty());
}
