// The ingress as a real process in front of real auth and echo processes, over a real
// nats-server and PostgreSQL: calls, every error status in the platform's JSON shape, health,
// metrics, discovery, drain, and tokens from another region.

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <signal.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <future>

#include "harness.h"
#include "http_client.h"
#include "muon/common/bus.h"
#include "muon/common/token.h"

using namespace std::chrono_literals;
using muon::testing::HttpRequest;
using muon::testing::HttpResponse;

namespace {

google::protobuf::Struct Json(const std::string& body) {
  google::protobuf::Struct out;
  INFO(body);
  REQUIRE(google::protobuf::util::JsonStringToMessage(body, &out).ok());
  return out;
}

std::string Field(const google::protobuf::Struct& s, const std::string& key) {
  auto it = s.fields().find(key);
  return it == s.fields().end() ? std::string() : it->second.string_value();
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path) << content;
  chmod(path.c_str(), 0600);
}

// The error shape: {"id","code","detail","status"} with code == HTTP status.
void CheckError(const HttpResponse& r, int status, const std::string& id,
                const std::string& detail_part = "") {
  INFO(r.body);
  CHECK(r.status == status);
  CHECK(r.Header("content-type") == "application/json");
  CHECK_FALSE(r.Header("muon-request-id").empty());
  auto body = Json(r.body);
  CHECK(Field(body, "id") == id);
  CHECK(body.fields().at("code").number_value() == status);
  CHECK_FALSE(Field(body, "status").empty());
  CHECK(Field(body, "status") != "Unknown");
  CHECK(Field(body, "detail").find(detail_part) != std::string::npos);
}

// One region: auth + ingress (+ echo when asked) on its own nats-server; PostgreSQL is shared.
struct Region {
  std::string name;
  muon::testing::NatsServer nats;
  muon::testing::TempDir dir{"muon-test-region"};
  muon::Process auth, ingress, echo;
  uint16_t port = muon::testing::FreePort();

  // With a CA file the ingress serves HTTPS and is checked with curl against that CA.
  std::string ca_file;

  Region(std::string region, const std::string& database_url, const std::string& key_file,
         std::vector<std::string> ingress_args = {}, bool with_echo = true,
         std::string tls_ca_file = "")
      : name(std::move(region)), ca_file(std::move(tls_ca_file)) {
    WriteFile(dir.path() + "/admin-password", "correct horse battery staple");
    WriteFile(dir.path() + "/service-secret", "platform-secret-for-tests-0123456789abcdef");
    auth = Start("muon-auth", {},
                 {{"DATABASE_URL", database_url},
                  {"MUON_AUTH_KEY_FILE", key_file},
                  {"MUON_ADMIN_EMAIL", "admin@muon.local"},
                  {"MUON_ADMIN_PASSWORD_FILE", dir.path() + "/admin-password"},
                  {"MUON_SERVICE_SECRET_FILE", dir.path() + "/service-secret"}});
    if (with_echo) echo = Start("muon-echo", {}, {});
    ingress_args.push_back("--listen=127.0.0.1:" + std::to_string(port));
    ingress = Start("muon-ingress", ingress_args,
                    {{"MUON_SERVICE_SECRET_FILE", dir.path() + "/service-secret"}});
    const bool ready = muon::testing::WaitUntil(
        [&] {
          if (!ca_file.empty()) return Curl({"-f", url() + "/readyz"}).status.Success();
          try {
            return HttpRequest("GET", url() + "/readyz").status == 200;
          } catch (const std::exception&) {
            return false;
          }
        },
        30s, 50ms);
    if (!ready) FAIL("region " << name << " did not become ready:\n" << Logs());
  }

  muon::Process Start(const std::string& binary, std::vector<std::string> args,
                      std::map<std::string, std::string> env) {
    env["NATS_URL"] = nats.url();
    env["MUON_REGION"] = name;
    return muon::Process({.program = muon::testing::BinDir() + "/" + binary,
                          .args = std::move(args),
                          .env = std::move(env),
                          .output_file = dir.path() + "/" + binary + ".log"});
  }

  std::string url() const {
    return (ca_file.empty() ? "http://127.0.0.1:" : "https://127.0.0.1:") + std::to_string(port);
  }

  // curl, trusting only the test's CA: a real TLS client with certificate verification.
  muon::RunResult Curl(std::vector<std::string> args) const {
    args.insert(args.begin(), {"-sS", "--max-time", "5", "--cacert", ca_file});
    return muon::RunCommand({.program = "curl", .args = std::move(args)}, 10s);
  }

  std::string Logs() const {
    std::string all;
    for (const char* name : {"muon-auth", "muon-ingress", "muon-echo"}) {
      std::ifstream in(dir.path() + "/" + name + ".log");
      all += std::string("--- ") + name + "\n" +
             std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    return all;
  }

  HttpResponse Post(const std::string& path, const std::string& body, const std::string& token = "",
                    std::map<std::string, std::string> headers = {}) {
    if (!token.empty()) headers["Authorization"] = "Bearer " + token;
    if (!headers.contains("Content-Type")) headers["Content-Type"] = "application/json";
    return HttpRequest("POST", url() + path, body, headers);
  }

  std::string Login(const std::string& email, const std::string& password) {
    auto r =
        Post("/v1/auth/Login", R"({"email":")" + email + R"(","password":")" + password + R"("})");
    INFO(r.body);
    REQUIRE(r.status == 200);
    return Field(Json(r.body), "accessToken");
  }

  std::string AdminToken() { return Login("admin@muon.local", "correct horse battery staple"); }

  // An account with only the given role, via an invite.
  std::string Invitee(const std::string& admin, const std::string& email, const std::string& role) {
    auto invite = Post("/v1/auth/CreateInvite",
                       R"({"email":")" + email + R"(","roles":[")" + role + R"("]})", admin);
    INFO(invite.body);
    REQUIRE(invite.status == 200);
    auto signup = Post("/v1/auth/Signup",
                       R"({"inviteCode":")" + Field(Json(invite.body), "code") + R"(","email":")" +
                           email + R"(","name":"Dev","password":"a long enough password"})");
    INFO(signup.body);
    REQUIRE(signup.status == 200);
    return Field(Json(signup.body), "accessToken");
  }

  // Polls until echo is callable through this ingress and listed in its catalog (which tells a
  // missing service, 404, from one with no instance of the asked version, 503; it refreshes
  // every 2 s, so it can lag behind the first answer).
  void WaitForEcho(const std::string& token) {
    const bool answered = muon::testing::WaitUntil(
        [&] {
          if (Post("/v1/echo/Echo", R"({"message":"ping"})", token).status != 200) return false;
          const auto services = HttpRequest("GET", url() + "/v1/services", "",
                                            {{"Authorization", "Bearer " + token}});
          return services.status == 200 &&
                 services.body.find(R"("name":"echo")") != std::string::npos;
        },
        15s, 50ms);
    if (!answered) FAIL("echo not callable through the ingress:\n" << Logs());
  }
};

struct Shared {
  muon::testing::TempDir keys{"muon-test-keys"};
  std::string database = muon::testing::Postgres::Shared().CreateDatabase();
  std::string key_file = keys.path() + "/auth.key";
};

}  // namespace

TEST_CASE("log in and call echo through the ingress", "[ingress]") {
  Shared shared;
  Region us("us", shared.database, shared.key_file);
  const std::string token = us.AdminToken();
  us.WaitForEcho(token);

  const std::string trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  auto r = us.Post("/v1/echo/Echo", R"({"message":"hi"})", token,
                   {{"traceparent", trace}, {"Muon-Request-Id", "req-42"}});
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK(r.Header("content-type") == "application/json");
  CHECK(Field(Json(r.body), "message") == "hi");
  CHECK(r.Header("muon-request-id") == "req-42");
  CHECK(r.Header("traceparent").substr(0, 36) == trace.substr(0, 36));

  SECTION("platform services get JSON converted through the descriptors") {
    auto who = us.Post("/v1/auth/Whoami", "{}", token);
    INFO(who.body);
    REQUIRE(who.status == 200);
    CHECK(Field(Json(who.body), "email") == "admin@muon.local");
  }
  SECTION("health, readiness, metrics, keys, services") {
    CHECK(HttpRequest("GET", us.url() + "/healthz").status == 200);
    CHECK(HttpRequest("GET", us.url() + "/readyz").status == 200);
    auto metrics = HttpRequest("GET", us.url() + "/metrics");
    CHECK(metrics.status == 200);
    CHECK(metrics.body.find("muon_ingress_requests_total{route=\"/v1/{service}/{method}\","
                            "status=\"200\"}") != std::string::npos);
    CHECK(metrics.body.find("muon_ingress_request_duration_seconds_bucket") != std::string::npos);
    auto keys = HttpRequest("GET", us.url() + "/v1/auth/keys");
    INFO(keys.body);
    REQUIRE(keys.status == 200);
    CHECK(keys.body.find("\"kty\":\"OKP\"") != std::string::npos);
    CHECK(keys.body.find("\"region\":\"us\"") != std::string::npos);

    auto anonymous = HttpRequest("GET", us.url() + "/v1/services");
    CheckError(anonymous, 401, "ingress");
    REQUIRE(muon::testing::WaitUntil(
        [&] {
          auto services = HttpRequest("GET", us.url() + "/v1/services", "",
                                      {{"Authorization", "Bearer " + token}});
          return services.status == 200 &&
                 services.body.find(R"("name":"echo")") != std::string::npos &&
                 services.body.find(R"("name":"auth")") != std::string::npos;
        },
        10s, 100ms));
  }
}

TEST_CASE("bad input gets the listed status and the JSON error shape", "[ingress]") {
  Shared shared;
  Region us("us", shared.database, shared.key_file, {"--max-body=4096"});
  const std::string admin = us.AdminToken();
  us.WaitForEcho(admin);

  CheckError(us.Post("/v1/auth/Login", "{bad json"), 400, "auth.Login", "not valid JSON");
  CheckError(us.Post("/v1/auth/Login", R"({"email":"a","nope":1})"), 400, "auth.Login");
  CheckError(us.Post("/v1/ec.ho/Echo", "{}", admin), 400, "ingress");
  CheckError(us.Post("/v1/echo/Echo", "{}"), 401, "echo.Echo", "sign in first");
  CheckError(us.Post("/v1/echo/Echo", "{}", "garbage"), 401, "echo.Echo");
  CheckError(us.Post("/v1/echo/Echo", "{}", "", {{"Authorization", "Basic abc"}}), 401, "echo.Echo",
             "Bearer");
  std::string tampered = admin;
  tampered[tampered.size() - 5] = tampered[tampered.size() - 5] == 'A' ? 'B' : 'A';
  CheckError(us.Post("/v1/echo/Echo", "{}", tampered), 401, "echo.Echo");
  auto stranger_key = muon::token::GenerateSigningKey("stranger-key", "us");
  muon::auth::v1::Claims claims;
  claims.set_iss("us");
  claims.set_sub("x");
  claims.add_roles("admin");
  claims.set_iat(std::time(nullptr));
  claims.set_exp(std::time(nullptr) + 600);
  CheckError(us.Post("/v1/echo/Echo", "{}", muon::token::Sign(claims, stranger_key)), 401,
             "echo.Echo", "unknown key");

  const std::string developer = us.Invitee(admin, "dev@example.com", "developer");
  CheckError(us.Post("/v1/auth/ListAccounts", "{}", developer), 403, "auth.ListAccounts",
             "dev@example.com may not call auth.ListAccounts");
  CHECK(us.Post("/v1/echo/Echo", R"({"message":"dev"})", developer).status == 200);

  CheckError(us.Post("/v1/nosuch/Echo", "{}", admin), 404, "nosuch.Echo", "no service named");
  CheckError(us.Post("/v1/echo/Nope", "{}", admin), 404, "echo.Nope", "no method");
  CheckError(us.Post("/v1/auth/Nope", "{}", admin), 404, "auth.Nope");
  CheckError(HttpRequest("GET", us.url() + "/nope"), 404, "ingress", "no route");
  CheckError(HttpRequest("GET", us.url() + "/v1/echo/Echo"), 405, "echo.Echo", "not allowed");
  CheckError(us.Post("/v1/echo/Echo", std::string(10000, 'x'), admin), 413, "ingress", "limit");

  CheckError(us.Post("/v1/echo/Echo", "{}", admin, {{"Muon-Version", "v9"}}), 503, "echo.Echo",
             "no instance");
  CheckError(
      us.Post("/v1/echo/Sleep", R"({"milliseconds":3000})", admin, {{"Muon-Timeout", "200ms"}}),
      504, "echo.Sleep", "did not answer");
  CheckError(us.Post("/v1/echo/Echo", "{}", admin, {{"Muon-Timeout", "soon"}}), 400, "echo.Echo");
  // The service's own errors keep their code and detail.
  CheckError(us.Post("/v1/echo/Sleep", R"({"milliseconds":999999})", admin), 400, "echo.Sleep",
             "at most");
  CheckError(us.Post("/v1/echo/Echo", R"({"message":)", admin), 400, "echo.Echo");
  // After all of that the ingress still serves.
  CHECK(us.Post("/v1/echo/Echo", R"({"message":"still"})", admin).status == 200);
}

TEST_CASE("a per-client rate limit answers 429", "[ingress]") {
  Shared shared;
  Region us("us", shared.database, shared.key_file, {"--rate-limit=5", "--rate-burst=5"});
  const std::string admin = us.AdminToken();
  int ok = 0, limited = 0;
  HttpResponse last;
  for (int i = 0; i < 20; ++i) {
    auto r = us.Post("/v1/auth/Whoami", "{}", admin);
    if (r.status == 200) ++ok;
    if (r.status == 429) {
      ++limited;
      last = r;
    }
  }
  CHECK(ok >= 5);
  CHECK(limited > 0);
  CheckError(last, 429, "auth.Whoami", "rate limit");
}

TEST_CASE("the ingress puts the client's address on the bus, never one the client sent",
          "[ingress]") {
  Shared shared;
  Region us("us", shared.database, shared.key_file, {}, /*with_echo=*/false);
  const std::string admin = us.AdminToken();

  // A user service that answers with the Muon-Client-Address it was given.
  auto conn = muon::bus::Connection::Connect({.url = us.nats.url(), .name = "spy"});
  REQUIRE(conn->WaitConnected(5s));
  auto sub = conn->Subscribe("svc.spy.Look", [&](muon::bus::Msg& msg) {
    (void)conn->Respond(msg, msg.Header(muon::bus::kHeaderClientAddress).value_or("(none)"));
  });
  REQUIRE_FALSE(conn->Flush(2s));
  auto look = [&](std::map<std::string, std::string> headers, const std::string& from = "") {
    headers["Authorization"] = "Bearer " + admin;
    headers["Content-Type"] = "application/json";
    return HttpRequest("POST", us.url() + "/v1/spy/Look", "{}", headers, 10s, from);
  };
  const auto plain = look({});
  INFO(plain.body);
  REQUIRE(plain.status == 200);
  CHECK(plain.body == "127.0.0.1");
  CHECK(look({{"Muon-Client-Address", "203.0.113.9"}}).body == "127.0.0.1");
  CHECK(look({{"muon-client-address", "203.0.113.9"}}).body == "127.0.0.1");
  CHECK(look({{"Muon-Client-Address", "203.0.113.9"}}, "127.0.0.2").body == "127.0.0.2");

  // So auth's login throttle counts what the ingress saw: guesses from 127.0.0.1 that each
  // claim another address lock 127.0.0.1 out of the email, and only 127.0.0.1.
  us.Invitee(admin, "dev@example.com", "developer");  // password "a long enough password"
  auto login = [&](const std::string& password, const std::string& claimed,
                   const std::string& from = "") {
    std::map<std::string, std::string> headers = {{"Content-Type", "application/json"}};
    if (!claimed.empty()) headers["Muon-Client-Address"] = claimed;
    return HttpRequest("POST", us.url() + "/v1/auth/Login",
                       R"({"email":"dev@example.com","password":")" + password + R"("})", headers,
                       10s, from);
  };
  for (int i = 1; i <= 5; ++i) {
    CheckError(login("wrong password!!", "198.51.100." + std::to_string(i)), 401, "auth.Login",
               "wrong email or password");
  }
  CheckError(login("a long enough password", "198.51.100.77"), 429, "auth.Login",
             "too many failed logins");
  const auto elsewhere = login("a long enough password", "", "127.0.0.2");
  INFO(elsewhere.body);
  CHECK(elsewhere.status == 200);
}

TEST_CASE("SIGTERM drains the ingress: the in-flight call finishes, the process exits 0",
          "[ingress]") {
  Shared shared;
  Region us("us", shared.database, shared.key_file);
  const std::string admin = us.AdminToken();
  us.WaitForEcho(admin);
  auto pending = std::async(std::launch::async, [&] {
    return us.Post("/v1/echo/Sleep", R"({"milliseconds":1500})", admin);
  });
  REQUIRE(muon::testing::WaitUntil(
      [&] { return us.Logs().find("msg=\"sleep started\"") != std::string::npos; }, 5s));
  us.ingress.Signal(SIGTERM);
  auto r = pending.get();
  CHECK(r.status == 200);
  CHECK(r.Header("connection") == "close");
  auto status = us.ingress.WaitFor(10s);
  REQUIRE(status.has_value());
  CHECK(status->code == 0);
}

TEST_CASE("a token issued in eu is accepted by the us ingress", "[ingress][regions]") {
  Shared shared;
  Region us("us", shared.database, shared.key_file);
  Region eu("eu", shared.database, shared.key_file, {}, /*with_echo=*/false);
  auto login = eu.Post("/v1/auth/Login",
                       R"({"email":"admin@muon.local","password":"correct horse battery staple"})");
  INFO(login.body);
  REQUIRE(login.status == 200);
  const std::string token = Field(Json(login.body), "accessToken");
  CHECK(Field(Json(login.body), "region") == "eu");

  // The token's header and claims name the eu key and issuer.
  const auto first_dot = token.find('.');
  const auto second_dot = token.find('.', first_dot + 1);
  const auto header = Json(*muon::token::Base64UrlDecode(token.substr(0, first_dot)));
  const auto payload =
      Json(*muon::token::Base64UrlDecode(token.substr(first_dot + 1, second_dot - first_dot - 1)));
  CHECK(Field(payload, "iss") == "eu");
  auto keys = Json(HttpRequest("GET", eu.url() + "/v1/auth/keys").body);
  bool eu_kid = false;
  for (const auto& key : keys.fields().at("keys").list_value().values()) {
    if (Field(key.struct_value(), "kid") == Field(header, "kid")) {
      eu_kid = Field(key.struct_value(), "region") == "eu";
    }
  }
  CHECK(eu_kid);

  us.WaitForEcho(token);  // accepted in us
  CHECK(us.Post("/v1/auth/Whoami", "{}", token).status == 200);
}

TEST_CASE("the ingress serves HTTPS with the certificate and key from files", "[ingress][tls]") {
  Shared shared;
  muon::testing::TempDir certs{"muon-test-tls"};
  const std::string cert = certs.path() + "/cert.pem", key = certs.path() + "/key.pem";
  auto made = muon::RunCommand(
      {.program = "openssl",
       .args = {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1"}},
      30s);
  INFO(made.output);
  REQUIRE(made.status.Success());
  Region us("us", shared.database, shared.key_file, {"--tls-cert=" + cert, "--tls-key=" + key},
            true, cert);

  auto login = us.Curl({"-H", "Content-Type: application/json", "-d",
                        R"({"email":"admin@muon.local","password":"correct horse battery staple"})",
                        us.url() + "/v1/auth/Login"});
  INFO(login.output);
  REQUIRE(login.status.Success());
  const std::string token = Field(Json(login.output), "accessToken");
  REQUIRE_FALSE(token.empty());
  const bool answered = muon::testing::WaitUntil(
      [&] {
        auto call = us.Curl({"-f", "-H", "Content-Type: application/json", "-H",
                             "Authorization: Bearer " + token, "-d", R"({"message":"over tls"})",
                             us.url() + "/v1/echo/Echo"});
        return call.status.Success() && call.output.find("over tls") != std::string::npos;
      },
      15s, 100ms);
  CHECK(answered);
  // Plain HTTP to the TLS port gets no answer, and an untrusting client refuses the certificate.
  CHECK_THROWS(
      HttpRequest("GET", "http://127.0.0.1:" + std::to_string(us.port) + "/healthz", "", {}, 2s));
  auto untrusted = muon::RunCommand(
      {.program = "curl", .args = {"-sS", "--max-time", "5", us.url() + "/healthz"}}, 10s);
  CHECK_FALSE(untrusted.status.Success());
}
