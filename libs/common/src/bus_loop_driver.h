#pragma once
// Internal to libs/common: the adapter that lets an Asio io_context drive a nats.c connection
// (natsOptions_SetEventLoop). nats.c calls the four callbacks from any thread with its connection
// lock held, so they only post work to the loop; everything else here runs on the loop's thread.

#include <nats/nats.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <utility>  // before Asio's headers with g++ 12 and C++20
#include <vector>

namespace muon::bus {

// Something that takes its messages off nats.c right after each read of the socket, on the
// loop's thread (sync subscriptions drained there instead of by a delivery thread each).
class ReadHook {
 public:
  virtual ~ReadHook() = default;
  virtual void AfterRead() = 0;
};

class LoopDriver : public std::enable_shared_from_this<LoopDriver> {
 public:
  explicit LoopDriver(boost::asio::io_context& io) : io_(io) {}
  ~LoopDriver();
  LoopDriver(const LoopDriver&) = delete;
  LoopDriver& operator=(const LoopDriver&) = delete;

  // Registers the callbacks with nats.c; call once, before natsConnection_Connect.
  void Install(natsOptions* options);

  boost::asio::io_context& io() { return io_; }
  bool InLoopThread() const { return io_.get_executor().running_in_this_thread(); }
  // Runs `work` on the loop's thread: now when called there, else posted.
  void RunOnLoop(std::function<void()> work);

  // Any thread. An added hook also runs once right away, for what arrived before it was added.
  void AddHook(std::shared_ptr<ReadHook> hook);
  void RemoveHook(const std::shared_ptr<ReadHook>& hook);

 private:
  static natsStatus OnAttach(void** user_data, void* loop, natsConnection* nc, natsSock socket);
  static natsStatus OnRead(void* user_data, bool add);
  static natsStatus OnWrite(void* user_data, bool add);
  static natsStatus OnDetach(void* user_data);

  void Attach(natsConnection* nc, natsSock socket);
  void Detach();
  void ArmRead();
  void Readable();
  void ScheduleFlush();
  void Flush();
  void ReleaseSocket();

  boost::asio::io_context& io_;
  std::atomic<bool> flush_posted_{false};
  // Loop thread only.
  natsConnection* nc_ = nullptr;
  std::optional<boost::asio::posix::stream_descriptor> socket_;  // nats.c owns the fd
  uint64_t generation_ = 0;  // bumped per (re)attach and detach: stale waits do nothing
  bool read_armed_ = false;
  bool write_armed_ = false;
  std::vector<std::shared_ptr<ReadHook>> hooks_;
};

}  // namespace muon::bus
