// Log lines on the bus (libs/common log_lines.h): severity detection, the message cap, the filter
// every reader applies, subjects and names, and the JetStream delivery metadata the logs service
// reads from an ack subject.

#include "muon/common/log_lines.h"

#include <catch2/catch.hpp>
#include <stdexcept>
#include <string>

#include "muon/common/bus.h"

using muon::loglines::DetectSeverity;
namespace v1 = muon::logs::v1;

namespace {

v1::Severity Out(std::string_view line) {
  return DetectSeverity(line, /*from_stderr=*/false);
}
v1::Severity Err(std::string_view line) {
  return DetectSeverity(line, /*from_stderr=*/true);
}

v1::LogLine Line() {
  v1::LogLine line;
  line.set_service("greeter");
  line.set_instance("i-3");
  line.set_release("v3");
  line.set_source(v1::SOURCE_APP);
  line.set_severity(v1::SEVERITY_WARN);
  line.set_message("Upstream TIMED OUT after 5s");
  line.set_seq(7);
  return line;
}

}  // namespace

TEST_CASE("DetectSeverity reads a JSON object's level or severity field", "[log_lines]") {
  CHECK(Out(R"({"level":"error","msg":"boom"})") == v1::SEVERITY_ERROR);
  CHECK(Out(R"({"msg":"x","level":"warn"})") == v1::SEVERITY_WARN);
  CHECK(Out(R"({"ts":1700000000,"level" : "DEBUG","msg":"x"})") == v1::SEVERITY_DEBUG);
  CHECK(Out(R"({"severity":"WARNING","message":"disk almost full"})") == v1::SEVERITY_WARN);
  CHECK(Out(R"({"severity":"critical"})") == v1::SEVERITY_FATAL);
  CHECK(Out(R"({"lvl":"fatal"})") == v1::SEVERITY_FATAL);
  CHECK(Out(R"(  {"level":"info"})") == v1::SEVERITY_INFO);
  // The field wins over the stream it came on.
  CHECK(Err(R"({"level":"info","msg":"listening"})") == v1::SEVERITY_INFO);
  CHECK(Out(R"({"level":"error"})") == v1::SEVERITY_ERROR);
  // No level field (or one that is not a severity): the stream decides, not words in the text.
  CHECK(Out(R"({"msg":"error: nothing happened"})") == v1::SEVERITY_INFO);
  CHECK(Err(R"({"msg":"all good"})") == v1::SEVERITY_ERROR);
  CHECK(Out(R"({"level":"loud"})") == v1::SEVERITY_INFO);
  // "loglevel" is not "level".
  CHECK(Out(R"({"loglevel":"error"})") == v1::SEVERITY_INFO);
}

TEST_CASE("DetectSeverity reads logfmt level=, lvl= and severity=", "[log_lines]") {
  CHECK(Out("time=2024-01-01T00:00:00Z level=warn msg=\"disk almost full\"") == v1::SEVERITY_WARN);
  CHECK(Out("level=error msg=boom") == v1::SEVERITY_ERROR);
  CHECK(Out("level=\"error\" msg=boom") == v1::SEVERITY_ERROR);
  CHECK(Out("msg=x lvl=debug") == v1::SEVERITY_DEBUG);
  CHECK(Out("msg=x severity=FATAL") == v1::SEVERITY_FATAL);
  CHECK(Err("ts=1 level=info msg=ready") == v1::SEVERITY_INFO);
  // Only a whole key counts.
  CHECK(Out("loglevel=error msg=x") == v1::SEVERITY_INFO);
  CHECK(Err("loglevel=info msg=x") == v1::SEVERITY_ERROR);
}

TEST_CASE("DetectSeverity reads a leading severity word", "[log_lines]") {
  CHECK(Out("ERROR upstream timed out") == v1::SEVERITY_ERROR);
  CHECK(Out("error: upstream timed out") == v1::SEVERITY_ERROR);
  CHECK(Out("Err: x") == v1::SEVERITY_ERROR);
  CHECK(Out("[warn] cache cold") == v1::SEVERITY_WARN);
  CHECK(Out("[WARNING] cache cold") == v1::SEVERITY_WARN);
  CHECK(Out("WARN|cache cold") == v1::SEVERITY_WARN);
  CHECK(Out("fatal: not a git repository") == v1::SEVERITY_FATAL);
  CHECK(Out("panic: runtime error: index out of range") == v1::SEVERITY_FATAL);
  CHECK(Out("CRITICAL something") == v1::SEVERITY_FATAL);
  CHECK(Out("<debug> x") == v1::SEVERITY_DEBUG);
  CHECK(Out("(trace) x") == v1::SEVERITY_DEBUG);
  CHECK(Out("  \tERROR indented") == v1::SEVERITY_ERROR);
  CHECK(Err("INFO listening on :8080") == v1::SEVERITY_INFO);
  CHECK(Err("notice: x") == v1::SEVERITY_INFO);
  // Words that merely start like a severity do not count.
  CHECK(Out("errors: 0") == v1::SEVERITY_INFO);
  CHECK(Out("Information follows") == v1::SEVERITY_INFO);
  CHECK(Err("Warnings are off") == v1::SEVERITY_ERROR);
  // A severity word later in the line does not count either.
  CHECK(Out("request failed with error 500") == v1::SEVERITY_INFO);
}

TEST_CASE("DetectSeverity reads glog/klog severity letters", "[log_lines]") {
  CHECK(Out("E1122 10:00:00.000000    1234 main.go:42] boom") == v1::SEVERITY_ERROR);
  CHECK(Out("W1122 10:00:00.000000    1234 main.go:42] slow") == v1::SEVERITY_WARN);
  CHECK(Err("I1122 10:00:00.000000    1234 main.go:42] ready") == v1::SEVERITY_INFO);
  CHECK(Out("F0101 00:00:00.000000    1 main.go:1] dead") == v1::SEVERITY_FATAL);
  CHECK(Out("D0101 00:00:00 x") == v1::SEVERITY_DEBUG);
  // Not the glog shape: wrong letter, too few digits, no space after the date.
  CHECK(Out("X1122 10:00:00 x") == v1::SEVERITY_INFO);
  CHECK(Out("E112 10:00:00 x") == v1::SEVERITY_INFO);
  CHECK(Out("E11223 x") == v1::SEVERITY_INFO);
  CHECK(Err("I1122") == v1::SEVERITY_ERROR);
}

TEST_CASE("DetectSeverity falls back to info for stdout and error for stderr", "[log_lines]") {
  CHECK(Out("listening on :8080") == v1::SEVERITY_INFO);
  CHECK(Err("listening on :8080") == v1::SEVERITY_ERROR);
  CHECK(Out("") == v1::SEVERITY_INFO);
  CHECK(Err("") == v1::SEVERITY_ERROR);
  CHECK(Out("   ") == v1::SEVERITY_INFO);
  CHECK(Err("[") == v1::SEVERITY_ERROR);
  CHECK(Out("{") == v1::SEVERITY_INFO);
  CHECK(Out("12345") == v1::SEVERITY_INFO);
}

TEST_CASE("CapMessage cuts on a UTF-8 character boundary", "[log_lines]") {
  SECTION("short messages are left alone") {
    std::string m = "hello";
    CHECK_FALSE(muon::loglines::CapMessage(m, 5));
    CHECK(m == "hello");
    std::string empty;
    CHECK_FALSE(muon::loglines::CapMessage(empty, 0));
  }
  SECTION("ASCII is cut at the cap") {
    std::string m = "hello world";
    CHECK(muon::loglines::CapMessage(m, 5));
    CHECK(m == "hello");
  }
  SECTION("a two-byte character is not split") {
    std::string m = "a\xC3\xA9z";  // aéz
    CHECK(muon::loglines::CapMessage(m, 2));
    CHECK(m == "a");
    m = "a\xC3\xA9z";
    CHECK(muon::loglines::CapMessage(m, 3));
    CHECK(m == "a\xC3\xA9");
  }
  SECTION("three- and four-byte characters are not split") {
    const std::string euro =
        "x\xE2\x82\xAC"
        "y";  // x€y
    for (size_t cap : {1, 2, 3}) {
      std::string m = euro;
      CHECK(muon::loglines::CapMessage(m, cap));
      CHECK(m == "x");
    }
    std::string m = euro;
    CHECK(muon::loglines::CapMessage(m, 4));
    CHECK(m == "x\xE2\x82\xAC");

    const std::string emoji = "\xF0\x9F\x98\x80\xF0\x9F\x98\x80";  // two U+1F600
    for (size_t cap : {4, 5, 6, 7}) {
      std::string e = emoji;
      CHECK(muon::loglines::CapMessage(e, cap));
      CHECK(e == "\xF0\x9F\x98\x80");
    }
    std::string e = emoji;
    CHECK(muon::loglines::CapMessage(e, 3));
    CHECK(e.empty());
  }
  SECTION("a cap of zero empties the message") {
    std::string m = "abc";
    CHECK(muon::loglines::CapMessage(m, 0));
    CHECK(m.empty());
  }
  SECTION("the default cap") {
    std::string m(muon::loglines::kDefaultMaxMessageBytes + 1, 'x');
    CHECK(muon::loglines::CapMessage(m, muon::loglines::kDefaultMaxMessageBytes));
    CHECK(m.size() == muon::loglines::kDefaultMaxMessageBytes);
  }
}

TEST_CASE("ContainsIgnoreCase", "[log_lines]") {
  using muon::loglines::ContainsIgnoreCase;
  CHECK(ContainsIgnoreCase("Upstream TIMED OUT", "timed out"));
  CHECK(ContainsIgnoreCase("upstream timed out", "TIMED"));
  CHECK(ContainsIgnoreCase("abc", "abc"));
  CHECK(ContainsIgnoreCase("abc", ""));
  CHECK(ContainsIgnoreCase("", ""));
  CHECK_FALSE(ContainsIgnoreCase("", "a"));
  CHECK_FALSE(ContainsIgnoreCase("abc", "abcd"));
  CHECK_FALSE(ContainsIgnoreCase("timed_out", "timed out"));
  CHECK(ContainsIgnoreCase("100% done", "0% D"));
}

TEST_CASE("Matches applies every set filter field", "[log_lines]") {
  using muon::loglines::Matches;
  const v1::LogLine line = Line();
  v1::Filter f;
  CHECK(Matches(f, line));  // an empty filter matches everything

  SECTION("service") {
    f.set_service("greeter");
    CHECK(Matches(f, line));
    f.set_service("greet");
    CHECK_FALSE(Matches(f, line));
    f.set_service("GREETER");
    CHECK_FALSE(Matches(f, line));  // names are exact
  }
  SECTION("instance") {
    f.set_instance("i-3");
    CHECK(Matches(f, line));
    f.set_instance("i-4");
    CHECK_FALSE(Matches(f, line));
  }
  SECTION("release") {
    f.set_release("v3");
    CHECK(Matches(f, line));
    f.set_release("v2");
    CHECK_FALSE(Matches(f, line));
  }
  SECTION("source") {
    f.set_source(v1::SOURCE_APP);
    CHECK(Matches(f, line));
    f.set_source(v1::SOURCE_BUILD);
    CHECK_FALSE(Matches(f, line));
  }
  SECTION("min_severity") {
    f.set_min_severity(v1::SEVERITY_DEBUG);
    CHECK(Matches(f, line));
    f.set_min_severity(v1::SEVERITY_WARN);
    CHECK(Matches(f, line));  // at the minimum
    f.set_min_severity(v1::SEVERITY_ERROR);
    CHECK_FALSE(Matches(f, line));
  }
  SECTION("grep is a case-insensitive substring") {
    f.set_grep("timed out");
    CHECK(Matches(f, line));
    f.set_grep("UPSTREAM");
    CHECK(Matches(f, line));
    f.set_grep("downstream");
    CHECK_FALSE(Matches(f, line));
  }
  SECTION("every set field must match") {
    f.set_service("greeter");
    f.set_instance("i-3");
    f.set_release("v3");
    f.set_source(v1::SOURCE_APP);
    f.set_min_severity(v1::SEVERITY_INFO);
    f.set_grep("after 5s");
    CHECK(Matches(f, line));
    f.set_grep("after 6s");
    CHECK_FALSE(Matches(f, line));
    f.set_grep("after 5s");
    f.set_release("v4");
    CHECK_FALSE(Matches(f, line));
  }
}

TEST_CASE("subjects and subject tokens", "[log_lines]") {
  using muon::loglines::FilterSubject;
  using muon::loglines::IsValidToken;
  using muon::loglines::Subject;
  CHECK(Subject("greeter", "i-3") == "muon.log.greeter.i-3");
  CHECK(Subject("Build_Svc", "b-0123abc") == "muon.log.Build_Svc.b-0123abc");
  CHECK_THROWS_AS(Subject("", "i-3"), std::invalid_argument);
  CHECK_THROWS_AS(Subject("greeter", ""), std::invalid_argument);
  CHECK_THROWS_AS(Subject("a.b", "i-3"), std::invalid_argument);
  CHECK_THROWS_AS(Subject("greeter", "*"), std::invalid_argument);
  CHECK_THROWS_AS(Subject(">", "i-3"), std::invalid_argument);

  CHECK(FilterSubject("", "") == "muon.log.>");
  CHECK(FilterSubject("greeter", "") == "muon.log.greeter.*");
  CHECK(FilterSubject("greeter", "i-3") == "muon.log.greeter.i-3");
  CHECK(FilterSubject("", "b-17") == "muon.log.*.b-17");

  CHECK(IsValidToken("a"));
  CHECK(IsValidToken("AZaz09_-"));
  CHECK(IsValidToken(std::string(128, 'x')));
  CHECK_FALSE(IsValidToken(std::string(129, 'x')));
  CHECK_FALSE(IsValidToken(""));
  for (const char* bad : {"a.b", "a b", "a*", ">", "a>", "a\tb", "caf\xC3\xA9", "a/b", "a\n"}) {
    INFO(bad);
    CHECK_FALSE(IsValidToken(bad));
  }
}

TEST_CASE("severity and source names", "[log_lines]") {
  using muon::loglines::ParseSeverityName;
  using muon::loglines::ParseSourceName;
  using muon::loglines::SeverityName;
  using muon::loglines::SourceName;
  CHECK(ParseSeverityName("debug") == v1::SEVERITY_DEBUG);
  CHECK(ParseSeverityName("INFO") == v1::SEVERITY_INFO);
  CHECK(ParseSeverityName("Warn") == v1::SEVERITY_WARN);
  CHECK(ParseSeverityName("warning") == v1::SEVERITY_WARN);
  CHECK(ParseSeverityName("WARNING") == v1::SEVERITY_WARN);
  CHECK(ParseSeverityName("error") == v1::SEVERITY_ERROR);
  CHECK(ParseSeverityName("FATAL") == v1::SEVERITY_FATAL);
  CHECK_FALSE(ParseSeverityName(""));
  CHECK_FALSE(ParseSeverityName("verbose"));
  CHECK_FALSE(ParseSeverityName("err"));
  CHECK_FALSE(ParseSeverityName("errors"));
  CHECK_FALSE(ParseSeverityName("info "));
  for (auto s : {v1::SEVERITY_DEBUG, v1::SEVERITY_INFO, v1::SEVERITY_WARN, v1::SEVERITY_ERROR,
                 v1::SEVERITY_FATAL}) {
    CHECK(ParseSeverityName(SeverityName(s)) == s);
  }
  CHECK(SeverityName(v1::SEVERITY_UNSPECIFIED).empty());

  CHECK(ParseSourceName("app") == v1::SOURCE_APP);
  CHECK(ParseSourceName("System") == v1::SOURCE_SYSTEM);
  CHECK(ParseSourceName("BUILD") == v1::SOURCE_BUILD);
  CHECK(ParseSourceName("platform") == v1::SOURCE_PLATFORM);
  CHECK_FALSE(ParseSourceName(""));
  CHECK_FALSE(ParseSourceName("apps"));
  CHECK_FALSE(ParseSourceName("stdout"));
  for (auto s : {v1::SOURCE_APP, v1::SOURCE_SYSTEM, v1::SOURCE_BUILD, v1::SOURCE_PLATFORM}) {
    CHECK(ParseSourceName(SourceName(s)) == s);
  }
  CHECK(SourceName(v1::SOURCE_UNSPECIFIED).empty());
}

TEST_CASE("the read endpoint and the stream config", "[log_lines]") {
  CHECK(muon::loglines::ReadEndpoint("greeter") == "Read.greeter");
  CHECK(muon::loglines::ReadEndpoint("") == "Read.*");
  const auto config = muon::loglines::StreamConfig(std::chrono::hours(24), 1 << 20);
  CHECK(config.name == "LOGS");
  REQUIRE(config.subjects.size() == 1);
  CHECK(config.subjects[0] == "muon.log.>");
  CHECK(config.max_age == std::chrono::hours(24));
  CHECK(config.max_bytes == 1 << 20);
}

TEST_CASE("ParseJsDelivery reads delivery count and stream sequence from the ack subject",
          "[log_lines][jetstream]") {
  using muon::bus::ParseJsDelivery;
  SECTION("v1: 7 tokens") {
    const auto d = ParseJsDelivery("$JS.ACK.LOGS.logs.2.1234.99.1700000000000000000.5");
    REQUIRE(d);
    CHECK(d->delivered == 2);
    CHECK(d->stream_sequence == 1234);
    const auto first = ParseJsDelivery("$JS.ACK.LOGS.logs.1.1.1.1700000000000000000.0");
    REQUIRE(first);
    CHECK(first->delivered == 1);
    CHECK(first->stream_sequence == 1);
  }
  SECTION("v2: domain and account hash in front, a random token at the end") {
    const auto d =
        ParseJsDelivery("$JS.ACK._.ACCHASH.LOGS.logs.3.77.5.1700000000000000000.0.rnd123");
    REQUIRE(d);
    CHECK(d->delivered == 3);
    CHECK(d->stream_sequence == 77);
    const auto no_random =
        ParseJsDelivery("$JS.ACK.hub.ACCHASH.LOGS.logs.4.78.6.1700000000000000000.0");
    REQUIRE(no_random);
    CHECK(no_random->delivered == 4);
    CHECK(no_random->stream_sequence == 78);
  }
  SECTION("anything else is nullopt") {
    for (const char* bad : {
             "",
             "_INBOX.abc.def",
             "$JS.ACK",
             "$JS.ACK.",
             "$JS.ACK.LOGS.logs.2.1234.99.17",             // 6 tokens
             "$JS.ACK.LOGS.logs.2.1234.99.1700.5.6",       // 8 tokens
             "$JS.ACK.LOGS.logs.x.1234.99.1700000000.5",   // delivered not a number
             "$JS.ACK.LOGS.logs.2.12a4.99.1700000000.5",   // sequence not a number
             "$JS.ACK.LOGS.logs.2..99.1700000000.5",       // empty sequence
             "$JS.ACK.LOGS.logs.-2.1234.99.1700000000.5",  // negative
             "$JS.ACKX.LOGS.logs.2.1234.99.1700000000.5",  // other prefix
             "$js.ack.LOGS.logs.2.1234.99.1700000000.5",   // prefix is case-sensitive
             "muon.log.greeter.i-3",
         }) {
      INFO(bad);
      CHECK_FALSE(ParseJsDelivery(bad));
    }
  }
}

TEST_CASE("MaskSecrets replaces every occurrence of each secret", "[log_lines]") {
  std::string line = "token=s3cr3t-value and again s3cr3t-value; pin 123";
  muon::loglines::MaskSecrets(line, {"s3cr3t-value", "123"});
  CHECK(line == "token=[masked] and again [masked]; pin 123");  // 3 bytes: too short to mask
  std::string untouched = "nothing here";
  muon::loglines::MaskSecrets(untouched, {});
  CHECK(untouched == "nothing here");
}

TEST_CASE("AppendToBatch builds a LogBatch from serialized lines", "[log_lines]") {
  std::string batch;
  std::vector<v1::LogLine> lines;
  for (int i = 0; i < 3; ++i) {
    v1::LogLine line = Line();
    line.set_seq(static_cast<uint64_t>(10 + i));
    // The second one is longer than 127 bytes: its length takes a two-byte varint.
    line.set_message(i == 1 ? std::string(300, 'x') : "line " + std::to_string(i));
    muon::loglines::AppendToBatch(batch, line.SerializeAsString());
    lines.push_back(line);
  }
  // An empty line serializes to nothing: still one element.
  muon::loglines::AppendToBatch(batch, v1::LogLine().SerializeAsString());

  v1::LogBatch parsed;
  REQUIRE(parsed.ParseFromString(batch));
  REQUIRE(parsed.lines_size() == 4);
  for (int i = 0; i < 3; ++i) {
    INFO("line " << i);
    CHECK(parsed.lines(i).seq() == lines[i].seq());
    CHECK(parsed.lines(i).message() == lines[i].message());
  }
  CHECK(parsed.lines(3).seq() == 0);

  // The same bytes protobuf itself writes for the batch.
  v1::LogBatch expected;
  for (const auto& line : lines) *expected.add_lines() = line;
  expected.add_lines();
  CHECK(batch == expected.SerializeAsString());
}
