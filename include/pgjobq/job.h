#pragma once

#include <chrono>
#include <compare>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace pgjobq {

// Identifies a job across all queues. Ids are assigned by PostgreSQL and are
// never reused (until the job is pruned and the sequence wraps, never).
struct JobId {
  std::int64_t value = 0;

  friend auto operator<=>(const JobId&, const JobId&) = default;
};

// Where a job is in its life. `pending` and `running` are unfinished; the
// other three are final (until an operator reschedules a failed or cancelled
// job, which makes it pending again).
enum class JobState { pending, running, completed, failed, cancelled };

// The state's name as stored and printed: "pending", "running", ...
std::string_view to_string(JobState state) noexcept;

// Parses a state name; nullopt for anything else.
std::optional<JobState> parse_job_state(std::string_view name) noexcept;

using Clock = std::chrono::system_clock;

// One job as stored in PostgreSQL. Times are the database server's clock.
struct Job {
  JobId id;
  std::string queue;
  JobState state = JobState::pending;
  nlohmann::json data;
  // The handler's result; set once the job is completed.
  std::optional<nlohmann::json> result;
  // The last handler error (kept after a retry succeeds) or why it failed.
  std::optional<std::string> error;
  // How many times a worker has started the job (a crash counts).
  int attempts = 0;
  Clock::time_point enqueued_at;
  std::optional<Clock::time_point> started_at;
  std::optional<Clock::time_point> finished_at;
};

// A point in time as ISO 8601 in UTC with microseconds:
// "2026-11-24T22:29:15.123456Z".
std::string format_time(Clock::time_point t);

}  // namespace pgjobq
