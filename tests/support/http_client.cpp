#include "http_client.h"

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <stdexcept>
#include <utility>  // before Asio's headers with g++ 12 and C++20

namespace muon::testing {
namespace beast = boost::beast;
namespace http = beast::http;

HttpResponse HttpRequest(const std::string& method, const std::string& url, const std::string& body,
                         const std::map<std::string, std::string>& headers,
                         std::chrono::milliseconds timeout, const std::string& local_address) {
  constexpr std::string_view kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0) throw std::invalid_argument("only http:// URLs: " + url);
  const std::string rest = url.substr(kScheme.size());
  const auto slash = rest.find('/');
  const std::string host_port = rest.substr(0, slash);
  const std::string target = slash == std::string::npos ? "/" : rest.substr(slash);
  const auto colon = host_port.rfind(':');
  const std::string host = host_port.substr(0, colon);
  const std::string port = colon == std::string::npos ? "80" : host_port.substr(colon + 1);

  boost::asio::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(timeout);
  boost::asio::ip::tcp::resolver resolver(io);
  const auto endpoints = resolver.resolve(host, port);
  if (local_address.empty()) {
    stream.connect(endpoints);
  } else {
    const auto local = boost::asio::ip::make_address(local_address);
    auto& socket = stream.socket();
    socket.open(local.is_v4() ? boost::asio::ip::tcp::v4() : boost::asio::ip::tcp::v6());
    socket.bind({local, 0});
    socket.connect(*endpoints.begin());
  }

  http::request<http::string_body> request{http::string_to_verb(method), target, 11};
  request.set(http::field::host, host_port);
  for (const auto& [k, v] : headers) request.set(k, v);
  request.body() = body;
  request.prepare_payload();
  http::write(stream, request);

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  http::read(stream, buffer, parser);
  auto& response = parser.get();
  HttpResponse out;
  out.status = response.result_int();
  out.body = response.body();
  for (const auto& field : response) {
    std::string name(field.name_string());
    std::transform(name.begin(), name.end(), name.begin(), ::tolower);
    out.headers[name] = std::string(field.value());
  }
  beast::error_code ignored;
  stream.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
  return out;
}

}  // namespace muon::testing
