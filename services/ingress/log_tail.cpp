#include "log_tail.h"

#include <google/protobuf/util/json_util.h>

#include <charconv>

#include "edge.h"
#include "muon/common/errors.h"
#include "muon/common/log.h"
#include "muon/common/log_lines.h"

namespace muon::ingress {
namespace {

constexpr size_t kMaxBacklogBytes = 8 * 1024 * 1024;  // a client this far behind is cut off
constexpr auto kTick = std::chrono::seconds(5);
constexpr int kTicksPerKeepalive = 3;

}  // namespace

TailRequest ParseTailRequest(std::string_view target) {
  std::map<std::string, std::string> q;
  try {
    q = ParseQueryString(target);
  } catch (const std::invalid_argument& e) {
    throw Error::BadRequest(e.what());
  }
  TailRequest r;
  for (const auto& [key, value] : q) {
    if (key == "service") {
      if (!loglines::IsValidToken(value)) throw Error::BadRequest("service is not a valid name");
      r.filter.set_service(value);
    } else if (key == "instance") {
      if (!loglines::IsValidToken(value)) throw Error::BadRequest("instance is not a valid id");
      r.filter.set_instance(value);
    } else if (key == "release") {
      if (value.size() > 128) throw Error::BadRequest("release is too long");
      r.filter.set_release(value);
    } else if (key == "source") {
      auto s = loglines::ParseSourceName(value);
      if (!s) throw Error::BadRequest("source must be one of app, system, build, platform");
      r.filter.set_source(*s);
    } else if (key == "severity") {
      auto s = loglines::ParseSeverityName(value);
      if (!s) throw Error::BadRequest("severity must be one of debug, info, warn, error, fatal");
      r.filter.set_min_severity(*s);
    } else if (key == "grep") {
      if (value.size() > 1024) throw Error::BadRequest("grep is longer than 1024 bytes");
      r.filter.set_grep(value);
    } else if (key == "n") {
      int n = -1;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || p != value.data() + value.size() || n < 0 || n > 1000) {
        throw Error::BadRequest("n must be a number of lines from 0 to 1000");
      }
      r.backlog = n;
    } else {
      throw Error::BadRequest(fmt::format(
          "unknown parameter {}; use service, instance, release, source, severity, grep, n", key));
    }
  }
  return r;
}

std::string SseLineEvent(const logs::v1::LogLine& line) {
  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  (void)google::protobuf::util::MessageToJsonString(line, &json, print);
  // JSON from protobuf never holds a raw newline, so one data: field carries it.
  return fmt::format("id: {}\nevent: line\ndata: {}\n\n", line.stream_seq(), json);
}

LogTail::LogTail(TailRequest request, bus::Connection& connection, boost::asio::io_context& io,
                 std::shared_ptr<ResponseStream> out)
    : request_(std::move(request)), connection_(connection), out_(std::move(out)), timer_(io) {}

LogTail::~LogTail() {
  live_ = bus::Subscription();  // waits until OnLive is no longer running
}

std::error_code LogTail::Start(const logs::v1::QueryResponse& history) {
  watermark_ = history.committed_through();
  for (int i = history.lines_size() - 1; i >= 0; --i) {
    const auto& line = history.lines(i);
    out_->Send(SseLineEvent(line));
  }
  // A comment marks the seam: clients (and tests) can tell the live part has begun.
  out_->Send(": live\n\n");
  bus::JetStream js(connection_);
  std::weak_ptr<LogTail> weak = shared_from_this();
  if (auto ec = js.SubscribeOrdered(
          loglines::kStreamName,
          loglines::FilterSubject(request_.filter.service(), request_.filter.instance()),
          watermark_ + 1,
          [weak](bus::Msg& msg) {
            if (auto self = weak.lock()) self->OnLive(msg);
          },
          live_)) {
    return ec;
  }
  Tick();
  return {};
}

void LogTail::OnLive(bus::Msg& msg) {
  if (out_->Closed()) return;
  const auto delivery = bus::ParseJsDelivery(msg.reply());
  if (!delivery) return;
  if (delivery->stream_sequence <= watermark_) return;
  logs::v1::LogBatch batch;
  if (!batch.ParseFromArray(msg.data().data(), static_cast<int>(msg.data().size()))) return;
  std::string events;
  for (auto& line : *batch.mutable_lines()) {
    line.set_stream_seq(delivery->stream_sequence);
    if (loglines::Matches(request_.filter, line)) events += SseLineEvent(line);
  }
  if (events.empty()) return;
  if (out_->Backlog() > kMaxBacklogBytes) {
    out_->Send("event: error\ndata: {\"detail\":\"the client reads too slowly; tail ended\"}\n\n");
    out_->End();
    return;
  }
  out_->Send(std::move(events));
}

void LogTail::Tick() {
  if (out_->Closed()) {
    // Waits for a running OnLive to return, so this object (whose last reference the timer
    // chain holds) is destroyed here on the worker, never inside its own message handler.
    live_.Drain(std::chrono::seconds(2));
    return;
  }
  if (++ticks_ % kTicksPerKeepalive == 0) out_->Send(": keepalive\n\n");
  timer_.expires_after(kTick);
  timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec) return;
    self->Tick();
  });
}

}  // namespace muon::ingress
