#pragma once
// Many requests in flight over one NATS connection without a thread each: every request gets a
// reply subject under one wildcard inbox subscription (_INBOX.<id>.<n>), replies are matched by
// that token, and a sweep fails the requests whose deadline passed. The brief measured ~55k req/s
// with 64 in flight this way against ~26k for 64 threads blocking in natsConnection_Request.
//
// Callbacks run on the subscription's delivery thread (replies) or the caller of Sweep()
// (timeouts); users hand the result to their own executor.

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>

#include "muon/common/bus.h"

namespace muon::bus {

class AsyncRequester {
 public:
  // ec: {} with the reply, kNoResponders, kTimeout, or a publish error (kNotConnected, ...).
  using Callback = std::function<void(std::error_code ec, Msg reply)>;

  explicit AsyncRequester(Connection& connection);
  ~AsyncRequester();
  AsyncRequester(const AsyncRequester&) = delete;
  AsyncRequester& operator=(const AsyncRequester&) = delete;

  // Publishes the request; `done` is called exactly once (possibly before this returns, when the
  // publish itself fails).
  void Request(std::string_view subject, std::string_view data, const Headers& headers,
               std::chrono::milliseconds timeout, Callback done);

  // Fails every request whose deadline has passed with kTimeout; call it periodically (every
  // few tens of milliseconds). Returns how many timed out.
  size_t Sweep(std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

  // Fails everything still pending (with kNotConnected); used on shutdown.
  void CancelAll();

  size_t pending() const;

 private:
  struct Pending {
    std::chrono::steady_clock::time_point deadline;
    Callback done;
  };
  void OnReply(Msg& msg);

  Connection& connection_;
  std::string prefix_;  // "_INBOX.<nuid>."
  mutable std::mutex mu_;
  uint64_t next_ = 0;
  std::unordered_map<uint64_t, Pending> pending_;
  Subscription subscription_;
};

}  // namespace muon::bus
