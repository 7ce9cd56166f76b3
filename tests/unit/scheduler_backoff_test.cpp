// The node runtime's restart pacing: exponential backoff with a cap and a reset after a long
// healthy run, and the crash-loop window.

#include <catch2/catch.hpp>

#include "backoff.h"

using muon::scheduler::CrashLoop;
using muon::scheduler::RestartBackoff;
using namespace std::chrono_literals;

TEST_CASE("restart backoff doubles from 1 s and stops at 30 s", "[scheduler][backoff]") {
  RestartBackoff b;
  CHECK(b.Next() == 1s);
  CHECK(b.Next() == 2s);
  CHECK(b.Next() == 4s);
  CHECK(b.Next() == 8s);
  CHECK(b.Next() == 16s);
  CHECK(b.Next() == 30s);
  CHECK(b.Next() == 30s);
  CHECK(b.failures() == 7);
}

TEST_CASE("restart backoff starts over after 60 s healthy, not after less",
          "[scheduler][backoff]") {
  RestartBackoff b;
  b.Next();
  b.Next();
  CHECK(b.Next(59s) == 4s);
  CHECK(b.Next(60s) == 1s);
  CHECK(b.Next() == 2s);
  b.Reset();
  CHECK(b.failures() == 0);
  CHECK(b.Next() == 1s);
}

TEST_CASE("restart backoff with custom bounds", "[scheduler][backoff]") {
  RestartBackoff b(100ms, 250ms, 1s);
  CHECK(b.Next() == 100ms);
  CHECK(b.Next() == 200ms);
  CHECK(b.Next() == 250ms);
  CHECK(b.Next(2s) == 100ms);
}

TEST_CASE("three exits after healthy within 5 minutes are a crash loop", "[scheduler][backoff]") {
  CrashLoop loop;
  const auto t0 = CrashLoop::Clock::time_point{} + 1h;
  CHECK_FALSE(loop.ExitAfterHealthy(t0));
  CHECK_FALSE(loop.ExitAfterHealthy(t0 + 1min));
  CHECK(loop.ExitAfterHealthy(t0 + 4min));
  CHECK(loop.ExitAfterHealthy(t0 + 4min + 30s));
}

TEST_CASE("exits spread over more than 5 minutes are no crash loop", "[scheduler][backoff]") {
  CrashLoop loop;
  const auto t0 = CrashLoop::Clock::time_point{} + 1h;
  CHECK_FALSE(loop.ExitAfterHealthy(t0));
  CHECK_FALSE(loop.ExitAfterHealthy(t0 + 3min));
  CHECK_FALSE(loop.ExitAfterHealthy(t0 + 6min));  // the first fell out of the window
  CHECK(loop.ExitAfterHealthy(t0 + 7min));
  loop.Reset();
  CHECK_FALSE(loop.ExitAfterHealthy(t0 + 8min));
}
