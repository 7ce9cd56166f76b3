#pragma once
// Keeps a lease (a row's owner + expiry in PostgreSQL) alive while its work runs: `renew` is
// called from its own thread every `every` until Stop() or destruction. lost() turns true (and
// renewing stops) when a renewal returns false (another worker took the lease over after this
// one stalled past the expiry), or when no renewal has succeeded for `lease` less one `every`
// (the database unreachable from here: by the time it expires another worker may take it, so
// the work must stop now). A renewal that throws is otherwise retried at the next tick.
//
//   LeaseRenewer lease(30s / 3, 30s, [&] { return store.Renew(id, me, 30s); });
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
  LeaseRenewer(std::chrono::milliseconds every, std::chrono::milliseconds lease,
               std::function<bool()> renew);
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
