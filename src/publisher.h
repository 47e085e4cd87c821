#pragma once

// A worker's results on Redis: after each commit, a runner publishes the
// results of the jobs it finished (on pgjobq/job-<id>) and the wake-ups its
// handlers asked for (pgjobq/<queue>-notify), pipelined on one of a few
// connections that all of the worker's runners share
// (Worker::State::publishers).

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pgjobq/job.h"
#include "redis/connection.h"

namespace pgjobq {

class Publisher {
 public:
  explicit Publisher(const redis::Address& address) : address_(address) {}

  // Publishes each (job, result JSON) of `results`, then an empty message
  // to each queue of `wakeups`. Never throws for Redis: a failure is
  // logged once per outage and forgotten (waiters re-read PostgreSQL,
  // workers poll). After one, it connects again only after a pause, 1 s
  // doubling to 30 s while it keeps failing: a Redis that accepts
  // connections but never answers costs each attempt its whole timeout,
  // which must not fall on every commit. Runners take turns: one publish
  // at a time.
  void publish(const std::vector<std::pair<JobId, std::string>>& results,
               const std::vector<std::string>& wakeups);

 private:
  const redis::Address& address_;
  std::mutex mutex_;
  std::optional<redis::Connection> conn_;
  std::chrono::steady_clock::time_point retry_at_;
  std::chrono::milliseconds backoff_{0};  // 0 while publishing works
  bool outage_ = false;
};

}  // namespace pgjobq
