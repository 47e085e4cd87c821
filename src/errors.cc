#include "pgjobq/errors.h"

#include <ctime>

namespace pgjobq {

DatabaseError::DatabaseError(const std::string& message, std::string sqlstate)
    : Error(message), sqlstate_(std::move(sqlstate)) {}

JobFailed::JobFailed(const std::string& message, JobState state,
                     std::string stored_error)
    : Error(message), state_(state), stored_error_(std::move(stored_error)) {}

NoSuchJob::NoSuchJob(JobId id)
    : Error("no job with id " + std::to_string(id.value)), id_(id) {}

WrongState::WrongState(const std::string& message, JobState state)
    : Error(message), state_(state) {}

std::string_view to_string(JobState state) noexcept {
  switch (state) {
    case JobState::pending:
      return "pending";
    case JobState::running:
      return "running";
    case JobState::completed:
      return "completed";
    case JobState::failed:
      return "failed";
    case JobState::cancelled:
      return "cancelled";
  }
  return "unknown";
}

std::optional<JobState> parse_job_state(std::string_view name) noexcept {
  for (JobState s : {JobState::pending, JobState::running, JobState::completed,
                     JobState::failed, JobState::cancelled}) {
    if (to_string(s) == name) return s;
  }
  return std::nullopt;
}

std::string format_time(Clock::time_point t) {
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                    t.time_since_epoch())
                    .count();
  auto seconds = micros / 1000000;
  auto fraction = micros % 1000000;
  if (fraction < 0) {
    fraction += 1000000;
    seconds -= 1;
  }
  std::time_t tt = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[48];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[64];
  std::snprintf(out, sizeof out, "%s.%06lldZ", buf,
                static_cast<long long>(fraction));
  return out;
}

}  // namespace pgjobq
