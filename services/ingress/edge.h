#pragma once
// Pure request-edge logic of the ingress, kept apart so unit tests cover it without a server:
// route parsing, W3C traceparent handling, request ids, timeouts, the per-client rate limiter.

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace muon::ingress {

enum class RouteKind {
  kCall,      // POST /v1/<service>/<Method>
  kServices,  // GET /v1/services
  kKeys,      // GET /v1/auth/keys
  kHealth,    // GET /healthz
  kReady,     // GET /readyz
  kMetrics,   // GET /metrics
  kLogTail,   // GET /v1/logs/tail?service=...: server-sent events
  kWebhook,   // POST /v1/github/events: raw body and headers to github-events.Webhook
  kNotFound,
  kMethodNotAllowed,
  kBadName,  // /v1/<service>/<Method> with characters a subject token cannot hold
};

struct Route {
  RouteKind kind = RouteKind::kNotFound;
  std::string service;
  std::string method;
  std::string label;  // metrics label: a template, never raw user input
};

// `verb` is the HTTP method ("GET", "POST"), `target` the request target (query ignored).
// Where GitHub posts webhooks; bodies up to kWebhookMaxBody (GitHub caps payloads at 25 MB).
inline constexpr std::string_view kWebhookPath = "/v1/github/events";
inline constexpr size_t kWebhookMaxBody = 25 * 1024 * 1024;

Route ParseRoute(std::string_view verb, std::string_view target);

// The decoded query string of a target ("a=1&b=x%20y"); later keys win. Throws
// std::invalid_argument on a malformed percent escape.
std::map<std::string, std::string> ParseQueryString(std::string_view target);

// Valid W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>", ids not all zero).
bool IsValidTraceparent(std::string_view value);
// Keeps the caller's trace id with a new span id, or starts a new trace.
std::string NextTraceparent(std::string_view incoming);
// 16 random bytes as 32 hex characters.
std::string NewRequestId();
// A caller-supplied request id is kept when it is 1-128 printable ASCII characters.
bool IsAcceptableRequestId(std::string_view value);

// "Muon-Timeout" header: a duration ("2s", "500ms"); nullopt when absent. Throws
// std::invalid_argument on a malformed value. The result is capped at `max`.
std::optional<std::chrono::milliseconds> ParseTimeoutHeader(std::string_view value,
                                                            std::chrono::milliseconds max);

// Token buckets per client key (account id, else IP). rate <= 0 disables limiting.
class RateLimiter {
 public:
  RateLimiter(double per_second, double burst);
  bool Allow(std::string_view key,
             std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
  bool enabled() const { return per_second_ > 0; }

 private:
  struct Bucket {
    double tokens;
    std::chrono::steady_clock::time_point updated;
  };
  struct Stripe {
    std::mutex mu;
    std::unordered_map<std::string, Bucket> buckets;
  };
  double per_second_;
  double burst_;
  std::vector<Stripe> stripes_;
};

}  // namespace muon::ingress
