#pragma once

// A worker runner's results on Redis: after each commit, the results of
// the jobs it finished (on pgjobq/job-<id>) and the wake-ups its handlers
// asked for (pgjobq/<queue>-notify), pipelined on a connection of its own.

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pgjobq/job.h"
#include "redis/connection.h"

namespace pgjobq {

class Publisher {
 public:
  // `label` names the queue in log lines.
  Publisher(const redis::Address& address, std::string label)
      : address_(address), label_(std::move(label)) {}

  // Publishes each (job, result JSON) of `results`, then an empty message
  // to each queue of `wakeups`. Never throws for Redis: a failure is
  // logged once per outage and forgotten (waiters re-read PostgreSQL,
  // workers poll). After one, it connects again only after a pause, 1 s
  // doubling to 30 s while it keeps failing: a Redis that accepts
  // connections but never answers costs each attempt its whole timeout,
  // which must not fall on every commit.
  void publish(const std::vector<std::pair<JobId, std::string>>& results,
               const std::vector<std::string>& wakeups);

 private:
  const redis::Address& address_;
  std::string label_;
  std::optional<redis::Connection> conn_;
  std::chrono::steady_clock::time_point retry_at_;
  std::chrono::milliseconds backoff_{0};  // 0 while publishing works
  bool outage_ = false;
};

}  // namespace pgjobq
