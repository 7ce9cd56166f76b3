#pragma once
// Keeps a lease (a row's owner + expiry in PostgreSQL) alive while its work runs: `renew` is
// called from its own thread every `every` until Stop() or destruction. A renewal that returns
// false means another worker took the lease over (this one stalled past the expiry): lost()
// turns true and renewing stops. A renewal that throws (the database away for a moment) is
// retried at the next tick; if that lasts past the expiry, the lease simply runs out.
//
//   LeaseRenewer lease(30s / 3, [&] { return store.Renew(id, me, 30s); });
//   ... work, checking lease.lost() ...

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace muon {

class LeaseRenewer {
 public:
  LeaseRenewer(std::chrono::milliseconds every, std::function<bool()> renew);
  ~LeaseRenewer();
  LeaseRenewer(const LeaseRenewer&) = delete;
  LeaseRenewer& operator=(const LeaseRenewer&) = delete;

  bool lost() const { return lost_.load(); }
  // Stops renewing (idempotent); returns once the thread has ended.
  void Stop();

 private:
  std::function<bool()> renew_;
  std::atomic<bool> lost_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace muon
