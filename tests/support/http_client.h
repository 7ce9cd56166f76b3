#pragma once
// A minimal blocking HTTP/1.1 client for tests (plain TCP, loopback), so tests can drive the
// ingress exactly as any HTTP caller would.

#include <chrono>
#include <map>
#include <string>

namespace muon::testing {

struct HttpResponse {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string Header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// Throws std::runtime_error when the connection fails or times out. With local_address the
// connection comes from that address (e.g. 127.0.0.2: another client on loopback).
HttpResponse HttpRequest(const std::string& method, const std::string& url,
                         const std::string& body = "",
                         const std::map<std::string, std::string>& headers = {},
                         std::chrono::milliseconds timeout = std::chrono::seconds(10),
                         const std::string& local_address = "");

}  // namespace muon::testing
