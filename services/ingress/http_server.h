#pragma once
// The ingress's HTTP/1.1 server on Boost.Beast: one io_context and thread per worker, each with
// its own SO_REUSEPORT acceptor (connections stay on the worker that accepted them, so a request
// never crosses threads), keep-alive, one request at a time per connection (pipelined requests
// are answered in order), optional TLS, idle timeouts, and a graceful drain.

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>  // before Asio's headers with g++ 12 and C++20
#include <vector>

namespace muon::ingress {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;

struct ClientInfo {
  std::string address;  // remote IP
  bool tls = false;
};

// A response written in pieces (server-sent events): chunked transfer encoding, the connection
// closes when it ends. Every method may be called from any thread; pieces are written in order.
class ResponseStream {
 public:
  virtual ~ResponseStream() = default;
  virtual void Send(std::string piece) = 0;
  virtual void End() = 0;
  // True once the client went away (or End was called): the producer should stop.
  virtual bool Closed() const = 0;
  // Bytes queued but not yet written (a slow client makes this grow).
  virtual size_t Backlog() const = 0;
  // The connection's worker: timers of the producer belong there.
  virtual boost::asio::io_context& io() = 0;
};

// Answers one request. Runs on the worker's io thread and must not block; `respond` may be
// called later from any thread (it posts back to the connection's worker). Instead of `respond`,
// a handler may call `stream` once with the response head to send the body in pieces.
class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  using Respond = std::function<void(Response)>;
  using Stream = std::function<std::shared_ptr<ResponseStream>(Response head)>;
  virtual void Handle(Request request, const ClientInfo& client, size_t worker, Respond respond,
                      Stream stream) = 0;
  // Builds the reply for a request the server refused before routing (413, 400, ...).
  virtual Response Refused(unsigned status, const std::string& detail) = 0;
};

struct ServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 8080;
  size_t workers = 2;
  size_t max_body_bytes = 8 * 1024 * 1024;
  // Paths (without the query) with a body limit of their own, e.g. the webhook route.
  std::map<std::string, size_t, std::less<>> path_body_limits;
  std::chrono::seconds idle_timeout{60};
  std::string tls_cert_file;  // both set: HTTPS
  std::string tls_key_file;
};

class HttpServer {
 public:
  HttpServer(ServerOptions options, RequestHandler& handler);
  ~HttpServer();

  // Binds (throws std::system_error with the address on failure) and starts the workers.
  void Start();
  uint16_t port() const { return bound_port_; }
  boost::asio::io_context& worker_context(size_t i) { return *workers_[i]->io; }
  size_t worker_count() const { return workers_.size(); }

  // Stops accepting, lets in-flight requests finish (closing keep-alive connections after their
  // current response), waits up to `timeout`, then stops the workers.
  void Drain(std::chrono::milliseconds timeout);
  size_t open_connections() const { return connections_.load(); }
  bool draining() const { return draining_.load(); }

  size_t in_flight() const { return in_flight_.load(); }

  // Used by sessions.
  std::atomic<size_t>& connection_counter() { return connections_; }
  // The largest body any path accepts: what a request's head is parsed with.
  size_t largest_body_limit() const { return largest_body_limit_; }
  std::atomic<size_t>& in_flight_counter() { return in_flight_; }

 private:
  struct Worker {
    std::unique_ptr<boost::asio::io_context> io;
    std::unique_ptr<boost::asio::ip::tcp::acceptor> acceptor;
    std::thread thread;
  };
  void Accept(size_t worker);

  ServerOptions options_;
  RequestHandler& handler_;
  std::optional<boost::asio::ssl::context> tls_;
  std::vector<std::unique_ptr<Worker>> workers_;
  uint16_t bound_port_ = 0;
  size_t largest_body_limit_ = 0;
  std::atomic<size_t> connections_{0};
  std::atomic<size_t> in_flight_{0};
  std::atomic<bool> draining_{false};
};

}  // namespace muon::ingress
