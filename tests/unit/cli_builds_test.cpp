// `muon builds`, `muon builds show|logs` and `muon deploy` (builder): argument parsing, names,
// help, and the size and duration formats they print. Requests and output are in
// cli_http_test.cpp.

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "cli_parse_helpers.h"
#include "muon/cli/commands.h"
#include "muon/cli/output.h"
#include "muon/common/service.h"

namespace {

using muon::cli::testing::As;
using muon::cli::testing::Problem;

std::string NotAService(const std::string& name, const std::string& what = "") {
  return (what.empty() ? "" : what + ": ") + "'" + name +
         "' is not a service name (1 to 64 letters, digits, '_', '-')";
}

std::string NotABuildId(const std::string& id) {
  return "ID: '" + id + "' is not a build id (letters, digits, '_', '-'; e.g. b-1a2b3c4d5e6f)";
}

}  // namespace

TEST_CASE("cli builds: list", "[cli]") {
  auto list = As<muon::cli::BuildsListCmd>({"builds"});
  CHECK(list.service.empty());
  CHECK(list.repo.empty());
  CHECK(list.limit == 0);  // the server's default (20)
  As<muon::cli::BuildsListCmd>({"builds", "list"});
  As<muon::cli::BuildsListCmd>({"builds", "-o", "json"});

  list = As<muon::cli::BuildsListCmd>(
      {"builds", "--service", "greeter", "--repo", "acme/shop", "-n", "5"});
  CHECK(list.service == "greeter");
  CHECK(list.repo == "acme/shop");
  CHECK(list.limit == 5);
  CHECK(As<muon::cli::BuildsListCmd>({"builds", "list", "--lines=500"}).limit == 500);
  CHECK(As<muon::cli::BuildsListCmd>({"builds", "--service=Greeter_2"}).service == "Greeter_2");

  for (const std::string n : {"0", "501", "-1", "ten", "", "5x"}) {
    INFO(n);
    CHECK(Problem({"builds", "-n", n}) ==
          "-n: '" + n + "' is not a number of builds from 1 to 500");
  }
  CHECK(Problem({"builds", "--service", "a.b"}) == NotAService("a.b", "--service"));
  CHECK(Problem({"builds", "--service", ""}) == NotAService("", "--service"));
  CHECK(Problem({"builds", "--repo", "shop"}) ==
        "--repo: 'shop' is not a GitHub repository as OWNER/NAME (each part 1 to 100 letters, "
        "digits, '.', '_', '-'; not . or ..)");
  CHECK(Problem({"builds", "list", "greeter"}) == "builds list: unexpected argument 'greeter'");
  CHECK(Problem({"builds", "b-1a2b3c4d5e6f"}) ==
        "unknown command 'muon builds b-1a2b3c4d5e6f' (expected one of: list, show, logs)");
  CHECK(Problem({"builds", "-f"}) == "builds list: unknown flag --follow");
}

TEST_CASE("cli builds: show", "[cli]") {
  CHECK(As<muon::cli::BuildsShowCmd>({"builds", "show", "b-1a2b3c4d5e6f"}).id == "b-1a2b3c4d5e6f");
  CHECK(As<muon::cli::BuildsShowCmd>({"-o", "json", "builds", "show", "b-1"}).id == "b-1");
  CHECK(Problem({"builds", "show"}) == "builds show: missing ID");
  CHECK(Problem({"builds", "show", "b 1"}) == NotABuildId("b 1"));
  CHECK(Problem({"builds", "show", "../b-1"}) == NotABuildId("../b-1"));
  CHECK(Problem({"builds", "show", std::string(129, 'b')}) == NotABuildId(std::string(129, 'b')));
  CHECK(Problem({"builds", "show", "b-1", "b-2"}) == "builds show: unexpected argument 'b-2'");
}

TEST_CASE("cli builds: logs is muon logs --build", "[cli]") {
  auto logs = As<muon::cli::LogsCmd>({"builds", "logs", "b-1a2b3c4d5e6f"});
  CHECK(logs.build == "b-1a2b3c4d5e6f");
  CHECK(logs.service.empty());
  CHECK_FALSE(logs.follow);
  CHECK(logs.lines == 100);
  // The very command `muon logs --build ID` parses to.
  const auto same = As<muon::cli::LogsCmd>({"logs", "--build", "b-1a2b3c4d5e6f"});
  CHECK(same.build == logs.build);
  CHECK(same.service == logs.service);
  CHECK(same.follow == logs.follow);
  CHECK(same.lines == logs.lines);
  CHECK(same.source == logs.source);

  logs = As<muon::cli::LogsCmd>({"builds", "logs", "b-1", "-f"});
  CHECK(logs.build == "b-1");
  CHECK(logs.follow);
  CHECK(As<muon::cli::LogsCmd>({"builds", "logs", "-f", "-n", "0", "b-1"}).lines == 0);
  CHECK(As<muon::cli::LogsCmd>({"builds", "logs", "b-1", "-n", "500"}).lines == 500);

  CHECK(Problem({"builds", "logs"}) == "builds logs: missing ID");
  CHECK(Problem({"builds", "logs", "b/1"}) == NotABuildId("b/1"));
  CHECK(Problem({"builds", "logs", "b-1", "-n", "0"}) ==
        "-n: '0' is not a number of lines from 1 to 10000");
  CHECK(Problem({"builds", "logs", "b-1", "--build", "b-2"}) ==
        "builds logs: unknown flag --build");
  CHECK(Problem({"builds", "logs", "b-1", "--since", "1h"}) == "builds logs: unknown flag --since");
}

TEST_CASE("cli builds: deploy", "[cli]") {
  auto deploy = As<muon::cli::DeployCmd>({"deploy", "greeter", "--ref", "main"});
  CHECK(deploy.service == "greeter");
  CHECK(deploy.ref == "main");
  CHECK(deploy.repo.empty());  // the repo of the service's last build
  deploy = As<muon::cli::DeployCmd>({"deploy", "--ref=1a2b3c4d5e6f1a2b3c4d5e6f1a2b3c4d5e6f1a2b",
                                     "greeter", "--repo", "acme/shop"});
  CHECK(deploy.service == "greeter");
  CHECK(deploy.ref == "1a2b3c4d5e6f1a2b3c4d5e6f1a2b3c4d5e6f1a2b");
  CHECK(deploy.repo == "acme/shop");
  CHECK(As<muon::cli::DeployCmd>({"deploy", "greeter", "--ref", "feature/login"}).ref ==
        "feature/login");

  CHECK(Problem({"deploy"}) == "deploy: missing SERVICE");
  // Without --ref it is the scheduler's Deploy (cli_scheduler_test.cpp).
  CHECK(As<muon::cli::DeployCmd>({"deploy", "greeter"}).ref.empty());
  CHECK(Problem({"deploy", "greeter", "--ref", ""}) ==
        "--ref: '' must be non-empty, without spaces or control characters");
  CHECK(Problem({"deploy", "greeter", "--ref"}) == "deploy: flag --ref needs a value (REF)");
  CHECK(Problem({"deploy", "greeter", "--ref", "a b"}) ==
        "--ref: 'a b' must be non-empty, without spaces or control characters");
  CHECK(Problem({"deploy", "greeter", "--ref", "main\n"}) ==
        "--ref: 'main ' must be non-empty, without spaces or control characters");
  CHECK(Problem({"deploy", "gree.ter", "--ref", "main"}) == NotAService("gree.ter"));
  CHECK(Problem({"deploy", "greeter", "--ref", "main", "--repo", "acme"}) ==
        "--repo: 'acme' is not a GitHub repository as OWNER/NAME (each part 1 to 100 letters, "
        "digits, '.', '_', '-'; not . or ..)");
  CHECK(Problem({"deploy", "greeter", "other", "--ref", "main"}) ==
        "deploy: unexpected argument 'other'");
}

TEST_CASE("cli builds: service names are the builder's rule", "[cli]") {
  // The builder refuses (400) what muon::IsValidServiceName refuses; the CLI applies the same
  // function, so such a name is a usage error before anything is sent.
  for (const std::string& name : std::vector<std::string>{"greeter", "github-events", "Greeter_2",
                                                          "_x", std::string(64, 's')}) {
    INFO(name);
    CHECK(muon::IsValidServiceName(name));
    CHECK(As<muon::cli::DeployCmd>({"deploy", name, "--ref", "main"}).service == name);
    CHECK(As<muon::cli::BuildsListCmd>({"builds", "--service", name}).service == name);
  }
  for (const std::string& name : std::vector<std::string>{"a.b", "a/b", "a b", "gr\xc3\xbc\xc3\x9f",
                                                          "x*", std::string(65, 's')}) {
    INFO(name);
    CHECK_FALSE(muon::IsValidServiceName(name));
    CHECK(Problem({"deploy", name, "--ref", "main"}) == NotAService(name));
  }
}

TEST_CASE("cli builds: help", "[cli]") {
  const auto main_help = As<muon::cli::HelpCmd>({"--help"}).text;
  for (const char* command : {"builds list", "builds show", "builds logs", "deploy"}) {
    INFO(command);
    CHECK(main_help.find(std::string("\n  ") + command + " ") != std::string::npos);
  }
  CHECK(As<muon::cli::HelpCmd>({"help", "builds"})
            .text.rfind("usage: muon builds list [--service S] [--repo OWNER/NAME] [--lines N]",
                        0) == 0);
  CHECK(As<muon::cli::HelpCmd>({"builds", "show", "--help"})
            .text.rfind("usage: muon builds show ID\n", 0) == 0);
  CHECK(As<muon::cli::HelpCmd>({"builds", "logs", "-h"})
            .text.rfind("usage: muon builds logs ID [--follow] [--lines N]", 0) == 0);
  const auto deploy = As<muon::cli::HelpCmd>({"deploy", "--help"}).text;
  CHECK(deploy.rfind("usage: muon deploy SERVICE [--ref REF] [--repo OWNER/NAME] [--release vN]\n",
                     0) == 0);
  CHECK(As<muon::cli::HelpCmd>({"help", "deploy"}).text == deploy);
}

TEST_CASE("cli builds: sizes and durations", "[cli]") {
  using muon::cli::FormatBytes;
  using muon::cli::FormatMillis;
  CHECK(FormatBytes(0) == "0 B");
  CHECK(FormatBytes(-1) == "0 B");
  CHECK(FormatBytes(512) == "512 B");
  CHECK(FormatBytes(1023) == "1023 B");
  CHECK(FormatBytes(1024) == "1.0 KiB");
  CHECK(FormatBytes(1536) == "1.5 KiB");
  CHECK(FormatBytes(1048575) == "1.0 MiB");
  CHECK(FormatBytes(13000000) == "12.4 MiB");
  CHECK(FormatBytes(int64_t{5} << 30) == "5.0 GiB");
  CHECK(FormatMillis(0) == "0ms");
  CHECK(FormatMillis(-3) == "0ms");
  CHECK(FormatMillis(350) == "350ms");
  CHECK(FormatMillis(1000) == "1s");
  CHECK(FormatMillis(65400) == "1m5s");
}
