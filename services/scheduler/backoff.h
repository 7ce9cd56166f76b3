#pragma once
// Restart pacing for the node runtime, kept pure (no clocks of its own) so it is unit-tested:
//
//   RestartBackoff: 1 s, 2 s, 4 s ... capped at 30 s between restarts of one instance; an
//   instance that had been healthy for 60 s or more starts again from 1 s.
//   CrashLoop: an instance that had been healthy and exited 3 times within 5 minutes is in a
//   crash loop (the category the node reports until it is healthy again).

#include <algorithm>
#include <chrono>
#include <deque>

namespace muon::scheduler {

class RestartBackoff {
 public:
  using Duration = std::chrono::milliseconds;

  explicit RestartBackoff(Duration initial = std::chrono::seconds(1),
                          Duration max = std::chrono::seconds(30),
                          Duration reset_after = std::chrono::seconds(60))
      : initial_(initial), max_(max), reset_after_(reset_after), next_(initial) {}

  // The wait before the next restart, after an exit (or a failed start). `healthy_for` is how
  // long the run that just ended had been healthy (zero when it never was).
  Duration Next(Duration healthy_for = Duration::zero()) {
    if (healthy_for >= reset_after_) next_ = initial_;
    const Duration delay = next_;
    next_ = std::min(max_, next_ * 2);
    ++failures_;
    return delay;
  }

  void Reset() {
    next_ = initial_;
    failures_ = 0;
  }
  int failures() const { return failures_; }  // Next() calls since the last Reset()

 private:
  Duration initial_;
  Duration max_;
  Duration reset_after_;
  Duration next_;
  int failures_ = 0;
};

class CrashLoop {
 public:
  using Clock = std::chrono::steady_clock;

  explicit CrashLoop(int exits = 3, Clock::duration window = std::chrono::minutes(5))
      : exits_(exits), window_(window) {}

  // Notes an exit of a run that had been healthy, at `now`; true when that makes a crash loop.
  bool ExitAfterHealthy(Clock::time_point now) {
    times_.push_back(now);
    while (!times_.empty() && now - times_.front() > window_) times_.pop_front();
    return static_cast<int>(times_.size()) >= exits_;
  }
  void Reset() { times_.clear(); }

 private:
  int exits_;
  Clock::duration window_;
  std::deque<Clock::time_point> times_;
};

}  // namespace muon::scheduler
