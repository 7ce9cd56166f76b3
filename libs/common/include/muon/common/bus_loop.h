#pragma once
// The bus on an event loop: a Connection made with ConnectOptions::event_loop is read, parsed
// and written by the loop's thread, and what is built here takes its messages on that same
// thread, right after they are read. nats.c otherwise hands every message from its reader thread
// to a delivery thread per subscription and writes every publish with its own send(): on a
// 2-core machine those hand-offs cost more than the work (echo over the bus: 31k requests/s with
// 4 delivery threads against 125k on loops at both ends; see docs/decisions.md).

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>  // before Asio's headers with g++ 12 and C++20
#include <vector>

#include "muon/common/bus.h"

namespace muon::bus {

// One io_context run by one thread of its own, for a process whose bus connection has no other
// loop to join (RunService). Stop() before the connection is destroyed.
class EventLoopThread {
 public:
  EventLoopThread();
  ~EventLoopThread();
  EventLoopThread(const EventLoopThread&) = delete;
  EventLoopThread& operator=(const EventLoopThread&) = delete;

  boost::asio::io_context& context() { return io_; }
  // Stops the loop and joins its thread; idempotent.
  void Stop();

 private:
  boost::asio::io_context io_{1};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::thread thread_;
};

// A (queue) subscription whose handler runs on the connection's loop thread, inline, for each
// message as soon as it is read. The handler must not block: a blocked handler stalls the whole
// connection.
class LoopSubscription {
 public:
  LoopSubscription();
  LoopSubscription(LoopSubscription&&) noexcept;
  LoopSubscription& operator=(LoopSubscription&&) noexcept;
  ~LoopSubscription();  // unsubscribes; the last handler call may still be running on the loop

  // As Subscription's: stop interest, handle what already arrived, wait for that to finish.
  void StartDrain(std::chrono::milliseconds timeout);
  bool WaitDrained(std::chrono::milliseconds timeout);
  void Unsubscribe();

 private:
  friend LoopSubscription SubscribeOnLoop(Connection&, std::string_view, std::string_view,
                                          MsgHandler);
  struct State;
  std::shared_ptr<State> state_;
  std::shared_ptr<LoopDriver> driver_;
};

// Throws std::logic_error when the connection has no event loop, std::runtime_error when nats.c
// refuses the subscription. An empty `queue` subscribes without a queue group.
LoopSubscription SubscribeOnLoop(Connection& connection, std::string_view subject,
                                 std::string_view queue, MsgHandler handler);

// Many requests in flight over one loop-driven connection, with no thread hand-off: replies are
// taken off nats.c on the loop thread and the callback runs there. Each request in flight holds
// a reply slot, a synchronous subscription _INBOX.<id>.<slot>.* kept for reuse, so the server's
// "no responders" status (which nats.c hands over without its subject) still names the request.
class LoopRequester {
 public:
  // ec: {} with the reply, kNoResponders, kTimeout, kNotConnected (CancelAll), a publish error,
  // or kOther when too many requests are in flight.
  using Callback = std::function<void(std::error_code ec, Msg reply)>;

  // Throws std::logic_error when the connection has no event loop.
  explicit LoopRequester(Connection& connection);
  ~LoopRequester();  // fails what is pending with kNotConnected
  LoopRequester(const LoopRequester&) = delete;
  LoopRequester& operator=(const LoopRequester&) = delete;

  // Any thread (posted to the loop when called elsewhere). `done` runs exactly once, on the loop
  // thread.
  void Request(std::string_view subject, std::string_view data, const Headers& headers,
               std::chrono::milliseconds timeout, Callback done);
  // Loop thread (e.g. from a timer every few tens of milliseconds): fails expired requests with
  // kTimeout. Returns how many.
  size_t Sweep(std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
  // Loop thread, or once the loop stopped: fails everything pending with kNotConnected.
  void CancelAll();
  size_t pending() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::shared_ptr<LoopDriver> driver_;
};

}  // namespace muon::bus
