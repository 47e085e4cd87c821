#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "wakeup.h"

namespace pgjobq {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

void ignore_signal(int) {}

// A sleep the process's signals interrupt (poll() is never restarted)
// still lasts as long as it was asked to: the retry policy's back-off
// must not shrink because a child exited or a timer fired.
TEST(StopSignalTest, SleepsItsWholeDelayThroughSignals) {
  struct sigaction action {};
  action.sa_handler = ignore_signal;  // no SA_RESTART
  struct sigaction old {};
  ASSERT_EQ(sigaction(SIGUSR1, &action, &old), 0);
  StopSignal stop;
  std::atomic<bool> done{false};
  pthread_t sleeper = pthread_self();
  std::thread interrupter([&] {
    while (!done) {
      pthread_kill(sleeper, SIGUSR1);
      std::this_thread::sleep_for(milliseconds(10));
    }
  });
  auto start = steady_clock::now();
  stop.sleep_for(milliseconds(300));
  auto slept = steady_clock::now() - start;
  done = true;
  interrupter.join();
  sigaction(SIGUSR1, &old, nullptr);
  EXPECT_GE(slept, milliseconds(300));
  EXPECT_LT(slept, milliseconds(3000));
}

TEST(StopSignalTest, SetEndsASleepAtOnceAndEveryLaterOne) {
  StopSignal stop;
  auto start = steady_clock::now();
  std::thread setter([&] {
    std::this_thread::sleep_for(milliseconds(50));
    stop.set();
  });
  stop.sleep_for(std::chrono::hours(24 * 365 * 10));  // the longest delay
  setter.join();
  EXPECT_LT(steady_clock::now() - start, milliseconds(5000));
  EXPECT_TRUE(stop.is_set());
  start = steady_clock::now();
  stop.sleep_for(milliseconds(5000));
  EXPECT_LT(steady_clock::now() - start, milliseconds(1000));
}

TEST(StopSignalTest, ANonPositiveDelayReturnsAtOnce) {
  StopSignal stop;
  auto start = steady_clock::now();
  stop.sleep_for(milliseconds(0));
  stop.sleep_for(milliseconds(-5));
  stop.sleep_for(milliseconds::min());
  EXPECT_LT(steady_clock::now() - start, milliseconds(1000));
}

}  // namespace
}  // namespace pgjobq
