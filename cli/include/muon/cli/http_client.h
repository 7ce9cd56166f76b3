#pragma once
// A small synchronous HTTP/1.1 client for the CLI (Boost.Beast over Asio): one request per
// connection, http and https (OpenSSL; the peer certificate and host name are verified unless
// `insecure`), one deadline over resolve + connect + handshake + write + read, and a cap on the
// response body. Failures to get any HTTP response are TransportErrors; any HTTP status,
// including 4xx/5xx, is a response.

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace muon::cli {

struct Url {
  std::string scheme;  // "http" or "https"
  std::string host;    // without brackets for IPv6 literals
  std::string port;    // always set ("80"/"443" when the URL has none)
  std::string prefix;  // path prefix without a trailing slash, "" for none

  bool tls() const { return scheme == "https"; }
  // scheme://host[:port][prefix], the port only when it is not the scheme's default.
  std::string ToString() const;
};

// Accepts http(s)://host[:port][/path]; no user info, query or fragment. On failure returns
// nullopt and sets *error (when given) to a one-line reason.
std::optional<Url> ParseUrl(std::string_view text, std::string* error = nullptr);

struct HttpRequest {
  std::string method = "GET";
  std::string target;  // "/v1/services"; the Url's prefix is put in front
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct HttpResponse {
  int status = 0;
  std::string reason;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;

  // "" when absent; `name` is matched case-insensitively.
  std::string Header(std::string_view name) const;
};

struct HttpClientOptions {
  bool insecure = false;  // skip certificate and host name verification
  std::string ca_file;    // PEM bundle to trust instead of the system's
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  size_t max_body = size_t{64} << 20;
  std::string user_agent = "muon-cli";
  // Set for streamed responses (server-sent events): a 2xx body is handed over piece by piece
  // as it arrives (return false to stop) instead of being collected; the timeout then covers
  // the response head only, and each later read may wait up to stream_idle_timeout.
  std::function<bool(std::string_view piece)> on_body_piece;
  std::chrono::milliseconds stream_idle_timeout{std::chrono::seconds(60)};
};

class TransportError : public std::runtime_error {
 public:
  enum class Kind {
    kConnect,   // resolve or connect failed (refused, unreachable, unknown host)
    kTimeout,   // the deadline passed
    kTls,       // handshake or certificate verification failed
    kTooLarge,  // response body over max_body
    kProtocol,  // anything else: connection reset, malformed response
  };
  TransportError(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

// Sends one request and reads the whole response. Throws TransportError.
HttpResponse Send(const Url& base, const HttpRequest& request, const HttpClientOptions& options);

}  // namespace muon::cli
