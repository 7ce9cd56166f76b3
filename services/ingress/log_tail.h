#pragma once
// Live log tails over server-sent events (GET /v1/logs/tail): the last N matching lines from the
// logs service's history, then every new line from the log stream, without a gap or a duplicate
// at the seam. History comes with the stream sequence every stored line had and the consumer's
// ack floor W (everything at or below W is stored); the live part is an ordered JetStream
// consumer starting at W+1 that skips the stream sequences the history already showed.

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <string>

#include "http_server.h"
#include "muon/common/bus.h"
#include "muon/logs/v1/logs.pb.h"

namespace muon::ingress {

struct TailRequest {
  logs::v1::Filter filter;
  int backlog = 100;  // history lines sent first (0..1000)
};

// Parses the query of GET /v1/logs/tail?service=&instance=&release=&source=&severity=&grep=&n=.
// Throws muon::Error(400) with a message naming the bad parameter.
TailRequest ParseTailRequest(std::string_view target);

// One event: "id: <stream seq>\nevent: line\ndata: <LogLine as JSON>\n\n".
std::string SseLineEvent(const logs::v1::LogLine& line);

class LogTail : public std::enable_shared_from_this<LogTail> {
 public:
  LogTail(TailRequest request, bus::Connection& connection, boost::asio::io_context& io,
          std::shared_ptr<ResponseStream> out);
  ~LogTail();

  // Sends `history` (newest first, as the logs service answers) oldest first, then subscribes
  // from committed_through + 1. Returns an error when the stream cannot be followed.
  std::error_code Start(const logs::v1::QueryResponse& history);

 private:
  void OnLive(bus::Msg& msg);
  void Tick();

  TailRequest request_;
  bus::Connection& connection_;
  std::shared_ptr<ResponseStream> out_;
  boost::asio::steady_timer timer_;
  uint64_t watermark_ = 0;
  bus::Subscription live_;
  int ticks_ = 0;
};

}  // namespace muon::ingress
