#pragma once

// Wake-ups for a worker's queues: one Redis subscriber thread for all of
// them, and a flag per queue that its runner waits on. A wake-up is a hint:
// runners also poll, and re-check after every (re)subscription, so a lost
// message costs latency, never a job.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "redis/connection.h"

namespace pgjobq {

// An eventfd that several waiters can poll; set() wakes them all, for good.
class StopSignal {
 public:
  StopSignal();
  ~StopSignal();
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;
  void set() noexcept;
  bool is_set() const noexcept { return set_.load(); }
  int fd() const noexcept { return fd_; }
  // Sleeps up to `delay`, less if set() is called meanwhile.
  void sleep_for(std::chrono::milliseconds delay) const noexcept;

 private:
  int fd_;
  std::atomic<bool> set_{false};
};

class Wakeups {
 public:
  // `queues` by index; runner i waits on queue i. Nothing runs until
  // start().
  Wakeups(redis::Address address, const std::vector<std::string>& queues,
          const StopSignal& stop);
  ~Wakeups();
  Wakeups(const Wakeups&) = delete;
  Wakeups& operator=(const Wakeups&) = delete;

  // Starts the subscriber thread. It subscribes, wakes every queue (so each
  // runner re-checks), and then wakes queue i for each message on its
  // channel; after losing Redis it reconnects with backoff and does the
  // same again.
  void start();

  // Clears queue i's flag. Call before checking the queue: a wake-up that
  // arrives after this is not lost.
  void clear(std::size_t queue);

  // Waits until queue i is woken (since the last clear), `timeout` passes,
  // or stop is set. Returns whether it was woken.
  bool wait(std::size_t queue, std::chrono::microseconds timeout);

  // Waits for the subscriber thread to end (after stop is set).
  void join();

  // Wakes queue i's runner (as a message on its channel does).
  void wake(std::size_t queue);

  // Wakes every waiter (used on stop).
  void wake_all();

  // Whether the subscription is up and answering pings: while not, runners
  // poll PostgreSQL every second instead of every poll interval.
  bool subscribed() const noexcept { return subscribed_.load(); }

 private:
  struct Slot {
    std::mutex mutex;
    std::condition_variable cv;
    bool woken = false;
  };

  void subscriber_loop();

  redis::Address address_;
  std::vector<std::string> channels_;
  const StopSignal& stop_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::atomic<bool> subscribed_{false};
  std::thread thread_;
};

}  // namespace pgjobq
