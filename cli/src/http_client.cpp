#include "muon/cli/http_client.h"

// Asio's coroutine support needs <utility> first with g++ 12.
#include <utility>
// clang-format off
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
// clang-format on
#include <fmt/format.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>

namespace muon::cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using Kind = TransportError::Kind;

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool IsIpLiteral(const std::string& host) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

std::string HostHeader(const Url& url) {
  std::string host = url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  const bool default_port =
      (url.scheme == "http" && url.port == "80") || (url.scheme == "https" && url.port == "443");
  return default_port ? host : host + ":" + url.port;
}

bool IsTimeout(const boost::system::error_code& ec) {
  return ec == beast::error::timeout || ec == asio::error::timed_out;
}

[[noreturn]] void Fail(const boost::system::error_code& ec, std::string_view stage) {
  if (IsTimeout(ec)) throw TransportError(Kind::kTimeout, fmt::format("{}: timed out", stage));
  throw TransportError(Kind::kProtocol, fmt::format("{}: {}", stage, ec.message()));
}

// A response whose 2xx body goes to options.on_body_piece as it arrives.
template <typename Stream>
asio::awaitable<HttpResponse> ReadStreamed(Stream& stream, beast::tcp_stream& lowest,
                                           beast::flat_buffer& buffer,
                                           const HttpClientOptions& options,
                                           Clock::time_point deadline) {
  boost::system::error_code ec;
  http::response_parser<http::buffer_body> parser;
  parser.header_limit(256 * 1024);
  // Not boost::none: Boost 1.74 compares a Content-Length with the empty optional as greater
  // and fails every response that has one (an error reply to a tail, say) with body_limit.
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  lowest.expires_at(deadline);
  co_await http::async_read_header(stream, buffer, parser,
                                   asio::redirect_error(asio::use_awaitable, ec));
  if (ec == http::error::end_of_stream || ec == asio::error::eof) {
    throw TransportError(Kind::kProtocol, "the server closed the connection without a response");
  }
  if (ec) Fail(ec, "reading the response");
  HttpResponse out;
  const auto& head = parser.get();
  out.status = static_cast<int>(head.result_int());
  out.reason = std::string(head.reason());
  for (const auto& field : head) {
    out.headers[Lower(std::string(field.name_string()))] = std::string(field.value());
  }
  const bool deliver = out.status >= 200 && out.status < 300;
  char chunk[16384];
  while (!parser.is_done()) {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof chunk;
    lowest.expires_after(deliver ? options.stream_idle_timeout : options.timeout);
    // read_some returns with whatever arrived (read would wait for a full buffer or the end).
    co_await http::async_read_some(stream, buffer, parser,
                                   asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::need_buffer) ec = {};
    const size_t got = sizeof chunk - parser.get().body().size;
    if (got > 0) {
      if (deliver) {
        if (!options.on_body_piece(std::string_view(chunk, got))) co_return out;
      } else if (out.body.size() < options.max_body) {
        out.body.append(chunk, got);
      }
    }
    if (ec == http::error::end_of_stream || ec == asio::error::eof) break;
    if (ec) Fail(ec, "reading the response");
  }
  co_return out;
}

template <typename Stream>
asio::awaitable<HttpResponse> Exchange(Stream& stream, beast::tcp_stream& lowest, const Url& base,
                                       const HttpRequest& request, const HttpClientOptions& options,
                                       Clock::time_point deadline) {
  http::request<http::string_body> req;
  req.version(11);
  const http::verb verb = http::string_to_verb(request.method);
  if (verb == http::verb::unknown) {
    req.method_string(request.method);
  } else {
    req.method(verb);
  }
  req.target(base.prefix + request.target);
  req.set(http::field::host, HostHeader(base));
  req.set(http::field::user_agent, options.user_agent);
  for (const auto& [name, value] : request.headers) req.set(name, value);
  req.body() = request.body;
  req.keep_alive(false);
  req.prepare_payload();

  boost::system::error_code ec;
  lowest.expires_at(deadline);
  co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) Fail(ec, "sending the request");

  beast::flat_buffer buffer;
  if (options.on_body_piece) {
    co_return co_await ReadStreamed(stream, lowest, buffer, options, deadline);
  }
  http::response_parser<http::string_body> parser;
  parser.header_limit(256 * 1024);
  parser.body_limit(options.max_body);
  lowest.expires_at(deadline);
  co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec == http::error::body_limit) {
    throw TransportError(Kind::kTooLarge,
                         fmt::format("the response is larger than {} MiB", options.max_body >> 20));
  }
  if (ec == http::error::end_of_stream || ec == asio::error::eof) {
    throw TransportError(Kind::kProtocol, "the server closed the connection without a response");
  }
  if (ec) Fail(ec, "reading the response");

  auto& msg = parser.get();
  HttpResponse out;
  out.status = static_cast<int>(msg.result_int());
  out.reason = std::string(msg.reason());
  for (const auto& field : msg) {
    out.headers[Lower(std::string(field.name_string()))] = std::string(field.value());
  }
  out.body = std::move(msg.body());
  co_return out;
}

asio::awaitable<HttpResponse> DoSend(const Url& base, const HttpRequest& request,
                                     const HttpClientOptions& options, Clock::time_point deadline) {
  auto executor = co_await asio::this_coro::executor;
  boost::system::error_code ec;

  // Resolving has no stream to carry a deadline: a timer cancels it instead. The timer's handler
  // may run after this frame is gone, so what it touches is shared.
  auto resolver = std::make_shared<tcp::resolver>(executor);
  auto resolve_timed_out = std::make_shared<bool>(false);
  asio::steady_timer watchdog(executor);
  watchdog.expires_at(deadline);
  watchdog.async_wait([resolver, resolve_timed_out](const boost::system::error_code& wait_ec) {
    if (wait_ec) return;
    *resolve_timed_out = true;
    resolver->cancel();
  });
  auto endpoints = co_await resolver->async_resolve(base.host, base.port,
                                                    asio::redirect_error(asio::use_awaitable, ec));
  watchdog.cancel();
  if (*resolve_timed_out) {
    throw TransportError(Kind::kTimeout, fmt::format("resolving {}: timed out", base.host));
  }
  if (ec) {
    throw TransportError(Kind::kConnect, fmt::format("resolving {}: {}", base.host, ec.message()));
  }

  beast::tcp_stream stream(executor);
  stream.expires_at(deadline);
  co_await stream.async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
  if (IsTimeout(ec)) {
    throw TransportError(Kind::kTimeout,
                         fmt::format("connecting to {}: timed out", HostHeader(base)));
  }
  if (ec) {
    throw TransportError(Kind::kConnect,
                         fmt::format("connecting to {}: {}", HostHeader(base), ec.message()));
  }

  if (!base.tls()) {
    co_return co_await Exchange(stream, stream, base, request, options, deadline);
  }

  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                  asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                  asio::ssl::context::no_tlsv1_1);
  if (options.insecure) {
    ctx.set_verify_mode(asio::ssl::verify_none);
  } else {
    ctx.set_verify_mode(asio::ssl::verify_peer);
    if (!options.ca_file.empty()) {
      if (::access(options.ca_file.c_str(), R_OK) != 0) {
        throw TransportError(Kind::kTls, fmt::format("cannot load the CA file {}: {}",
                                                     options.ca_file, std::strerror(errno)));
      }
      ctx.load_verify_file(options.ca_file, ec);
      if (ec) {
        throw TransportError(
            Kind::kTls,
            fmt::format("cannot load the CA file {}: no PEM certificates in it", options.ca_file));
      }
    } else {
      ctx.set_default_verify_paths(ec);
      if (ec) {
        throw TransportError(
            Kind::kTls, fmt::format("cannot load the system CA certificates: {}", ec.message()));
      }
    }
  }
  beast::ssl_stream<beast::tcp_stream> tls(std::move(stream), ctx);
  if (!IsIpLiteral(base.host)) {
    // SNI, so a server with several names picks the right certificate.
    SSL_set_tlsext_host_name(tls.native_handle(), base.host.c_str());
  }
  // Chain verification by OpenSSL, then the leaf must be for the host we asked for.
  auto name_mismatch = std::make_shared<bool>(false);
  if (!options.insecure) {
    tls.set_verify_callback([check = asio::ssl::host_name_verification(base.host), name_mismatch](
                                bool preverified, asio::ssl::verify_context& vctx) mutable {
      const bool ok = check(preverified, vctx);
      if (preverified && !ok) *name_mismatch = true;
      return ok;
    });
  }

  beast::get_lowest_layer(tls).expires_at(deadline);
  co_await tls.async_handshake(asio::ssl::stream_base::client,
                               asio::redirect_error(asio::use_awaitable, ec));
  if (IsTimeout(ec)) throw TransportError(Kind::kTimeout, "TLS handshake: timed out");
  if (ec) {
    std::string reason = ec.message();
    const long verify = SSL_get_verify_result(tls.native_handle());
    if (*name_mismatch) {
      reason = fmt::format("the certificate is not valid for {}", base.host);
    } else if (verify != X509_V_OK) {
      reason = fmt::format("certificate verify failed: {}", X509_verify_cert_error_string(verify));
    }
    throw TransportError(Kind::kTls,
                         fmt::format("TLS handshake with {}: {}", HostHeader(base), reason));
  }
  // No TLS close_notify: the request asked for Connection: close and the body is complete.
  co_return co_await Exchange(tls, beast::get_lowest_layer(tls), base, request, options, deadline);
}

bool AllDigits(std::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

}  // namespace

std::string Url::ToString() const {
  const bool v6 = host.find(':') != std::string::npos;
  std::string out = scheme + "://" + (v6 ? "[" + host + "]" : host);
  const bool default_port =
      (scheme == "http" && port == "80") || (scheme == "https" && port == "443");
  if (!default_port) out += ":" + port;
  return out + prefix;
}

std::optional<Url> ParseUrl(std::string_view text, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<Url> {
    if (error != nullptr) *error = std::move(why);
    return std::nullopt;
  };
  const auto sep = text.find("://");
  if (sep == std::string_view::npos)
    return fail("expected http://host[:port] or https://host[:port]");
  Url url;
  url.scheme = Lower(text.substr(0, sep));
  if (url.scheme != "http" && url.scheme != "https") {
    return fail(fmt::format("unsupported scheme '{}' (use http or https)", url.scheme));
  }
  std::string_view rest = text.substr(sep + 3);
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return fail("a query or fragment is not allowed");
  }
  if (std::any_of(rest.begin(), rest.end(),
                  [](unsigned char c) { return c <= ' ' || c == 0x7f || c == '\\'; })) {
    return fail("the URL contains spaces or control characters");
  }
  const auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  if (authority.find('@') != std::string_view::npos) return fail("user info is not allowed");
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return fail("unterminated IPv6 address");
    url.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return fail("unexpected text after the IPv6 address");
      port = after.substr(1);
      if (port.empty()) return fail("empty port");
    }
  } else {
    const auto colon = authority.find(':');
    if (colon != std::string_view::npos) {
      if (authority.find(':', colon + 1) != std::string_view::npos) {
        return fail("an IPv6 address must be in brackets");
      }
      port = authority.substr(colon + 1);
      if (port.empty()) return fail("empty port");
      authority = authority.substr(0, colon);
    }
    url.host = std::string(authority);
  }
  if (url.host.empty()) return fail("missing host");
  if (!port.empty()) {
    if (!AllDigits(port) || port.size() > 5 || std::stoi(std::string(port)) < 1 ||
        std::stoi(std::string(port)) > 65535) {
      return fail(fmt::format("bad port '{}'", port));
    }
    url.port = std::to_string(std::stoi(std::string(port)));
  } else {
    url.port = url.tls() ? "443" : "80";
  }
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  url.prefix = std::string(path);
  return url;
}

std::string HttpResponse::Header(std::string_view name) const {
  auto it = headers.find(Lower(name));
  return it == headers.end() ? std::string{} : it->second;
}

HttpResponse Send(const Url& base, const HttpRequest& request, const HttpClientOptions& options) {
  asio::io_context ioc;
  const auto deadline = Clock::now() + options.timeout;
  std::exception_ptr failure;
  HttpResponse response;
  bool done = false;
  asio::co_spawn(ioc, DoSend(base, request, options, deadline),
                 [&](std::exception_ptr e, HttpResponse r) {
                   failure = e;
                   response = std::move(r);
                   done = true;
                 });
  ioc.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const TransportError&) {
      throw;
    } catch (const boost::system::system_error& e) {
      throw TransportError(Kind::kProtocol, e.code().message());
    } catch (const std::exception& e) {
      throw TransportError(Kind::kProtocol, e.what());
    }
  }
  if (!done) throw TransportError(Kind::kProtocol, "the request did not complete");
  return response;
}

}  // namespace muon::cli
