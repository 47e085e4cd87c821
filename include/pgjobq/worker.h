#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "pgjobq/errors.h"
#include "pgjobq/job.h"

namespace pgjobq {

// What a handler is given.
struct JobContext {
  JobId id;
  std::string_view queue;
  const nlohmann::json& data;
  // 1 on the first run; a crash or an error counts as an attempt.
  int attempt;
  // The worker's own connection to the queue's database. For a plain
  // handler it is in autocommit: SQL run here commits on its own. For a
  // transactional handler (WorkerOptions::transactional) a transaction is
  // open, and the job's completion commits with it, or nothing does. Do not
  // COMMIT, ROLLBACK or close it.
  //
  // It is the worker's session, kept from job to job: what a handler
  // changes for the session stays for the jobs after it, and for the
  // worker's own statements. Use SET LOCAL (in a transaction) rather than
  // SET, and no SET ROLE, RESET ALL or DISCARD. The session holds the
  // queue's advisory lock (one active worker): a handler must not release
  // locks it did not take (pg_advisory_unlock_all, DISCARD ALL). If one
  // does, a standby takes the queue over at once; the worker finds out at
  // its first commit after the standby claimed one of its jobs (that
  // commit's outcomes are stale), and starts over as a standby, but jobs in
  // flight meanwhile run on both.
  PGconn* db;
  // Requested when the job's timeout passes: stop, and the job counts as an
  // error. Also when the queue's PostgreSQL session is lost: then the job
  // is not an error; it runs again, maybe on a standby already. A handler
  // that ignores it past `timeout_grace` ends the process (exit 70).
  std::stop_token stop;

  // Wakes `other`'s worker (publishes on pgjobq/<other>-notify) once this
  // job's outcome has committed: for jobs the handler enqueues. From inside
  // a transactional handler, notify() would come before the commit, find
  // nothing, and the new job would wait for its worker's poll. Throws
  // InvalidInput for an invalid name. Not thread-safe.
  void notify_after_commit(std::string_view other) const;
  // Where notify_after_commit() collects the queues; the worker sets it.
  std::vector<std::string>* wake_after_commit = nullptr;
};

// What a handler decides.
class HandlerResult {
 public:
  // Completes the job with `result` (stored, then published). A result
  // PostgreSQL cannot store as jsonb (NUL, invalid UTF-8, NaN, nesting
  // deeper than 256, more than 32 MiB of JSON) is the handler's error.
  static HandlerResult complete(nlohmann::json result = nullptr) {
    return HandlerResult(false, std::move(result));
  }
  // Sends the job to the back of its queue as a fresh job (attempts reset).
  // A job that comes back with only rescheduled jobs run since (alone in
  // its queue, or with others that reschedule too) runs again only after
  // WorkerOptions::retry_delay, doubling each round in a row, to
  // max_retry_delay; pending meanwhile. A job completing or failing ends
  // the rounds; an operator cancelling the job or sending it to the back
  // ends the wait (seen within a second, at once after `pgjobq cancel` or
  // `pgjobq reschedule`, which wake the queue).
  static HandlerResult reschedule() { return HandlerResult(true, nullptr); }

  bool rescheduled() const noexcept { return reschedule_; }
  const nlohmann::json& result() const noexcept { return result_; }

 private:
  HandlerResult(bool reschedule, nlohmann::json result)
      : reschedule_(reschedule), result_(std::move(result)) {}
  bool reschedule_;
  nlohmann::json result_;
};

// Runs one job. Throwing is a handler error (see ErrorPolicy). Called on
// one thread per queue, so a handler serving several queues must be
// thread-safe.
using Handler = std::function<HandlerResult(const JobContext& job)>;

enum class ErrorPolicy {
  // Record the error on the job, then stop the worker: run() throws
  // HandlerFailed and the process should exit non-zero so its supervisor
  // restarts it; the job runs again.
  crash,
  // Record the error, back off, and run the same job again (FIFO holds:
  // nothing behind it runs meanwhile). The job stays pending at the head
  // while the worker waits; an operator who cancels it or sends it to the
  // back ends the wait, and the queue moves on.
  retry,
};

struct WorkerOptions {
  // PostgreSQL URL; empty means DATABASE_URL, then libpq's PG* variables.
  std::string db_url;
  // Redis URL; empty means REDIS_URL, then redis://127.0.0.1:6379.
  std::string redis_url;
  // The queues to serve, one at a time each, side by side.
  std::vector<std::string> queues;
  // How often to look for jobs when no wake-up comes. While Redis is
  // unreachable the worker looks every second (or this often, if sooner).
  std::chrono::milliseconds poll_interval = std::chrono::seconds(120);
  ErrorPolicy on_error = ErrorPolicy::crash;
  // A job already started this many times is marked failed instead of run
  // again, under either policy.
  int max_attempts = 25;
  // A handler running longer counts as an error; its stop token is
  // requested. Unset: no limit.
  std::optional<std::chrono::milliseconds> job_timeout;
  // How long a handler may run on after its stop token is requested (its
  // timeout passed, or its PostgreSQL session ended, so that a standby may
  // be running the queue) before the worker gives up on it and ends the
  // process (exit 70), with its other queues: their outcomes not yet
  // committed are lost, and those jobs run again.
  std::chrono::milliseconds timeout_grace = std::chrono::seconds(10);
  // Retry policy backoff: first delay, doubling per attempt up to the max.
  // Also the wait before a rescheduled job that came straight back runs.
  std::chrono::milliseconds retry_delay = std::chrono::seconds(1);
  std::chrono::milliseconds max_retry_delay = std::chrono::seconds(60);
  // Run the handler inside the transaction that completes the job, so its
  // database work commits exactly once, with the completion.
  bool transactional = false;
  // Batching (see docs/architecture.md): completions are committed together
  // when handlers are fast, and on a busy queue with the claim of the next
  // jobs. A result is committed and published at most this long after its
  // handler returned (plus one handler's run time). On a queue whose jobs
  // arrive one by one but closer together than this, a job may also start
  // up to half this late: the worker gathers the arrivals for half the
  // delay and claims them together, one transaction for several jobs.
  std::chrono::microseconds max_commit_delay = std::chrono::milliseconds(2);
  // At most this many jobs per claim and per commit.
  int max_batch = 64;
  // A connection to PostgreSQL that goes unanswered this long (TCP
  // keepalives, set on both ends; from 1 s to 18 h, whole seconds) is dead:
  // the server ends the session, which hands the queue to a standby, and the
  // worker stops the running handler and reconnects. Without it, a network
  // cut with no FIN or RST would keep the queue locked until the server's
  // own TCP gave up, for hours. The URL's own keepalive settings win on the
  // worker's side. Unix sockets cannot be cut this way and ignore it.
  std::chrono::milliseconds dead_session_timeout = std::chrono::seconds(20);
  // Its bounds. Keepalive probes start after half of it, and Linux takes
  // at most 32767 s for that (TCP_KEEPIDLE): past 18 h no session could be
  // opened at all.
  static constexpr std::chrono::seconds kShortestDeadSession{1};
  static constexpr std::chrono::hours kLongestDeadSession{18};
};

// Thrown by Worker::run() under the crash policy after a handler error was
// recorded on its job. what() names the queue, the job, its attempt and
// the error; the worker does not also log it.
class HandlerFailed : public Error {
 public:
  HandlerFailed(const std::string& message, JobId job)
      : Error(message), job_(job) {}
  JobId job() const noexcept { return job_; }

 private:
  JobId job_;
};

// Serves queues: for each, waits to be its one active worker (an advisory
// lock; a second worker stands by and takes over when the first dies),
// then runs its jobs one at a time in FIFO order, woken over Redis and
// polling PostgreSQL as a fallback. Reconnects to PostgreSQL and Redis by
// itself; never exits for a Redis problem.
class Worker {
 public:
  // Validates the options (InvalidInput), the URLs' syntax among them.
  // Connects nothing yet.
  Worker(WorkerOptions options, Handler handler);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Runs until stop() is called (returns once every running job has
  // finished and its completion is committed) or, under the crash policy, a
  // handler fails (throws HandlerFailed, after the other queues' running
  // jobs finish). Throws ConnectionError if PostgreSQL cannot be reached at
  // start (later outages are waited out), and Error for problems retrying
  // cannot fix (such as a missing schema). Call once.
  void run();

  // Asks run() to return after the running jobs finish. Thread-safe; not
  // async-signal-safe (call it from a signal-handling thread).
  void stop() noexcept;

  // How many queues this worker currently holds the lock of. Thread-safe.
  int active_queues() const noexcept;

  // Opaque: defined (and only usable) in src/worker.cc, whose runner
  // threads share it.
  struct State;

 private:
  std::unique_ptr<State> state_;
};

// The queue a key belongs to when `base` is split into `shards` queues:
// "<base>:<n>" with n = a stable hash of `key` modulo `shards` (FNV-1a, the
// same on every platform and release). Throws InvalidInput if `shards` is
// not positive or the resulting name is invalid. Thread-safe.
std::string shard_queue(std::string_view base, std::string_view key,
                        int shards);

}  // namespace pgjobq
