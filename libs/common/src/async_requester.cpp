#include "muon/common/async_requester.h"

#include <charconv>
#include <vector>

namespace muon::bus {

AsyncRequester::AsyncRequester(Connection& connection)
    : connection_(connection), prefix_(connection.NewInbox() + ".") {
  subscription_ = connection_.Subscribe(prefix_ + "*", [this](Msg& msg) { OnReply(msg); });
}

AsyncRequester::~AsyncRequester() {
  subscription_ = Subscription();  // no more replies after this
  CancelAll();
}

void AsyncRequester::Request(std::string_view subject, std::string_view data,
                             const Headers& headers, std::chrono::milliseconds timeout,
                             Callback done) {
  uint64_t token;
  {
    std::lock_guard lock(mu_);
    token = ++next_;
    pending_.emplace(token, Pending{std::chrono::steady_clock::now() + timeout, std::move(done)});
  }
  const std::string reply = prefix_ + std::to_string(token);
  std::error_code ec = connection_.Publish(subject, data, headers, reply);
  if (!ec) return;
  Callback failed;
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(token);
    if (it == pending_.end()) return;  // a reply or sweep got there first
    failed = std::move(it->second.done);
    pending_.erase(it);
  }
  failed(ec, Msg());
}

void AsyncRequester::OnReply(Msg& msg) {
  const std::string_view subject = msg.subject();
  if (subject.size() <= prefix_.size()) return;
  uint64_t token = 0;
  const char* begin = subject.data() + prefix_.size();
  if (std::from_chars(begin, subject.data() + subject.size(), token).ec != std::errc()) return;
  Callback done;
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(token);
    if (it == pending_.end()) return;  // late reply after a timeout: dropped
    done = std::move(it->second.done);
    pending_.erase(it);
  }
  if (natsMsg_IsNoResponders(msg.raw())) {
    done(BusErrc::kNoResponders, Msg());
    return;
  }
  done({}, std::move(msg));
}

size_t AsyncRequester::Sweep(std::chrono::steady_clock::time_point now) {
  std::vector<Callback> expired;
  {
    std::lock_guard lock(mu_);
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.deadline <= now) {
        expired.push_back(std::move(it->second.done));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& done : expired) done(BusErrc::kTimeout, Msg());
  return expired.size();
}

void AsyncRequester::CancelAll() {
  std::unordered_map<uint64_t, Pending> all;
  {
    std::lock_guard lock(mu_);
    all.swap(pending_);
  }
  for (auto& [_, p] : all) p.done(BusErrc::kNotConnected, Msg());
}

size_t AsyncRequester::pending() const {
  std::lock_guard lock(mu_);
  return pending_.size();
}

}  // namespace muon::bus
