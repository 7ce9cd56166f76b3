// LeaseRenewer: renews until stopped, notices a lost lease, survives a renewal that throws.
#include "muon/common/lease.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <stdexcept>

#include "harness.h"

using namespace std::chrono_literals;

TEST_CASE("a lease is renewed until stopped, and a refused renewal marks it lost", "[lease]") {
  std::atomic<int> calls{0};
  muon::LeaseRenewer kept(5ms, 1h, [&] {
    ++calls;
    if (calls == 2) throw std::runtime_error("database away for a moment");
    return true;
  });
  REQUIRE(muon::testing::WaitUntil([&] { return calls >= 4; }, 5s, 1ms));
  CHECK_FALSE(kept.lost());  // a renewal that threw is retried, not taken as lost
  kept.Stop();
  const int after_stop = calls;
  kept.Stop();  // idempotent
  CHECK(calls == after_stop);

  std::atomic<int> refused_calls{0};
  muon::LeaseRenewer refused(5ms, 1h, [&] {
    ++refused_calls;
    return refused_calls < 3;
  });
  REQUIRE(muon::testing::WaitUntil([&] { return refused.lost(); }, 5s, 1ms));
  CHECK(refused_calls == 3);  // no renewal after the lease was lost
}

TEST_CASE("a lease that cannot be renewed for its whole length counts as lost", "[lease]") {
  std::atomic<int> calls{0};
  muon::LeaseRenewer unreachable(5ms, 50ms, [&]() -> bool {
    ++calls;
    throw std::runtime_error("database unreachable");
  });
  REQUIRE(muon::testing::WaitUntil([&] { return unreachable.lost(); }, 5s, 1ms));
  CHECK(calls >= 2);  // retried before giving up
}
