#include "muon/common/lease.h"

#include "muon/common/log.h"

namespace muon {

LeaseRenewer::LeaseRenewer(std::chrono::milliseconds every, std::function<bool()> renew)
    : renew_(std::move(renew)) {
  thread_ = std::thread([this, every] {
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, every, [this] { return stop_; })) {
      lock.unlock();
      bool kept = true;
      try {
        kept = renew_();
      } catch (const std::exception& e) {
        log::Warn("renewing a lease failed; trying again", {{"error", e.what()}});
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
