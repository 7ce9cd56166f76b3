// `muon repos` and `muon deliveries` (github-events): argument parsing, OWNER/NAME validation and
// the --secret-file rules. Requests and output are in cli_http_test.cpp.

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "cli_parse_helpers.h"
#include "harness.h"
#include "muon/cli/commands.h"

namespace fs = std::filesystem;
using muon::cli::Invocation;
using muon::cli::ParseArgs;
using muon::cli::UsageError;

namespace {

using muon::cli::testing::As;
using muon::cli::testing::Problem;

std::string NotARepo(const std::string& name, const std::string& what = "") {
  return (what.empty() ? "" : what + ": ") + "'" + name +
         "' is not a GitHub repository as OWNER/NAME (each part 1 to 100 letters, digits, '.', "
         "'_', '-'; not . or ..)";
}

}  // namespace

TEST_CASE("cli repos: OWNER/NAME", "[cli]") {
  using muon::cli::IsValidRepoName;
  for (const std::string& name :
       std::vector<std::string>{"acme/shop", "a/b", "Acme-Corp/shop.web_2", "o/.github", "o/..x",
                                "x.y/...", std::string(100, 'o') + "/" + std::string(100, 'n')}) {
    INFO(name);
    CHECK(IsValidRepoName(name));
  }
  for (const std::string& name : std::vector<std::string>{
           "", "acme", "/shop", "acme/", "/", "acme/shop/x", "acme//shop", "./shop", "../shop",
           "acme/.", "acme/..", "ac me/shop", "acme/sh*p", "acme/shöp", "acme/shop\n", "acme\\shop",
           std::string(101, 'o') + "/n", "o/" + std::string(101, 'n')}) {
    INFO(name);
    CHECK_FALSE(IsValidRepoName(name));
  }
}

TEST_CASE("cli repos: list, add, remove, rotate-secret", "[cli]") {
  As<muon::cli::ReposListCmd>({"repos"});
  As<muon::cli::ReposListCmd>({"repos", "list"});
  As<muon::cli::ReposListCmd>({"repos", "-o", "json"});

  auto add = As<muon::cli::ReposAddCmd>({"repos", "add", "acme/shop", "--secret-file", "s.txt"});
  CHECK(add.name == "acme/shop");
  CHECK(add.secret_file == "s.txt");
  CHECK(add.clone_url.empty());  // the server's default
  CHECK(add.branch.empty());
  add = As<muon::cli::ReposAddCmd>({"repos", "add", "--secret-file=s", "acme/shop", "--clone-url",
                                    "https://git.example.com/shop.git", "--branch", "trunk"});
  CHECK(add.name == "acme/shop");
  CHECK(add.secret_file == "s");
  CHECK(add.clone_url == "https://git.example.com/shop.git");
  CHECK(add.branch == "trunk");

  CHECK(Problem({"repos", "add"}) == "repos add: missing OWNER/NAME");
  CHECK(Problem({"repos", "add", "acme/shop"}) == "--secret-file is required");
  CHECK(Problem({"repos", "add", "acme/shop", "--secret-file", ""}) == "--secret-file is required");
  CHECK(Problem({"repos", "add", "acme", "--secret-file", "s"}) == NotARepo("acme"));
  CHECK(Problem({"repos", "add", "acme/shop/x", "--secret-file", "s"}) == NotARepo("acme/shop/x"));
  CHECK(Problem({"repos", "add", "acme/..", "--secret-file", "s"}) == NotARepo("acme/.."));
  CHECK(Problem({"repos", "add", "acme/shop", "--secret-file", "s", "--branch", ""}) ==
        "--branch: '' must be non-empty, without spaces or control characters");
  CHECK(Problem({"repos", "add", "acme/shop", "--secret-file", "s", "--clone-url", "a b"}) ==
        "--clone-url: 'a b' must be non-empty, without spaces or control characters");
  // The secret itself is never a command-line argument (it would end up in shell history).
  CHECK(Problem({"repos", "add", "acme/shop", "--secret", "hunter2"}) ==
        "repos add: unknown flag --secret");
  CHECK(Problem({"repos", "add", "acme/shop", "other/repo", "--secret-file", "s"}) ==
        "repos add: unexpected argument 'other/repo'");

  CHECK(As<muon::cli::ReposRemoveCmd>({"repos", "remove", "acme/shop"}).name == "acme/shop");
  CHECK(Problem({"repos", "remove"}) == "repos remove: missing OWNER/NAME");
  CHECK(Problem({"repos", "remove", "acme"}) == NotARepo("acme"));

  auto rotate = As<muon::cli::ReposRotateSecretCmd>(
      {"repos", "rotate-secret", "acme/shop", "--secret-file", "new.txt"});
  CHECK(rotate.name == "acme/shop");
  CHECK(rotate.secret_file == "new.txt");
  CHECK(rotate.grace.empty());  // the server's 24h
  for (const std::string grace : {"24h", "1h30m", "7d", "90s", "0s"}) {
    INFO(grace);
    CHECK(As<muon::cli::ReposRotateSecretCmd>(
              {"repos", "rotate-secret", "acme/shop", "--secret-file", "n", "--grace", grace})
              .grace == grace);
  }
  for (const std::string grace : {"", "24", "tomorrow", "-1h", "1h-", "24 h"}) {
    INFO(grace);
    CHECK(Problem({"repos", "rotate-secret", "acme/shop", "--secret-file", "n", "--grace",
                   grace}) == "--grace: '" + grace + "' is not a duration (e.g. 0s, 30m, 24h, 7d)");
  }
  CHECK(Problem({"repos", "rotate-secret", "acme/shop"}) == "--secret-file is required");
  CHECK(Problem({"repos", "rotate-secret", "--secret-file", "n"}) ==
        "repos rotate-secret: missing OWNER/NAME");

  CHECK(Problem({"repos", "delete", "acme/shop"}) ==
        "unknown command 'muon repos delete' (expected one of: list, add, remove, rotate-secret, "
        "sync)");
}

TEST_CASE("cli repos: deliveries", "[cli]") {
  auto d = As<muon::cli::DeliveriesCmd>({"deliveries"});
  CHECK(d.repo.empty());
  CHECK(d.limit == 0);  // the server's default (50)
  d = As<muon::cli::DeliveriesCmd>({"deliveries", "--repo", "acme/shop", "-n", "20"});
  CHECK(d.repo == "acme/shop");
  CHECK(d.limit == 20);
  CHECK(As<muon::cli::DeliveriesCmd>({"deliveries", "--lines=1000"}).limit == 1000);
  CHECK(As<muon::cli::DeliveriesCmd>({"deliveries", "-n", "1"}).limit == 1);

  for (const std::string n : {"0", "1001", "-1", "ten", "", "5x"}) {
    INFO(n);
    CHECK(Problem({"deliveries", "-n", n}) ==
          "-n: '" + n + "' is not a number of deliveries from 1 to 1000");
  }
  CHECK(Problem({"deliveries", "--repo", "shop"}) == NotARepo("shop", "--repo"));
  CHECK(Problem({"deliveries", "--repo", ""}) == NotARepo("", "--repo"));
  CHECK(Problem({"deliveries", "acme/shop"}) == "deliveries: unexpected argument 'acme/shop'");
  CHECK(Problem({"deliveries", "-n"}) == "deliveries: flag --lines needs a value (N)");
}

TEST_CASE("cli repos: help", "[cli]") {
  const auto main_help = As<muon::cli::HelpCmd>({"--help"}).text;
  for (const char* command :
       {"repos list", "repos add", "repos remove", "repos rotate-secret", "deliveries"}) {
    INFO(command);
    CHECK(main_help.find(std::string("\n  ") + command + " ") != std::string::npos);
  }
  CHECK(As<muon::cli::HelpCmd>({"repos", "add", "--help"})
            .text.rfind("usage: muon repos add OWNER/NAME --secret-file F [--clone-url URL] "
                        "[--branch B]",
                        0) == 0);
  CHECK(As<muon::cli::HelpCmd>({"help", "repos", "rotate-secret"})
            .text.rfind("usage: muon repos rotate-secret OWNER/NAME --secret-file F [--grace D]",
                        0) == 0);
  CHECK(As<muon::cli::HelpCmd>({"help", "repos"}).text.rfind("usage: muon repos list", 0) == 0);
  CHECK(As<muon::cli::HelpCmd>({"deliveries", "-h"})
            .text.rfind("usage: muon deliveries [--repo OWNER/NAME] [--lines N]", 0) == 0);
}

TEST_CASE("cli repos: the secret in a --secret-file", "[cli]") {
  using muon::cli::SecretFromFileText;
  std::string problem;
  CHECK(SecretFromFileText("s3cret", &problem) == std::optional<std::string>("s3cret"));
  CHECK(SecretFromFileText("s3cret\n", &problem) == std::optional<std::string>("s3cret"));
  CHECK(SecretFromFileText("s3cret\r\n", &problem) == std::optional<std::string>("s3cret"));
  CHECK(SecretFromFileText("s3cret\n\n", &problem) == std::optional<std::string>("s3cret"));
  // Only line breaks at the end go; spaces are part of the secret.
  CHECK(SecretFromFileText(" s3 cret \n", &problem) == std::optional<std::string>(" s3 cret "));

  CHECK_FALSE(SecretFromFileText("", &problem));
  CHECK(problem == "it is empty");
  CHECK_FALSE(SecretFromFileText("\r\n", &problem));
  CHECK(problem == "it is empty");
  CHECK_FALSE(SecretFromFileText("one\ntwo\n", &problem));
  CHECK(problem == "it has more than one line (the secret is one line, as set on GitHub)");
  CHECK_FALSE(SecretFromFileText(std::string("a\0b", 3), &problem));
  CHECK(problem == "it contains a NUL byte");
  CHECK_FALSE(SecretFromFileText("x\n", nullptr) == std::nullopt);
}

TEST_CASE("cli repos: reading a --secret-file", "[cli]") {
  using muon::cli::ReadSecretFile;
  muon::testing::TempDir dir("muon-test-cli-repos");
  auto write = [&](const std::string& name, const std::string& content) {
    const std::string path = (fs::path(dir.path()) / name).string();
    std::ofstream(path, std::ios::binary) << content;
    return path;
  };
  std::string problem;
  CHECK(ReadSecretFile(write("ok", "hunter2\n"), &problem) ==
        std::optional<std::string>("hunter2"));

  const std::string empty = write("empty", "");
  CHECK_FALSE(ReadSecretFile(empty, &problem));
  CHECK(problem == "--secret-file: cannot use '" + empty + "': it is empty");

  const std::string missing = (fs::path(dir.path()) / "missing").string();
  CHECK_FALSE(ReadSecretFile(missing, &problem));
  CHECK(problem == "--secret-file: cannot use '" + missing + "': No such file or directory");

  CHECK_FALSE(ReadSecretFile(dir.path(), &problem));
  CHECK(problem == "--secret-file: cannot use '" + dir.path() + "': it is a directory");

  const std::string big = write("big", std::string((64 << 10) + 1, 'x'));
  CHECK_FALSE(ReadSecretFile(big, &problem));
  CHECK(problem == "--secret-file: cannot use '" + big + "': it is larger than 64 KiB");
  CHECK(ReadSecretFile(write("max", std::string(64 << 10, 'x')), &problem) ==
        std::optional<std::string>(std::string(64 << 10, 'x')));

  // The problem names the file and the reason, never the content.
  const std::string two = write("two", "first-secret\nsecond\n");
  CHECK_FALSE(ReadSecretFile(two, &problem));
  CHECK(problem.find("first-secret") == std::string::npos);
}

TEST_CASE("muon repos sync takes OWNER/NAME and an optional --branch", "[cli]") {
  const auto sync = As<muon::cli::ReposSyncCmd>({"repos", "sync", "acme/shop"});
  CHECK(sync.name == "acme/shop");
  CHECK(sync.branch.empty());
  CHECK(As<muon::cli::ReposSyncCmd>({"repos", "sync", "acme/shop", "--branch", "release"}).branch ==
        "release");
  CHECK(Problem({"repos", "sync", "acme"}) == NotARepo("acme"));
  CHECK(Problem({"repos", "sync"}) == "repos sync: missing OWNER/NAME");
}
