#pragma once

// Small pieces handlers in tests share: a gate to hold a handler at, and a
// journal of what handlers saw.

#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

namespace pgjobq::test {

// A gate a handler waits at until the test opens it.
class Gate {
 public:
  void open() {
    {
      std::lock_guard lock(m_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return open_; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool open_ = false;
};

// What handlers saw, in order.
class Journal {
 public:
  void add(std::string entry) {
    std::lock_guard lock(m_);
    entries_.push_back(std::move(entry));
  }
  std::vector<std::string> entries() const {
    std::lock_guard lock(m_);
    return entries_;
  }
  std::size_t size() const {
    std::lock_guard lock(m_);
    return entries_.size();
  }

 private:
  mutable std::mutex m_;
  std::vector<std::string> entries_;
};

}  // namespace pgjobq::test
