// The CLI's files and ingress resolution: config dir, atomic 0600 writes, stack.env, which
// ingress a command talks to, URL parsing, and when a token is refreshed.

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "harness.h"
#include "muon/cli/exit_codes.h"
#include "muon/cli/http_client.h"
#include "muon/cli/store.h"

namespace fs = std::filesystem;
using muon::cli::CliError;
using muon::cli::Environment;
using muon::cli::Store;

namespace {

unsigned Mode(const fs::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

std::string Slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void Spit(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

}  // namespace

TEST_CASE("cli: config dir follows XDG_CONFIG_HOME, then HOME", "[cli]") {
  CHECK(muon::cli::ConfigDir({{"XDG_CONFIG_HOME", "/x/cfg"}, {"HOME", "/home/a"}}) ==
        fs::path("/x/cfg/muon"));
  CHECK(muon::cli::ConfigDir({{"HOME", "/home/a"}}) == fs::path("/home/a/.config/muon"));
  // A relative XDG_CONFIG_HOME is invalid per the XDG spec and ignored.
  CHECK(muon::cli::ConfigDir({{"XDG_CONFIG_HOME", "rel"}, {"HOME", "/home/a"}}) ==
        fs::path("/home/a/.config/muon"));
  CHECK_THROWS_AS(muon::cli::ConfigDir({}), CliError);
}

TEST_CASE("cli: credentials are written 0600 in a 0700 dir, atomically", "[cli]") {
  muon::testing::TempDir tmp{"muon-test-cli"};
  const fs::path dir = fs::path(tmp.path()) / "xdg" / "muon";
  Store store(dir);
  // Whatever the umask, the modes are exact.
  const mode_t old_umask = ::umask(0);
  muon::cli::v1::Credentials creds;
  auto& c = (*creds.mutable_envs())["eu"];
  c.set_access_token("access-1");
  c.set_refresh_token("refresh-1");
  c.set_expires_at(1700000900);
  c.set_email("a@example.com");
  c.set_region("eu");
  store.SaveCredentials(creds);
  ::umask(old_umask);

  CHECK(Mode(dir) == 0700);
  CHECK(Mode(store.credentials_path()) == 0600);
  const auto loaded = store.LoadCredentials();
  REQUIRE(loaded.envs().count("eu") == 1);
  CHECK(loaded.envs().at("eu").refresh_token() == "refresh-1");
  CHECK(loaded.envs().at("eu").expires_at() == 1700000900);

  // Atomic replacement: a new inode is renamed over the old one, so a reader holding the old
  // file (here: a hard link to it) sees the old content whole, never a half-written file.
  const fs::path old_link = fs::path(tmp.path()) / "old-credentials";
  fs::create_hard_link(store.credentials_path(), old_link);
  c.set_refresh_token("refresh-2");
  store.SaveCredentials(creds);
  CHECK(Slurp(old_link).find("refresh-1") != std::string::npos);
  CHECK(Slurp(store.credentials_path()).find("refresh-2") != std::string::npos);
  CHECK(Mode(store.credentials_path()) == 0600);
  // No temporary files left behind.
  for (const auto& entry : fs::directory_iterator(dir)) {
    CHECK(entry.path().filename().string().find(".tmp-") == std::string::npos);
  }

  // A pre-existing dir with loose permissions is tightened.
  fs::permissions(dir, fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
  store.SaveConfig(muon::cli::v1::Config());
  CHECK(Mode(dir) == 0700);
  CHECK(Mode(store.config_path()) == 0600);
}

TEST_CASE("cli: missing files read as empty, corrupt ones name the file", "[cli]") {
  muon::testing::TempDir tmp{"muon-test-cli"};
  Store store(fs::path(tmp.path()) / "muon");
  CHECK(store.LoadConfig().envs_size() == 0);
  CHECK(store.LoadCredentials().envs().empty());
  Spit(store.config_path(), "{not json");
  try {
    store.LoadConfig();
    FAIL("expected CliError");
  } catch (const CliError& e) {
    CHECK(std::string(e.what()).find(store.config_path().string()) != std::string::npos);
    CHECK(std::string(e.what()).find("fix or delete the file") != std::string::npos);
  }
}

TEST_CASE("cli: the credentials lock can be taken again after release", "[cli]") {
  muon::testing::TempDir tmp{"muon-test-cli"};
  Store store(fs::path(tmp.path()) / "muon");
  { auto lock = store.LockCredentials(); }
  auto again = store.LockCredentials();
  CHECK(Mode(fs::path(tmp.path()) / "muon" / "credentials.lock") == 0600);
}

TEST_CASE("cli: stack.env parsing", "[cli]") {
  const auto values = muon::cli::ParseStackEnv(
      "# written by scripts/up\n"
      "NATS_URL=nats://127.0.0.1:4222\n"
      "\n"
      "MUON_INGRESS_URL=http://127.0.0.1:8080\r\n"
      "export MUON_REGION=\"local\"\n"
      "  SPACED = 'quoted value' \n"
      "EMPTY=\n"
      "=novalue\n"
      "garbage line\n"
      "URL_WITH_EQ=postgres://u@h/db?sslmode=disable&x=1");
  CHECK(values.at("NATS_URL") == "nats://127.0.0.1:4222");
  CHECK(values.at("MUON_INGRESS_URL") == "http://127.0.0.1:8080");
  CHECK(values.at("MUON_REGION") == "local");
  CHECK(values.at("SPACED") == "quoted value");
  CHECK(values.at("EMPTY").empty());
  CHECK(values.at("URL_WITH_EQ") == "postgres://u@h/db?sslmode=disable&x=1");
  CHECK(values.size() == 6);
}

TEST_CASE("cli: which stack.env", "[cli]") {
  muon::testing::TempDir tmp{"muon-test-cli"};
  const fs::path repo = fs::path(tmp.path()) / "repo";
  fs::create_directories(repo / ".git");
  fs::create_directories(repo / "services" / "echo");
  CHECK(muon::cli::GitToplevel(repo / "services" / "echo") == repo);
  CHECK(muon::cli::StackEnvPath({}, repo / "services" / "echo") == repo / ".muon" / "stack.env");
  CHECK(muon::cli::StackEnvPath({{"MUON_STATE_DIR", "/var/muon"}}, repo) ==
        fs::path("/var/muon/stack.env"));
  CHECK(muon::cli::StackEnvPath({{"MUON_STATE_DIR", "state"}}, repo) ==
        repo / "state" / "stack.env");
}

TEST_CASE("cli: which ingress a command talks to", "[cli]") {
  muon::testing::TempDir tmp{"muon-test-cli"};
  const fs::path repo = fs::path(tmp.path()) / "repo";
  fs::create_directories(repo / ".git");
  muon::cli::v1::Config config;
  const Environment none;

  // Nothing anywhere: a usage error that says what to do.
  try {
    muon::cli::ResolveEndpoint(config, "", none, repo);
    FAIL("expected CliError");
  } catch (const CliError& e) {
    CHECK(e.exit_code() == muon::cli::kExitUsage);
    CHECK(std::string(e.what()).find("muon env add NAME URL") != std::string::npos);
  }

  // The local stack's stack.env.
  Spit(repo / ".muon" / "stack.env", "MUON_INGRESS_URL=http://127.0.0.1:8080\nMUON_REGION=local\n");
  auto ep = muon::cli::ResolveEndpoint(config, "", none, repo);
  CHECK(ep.name == "default");
  CHECK(ep.url.ToString() == "http://127.0.0.1:8080");
  CHECK(ep.region == "local");
  CHECK(ep.source == (repo / ".muon" / "stack.env").string());
  CHECK_FALSE(ep.configured);

  // MUON_INGRESS_URL beats stack.env.
  ep = muon::cli::ResolveEndpoint(
      config, "", {{"MUON_INGRESS_URL", "https://in.example.com/"}, {"MUON_REGION", "us"}}, repo);
  CHECK(ep.url.ToString() == "https://in.example.com");
  CHECK(ep.region == "us");
  CHECK(ep.source == "MUON_INGRESS_URL");
  CHECK_THROWS_AS(muon::cli::ResolveEndpoint(config, "", {{"MUON_INGRESS_URL", "ftp://x"}}, repo),
                  CliError);

  // A configured current env beats both.
  auto* eu = config.add_envs();
  eu->set_name("eu");
  eu->set_url("https://eu.example.com");
  eu->set_region("eu");
  auto* us = config.add_envs();
  us->set_name("us");
  us->set_url("https://us.example.com:8443");
  us->set_region("us-east");
  config.set_current_env("eu");
  ep = muon::cli::ResolveEndpoint(config, "", {{"MUON_INGRESS_URL", "http://x"}}, repo);
  CHECK(ep.name == "eu");
  CHECK(ep.configured);
  CHECK(ep.url.port == "443");

  // --env picks one for a single command; an unknown name is a usage error listing the known.
  ep = muon::cli::ResolveEndpoint(config, "us", none, repo);
  CHECK(ep.name == "us");
  CHECK(ep.url.ToString() == "https://us.example.com:8443");
  try {
    muon::cli::ResolveEndpoint(config, "ap", none, repo);
    FAIL("expected CliError");
  } catch (const CliError& e) {
    CHECK(e.exit_code() == muon::cli::kExitUsage);
    CHECK(std::string(e.what()).find("known: eu, us") != std::string::npos);
  }

  // login --region matches the region, else the name.
  CHECK(muon::cli::FindEnvForRegion(config, "us-east")->name() == "us");
  CHECK(muon::cli::FindEnvForRegion(config, "us")->name() == "us");
  CHECK(muon::cli::FindEnvForRegion(config, "eu")->name() == "eu");
  CHECK(muon::cli::FindEnvForRegion(config, "ap") == nullptr);
}

TEST_CASE("cli: ingress URLs", "[cli]") {
  auto url = muon::cli::ParseUrl("http://127.0.0.1:8080");
  REQUIRE(url);
  CHECK(url->scheme == "http");
  CHECK(url->host == "127.0.0.1");
  CHECK(url->port == "8080");
  CHECK(url->prefix.empty());
  CHECK_FALSE(url->tls());

  url = muon::cli::ParseUrl("HTTPS://Ingress.example.com/muon/");
  REQUIRE(url);
  CHECK(url->tls());
  CHECK(url->port == "443");
  CHECK(url->prefix == "/muon");
  CHECK(url->ToString() == "https://Ingress.example.com/muon");

  url = muon::cli::ParseUrl("http://[::1]:9000");
  REQUIRE(url);
  CHECK(url->host == "::1");
  CHECK(url->ToString() == "http://[::1]:9000");

  std::string error;
  CHECK_FALSE(muon::cli::ParseUrl("127.0.0.1:8080", &error));
  CHECK(error == "expected http://host[:port] or https://host[:port]");
  CHECK_FALSE(muon::cli::ParseUrl("ftp://x", &error));
  CHECK(error == "unsupported scheme 'ftp' (use http or https)");
  CHECK_FALSE(muon::cli::ParseUrl("http://x:0", &error));
  CHECK(error == "bad port '0'");
  CHECK_FALSE(muon::cli::ParseUrl("http://x:99999", &error));
  CHECK_FALSE(muon::cli::ParseUrl("http://:80", &error));
  CHECK(error == "missing host");
  CHECK_FALSE(muon::cli::ParseUrl("http://u:p@x", &error));
  CHECK(error == "user info is not allowed");
  CHECK_FALSE(muon::cli::ParseUrl("http://x/?a=1", &error));
  CHECK_FALSE(muon::cli::ParseUrl("http://x y", &error));
  CHECK_FALSE(muon::cli::ParseUrl("http://::1", &error));
  CHECK(error == "an IPv6 address must be in brackets");
}

TEST_CASE("cli: refresh decision", "[cli]") {
  const int64_t now = 1700000000;
  CHECK_FALSE(muon::cli::NeedsRefresh(now + 900, now));  // fresh
  CHECK_FALSE(muon::cli::NeedsRefresh(now + 61, now));
  CHECK(muon::cli::NeedsRefresh(now + 60, now));  // within the 60 s margin
  CHECK(muon::cli::NeedsRefresh(now + 1, now));
  CHECK(muon::cli::NeedsRefresh(now, now));         // expires now
  CHECK(muon::cli::NeedsRefresh(now - 3600, now));  // long expired
  CHECK(muon::cli::NeedsRefresh(0, now));           // unknown expiry
  CHECK_FALSE(muon::cli::NeedsRefresh(now + 10, now, 5));
}
