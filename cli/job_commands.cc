// enqueue, wait, show, reschedule, cancel: one job at a time.

#include "cli/job_commands.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <optional>
#include <string>
#include <thread>

#include "cli/json_input.h"
#include "pgjobq/connection.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "pgjobq/jobs.h"
#include "pgjobq/log.h"

namespace pgjobq::cli {
namespace {

using std::chrono::milliseconds;

// "Forever" for wait_for_result: ten years, which no clock overflows.
constexpr milliseconds kForever = std::chrono::hours(24 * 365 * 10);

// An empty --timeout is a mistake, not "no limit".
milliseconds timeout_option(const std::optional<std::string>& text) {
  if (!text) return kForever;
  return std::chrono::ceil<milliseconds>(parse_duration(*text, "--timeout"));
}

nlohmann::json time_or_null(const std::optional<Clock::time_point>& t) {
  if (!t) return nullptr;
  return format_time(*t);
}

// Back-off between attempts to reconnect to PostgreSQL during a wait; a
// session that lasted this long was a recovery, and the next loss starts
// the back-off afresh.
constexpr milliseconds kFirstReconnectDelay{100};
constexpr milliseconds kMaxReconnectDelay{5000};
constexpr auto kRecovered = std::chrono::seconds(30);

// Waits for job `id` until `deadline`, riding out a lost PostgreSQL
// connection (a restart, a failover, a terminated backend) as the worker
// does: the job is stored, so reconnecting and reading it again loses
// nothing. Gives up with the last connection error when no connection
// comes back before the deadline (each attempt bounded by it), or as soon
// as the server answers and refuses us twice in a row. A timeout reports
// `timeout`, what the user asked for.
nlohmann::json wait_through_reconnects(
    const Connections& c, PgConnPtr& db, RedisLink& redis, JobId id,
    std::chrono::steady_clock::time_point deadline, milliseconds timeout) {
  using std::chrono::steady_clock;
  auto left = [&] {
    return std::max(
        std::chrono::ceil<milliseconds>(deadline - steady_clock::now()),
        milliseconds(0));
  };
  milliseconds delay = kFirstReconnectDelay;
  auto connected_at = steady_clock::now();
  while (true) {
    try {
      return wait_for_result(db.get(), redis, id, left());
    } catch (const Timeout&) {
      throw Timeout("job " + std::to_string(id.value) +
                    " did not finish within " +
                    std::to_string(timeout.count()) + " ms");
    } catch (const ConnectionError& lost) {
      log(LogLevel::warning, std::string(lost.what()) + "; reconnecting");
      if (steady_clock::now() - connected_at >= kRecovered) {
        delay = kFirstReconnectDelay;
      }
      std::exception_ptr last = std::current_exception();
      // A server that answers after refusing may only just have become
      // ready ("the database system is starting up" a moment before the
      // ping): it counts as refusing us only when it does so twice.
      bool refused = false;
      while (true) {
        if (left() <= milliseconds(0)) std::rethrow_exception(last);
        std::this_thread::sleep_for(std::min(delay, left()));
        delay = std::min(delay * 2, kMaxReconnectDelay);
        try {
          db = connect(c, left());
          break;
        } catch (const ConnectionError& e) {
          last = std::current_exception();
          if (left() <= milliseconds(0)) throw;
          bool answers = !worth_reconnecting(c);
          if (answers && refused) throw;
          refused = answers;
          if (delay == kMaxReconnectDelay) {
            log(LogLevel::warning, std::string(e.what()) + "; still trying");
          }
        }
      }
      connected_at = steady_clock::now();
      log(LogLevel::info, "reconnected to PostgreSQL; still waiting for job " +
                              std::to_string(id.value));
    }
  }
}

}  // namespace

int enqueue_command(const Connections& c, const EnqueueArgs& a) {
  // Everything is checked before any server is touched.
  validate_queue_name(a.queue);
  milliseconds timeout = timeout_option(a.timeout);
  nlohmann::json data =
      !a.has_json ? nlohmann::json()
                  : json_argument(a.json, "job data", kDefaultMaxPayloadBytes);
  // --timeout counts from here, the data read (from stdin, maybe slowly).
  auto started = std::chrono::steady_clock::now();
  // With --wait --timeout S, a Redis that never answers may not hold the
  // wake-up longer than S either (the link's own bound is 2 s).
  RedisLink redis(c.redis_url,
                  std::clamp(timeout, milliseconds(1), milliseconds(2000)));
  PgConnPtr db = connect(c, timeout);

  std::optional<JobId> id = try_enqueue(db.get(), a.queue, data, a.limit);
  if (!id) {
    // "at least": a larger limit given by another enqueuer, or an
    // operator's reschedule of a finished job, may have taken it past.
    throw ExitError(kExitQueueFull,
                    "queue \"" + a.queue + "\" is full: it holds at least " +
                        std::to_string(a.limit) +
                        " unfinished job(s), the limit; nothing was enqueued");
  }
  print_line(std::to_string(id->value));
  // The job is committed: a lost wake-up only delays it until the
  // worker's next poll.
  std::string why;
  if (!notify(redis, a.queue, &why)) log(LogLevel::warning, why);
  if (a.wait) {
    // --timeout counts from the start: the enqueue and the wake-up (which a
    // hung Redis holds up to its bound) come out of it.
    print_line(compact(wait_through_reconnects(c, db, redis, *id,
                                               started + timeout, timeout)));
  }
  return kExitOk;
}

int wait_command(const Connections& c, const std::string& id_text,
                 const std::optional<std::string>& timeout_text) {
  JobId id = parse_job_id(id_text);
  milliseconds timeout = timeout_option(timeout_text);
  auto started = std::chrono::steady_clock::now();
  RedisLink redis(c.redis_url);
  PgConnPtr db = connect(c, timeout);
  print_line(compact(
      wait_through_reconnects(c, db, redis, id, started + timeout, timeout)));
  return kExitOk;
}

int show_command(const Connections& c, const std::string& id_text) {
  JobId id = parse_job_id(id_text);
  PgConnPtr db = connect(c);
  std::optional<Job> job = query_job(db.get(), id);
  if (!job) throw NoSuchJob(id);
  print_line(pretty_object({
      {"id", job->id.value},
      {"queue", job->queue},
      {"state", std::string(to_string(job->state))},
      {"data", job->data},
      {"result", job->result ? *job->result : nlohmann::json()},
      {"error", job->error ? nlohmann::json(*job->error) : nlohmann::json()},
      {"attempts", job->attempts},
      {"enqueued_at", format_time(job->enqueued_at)},
      {"started_at", time_or_null(job->started_at)},
      {"finished_at", time_or_null(job->finished_at)},
  }));
  return kExitOk;
}

int reschedule_command(const Connections& c, const std::string& id_text) {
  JobId id = parse_job_id(id_text);
  RedisLink redis(c.redis_url);
  PgConnPtr db = connect(c);
  // The queue to wake, read first: a failure after the change would exit
  // 1 with the job rescheduled. A job never changes queues.
  std::optional<Job> job = query_job(db.get(), id);
  reschedule(db.get(), id);  // NoSuchJob if none (job is then empty)
  std::string why;
  if (job && !notify(redis, job->queue, &why)) log(LogLevel::warning, why);
  return kExitOk;
}

int cancel_command(const Connections& c, const std::string& id_text) {
  JobId id = parse_job_id(id_text);
  RedisLink redis(c.redis_url);
  PgConnPtr db = connect(c);
  std::optional<Job> job = query_job(db.get(), id);  // as in reschedule
  cancel(db.get(), id);
  // Waiters re-read PostgreSQL when woken; `null` is what a worker
  // publishes for a job that ended without a result.
  try {
    redis.publish(job_channel(id), "null");
  } catch (const Error& e) {
    log(LogLevel::warning, "waiters of job " + std::to_string(id.value) +
                               " not woken (they poll and will see the "
                               "cancellation): " +
                               e.what());
    return kExitOk;  // the queue's wake-up would fail the same way
  }
  // A worker holding off re-running the job (the retry policy's wait)
  // moves on at once rather than at the end of the wait.
  std::string why;
  if (job && !notify(redis, job->queue, &why)) log(LogLevel::warning, why);
  return kExitOk;
}

}  // namespace pgjobq::cli
