// The whole CLI in-process against a tiny Beast server on 127.0.0.1 (a real socket, one acceptor
// thread): requests as the ingress sees them, platform errors printed with their exit codes,
// token refresh, login, logout, timeouts. Readiness needs no sleeps: the acceptor listens before
// the CLI connects.

#include <sys/stat.h>
#include <unistd.h>

// clang-format off
#include <utility>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
// clang-format on
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "muon/cli/app.h"
#include "muon/cli/exit_codes.h"
#include "muon/cli/store.h"

namespace fs = std::filesystem;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

constexpr int64_t kNow = 1700000000;

struct Seen {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

struct Reply {
  int status = 200;
  std::string body;
  std::map<std::string, std::string> headers;
  bool hang = false;  // read the request, answer nothing, wait for the client to give up
};

Reply Json(int status, std::string body) {
  Reply r;
  r.status = status;
  r.body = std::move(body);
  r.headers["Content-Type"] = "application/json";
  return r;
}

Reply PlatformError(int status, const std::string& id, const std::string& detail,
                    const std::string& status_text, const std::string& request_id) {
  Reply r = Json(status, R"({"id":")" + id + R"(","code":)" + std::to_string(status) +
                             R"(,"detail":")" + detail + R"(","status":")" + status_text + R"("})");
  r.headers["Muon-Request-Id"] = request_id;
  return r;
}

// Serves one canned reply per connection, in order, on 127.0.0.1:<ephemeral>.
class TestServer {
 public:
  // With `tls`, every connection is TLS with that server context.
  explicit TestServer(std::vector<Reply> replies, asio::ssl::context* tls = nullptr)
      : replies_(std::move(replies)),
        tls_(tls),
        acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { Serve(); });
  }
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;
  ~TestServer() {
    stopping_ = true;
    // Wake the blocking accept with a connection of our own.
    {
      asio::io_context wake_ioc;
      tcp::socket wake(wake_ioc);
      boost::system::error_code ec;
      wake.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ec);
    }
    thread_.join();
  }

  std::string url() const {
    return (tls_ != nullptr ? "https" : "http") + std::string("://127.0.0.1:") +
           std::to_string(port_);
  }
  unsigned short port() const { return port_; }
  std::vector<Seen> seen() const {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  void Serve() {
    for (size_t served = 0;; ++served) {
      tcp::socket socket(ioc_);
      boost::system::error_code ec;
      acceptor_.accept(socket, ec);
      if (ec || stopping_) return;
      if (tls_ == nullptr) {
        ServeOne(socket, served);
        continue;
      }
      asio::ssl::stream<tcp::socket> stream(std::move(socket), *tls_);
      stream.handshake(asio::ssl::stream_base::server, ec);
      if (ec) continue;  // the client refused our certificate
      ServeOne(stream, served);
    }
  }

  template <typename Stream>
  void ServeOne(Stream& stream, size_t served) {
    boost::system::error_code ec;
    beast::flat_buffer buffer;
    http::request<http::string_body> req;
    http::read(stream, buffer, req, ec);
    if (ec) return;
    Seen seen{std::string(req.method_string()), std::string(req.target()), {}, req.body()};
    for (const auto& field : req) {
      std::string name(field.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      seen.headers[name] = std::string(field.value());
    }
    {
      std::lock_guard lock(mu_);
      seen_.push_back(std::move(seen));
    }
    const Reply reply =
        served < replies_.size() ? replies_[served] : Json(500, R"({"detail":"unexpected"})");
    if (reply.hang) {
      // Blocks until the client closes the connection.
      char byte;
      stream.read_some(asio::buffer(&byte, 1), ec);
      return;
    }
    http::response<http::string_body> res(static_cast<http::status>(reply.status), 11);
    for (const auto& [name, value] : reply.headers) res.set(name, value);
    res.body() = reply.body;
    res.keep_alive(false);
    res.prepare_payload();
    http::write(stream, res, ec);
    beast::get_lowest_layer(stream).shutdown(tcp::socket::shutdown_both, ec);
  }

  std::vector<Reply> replies_;
  asio::ssl::context* tls_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  unsigned short port_ = 0;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::vector<Seen> seen_;
  std::thread thread_;
};

class FakePrompter : public muon::cli::Prompter {
 public:
  explicit FakePrompter(std::vector<std::string> lines) : lines_(std::move(lines)) {}
  bool Interactive() const override { return true; }
  std::optional<std::string> ReadLine(std::string_view prompt, bool echo) override {
    prompts.emplace_back(std::string(prompt) + (echo ? "" : " (hidden)"));
    if (next_ >= lines_.size()) return std::nullopt;
    return lines_[next_++];
  }
  std::vector<std::string> prompts;

 private:
  std::vector<std::string> lines_;
  size_t next_ = 0;
};

// One CLI run with its own config dir.
struct Cli {
  muon::testing::TempDir home{"muon-test-cli-http"};
  std::ostringstream out;
  std::ostringstream err;
  std::istringstream in;
  std::string ingress_url;
  muon::cli::Prompter* prompter = nullptr;
  std::chrono::milliseconds slack = 2s;
  muon::cli::Environment extra_env;
  // Polls (muon wait, muon events -f) pause through this: no real sleeping; false stops.
  int pauses = 0;
  int max_pauses = 100;

  explicit Cli(std::string url) : ingress_url(std::move(url)) {}

  muon::cli::Store store() const {
    return muon::cli::Store(fs::path(home.path()) / "xdg" / "muon");
  }

  void LogIn(const std::string& access, const std::string& refresh, int64_t expires_at,
             const std::string& url = "") const {
    muon::cli::v1::Credentials creds;
    auto& c = (*creds.mutable_envs())["default"];
    c.set_access_token(access);
    c.set_refresh_token(refresh);
    c.set_expires_at(expires_at);
    c.set_email("dev@example.com");
    c.set_region("eu");
    c.set_url(url);
    store().SaveCredentials(creds);
  }

  int Run(const std::vector<std::string>& args, const std::string& stdin_text = "") {
    out.str("");
    err.str("");
    in.clear();
    in.str(stdin_text);
    muon::cli::Environment env = {{"XDG_CONFIG_HOME", (fs::path(home.path()) / "xdg").string()},
                                  {"MUON_INGRESS_URL", ingress_url},
                                  {"MUON_REGION", "local"}};
    env.insert(extra_env.begin(), extra_env.end());
    muon::cli::AppContext ctx{
        .out = out,
        .err = err,
        .in = in,
        .env = env,
        .cwd = fs::path(home.path()),
        .prompter = prompter,
        .now = [] { return kNow; },
        .timeout_slack = slack,
        .sleep = [this](std::chrono::milliseconds) { return ++pauses <= max_pauses; },
    };
    return muon::cli::RunCli(args, ctx);
  }
};

const char* kTokens =
    R"({"accessToken":"access-2","refreshToken":"refresh-2","expiresIn":"900","tokenType":"Bearer",)"
    R"("account":{"id":"a1","email":"dev@example.com","roles":["developer"]},"region":"eu"})";

}  // namespace

TEST_CASE("cli http: a call is sent as the ingress expects and its reply pretty-printed",
          "[cli][http]") {
  TestServer server(
      {Json(200, R"({"message":"hi","count":2})"), Json(200, R"({"message":"hi","count":2})")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);

  REQUIRE(cli.Run({"call", "echo", "Echo", R"({"message": "hi"})", "--version", "v7", "--timeout",
                   "1500ms"}) == 0);
  CHECK(cli.out.str() == "{\n \"count\": 2,\n \"message\": \"hi\"\n}\n");
  CHECK(cli.err.str().empty());

  REQUIRE(cli.Run({"--output", "json", "call", "echo", "Echo", "-"}, R"({"message":"hi"})") == 0);
  CHECK(cli.out.str() == "{\"count\":2,\"message\":\"hi\"}\n");

  const auto seen = server.seen();
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].method == "POST");
  CHECK(seen[0].target == "/v1/echo/Echo");
  CHECK(seen[0].body == R"({"message": "hi"})");  // byte for byte
  CHECK(seen[0].headers.at("content-type") == "application/json");
  CHECK(seen[0].headers.at("authorization") == "Bearer access-1");
  CHECK(seen[0].headers.at("muon-version") == "v7");
  CHECK(seen[0].headers.at("muon-timeout") == "1.5s");
  CHECK(seen[0].headers.at("host") == server.url().substr(7));
  CHECK(seen[1].body == R"({"message":"hi"})");
  CHECK(seen[1].headers.count("muon-version") == 0);
  CHECK(seen[1].headers.count("muon-timeout") == 0);
}

TEST_CASE("cli http: platform errors are printed with detail, code, request id and exit code",
          "[cli][http]") {
  TestServer server({PlatformError(403, "echo.Echo", "no rule allows echo.Echo for developer",
                                   "Forbidden", "req-42")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);
  CHECK(cli.Run({"call", "echo", "Echo"}) == 4);
  CHECK(cli.err.str() ==
        "error: no rule allows echo.Echo for developer (403 Forbidden, request req-42)\n");
  CHECK(cli.out.str().empty());
  REQUIRE(server.seen().size() == 1);
  CHECK(server.seen()[0].body == "{}");
}

TEST_CASE("cli http: each error class has its exit code", "[cli][http]") {
  struct Case {
    int status;
    const char* text;
    int exit_code;
  };
  const auto c =
      GENERATE(Case{400, "Bad Request", 6}, Case{401, "Unauthorized", 3}, Case{404, "Not Found", 5},
               Case{409, "Conflict", 6}, Case{413, "Payload Too Large", 6},
               Case{429, "Too Many Requests", 7}, Case{500, "Internal Server Error", 1},
               Case{503, "Service Unavailable", 7}, Case{504, "Gateway Timeout", 7});
  TestServer server({PlatformError(c.status, "nope.Do", "it failed", c.text, "r1")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);
  INFO("status " << c.status);
  CHECK(cli.Run({"call", "nope", "Do"}) == c.exit_code);
  const std::string expected =
      "error: it failed (" + std::to_string(c.status) + " " + c.text + ", request r1)\n";
  if (c.status == 401) {
    CHECK(cli.err.str() == expected + "hint: log in again with `muon login`\n");
  } else {
    CHECK(cli.err.str() == expected);
  }
}

TEST_CASE("cli http: an unreachable ingress is exit code 7 with a hint", "[cli][http]") {
  std::string url;
  {
    // A port that was just free: nothing listens there any more.
    asio::io_context ioc;
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    url = "http://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
  }
  Cli cli(url);
  CHECK(cli.Run({"call", "echo", "Echo"}) == 7);
  CHECK(cli.err.str().rfind("error: cannot reach the ingress at " + url + ": ", 0) == 0);
  CHECK(cli.err.str().find("(is the stack running? scripts/up)") != std::string::npos);
}

TEST_CASE("cli http: no reply within --timeout plus slack is exit code 7", "[cli][http]") {
  Reply hang;
  hang.hang = true;
  TestServer server({hang});
  Cli cli(server.url());
  cli.slack = 0ms;
  CHECK(cli.Run({"call", "echo", "Sleep", "--timeout", "200ms"}) == 7);
  CHECK(cli.err.str().rfind(
            "error: no response from the ingress at " + server.url() + " within 200ms", 0) == 0);
}

TEST_CASE("cli http: invalid JSON bodies never leave the machine", "[cli][http]") {
  TestServer server({});
  Cli cli(server.url());
  CHECK(cli.Run({"call", "echo", "Echo", R"({"message": )"}) == 2);
  CHECK(cli.err.str().rfind("error: the request body is not valid JSON: ", 0) == 0);
  CHECK(server.seen().empty());
}

TEST_CASE("cli http: a --version the ingress would refuse never leaves the machine",
          "[cli][http]") {
  TestServer server({});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);
  CHECK(cli.Run({"call", "echo", "Echo", "--version", "v1.2"}) == muon::cli::kExitUsage);
  CHECK(cli.err.str().rfind("error: --version: 'v1.2' is not a release label", 0) == 0);
  CHECK(cli.out.str().empty());
  CHECK(server.seen().empty());
}

TEST_CASE("cli http: an access token about to expire is refreshed first", "[cli][http]") {
  TestServer server({Json(200, kTokens), Json(200, R"({"message":"hi"})")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 30);
  REQUIRE(cli.Run({"call", "echo", "Echo"}) == 0);
  const auto seen = server.seen();
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].target == "/v1/auth/Refresh");
  CHECK(seen[0].body == R"({"refreshToken":"refresh-1"})");
  CHECK(seen[0].headers.count("authorization") == 0);
  CHECK(seen[1].target == "/v1/echo/Echo");
  CHECK(seen[1].headers.at("authorization") == "Bearer access-2");
  // The rotated refresh token is what is stored now.
  const auto creds = cli.store().LoadCredentials();
  const auto& c = creds.envs().at("default");
  CHECK(c.access_token() == "access-2");
  CHECK(c.refresh_token() == "refresh-2");
  CHECK(c.expires_at() == kNow + 900);
}

TEST_CASE("cli http: a refused refresh asks to log in again", "[cli][http]") {
  TestServer server(
      {PlatformError(401, "auth.Refresh", "refresh token revoked", "Unauthorized", "r9")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow - 5);
  CHECK(cli.Run({"whoami"}) == 3);
  CHECK(cli.err.str() ==
        "error: the session for default has ended: refresh token revoked (401 Unauthorized, "
        "request r9)\nhint: log in again with `muon login`\n");
  CHECK(server.seen().size() == 1);
  CHECK(cli.store().LoadCredentials().envs().count("default") == 0);
}

TEST_CASE("cli http: commands that need a session say so without a round trip", "[cli][http]") {
  TestServer server({});
  Cli cli(server.url());
  CHECK(cli.Run({"services"}) == 3);
  CHECK(cli.err.str() ==
        "error: not logged in to default (" + server.url() + "): run `muon login`\n");
  CHECK(server.seen().empty());
}

TEST_CASE("cli http: login with --password-stdin stores the session 0600", "[cli][http]") {
  TestServer server({Json(200, kTokens)});
  Cli cli(server.url());
  REQUIRE(cli.Run({"login", "--email", "dev@example.com", "--password-stdin"}, "s3cret pw\n") == 0);
  CHECK(cli.out.str() == "Logged in to default (" + server.url() +
                             ") as dev@example.com, region eu; token valid 15m\n");
  const auto seen = server.seen();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].target == "/v1/auth/Login");
  CHECK(seen[0].body == R"({"email":"dev@example.com","password":"s3cret pw"})");
  struct stat st {};
  REQUIRE(::stat(cli.store().credentials_path().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  const auto creds = cli.store().LoadCredentials();
  const auto& c = creds.envs().at("default");
  CHECK(c.refresh_token() == "refresh-2");
  CHECK(c.region() == "eu");
  CHECK(c.url() == server.url());
}

TEST_CASE("cli http: login prompts on a terminal, password hidden", "[cli][http]") {
  TestServer server({Json(200, kTokens)});
  Cli cli(server.url());
  FakePrompter prompter({"dev@example.com", "pw"});
  cli.prompter = &prompter;
  REQUIRE(cli.Run({"login"}) == 0);
  CHECK(prompter.prompts == std::vector<std::string>{"Email: ", "Password:  (hidden)"});
  CHECK(server.seen().at(0).body == R"({"email":"dev@example.com","password":"pw"})");
}

TEST_CASE("cli http: wrong password is exit code 3 with the platform's detail", "[cli][http]") {
  TestServer server(
      {PlatformError(401, "auth.Login", "wrong email or password", "Unauthorized", "r2")});
  Cli cli(server.url());
  CHECK(cli.Run({"login", "--email", "dev@example.com", "--password-stdin"}, "nope\n") == 3);
  CHECK(cli.err.str().rfind("error: wrong email or password (401 Unauthorized, request r2)\n", 0) ==
        0);
  CHECK(cli.store().LoadCredentials().envs().empty());
}

TEST_CASE("cli http: login without a terminal or --password-stdin is a usage error",
          "[cli][http]") {
  TestServer server({});
  Cli cli(server.url());
  CHECK(cli.Run({"login", "--email", "dev@example.com"}) == 2);
  CHECK(cli.err.str() ==
        "error: a password is needed and stdin is not a terminal: use --password-stdin\n");
  CHECK(server.seen().empty());
}

TEST_CASE("cli http: logout deletes the credentials even when the server fails", "[cli][http]") {
  TestServer server(
      {PlatformError(503, "auth.Logout", "no responders", "Service Unavailable", "r3")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);
  CHECK(cli.Run({"logout"}) == 0);
  CHECK(cli.err.str().find("warning: the ingress did not confirm the logout: no responders (503 "
                           "Service Unavailable, request r3)") != std::string::npos);
  CHECK(cli.out.str() == "Logged out of default (" + server.url() + ") locally.\n");
  CHECK(server.seen().at(0).body == R"({"refreshToken":"refresh-1"})");
  CHECK(cli.store().LoadCredentials().envs().empty());
}

TEST_CASE("cli http: whoami and services render tables", "[cli][http]") {
  TestServer server(
      {Json(200, R"({"id":"a1","email":"dev@example.com","name":"Dev","roles":["developer","ops"],)"
                 R"("createdRegion":"us"})"),
       Json(200,
            R"({"services":[{"name":"echo","description":"echo",)"
            R"("instances":[{"id":"i1","version":"v2","metadata":{}},{"id":"i2","version":"v1"}],)"
            R"("endpoints":[{"name":"Echo","subject":"svc.echo.Echo","queueGroup":"echo"},)"
            R"({"name":"Sleep","subject":"svc.echo.Sleep","queueGroup":"echo"},)"
            R"({"name":"Echo","subject":"ver.echo.v2.Echo","queueGroup":"echo"}],"extra":1}]})")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);
  REQUIRE(cli.Run({"whoami"}) == 0);
  CHECK(cli.out.str() ==
        "email:     dev@example.com\n"
        "name:      Dev\n"
        "roles:     developer, ops\n"
        "account:   a1, created in region us\n"
        "env:       default (" +
            server.url() +
            ")\n"
            "token:     region eu, expires 2023-11-14 22:23:20 UTC (in 10m)\n");
  REQUIRE(cli.Run({"services"}) == 0);
  CHECK(cli.out.str() ==
        "NAME   VERSIONS   INSTANCES   ENDPOINTS\n"
        "echo   v1,v2      2           Echo,Sleep\n");
  CHECK(server.seen().at(1).method == "GET");
  CHECK(server.seen().at(1).target == "/v1/services");
}

TEST_CASE("cli http: invites create prints the code and the signup command", "[cli][http]") {
  TestServer server({Json(200, R"({"id":"i1","code":"K7Q2-XY","email":"new@example.com",)"
                               R"("roles":["developer"],"expiresAt":"2023-11-21T22:13:20Z"})")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);
  REQUIRE(cli.Run({"invites", "create", "new@example.com", "--role", "developer", "--ttl",
                   "168h"}) == 0);
  CHECK(server.seen().at(0).target == "/v1/auth/CreateInvite");
  CHECK(server.seen().at(0).body ==
        R"({"email":"new@example.com","roles":["developer"],"ttlSeconds":"604800"})");
  CHECK(cli.out.str().find("Invite code: K7Q2-XY\n") != std::string::npos);
  CHECK(cli.out.str().find("  muon signup --invite K7Q2-XY --email new@example.com\n") !=
        std::string::npos);
}

// iss "eu", exp 1700000900 (kNow + 15m); the signature is not checked by the CLI.
const char* kJwt =
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImV1LTEiLCJ0eXAiOiJKV1QifQ."
    "eyJpc3MiOiJldSIsInN1YiI6ImExIiwiZW1haWwiOiJkZXZAZXhhbXBsZS5jb20iLCJyb2xlcyI6WyJkZXZlbG9wZXIi"
    "XSwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDA5MDAsImp0aSI6ImoxIn0.c2ln";

TEST_CASE("cli http: a session is only sent to the ingress it came from", "[cli][http]") {
  TestServer server({});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600, "http://127.0.0.1:1");
  CHECK(cli.Run({"call", "echo", "Echo"}) == 3);
  CHECK(cli.err.str() ==
        "error: the session stored for default was obtained from "
        "http://127.0.0.1:1, not " +
            server.url() + ": log in again with `muon login`\n");
  CHECK(server.seen().empty());
}

TEST_CASE("cli http: MUON_TOKEN replaces the stored session; muon token prints it", "[cli][http]") {
  TestServer server({Json(200, R"({"id":"a1","email":"dev@example.com"})")});
  Cli cli(server.url());
  cli.extra_env["MUON_TOKEN"] = kJwt;
  REQUIRE(cli.Run({"whoami"}) == 0);
  CHECK(server.seen().at(0).headers.at("authorization") == std::string("Bearer ") + kJwt);
  // Region and expiry come from the token's claims when nothing was stored.
  CHECK(cli.out.str().find("token:     region eu, expires 2023-11-14 22:28:20 UTC (in 15m)\n") !=
        std::string::npos);
  REQUIRE(cli.Run({"token"}) == 0);
  CHECK(cli.out.str() == std::string(kJwt) + "\n");
}

TEST_CASE("cli http: muon token refreshes first", "[cli][http]") {
  TestServer server({Json(200, kTokens)});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 10);
  REQUIRE(cli.Run({"token"}) == 0);
  CHECK(cli.out.str() == "access-2\n");
  REQUIRE(cli.Run({"token", "--output", "json"}) == 0);
  CHECK(cli.out.str() == R"({"accessToken":"access-2","expiresAt":"2023-11-14T22:28:20Z"})"
                         "\n");
  CHECK(server.seen().size() == 1);
}

namespace {

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;

std::string BioText(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

// A self-signed certificate for IP 127.0.0.1 (and no host names), PEM.
struct SelfSigned {
  std::string cert_pem;
  std::string key_pem;

  SelfSigned() {
    PkeyPtr key(EVP_EC_gen("P-256"));
    REQUIRE(key);
    X509Ptr cert(X509_new());
    REQUIRE(cert);
    X509_set_version(cert.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
    REQUIRE(X509_set_pubkey(cert.get(), key.get()) == 1);
    X509_NAME* name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("muon test ingress"), -1, -1,
                               0);
    X509_set_issuer_name(cert.get(), name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, cert.get(), cert.get(), nullptr, nullptr, 0);
    for (const auto& [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1"},
                                     std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
      ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &v3, nid, value));
      REQUIRE(ext);
      REQUIRE(X509_add_ext(cert.get(), ext.get(), -1) == 1);
    }
    REQUIRE(X509_sign(cert.get(), key.get(), EVP_sha256()) > 0);
    BioPtr cert_bio(BIO_new(BIO_s_mem()));
    BioPtr key_bio(BIO_new(BIO_s_mem()));
    REQUIRE(PEM_write_bio_X509(cert_bio.get(), cert.get()) == 1);
    REQUIRE(PEM_write_bio_PrivateKey(key_bio.get(), key.get(), nullptr, nullptr, 0, nullptr,
                                     nullptr) == 1);
    cert_pem = BioText(cert_bio.get());
    key_pem = BioText(key_bio.get());
  }
};

}  // namespace

TEST_CASE("cli http: https verifies the ingress's certificate unless told not to",
          "[cli][http][tls]") {
  const SelfSigned pki;
  asio::ssl::context server_tls(asio::ssl::context::tls_server);
  server_tls.use_certificate_chain(asio::buffer(pki.cert_pem));
  server_tls.use_private_key(asio::buffer(pki.key_pem), asio::ssl::context::pem);
  TestServer server(
      {Json(200, R"({"ok":true})"), Json(200, R"({"ok":true})"), Json(200, R"({"ok":true})")},
      &server_tls);
  Cli cli(server.url());
  const fs::path ca = fs::path(cli.home.path()) / "ca.pem";
  std::ofstream(ca) << pki.cert_pem;

  SECTION("the system's CAs do not trust a self-signed certificate") {
    CHECK(cli.Run({"call", "echo", "Echo"}) == 1);
    CHECK(cli.err.str().find("certificate verify failed") != std::string::npos);
    CHECK(cli.err.str().find("MUON_CA_FILE") != std::string::npos);
    CHECK(server.seen().empty());
  }
  SECTION("MUON_CA_FILE trusts it") {
    cli.extra_env["MUON_CA_FILE"] = ca.string();
    CHECK(cli.Run({"call", "echo", "Echo"}) == 0);
    CHECK(cli.out.str() == "{\n \"ok\": true\n}\n");
  }
  SECTION("a trusted certificate for another name is still refused") {
    cli.extra_env["MUON_CA_FILE"] = ca.string();
    cli.ingress_url = "https://localhost:" + std::to_string(server.port());
    CHECK(cli.Run({"call", "echo", "Echo"}) == 1);
    CHECK(cli.err.str().find("TLS handshake with localhost:") != std::string::npos);
    CHECK(cli.err.str().find("the certificate is not valid for localhost") != std::string::npos);
    CHECK(server.seen().empty());
  }
  SECTION("--insecure and MUON_INSECURE=1 skip verification") {
    CHECK(cli.Run({"call", "echo", "Echo", "--insecure"}) == 0);
    cli.extra_env["MUON_INSECURE"] = "1";
    CHECK(cli.Run({"call", "echo", "Echo"}) == 0);
    CHECK(server.seen().size() == 2);
  }
  SECTION("a missing CA file is a clear error") {
    cli.extra_env["MUON_CA_FILE"] = (fs::path(cli.home.path()) / "nope.pem").string();
    CHECK(cli.Run({"call", "echo", "Echo"}) == 1);
    CHECK(cli.err.str().find("cannot load the CA file " +
                             (fs::path(cli.home.path()) / "nope.pem").string() +
                             ": No such file or directory") != std::string::npos);
  }
}

// ---- github-events: muon repos, muon deliveries ------------------------------------------------

TEST_CASE("cli http: repos add reads the secret file, sends AddRepo and prints the webhook",
          "[cli][http]") {
  TestServer server(
      {Json(200, R"({"name":"acme/shop","cloneUrl":"https://github.com/acme/shop.git",)"
                 R"("branch":"trunk","createdAt":"2023-11-14T22:13:20Z",)"
                 R"("secretUpdatedAt":"2023-11-14T22:13:20Z"})"),
       Json(200, R"({"name":"acme/web","branch":"main"})")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);
  const fs::path secret = fs::path(cli.home.path()) / "secret.txt";
  std::ofstream(secret) << "hunter2-webhook\r\n";

  REQUIRE(cli.Run({"repos", "add", "acme/shop", "--secret-file", secret.string(), "--branch",
                   "trunk"}) == 0);
  CHECK(cli.out.str() == "Added repo acme/shop (branch trunk). Point its GitHub webhook at " +
                             server.url() +
                             "/v1/github/events with content type application/json and this "
                             "secret.\n");
  CHECK(cli.err.str().empty());
  REQUIRE(cli.Run({"-o", "json", "repos", "add", "acme/web", "--secret-file", secret.string(),
                   "--clone-url", "git@github.com:acme/web.git"}) == 0);
  CHECK(cli.out.str() == "{\"branch\":\"main\",\"name\":\"acme/web\"}\n");

  const auto seen = server.seen();
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].method == "POST");
  CHECK(seen[0].target == "/v1/github-events/AddRepo");
  CHECK(seen[0].headers.at("content-type") == "application/json");
  CHECK(seen[0].headers.at("authorization") == "Bearer access-1");
  CHECK(seen[0].body == R"({"name":"acme/shop","secret":"hunter2-webhook","branch":"trunk"})");
  CHECK(
      seen[1].body ==
      R"({"name":"acme/web","secret":"hunter2-webhook","cloneUrl":"git@github.com:acme/web.git"})");
  CHECK(cli.out.str().find("hunter2") == std::string::npos);
}

TEST_CASE("cli http: a missing or empty secret file is a usage error before anything is sent",
          "[cli][http]") {
  TestServer server({});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);
  const fs::path missing = fs::path(cli.home.path()) / "missing.txt";
  CHECK(cli.Run({"repos", "add", "acme/shop", "--secret-file", missing.string()}) ==
        muon::cli::kExitUsage);
  CHECK(cli.err.str() ==
        "error: --secret-file: cannot use '" + missing.string() + "': No such file or directory\n");
  CHECK(cli.out.str().empty());

  const fs::path empty = fs::path(cli.home.path()) / "empty.txt";
  std::ofstream(empty) << "\n";
  CHECK(cli.Run({"repos", "rotate-secret", "acme/shop", "--secret-file", empty.string()}) ==
        muon::cli::kExitUsage);
  CHECK(cli.err.str() ==
        "error: --secret-file: cannot use '" + empty.string() + "': it is empty\n");

  // Also before the session is looked at: not logged in makes no difference.
  cli.store().SaveCredentials({});
  CHECK(cli.Run({"repos", "add", "acme/shop", "--secret-file", empty.string()}) ==
        muon::cli::kExitUsage);
  CHECK(cli.Run({"repos", "add", "acme", "--secret-file", empty.string()}) ==
        muon::cli::kExitUsage);
  CHECK(cli.err.str().rfind("error: 'acme' is not a GitHub repository as OWNER/NAME", 0) == 0);
  CHECK(server.seen().empty());
}

TEST_CASE("cli http: repos list, remove and rotate-secret", "[cli][http]") {
  const std::string repos =
      R"({"repos":[{"name":"acme/shop","cloneUrl":"https://github.com/acme/shop.git",)"
      R"("branch":"main","secretUpdatedAt":"2023-11-14T21:13:20Z",)"
      R"("previousSecretValidUntil":"2023-11-15T21:13:20Z","rejectedDeliveries":"3"},)"
      R"({"name":"acme/web","cloneUrl":"https://github.com/acme/web.git","branch":"trunk",)"
      R"("secretUpdatedAt":"2023-11-01T00:00:00Z",)"
      R"("previousSecretValidUntil":"2023-11-02T00:00:00Z"}]})";
  TestServer server(
      {Json(200, repos), Json(200, repos), Json(200, R"({"repos":[]})"), Json(200, "{}"),
       Json(200, R"({"name":"acme/shop","secretUpdatedAt":"2023-11-14T22:13:20Z",)"
                 R"("previousSecretValidUntil":"2023-11-14T23:13:20Z"})"),
       Json(200, R"({"name":"acme/shop"})"),
       PlatformError(404, "github-events.RotateSecret", "no repo acme/nope", "Not Found", "r5")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);
  const fs::path secret = fs::path(cli.home.path()) / "new.txt";
  std::ofstream(secret) << "n3w-secret\n";

  REQUIRE(cli.Run({"repos"}) == 0);
  // acme/web's previous secret expired long ago: nothing to show.
  CHECK(cli.out.str() ==
        "NAME        BRANCH   CLONE URL                          SECRET UPDATED            "
        "PREVIOUS SECRET UNTIL     REJECTED\n"
        "acme/shop   main     https://github.com/acme/shop.git   2023-11-14 21:13:20 UTC   "
        "2023-11-15 21:13:20 UTC   3\n"
        "acme/web    trunk    https://github.com/acme/web.git    2023-11-01 00:00:00 UTC   "
        "-                         0\n");
  REQUIRE(cli.Run({"repos", "list", "--output", "json"}) == 0);
  CHECK(cli.out.str().rfind("{\"repos\":[{\"branch\":\"main\",", 0) == 0);
  REQUIRE(cli.Run({"repos", "list"}) == 0);
  CHECK(cli.out.str() ==
        "No repos registered. Add one with: muon repos add OWNER/NAME --secret-file F\n");

  REQUIRE(cli.Run({"repos", "remove", "acme/web"}) == 0);
  CHECK(cli.out.str() ==
        "Removed repo acme/web. Its webhooks are refused from now on; delete the webhook on "
        "GitHub too.\n");

  REQUIRE(cli.Run({"repos", "rotate-secret", "acme/shop", "--secret-file", secret.string(),
                   "--grace", "1h"}) == 0);
  CHECK(cli.out.str() ==
        "Rotated the webhook secret of acme/shop. The old secret is accepted until 2023-11-14 "
        "23:13:20 UTC (in 1h): set the new one on the repository's GitHub webhook before then.\n");
  REQUIRE(cli.Run({"repos", "rotate-secret", "acme/shop", "--secret-file", secret.string(),
                   "--grace", "0s"}) == 0);
  CHECK(cli.out.str() ==
        "Rotated the webhook secret of acme/shop. The old secret is no longer accepted: set the "
        "new one on the repository's GitHub webhook now.\n");
  CHECK(cli.Run({"repos", "rotate-secret", "acme/nope", "--secret-file", secret.string()}) ==
        muon::cli::kExitNotFound);
  CHECK(cli.err.str() == "error: no repo acme/nope (404 Not Found, request r5)\n");

  const auto seen = server.seen();
  REQUIRE(seen.size() == 7);
  CHECK(seen[0].target == "/v1/github-events/ListRepos");
  CHECK(seen[0].body == "{}");
  CHECK(seen[3].target == "/v1/github-events/RemoveRepo");
  CHECK(seen[3].body == R"({"name":"acme/web"})");
  CHECK(seen[4].target == "/v1/github-events/RotateSecret");
  CHECK(seen[4].body == R"({"name":"acme/shop","secret":"n3w-secret","grace":"1h"})");
  CHECK(seen[5].body == R"({"name":"acme/shop","secret":"n3w-secret","grace":"0s"})");
  CHECK(seen[6].body == R"({"name":"acme/nope","secret":"n3w-secret"})");
}

TEST_CASE("cli http: deliveries, then the rejected ones", "[cli][http]") {
  const std::string page =
      R"({"deliveries":[)"
      R"({"deliveryId":"d-2","repo":"acme/shop","event":"push","status":"processed",)"
      R"("detail":"build b-7","receivedAt":"2023-11-14T22:10:00Z","ref":"refs/heads/main",)"
      R"("before":"0000000000000000000000000000000000000001",)"
      R"("after":"1a2b3c4d5e6f1a2b3c4d5e6f1a2b3c4d5e6f1a2b","bodyBytes":"7000"},)"
      R"({"deliveryId":"d-1","repo":"acme/shop","event":"ping","status":"ignored",)"
      R"("receivedAt":"2023-11-14T22:00:00Z"},)"
      R"({"deliveryId":"d-0","repo":"acme/shop","event":"push","status":"processed",)"
      R"("receivedAt":"2023-11-14T21:00:00Z","ref":"refs/heads/old",)"
      R"("after":"0000000000000000000000000000000000000000"}],)"
      R"("rejections":[{"repo":"acme/shop","reason":"bad signature","count":"4",)"
      R"("lastAt":"2023-11-14T22:12:00Z"},{"reason":"unknown repository","count":"1",)"
      R"("lastAt":"2023-11-14T20:00:00Z"}]})";
  TestServer server({Json(200, page), Json(200, page), Json(200, "{}")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);

  REQUIRE(cli.Run({"deliveries"}) == 0);
  CHECK(cli.out.str() ==
        "RECEIVED                  DELIVERY   REPO        EVENT   STATUS      DETAIL\n"
        "2023-11-14 22:10:00 UTC   d-2        acme/shop   push    processed   refs/heads/main "
        "1a2b3c4: build b-7\n"
        "2023-11-14 22:00:00 UTC   d-1        acme/shop   ping    ignored     -\n"
        "2023-11-14 21:00:00 UTC   d-0        acme/shop   push    processed   refs/heads/old "
        "deleted\n"
        "\n"
        "Rejected (not stored):\n"
        "REPO        REASON               COUNT   LAST\n"
        "acme/shop   bad signature        4       2023-11-14 22:12:00 UTC\n"
        "-           unknown repository   1       2023-11-14 20:00:00 UTC\n");
  REQUIRE(cli.Run({"deliveries", "--repo", "acme/shop", "-n", "2", "-o", "json"}) == 0);
  CHECK(cli.out.str().rfind("{\"deliveries\":[{\"after\":\"1a2b3c4d", 0) == 0);
  CHECK(cli.out.str().find("\"rejections\":[{\"count\":\"4\"") != std::string::npos);
  REQUIRE(cli.Run({"deliveries", "--repo", "acme/web"}) == 0);
  CHECK(cli.out.str() == "No deliveries for acme/web yet.\n");

  const auto seen = server.seen();
  REQUIRE(seen.size() == 3);
  CHECK(seen[0].target == "/v1/github-events/ListDeliveries");
  CHECK(seen[0].body == "{}");
  CHECK(seen[1].body == R"({"repo":"acme/shop","limit":2})");
  CHECK(seen[2].body == R"({"repo":"acme/web"})");
}

TEST_CASE("cli http: a rule that denies repos is exit code 4", "[cli][http]") {
  TestServer server(
      {PlatformError(403, "github-events.ListRepos",
                     "no rule allows github-events.ListRepos for developer", "Forbidden", "r1")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);
  CHECK(cli.Run({"repos"}) == muon::cli::kExitForbidden);
  CHECK(cli.err.str() ==
        "error: no rule allows github-events.ListRepos for developer (403 "
        "Forbidden, request r1)\n");
}

// ---- builder: muon builds, muon deploy -----------------------------------------------------

TEST_CASE("cli http: builds lists the newest builds with status, trigger and duration",
          "[cli][http]") {
  const std::string page =
      R"({"builds":[)"
      R"({"id":"b-00000000000d","repo":"acme/shop","service":"greeter","status":"queued",)"
      R"("commit":"9f8e7d6c5b4a39281706f5e4d3c2b1a098765432","trigger":"push d-9",)"
      R"("createdAt":"2023-11-14T22:13:00Z","attempts":0},)"
      R"({"id":"b-00000000000c","repo":"acme/shop","service":"greeter","status":"running",)"
      R"("commit":"1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d","trigger":"deploy dev@example.com",)"
      R"("createdAt":"2023-11-14T22:12:00Z","startedAt":"2023-11-14T22:12:20Z","attempts":1},)"
      R"({"id":"b-00000000000b","repo":"acme/shop","service":"web","status":"failed",)"
      R"("category":"timeout","commit":"1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d",)"
      R"("trigger":"push d-2","createdAt":"2023-11-14T22:00:00Z",)"
      R"("startedAt":"2023-11-14T22:00:05Z","finishedAt":"2023-11-14T22:10:05Z",)"
      R"("durationMs":"600000"},)"
      R"({"id":"b-00000000000a","repo":"acme/shop","service":"greeter","status":"succeeded",)"
      R"("commit":"0123456789abcdef0123456789abcdef01234567","trigger":"sync admin@example.com",)"
      R"("createdAt":"2023-11-14T21:00:00Z","startedAt":"2023-11-14T21:00:01Z",)"
      R"("finishedAt":"2023-11-14T21:00:01.400Z","durationMs":"400","reused":true,)"
      R"("artifactDigest":"ab12","artifactSize":"10"}]})";
  TestServer server({Json(200, page), Json(200, page), Json(200, "{}"), Json(200, "{}"),
                     Json(200, R"({"builds":[]})")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);

  REQUIRE(cli.Run({"builds"}) == 0);
  // Newest first, as listed; COMMIT is 12 characters; a failed build shows its category.
  CHECK(cli.out.str() ==
        "ID               SERVICE   COMMIT         STATUS             TRIGGER                  "
        "CREATED                   DURATION\n"
        "b-00000000000d   greeter   9f8e7d6c5b4a   queued             push d-9                 "
        "2023-11-14 22:13:00 UTC   -\n"
        "b-00000000000c   greeter   1a2b3c4d5e6f   running            deploy dev@example.com   "
        "2023-11-14 22:12:00 UTC   1m so far\n"
        "b-00000000000b   web       1a2b3c4d5e6f   failed (timeout)   push d-2                 "
        "2023-11-14 22:00:00 UTC   10m\n"
        "b-00000000000a   greeter   0123456789ab   succeeded          sync admin@example.com   "
        "2023-11-14 21:00:00 UTC   400ms\n");
  CHECK(cli.err.str().empty());
  REQUIRE(cli.Run({"builds", "list", "--service", "greeter", "-n", "4", "-o", "json"}) == 0);
  CHECK(cli.out.str().rfind("{\"builds\":[{\"attempts\":0,\"commit\":\"9f8e7d6c", 0) == 0);
  // No builds: what to do about it.
  REQUIRE(cli.Run({"builds"}) == 0);
  CHECK(cli.out.str() ==
        "No builds yet. Push to a registered repo (muon repos add), or run: muon deploy SERVICE "
        "--ref REF --repo OWNER/NAME\n");
  REQUIRE(cli.Run({"builds", "--service", "greeter"}) == 0);
  CHECK(cli.out.str() ==
        "No builds of greeter yet. Build it with: muon deploy greeter --ref REF --repo "
        "OWNER/NAME\n");
  REQUIRE(cli.Run({"builds", "--repo", "acme/web"}) == 0);
  CHECK(cli.out.str() ==
        "No builds from acme/web yet. Push to it, or run: muon deploy SERVICE --ref REF --repo "
        "acme/web\n");

  const auto seen = server.seen();
  REQUIRE(seen.size() == 5);
  CHECK(seen[0].method == "POST");
  CHECK(seen[0].target == "/v1/builder/ListBuilds");
  CHECK(seen[0].headers.at("authorization") == "Bearer access-1");
  CHECK(seen[0].body == "{}");
  CHECK(seen[1].body == R"({"service":"greeter","limit":4})");
  CHECK(seen[4].body == R"({"repo":"acme/web"})");
}

TEST_CASE("cli http: builds show prints a build; a failed one with its last lines", "[cli][http]") {
  const std::string succeeded =
      R"({"id":"b-00000000000a","repo":"acme/shop","folder":"services/greeter",)"
      R"("commit":"0123456789abcdef0123456789abcdef01234567","ref":"refs/heads/main",)"
      R"("service":"greeter","trigger":"push d-1","status":"succeeded",)"
      R"("artifactDigest":"ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12",)"
      R"("artifactSize":"13000000","reused":true,"attempts":1,)"
      R"("createdAt":"2023-11-14T21:00:00Z","startedAt":"2023-11-14T21:00:01Z",)"
      R"("finishedAt":"2023-11-14T21:01:06Z","durationMs":"65400"})";
  const std::string failed =
      R"({"id":"b-00000000000b","repo":"acme/shop","commit":"1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d",)"
      R"("service":"web","trigger":"deploy dev@example.com","status":"failed",)"
      R"("category":"build_failed","failedStep":"make","exitCode":2,)"
      R"("lastLines":["src/main.cpp:3: error: expected ';'","\u001b[31mmake: *** [all] Error 2"],)"
      R"("detail":"step make exited with code 2","attempts":2,)"
      R"("createdAt":"2023-11-14T22:00:00Z","startedAt":"2023-11-14T22:00:05Z",)"
      R"("finishedAt":"2023-11-14T22:00:35Z","durationMs":"30000"})";
  TestServer server({Json(200, succeeded), Json(200, failed), Json(200, succeeded),
                     PlatformError(404, "builder.GetBuild", "no build b-nope", "Not Found", "r7")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);

  REQUIRE(cli.Run({"builds", "show", "b-00000000000a"}) == 0);
  CHECK(cli.out.str() ==
        "id:         b-00000000000a\n"
        "service:    greeter\n"
        "repo:       acme/shop, folder services/greeter\n"
        "commit:     0123456789abcdef0123456789abcdef01234567\n"
        "ref:        refs/heads/main\n"
        "trigger:    push d-1\n"
        "status:     succeeded\n"
        "attempts:   1\n"
        "created:    2023-11-14 21:00:00 UTC\n"
        "started:    2023-11-14 21:00:01 UTC\n"
        "finished:   2023-11-14 21:01:06 UTC\n"
        "duration:   1m5s\n"
        "artifact:   sha256:ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12 "
        "(12.4 MiB), reused from an identical earlier build\n"
        "logs:       muon builds logs b-00000000000a\n");
  REQUIRE(cli.Run({"builds", "show", "b-00000000000b"}) == 0);
  CHECK(cli.out.str() ==
        "id:          b-00000000000b\n"
        "service:     web\n"
        "repo:        acme/shop\n"
        "commit:      1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d\n"
        "ref:         -\n"
        "trigger:     deploy dev@example.com\n"
        "status:      failed (build_failed)\n"
        "attempts:    2\n"
        "created:     2023-11-14 22:00:00 UTC\n"
        "started:     2023-11-14 22:00:05 UTC\n"
        "finished:    2023-11-14 22:00:35 UTC\n"
        "duration:    30s\n"
        "category:    build_failed\n"
        "step:        make\n"
        "exit code:   2\n"
        "detail:      step make exited with code 2\n"
        "last lines:\n"
        "  src/main.cpp:3: error: expected ';'\n"
        "   [31mmake: *** [all] Error 2\n"
        "logs:        muon builds logs b-00000000000b\n");
  REQUIRE(cli.Run({"builds", "show", "b-00000000000a", "--output", "json"}) == 0);
  CHECK(cli.out.str().rfind("{\"artifactDigest\":\"ab12cd34", 0) == 0);
  CHECK(cli.Run({"builds", "show", "b-nope"}) == muon::cli::kExitNotFound);
  CHECK(cli.err.str() == "error: no build b-nope (404 Not Found, request r7)\n");

  const auto seen = server.seen();
  REQUIRE(seen.size() == 4);
  CHECK(seen[0].target == "/v1/builder/GetBuild");
  CHECK(seen[0].body == R"({"id":"b-00000000000a"})");
  CHECK(seen[3].body == R"({"id":"b-nope"})");
}

TEST_CASE("cli http: deploy starts a build and says how to watch it", "[cli][http]") {
  const std::string queued =
      R"({"builds":[{"id":"b-00000000000e","repo":"acme/shop","service":"greeter",)"
      R"("commit":"1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d","ref":"refs/heads/main",)"
      R"("status":"queued","trigger":"deploy dev@example.com"}],)"
      R"("commit":"1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d"})";
  const std::string reused =
      R"({"builds":[{"id":"b-00000000000a","service":"greeter",)"
      R"("commit":"0123456789abcdef0123456789abcdef01234567","status":"succeeded",)"
      R"("artifactDigest":"ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12"}],)"
      R"("commit":"0123456789abcdef0123456789abcdef01234567"})";
  TestServer server({Json(200, queued), Json(200, reused), Json(200, queued),
                     PlatformError(404, "builder.StartBuild",
                                   "greeter was never built: name its repo (muon deploy greeter "
                                   "--ref main --repo owner/name)",
                                   "Not Found", "r8")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);

  REQUIRE(cli.Run({"deploy", "greeter", "--ref", "main", "--repo", "acme/shop"}) == 0);
  CHECK(cli.out.str() ==
        "ID               SERVICE   COMMIT         STATUS\n"
        "b-00000000000e   greeter   1a2b3c4d5e6f   queued\n"
        "\n"
        "Watch with:\n"
        "  muon builds show b-00000000000e\n"
        "  muon builds logs b-00000000000e -f\n"
        "\n"
        "When the build succeeds the scheduler makes a release of it and rolls it out:\n"
        "  muon wait greeter --build b-00000000000e\n"
        "  muon events greeter -f\n");
  CHECK(cli.err.str().empty());
  REQUIRE(cli.Run({"deploy", "greeter", "--ref", "0123456789abcdef0123456789abcdef01234567"}) == 0);
  CHECK(cli.out.str() ==
        "ID               SERVICE   COMMIT         STATUS\n"
        "b-00000000000a   greeter   0123456789ab   succeeded: reusing artifact ab12cd34ef56\n"
        "\n"
        "Details:\n"
        "  muon builds show b-00000000000a\n"
        "\n"
        "When the build succeeds the scheduler makes a release of it and rolls it out:\n"
        "  muon wait greeter --build b-00000000000a\n"
        "  muon events greeter -f\n");
  REQUIRE(cli.Run({"-o", "json", "deploy", "greeter", "--ref", "main"}) == 0);
  CHECK(cli.out.str().rfind("{\"builds\":[{\"commit\":\"1a2b3c4d", 0) == 0);
  CHECK(cli.Run({"deploy", "greeter", "--ref", "main"}) == muon::cli::kExitNotFound);
  CHECK(cli.err.str() ==
        "error: greeter was never built: name its repo (muon deploy greeter --ref main --repo "
        "owner/name) (404 Not Found, request r8)\n");

  const auto seen = server.seen();
  REQUIRE(seen.size() == 4);
  CHECK(seen[0].method == "POST");
  CHECK(seen[0].target == "/v1/builder/StartBuild");
  CHECK(seen[0].headers.at("authorization") == "Bearer access-1");
  CHECK(seen[0].body == R"({"repo":"acme/shop","ref":"main","service":"greeter"})");
  CHECK(seen[1].body ==
        R"({"ref":"0123456789abcdef0123456789abcdef01234567","service":"greeter"})");
}

TEST_CASE("cli http: bad deploy arguments are usage errors before anything is sent",
          "[cli][http]") {
  TestServer server({});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);
  CHECK(cli.Run({"deploy", "greeter", "--ref", "main", "--release", "v2"}) ==
        muon::cli::kExitUsage);
  CHECK(cli.err.str() ==
        "error: --ref and --release cannot be combined: --ref builds a new release, --release "
        "rolls out an existing one\n"
        "usage: muon deploy SERVICE [--ref REF] [--repo OWNER/NAME] [--release vN]\n"
        "(run `muon deploy --help` for details)\n");
  CHECK(cli.Run({"deploy", "a.b", "--ref", "main"}) == muon::cli::kExitUsage);
  CHECK(cli.Run({"builds", "show", "b/1"}) == muon::cli::kExitUsage);
  CHECK(cli.Run({"builds", "-n", "501"}) == muon::cli::kExitUsage);
  CHECK(server.seen().empty());
}

TEST_CASE("cli http: builds logs is muon logs --build, with and without -f", "[cli][http]") {
  const std::string page =
      R"({"lines":[{"time":"2023-11-14T22:00:06Z","service":"web","instance":"b-00000000000b",)"
      R"("source":"SOURCE_BUILD","severity":"SEVERITY_INFO","message":"make: ok"}]})";
  Reply tail;
  tail.status = 200;
  tail.headers["Content-Type"] = "text/event-stream";
  tail.body =
      "event: line\n"
      R"(data: {"time":"2023-11-14T22:00:06Z","service":"web","instance":"b-00000000000b",)"
      R"("source":"SOURCE_BUILD","severity":"SEVERITY_INFO","message":"make: ok"})"
      "\n\n: live\n\n";
  TestServer server({Json(200, page), Json(200, page), tail, tail,
                     PlatformError(403, "logs.Tail",
                                   "dev@example.com may not read every service's logs; name a "
                                   "service",
                                   "Forbidden", "r9")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);

  REQUIRE(cli.Run({"builds", "logs", "b-00000000000b"}) == 0);
  const std::string printed = cli.out.str();
  CHECK(printed.find("web/b-00000000000b") != std::string::npos);
  CHECK(printed.find("make: ok") != std::string::npos);
  REQUIRE(cli.Run({"logs", "--build", "b-00000000000b"}) == 0);
  CHECK(cli.out.str() == printed);
  // A follow ends when the ingress ends the stream (exit 7), after printing what came.
  CHECK(cli.Run({"builds", "logs", "b-00000000000b", "-f"}) == muon::cli::kExitUnavailable);
  CHECK(cli.out.str() == printed);
  CHECK(cli.Run({"logs", "--build", "b-00000000000b", "-f"}) == muon::cli::kExitUnavailable);
  CHECK(cli.err.str() ==
        "error: the ingress ended the tail (restarting or draining); run the command again\n");
  // An error reply to a tail (it has a Content-Length) is the platform's error, not a transport
  // failure.
  CHECK(cli.Run({"builds", "logs", "b-00000000000b", "-f"}) == muon::cli::kExitForbidden);
  CHECK(cli.err.str() ==
        "error: dev@example.com may not read every service's logs; name a service (403 "
        "Forbidden, request r9)\n");

  const auto seen = server.seen();
  REQUIRE(seen.size() == 5);
  CHECK(seen[0].method == "POST");
  CHECK(seen[0].target == "/v1/logs/Query");
  CHECK(seen[1].target == seen[0].target);
  CHECK(seen[1].body == seen[0].body);
  CHECK(seen[0].body.find(R"("instance":"b-00000000000b")") != std::string::npos);
  CHECK(seen[0].body.find(R"("source":"SOURCE_BUILD")") != std::string::npos);
  CHECK(seen[2].method == "GET");
  CHECK(seen[2].target == "/v1/logs/tail?n=100&instance=b-00000000000b&source=build");
  CHECK(seen[3].target == seen[2].target);
}

// ---- scheduler: receipts, muon wait, muon exec, muon events -f -----------------------------

TEST_CASE("cli http: scheduler mutations send their request and print the receipt",
          "[cli][http][scheduler]") {
  const std::string receipt =
      R"({"service":"greeter","summary":"deploy greeter v3","changes":["release: v5 -> v3"],)"
      R"("release":{"version":6,"artifactDigest":"ab12cd34ef56ab12","commit":"1a2b3c4d5e6f",)"
      R"("reason":"redeploy","fromVersion":3,"status":"pending"},"rolloutId":"9"})";
  TestServer server({Json(200, receipt), Json(200, R"({"service":"greeter","summary":"ok"})"),
                     Json(200, R"({"service":"greeter","summary":"secret set"})"),
                     Json(200, R"({"service":"greeter"})")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);

  REQUIRE(cli.Run({"deploy", "greeter", "--release", "v3"}) == 0);
  CHECK(cli.out.str() ==
        "deploy greeter v3\n"
        "  release: v5 -> v3\n"
        "release: v6  artifact ab12cd34ef56  commit 1a2b3c4  reason redeploy of v3  (pending)\n"
        "rollout: #9\n"
        "\n"
        "Watch with:\n"
        "  muon wait greeter\n"
        "  muon events greeter -f\n");
  REQUIRE(cli.Run({"env", "set", "greeter", "LOG_LEVEL=debug", "--no-deploy"}) == 0);
  REQUIRE(cli.Run({"secrets", "set", "greeter", "API_KEY", "--from-stdin"}, "hunter2\n") == 0);
  CHECK(cli.out.str().find("hunter2") == std::string::npos);
  CHECK(cli.err.str().find("hunter2") == std::string::npos);
  REQUIRE(cli.Run({"-o", "json", "scale", "greeter", "0"}) == 0);
  CHECK(cli.out.str() == "{\"service\":\"greeter\"}\n");

  const auto seen = server.seen();
  REQUIRE(seen.size() == 4);
  CHECK(seen[0].target == "/v1/scheduler/Deploy");
  CHECK(seen[0].body == R"({"service":"greeter","version":3})");
  CHECK(seen[1].target == "/v1/scheduler/SetEnv");
  CHECK(seen[1].body == R"({"service":"greeter","set":{"LOG_LEVEL":"debug"}})");
  CHECK(seen[2].body == R"({"service":"greeter","secrets":{"API_KEY":"hunter2"},"deploy":true})");
  CHECK(seen[3].target == "/v1/scheduler/Scale");
  // replicas has presence: an explicit 0 is sent (a request without it is refused).
  CHECK(seen[3].body == R"({"service":"greeter","replicas":0})");
}

TEST_CASE("cli http: muon wait prints progress and ends converged, failed or timed out",
          "[cli][http][scheduler]") {
  auto status = [](const std::string& service) {
    return Json(200, R"({"services":[)" + service + "]}");
  };
  const std::string rolling =
      R"({"name":"greeter","state":"rolling_out","liveVersion":4,"desiredReplicas":2,)"
      R"("healthy":1,"rollout":{"id":"9","version":5,"fromVersion":4,"state":"running"}})";
  const std::string converged =
      R"({"name":"greeter","state":"converged","liveVersion":5,"desiredReplicas":2,"healthy":2})";
  const std::string failed =
      R"({"name":"greeter","state":"failed","liveVersion":4,"desiredReplicas":2,"healthy":2,)"
      R"("paused":true,"rollout":{"id":"9","version":5,"fromVersion":4,"state":"failed",)"
      R"("category":"crash_loop","detail":"exited 3 times"}})";
  const std::string releases =
      R"({"releases":[{"version":5,"status":"failed","category":"crash_loop",)"
      R"("lastLines":["panic: no DB_URL"]}]})";
  TestServer server({status(rolling), status(rolling), status(converged),   // 1: converged
                     status(rolling), status(failed), Json(200, releases),  // 2: failed
                     status(rolling), status(rolling), status(rolling)});   // 3: timeout
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);

  REQUIRE(cli.Run({"wait", "greeter", "--release", "5"}) == 0);
  CHECK(cli.out.str() ==
        "rolling_out  v4  1/2 healthy  rolling out v4 -> v5\n"
        "converged  v5  2/2 healthy\n"
        "greeter converged: v5 live, 2/2 healthy.\n");

  CHECK(cli.Run({"wait", "greeter"}) == muon::cli::kExitRolloutFailed);
  CHECK(cli.out.str() ==
        "rolling_out  v4  1/2 healthy  rolling out v4 -> v5\n"
        "failed  v4  2/2 healthy\n"
        "rollout #9 of v5 failed: crash_loop: exited 3 times\n"
        "v4 keeps serving (2/2 healthy)\n"
        "release v5 (crash_loop), last lines:\n"
        "  panic: no DB_URL\n");
  CHECK(cli.err.str() ==
        "error: the rollout of greeter failed; auto-deploy is paused (more: muon describe "
        "greeter, muon logs greeter --release v5)\n");

  // Three polls 500 ms apart: the third one is at 1 s, the timeout.
  CHECK(cli.Run({"wait", "greeter", "--timeout", "1s"}) == muon::cli::kExitWaitTimeout);
  CHECK(cli.err.str() ==
        "error: greeter has not converged within 1s (rolling_out  v4  1/2 healthy  rolling out "
        "v4 -> v5); follow it with `muon events greeter -f`\n");

  const auto seen = server.seen();
  REQUIRE(seen.size() == 9);
  CHECK(seen[0].target == "/v1/scheduler/Status");
  CHECK(seen[0].body == R"({"service":"greeter"})");
  CHECK(seen[5].target == "/v1/scheduler/ListReleases");
}

TEST_CASE("cli http: muon exec prints the output and exits with the command's code",
          "[cli][http][scheduler]") {
  TestServer server({Json(200, R"({"instance":"i-3","node":"n-1","exitCode":3,"output":"a\nb"})"),
                     Json(200, R"({"instance":"i-3","node":"n-1","signal":9,"output":""})")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);
  CHECK(cli.Run({"exec", "greeter", "--timeout", "20s", "--", "sh", "-c", "exit 3"}) == 3);
  CHECK(cli.out.str() == "a\nb");
  CHECK(cli.Run({"exec", "greeter", "--instance", "i-3", "sleep", "100"}) == 137);
  CHECK(cli.err.str() == "i-3 on n-1 was killed by signal 9\n");
  const auto seen = server.seen();
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].target == "/v1/scheduler/Exec");
  CHECK(seen[0].body ==
        R"({"service":"greeter","command":["sh","-c","exit 3"],"timeoutMs":20000})");
  CHECK(seen[0].headers.at("muon-timeout") == "25000ms");
  CHECK(seen[1].body == R"({"service":"greeter","instance":"i-3","command":["sleep","100"]})");
  CHECK(seen[1].headers.at("muon-timeout") == "35000ms");
}

TEST_CASE("cli http: muon events -f asks for what came after the newest event seen",
          "[cli][http][scheduler]") {
  TestServer server(
      {Json(200, R"({"events":[{"id":"7","service":"greeter","type":"scale","message":"1 -> 2",)"
                 R"("time":"2023-11-14T22:13:00Z"}],"lastId":"7"})"),
       Json(200, R"({"lastId":"7"})"),
       Json(200, R"({"events":[{"id":"8","service":"greeter","type":"rollout.started",)"
                 R"("version":5,"message":"v4 -> v5","time":"2023-11-14T22:13:01Z"}],)"
                 R"("lastId":"8"})")});
  Cli cli(server.url());
  cli.LogIn("access-1", "refresh-1", kNow + 600);
  cli.max_pauses = 2;
  REQUIRE(cli.Run({"events", "greeter", "-f", "--since", "10m"}) == 0);
  CHECK(cli.out.str() ==
        "2023-11-14T22:13:00.000Z  greeter       scale               -     -           1 -> 2\n"
        "2023-11-14T22:13:01.000Z  greeter       rollout.started     v5    -           v4 -> "
        "v5\n");
  const auto seen = server.seen();
  REQUIRE(seen.size() == 3);
  CHECK(seen[0].body == R"({"service":"greeter","since":"2023-11-14T22:03:20Z"})");
  CHECK(seen[1].body == R"({"service":"greeter","afterId":"7","limit":1000})");
  CHECK(seen[2].body == seen[1].body);
}
