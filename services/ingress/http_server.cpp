#include "http_server.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <deque>
#include <mutex>
#include <utility>

#include "muon/common/log.h"

namespace muon::ingress {
namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

constexpr size_t kMaxChunkBytes = 64 * 1024;

// The thread-safe face of a session that streams its response.
class SessionStream : public ResponseStream {
 public:
  // Wakes the connection's worker to take the outbox (posted at most once until taken).
  std::function<void()> wake;
  boost::asio::io_context* context = nullptr;

  boost::asio::io_context& io() override { return *context; }
  // Pieces go through one queue whatever thread sends them, so they reach the client in the
  // order Send was called: posting each piece to the worker would let a piece sent from another
  // thread overtake those sent by a handler still running on the worker.
  void Send(std::string piece) override {
    if (closed_) return;
    Enqueue([&] {
      backlog_ += piece.size();
      outbox_.push_back(std::move(piece));
    });
  }
  void End() override {
    if (closed_.exchange(true)) return;
    Enqueue([&] { end_requested_ = true; });
  }
  bool Closed() const override { return closed_.load(); }
  size_t Backlog() const override { return backlog_.load(); }

  // Worker side.
  void MarkClosed() { closed_ = true; }
  void Written(size_t bytes) { backlog_ -= bytes; }
  // Moves what was sent since the last call to `into`; true once End was called.
  bool TakeOutbox(std::deque<std::string>& into) {
    std::lock_guard lock(mutex_);
    wake_pending_ = false;
    for (auto& piece : outbox_) into.push_back(std::move(piece));
    outbox_.clear();
    return end_requested_;
  }

 private:
  template <typename F>
  void Enqueue(F&& change) {
    bool post = false;
    {
      std::lock_guard lock(mutex_);
      change();
      post = !std::exchange(wake_pending_, true);
    }
    if (post) wake();
  }

  std::atomic<bool> closed_{false};
  std::atomic<size_t> backlog_{0};
  std::mutex mutex_;
  std::deque<std::string> outbox_;
  bool end_requested_ = false;
  bool wake_pending_ = false;
};

using TlsStream = beast::ssl_stream<tcp::socket>;
using Clock = std::chrono::steady_clock;

// One connection. Stream is tcp::socket or TlsStream.
//
// Timeouts are a deadline the session moves with a plain store, checked by one timer that wakes
// at most once per deadline: beast::tcp_stream's per-operation timers (a wait started and
// cancelled around every read and write, two more handler calls each) cost more than the rest of
// the connection's bookkeeping together.
template <typename Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  Session(Stream stream, HttpServer& server, RequestHandler& handler, const ServerOptions& options,
          size_t worker, ClientInfo client)
      : stream_(std::move(stream)),
        deadline_timer_(Socket().get_executor()),
        server_(server),
        handler_(handler),
        options_(options),
        worker_(worker),
        client_(std::move(client)) {
    server_.connection_counter()++;
  }
  ~Session() {
    if (auto handle = stream_handle_.lock()) handle->MarkClosed();
    if (counted_) server_.in_flight_counter()--;
    server_.connection_counter()--;
  }

  void Start() {
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
      ReadRequest();
    } else {
      SetDeadline(std::chrono::seconds(10));
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) return;  // a failed handshake is the client's problem
                                self->ReadRequest();
                              });
    }
  }

 private:
  tcp::socket& Socket() {
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
      return stream_;
    } else {
      return beast::get_lowest_layer(stream_);
    }
  }

  // The socket is closed once `timeout` passes without another SetDeadline or ClearDeadline:
  // its pending operations then fail (operation_aborted) and the session ends.
  void SetDeadline(Clock::duration timeout) {
    deadline_ = Clock::now() + timeout;
    // A later deadline waits for the armed timer, which re-arms when it finds one; only an
    // earlier one (a TLS handshake or shutdown) re-arms now.
    if (!timer_armed_ || deadline_ < timer_expiry_) ArmTimer();
  }
  void ClearDeadline() { deadline_ = Clock::time_point::max(); }

  void ArmTimer() {
    timer_armed_ = true;
    timer_expiry_ = deadline_;
    const uint64_t generation = ++timer_generation_;
    deadline_timer_.expires_at(deadline_);  // cancels a wait already there
    deadline_timer_.async_wait([weak = this->weak_from_this(), generation](beast::error_code ec) {
      auto self = weak.lock();
      if (!self || generation != self->timer_generation_) return;  // gone, or re-armed since
      self->timer_armed_ = false;
      if (ec) return;
      if (self->deadline_ == Clock::time_point::max()) return;  // SetDeadline arms it again
      if (Clock::now() < self->deadline_) return self->ArmTimer();
      beast::error_code ignored;
      self->Socket().close(ignored);
    });
  }

  void ReadRequest() {
    parser_.emplace();
    parser_->body_limit(options_.max_body_bytes);
    parser_->header_limit(64 * 1024);
    // The head first: the body limit depends on the path (webhooks may be large). Beast checks
    // Content-Length against the limit while parsing the head, so that takes the largest one.
    parser_->body_limit(server_.largest_body_limit());
    SetDeadline(options_.idle_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = this->shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->OnRead(ec);
                              self->ReadBody();
                            });
  }

  void ReadBody() {
    const auto target = parser_->get().target();
    const std::string_view path(target.data(), std::min(target.find('?'), target.size()));
    const auto limit = options_.path_body_limits.find(path);
    body_limit_ =
        limit == options_.path_body_limits.end() ? options_.max_body_bytes : limit->second;
    const auto length = parser_->content_length();
    if (length && *length > body_limit_) {
      return Refuse(413, fmt::format("request body is over the limit of {} bytes", body_limit_));
    }
    parser_->body_limit(body_limit_);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
        ec == asio::error::eof) {
      return Close();
    }
    if (ec == http::error::body_limit) {
      return Refuse(413, fmt::format("request body is over the limit of {} bytes", body_limit_));
    }
    if (ec == http::error::header_limit) {
      return Refuse(400, "request headers are over the 64 KiB limit");
    }
    if (ec) return Refuse(400, fmt::format("malformed HTTP request: {}", ec.message()));

    Request request = parser_->release();
    keep_alive_ = request.keep_alive();
    server_.in_flight_counter()++;
    counted_ = true;
    const unsigned version = request.version();
    // Nothing may time out the socket while the handler works; the handler has its own timeout.
    ClearDeadline();
    auto& io = server_.worker_context(worker_);
    handler_.Handle(
        std::move(request), client_, worker_,
        [self = this->shared_from_this(), &io, version](Response response) {
          asio::dispatch(io, [self, version, response = std::move(response)]() mutable {
            response.version(version);
            self->Write(std::move(response));
          });
        },
        [self = this->shared_from_this(), &io, version](Response head) {
          return self->StartStream(io, version, std::move(head));
        });
  }

  // ---- streamed responses ----

  std::shared_ptr<ResponseStream> StartStream(asio::io_context& io, unsigned version,
                                              Response head) {
    auto stream = std::make_shared<SessionStream>();
    stream->context = &io;
    std::weak_ptr<Session> weak = this->shared_from_this();
    stream->wake = [weak, &io] {
      asio::post(io, [weak] {
        if (auto self = weak.lock()) self->TakeOutbox();
      });
    };
    stream_handle_ = stream;
    asio::dispatch(io,
                   [self = this->shared_from_this(), version, head = std::move(head)]() mutable {
                     self->WriteStreamHead(version, std::move(head));
                   });
    return stream;
  }

  void WriteStreamHead(unsigned version, Response head) {
    keep_alive_ = false;
    // The request no longer counts as in flight: a tail may last for hours, and a drain must
    // not wait for it (the workers stopping closes it).
    if (counted_) {
      counted_ = false;
      server_.in_flight_counter()--;
    }
    stream_head_ = std::make_unique<http::response<http::empty_body>>(head.result(), version);
    for (const auto& field : head) stream_head_->set(field.name_string(), field.value());
    stream_head_->chunked(true);
    stream_head_->keep_alive(false);
    stream_serializer_ =
        std::make_unique<http::response_serializer<http::empty_body>>(*stream_head_);
    ClearDeadline();
    writing_ = true;
    http::async_write_header(stream_, *stream_serializer_,
                             [self = this->shared_from_this()](beast::error_code ec, size_t) {
                               self->writing_ = false;
                               if (ec) return self->StreamFailed();
                               self->WatchForClose();
                               self->WriteNextPiece();
                             });
  }

  // The client sends nothing after a streamed request; a read completing means it went away.
  void WatchForClose() {
    stream_.async_read_some(asio::buffer(close_probe_),
                            [self = this->shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->StreamFailed();
                              self->WatchForClose();  // stray bytes: ignore
                            });
  }

  void TakeOutbox() {
    auto handle = stream_handle_.lock();
    if (!handle || stream_done_) return;
    if (handle->TakeOutbox(pieces_)) stream_ending_ = true;
    if (!writing_ && stream_serializer_ && stream_serializer_->is_header_done()) WriteNextPiece();
  }

  void WriteNextPiece() {
    if (writing_ || stream_done_) return;
    if (pieces_.empty()) {
      if (!stream_ending_) return;
      stream_done_ = true;
      writing_ = true;
      asio::async_write(stream_, http::make_chunk_last(),
                        [self = this->shared_from_this()](beast::error_code, size_t) {
                          self->writing_ = false;
                          self->Close();
                        });
      return;
    }
    // Everything queued goes out as one chunk: a busy tail costs one write, not one per line.
    current_piece_ = std::move(pieces_.front());
    pieces_.pop_front();
    while (!pieces_.empty() && current_piece_.size() < kMaxChunkBytes) {
      current_piece_ += pieces_.front();
      pieces_.pop_front();
    }
    writing_ = true;
    asio::async_write(stream_, http::make_chunk(asio::buffer(current_piece_)),
                      [self = this->shared_from_this()](beast::error_code ec, size_t) {
                        self->writing_ = false;
                        if (auto handle = self->stream_handle_.lock()) {
                          handle->Written(self->current_piece_.size());
                        }
                        if (ec) return self->StreamFailed();
                        self->WriteNextPiece();
                      });
  }

  void StreamFailed() {
    if (auto handle = stream_handle_.lock()) handle->MarkClosed();
    if (stream_done_) return;
    stream_done_ = true;
    pieces_.clear();
    beast::error_code ignored;
    Socket().close(ignored);
  }

  void Refuse(unsigned status, const std::string& detail) {
    keep_alive_ = false;
    Response response = handler_.Refused(status, detail);
    Write(std::move(response));
  }

  void Write(Response response) {
    if (server_.draining()) keep_alive_ = false;
    response.keep_alive(keep_alive_);
    response.prepare_payload();
    response_ = std::make_unique<Response>(std::move(response));
    // A client that does not take its response within the idle timeout is dropped.
    SetDeadline(options_.idle_timeout);
    http::async_write(stream_, *response_,
                      [self = this->shared_from_this()](beast::error_code ec, size_t) {
                        self->response_.reset();
                        if (self->counted_) {
                          self->counted_ = false;
                          self->server_.in_flight_counter()--;
                        }
                        if (ec || !self->keep_alive_) return self->Close();
                        self->ReadRequest();
                      });
  }

  void Close() {
    beast::error_code ignored;
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
      stream_.shutdown(tcp::socket::shutdown_send, ignored);
    } else {
      SetDeadline(std::chrono::seconds(5));
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {});
    }
  }

  Stream stream_;
  asio::steady_timer deadline_timer_;
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point timer_expiry_;
  uint64_t timer_generation_ = 0;
  bool timer_armed_ = false;
  HttpServer& server_;
  RequestHandler& handler_;
  const ServerOptions& options_;
  size_t worker_;
  ClientInfo client_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::unique_ptr<Response> response_;
  bool keep_alive_ = true;
  size_t body_limit_ = 0;  // of the request being read
  bool counted_ = false;   // this connection's current request is in the in-flight count
  // Streamed response state (worker thread only).
  std::weak_ptr<SessionStream> stream_handle_;
  std::unique_ptr<http::response<http::empty_body>> stream_head_;
  std::unique_ptr<http::response_serializer<http::empty_body>> stream_serializer_;
  std::deque<std::string> pieces_;
  std::string current_piece_;
  std::array<char, 64> close_probe_{};
  bool writing_ = false;
  bool stream_ending_ = false;
  bool stream_done_ = false;
};

}  // namespace

HttpServer::HttpServer(ServerOptions options, RequestHandler& handler)
    : options_(std::move(options)), handler_(handler) {
  if (options_.workers == 0) options_.workers = 1;
  largest_body_limit_ = options_.max_body_bytes;
  for (const auto& [path, limit] : options_.path_body_limits) {
    largest_body_limit_ = std::max(largest_body_limit_, limit);
  }
  if (options_.tls_cert_file.empty() != options_.tls_key_file.empty()) {
    throw std::invalid_argument("TLS needs both a certificate file and a key file");
  }
  if (!options_.tls_cert_file.empty()) {
    tls_.emplace(asio::ssl::context::tls_server);
    tls_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1);
    tls_->use_certificate_chain_file(options_.tls_cert_file);
    tls_->use_private_key_file(options_.tls_key_file, asio::ssl::context::pem);
  }
  // The workers' io_contexts exist from here on, so bus connections can join them before Start.
  for (size_t i = 0; i < options_.workers; ++i) {
    auto worker = std::make_unique<Worker>();
    worker->io = std::make_unique<asio::io_context>(1);
    workers_.push_back(std::move(worker));
  }
}

HttpServer::~HttpServer() {
  for (auto& w : workers_) w->io->stop();
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
  // Destroying the io_contexts destroys the sessions still queued in them, and those update the
  // counters below: do it while the counters still exist.
  workers_.clear();
}

void HttpServer::Start() {
  const auto address = asio::ip::make_address(options_.address);
  uint16_t port = options_.port;
  for (size_t i = 0; i < options_.workers; ++i) {
    Worker* worker = workers_[i].get();
    worker->acceptor = std::make_unique<tcp::acceptor>(*worker->io);
    const tcp::endpoint endpoint(address, port);
    beast::error_code ec;
    worker->acceptor->open(endpoint.protocol(), ec);
    if (!ec) worker->acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) {
      // Every worker binds the same port; the kernel spreads connections over them.
      int one = 1;
      if (setsockopt(worker->acceptor->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one,
                     sizeof(one)) != 0) {
        ec = beast::error_code(errno, boost::system::system_category());
      }
    }
    if (!ec) worker->acceptor->bind(endpoint, ec);
    if (!ec) worker->acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      throw std::system_error(ec.value(), std::generic_category(),
                              fmt::format("cannot listen on {}:{}", options_.address, port));
    }
    port = worker->acceptor->local_endpoint().port();  // port 0: later workers share the first
  }
  bound_port_ = port;
  for (size_t i = 0; i < workers_.size(); ++i) {
    Accept(i);
    workers_[i]->thread = std::thread([io = workers_[i]->io.get()] {
      auto guard = asio::make_work_guard(*io);
      io->run();
    });
  }
}

void HttpServer::Accept(size_t worker) {
  auto& w = *workers_[worker];
  w.acceptor->async_accept(w.io->get_executor(), [this, worker](beast::error_code ec,
                                                                tcp::socket socket) {
    if (ec == asio::error::operation_aborted || draining_) return;
    if (!ec) {
      socket.set_option(tcp::no_delay(true), ec);
      beast::error_code ignored;
      ClientInfo client{socket.remote_endpoint(ignored).address().to_string(), tls_.has_value()};
      if (tls_) {
        std::make_shared<Session<TlsStream>>(TlsStream(std::move(socket), *tls_), *this, handler_,
                                             options_, worker, std::move(client))
            ->Start();
      } else {
        std::make_shared<Session<tcp::socket>>(std::move(socket), *this, handler_, options_, worker,
                                               std::move(client))
            ->Start();
      }
    } else {
      log::Warn("accept failed", {{"error", ec.message()}});
    }
    Accept(worker);
  });
}

void HttpServer::Drain(std::chrono::milliseconds timeout) {
  draining_ = true;
  for (auto& w : workers_) {
    if (!w->acceptor) continue;  // never started
    asio::post(*w->io, [acceptor = w->acceptor.get()] {
      beast::error_code ignored;
      acceptor->close(ignored);
    });
  }
  // Requests in flight finish and their replies carry Connection: close; idle keep-alive
  // connections hold no work and are closed when the workers stop below.
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (in_flight_.load() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (auto& w : workers_) w->io->stop();
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
}

}  // namespace muon::ingress
