// The ingress's HTTP server on its own, over real loopback sockets: connection deadlines (an
// idle or stalled connection is closed after the idle timeout, a busy one is not, a slow handler
// is not cut off) and keep-alive.

#include "http_server.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "harness.h"
#include "muon/common/fd.h"

using namespace std::chrono_literals;
namespace http = boost::beast::http;

namespace {

// Answers /fast at once and /slow after 1.6 s from another thread.
class TestHandler : public muon::ingress::RequestHandler {
 public:
  ~TestHandler() override {
    for (auto& t : slow_) t.join();
  }

  void Handle(muon::ingress::Request request, const muon::ingress::ClientInfo&, size_t,
              Respond respond, Stream) override {
    if (request.target() == "/slow") {
      slow_.emplace_back([respond = std::move(respond)] {
        std::this_thread::sleep_for(1600ms);  // the handler's own work, longer than the timeout
        respond(Ok("slow"));
      });
      return;
    }
    respond(Ok("fast"));
  }

  muon::ingress::Response Refused(unsigned status, const std::string& detail) override {
    muon::ingress::Response response{static_cast<http::status>(status), 11};
    response.body() = detail;
    return response;
  }

 private:
  static muon::ingress::Response Ok(const std::string& body) {
    muon::ingress::Response response{http::status::ok, 11};
    response.body() = body;
    return response;
  }
  std::vector<std::thread> slow_;
};

muon::Fd Connect(uint16_t port) {
  muon::Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(fd.get() >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  return fd;
}

void Send(const muon::Fd& fd, const std::string& text) {
  REQUIRE(::send(fd.get(), text.data(), text.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(text.size()));
}

// Reads one response (head and Content-Length body); "" when the connection closed first or
// nothing came within `deadline`.
std::string ReadResponse(const muon::Fd& fd, std::chrono::milliseconds deadline = 5s) {
  std::string data;
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    const size_t head_end = data.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      const size_t at = data.find("Content-Length: ");
      const size_t length = at == std::string::npos ? 0 : std::stoul(data.substr(at + 16));
      if (data.size() >= head_end + 4 + length) return data;
    }
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buffer[4096];
    const ssize_t n = ::recv(fd.get(), buffer, sizeof(buffer), 0);
    if (n <= 0) return "";
    data.append(buffer, static_cast<size_t>(n));
  }
  return "";
}

std::string Get(const std::string& path) {
  return "GET " + path + " HTTP/1.1\r\nHost: t\r\n\r\n";
}

// True once the server closed the connection (recv sees the end of the stream).
bool ClosedByServer(const muon::Fd& fd) {
  char byte;
  const ssize_t n = ::recv(fd.get(), &byte, 1, MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

struct Server {
  TestHandler handler;
  muon::ingress::HttpServer server;
  explicit Server(std::chrono::seconds idle_timeout)
      : server({.address = "127.0.0.1", .port = 0, .workers = 1, .idle_timeout = idle_timeout},
               handler) {
    server.Start();
  }
};

}  // namespace

TEST_CASE("an idle keep-alive connection is closed after the idle timeout, a busy one is not",
          "[http]") {
  Server s(1s);
  muon::Fd idle = Connect(s.server.port());
  muon::Fd busy = Connect(s.server.port());
  Send(idle, Get("/fast"));
  CHECK_THAT(ReadResponse(idle), Catch::EndsWith("fast"));

  // The busy connection asks every 200 ms for 2.4 s, more than twice the idle timeout.
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < 2400ms) {
    Send(busy, Get("/fast"));
    REQUIRE_THAT(ReadResponse(busy), Catch::EndsWith("fast"));
    std::this_thread::sleep_for(200ms);  // the client's think time, part of the scenario
  }
  CHECK(ClosedByServer(idle));
  CHECK_FALSE(ClosedByServer(busy));
  CHECK(muon::testing::WaitUntil([&] { return s.server.open_connections() == 1; }, 5s, 20ms));
}

TEST_CASE("a request head that stalls halfway is dropped after the idle timeout", "[http]") {
  Server s(1s);
  muon::Fd stalled = Connect(s.server.port());
  Send(stalled, "POST /fast HTTP/1.1\r\nHost: t\r\nContent-Le");
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(muon::testing::WaitUntil([&] { return ClosedByServer(stalled); }, 5s, 50ms));
  const auto waited = std::chrono::steady_clock::now() - start;
  CHECK(waited >= 900ms);  // not before the timeout...
  CHECK(waited < 3s);      // ...and soon after it
  CHECK(muon::testing::WaitUntil([&] { return s.server.open_connections() == 0; }, 5s, 20ms));
}

TEST_CASE("a handler slower than the idle timeout still gets its answer out", "[http]") {
  Server s(1s);
  muon::Fd conn = Connect(s.server.port());
  Send(conn, Get("/slow"));
  CHECK_THAT(ReadResponse(conn), Catch::StartsWith("HTTP/1.1 200") && Catch::EndsWith("slow"));
  // Kept alive afterwards.
  Send(conn, Get("/fast"));
  CHECK_THAT(ReadResponse(conn), Catch::EndsWith("fast"));
}
