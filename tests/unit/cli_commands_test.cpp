// Argument parsing of every `muon` command: good input becomes the typed command, bad input a
// UsageError whose text says what is wrong.

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "cli_parse_helpers.h"
#include "muon/cli/commands.h"
#include "muon/cli/exit_codes.h"
#include "muon/common/service.h"

using namespace std::chrono_literals;
using muon::cli::Invocation;
using muon::cli::OutputFormat;
using muon::cli::ParseArgs;
using muon::cli::UsageError;

namespace {

using muon::cli::testing::As;
using muon::cli::testing::Problem;

}  // namespace

TEST_CASE("cli: no command is a usage error", "[cli]") {
  CHECK(Problem({}) == "missing command");
  CHECK(Problem({"--output", "json"}) == "missing command");
  CHECK(Problem({"frobnicate"}) == "unknown command 'frobnicate'");
}

TEST_CASE("cli: --help and --version", "[cli]") {
  const auto help = As<muon::cli::HelpCmd>({"--help"});
  CHECK(help.text.find("exit codes:") != std::string::npos);
  CHECK(help.text.find("invites create") != std::string::npos);
  CHECK(As<muon::cli::HelpCmd>({"-h"}).text == help.text);
  CHECK(As<muon::cli::HelpCmd>({"help"}).text == help.text);
  As<muon::cli::VersionCmd>({"--version"});
  As<muon::cli::VersionCmd>({"version"});

  const auto call_help = As<muon::cli::HelpCmd>({"call", "--help"});
  CHECK(call_help.text.rfind("usage: muon call SERVICE METHOD [JSON|-]", 0) == 0);
  CHECK(call_help.text.find("--timeout D") != std::string::npos);
  // Help wins over other problems on the line, and `muon help X` is the same text.
  CHECK(As<muon::cli::HelpCmd>({"call", "--bogus", "-h"}).text == call_help.text);
  CHECK(As<muon::cli::HelpCmd>({"help", "call"}).text == call_help.text);
  CHECK(As<muon::cli::HelpCmd>({"help", "env", "add"})
            .text.rfind("usage: muon env add NAME URL", 0) == 0);
  CHECK(As<muon::cli::HelpCmd>({"rules", "add", "--help"}).text.find("--effect allow|deny") !=
        std::string::npos);
}

TEST_CASE("cli: global flags before or after the command", "[cli]") {
  Invocation inv = ParseArgs({"--output", "json", "--env", "eu", "services"});
  CHECK(inv.global.output == OutputFormat::kJson);
  CHECK(inv.global.env == "eu");
  CHECK(std::holds_alternative<muon::cli::ServicesCmd>(inv.command));

  inv = ParseArgs({"services", "--output=json", "--env=us", "--insecure"});
  CHECK(inv.global.output == OutputFormat::kJson);
  CHECK(inv.global.env == "us");
  CHECK(inv.global.insecure);

  inv = ParseArgs({"-o", "table", "whoami"});
  CHECK(inv.global.output == OutputFormat::kTable);

  CHECK(Problem({"--output", "yaml", "services"}) == "--output must be json or table, not 'yaml'");
  CHECK(Problem({"services", "--output"}) == "services: flag --output needs a value (json|table)");
  CHECK(Problem({"--env", "bad name", "services"}) == "--env: 'bad name' is not a valid env name");
  CHECK(Problem({"services", "--insecure=yes"}) == "services: flag --insecure takes no value");
}

TEST_CASE("cli: env commands", "[cli]") {
  As<muon::cli::EnvListCmd>({"env"});
  As<muon::cli::EnvListCmd>({"env", "list"});
  auto add =
      As<muon::cli::EnvAddCmd>({"env", "add", "eu", "https://eu.example.com", "--region", "eu"});
  CHECK(add.name == "eu");
  CHECK(add.url == "https://eu.example.com");
  CHECK(add.region == "eu");
  CHECK(As<muon::cli::EnvAddCmd>({"env", "add", "local", "http://127.0.0.1:8080"}).region.empty());
  CHECK(As<muon::cli::EnvUseCmd>({"env", "use", "eu"}).name == "eu");
  CHECK(As<muon::cli::EnvRemoveCmd>({"env", "remove", "eu"}).name == "eu");

  CHECK(Problem({"env", "add", "eu"}) == "env add: missing URL");
  CHECK(Problem({"env", "add"}) == "env add: missing NAME");
  CHECK(Problem({"env", "add", "e u", "http://x"}) ==
        "'e u' is not a valid env name (letters, digits, '.', '_', '-')");
  CHECK(Problem({"env", "add", "eu", "http://x", "extra"}) ==
        "env add: unexpected argument 'extra'");
  CHECK(Problem({"env", "add", "eu", "http://x", "--region"}) ==
        "env add: flag --region needs a value (R)");
  CHECK(Problem({"env", "use"}) == "env use: missing NAME");
  CHECK(Problem({"env", "frob"}) ==
        "unknown command 'muon env frob' (expected one of: list, add, use, remove, set, unset)");
  CHECK(Problem({"env", "list", "--region", "eu"}) == "env list: unknown flag --region");
}

TEST_CASE("cli: login, logout, whoami, signup, passwd", "[cli]") {
  auto login = As<muon::cli::LoginCmd>(
      {"login", "--region", "eu", "--email", "a@example.com", "--password-stdin"});
  CHECK(login.region == "eu");
  CHECK(login.email == "a@example.com");
  CHECK(login.password_stdin);
  login = As<muon::cli::LoginCmd>({"login"});
  CHECK(login.region.empty());
  CHECK(login.email.empty());
  CHECK_FALSE(login.password_stdin);
  CHECK(Problem({"login", "--email", "nobody"}) == "--email: 'nobody' is not an email address");
  CHECK(Problem({"login", "--password", "hunter2"}) == "login: unknown flag --password");
  CHECK(Problem({"login", "--region", "eu", "--region", "us"}) ==
        "login: flag --region given more than once");
  CHECK(Problem({"login", "extra"}) == "login: unexpected argument 'extra'");

  As<muon::cli::LogoutCmd>({"logout"});
  As<muon::cli::WhoamiCmd>({"whoami"});
  As<muon::cli::TokenCmd>({"token"});
  CHECK(Problem({"whoami", "me"}) == "whoami: unexpected argument 'me'");

  auto signup = As<muon::cli::SignupCmd>(
      {"signup", "--invite", "ABC123", "--email", "b@example.com", "--name", "Bea"});
  CHECK(signup.invite == "ABC123");
  CHECK(signup.email == "b@example.com");
  CHECK(signup.name == std::optional<std::string>("Bea"));
  CHECK_FALSE(signup.password_stdin);
  CHECK_FALSE(As<muon::cli::SignupCmd>({"signup", "--invite=X", "--email=b@example.com"}).name);
  CHECK(Problem({"signup", "--email", "b@example.com"}) == "--invite is required");
  CHECK(Problem({"signup", "--invite", "X"}) == "--email is required");

  CHECK(As<muon::cli::PasswdCmd>({"passwd", "--password-stdin"}).password_stdin);
  CHECK_FALSE(As<muon::cli::PasswdCmd>({"passwd"}).password_stdin);
}

TEST_CASE("cli: call", "[cli]") {
  auto call = As<muon::cli::CallCmd>({"call", "echo", "Echo"});
  CHECK(call.service == "echo");
  CHECK(call.method == "Echo");
  CHECK(call.body == "{}");
  CHECK_FALSE(call.body_from_stdin);
  CHECK_FALSE(call.timeout);
  CHECK(call.version.empty());

  call = As<muon::cli::CallCmd>(
      {"call", "echo", "Echo", R"({"message":"hi"})", "--version", "v3", "--timeout", "1500ms"});
  CHECK(call.body == R"({"message":"hi"})");
  CHECK(call.version == "v3");
  CHECK(call.timeout == std::chrono::nanoseconds(1500ms));

  call = As<muon::cli::CallCmd>({"call", "github-events", "List", "-"});
  CHECK(call.body_from_stdin);
  // After `--` everything is an argument, even what looks like a flag.
  call = As<muon::cli::CallCmd>({"call", "--", "echo", "Echo", "--x"});
  CHECK(call.body == "--x");

  CHECK(Problem({"call"}) == "call: missing SERVICE");
  CHECK(Problem({"call", "echo"}) == "call: missing METHOD");
  CHECK(Problem({"call", "echo", "Echo", "{}", "{}"}) == "call: unexpected argument '{}'");
  CHECK(Problem({"call", "ec.ho", "Echo"}) ==
        "'ec.ho' is not a service name (letters, digits, '_', '-')");
  CHECK(Problem({"call", "echo", "Ec/ho"}) ==
        "'Ec/ho' is not a method name (letters, digits, '_'; e.g. Echo)");
  CHECK(Problem({"call", "echo", "Echo", "--timeout", "5"}) ==
        "--timeout: '5' is not a duration (e.g. 500ms, 5s, 1m30s, 48h)");
  CHECK(Problem({"call", "echo", "Echo", "--timeout", "0s"}) == "--timeout must be more than 0");
  CHECK(Problem({"call", "echo", "Echo", "--version", "a b"}) ==
        "--version: 'a b' is not a release label (letters, digits, '_' and '-', at most 64; e.g. "
        "v3 or a branch slug)");
  CHECK(Problem({"call", "echo", "Echo", "-x"}) == "call: unknown flag -x");
}

TEST_CASE("cli: call --version takes exactly the labels the ingress takes", "[cli]") {
  // The ingress answers 400 to a Muon-Version that muon::IsValidReleaseLabel refuses; the CLI
  // applies the same function, so such a label is a usage error before anything is sent.
  const std::vector<std::string> accepted = {"v3", "feature-login",     "Release_2", "0",
                                             "-x", std::string(64, 'a')};
  const std::vector<std::string> refused = {"v1.2", "1.0.0", "a b",  "feat/x",
                                            "v3*",  "v>",    "",     "\xc3\xbc",
                                            "a\tb", "v3\n",  "v3.*", std::string(65, 'a')};
  for (const auto& label : accepted) {
    INFO("label '" << label << "'");
    CHECK(muon::IsValidReleaseLabel(label));
    CHECK(As<muon::cli::CallCmd>({"call", "echo", "Echo", "--version", label}).version == label);
  }
  for (const auto& label : refused) {
    INFO("label '" << label << "'");
    CHECK_FALSE(muon::IsValidReleaseLabel(label));
    CHECK(Problem({"call", "echo", "Echo", "--version", label})
              .rfind("--version: '" + label + "' is not a release label", 0) == 0);
  }
  CHECK(Problem({"call", "echo", "Echo", "--version=v1.2"}) ==
        "--version: 'v1.2' is not a release label (letters, digits, '_' and '-', at most 64; "
        "e.g. v3 or a branch slug)");
}

TEST_CASE("cli: services and admin commands", "[cli]") {
  As<muon::cli::ServicesCmd>({"services"});
  As<muon::cli::AccountsListCmd>({"accounts"});
  As<muon::cli::AccountsListCmd>({"accounts", "list"});
  auto disable = As<muon::cli::AccountsSetDisabledCmd>({"accounts", "disable", "a@example.com"});
  CHECK(disable.email == "a@example.com");
  CHECK(disable.disabled);
  CHECK_FALSE(
      As<muon::cli::AccountsSetDisabledCmd>({"accounts", "enable", "a@example.com"}).disabled);
  CHECK(Problem({"accounts", "disable"}) == "accounts disable: missing EMAIL");
  CHECK(Problem({"accounts", "delete", "a@example.com"}) ==
        "unknown command 'muon accounts delete' (expected one of: list, disable, enable)");

  As<muon::cli::InvitesListCmd>({"invites"});
  auto invite =
      As<muon::cli::InvitesCreateCmd>({"invites", "create", "c@example.com", "--role", "developer",
                                       "--role", "ops,admin", "--role", "ops", "--ttl", "48h"});
  CHECK(invite.email == "c@example.com");
  CHECK(invite.roles == std::vector<std::string>{"developer", "ops", "admin"});
  CHECK(invite.ttl_seconds == std::optional<int64_t>(48 * 3600));
  auto plain = As<muon::cli::InvitesCreateCmd>({"invites", "create", "c@example.com"});
  CHECK(plain.roles.empty());
  CHECK_FALSE(plain.ttl_seconds);
  CHECK(As<muon::cli::InvitesCreateCmd>({"invites", "create", "c@example.com", "--ttl", "1500ms"})
            .ttl_seconds == std::optional<int64_t>(2));
  CHECK(Problem({"invites", "create"}) == "invites create: missing EMAIL");
  CHECK(Problem({"invites", "create", "c@example.com", "--ttl", "week"}) ==
        "--ttl: 'week' is not a duration (e.g. 500ms, 5s, 1m30s, 48h)");
  CHECK(Problem({"invites", "create", "c@example.com", "--role", "a,,b"}) ==
        "--role: empty role name");

  As<muon::cli::RulesListCmd>({"rules"});
  auto rule = As<muon::cli::RulesAddCmd>({"rules", "add", "--role", "developer", "--service",
                                          "echo", "--endpoint", "Ec*", "--effect", "allow",
                                          "--priority", "-5", "--description", "let devs echo"});
  CHECK(rule.role == "developer");
  CHECK(rule.service == "echo");
  CHECK(rule.endpoint == "Ec*");
  CHECK(rule.effect == "allow");
  CHECK(rule.priority == -5);
  CHECK(rule.description == "let devs echo");
  const std::vector<std::string> base = {"rules",     "add",  "--role",     "*",
                                         "--service", "echo", "--endpoint", "*"};
  auto with = [&](std::vector<std::string> extra) {
    auto args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  CHECK(Problem(with({"--priority", "1"})) == "--effect is required");
  CHECK(Problem(with({"--effect", "allow"})) == "--priority is required");
  CHECK(Problem(with({"--effect", "maybe", "--priority", "1"})) ==
        "--effect must be allow or deny, not 'maybe'");
  CHECK(Problem(with({"--effect", "deny", "--priority", "high"})) ==
        "--priority: 'high' is not a whole number");
  CHECK(Problem(with({"--effect", "deny", "--priority", "99999999999"})) ==
        "--priority: '99999999999' is not a whole number");
  CHECK(As<muon::cli::RulesDeleteCmd>({"rules", "delete", "r-1"}).id == "r-1");
  CHECK(Problem({"rules", "delete"}) == "rules delete: missing ID");
}

TEST_CASE("cli: names", "[cli]") {
  CHECK(muon::cli::IsValidEnvName("eu-west.1"));
  CHECK_FALSE(muon::cli::IsValidEnvName("-eu"));
  CHECK_FALSE(muon::cli::IsValidEnvName(""));
  CHECK(muon::cli::IsValidServiceName("github-events"));
  CHECK_FALSE(muon::cli::IsValidServiceName("a.b"));
  CHECK_FALSE(muon::cli::IsValidServiceName("a/b"));
  CHECK(muon::cli::IsValidMethodName("Echo"));
  CHECK(muon::cli::IsValidMethodName("_x1"));
  CHECK_FALSE(muon::cli::IsValidMethodName("1x"));
  CHECK_FALSE(muon::cli::IsValidMethodName("Echo.Sub"));
}
