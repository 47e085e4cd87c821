#pragma once

#include <exception>
#include <mutex>
#include <thread>

#include "pgjobq/worker.h"

namespace pgjobq::test {

// A Worker running on a thread of the test; stopped and joined on
// destruction. What run() threw, if anything, is kept for the test.
class BackgroundWorker {
 public:
  BackgroundWorker(WorkerOptions options, Handler handler)
      : worker_(std::move(options), std::move(handler)), thread_([this] {
          try {
            worker_.run();
          } catch (...) {
            std::lock_guard lock(mutex_);
            error_ = std::current_exception();
          }
          finished_ = true;
        }) {}
  ~BackgroundWorker() { join(); }
  BackgroundWorker(const BackgroundWorker&) = delete;
  BackgroundWorker& operator=(const BackgroundWorker&) = delete;

  Worker& worker() { return worker_; }
  bool finished() const { return finished_.load(); }
  void stop() { worker_.stop(); }
  void join() {
    worker_.stop();
    if (thread_.joinable()) thread_.join();
  }
  // Joins and returns what run() threw (nullptr if it returned).
  std::exception_ptr wait_for_exit() {
    if (thread_.joinable()) thread_.join();
    std::lock_guard lock(mutex_);
    return error_;
  }

 private:
  Worker worker_;
  std::atomic<bool> finished_{false};
  std::mutex mutex_;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace pgjobq::test
