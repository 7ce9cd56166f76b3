#include "edge.h"

#include <fmt/format.h>

#include <stdexcept>

#include "muon/common/config.h"
#include "muon/common/random_id.h"
#include "muon/common/service.h"

namespace muon::ingress {
namespace {

bool IsHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

Route ParseRoute(std::string_view verb, std::string_view target) {
  const auto query = target.find('?');
  const std::string_view path = target.substr(0, query);
  Route route;
  auto simple = [&](RouteKind kind, std::string_view want_verb, std::string label) {
    route.label = std::move(label);
    route.kind = verb == want_verb ? kind : RouteKind::kMethodNotAllowed;
    return route;
  };
  if (path == "/healthz") return simple(RouteKind::kHealth, "GET", "/healthz");
  if (path == "/readyz") return simple(RouteKind::kReady, "GET", "/readyz");
  if (path == "/metrics") return simple(RouteKind::kMetrics, "GET", "/metrics");
  if (path == "/v1/services") return simple(RouteKind::kServices, "GET", "/v1/services");
  if (path == "/v1/auth/keys") return simple(RouteKind::kKeys, "GET", "/v1/auth/keys");
  if (path == kWebhookPath) {
    route.service = "github-events";
    route.method = "Webhook";
    return simple(RouteKind::kWebhook, "POST", std::string(kWebhookPath));
  }
  if (path == "/v1/logs/tail") {
    route.service = "logs";
    route.method = "Tail";
    return simple(RouteKind::kLogTail, "GET", "/v1/logs/tail");
  }

  constexpr std::string_view kPrefix = "/v1/";
  if (path.substr(0, kPrefix.size()) == kPrefix) {
    const std::string_view rest = path.substr(kPrefix.size());
    const auto slash = rest.find('/');
    if (slash != std::string_view::npos && rest.find('/', slash + 1) == std::string_view::npos) {
      const std::string_view service = rest.substr(0, slash);
      const std::string_view method = rest.substr(slash + 1);
      route.label = "/v1/{service}/{method}";
      if (!IsValidServiceName(service) || !IsValidServiceName(method)) {
        route.kind = RouteKind::kBadName;
        return route;
      }
      route.service = std::string(service);
      route.method = std::string(method);
      route.kind = verb == "POST" ? RouteKind::kCall : RouteKind::kMethodNotAllowed;
      return route;
    }
  }
  route.label = "other";
  route.kind = RouteKind::kNotFound;
  return route;
}

std::map<std::string, std::string> ParseQueryString(std::string_view target) {
  std::map<std::string, std::string> out;
  const auto q = target.find('?');
  if (q == std::string_view::npos) return out;
  std::string_view rest = target.substr(q + 1);
  auto decode = [](std::string_view in) {
    std::string s;
    for (size_t i = 0; i < in.size(); ++i) {
      if (in[i] == '+') {
        s += ' ';
      } else if (in[i] == '%') {
        if (i + 2 >= in.size() || !IsHex(in.substr(i + 1, 2))) {
          throw std::invalid_argument("malformed percent escape in the query string");
        }
        s += static_cast<char>(std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16));
        i += 2;
      } else {
        s += in[i];
      }
    }
    return s;
  };
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    if (!pair.empty()) {
      const auto eq = pair.find('=');
      out[decode(pair.substr(0, eq))] =
          eq == std::string_view::npos ? std::string() : decode(pair.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return out;
}

bool IsValidTraceparent(std::string_view v) {
  if (v.size() != 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return false;
  const auto version = v.substr(0, 2), trace = v.substr(3, 32), span = v.substr(36, 16),
             flags = v.substr(53, 2);
  if (!IsHex(version) || !IsHex(trace) || !IsHex(span) || !IsHex(flags)) return false;
  if (version == "ff") return false;
  if (trace == std::string(32, '0') || span == std::string(16, '0')) return false;
  return true;
}

std::string NextTraceparent(std::string_view incoming) {
  if (IsValidTraceparent(incoming)) {
    return fmt::format("00-{}-{}-{}", incoming.substr(3, 32), RandomHex(8), incoming.substr(53, 2));
  }
  return fmt::format("00-{}-{}-01", RandomHex(16), RandomHex(8));
}

std::string NewRequestId() {
  return RandomHex(16);
}

bool IsAcceptableRequestId(std::string_view value) {
  if (value.empty() || value.size() > 128) return false;
  for (char c : value) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

std::optional<std::chrono::milliseconds> ParseTimeoutHeader(std::string_view value,
                                                            std::chrono::milliseconds max) {
  if (value.empty()) return std::nullopt;
  auto parsed = config::ParseDuration(value);
  if (!parsed || *parsed <= std::chrono::nanoseconds::zero()) {
    throw std::invalid_argument(
        fmt::format("Muon-Timeout \"{}\" is not a duration such as 500ms or 5s", value));
  }
  return std::min(max, std::chrono::duration_cast<std::chrono::milliseconds>(*parsed));
}

RateLimiter::RateLimiter(double per_second, double burst)
    : per_second_(per_second), burst_(std::max(burst, per_second)), stripes_(32) {}

bool RateLimiter::Allow(std::string_view key, std::chrono::steady_clock::time_point now) {
  if (per_second_ <= 0) return true;
  auto& stripe = stripes_[std::hash<std::string_view>{}(key) % stripes_.size()];
  std::lock_guard lock(stripe.mu);
  if (stripe.buckets.size() > 100000) {
    // Forget idle clients (their buckets refilled) so the map cannot grow without bound.
    std::erase_if(stripe.buckets, [&](const auto& kv) {
      const double idle = std::chrono::duration<double>(now - kv.second.updated).count();
      return kv.second.tokens + idle * per_second_ >= burst_;
    });
  }
  auto [it, inserted] = stripe.buckets.try_emplace(std::string(key), Bucket{burst_, now});
  Bucket& bucket = it->second;
  if (!inserted) {
    const double elapsed = std::chrono::duration<double>(now - bucket.updated).count();
    bucket.tokens = std::min(burst_, bucket.tokens + elapsed * per_second_);
    bucket.updated = now;
  }
  if (bucket.tokens < 1.0) return false;
  bucket.tokens -= 1.0;
  return true;
}

}  // namespace muon::ingress
