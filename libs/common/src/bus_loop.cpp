#include "muon/common/bus_loop.h"

#include <fmt/format.h>
#include <sys/ioctl.h>

#include <atomic>
#include <boost/asio/post.hpp>
#include <charconv>
#include <stdexcept>

#include "bus_loop_driver.h"
#include "muon/common/log.h"

namespace muon::bus {
namespace asio = boost::asio;
using Descriptor = asio::posix::stream_descriptor;

// ---- LoopDriver ----

LoopDriver::~LoopDriver() {
  ReleaseSocket();
}

void LoopDriver::Install(natsOptions* options) {
  const natsStatus status =
      natsOptions_SetEventLoop(options, this, &OnAttach, &OnRead, &OnWrite, &OnDetach);
  if (status != NATS_OK) {
    throw std::runtime_error(
        fmt::format("natsOptions_SetEventLoop: {}", natsStatus_GetText(status)));
  }
}

void LoopDriver::RunOnLoop(std::function<void()> work) {
  if (InLoopThread()) {
    work();
  } else {
    asio::post(io_, std::move(work));
  }
}

natsStatus LoopDriver::OnAttach(void** user_data, void* loop, natsConnection* nc, natsSock socket) {
  auto* self = static_cast<LoopDriver*>(loop);
  *user_data = self;
  // Always posted, also from the loop's own thread: the loop applies nats.c's requests in the
  // order nats.c made them.
  asio::post(self->io_,
             [self = self->shared_from_this(), nc, socket] { self->Attach(nc, socket); });
  return NATS_OK;
}

natsStatus LoopDriver::OnRead(void* user_data, bool add) {
  auto* self = static_cast<LoopDriver*>(user_data);
  if (add) asio::post(self->io_, [self = self->shared_from_this()] { self->ArmRead(); });
  return NATS_OK;
}

natsStatus LoopDriver::OnWrite(void* user_data, bool add) {
  if (add) static_cast<LoopDriver*>(user_data)->ScheduleFlush();
  return NATS_OK;
}

natsStatus LoopDriver::OnDetach(void* user_data) {
  auto* self = static_cast<LoopDriver*>(user_data);
  asio::post(self->io_, [self = self->shared_from_this()] { self->Detach(); });
  return NATS_OK;
}

void LoopDriver::Attach(natsConnection* nc, natsSock socket) {
  ReleaseSocket();
  nc_ = nc;
  ++generation_;
  read_armed_ = false;
  write_armed_ = false;
  socket_.emplace(io_, socket);
  ArmRead();
  Flush();  // what was queued while (re)connecting
}

void LoopDriver::Detach() {
  ReleaseSocket();
  ++generation_;
}

void LoopDriver::ReleaseSocket() {
  if (!socket_) return;
  // release(), not close(): the descriptor belongs to nats.c.
  (void)socket_->release();
  socket_.reset();
}

void LoopDriver::ArmRead() {
  if (!socket_ || read_armed_) return;
  read_armed_ = true;
  socket_->async_wait(Descriptor::wait_read, [self = shared_from_this(), generation = generation_](
                                                 const boost::system::error_code& ec) {
    if (generation != self->generation_) return;  // the socket it waited on is gone
    self->read_armed_ = false;
    if (!ec) self->Readable();
  });
}

void LoopDriver::Readable() {
  const uint64_t generation = generation_;
  natsConnection_ProcessReadEvent(nc_);
  for (size_t i = 0; i < hooks_.size(); ++i) hooks_[i]->AfterRead();
  if (generation != generation_ || !socket_ ||
      natsConnection_Status(nc_) != NATS_CONN_STATUS_CONNECTED) {
    return;  // disconnected: nats.c attaches the new socket when it reconnects
  }
  // nats.c reads at most one buffer per event and expects a level-triggered loop; Asio's epoll
  // reactor is edge-triggered, so bytes left in the socket would wait for the next packet.
  int available = 0;
  if (::ioctl(socket_->native_handle(), FIONREAD, &available) == 0 && available > 0) {
    asio::post(io_, [self = shared_from_this(), generation] {
      if (generation == self->generation_ && self->socket_) self->Readable();
    });
    return;
  }
  ArmRead();
}

void LoopDriver::ScheduleFlush() {
  if (flush_posted_.exchange(true)) return;
  asio::post(io_, [self = shared_from_this()] { self->Flush(); });
}

void LoopDriver::Flush() {
  flush_posted_ = false;
  // nats.c takes a zero-byte write for a closed connection: write only when something waits.
  if (!socket_ || nc_ == nullptr || natsConnection_Buffered(nc_) <= 0) return;
  // Everything published since the last flush leaves in one write.
  natsConnection_ProcessWriteEvent(nc_);
  if (natsConnection_Buffered(nc_) <= 0 || write_armed_ || !socket_) return;
  // The socket's send buffer is full: wait until it takes more.
  write_armed_ = true;
  socket_->async_wait(Descriptor::wait_write, [self = shared_from_this(), generation = generation_](
                                                  const boost::system::error_code& ec) {
    if (generation != self->generation_) return;
    self->write_armed_ = false;
    if (!ec) self->Flush();
  });
}

void LoopDriver::AddHook(std::shared_ptr<ReadHook> hook) {
  asio::post(io_, [self = shared_from_this(), hook = std::move(hook)] {
    self->hooks_.push_back(hook);
    hook->AfterRead();
  });
}

void LoopDriver::RemoveHook(const std::shared_ptr<ReadHook>& hook) {
  asio::post(io_, [self = shared_from_this(), hook] { std::erase(self->hooks_, hook); });
}

// ---- EventLoopThread ----

EventLoopThread::EventLoopThread()
    : work_(asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {}

EventLoopThread::~EventLoopThread() {
  Stop();
}

void EventLoopThread::Stop() {
  work_.reset();
  io_.stop();
  if (thread_.joinable()) thread_.join();
}

// ---- draining a synchronous subscription on the loop ----
namespace {

// Takes up to what is queued now; returns false when the subscription is closed. `take` gets
// each message, or nullptr for the server's "no responders" status (nats.c drops that message
// and reports only the status).
template <typename Take>
bool TakeQueued(natsSubscription* sub, Take&& take) {
  int queued = 0;
  if (natsSubscription_GetPending(sub, &queued, nullptr) != NATS_OK) return false;
  while (queued-- > 0) {
    natsMsg* raw = nullptr;
    const natsStatus status = natsSubscription_NextMsg(&raw, sub, 0);
    if (status == NATS_OK) {
      if (!take(raw)) return true;
    } else if (status == NATS_NO_RESPONDERS) {
      if (!take(nullptr)) return true;
    } else if (status == NATS_SLOW_CONSUMER) {
      ++queued;  // reported once, in place of a message: messages were dropped before this one
      log::Warn("slow consumer: messages were dropped",
                {{"subject", natsSubscription_GetSubject(sub)}});
    } else {
      return status != NATS_INVALID_SUBSCRIPTION && status != NATS_CONNECTION_CLOSED;
    }
  }
  return true;
}

}  // namespace

// ---- LoopSubscription ----

// Owned by the driver's hook list (and the LoopSubscription): it never points back at the driver,
// so nothing keeps the two alive in a cycle once the loop stopped.
struct LoopSubscription::State : ReadHook {
  natsSubscription* sub = nullptr;
  MsgHandler handler;

  void AfterRead() override {
    TakeQueued(sub, [this](natsMsg* raw) {
      if (raw == nullptr) return true;
      Msg msg(raw);
      try {
        handler(msg);
      } catch (const std::exception& e) {
        log::Error("message handler threw", {{"subject", msg.subject()}, {"error", e.what()}});
      }
      return true;
    });
  }

  ~State() override {
    if (sub != nullptr) natsSubscription_Destroy(sub);
  }
};

LoopSubscription::LoopSubscription() = default;
LoopSubscription::LoopSubscription(LoopSubscription&&) noexcept = default;
LoopSubscription& LoopSubscription::operator=(LoopSubscription&&) noexcept = default;

LoopSubscription::~LoopSubscription() {
  if (!state_) return;
  Unsubscribe();
  driver_->RemoveHook(state_);
}

void LoopSubscription::StartDrain(std::chrono::milliseconds timeout) {
  if (!state_) return;
  if (natsSubscription_DrainTimeout(state_->sub, timeout.count()) != NATS_OK) {
    Unsubscribe();
    return;
  }
  // Nothing may arrive to trigger a read: take what is queued now.
  driver_->RunOnLoop([state = state_] { state->AfterRead(); });
}

bool LoopSubscription::WaitDrained(std::chrono::milliseconds timeout) {
  if (!state_) return true;
  return natsSubscription_WaitForDrainCompletion(state_->sub, timeout.count()) == NATS_OK;
}

void LoopSubscription::Unsubscribe() {
  if (state_) natsSubscription_Unsubscribe(state_->sub);
}

LoopSubscription SubscribeOnLoop(Connection& connection, std::string_view subject,
                                 std::string_view queue, MsgHandler handler) {
  const auto& driver = connection.loop_driver();
  if (!driver) throw std::logic_error("SubscribeOnLoop needs a connection with an event loop");
  auto state = std::make_shared<LoopSubscription::State>();
  state->handler = std::move(handler);
  const std::string subj(subject);
  const std::string group(queue);
  const natsStatus status =
      group.empty() ? natsConnection_SubscribeSync(&state->sub, connection.raw(), subj.c_str())
                    : natsConnection_QueueSubscribeSync(&state->sub, connection.raw(), subj.c_str(),
                                                        group.c_str());
  if (status != NATS_OK) {
    state->sub = nullptr;
    throw std::runtime_error(fmt::format("subscribe to {}: {}", subj, natsStatus_GetText(status)));
  }
  natsSubscription_SetPendingLimits(state->sub, 1 << 16, 256 * 1024 * 1024);
  driver->AddHook(state);
  LoopSubscription result;
  result.state_ = std::move(state);
  result.driver_ = driver;
  return result;
}

// ---- LoopRequester ----

namespace {
constexpr size_t kMaxSlots = 4096;
}

struct LoopRequester::State : ReadHook {
  struct Slot {
    natsSubscription* sub = nullptr;
    uint64_t token = 0;
    Callback done;
    std::chrono::steady_clock::time_point deadline;
    size_t busy_index = 0;
  };
  struct Completion {
    Callback done;
    std::error_code ec;
    Msg reply;
  };

  Connection& connection;
  std::string prefix;  // "_INBOX.<nuid>."
  std::vector<Slot> slots;
  std::vector<uint32_t> free_slots;
  std::vector<uint32_t> busy;
  std::vector<Completion> completions;
  uint64_t next_token = 0;
  std::atomic<size_t> in_flight{0};

  explicit State(Connection& c) : connection(c), prefix(c.NewInbox() + ".") {}

  ~State() override {
    for (auto& slot : slots) natsSubscription_Destroy(slot.sub);
  }

  void Start(const std::string& subject, std::string_view data, const Headers& headers,
             std::chrono::milliseconds timeout, Callback done) {
    uint32_t index;
    if (!free_slots.empty()) {
      index = free_slots.back();
      free_slots.pop_back();
    } else if (slots.size() < kMaxSlots) {
      index = static_cast<uint32_t>(slots.size());
      natsSubscription* sub = nullptr;
      const std::string wildcard = fmt::format("{}{}.*", prefix, index);
      const natsStatus status =
          natsConnection_SubscribeSync(&sub, connection.raw(), wildcard.c_str());
      if (status != NATS_OK) {
        done(FromNatsStatus(status), Msg());
        return;
      }
      natsSubscription_SetPendingLimits(sub, -1, -1);
      slots.push_back(Slot{.sub = sub});
    } else {
      done(make_error_code(BusErrc::kOther), Msg());
      return;
    }
    Slot& slot = slots[index];
    slot.token = ++next_token;
    slot.done = std::move(done);
    slot.deadline = std::chrono::steady_clock::now() + timeout;
    slot.busy_index = busy.size();
    busy.push_back(index);
    in_flight.store(busy.size(), std::memory_order_relaxed);

    char reply[128];
    const auto end = fmt::format_to_n(reply, sizeof(reply), "{}{}.{}", prefix, index, slot.token);
    const std::error_code ec =
        connection.Publish(subject, data, headers, std::string_view(reply, end.out - reply));
    if (ec) {
      Callback failed = std::move(slot.done);
      Free(slot.busy_index);
      failed(ec, Msg());
    }
  }

  // Frees the slot at busy[position] (swapping the last busy slot into its place).
  void Free(size_t position) {
    const uint32_t index = busy[position];
    busy[position] = busy.back();
    slots[busy[position]].busy_index = position;
    busy.pop_back();
    slots[index].done = nullptr;
    free_slots.push_back(index);
    in_flight.store(busy.size(), std::memory_order_relaxed);
  }

  static uint64_t TokenOf(std::string_view subject) {
    uint64_t token = 0;
    const auto dot = subject.rfind('.');
    if (dot == std::string_view::npos) return 0;
    std::from_chars(subject.data() + dot + 1, subject.data() + subject.size(), token);
    return token;
  }

  void AfterRead() override {
    for (size_t position = 0; position < busy.size();) {
      Slot& slot = slots[busy[position]];
      bool answered = false;
      TakeQueued(slot.sub, [&](natsMsg* raw) {
        if (raw == nullptr) {
          // A slot holds one request at a time and the server answers "no responders" as it
          // takes the publish, so the status belongs to the request in the slot.
          completions.push_back(
              {std::move(slot.done), make_error_code(BusErrc::kNoResponders), {}});
          answered = true;
          return false;
        }
        Msg reply(raw);
        if (TokenOf(reply.subject()) != slot.token) return true;  // late reply to a timed-out one
        completions.push_back({std::move(slot.done), {}, std::move(reply)});
        answered = true;
        return false;
      });
      if (answered) {
        Free(position);  // busy[position] is now another slot: look at it next
      } else {
        ++position;
      }
    }
    RunCompletions();
  }

  size_t Sweep(std::chrono::steady_clock::time_point now) {
    size_t expired = 0;
    for (size_t position = 0; position < busy.size();) {
      Slot& slot = slots[busy[position]];
      if (slot.deadline <= now) {
        completions.push_back({std::move(slot.done), make_error_code(BusErrc::kTimeout), {}});
        Free(position);
        ++expired;
      } else {
        ++position;
      }
    }
    RunCompletions();
    return expired;
  }

  void CancelAll() {
    while (!busy.empty()) {
      completions.push_back(
          {std::move(slots[busy.back()].done), make_error_code(BusErrc::kNotConnected), {}});
      Free(busy.size() - 1);
    }
    RunCompletions();
  }

  // Callbacks run after the bookkeeping, so one that starts a new request finds it consistent.
  void RunCompletions() {
    if (completions.empty()) return;
    std::vector<Completion> ready;
    ready.swap(completions);
    for (auto& completion : ready) completion.done(completion.ec, std::move(completion.reply));
    ready.clear();
    if (completions.empty()) completions.swap(ready);  // keep the capacity
  }
};

LoopRequester::LoopRequester(Connection& connection) {
  driver_ = connection.loop_driver();
  if (!driver_) throw std::logic_error("LoopRequester needs a connection with an event loop");
  state_ = std::make_shared<State>(connection);
  driver_->AddHook(state_);
}

LoopRequester::~LoopRequester() {
  state_->CancelAll();
  for (auto& slot : state_->slots) natsSubscription_Unsubscribe(slot.sub);
  driver_->RemoveHook(state_);
}

void LoopRequester::Request(std::string_view subject, std::string_view data, const Headers& headers,
                            std::chrono::milliseconds timeout, Callback done) {
  if (driver_->InLoopThread()) {
    state_->Start(std::string(subject), data, headers, timeout, std::move(done));
    return;
  }
  asio::post(driver_->io(),
             [state = state_, subject = std::string(subject), data = std::string(data), headers,
              timeout, done = std::move(done)]() mutable {
               state->Start(subject, data, headers, timeout, std::move(done));
             });
}

size_t LoopRequester::Sweep(std::chrono::steady_clock::time_point now) {
  return state_->Sweep(now);
}

void LoopRequester::CancelAll() {
  state_->CancelAll();
}

size_t LoopRequester::pending() const {
  return state_->in_flight.load(std::memory_order_relaxed);
}

}  // namespace muon::bus
