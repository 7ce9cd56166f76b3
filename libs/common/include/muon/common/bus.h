#pragma once
// The bus: RAII wrappers over nats.c. A Connection reconnects forever (jittered waits), logs every
// disconnect and reconnect, and sends ASAP (nats.c otherwise buffers publishes, which adds about a
// millisecond to every request/reply). Expected outcomes of bus calls (timeout, no responders, ...)
// are std::error_code values of BusErrc, not exceptions; broken invariants and start-up failures
// throw.

#include <nats/nats.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace muon::bus {

// Well-known header names.
inline constexpr const char* kHeaderContentType = "Content-Type";
inline constexpr const char* kHeaderAuthorization = "Authorization";
inline constexpr const char* kHeaderRequestId = "Muon-Request-Id";
inline constexpr const char* kHeaderTraceparent = "traceparent";
inline constexpr const char* kHeaderServiceError = "Nats-Service-Error";
inline constexpr const char* kHeaderServiceErrorCode = "Nats-Service-Error-Code";
inline constexpr const char* kHeaderMsgId = "Nats-Msg-Id";
// The address of the HTTP client a request came from (the TCP peer the ingress saw). The
// ingress sets it on every request it puts on the bus and never passes on a value the client
// sent; auth throttles logins per (email, this address).
inline constexpr const char* kHeaderClientAddress = "Muon-Client-Address";
inline constexpr std::string_view kContentTypeProtobuf = "application/x-protobuf";
inline constexpr std::string_view kContentTypeJson = "application/json";

enum class BusErrc {
  kOk = 0,
  kTimeout,          // no reply within the deadline
  kNoResponders,     // nobody subscribes to the subject (the server told us at once)
  kNotConnected,     // connection is reconnecting or closed
  kPayloadTooLarge,  // message bigger than the server's max_payload
  kInvalidArgument,  // bad subject, bad config
  kNotFound,         // stream/consumer does not exist
  kJetStream,        // JetStream API error (see the logged jsErrCode)
  kOther,
};
const std::error_category& BusCategory();
std::error_code make_error_code(BusErrc e);
std::error_code FromNatsStatus(natsStatus status);

using Headers = std::vector<std::pair<std::string, std::string>>;

// Frees a message we own right here. natsMsg_Destroy in libnats 3.4 queues every message for the
// library's collector thread instead: one process-wide mutex and a wake-up per message, and the
// memory freed on another thread's malloc arena (3.3 futex calls per proxied request in the
// ingress). Falls back to natsMsg_Destroy when the library does not export natsMsg_free.
void FreeMsg(natsMsg* msg);

// An owned message (received or to be sent).
class Msg {
 public:
  Msg() = default;
  explicit Msg(natsMsg* raw) : raw_(raw) {}
  static Msg Create(std::string_view subject, std::string_view data, const Headers& headers = {},
                    std::string_view reply = {});

  explicit operator bool() const { return raw_ != nullptr; }
  natsMsg* raw() const { return raw_.get(); }
  natsMsg* release() { return raw_.release(); }

  std::string_view subject() const;
  std::string_view reply() const;  // empty when none
  std::string_view data() const;
  // First value of a header (keys are case-sensitive as on the wire).
  std::optional<std::string_view> Header(const char* key) const;
  Headers AllHeaders() const;

  // JetStream acknowledgements (explicit ack policy).

 private:
  struct Deleter {
    void operator()(natsMsg* m) const { FreeMsg(m); }
  };
  std::unique_ptr<natsMsg, Deleter> raw_;
};

using MsgHandler = std::function<void(Msg&)>;

// A subscription that delivers to a handler on nats.c's delivery thread for this subscription.
// Destroying it unsubscribes and waits until the handler is no longer running.
class Subscription {
 public:
  Subscription();
  Subscription(Subscription&&) noexcept;
  Subscription& operator=(Subscription&&) noexcept;
  ~Subscription();

  // Stops interest at the server, lets already delivered messages be handled, and returns once
  // the last handler call has finished (or the timeout passed: returns false then).
  bool Drain(std::chrono::milliseconds timeout);
  // The two halves of Drain, so several subscriptions can stop taking messages at once.
  void StartDrain(std::chrono::milliseconds timeout);
  bool WaitDrained(std::chrono::milliseconds timeout);
  void Unsubscribe();
  natsSubscription* raw() const;

 private:
  friend class Connection;
  friend class JetStream;
  struct State;
  std::unique_ptr<State> state_;
};

struct ConnectOptions {
  std::string url = "nats://127.0.0.1:4222";
  std::string name;  // connection name shown in nats-server monitoring
  bool send_asap = true;
  std::chrono::milliseconds reconnect_wait{250};
  std::chrono::milliseconds reconnect_jitter{250};
  std::chrono::milliseconds connect_timeout{2000};
  // When the server is not up yet, keep trying in the background instead of failing start-up.
  bool retry_on_failed_connect = true;
  // Pending-message limit per subscription (slow-consumer protection).
  int max_pending_msgs = 1 << 16;
  // Drive the connection from this Asio event loop instead of nats.c's reader thread: the loop's
  // thread reads and parses, and publishes made during one pass leave in one write. Required
  // for SubscribeOnLoop and LoopRequester (bus_loop.h). Blocking calls (Request, Flush, sync
  // NextMsg) must then not run on the loop's thread; the loop must outlive the connection, and
  // the connection is destroyed either on the loop's thread or after the loop stopped running.
  boost::asio::io_context* event_loop = nullptr;
};

class LoopDriver;

class Connection {
 public:
  // Throws std::runtime_error on a bad URL or options; with retry_on_failed_connect the returned
  // connection may still be connecting (IsConnected() tells).
  static std::unique_ptr<Connection> Connect(const ConnectOptions& options);
  struct Token {
    explicit Token() = default;
  };
  explicit Connection(Token) {}  // use Connect()
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  natsConnection* raw() const { return nc_; }
  bool IsConnected() const;
  // Polls IsConnected until the deadline.
  bool WaitConnected(std::chrono::milliseconds deadline) const;

  std::error_code Publish(std::string_view subject, std::string_view data,
                          const Headers& headers = {}, std::string_view reply = {});
  std::error_code PublishMsg(Msg& msg);
  // Blocking request with headers and a timeout. kNoResponders when nobody listens.
  std::error_code Request(std::string_view subject, std::string_view data, const Headers& headers,
                          std::chrono::milliseconds timeout, Msg& reply);
  // Sends `data` to the request's reply subject (no-op when the request has none).
  std::error_code Respond(const Msg& request, std::string_view data, const Headers& headers = {});

  Subscription Subscribe(std::string_view subject, MsgHandler handler);
  Subscription QueueSubscribe(std::string_view subject, std::string_view queue, MsgHandler handler);

  std::error_code Flush(std::chrono::milliseconds timeout);
  // Drains every subscription and closes the connection (blocking up to timeout).
  void DrainAndClose(std::chrono::milliseconds timeout);
  const std::string& url() const { return url_; }

  std::string NewInbox() const;

  // Set when the connection runs on an event loop (ConnectOptions::event_loop).
  const std::shared_ptr<LoopDriver>& loop_driver() const { return loop_; }

 private:
  Subscription SubscribeImpl(std::string_view subject, std::string_view queue, MsgHandler handler);
  std::shared_ptr<LoopDriver> loop_;  // released after ~Connection closed the nats.c connection
  natsConnection* nc_ = nullptr;
  std::string url_;
  int max_pending_msgs_ = 0;
};

// Scatter-gather: publishes one request and collects the replies that arrive within `window`, or
// until `max_replies` arrived (0 = no cap). The server's "no responders" status is not a reply.
// Used for discovery ($SRV.PING/INFO/STATS go to every instance).
std::vector<Msg> Gather(Connection& connection, std::string_view subject, std::string_view data,
                        std::chrono::milliseconds window, size_t max_replies = 0);

// ---- JetStream ----

struct StreamConfig {
  std::string name;
  std::vector<std::string> subjects;
  std::chrono::nanoseconds max_age{0};  // 0 = unlimited
  int64_t max_bytes = -1;
  int64_t max_msgs = -1;
  std::chrono::nanoseconds duplicate_window{std::chrono::minutes(2)};
  bool memory_storage = false;
};

struct PubAck {
  std::string stream;
  uint64_t sequence = 0;
  bool duplicate = false;
};

struct ConsumerConfig {
  std::string durable;
  std::string filter_subject;
  std::chrono::nanoseconds ack_wait{std::chrono::seconds(30)};
  int64_t max_ack_pending = 10000;
  int64_t max_deliver = -1;
};

class PullConsumer;

class JetStream {
 public:
  explicit JetStream(Connection& connection);
  ~JetStream();
  JetStream(const JetStream&) = delete;
  JetStream& operator=(const JetStream&) = delete;

  // Creates the stream, or updates it to this config when it exists: safe to call from every
  // replica at every start.
  std::error_code EnsureStream(const StreamConfig& config);
  // Publishes and waits for the stream's ack. A non-empty msg_id goes into Nats-Msg-Id so the
  // server drops a repeat within the stream's duplicate window (ack.duplicate tells).
  std::error_code Publish(std::string_view subject, std::string_view data, std::string_view msg_id,
                          PubAck& ack, const Headers& headers = {});
  // Binds to a durable pull consumer with explicit acks, creating it or updating it to `config`
  // (when the server refuses the update, e.g. of filter_subject on 2.9, it binds as it is).
  std::error_code PullSubscribe(std::string_view stream, const ConsumerConfig& config,
                                PullConsumer& consumer);

  // The stream sequence up to which a durable consumer has every message acknowledged.
  std::error_code AckFloor(std::string_view stream, std::string_view durable, uint64_t& floor);
  // The stream's last sequence (0 when empty).
  std::error_code LastSequence(std::string_view stream, uint64_t& last);

  // An ordered, ephemeral push consumer (no acks, flow control and heartbeats handled by nats.c)
  // delivering messages of `filter_subject` from stream sequence `start_sequence` on (0 = only
  // new messages) to `handler` on the subscription's thread.
  std::error_code SubscribeOrdered(std::string_view stream, std::string_view filter_subject,
                                   uint64_t start_sequence, MsgHandler handler,
                                   Subscription& subscription);

  jsCtx* raw() const { return js_; }

 private:
  jsCtx* js_ = nullptr;
  Connection& connection_;
};

// What a JetStream-delivered message's reply subject
// ($JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>) says.
struct JsDelivery {
  uint64_t stream_sequence = 0;
  uint64_t delivered = 0;  // 1 on first delivery, more on redeliveries
};
// nullopt when the message did not come from a JetStream consumer.
std::optional<JsDelivery> ParseJsDelivery(std::string_view reply_subject);

// A durable pull consumer, pulled with our own `$JS.API.CONSUMER.MSG.NEXT` requests on one inbox
// subscription: libnats 3.4's natsSubscription_Fetch can return more messages than the array it
// allocated for the batch (heap overflow under ASan when a late delivery of an earlier, expired
// pull arrives), so it is not used.
class PullConsumer {
 public:
  PullConsumer() = default;
  // Up to `batch` messages: those available now, else the first to arrive within `timeout` and
  // those available right after it. An empty result with kTimeout is the normal "nothing to
  // do"; kNotFound means the consumer went away (bind again).
  std::error_code Fetch(int batch, std::chrono::milliseconds timeout, std::vector<Msg>& out);
  bool Valid() const { return static_cast<bool>(sub_); }
  // Acknowledgements of fetched messages: publishes to their reply subjects, not waited for.
  std::error_code Ack(const Msg& msg) const { return Reply(msg, "+ACK"); }
  std::error_code Nak(const Msg& msg) const { return Reply(msg, "-NAK"); }
  std::error_code InProgress(const Msg& msg) const { return Reply(msg, "+WPI"); }
  std::error_code AckAll(const std::vector<Msg>& messages) const;

 private:
  friend class JetStream;
  struct Deleter {
    void operator()(natsSubscription* s) const { natsSubscription_Destroy(s); }
  };
  // One MSG.NEXT request (no_wait when `expires` is empty); collects its messages until it ends.
  std::error_code Pull(int batch, std::optional<std::chrono::milliseconds> expires,
                       std::chrono::steady_clock::time_point deadline, std::vector<Msg>& out,
                       int& got);

  std::error_code Reply(const Msg& msg, std::string_view what) const;

  natsConnection* nc_ = nullptr;
  std::string next_subject_;  // $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>
  std::string inbox_;
  std::unique_ptr<natsSubscription, Deleter> sub_;
};

}  // namespace muon::bus

template <>
struct std::is_error_code_enum<muon::bus::BusErrc> : std::true_type {};
