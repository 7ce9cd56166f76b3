// GET /v1/logs/tail (server-sent events) through a real muon-ingress, with real muon-auth and
// muon-logs processes over a real nats-server and PostgreSQL, and lines published by Shippers
// from the test: the history/live seam under a continuous stream of lines (no gap, no repeat,
// per-instance order), every filter on history and live lines, the latency of a live line, the
// errors in the platform's shape (401, 400, 403, 405), and clients that go away.
//
// The tails are read by a small streaming HTTP/1.1 client over a raw socket (chunked transfer
// encoding decoded incrementally), since the harness's client only reads whole responses.

#include <arpa/inet.h>
#include <fmt/format.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "harness.h"
#include "http_client.h"
#include "muon/common/bus.h"
#include "muon/common/log_lines.h"
#include "muon/common/process.h"
#include "muon/logs/v1/logs.pb.h"

using namespace std::chrono_literals;
using muon::testing::HttpRequest;
using muon::testing::HttpResponse;
using muon::testing::WaitUntil;
namespace v1 = muon::logs::v1;
using SysClock = std::chrono::system_clock;
using Steady = std::chrono::steady_clock;

namespace {

// ---- small helpers ----

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path) << content;
  chmod(path.c_str(), 0600);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Tail(const std::string& text, size_t n = 3000) {
  return text.size() > n ? text.substr(text.size() - n) : text;
}

int64_t Micros(SysClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

int64_t Micros(const v1::LogLine& line) {
  return line.time().seconds() * 1000000 + line.time().nanos() / 1000;
}

SysClock::time_point FromMicros(int64_t us) {
  return SysClock::time_point(std::chrono::microseconds(us));
}

std::string JsonField(const std::string& json, const std::string& key) {
  google::protobuf::Struct s;
  if (!google::protobuf::util::JsonStringToMessage(json, &s).ok()) return {};
  auto it = s.fields().find(key);
  if (it == s.fields().end()) return {};
  if (it->second.has_number_value()) return fmt::format("{}", it->second.number_value());
  return it->second.string_value();
}

// The platform's error shape: {"id","code","detail","status"} with code == HTTP status.
void CheckError(const HttpResponse& r, int status, const std::string& id,
                const std::string& detail_part = "") {
  INFO("HTTP " << r.status << ": " << r.body);
  CHECK(r.status == status);
  CHECK(r.Header("content-type") == "application/json");
  CHECK_FALSE(r.Header("muon-request-id").empty());
  google::protobuf::Struct body;
  REQUIRE(google::protobuf::util::JsonStringToMessage(r.body, &body).ok());
  CHECK(JsonField(r.body, "id") == id);
  REQUIRE(body.fields().count("code") == 1);
  CHECK(body.fields().at("code").number_value() == status);
  CHECK_FALSE(JsonField(r.body, "status").empty());
  CHECK(JsonField(r.body, "status") != "Unknown");
  CHECK(JsonField(r.body, "detail").find(detail_part) != std::string::npos);
}

// ---- a streaming HTTP/1.1 client for server-sent events ----

struct SseEvent {
  std::string id;
  std::string event;
  std::string data;
  std::string comment;  // set (and the rest empty) for a block of comment lines only
  Steady::time_point at;
};

// One GET on its own connection; the response head, then events read as they arrive. Thread
// compatible (one thread at a time); never uses Catch2 macros, so it can run on reader threads.
class SseClient {
 public:
  // Connects and sends the request; the response is read by ReadHead.
  SseClient(uint16_t port, const std::string& target, const std::string& token,
            std::map<std::string, std::string> extra_headers = {}) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error("socket failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      fd_ = -1;
      throw std::runtime_error("cannot connect to the ingress");
    }
    std::string request = fmt::format(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: text/event-stream\r\n", target, port);
    if (!token.empty()) request += "Authorization: Bearer " + token + "\r\n";
    for (const auto& [k, v] : extra_headers) request += k + ": " + v + "\r\n";
    request += "\r\n";
    size_t sent = 0;
    while (sent < request.size()) {
      const ssize_t n = ::send(fd_, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error("cannot send the request");
      sent += static_cast<size_t>(n);
    }
  }
  ~SseClient() { Close(); }
  SseClient(const SseClient&) = delete;
  SseClient& operator=(const SseClient&) = delete;

  // Closes the connection; with reset, abortively (RST instead of FIN).
  void Close(bool reset = false) {
    if (fd_ < 0) return;
    if (reset) {
      linger l{1, 0};
      ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    ::close(fd_);
    fd_ = -1;
  }

  // Reads the status line and headers; false when they did not arrive by the deadline.
  bool ReadHead(Steady::time_point deadline) {
    while (!head_done_) {
      const auto end = raw_.find("\r\n\r\n");
      if (end != std::string::npos) {
        ParseHead(raw_.substr(0, end));
        raw_.erase(0, end + 4);
        head_done_ = true;
        Decode();
        break;
      }
      if (!Fill(deadline)) return false;
    }
    return true;
  }

  int status() const { return status_; }
  const std::map<std::string, std::string>& headers() const { return headers_; }
  std::string Header(const std::string& lower_name) const {
    auto it = headers_.find(lower_name);
    return it == headers_.end() ? std::string() : it->second;
  }

  // The whole body of a response that ends (an error); what arrived by the deadline otherwise.
  std::string ReadBody(Steady::time_point deadline) {
    while (!ended_ && Fill(deadline)) {
    }
    return body_;
  }

  // The next event, or nullopt when none is complete by the deadline or the response ended.
  std::optional<SseEvent> Next(Steady::time_point deadline) {
    while (true) {
      if (auto e = TakeEvent()) return e;
      if (ended_) return std::nullopt;
      if (!Fill(deadline)) return std::nullopt;
    }
  }

  bool ended() const { return ended_; }

 private:
  // Receives what is there (waiting until the deadline); false on timeout or end of stream.
  bool Fill(Steady::time_point deadline) {
    if (fd_ < 0 || eof_) return false;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Steady::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (ready <= 0) return Steady::now() < deadline;  // poll again (re-checks the deadline)
    char buf[16384];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
      eof_ = true;
      ended_ = true;
      return false;
    }
    raw_.append(buf, static_cast<size_t>(n));
    if (head_done_) Decode();
    return true;
  }

  void ParseHead(const std::string& head) {
    std::istringstream in(head);
    std::string line;
    std::getline(in, line);
    if (line.size() > 12) status_ = std::atoi(line.substr(9, 3).c_str());
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      std::transform(name.begin(), name.end(), name.begin(), ::tolower);
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      headers_[name] = value;
    }
    std::string te = Header("transfer-encoding");
    std::transform(te.begin(), te.end(), te.begin(), ::tolower);
    chunked_ = te.find("chunked") != std::string::npos;
    if (!chunked_) {
      const std::string cl = Header("content-length");
      content_length_ = cl.empty() ? -1 : std::stoll(cl);
    }
  }

  // Moves body bytes from raw_ to body_, undoing the chunked encoding as far as it can.
  void Decode() {
    if (!chunked_) {
      body_ += raw_;
      raw_.clear();
      if (content_length_ >= 0 && static_cast<int64_t>(body_.size()) >= content_length_) {
        ended_ = true;
      }
      return;
    }
    while (!ended_) {
      const auto eol = raw_.find("\r\n");
      if (eol == std::string::npos) return;
      const size_t size = std::stoul(raw_.substr(0, eol), nullptr, 16);  // ignores extensions
      if (size == 0) {
        ended_ = true;
        return;
      }
      if (raw_.size() < eol + 2 + size + 2) return;
      body_.append(raw_, eol + 2, size);
      raw_.erase(0, eol + 2 + size + 2);
    }
  }

  std::optional<SseEvent> TakeEvent() {
    const auto end = body_.find("\n\n");
    if (end == std::string::npos) return std::nullopt;
    const std::string block = body_.substr(0, end);
    body_.erase(0, end + 2);
    SseEvent e;
    e.at = Steady::now();
    std::istringstream in(block);
    std::string line;
    std::string comment;
    while (std::getline(in, line)) {
      auto value = [&](size_t prefix) {
        std::string v = line.substr(prefix);
        if (!v.empty() && v.front() == ' ') v.erase(0, 1);
        return v;
      };
      if (line.rfind(':', 0) == 0) {
        comment = value(1);
      } else if (line.rfind("id:", 0) == 0) {
        e.id = value(3);
      } else if (line.rfind("event:", 0) == 0) {
        e.event = value(6);
      } else if (line.rfind("data:", 0) == 0) {
        e.data += value(5);
      }
    }
    if (e.id.empty() && e.event.empty() && e.data.empty()) e.comment = comment;
    return e;
  }

  int fd_ = -1;
  std::string raw_;
  std::string body_;
  bool head_done_ = false;
  bool chunked_ = false;
  int64_t content_length_ = -1;
  bool ended_ = false;
  bool eof_ = false;
  int status_ = 0;
  std::map<std::string, std::string> headers_;
};

// What one tail showed: the history (before ": live"), then the live lines.
struct TailRead {
  std::vector<v1::LogLine> history;
  std::vector<v1::LogLine> live;
  std::vector<Steady::time_point> live_at;
  bool saw_live = false;
  std::vector<std::string> problems;  // error events, malformed events, id != stream_seq
};

void Absorb(const SseEvent& e, TailRead& read) {
  if (!e.comment.empty() || (e.event.empty() && e.data.empty())) {
    if (e.comment == "live") {
      if (read.saw_live) read.problems.push_back("a second \": live\" comment");
      read.saw_live = true;
    }
    return;  // keepalives
  }
  if (e.event != "line") {
    read.problems.push_back("event " + e.event + ": " + e.data);
    return;
  }
  v1::LogLine line;
  if (!google::protobuf::util::JsonStringToMessage(e.data, &line).ok()) {
    read.problems.push_back("data is not a LogLine: " + e.data);
    return;
  }
  if (e.id != std::to_string(line.stream_seq()) || line.stream_seq() == 0) {
    read.problems.push_back(
        fmt::format("id {} but streamSeq {} in {}", e.id, line.stream_seq(), e.data));
  }
  if (read.saw_live) {
    read.live.push_back(std::move(line));
    read.live_at.push_back(e.at);
  } else {
    read.history.push_back(std::move(line));
  }
}

// Reads events until `done` holds (checked after every event and at least every second) or the
// deadline passes or the stream ends; returns whether `done` held.
bool ReadUntil(SseClient& client, TailRead& read, const std::function<bool(const TailRead&)>& done,
               Steady::time_point deadline) {
  while (!done(read)) {
    if (Steady::now() >= deadline) return false;
    if (auto e = client.Next(std::min(deadline, Steady::now() + 200ms))) {
      Absorb(*e, read);
    } else if (client.ended()) {
      return done(read);
    }
  }
  return true;
}

bool HasLive(const TailRead& r) {
  return r.saw_live;
}

// ---- the stack: nats-server, PostgreSQL, muon-auth, muon-logs, muon-ingress ----

struct Stack {
  muon::testing::NatsServer nats;
  muon::testing::TempDir dir{"muon-test-tail"};
  std::string database = muon::testing::Postgres::Shared().CreateDatabase();
  muon::Process auth, logs, ingress;
  uint16_t port = muon::testing::FreePort();
  std::unique_ptr<muon::bus::Connection> bus;
  std::string admin;

  Stack() {
    WriteFile(dir.path() + "/admin-password", "correct horse battery staple");
    WriteFile(dir.path() + "/service-secret", "platform-secret-for-tests-0123456789abcdef");
    const std::string secret = dir.path() + "/service-secret";
    auth = Start("muon-auth", {},
                 {{"DATABASE_URL", database},
                  {"MUON_AUTH_KEY_FILE", dir.path() + "/auth.key"},
                  {"MUON_ADMIN_EMAIL", "admin@muon.local"},
                  {"MUON_ADMIN_PASSWORD_FILE", dir.path() + "/admin-password"},
                  {"MUON_SERVICE_SECRET_FILE", secret}});
    logs =
        Start("muon-logs", {}, {{"DATABASE_URL", database}, {"MUON_SERVICE_SECRET_FILE", secret}});
    ingress = Start("muon-ingress", {"--listen=127.0.0.1:" + std::to_string(port)},
                    {{"MUON_SERVICE_SECRET_FILE", secret}});
    const bool ready = WaitUntil(
        [&] {
          try {
            return HttpRequest("GET", url() + "/readyz").status == 200;
          } catch (const std::exception&) {
            return false;
          }
        },
        30s, 50ms);
    if (!ready) FAIL("the ingress did not become ready:\n" << Logs());
    admin = Login("admin@muon.local", "correct horse battery staple");
    // muon-logs answers once it has its schema, the stream and the rules.
    const bool logs_ready = WaitUntil(
        [&] { return Post("/v1/logs/Query", R"({"limit":1})", admin).status == 200; }, 30s, 50ms);
    if (!logs_ready) FAIL("muon-logs did not answer queries through the ingress:\n" << Logs());
    bus = muon::bus::Connection::Connect({.url = nats.url(), .name = "tail-test"});
    REQUIRE(bus->WaitConnected(5s));
  }

  muon::Process Start(const std::string& binary, std::vector<std::string> args,
                      std::map<std::string, std::string> env) {
    env["NATS_URL"] = nats.url();
    env["MUON_REGION"] = "us";
    return muon::Process({.program = muon::testing::BinDir() + "/" + binary,
                          .args = std::move(args),
                          .env = std::move(env),
                          .output_file = dir.path() + "/" + binary + ".log"});
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }

  std::string Logs() const {
    std::string all;
    for (const char* name : {"muon-auth", "muon-logs", "muon-ingress"}) {
      all += std::string("--- ") + name + "\n" + Tail(ReadFile(dir.path() + "/" + name + ".log"));
    }
    return all;
  }

  HttpResponse Post(const std::string& path, const std::string& body,
                    const std::string& token = "") {
    std::map<std::string, std::string> headers{{"Content-Type", "application/json"}};
    if (!token.empty()) headers["Authorization"] = "Bearer " + token;
    return HttpRequest("POST", url() + path, body, headers);
  }

  // A GET with deadlines throughout (a tail that unexpectedly answers 200 cannot hang the test:
  // its body is whatever arrived within 3 s).
  HttpResponse Get(const std::string& target, const std::string& token = "",
                   std::map<std::string, std::string> headers = {}) {
    SseClient client(port, target, token, std::move(headers));
    HttpResponse out;
    if (!client.ReadHead(Steady::now() + 10s)) throw std::runtime_error("no answer to " + target);
    out.status = client.status();
    out.headers = client.headers();
    out.body = client.ReadBody(Steady::now() + 3s);
    return out;
  }

  std::string Login(const std::string& email, const std::string& password) {
    auto r =
        Post("/v1/auth/Login", R"({"email":")" + email + R"(","password":")" + password + R"("})");
    INFO(r.body);
    REQUIRE(r.status == 200);
    return JsonField(r.body, "accessToken");
  }

  // An account with only `role`: invited by the admin, signed up, logged in.
  std::string Invitee(const std::string& email, const std::string& role) {
    auto invite = Post("/v1/auth/CreateInvite",
                       R"({"email":")" + email + R"(","roles":[")" + role + R"("]})", admin);
    INFO(invite.body);
    REQUIRE(invite.status == 200);
    auto signup = Post("/v1/auth/Signup",
                       R"({"inviteCode":")" + JsonField(invite.body, "code") + R"(","email":")" +
                           email + R"(","name":"Someone","password":"a long enough password"})");
    INFO(signup.body);
    REQUIRE(signup.status == 200);
    return Login(email, "a long enough password");
  }

  // Lines of `service` stored so far (through the ingress and muon-logs, as the admin).
  int Stored(const std::string& service) {
    auto r = Post("/v1/logs/Query", R"({"filter":{"service":")" + service + R"("},"limit":10000})",
                  admin);
    if (r.status != 200) return -1;
    v1::QueryResponse response;
    if (!google::protobuf::util::JsonStringToMessage(r.body, &response).ok()) return -1;
    return response.lines_size();
  }

  // Opens a tail and reads its response head.
  std::unique_ptr<SseClient> OpenTail(const std::string& query, const std::string& token) {
    auto client = std::make_unique<SseClient>(port, "/v1/logs/tail?" + query, token);
    const bool head = client->ReadHead(Steady::now() + 10s);
    INFO(query);
    REQUIRE(head);
    if (client->status() != 200) {
      FAIL("HTTP " << client->status() << " " << client->ReadBody(Steady::now() + 3s));
    }
    CHECK(client->Header("content-type") == "text/event-stream");
    CHECK(client->Header("cache-control") == "no-cache");
    CHECK_FALSE(client->Header("muon-request-id").empty());
    return client;
  }

  // Consumers of the LOGS stream (muon-logs' durable one plus one per open tail); -1 on error.
  int LogConsumers() {
    muon::bus::JetStream js(*bus);
    jsStreamInfo* info = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    if (js_GetStreamInfo(&info, js.raw(), "LOGS", nullptr, &code) != NATS_OK) return -1;
    const int consumers = static_cast<int>(info->State.Consumers);
    jsStreamInfo_Destroy(info);
    return consumers;
  }
};

using LineKey = std::tuple<int64_t, std::string, uint64_t>;  // the store's order: ts, instance, seq

LineKey KeyOf(const v1::LogLine& line) {
  return {Micros(line), line.instance(), line.seq()};
}

std::string Describe(const v1::LogLine& line) {
  return fmt::format("{}/{} seq {} stream_seq {} \"{}\"", line.service(), line.instance(),
                     line.seq(), line.stream_seq(), line.message());
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("a tail shows every line once, in order, across the history/live seam", "[logs][tail]") {
  Stack stack;
  constexpr size_t kBacklog = 50;
  const std::vector<std::string> instances{"i-1", "i-2"};
  std::vector<std::unique_ptr<muon::loglines::Shipper>> shippers;
  for (const auto& instance : instances) {
    shippers.push_back(std::make_unique<muon::loglines::Shipper>(
        *stack.bus,
        muon::loglines::ShipperOptions{
            .service = "seam", .instance = instance, .release = "v1", .source = v1::SOURCE_APP}));
  }

  // Emitted lines by instance: (seq, emitter time in µs). Written by the emitter thread only,
  // read after it joined.
  struct Sent {
    uint64_t seq;
    int64_t us;
  };
  std::map<std::string, std::vector<Sent>> sent;
  std::atomic<bool> stop{false};
  std::atomic<int> rounds{0};
  std::thread emitter([&] {
    int64_t last_us = 0;
    for (int k = 1; !stop; ++k) {
      for (size_t i = 0; i < shippers.size(); ++i) {
        // Strictly increasing times, whole microseconds (what the store keeps).
        const int64_t us = std::max(Micros(SysClock::now()), last_us + 1);
        last_us = us;
        sent[instances[i]].push_back({shippers[i]->next_seq(), us});
        shippers[i]->Emit(v1::SEVERITY_INFO, fmt::format("seam line {} of {}", k, instances[i]), "",
                          FromMicros(us));
      }
      rounds = k;
      std::this_thread::sleep_for(2ms);  // pacing, not a readiness check
    }
  });

  // Enough history for the first tail's backlog.
  const bool history = WaitUntil([&] { return stack.Stored("seam") >= int(2 * kBacklog); }, 15s);
  if (!history) {
    stop = true;
    emitter.join();
    FAIL("lines were not stored:\n" << stack.Logs());
  }

  // Five tails opened at different moments while the lines keep coming; each read on its own
  // thread until the last line of every instance arrived.
  struct Reader {
    std::unique_ptr<SseClient> client;
    TailRead read;
    bool head = false;
    bool complete = false;
    std::thread thread;
  };
  std::atomic<uint64_t> last_i1{0}, last_i2{0};
  std::atomic<bool> abandon{false};  // the test failed early: readers stop
  auto done = [&](const TailRead& r) {
    if (abandon) return true;
    const uint64_t want1 = last_i1, want2 = last_i2;
    if (want1 == 0 || want2 == 0) return false;
    bool got1 = false, got2 = false;
    for (const auto* part : {&r.history, &r.live}) {
      for (const auto& line : *part) {
        got1 = got1 || (line.instance() == "i-1" && line.seq() == want1);
        got2 = got2 || (line.instance() == "i-2" && line.seq() == want2);
      }
    }
    return got1 && got2;
  };
  const std::vector<std::chrono::milliseconds> gaps{0ms, 90ms, 170ms, 35ms, 260ms};
  std::vector<std::unique_ptr<Reader>> readers;
  // Threads are joined even when an exception (a failed connect) leaves this scope early.
  struct JoinAll {
    std::function<void()> join;
    ~JoinAll() { join(); }
  } join_all{[&] {
    stop = true;
    if (emitter.joinable()) emitter.join();
    if (last_i1 == 0) abandon = true;
    for (auto& r : readers) {
      if (r->thread.joinable()) r->thread.join();
    }
  }};
  for (auto gap : gaps) {
    std::this_thread::sleep_for(gap);  // pacing: tails open at different moments
    auto reader = std::make_unique<Reader>();
    reader->client = std::make_unique<SseClient>(
        stack.port, fmt::format("/v1/logs/tail?service=seam&n={}", kBacklog), stack.admin);
    reader->thread = std::thread([r = reader.get(), &done] {
      r->head = r->client->ReadHead(Steady::now() + 10s);
      if (!r->head || r->client->status() != 200) return;
      r->complete = ReadUntil(*r->client, r->read, done, Steady::now() + 30s);
    });
    readers.push_back(std::move(reader));
  }
  std::this_thread::sleep_for(300ms);  // lines keep coming after the last tail opened
  stop = true;
  emitter.join();
  for (auto& shipper : shippers) CHECK(shipper->Flush(10s));
  last_i1 = sent["i-1"].back().seq;
  last_i2 = sent["i-2"].back().seq;
  join_all.join();
  INFO("emitted " << rounds.load() << " rounds of " << instances.size() << " lines");

  for (size_t t = 0; t < readers.size(); ++t) {
    const Reader& r = *readers[t];
    INFO("tail #" << t << " (opened " << gaps[t].count() << " ms after the previous one)");
    REQUIRE(r.head);
    REQUIRE(r.client->status() == 200);
    CHECK(r.client->Header("content-type") == "text/event-stream");
    const TailRead& read = r.read;
    INFO("history " << read.history.size() << " lines, live " << read.live.size() << " lines");
    CHECK(read.problems.empty());
    for (const auto& p : read.problems) UNSCOPED_INFO(p);
    CHECK(read.saw_live);
    CHECK(r.complete);
    // Before ": live": exactly the last n lines, in the store's order. A live line sent ahead of
    // the history (and of the ": live" comment) shows here as extra lines out of order.
    std::string history_dump;
    for (const auto& l : read.history) history_dump += "\n  " + Describe(l);
    {
      INFO("the part before \": live\":" << Tail(history_dump, 1500));
      CHECK(read.history.size() == kBacklog);
      CHECK(std::is_sorted(read.history.begin(), read.history.end(),
                           [](const auto& a, const auto& b) { return KeyOf(a) < KeyOf(b); }));
    }
    REQUIRE_FALSE(read.history.empty());

    // After ": live": no line older (per instance) than one the history already showed.
    for (const auto& instance : instances) {
      uint64_t newest_shown = 0;
      for (const auto& l : read.history) {
        if (l.instance() == instance) newest_shown = std::max(newest_shown, l.seq());
      }
      for (const auto& l : read.live) {
        if (l.instance() == instance && l.seq() < newest_shown) {
          FAIL_CHECK("a live line older than the history's newest line of "
                     << instance << " (seq " << newest_shown << "): " << Describe(l)
                     << "; the part before \": live\":" << Tail(history_dump, 1500));
          break;
        }
      }
    }

    // Every line at or after the oldest one shown (in the store's order), each exactly once and
    // in order per instance, history then live.
    LineKey oldest = KeyOf(read.history.front());
    for (const auto& line : read.history) oldest = std::min(oldest, KeyOf(line));
    for (const auto& instance : instances) {
      INFO("instance " << instance);
      std::vector<uint64_t> expected;
      for (const auto& s : sent[instance]) {
        if (LineKey{s.us, instance, s.seq} >= oldest) expected.push_back(s.seq);
      }
      std::vector<uint64_t> shown;
      std::vector<std::string> where;  // for the failure message
      for (const auto* part : {&read.history, &read.live}) {
        for (const auto& line : *part) {
          if (line.service() != "seam") {
            FAIL_CHECK("a line of another service: " << Describe(line));
            continue;
          }
          if (line.instance() != instance) continue;
          shown.push_back(line.seq());
          where.push_back((part == &read.history ? "history " : "live ") + Describe(line));
        }
      }
      // Exactly once, no gap: the same lines, whatever the order.
      std::map<uint64_t, int> count;
      for (auto seq : shown) count[seq]++;
      const std::set<uint64_t> want(expected.begin(), expected.end());
      std::string repeats, missing, extra;
      for (const auto& [seq, n] : count) {
        if (n > 1) repeats += fmt::format(" {}x{}", seq, n);
        if (!want.contains(seq)) extra += fmt::format(" {}", seq);
      }
      for (auto seq : expected) {
        if (!count.contains(seq)) missing += fmt::format(" {}", seq);
      }
      INFO(shown.size() << " shown, " << expected.size() << " expected");
      INFO("repeated:" << (repeats.empty() ? " none" : Tail(repeats, 400)));
      INFO("missing:" << (missing.empty() ? " none" : Tail(missing, 400)));
      INFO("not expected (older than the oldest shown):" << (extra.empty() ? " none"
                                                                           : Tail(extra, 400)));
      CHECK((repeats.empty() && missing.empty() && extra.empty()));

      // In order per instance, history then live.
      std::string first;
      for (size_t i = 0; i < std::max(shown.size(), expected.size()); ++i) {
        if (i >= shown.size() || i >= expected.size() || shown[i] != expected[i]) {
          first = fmt::format(
              "first difference at position {}: shown {}, expected seq {}", i,
              i < where.size() ? where[i] : "(nothing)",
              i < expected.size() ? std::to_string(expected[i]) : std::string("(nothing)"));
          if (i > 0) first += "; the line before it: " + where[i - 1];
          break;
        }
      }
      INFO(first);
      CHECK(first.empty());
    }
  }
}

// ---------------------------------------------------------------------------------------------

namespace {

struct SentLine {
  std::string service, instance, release;
  v1::Source source;
  v1::Severity severity;
  std::string message;
  uint64_t seq;
};

using LineId = std::pair<std::string, uint64_t>;  // (instance, seq) of service "filt"

LineId IdOf(const SentLine& s) {
  return {s.instance, s.seq};
}
LineId IdOf(const v1::LogLine& l) {
  return {l.instance(), l.seq()};
}

// The test's own reading of a tail's filter (not loglines::Matches).
struct TailFilter {
  std::string query;
  size_t n = 100;
  std::string service = "filt";
  std::string instance, release, grep;
  v1::Source source = v1::SOURCE_UNSPECIFIED;
  v1::Severity min_severity = v1::SEVERITY_UNSPECIFIED;

  bool Wants(const std::string& service_, const std::string& instance_, const std::string& release_,
             v1::Source source_, v1::Severity severity_, const std::string& message_) const {
    if (service_ != service) return false;
    if (!instance.empty() && instance_ != instance) return false;
    if (!release.empty() && release_ != release) return false;
    if (source != v1::SOURCE_UNSPECIFIED && source_ != source) return false;
    if (min_severity != v1::SEVERITY_UNSPECIFIED && severity_ < min_severity) return false;
    if (!grep.empty()) {
      std::string hay = message_, needle = grep;
      for (auto& c : hay) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      for (auto& c : needle) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (hay.find(needle) == std::string::npos) return false;
    }
    return true;
  }
  bool Wants(const SentLine& s) const {
    return Wants(s.service, s.instance, s.release, s.source, s.severity, s.message);
  }
  bool Wants(const v1::LogLine& l) const {
    return Wants(l.service(), l.instance(), l.release(), l.source(), l.severity(), l.message());
  }
};

}  // namespace

TEST_CASE("a tail's filters apply to its history and to every live line", "[logs][tail]") {
  Stack stack;
  // One Shipper per instance (an instance has one numbering); an instance's system notes go
  // through its shipper with EmitFrom, as the node runtime sends them.
  struct Emitter {
    std::unique_ptr<muon::loglines::Shipper> shipper;
    bool with_system_notes = false;
    int n = 0;
  };
  std::vector<Emitter> emitters;
  auto add = [&](std::string service, std::string instance, std::string release, v1::Source source,
                 bool with_system_notes) {
    emitters.push_back(
        {std::make_unique<muon::loglines::Shipper>(
             *stack.bus, muon::loglines::ShipperOptions{.service = std::move(service),
                                                        .instance = std::move(instance),
                                                        .release = std::move(release),
                                                        .source = source}),
         with_system_notes});
  };
  add("filt", "i-1", "v1", v1::SOURCE_APP, false);
  add("filt", "i-2", "v1", v1::SOURCE_APP, true);
  add("filt", "i-3", "v2", v1::SOURCE_BUILD, false);
  add("filt", "i-4", "v3", v1::SOURCE_PLATFORM, false);
  add("other", "i-2", "v1", v1::SOURCE_APP, true);  // another service, otherwise like filt/i-2
  std::vector<SentLine> sent;                       // in emission order, which is time order
  auto emit = [&](Emitter& e, v1::Source source, v1::Severity severity,
                  const std::string& message) {
    const auto& o = e.shipper->options();
    sent.push_back(
        {o.service, o.instance, o.release, source, severity, message, e.shipper->next_seq()});
    if (source == o.source) {
      e.shipper->Emit(severity, message);
    } else {
      e.shipper->EmitFrom(source, severity, message);
    }
  };
  auto flush = [&] {
    for (auto& e : emitters) REQUIRE(e.shipper->Flush(10s));
  };
  auto batch = [&](int per_emitter, const std::string& label) {
    for (int j = 0; j < per_emitter; ++j) {
      for (size_t k = 0; k < emitters.size(); ++k) {
        auto& e = emitters[k];
        const int n = e.n++;
        const auto severity = static_cast<v1::Severity>(1 + (n + static_cast<int>(k)) % 5);
        const auto& o = e.shipper->options();
        const auto source = e.with_system_notes && n % 2 == 1 ? v1::SOURCE_SYSTEM : o.source;
        const std::string message =
            n % 3 == 0 ? fmt::format("{} {}: found the NeEdLe in line {}", label, o.instance, n)
                       : fmt::format("{} {}: plain hay, line {}", label, o.instance, n);
        emit(e, source, severity, message);
      }
    }
    flush();
  };

  // History: lines stored before the tails open.
  batch(8, "before");
  const size_t before = sent.size();
  const int filt_before = static_cast<int>(
      std::count_if(sent.begin(), sent.end(), [](const auto& s) { return s.service == "filt"; }));
  int stored = 0;
  const bool all_stored = WaitUntil(
      [&] {
        stored = stack.Stored("filt");
        return stored == filt_before;
      },
      15s);
  INFO("stored " << stored << " of " << filt_before);
  REQUIRE(all_stored);

  std::vector<TailFilter> filters;
  auto filter = [&](std::string query, auto set) {
    TailFilter f;
    f.query = std::move(query);
    set(f);
    filters.push_back(f);
  };
  filter("service=filt&severity=warn&n=100",
         [](TailFilter& f) { f.min_severity = v1::SEVERITY_WARN; });
  filter("service=filt&grep=needle&n=100", [](TailFilter& f) { f.grep = "needle"; });
  filter("service=filt&source=system&n=100", [](TailFilter& f) { f.source = v1::SOURCE_SYSTEM; });
  filter("service=filt&source=build&n=100", [](TailFilter& f) { f.source = v1::SOURCE_BUILD; });
  filter("service=filt&source=app&n=100", [](TailFilter& f) { f.source = v1::SOURCE_APP; });
  filter("service=filt&instance=i-2&n=100", [](TailFilter& f) { f.instance = "i-2"; });
  filter("service=filt&release=v2&n=100", [](TailFilter& f) { f.release = "v2"; });
  filter("service=filt&severity=ERROR&grep=NEEDLE&instance=i-2&source=system&release=v1&n=100",
         [](TailFilter& f) {
           f.min_severity = v1::SEVERITY_ERROR;
           f.grep = "needle";
           f.instance = "i-2";
           f.source = v1::SOURCE_SYSTEM;
           f.release = "v1";
         });
  filter("service=filt&instance=i-1&n=3", [](TailFilter& f) {  // the history's last 3 only
    f.instance = "i-1";
    f.n = 3;
  });
  filter("service=filt&severity=fatal&n=0", [](TailFilter& f) {  // no history at all
    f.min_severity = v1::SEVERITY_FATAL;
    f.n = 0;
  });

  std::vector<std::unique_ptr<SseClient>> tails;
  std::vector<TailRead> reads(filters.size());
  for (size_t t = 0; t < filters.size(); ++t) {
    tails.push_back(stack.OpenTail(filters[t].query, stack.admin));
    INFO(filters[t].query);
    REQUIRE(ReadUntil(*tails[t], reads[t], HasLive, Steady::now() + 10s));
  }

  // Live: more of the same; once all of it is in the stream, one sentinel line per tail that
  // the tail wants. Every line of the batch precedes every sentinel in the stream, so a tail
  // that has its sentinels has been shown (or not) every line of the batch.
  batch(12, "after");
  for (size_t t = 0; t < filters.size(); ++t) {
    bool found = false;
    for (auto& e : emitters) {
      const auto& o = e.shipper->options();
      for (auto source : {o.source, v1::SOURCE_SYSTEM}) {
        if (source != o.source && !e.with_system_notes) continue;
        const std::string message = fmt::format("the needle sentinel of tail {}", t);
        if (!found && filters[t].Wants(o.service, o.instance, o.release, source, v1::SEVERITY_FATAL,
                                       message)) {
          emit(e, source, v1::SEVERITY_FATAL, message);
          found = true;
        }
      }
    }
    REQUIRE(found);
  }
  flush();

  for (size_t t = 0; t < filters.size(); ++t) {
    const TailFilter& f = filters[t];
    const TailRead& read = reads[t];
    INFO(f.query);
    std::set<LineId> want_live;
    for (size_t i = before; i < sent.size(); ++i) {
      if (f.Wants(sent[i])) want_live.insert(IdOf(sent[i]));
    }
    CHECK(want_live.size() > 1);
    const bool complete = ReadUntil(
        *tails[t], reads[t],
        [&](const TailRead& r) {
          size_t got = 0;
          for (const auto& l : r.live) got += want_live.contains(IdOf(l)) ? 1 : 0;
          return got >= want_live.size();
        },
        Steady::now() + 10s);
    CHECK(complete);
    CHECK(read.problems.empty());
    for (const auto& p : read.problems) UNSCOPED_INFO(p);
    for (const auto* part : {&read.history, &read.live}) {
      for (const auto& line : *part) {
        if (!f.Wants(line)) FAIL_CHECK("a line the filter does not want: " << Describe(line));
      }
    }

    // The history: the last n wanted lines stored before the tail opened, oldest first.
    std::vector<LineId> want_history;
    for (size_t i = 0; i < before; ++i) {
      if (f.Wants(sent[i])) want_history.push_back(IdOf(sent[i]));
    }
    if (want_history.size() > f.n) {
      want_history.erase(want_history.begin(), want_history.end() - static_cast<long>(f.n));
    }
    std::vector<LineId> history;
    for (const auto& l : read.history) history.push_back(IdOf(l));
    CHECK(history == want_history);

    // Live: exactly the wanted lines sent after the tail opened, each once, in order per
    // instance.
    std::multiset<LineId> live;
    std::map<std::string, uint64_t> last_seq;
    for (const auto& l : read.live) {
      live.insert(IdOf(l));
      auto& last = last_seq[l.instance()];
      if (l.seq() <= last) FAIL_CHECK("out of order: " << Describe(l) << " after seq " << last);
      last = l.seq();
    }
    CHECK(live == std::multiset<LineId>(want_live.begin(), want_live.end()));
  }
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("a line emitted while a tail is open arrives within a second", "[logs][tail]") {
  Stack stack;
  muon::loglines::Shipper shipper(*stack.bus, {.service = "lat", .instance = "i-1"});
  auto tail = stack.OpenTail("service=lat&n=0", stack.admin);
  TailRead read;
  REQUIRE(ReadUntil(*tail, read, HasLive, Steady::now() + 10s));
  CHECK(read.history.empty());

  constexpr int kProbes = 30;
  std::vector<double> ms;
  for (int i = 0; i < kProbes; ++i) {
    const uint64_t seq = shipper.next_seq();
    const auto sent_at = Steady::now();
    shipper.Emit(v1::SEVERITY_INFO, fmt::format("latency probe {}", i));
    const bool arrived = ReadUntil(
        *tail, read,
        [&](const TailRead& r) { return !r.live.empty() && r.live.back().seq() == seq; },
        Steady::now() + 5s);
    INFO("probe " << i);
    REQUIRE(arrived);
    ms.push_back(std::chrono::duration<double, std::milli>(read.live_at.back() - sent_at).count());
    if (i % 3 == 2) std::this_thread::sleep_for(20ms);  // pacing: some probes on an idle stream
  }
  CHECK(read.live.size() == kProbes);
  CHECK(read.problems.empty());
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  WARN(
      fmt::format("tail latency over {} lines (emit to event read): first {:.2f} ms, median "
                  "{:.2f} ms, p90 {:.2f} ms, max {:.2f} ms",
                  kProbes, ms.front(), sorted[sorted.size() / 2], sorted[sorted.size() * 9 / 10],
                  sorted.back()));
  for (size_t i = 0; i < ms.size(); ++i) {
    INFO("probe " << i);
    CHECK(ms[i] < 1000.0);
  }
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("tail errors come in the platform's error shape", "[logs][tail]") {
  Stack stack;
  const std::string developer = stack.Invitee("dev@example.com", "developer");
  const std::string viewer = stack.Invitee("viewer@example.com", "viewer");

  SECTION("401 without a token or with a bad one") {
    CheckError(stack.Get("/v1/logs/tail?service=web"), 401, "logs.Tail", "sign in first");
    CheckError(stack.Get("/v1/logs/tail?service=web", "not-a-token"), 401, "logs.Tail");
    auto basic =
        stack.Get("/v1/logs/tail?service=web", "", {{"Authorization", "Basic YWRtaW46cGFzcw=="}});
    CheckError(basic, 401, "logs.Tail", "Bearer");
  }
  SECTION("400 for a bad parameter") {
    const std::vector<std::pair<std::string, std::string>> bad{
        {"service=web&severity=loud", "severity"},
        {"service=web&n=5000", "n must"},
        {"service=web&n=1001", "n must"},
        {"service=web&n=-1", "n must"},
        {"service=web&n=ten", "n must"},
        {"service=web&n=", "n must"},
        {"service=web&colour=red", "unknown parameter colour"},
        {"service=web&source=kernel", "source"},
        {"service=we.b", "service"},
        {"service=", "service"},
        {"service=web&instance=i.1", "instance"},
        {"service=web&release=" + std::string(200, 'r'), "release"},
        {"service=web&grep=" + std::string(1100, 'x'), "grep"},
        {"service=web&grep=%zz", ""},
    };
    for (const auto& token : {developer, stack.admin}) {
      for (const auto& [query, detail] : bad) {
        INFO("GET /v1/logs/tail?" << query.substr(0, 60) << " as "
                                  << (token == developer ? "developer" : "admin"));
        CheckError(stack.Get("/v1/logs/tail?" + query, token), 400, "logs.Tail", detail);
      }
    }
  }
  SECTION("403 for an account whose role has no logs rule; a developer and an admin may tail") {
    CheckError(stack.Get("/v1/logs/tail?service=web", viewer), 403, "logs.Tail",
               "viewer@example.com");
    CheckError(stack.Get("/v1/logs/tail?service=web&n=5000", viewer), 403, "logs.Tail");
    for (const auto& token : {developer, stack.admin}) {
      auto tail = stack.OpenTail("service=web&n=10", token);
      TailRead read;
      CHECK(ReadUntil(*tail, read, HasLive, Steady::now() + 10s));
      CHECK(read.problems.empty());
    }
    // Every service's logs, or one instance id under any service: logs."Read.*", which the
    // default rules give developers.
    for (const auto& query : {"n=10", "instance=i-1&n=10"}) {
      INFO(query);
      auto tail = stack.OpenTail(query, developer);
      TailRead read;
      CHECK(ReadUntil(*tail, read, HasLive, Steady::now() + 10s));
      CHECK(read.problems.empty());
    }
  }
  SECTION("405 for another verb") {
    auto r = HttpRequest("POST", stack.url() + "/v1/logs/tail?service=web", "{}",
                         {{"Authorization", "Bearer " + developer}}, 5s);
    CheckError(r, 405, "logs.Tail");
  }
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("clients that go away leave the ingress healthy and its tails working", "[logs][tail]") {
  Stack stack;
  muon::loglines::Shipper shipper(*stack.bus, {.service = "dc", .instance = "i-1"});
  for (int i = 0; i < 20; ++i) shipper.Emit(v1::SEVERITY_INFO, fmt::format("early line {}", i));
  REQUIRE(shipper.Flush(10s));
  REQUIRE(WaitUntil([&] { return stack.Stored("dc") == 20; }, 15s));
  const int consumers_before = stack.LogConsumers();
  REQUIRE(consumers_before >= 1);

  // A tail that stays open throughout.
  auto steady_tail = stack.OpenTail("service=dc&n=0", stack.admin);
  TailRead steady_read;
  REQUIRE(ReadUntil(*steady_tail, steady_read, HasLive, Steady::now() + 10s));

  // Clients leaving at every stage: before the answer, right after the head, during the
  // history, while live (with FIN and with RST), and with unread live lines pending.
  {
    SseClient before_answer(stack.port, "/v1/logs/tail?service=dc&n=20", stack.admin);
    before_answer.Close(/*reset=*/true);
  }
  for (bool reset : {false, true}) {
    auto after_head = stack.OpenTail("service=dc&n=1000", stack.admin);
    after_head->Close(reset);
    auto live = stack.OpenTail("service=dc&n=5", stack.admin);
    TailRead read;
    REQUIRE(ReadUntil(*live, read, HasLive, Steady::now() + 10s));
    CHECK(read.history.size() == 5);
    shipper.Emit(v1::SEVERITY_INFO, "seen by the leaving client");
    const uint64_t seq = shipper.next_seq() - 1;
    CHECK(ReadUntil(
        *live, read,
        [&](const TailRead& r) { return !r.live.empty() && r.live.back().seq() == seq; },
        Steady::now() + 5s));
    live->Close(reset);
  }
  auto unread = stack.OpenTail("service=dc&n=0", stack.admin);
  // Lines for the tails that left (and the one that does not read).
  for (int i = 0; i < 200; ++i) shipper.Emit(v1::SEVERITY_INFO, fmt::format("late line {}", i));
  REQUIRE(shipper.Flush(10s));
  unread->Close(true);

  // The ingress is alive and healthy; the tail that stayed saw every line; a new tail works.
  CHECK(stack.ingress.Running());
  CHECK(stack.Get("/healthz").status == 200);
  CHECK(stack.Get("/readyz").status == 200);
  const uint64_t last = shipper.next_seq() - 1;
  CHECK(ReadUntil(
      *steady_tail, steady_read,
      [&](const TailRead& r) { return !r.live.empty() && r.live.back().seq() == last; },
      Steady::now() + 10s));
  CHECK(steady_read.live.size() == 202);
  CHECK(steady_read.problems.empty());

  REQUIRE(WaitUntil([&] { return stack.Stored("dc") == static_cast<int>(last); }, 15s));
  auto fresh = stack.OpenTail("service=dc&n=3", stack.admin);
  TailRead fresh_read;
  REQUIRE(ReadUntil(*fresh, fresh_read, HasLive, Steady::now() + 10s));
  REQUIRE(fresh_read.history.size() == 3);
  CHECK(fresh_read.history.back().seq() == last);
  shipper.Emit(v1::SEVERITY_WARN, "after everyone left");
  CHECK(ReadUntil(
      *fresh, fresh_read,
      [&](const TailRead& r) { return !r.live.empty() && r.live.back().seq() == last + 1; },
      Steady::now() + 5s));

  // Nothing leaks (best effort): the live consumers of the tails that left go away (the tail
  // notices on its 5 s tick), leaving muon-logs' durable one and the two open tails'.
  int consumers = -1;
  const bool released = WaitUntil(
      [&] {
        consumers = stack.LogConsumers();
        return consumers == consumers_before + 2;
      },
      15s, 100ms);
  INFO("LOGS consumers: " << consumers << ", before the tails: " << consumers_before);
  CHECK(released);
  auto metrics = stack.Get("/metrics");
  CHECK(metrics.status == 200);
  CHECK(metrics.body.find(R"(muon_ingress_requests_total{route="/v1/logs/tail",status="200"})") !=
        std::string::npos);
  CHECK(stack.ingress.Running());
}
