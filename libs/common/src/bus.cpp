#include "muon/common/bus.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "bus_loop_driver.h"
#include "muon/common/log.h"

namespace muon::bus {
namespace {

class BusCategoryImpl : public std::error_category {
 public:
  const char* name() const noexcept override { return "muon.bus"; }
  std::string message(int value) const override {
    switch (static_cast<BusErrc>(value)) {
      case BusErrc::kOk:
        return "ok";
      case BusErrc::kTimeout:
        return "timeout waiting for a reply";
      case BusErrc::kNoResponders:
        return "no responders";
      case BusErrc::kNotConnected:
        return "not connected to NATS";
      case BusErrc::kPayloadTooLarge:
        return "message exceeds the server's max payload";
      case BusErrc::kInvalidArgument:
        return "invalid argument";
      case BusErrc::kNotFound:
        return "not found";
      case BusErrc::kJetStream:
        return "JetStream API error";
      case BusErrc::kOther:
        return "NATS error";
    }
    return "unknown bus error";
  }
};

std::string ConnectedUrl(natsConnection* nc) {
  char buffer[256] = {0};
  if (natsConnection_GetConnectedUrl(nc, buffer, sizeof(buffer)) != NATS_OK) return {};
  return buffer;
}

void OnDisconnected(natsConnection* nc, void* closure) {
  if (natsConnection_IsClosed(nc)) return;  // our own Close(), not an outage
  log::Warn("nats disconnected, reconnecting",
            {{"url", *static_cast<const std::string*>(closure)}});
}
void OnReconnected(natsConnection* nc, void*) {
  log::Info("nats reconnected", {{"url", ConnectedUrl(nc)}});
}
void OnConnected(natsConnection* nc, void*) {
  log::Info("nats connected", {{"url", ConnectedUrl(nc)}});
}
void OnClosed(natsConnection*, void*) {
  log::Debug("nats connection closed");
}
void OnAsyncError(natsConnection*, natsSubscription* sub, natsStatus err, void*) {
  const char* subject = sub != nullptr ? natsSubscription_GetSubject(sub) : nullptr;
  log::Error("nats asynchronous error",
             {{"status", natsStatus_GetText(err)}, {"subject", subject ? subject : ""}});
}

void Check(natsStatus status, const char* what) {
  if (status != NATS_OK) {
    throw std::runtime_error(std::string(what) + ": " + natsStatus_GetText(status));
  }
}

// nats.c wants NUL-terminated strings.
std::string Z(std::string_view s) {
  return std::string(s);
}

}  // namespace

const std::error_category& BusCategory() {
  static BusCategoryImpl category;
  return category;
}

std::error_code make_error_code(BusErrc e) {
  return {static_cast<int>(e), BusCategory()};
}

std::error_code FromNatsStatus(natsStatus status) {
  switch (status) {
    case NATS_OK:
      return {};
    case NATS_TIMEOUT:
      return BusErrc::kTimeout;
    case NATS_NO_RESPONDERS:
      return BusErrc::kNoResponders;
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_SERVER:
    case NATS_NOT_YET_CONNECTED:
    case NATS_CONNECTION_AUTH_FAILED:
    case NATS_STALE_CONNECTION:
    case NATS_DRAINING:
      return BusErrc::kNotConnected;
    case NATS_MAX_PAYLOAD:
      return BusErrc::kPayloadTooLarge;
    case NATS_INVALID_SUBJECT:
    case NATS_INVALID_ARG:
      return BusErrc::kInvalidArgument;
    case NATS_NOT_FOUND:
      return BusErrc::kNotFound;
    default:
      return BusErrc::kOther;
  }
}

// ---- Msg ----

Msg Msg::Create(std::string_view subject, std::string_view data, const Headers& headers,
                std::string_view reply) {
  natsMsg* raw = nullptr;
  const std::string subj = Z(subject);
  const std::string rep = Z(reply);
  Check(natsMsg_Create(&raw, subj.c_str(), reply.empty() ? nullptr : rep.c_str(), data.data(),
                       static_cast<int>(data.size())),
        "natsMsg_Create");
  Msg msg(raw);
  for (const auto& [key, value] : headers) {
    Check(natsMsgHeader_Add(raw, key.c_str(), value.c_str()), "natsMsgHeader_Add");
  }
  return msg;
}

std::string_view Msg::subject() const {
  const char* s = natsMsg_GetSubject(raw_.get());
  return s ? std::string_view(s) : std::string_view();
}

std::string_view Msg::reply() const {
  const char* s = natsMsg_GetReply(raw_.get());
  return s ? std::string_view(s) : std::string_view();
}

std::string_view Msg::data() const {
  const char* d = natsMsg_GetData(raw_.get());
  const int len = natsMsg_GetDataLength(raw_.get());
  return d ? std::string_view(d, static_cast<size_t>(len)) : std::string_view();
}

std::optional<std::string_view> Msg::Header(const char* key) const {
  const char* value = nullptr;
  if (natsMsgHeader_Get(raw_.get(), key, &value) != NATS_OK || value == nullptr) {
    return std::nullopt;
  }
  return std::string_view(value);
}

Headers Msg::AllHeaders() const {
  Headers out;
  const char** keys = nullptr;
  int count = 0;
  if (natsMsgHeader_Keys(raw_.get(), &keys, &count) != NATS_OK) return out;
  for (int i = 0; i < count; ++i) {
    const char** values = nullptr;
    int n = 0;
    if (natsMsgHeader_Values(raw_.get(), keys[i], &values, &n) == NATS_OK) {
      for (int j = 0; j < n; ++j) out.emplace_back(keys[i], values[j]);
      free(static_cast<void*>(values));
    }
  }
  free(static_cast<void*>(keys));
  return out;
}

void FreeMsg(natsMsg* msg) {
  using FreeFunction = void (*)(void*);
  static const FreeFunction free_in_place =
      reinterpret_cast<FreeFunction>(::dlsym(RTLD_DEFAULT, "natsMsg_free"));
  if (msg == nullptr) return;
  if (free_in_place != nullptr) {
    free_in_place(msg);
  } else {
    natsMsg_Destroy(msg);
  }
}

// ---- Subscription ----

struct Subscription::State {
  natsSubscription* sub = nullptr;
  MsgHandler handler;
  std::mutex mu;
  std::condition_variable cv;
  bool completed = false;
  std::thread::id delivery_thread;

  static void OnMessage(natsConnection*, natsSubscription*, natsMsg* raw, void* closure) {
    auto* self = static_cast<State*>(closure);
    self->delivery_thread = std::this_thread::get_id();
    Msg msg(raw);
    try {
      self->handler(msg);
    } catch (const std::exception& e) {
      // Handlers own their error replies; reaching here is a bug in one, not a reason to die.
      log::Error("message handler threw", {{"subject", msg.subject()}, {"error", e.what()}});
    }
  }

  static void OnComplete(void* closure) {
    auto* self = static_cast<State*>(closure);
    std::lock_guard lock(self->mu);
    self->completed = true;
    self->cv.notify_all();
  }

  bool WaitCompleted(std::chrono::milliseconds timeout) {
    if (std::this_thread::get_id() == delivery_thread) return true;  // called from the handler
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, [this] { return completed; });
  }

  ~State() {
    if (sub == nullptr) return;
    natsSubscription_Unsubscribe(sub);
    if (!WaitCompleted(std::chrono::seconds(30))) {
      log::Error("subscription handler still running after 30s; destroying anyway");
    }
    natsSubscription_Destroy(sub);
  }
};

Subscription::Subscription() = default;
Subscription::Subscription(Subscription&&) noexcept = default;
Subscription& Subscription::operator=(Subscription&&) noexcept = default;
Subscription::~Subscription() = default;

bool Subscription::Drain(std::chrono::milliseconds timeout) {
  StartDrain(timeout);
  return WaitDrained(timeout);
}

void Subscription::StartDrain(std::chrono::milliseconds timeout) {
  if (!state_ || state_->sub == nullptr) return;
  if (natsSubscription_DrainTimeout(state_->sub, timeout.count()) != NATS_OK) {
    natsSubscription_Unsubscribe(state_->sub);
  }
}

bool Subscription::WaitDrained(std::chrono::milliseconds timeout) {
  if (!state_ || state_->sub == nullptr) return true;
  natsSubscription_WaitForDrainCompletion(state_->sub, timeout.count());
  return state_->WaitCompleted(timeout);
}

void Subscription::Unsubscribe() {
  if (state_ && state_->sub != nullptr) natsSubscription_Unsubscribe(state_->sub);
}

natsSubscription* Subscription::raw() const {
  return state_ ? state_->sub : nullptr;
}

// ---- Connection ----

// nats.c spins on its mutexes (2000 times by default) before sleeping; with the reader, the
// delivery threads and our own threads all taking the connection lock, that spinning burns the
// CPU a busy proxy needs. MUON_NATS_LOCK_SPIN sets the count (-1 = nats.c's default); it must be
// applied before the first nats.c call, hence once per process here.
void OpenNatsLibrary() {
  static std::once_flag once;
  std::call_once(once, [] {
    int64_t spin = -1;
    if (const char* env = std::getenv("MUON_NATS_LOCK_SPIN"); env != nullptr && *env != '\0') {
      spin = std::strtoll(env, nullptr, 10);
    }
    nats_Open(spin);
  });
}

std::unique_ptr<Connection> Connection::Connect(const ConnectOptions& options) {
  OpenNatsLibrary();
  natsOptions* raw_opts = nullptr;
  Check(natsOptions_Create(&raw_opts), "natsOptions_Create");
  std::unique_ptr<natsOptions, void (*)(natsOptions*)> opts(raw_opts, natsOptions_Destroy);
  // Created first: callbacks get a pointer to its url_, which lives as long as the connection.
  auto conn = std::make_unique<Connection>(Token{});
  conn->url_ = options.url;
  conn->max_pending_msgs_ = options.max_pending_msgs;
  Check(natsOptions_SetURL(opts.get(), options.url.c_str()), "invalid NATS URL");
  if (!options.name.empty()) Check(natsOptions_SetName(opts.get(), options.name.c_str()), "name");
  Check(natsOptions_SetSendAsap(opts.get(), options.send_asap), "send asap");
  Check(natsOptions_SetMaxReconnect(opts.get(), -1), "max reconnect");
  Check(natsOptions_SetReconnectWait(opts.get(), options.reconnect_wait.count()), "reconnect wait");
  Check(natsOptions_SetReconnectJitter(opts.get(), options.reconnect_jitter.count(),
                                       options.reconnect_jitter.count()),
        "reconnect jitter");
  Check(natsOptions_SetTimeout(opts.get(), options.connect_timeout.count()), "timeout");
  Check(natsOptions_SetDisconnectedCB(opts.get(), OnDisconnected, &conn->url_), "disconnected cb");
  Check(natsOptions_SetReconnectedCB(opts.get(), OnReconnected, nullptr), "reconnected cb");
  Check(natsOptions_SetClosedCB(opts.get(), OnClosed, nullptr), "closed cb");
  Check(natsOptions_SetErrorHandler(opts.get(), OnAsyncError, nullptr), "error handler");
  Check(natsOptions_SetMaxPendingMsgs(opts.get(), options.max_pending_msgs), "max pending");
  if (options.event_loop != nullptr) {
    conn->loop_ = std::make_shared<LoopDriver>(*options.event_loop);
    conn->loop_->Install(opts.get());
  }
  if (options.retry_on_failed_connect) {
    Check(natsOptions_SetRetryOnFailedConnect(opts.get(), true, OnConnected, nullptr),
          "retry on failed connect");
  }

  natsStatus status = natsConnection_Connect(&conn->nc_, opts.get());
  if (status == NATS_NOT_YET_CONNECTED) {
    log::Warn("nats not reachable yet, retrying in the background", {{"url", options.url}});
  } else {
    Check(status, ("cannot connect to NATS at " + options.url).c_str());
  }
  return conn;
}

Connection::~Connection() {
  if (nc_ != nullptr) {
    natsConnection_Close(nc_);
    natsConnection_Destroy(nc_);
  }
}

bool Connection::IsConnected() const {
  return natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED;
}

bool Connection::WaitConnected(std::chrono::milliseconds deadline) const {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (!IsConnected()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

std::error_code Connection::Publish(std::string_view subject, std::string_view data,
                                    const Headers& headers, std::string_view reply) {
  if (headers.empty()) {
    const std::string subj = Z(subject);
    if (reply.empty()) {
      return FromNatsStatus(
          natsConnection_Publish(nc_, subj.c_str(), data.data(), static_cast<int>(data.size())));
    }
    const std::string rep = Z(reply);
    return FromNatsStatus(natsConnection_PublishRequest(nc_, subj.c_str(), rep.c_str(), data.data(),
                                                        static_cast<int>(data.size())));
  }
  Msg msg = Msg::Create(subject, data, headers, reply);
  return PublishMsg(msg);
}

std::error_code Connection::PublishMsg(Msg& msg) {
  return FromNatsStatus(natsConnection_PublishMsg(nc_, msg.raw()));
}

std::error_code Connection::Request(std::string_view subject, std::string_view data,
                                    const Headers& headers, std::chrono::milliseconds timeout,
                                    Msg& reply) {
  natsMsg* raw_reply = nullptr;
  natsStatus status;
  if (headers.empty()) {
    const std::string subj = Z(subject);
    status = natsConnection_Request(&raw_reply, nc_, subj.c_str(), data.data(),
                                    static_cast<int>(data.size()), timeout.count());
  } else {
    Msg request = Msg::Create(subject, data, headers);
    status = natsConnection_RequestMsg(&raw_reply, nc_, request.raw(), timeout.count());
  }
  reply = Msg(raw_reply);
  return FromNatsStatus(status);
}

std::error_code Connection::Respond(const Msg& request, std::string_view data,
                                    const Headers& headers) {
  if (request.reply().empty()) return {};
  return Publish(request.reply(), data, headers);
}

Subscription Connection::Subscribe(std::string_view subject, MsgHandler handler) {
  return SubscribeImpl(subject, {}, std::move(handler));
}

Subscription Connection::QueueSubscribe(std::string_view subject, std::string_view queue,
                                        MsgHandler handler) {
  return SubscribeImpl(subject, queue, std::move(handler));
}

Subscription Connection::SubscribeImpl(std::string_view subject, std::string_view queue,
                                       MsgHandler handler) {
  Subscription result;
  result.state_ = std::make_unique<Subscription::State>();
  auto* state = result.state_.get();
  state->handler = std::move(handler);
  const std::string subj = Z(subject);
  natsStatus status;
  if (queue.empty()) {
    status = natsConnection_Subscribe(&state->sub, nc_, subj.c_str(),
                                      &Subscription::State::OnMessage, state);
  } else {
    const std::string q = Z(queue);
    status = natsConnection_QueueSubscribe(&state->sub, nc_, subj.c_str(), q.c_str(),
                                           &Subscription::State::OnMessage, state);
  }
  if (status != NATS_OK) {
    state->sub = nullptr;
    throw std::runtime_error("subscribe to " + subj + ": " + natsStatus_GetText(status));
  }
  natsSubscription_SetOnCompleteCB(state->sub, &Subscription::State::OnComplete, state);
  natsSubscription_SetPendingLimits(state->sub, max_pending_msgs_, 256 * 1024 * 1024);
  return result;
}

std::error_code Connection::Flush(std::chrono::milliseconds timeout) {
  return FromNatsStatus(natsConnection_FlushTimeout(nc_, timeout.count()));
}

void Connection::DrainAndClose(std::chrono::milliseconds timeout) {
  if (natsConnection_DrainTimeout(nc_, timeout.count()) == NATS_OK) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (natsConnection_Status(nc_) != NATS_CONN_STATUS_CLOSED &&
           std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  natsConnection_Close(nc_);
}

std::string Connection::NewInbox() const {
  natsInbox* inbox = nullptr;
  Check(natsInbox_Create(&inbox), "natsInbox_Create");
  std::string result(inbox);
  natsInbox_Destroy(inbox);
  return result;
}

std::vector<Msg> Gather(Connection& connection, std::string_view subject, std::string_view data,
                        std::chrono::milliseconds window, size_t max_replies) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Msg> replies;
  const std::string inbox = connection.NewInbox();
  Subscription sub = connection.Subscribe(inbox, [&](Msg& msg) {
    if (natsMsg_IsNoResponders(msg.raw())) return;
    std::lock_guard lock(mu);
    replies.push_back(std::move(msg));
    cv.notify_all();
  });
  if (connection.Flush(window) || connection.Publish(subject, data, {}, inbox)) return {};
  {
    std::unique_lock lock(mu);
    cv.wait_for(lock, window, [&] { return max_replies > 0 && replies.size() >= max_replies; });
  }
  sub.Unsubscribe();
  sub = Subscription();  // waits until the handler can no longer run
  return replies;
}

// ---- JetStream ----

namespace {
std::error_code FromJs(natsStatus status, jsErrCode code, const char* what) {
  if (status == NATS_OK) return {};
  if (code != 0) {
    log::Warn("jetstream call failed",
              {{"call", what}, {"status", natsStatus_GetText(status)}, {"js_code", int(code)}});
    if (code == JSStreamNotFoundErr || code == JSConsumerNotFoundErr) return BusErrc::kNotFound;
    return BusErrc::kJetStream;
  }
  return FromNatsStatus(status);
}
}  // namespace

JetStream::JetStream(Connection& connection) : connection_(connection) {
  Check(natsConnection_JetStream(&js_, connection.raw(), nullptr), "natsConnection_JetStream");
}

JetStream::~JetStream() {
  jsCtx_Destroy(js_);
}

std::error_code JetStream::EnsureStream(const StreamConfig& config) {
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  std::vector<const char*> subjects;
  for (const auto& s : config.subjects) subjects.push_back(s.c_str());
  cfg.Name = config.name.c_str();
  cfg.Subjects = subjects.data();
  cfg.SubjectsLen = static_cast<int>(subjects.size());
  cfg.MaxAge = config.max_age.count();
  cfg.MaxBytes = config.max_bytes;
  cfg.MaxMsgs = config.max_msgs;
  cfg.Duplicates = config.duplicate_window.count();
  cfg.Storage = config.memory_storage ? js_MemoryStorage : js_FileStorage;
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus status = js_AddStream(&info, js_, &cfg, nullptr, &code);
  if (status != NATS_OK && code == JSStreamNameExistErr) {
    code = static_cast<jsErrCode>(0);
    status = js_UpdateStream(&info, js_, &cfg, nullptr, &code);
  }
  if (info != nullptr) jsStreamInfo_Destroy(info);
  return FromJs(status, code, "ensure stream");
}

std::error_code JetStream::Publish(std::string_view subject, std::string_view data,
                                   std::string_view msg_id, PubAck& ack, const Headers& headers) {
  Msg msg = Msg::Create(subject, data, headers);
  jsPubOptions opts;
  jsPubOptions_Init(&opts);
  const std::string id = Z(msg_id);
  if (!id.empty()) opts.MsgId = id.c_str();
  jsPubAck* raw_ack = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus status = js_PublishMsg(&raw_ack, js_, msg.raw(), &opts, &code);
  if (raw_ack != nullptr) {
    ack.stream = raw_ack->Stream ? raw_ack->Stream : "";
    ack.sequence = raw_ack->Sequence;
    ack.duplicate = raw_ack->Duplicate;
    jsPubAck_Destroy(raw_ack);
  }
  return FromJs(status, code, "publish");
}

std::error_code JetStream::PullSubscribe(std::string_view stream, const ConsumerConfig& config,
                                         PullConsumer& consumer) {
  const std::string stream_name = Z(stream), filter = Z(config.filter_subject);
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = config.durable.c_str();
  cc.AckPolicy = js_AckExplicit;
  cc.DeliverPolicy = js_DeliverAll;
  cc.AckWait = config.ack_wait.count();
  cc.MaxAckPending = config.max_ack_pending;
  cc.MaxDeliver = config.max_deliver;
  cc.FilterSubject = filter.empty() ? nullptr : filter.c_str();
  jsConsumerInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus status = js_AddConsumer(&info, js_, stream_name.c_str(), &cc, nullptr, &code);
  if (status != NATS_OK && code != 0) {
    // It exists with another config: update what may be updated, else use it as it is.
    if (js_UpdateConsumer(&info, js_, stream_name.c_str(), &cc, nullptr, &code) != NATS_OK) {
      log::Warn("the durable consumer exists with another config that cannot be updated; using it",
                {{"stream", stream_name}, {"durable", config.durable}, {"js_code", int(code)}});
      code = static_cast<jsErrCode>(0);
      status = js_GetConsumerInfo(&info, js_, stream_name.c_str(), config.durable.c_str(), nullptr,
                                  &code);
    } else {
      status = NATS_OK;
    }
  }
  const bool is_pull =
      info != nullptr && info->Config != nullptr &&
      (info->Config->DeliverSubject == nullptr || info->Config->DeliverSubject[0] == '\0');
  if (info != nullptr) jsConsumerInfo_Destroy(info);
  if (status != NATS_OK) return FromJs(status, code, "add pull consumer");
  if (!is_pull) {
    log::Warn("the durable consumer is a push consumer; cannot pull from it",
              {{"stream", stream_name}, {"durable", config.durable}});
    return BusErrc::kInvalidArgument;
  }
  natsInbox* inbox = nullptr;
  if (auto s = natsInbox_Create(&inbox); s != NATS_OK) return FromNatsStatus(s);
  consumer.inbox_ = inbox;
  natsInbox_Destroy(inbox);
  natsSubscription* sub = nullptr;
  status = natsConnection_SubscribeSync(&sub, connection_.raw(), consumer.inbox_.c_str());
  if (status != NATS_OK) return FromNatsStatus(status);
  consumer.sub_.reset(sub);
  // A batch may be large; the default pending limit (65,536 messages) would drop some.
  natsSubscription_SetPendingLimits(sub, -1, -1);
  consumer.nc_ = connection_.raw();
  consumer.next_subject_ =
      fmt::format("$JS.API.CONSUMER.MSG.NEXT.{}.{}", stream_name, config.durable);
  return {};
}

std::error_code JetStream::AckFloor(std::string_view stream, std::string_view durable,
                                    uint64_t& floor) {
  jsConsumerInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  const std::string s = Z(stream), d = Z(durable);
  natsStatus status = js_GetConsumerInfo(&info, js_, s.c_str(), d.c_str(), nullptr, &code);
  if (info != nullptr) {
    floor = info->AckFloor.Stream;
    jsConsumerInfo_Destroy(info);
  }
  return FromJs(status, code, "consumer info");
}

std::error_code JetStream::LastSequence(std::string_view stream, uint64_t& last) {
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  const std::string s = Z(stream);
  natsStatus status = js_GetStreamInfo(&info, js_, s.c_str(), nullptr, &code);
  if (info != nullptr) {
    last = info->State.LastSeq;
    jsStreamInfo_Destroy(info);
  }
  return FromJs(status, code, "stream info");
}

std::error_code JetStream::SubscribeOrdered(std::string_view stream,
                                            std::string_view filter_subject,
                                            uint64_t start_sequence, MsgHandler handler,
                                            Subscription& subscription) {
  Subscription result;
  result.state_ = std::make_unique<Subscription::State>();
  auto* state = result.state_.get();
  state->handler = std::move(handler);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  const std::string stream_name = Z(stream), filter = Z(filter_subject);
  so.Stream = stream_name.c_str();
  so.Ordered = true;
  if (start_sequence > 0) {
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = start_sequence;
  } else {
    so.Config.DeliverPolicy = js_DeliverNew;
  }
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus status = js_Subscribe(&state->sub, js_, filter.c_str(),
                                   &Subscription::State::OnMessage, state, nullptr, &so, &code);
  if (status != NATS_OK) {
    state->sub = nullptr;
    return FromJs(status, code, "ordered subscribe");
  }
  natsSubscription_SetOnCompleteCB(state->sub, &Subscription::State::OnComplete, state);
  natsSubscription_SetPendingLimits(state->sub, 1 << 16, 256 * 1024 * 1024);
  subscription = std::move(result);
  return {};
}

std::optional<JsDelivery> ParseJsDelivery(std::string_view reply) {
  constexpr std::string_view kPrefix = "$JS.ACK.";
  if (reply.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  std::vector<std::string_view> tokens;
  size_t start = kPrefix.size();
  while (start <= reply.size()) {
    const size_t dot = reply.find('.', start);
    const size_t end = dot == std::string_view::npos ? reply.size() : dot;
    tokens.push_back(reply.substr(start, end - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  // v1: stream.consumer.delivered.sseq.cseq.ts.pending (7 tokens); v2 prepends domain and
  // account hash and appends a random token (9+ tokens).
  size_t first;
  if (tokens.size() == 7) {
    first = 0;
  } else if (tokens.size() >= 9) {
    first = 2;
  } else {
    return std::nullopt;
  }
  auto number = [](std::string_view t, uint64_t& out) {
    if (t.empty()) return false;
    out = 0;
    for (char c : t) {
      if (c < '0' || c > '9') return false;
      out = out * 10 + static_cast<uint64_t>(c - '0');
    }
    return true;
  };
  JsDelivery d;
  if (!number(tokens[first + 2], d.delivered) || !number(tokens[first + 3], d.stream_sequence)) {
    return std::nullopt;
  }
  return d;
}

std::error_code PullConsumer::Reply(const Msg& msg, std::string_view what) const {
  const std::string reply(msg.reply());
  if (nc_ == nullptr || reply.empty()) return BusErrc::kInvalidArgument;
  return FromNatsStatus(
      natsConnection_Publish(nc_, reply.c_str(), what.data(), static_cast<int>(what.size())));
}

std::error_code PullConsumer::AckAll(const std::vector<Msg>& messages) const {
  for (const auto& m : messages) {
    if (auto ec = Ack(m)) return ec;
  }
  return {};
}

std::error_code PullConsumer::Pull(int batch, std::optional<std::chrono::milliseconds> expires,
                                   std::chrono::steady_clock::time_point deadline,
                                   std::vector<Msg>& out, int& got) {
  got = 0;
  const std::string request =
      expires ? fmt::format(R"({{"batch":{},"expires":{}}})", batch,
                            std::chrono::duration_cast<std::chrono::nanoseconds>(*expires).count())
              : fmt::format(R"({{"batch":{},"no_wait":true}})", batch);
  if (natsStatus s = natsConnection_PublishRequest(nc_, next_subject_.c_str(), inbox_.c_str(),
                                                   request.data(), int(request.size()));
      s != NATS_OK) {
    return FromNatsStatus(s);
  }
  while (got < batch) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) break;
    natsMsg* raw = nullptr;
    const natsStatus s = natsSubscription_NextMsg(&raw, sub_.get(), left);
    if (s == NATS_TIMEOUT) break;
    if (s != NATS_OK) return FromNatsStatus(s);
    Msg msg(raw);
    const auto status = msg.data().empty() ? msg.Header("Status") : std::nullopt;
    if (!status) {
      out.push_back(std::move(msg));
      ++got;
      continue;
    }
    if (*status == "100") continue;  // heartbeat
    if (*status == "409" &&
        msg.Header("Description").value_or("").find("Deleted") != std::string_view::npos) {
      sub_.reset();
      return BusErrc::kNotFound;
    }
    break;  // 404 no messages, 408 request over, 409 a limit: this request is done
  }
  return {};
}

std::error_code PullConsumer::Fetch(int batch, std::chrono::milliseconds timeout,
                                    std::vector<Msg>& out) {
  using Clock = std::chrono::steady_clock;
  if (!sub_) return BusErrc::kNotFound;
  batch = std::max(batch, 1);
  // The server ends each request with a status message (or the batch is full); the margin only
  // covers a lost one (a reconnect), after which a late reply is taken by the next call.
  constexpr auto kMargin = std::chrono::seconds(1);
  const auto start = Clock::now();
  int got = 0;
  // What is there now, without waiting.
  if (auto ec = Pull(batch, std::nullopt, start + kMargin, out, got)) return ec;
  if (got > 0) return {};
  // Nothing: wait up to `timeout` for one message, then take what else came with it. A waiting
  // request for the whole batch would hold the first lines until the batch filled or expired.
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  if (waited >= timeout) return BusErrc::kTimeout;
  if (auto ec = Pull(1, timeout - waited, start + timeout + kMargin, out, got)) return ec;
  if (got == 0) return BusErrc::kTimeout;
  if (batch > 1) {
    int more = 0;
    if (auto ec = Pull(batch - 1, std::nullopt, Clock::now() + kMargin, out, more);
        ec && ec != BusErrc::kNotFound) {
      return {};  // the one message is still good; the error shows on the next call
    }
  }
  return {};
}

}  // namespace muon::bus
