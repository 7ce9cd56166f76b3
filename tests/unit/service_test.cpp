// Pure logic of the service framework: error mapping, stats arithmetic, subjects and names,
// JSON writing, message coding, and descriptor lookup.

#include "muon/common/service.h"

#include <catch2/catch.hpp>

#include "muon/common/errors.h"
#include "muon/common/json_writer.h"
#include "muon/common/proto_registry.h"
#include "muon/echo/v1/echo.pb.h"

TEST_CASE("errors map to the platform's error shape", "[errors]") {
  const auto proto =
      muon::ToProto(muon::Error::Unauthorized("wrong email or password"), "auth.Login");
  CHECK(proto.id() == "auth.Login");
  CHECK(proto.code() == 401);
  CHECK(proto.status() == "Unauthorized");
  CHECK(
      muon::ErrorJson(proto) ==
      R"({"id":"auth.Login","code":401,"detail":"wrong email or password","status":"Unauthorized"})");

  CHECK(muon::StatusText(400) == "Bad Request");
  CHECK(muon::StatusText(403) == "Forbidden");
  CHECK(muon::StatusText(404) == "Not Found");
  CHECK(muon::StatusText(413) == "Payload Too Large");
  CHECK(muon::StatusText(429) == "Too Many Requests");
  CHECK(muon::StatusText(503) == "Service Unavailable");
  CHECK(muon::StatusText(504) == "Gateway Timeout");
  CHECK(muon::StatusText(299) == "Unknown");

  const auto back = muon::FromProto(proto);
  CHECK(back.code() == 401);
  CHECK(back.detail() == "wrong email or password");
  muon::common::v1::Error empty;
  CHECK(muon::FromProto(empty).code() == 500);  // a reply without a code is still an error
}

TEST_CASE("error details are JSON-escaped", "[errors]") {
  muon::common::v1::Error proto;
  proto.set_id("echo.Echo");
  proto.set_code(400);
  proto.set_detail("bad \"quote\"\nand \\ and \x01");
  proto.set_status("Bad Request");
  CHECK(
      muon::ErrorJson(proto) ==
      R"({"id":"echo.Echo","code":400,"detail":"bad \"quote\"\nand \\ and \u0001","status":"Bad Request"})");
}

TEST_CASE("average processing time follows ADR-32", "[stats]") {
  muon::EndpointStats stats;
  CHECK(stats.AverageProcessingTimeNs() == 0);  // no requests: 0, not a division by zero
  stats.num_requests = 3;
  stats.processing_time_ns = 1000;
  CHECK(stats.AverageProcessingTimeNs() == 333);  // truncated
  stats.num_requests = 1;
  stats.processing_time_ns = 9'000'000'000'000;  // hours of processing stay exact
  CHECK(stats.AverageProcessingTimeNs() == 9'000'000'000'000);
}

TEST_CASE("subjects, names and versions", "[service]") {
  CHECK(muon::PlatformSubject("auth", "Login") == "muon.rpc.auth.Login");
  CHECK(muon::UserSubject("echo", "Echo") == "svc.echo.Echo");
  CHECK(muon::VersionSubject("echo", "v3", "Echo") == "ver.echo.v3.Echo");

  CHECK(muon::IsValidServiceName("github-events"));
  CHECK(muon::IsValidServiceName("my_service2"));
  CHECK_FALSE(muon::IsValidServiceName(""));
  CHECK_FALSE(muon::IsValidServiceName("a.b"));
  CHECK_FALSE(muon::IsValidServiceName("a*"));
  CHECK_FALSE(muon::IsValidServiceName("a b"));
  CHECK_FALSE(muon::IsValidServiceName(std::string(65, 'a')));

  for (const char* ok :
       {"0.1.0", "1.2.3", "10.20.30", "1.0.0-alpha.1", "1.0.0+build.5", "1.0.0-rc.1+sha.abc"}) {
    INFO(ok);
    CHECK(muon::IsValidSemver(ok));
  }
  for (const char* bad : {"", "1", "1.2", "v1.2.3", "01.2.3", "1.2.3-", "1.2.3.4", "1.2.3-01"}) {
    INFO(bad);
    CHECK_FALSE(muon::IsValidSemver(bad));
  }
}

TEST_CASE("message coding in Protobuf and proto3 JSON", "[service]") {
  muon::echo::v1::EchoRequest request;
  request.set_message("hi");
  const std::string binary = muon::EncodeMessage(request, false);
  const std::string json = muon::EncodeMessage(request, true);
  CHECK(json == R"({"message":"hi"})");

  muon::echo::v1::EchoRequest a, b;
  muon::DecodeMessage(binary, false, a);
  muon::DecodeMessage(json, true, b);
  CHECK(a.message() == "hi");
  CHECK(b.message() == "hi");

  muon::echo::v1::SleepRequest sleep;
  muon::DecodeMessage(R"({"milliseconds": 250})", true, sleep);
  CHECK(sleep.milliseconds() == 250);

  auto code_of = [](auto&& fn) {
    try {
      fn();
    } catch (const muon::Error& e) {
      return e.code();
    }
    return 0;
  };
  CHECK(code_of([&] { muon::DecodeMessage("{not json", true, a); }) == 400);
  CHECK(code_of([&] { muon::DecodeMessage(R"({"unknown":1})", true, a); }) == 400);
  CHECK(code_of([&] { muon::DecodeMessage(R"({"milliseconds":"soon"})", true, sleep); }) == 400);
  CHECK(code_of([&] { muon::DecodeMessage(std::string("\x0a\x64\x41", 3), false, a); }) == 400);
}

TEST_CASE("JSON writer keeps integers as numbers", "[json]") {
  muon::JsonWriter w;
  w.BeginObject()
      .Key("n")
      .Int(9'000'000'000'000'000'000)
      .Key("neg")
      .Int(-5)
      .Key("list")
      .BeginArray()
      .String("a")
      .Bool(true)
      .Null()
      .EndArray()
      .Key("nested")
      .BeginObject()
      .EndObject()
      .Key("raw")
      .Raw("[1,2]")
      .EndObject();
  CHECK(w.str() ==
        R"({"n":9000000000000000000,"neg":-5,"list":["a",true,null],"nested":{},"raw":[1,2]})");
}

TEST_CASE("methods are found from the descriptors by the proto layout rule", "[proto]") {
  CHECK(muon::proto::ProtoFileFor("github-events") == "muon/github_events/v1/github_events.proto");
  // Make sure echo.pb.cc is linked in (it registers its descriptors at start-up).
  CHECK(muon::echo::v1::EchoRequest::descriptor() != nullptr);
  const auto* method = muon::proto::FindMethod("echo", "Sleep");
  REQUIRE(method != nullptr);
  CHECK(method->input_type()->full_name() == "muon.echo.v1.SleepRequest");
  CHECK(method->output_type()->full_name() == "muon.echo.v1.SleepResponse");
  CHECK(muon::proto::FindMethod("echo", "Nope") == nullptr);
  CHECK(muon::proto::FindMethod("nope", "Echo") == nullptr);
}
