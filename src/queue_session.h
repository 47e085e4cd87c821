#pragma once

// A worker's session on one queue: its own PostgreSQL connection, the
// queue's advisory lock, and the statements that claim and finish jobs.
// The worker loop (worker.cc) decides what to do; this file says how, in as
// few round trips as possible.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pg/connection.h"
#include "pgjobq/errors.h"
#include "pgjobq/job.h"

namespace pgjobq {

// A job this session has claimed (marked running, attempt counted).
struct ClaimedJob {
  JobId id;
  std::int64_t position = 0;
  // The attempt this claim counted (1 for the first run). For a spent job,
  // the attempts already made.
  int attempt = 0;
  nlohmann::json data;
  // Tried max_attempts times already: not claimed, to be marked failed.
  bool spent = false;
};

// What one claim found at the head of the queue.
struct Claim {
  std::vector<ClaimedJob> jobs;
  // Head jobs the claim saw, up to its limit; more than `jobs` holds when
  // a cancel or a reschedule took some away as it claimed them. Fewer
  // than the limit: the queue was drained.
  int seen = 0;
  // The server's clock during the claim, in microseconds since 1970.
  std::int64_t server_us = 0;
};

// The PostgreSQL server's clock, read from the worker's: mapped at each
// claim (which returns the server's time), and never going back. The times
// a worker records for its handlers (started_at, finished_at) come from
// it, so that they are in the order the handlers ran, on the same clock as
// enqueued_at. A mapped time lags the server's by the claim's trip back at
// most: never ahead of it.
class ServerClock {
 public:
  using Clock = std::chrono::steady_clock;
  // The server's time was `server_us` when the worker's clock read `local`
  // (or a little before).
  void sync(std::int64_t server_us, Clock::time_point local) {
    if (server_us <= 0) return;  // no claim ran
    server_us_ = server_us;
    local_ = local;
    synced_ = true;
  }
  // The server's time at `local`, in microseconds since 1970; 0 before the
  // first sync. Calls must come in the order of their `local` times.
  std::int64_t at(Clock::time_point local) {
    if (!synced_) return 0;
    std::int64_t mapped =
        server_us_ +
        std::chrono::duration_cast<std::chrono::microseconds>(local - local_)
            .count();
    last_ = std::max(last_, mapped);
    return last_;
  }

 private:
  bool synced_ = false;
  std::int64_t server_us_ = 0;
  Clock::time_point local_;
  std::int64_t last_ = 0;
};

// What became of a claimed job, waiting to be committed.
struct Outcome {
  enum class Kind {
    completed,  // result_text is the handler's result
    failed,     // final: error says why (max attempts)
    requeued,   // sent to the back of the queue
    errored,    // handler error: back to pending, error recorded
    unclaimed,  // claimed but never started: attempt taken back
  };
  Kind kind;
  JobId id;
  int attempt = 0;
  std::string error;
  // When its handler started and returned, on ServerClock (0: unknown).
  std::int64_t started_us = 0;
  std::int64_t finished_us = 0;
  // A completed job's result as JSON text, as the handler's check wrote it:
  // what is stored, as it is, and published once it commits.
  std::string result_text{};
};

// Everything one flush committed, for publishing afterwards.
struct FlushResult {
  // Jobs whose final state was recorded, with the message to publish on
  // their channel (the result JSON, or null for a failed job).
  std::vector<std::pair<JobId, std::string>> finished;
  // Outcomes that did not apply: the job was no longer this attempt.
  int stale = 0;
  // Jobs sent to the back of the queue. The claim ran before them.
  int requeued = 0;
  // What the same transaction claimed.
  Claim claimed;
};

// Whether the server rolled a transaction back to break a deadlock or a
// serialization conflict (under default_transaction_isolation =
// serializable, say), or an operator cancelled its statement
// (pg_cancel_backend, 57014: the worker's claims and commits run with no
// statement_timeout, kSeekPlans): it changed nothing and can simply run
// again.
// pgjobq's own autocommit operations cannot deadlock with a worker
// (docs/architecture.md, "Lock order"), but a caller's transaction, or a
// transactional handler's, may combine them in any order.
bool is_transient(const DatabaseError& e);

// Whether `e`, failing one of a worker's own statements, shows that they
// run in PostgreSQL sessions not the worker's own, as behind a connection
// pooler in transaction mode: a statement the worker prepared is missing
// (26000), or one it prepares at start is there already (42P05), prepared
// by another worker in the same server session.
bool shows_foreign_session(const DatabaseError& e);

// The error a worker serving `queue` stops with then, naming `e` and
// saying what to do. Not a ConnectionError: reconnecting would not help a
// worker whose connections are shared behind its back.
Error foreign_session_error(std::string_view queue, const DatabaseError& e);

class QueueSession {
 public:
  // Connects and prepares the worker's statements. A connection that goes
  // unanswered for about `dead_after` (TCP keepalives, both ends) counts
  // as lost: the server ends the session, and this side sees the socket
  // fail. Throws ConnectionError.
  QueueSession(const std::string& db_url, std::string queue,
               std::chrono::milliseconds dead_after);
  // libpq holds a pointer to the session (its notice receiver).
  QueueSession(const QueueSession&) = delete;
  QueueSession& operator=(const QueueSession&) = delete;

  PGconn* conn() const noexcept { return conn_.get(); }
  bool alive() const noexcept { return conn_.alive(); }
  // Whether the session is still there, as far as can be told without a
  // round trip: reads what the server sent meanwhile. A terminated backend
  // sends a FATAL error, releases its locks, and only then closes the
  // connection, so the FATAL is what counts: a session that said it is
  // ending has already given up the queue's lock.
  bool still_connected();
  // What the server said as it ended the session (its FATAL error, such
  // as "terminating connection due to idle-in-transaction timeout"), read
  // now if it was not yet, whether it came while the session was idle or
  // as the error of a statement (the handler's); "" if nothing was said.
  std::string farewell();

  // Looks up (or creates) the queue. Throws on failure; returns false if the
  // queue's row is being created by an uncommitted transaction.
  bool resolve_queue();
  std::int32_t queue_id() const noexcept { return queue_id_; }

  // Asks for the queue's lock and returns at once; await_lock() waits.
  void request_lock();
  // Waits up to `timeout` for the lock requested by request_lock(). Returns
  // true once held. `wake_fd` (if >= 0) readable interrupts the wait, and
  // cancel_lock_wait() then withdraws the request. Throws ConnectionError.
  bool await_lock(std::chrono::milliseconds timeout, int wake_fd);
  // Cancels a pending lock request and reads its (cancelled) result.
  void cancel_lock_wait();

  // Reads the cursor and the last position of jobs a dead worker left
  // running (recovery_until, 0 if none). Call once the lock is held.
  void resume();
  std::int64_t handled_position() const noexcept { return handled_; }
  std::int64_t recovery_until() const noexcept { return recovery_until_; }

  // Claims up to `limit` head jobs after `after` (autocommit).
  Claim claim(std::int64_t after, int limit, int max_attempts);

  // Commits `outcomes` in one transaction and one round trip, claiming up
  // to `claim_limit` more jobs after `claim_after` in the same transaction
  // if claim_limit > 0. With `in_transaction`, a transaction is already
  // open (a transactional handler's), and this commits it.
  FlushResult flush(const std::vector<Outcome>& outcomes,
                    std::int64_t claim_after, int claim_limit, int max_attempts,
                    bool in_transaction = false);

  // BEGIN, for a handler that works inside the completing transaction.
  void begin();
  // Whether this session still holds the queue's lock (a handler may have
  // released it). Reads pg_locks: for rare checks only.
  bool holds_lock();
  // Whether job `id` is still pending at `position` (autocommit).
  bool still_waiting(JobId id, std::int64_t position);
  // Which transaction is open after a transactional handler: the one
  // begin() started, another (the handler ended it and began another),
  // or one whose settings the handler reset (RESET ALL), the worker's
  // marks among them, so that which it is cannot be told.
  enum class OpenTransaction { begun, another, reset };
  OpenTransaction open_transaction();
  // Records `error` on job `id` if it is still running at `attempt`,
  // without changing its state (autocommit).
  void note_error(JobId id, int attempt, const std::string& error);
  // ROLLBACK of that transaction (after a handler error).
  void rollback();

 private:
  // After a statement failed inside BEGIN ... COMMIT: rolls the aborted
  // transaction back, so that the connection is usable again.
  void end_failed_transaction();
  // run_pipeline, up to `tries` times (with a pause between) while
  // is_transient() failures end it; nothing a failed try did remains, and
  // an aborted transaction is ended. Logs once if the failures persist.
  std::vector<pg::Result> run_retrying(std::span<const pg::Call> calls,
                                       int tries);

  std::string queue_;
  pg::Connection conn_;
  std::int32_t queue_id_ = 0;
  std::int64_t handled_ = 0;
  std::int64_t recovery_until_ = 0;
  // Set in the session with the queue's lock, checked by every claim
  // (kLockQueue, kClaimJobs): random, so no other worker's is the same.
  std::string mark_;
  bool lock_requested_ = false;
  // The server sent a FATAL or PANIC error while the session was idle,
  // and what it said.
  bool ending_ = false;
  std::string farewell_;
  // In farewell(), which says it: the notice receiver does not log it too.
  bool asking_farewell_ = false;
};

}  // namespace pgjobq
