#include "muon/common/lease.h"

#include "muon/common/log.h"

namespace muon {

LeaseRenewer::LeaseRenewer(std::chrono::milliseconds every, std::chrono::milliseconds lease,
                           std::function<bool()> renew)
    : renew_(std::move(renew)) {
  thread_ = std::thread([this, every, lease] {
    using Clock = std::chrono::steady_clock;
    // The lease was taken (or last renewed) no earlier than now.
    auto last_ok = Clock::now();
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, every, [this] { return stop_; })) {
      lock.unlock();
      bool kept = true;
      const auto attempted = Clock::now();
      try {
        kept = renew_();
        if (kept) last_ok = attempted;
      } catch (const std::exception& e) {
        log::Warn("renewing a lease failed; trying again", {{"error", e.what()}});
        if (Clock::now() - last_ok >= lease - every) kept = false;
      }
      lock.lock();
      if (!kept) {
        lost_ = true;
        return;
      }
    }
  });
}

LeaseRenewer::~LeaseRenewer() {
  Stop();
}

void LeaseRenewer::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace muon
