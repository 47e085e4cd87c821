// The worker loop. One thread per queue ("runner"), each with its own
// PostgreSQL session (queue_session.cc); one Redis subscriber thread for
// all of them (wakeup.cc); one watchdog thread for job timeouts and lost
// sessions.
//
// A runner's life: connect, take the queue's advisory lock (or stand by
// until it can), then
//
//   while (!stopping) {
//     claim the head of the queue (one or several jobs, in FIFO order)
//     run each, one after another
//     commit their outcomes together, claiming the next head jobs in the
//     same transaction, then publish the results
//     nothing to claim: wait for a wake-up or the poll interval
//   }
//
// and on a lost connection, start over. docs/architecture.md tells why
// each step is safe under crashes.

#include "pgjobq/worker.h"

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <deque>
#include <exception>
#include <future>
#include <limits>
#include <memory>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_set>
#include <utility>

#include "context.h"
#include "pgjobq/connection.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/jobs.h"
#include "pgjobq/log.h"
#include "publisher.h"
#include "queue_session.h"
#include "redis/connection.h"
#include "sql/statements.h"
#include "validate.h"
#include "wakeup.h"

namespace pgjobq {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

namespace {

constexpr milliseconds kFirstReconnect{100};
constexpr milliseconds kMaxReconnect{5000};
// The most Redis connections a worker publishes on (Worker::State).
constexpr std::size_t kPublishers = 4;
// While Redis is unreachable, look for work at least this often.
constexpr milliseconds kPollWithoutRedis{1000};
// While holding off running a job again, look whether it still waits at
// least this often, and at most this often when wake-ups keep coming (a
// busy queue wakes its worker at every enqueue).
constexpr milliseconds kRerunCheck{1000};
constexpr milliseconds kRerunCheckGap{50};
// The longest duration WorkerOptions takes.
constexpr std::chrono::microseconds kLongestDuration =
    std::chrono::hours(24 * 365 * 10);
// A handler's error message is stored up to this size.
constexpr std::size_t kMaxErrorBytes = 8192;
// The largest result a handler may return, as JSON text (HandlerResult),
// and the most results one commit carries (they go in one jsonb
// parameter). PostgreSQL's jsonb holds at most 256 MiB, and its binary form
// can take six times the text of an array of small numbers ("0," against a
// 4-byte entry and an 8-byte numeric): 32 MiB always fits. Past it, the
// commit of the whole batch would fail and stop the worker with the jobs
// unrecorded.
constexpr std::size_t kMaxResultBytes = std::size_t{32} << 20;

// Moves a running average (handler run time, time between arrivals) 30%
// of the way to a new sample: a few samples move it, one odd one does not.
void smooth(double& average, double sample) {
  average = 0.7 * average + 0.3 * sample;
}

std::string describe(const ClaimedJob& job) {
  return "job " + std::to_string(job.id.value) + " (attempt " +
         std::to_string(job.attempt) + ")";
}

// The job a runner is running, as the watchdog sees it.
struct Running {
  std::mutex mutex;
  bool active = false;
  SteadyClock::time_point deadline;  // max() without a job timeout
  std::stop_source stop;
  JobId id;
  int attempt = 0;
  // The runner's connection, to interrupt SQL. Shared: the watchdog sends
  // the cancel from a thread of its own, which may outlive the session.
  std::shared_ptr<PGcancel> cancel;
  int socket = -1;  // and its socket, to see the server leave
  bool timed_out = false;
  // The timeout's SQL cancel, once the server has it. Until then it could
  // land on the worker's own next statement (the commit of the timed-out
  // job's error), which it would fail: the runner waits for it.
  std::shared_future<void> cancel_sent;
  bool session_lost = false;
  SteadyClock::time_point lost_at;  // when session_lost was found
};

}  // namespace

struct Worker::State {
  WorkerOptions options;
  Handler handler;
  redis::Address redis_address;
  StopSignal stop;
  // Set when every runner has returned: the watchdog watches until then,
  // through a graceful stop's last jobs too.
  StopSignal runners_done;
  std::unique_ptr<Wakeups> wakeups;
  std::atomic<int> active{0};
  std::mutex fatal_mutex;
  std::exception_ptr fatal;
  std::vector<std::unique_ptr<Running>> running;  // one per queue
  // Runner i publishes on publishers[i % size]: a Redis connection for
  // each of the first kPublishers queues, shared beyond (a worker of 300
  // queues held 301 Redis connections, and a Redis with a small maxclients
  // then refused enqueuers' notifies). A runner holds one for a round trip
  // per commit, so a few serve many queues.
  std::vector<std::unique_ptr<Publisher>> publishers;
  // Atomic: run() called from two threads at once must still be refused
  // once, not start two sets of threads
  // (WorkerTest.RunCalledFromTwoThreadsAtOnceRunsOnce).
  std::atomic<bool> ran{false};

  void fail(std::exception_ptr error) {
    {
      std::lock_guard lock(fatal_mutex);
      if (!fatal) fatal = std::move(error);
    }
    stop.set();
    wakeups->wake_all();
  }
};

namespace {

// Ends a command a handler left in progress on the worker's connection,
// and says which it was: a COPY (ended as failed, so that nothing it sent
// is kept; what the server still sends is dropped), or a query whose
// results the handler did not read (read, once the query ends, and
// dropped). A connection lost meanwhile is found by the next statement.
std::string end_left_command(PGconn* conn) {
  bool copy = false;
  while (pg::ResultPtr r{PQgetResult(conn)}) {
    ExecStatusType status = PQresultStatus(r.get());
    if (status == PGRES_COPY_IN) {
      copy = true;
      if (PQputCopyEnd(conn, "left unfinished by a pgjobq handler") != 1) {
        break;
      }
    } else if (status == PGRES_COPY_OUT) {
      copy = true;
      char* row = nullptr;
      while (PQgetCopyData(conn, &row, 0) > 0) PQfreemem(row);
    } else if (status == PGRES_COPY_BOTH) {
      break;  // a replication connection's: never a worker's
    }
    if (PQstatus(conn) == CONNECTION_BAD) break;
  }
  return copy ? "the handler left a COPY unfinished on the worker's "
                "connection"
              : "the handler left a query's results unread on the "
                "worker's connection";
}

class Runner {
 public:
  Runner(Worker::State& worker, std::size_t index)
      : w_(worker),
        options_(worker.options),
        index_(index),
        queue_(worker.options.queues[index]),
        running_(*worker.running[index]) {}

  // The thread's body: serve the queue until stopped; on a lost connection
  // reconnect with backoff; anything else is fatal to the whole worker.
  void run() noexcept {
    try {
      while (!w_.stop.is_set()) {
        try {
          serve_when_holding_lock();
          return;
        } catch (const ConnectionError& e) {
          // A database that cannot be reached at start is a configuration
          // or deployment problem: fail loudly (the supervisor retries),
          // naming the queue: each takes a connection of its own, and with
          // many queues the server's or the role's connection limit may
          // run out part way. Once connected, outages are waited out.
          if (!connected_once_) {
            throw ConnectionError(queue_label(queue_) + ": " + e.what());
          }
          reconnect_later(e);
        } catch (const DatabaseError& e) {
          // read_only_sql_transaction in the worker's own session, which
          // opens no READ ONLY transaction: the server was made read-only
          // in place (default_transaction_read_only and a reload: sessions
          // already open follow). Like a read-only session met on
          // reconnecting (check_session), it is waited out.
          // And query_canceled: an operator's pg_cancel_backend of one of
          // the worker's own statements outside a claim or a commit
          // (those run again in the session, run_retrying). A handler's
          // statements are its own: their errors are the handler's.
          if (e.sqlstate() != "25006" && e.sqlstate() != "57014") throw;
          reconnect_later(e);
        }
      }
    } catch (const DatabaseError& e) {
      // Behind a pooler in transaction mode a worker's statements land in
      // other server sessions, and fail there before its claim could find
      // its mark missing (parse_claimed).
      if (shows_foreign_session(e)) {
        w_.fail(std::make_exception_ptr(foreign_session_error(queue_, e)));
        return;
      }
      // PostgreSQL's words alone ("cannot execute SELECT in a read-only
      // transaction") do not say which queue's worker hit them.
      w_.fail(std::make_exception_ptr(
          DatabaseError(queue_label(queue_) + ": " + e.what(), e.sqlstate())));
    } catch (...) {
      w_.fail(std::current_exception());
    }
  }

 private:
  // Once connected: logs `e`, drops what the session had not committed,
  // and waits the reconnect back-off.
  void reconnect_later(const Error& e) {
    log(LogLevel::warning,
        queue_label(queue_) + ": " + e.what() + "; reconnecting in " +
            std::to_string(reconnect_delay_.count()) + " ms");
    forget_uncommitted();
    w_.stop.sleep_for(reconnect_delay_);
    reconnect_delay_ = std::min(reconnect_delay_ * 2, kMaxReconnect);
  }

  struct HandlerRun {
    enum class Kind { completed, requeued, error } kind;
    std::string error;
    SteadyClock::time_point started{};
    SteadyClock::time_point finished{};
    std::string result_text{};  // the result's JSON, checked (completed)
  };

  void serve_when_holding_lock() {
    QueueSession session(options_.db_url, queue_,
                         options_.dead_session_timeout);
    connected_once_ = true;
    while (!session.resolve_queue()) {
      // Another transaction is creating the queue right now.
      w_.stop.sleep_for(milliseconds(50));
      if (w_.stop.is_set()) return;
    }
    session.request_lock();
    bool stood_by = false;
    while (!session.await_lock(milliseconds(1000), w_.stop.fd())) {
      if (w_.stop.is_set()) {
        session.cancel_lock_wait();
        return;
      }
      if (!stood_by) {
        log(LogLevel::info, queue_label(queue_) +
                                " is served by another worker; standing by "
                                "to take over");
        stood_by = true;
      }
    }
    struct Active {
      std::atomic<int>& count;
      explicit Active(std::atomic<int>& c) : count(c) { ++count; }
      ~Active() { --count; }
    } active(w_.active);
    log(LogLevel::info, std::string(stood_by ? "took over " : "serving ") +
                            queue_label(queue_));
    reconnect_delay_ = kFirstReconnect;  // the outage, if any, is over
    {
      std::lock_guard lock(running_.mutex);
      running_.cancel.reset(PQgetCancel(session.conn()), PQfreeCancel);
      running_.socket = PQsocket(session.conn());
    }
    struct CancelGuard {
      Running& running;
      ~CancelGuard() {
        std::lock_guard lock(running.mutex);
        running.cancel.reset();
        running.socket = -1;
        running.active = false;
      }
    } cancel_guard{running_};
    serve(session);
  }

  // Holding the lock: the loop of the file comment.
  void serve(QueueSession& s) {
    start_session(s);
    // The queue was found empty since the wake flag was last cleared: wait.
    bool looked = false;
    while (true) {
      bool stopping = w_.stop.is_set();
      if (batch_.empty()) {
        if (stopping) {
          if (!done_.empty()) commit(s, false, false);
          return;
        }
        if (!looked) {
          look_for_work(s);
          // Not drained: the claim took as many as it could, or lost some
          // to a cancel or a reschedule; more may be waiting. Look again.
          if (!batch_.empty() || !drained_) continue;
        }
        looked = false;
        w_.wakeups->wait(
            index_, w_.wakeups->subscribed()
                        ? options_.poll_interval
                        : std::min(options_.poll_interval, kPollWithoutRedis));
        continue;
      }
      if (stopping) {
        give_back_unstarted(s);
        return;
      }
      if (back_off_bounced_job(s)) continue;
      looked = run_next_job(s);
    }
  }

  // A new session: maybe a new server (a failover), with a clock of its
  // own; and a transactional handler's wake-ups went with its lost
  // transaction. Resumes where the queue's progress row says.
  void start_session(QueueSession& s) {
    clock_ = ServerClock();
    progress_made();
    if (options_.transactional) wake_after_commit_.clear();
    s.resume();
    note_lost_run(s);
    cursor_ = s.handled_position();
    recovery_until_ = s.recovery_until();
    if (recovery_until_ > 0) {
      log(LogLevel::warning,
          queue_label(queue_) +
              ": a previous worker died with jobs running; re-running them "
              "one per transaction");
    }
    batch_.clear();
    done_.clear();
  }

  // Clear, then look, then wait: a wake-up that arrives after the clear is
  // kept, so none is lost. Committing what is done and looking for more
  // are one round trip.
  void look_for_work(QueueSession& s) {
    w_.wakeups->clear(index_);
    if (!done_.empty()) {
      hold_for_next_job();
      commit(s, /*claim_more=*/!w_.stop.is_set(), /*in_transaction=*/false);
    } else {
      int limit = claim_limit();
      take(s.claim(cursor_, limit, options_.max_attempts), limit);
    }
  }

  // Runs the head of batch_ (or gives it up, if spent) and files its
  // outcome, committing when it is time. Returns whether that commit
  // looked for more work and found the queue empty (only a transactional
  // handler's commit looks).
  bool run_next_job(QueueSession& s) {
    ClaimedJob job = std::move(batch_.front());
    batch_.pop_front();
    if (job.spent) {
      give_up(s, job);
      return false;
    }
    // A session lost since the claim (pg_terminate_backend, a network
    // cut) took the queue's lock with it, and a standby may be running
    // this very job: start nothing on it.
    if (!s.still_connected()) {
      throw ConnectionError("connection to PostgreSQL lost before " +
                            describe(job) + " started");
    }
    HandlerRun run = run_handler(s, job);
    if (run.kind == HandlerRun::Kind::error) {
      handle_error(s, job, run.error, false, clock_.at(run.started));
      return false;
    }
    if (run.kind == HandlerRun::Kind::completed) {
      // The results one commit carries stay within kMaxResultBytes.
      if (done_result_bytes_ + run.result_text.size() > kMaxResultBytes &&
          !done_.empty() && !options_.transactional) {
        commit(s, false, false);
      }
      Outcome done{Outcome::Kind::completed, job.id, job.attempt, {}};
      done.result_text = std::move(run.result_text);
      done.started_us = clock_.at(run.started);
      done.finished_us = clock_.at(run.finished);
      add_done(std::move(done));
      progress_made();
    } else {
      add_done({Outcome::Kind::requeued, job.id, job.attempt, {}});
      rescheduled_.insert(job.id.value);
    }
    if (options_.transactional) return commit_with_handler(s, job);
    if (!batch_.empty() &&
        (SteadyClock::now() - done_since_ >= options_.max_commit_delay ||
         static_cast<int>(done_.size()) >= options_.max_batch)) {
      commit(s, false, false);
    }
    return false;
  }

  // The handler's transaction is open: commits it with the outcome, and
  // looks for the next job in the same transaction. Returns whether it
  // looked and found the queue empty.
  bool commit_with_handler(QueueSession& s, const ClaimedJob& job) {
    // The wake flag was cleared before the handler's BEGIN (run_handler).
    bool look = batch_.empty() && !w_.stop.is_set();
    try {
      commit(s, look, true);
    } catch (const ConnectionError& e) {
      remember_lost_run(s, job, e.what());
      throw;
    } catch (const DatabaseError& e) {
      // The handler's work and the outcome were rolled back together. A
      // deferred constraint of its own is the handler's error, under the
      // error policy. A deadlock or a serialization conflict is
      // PostgreSQL's choice of a victim (the handler's transaction may hold
      // the queue's row, having enqueued into it, while an operator
      // reschedules the next job): it runs again.
      done_.clear();
      wake_after_commit_.clear();  // its enqueues were rolled back too
      handle_error(
          s, job,
          std::string("the handler's transaction did not commit: ") + e.what(),
          is_transient(e));
      return false;
    }
    return look && batch_.empty() && drained_;
  }

  // Jobs their handlers rescheduled that come straight back (nothing but
  // rescheduled jobs ran since: one such job alone, or several taking
  // turns) are not run again at once, or handlers that wait for something
  // by rescheduling would spin at the speed of the database. At the head
  // job that already bounced in this round, the claim is handed back and
  // the runner waits retry_delay, doubling with each round in a row to
  // max_retry_delay. The jobs stay pending meanwhile (cancel works), in
  // their order: FIFO holds. Any job that completes or fails ends the
  // rounds (progress_made). Returns whether it backed off.
  bool back_off_bounced_job(QueueSession& s) {
    const ClaimedJob& next = batch_.front();
    if (next.spent || !rescheduled_.contains(next.id.value)) {
      return false;
    }
    JobId id = next.id;
    std::int64_t position = next.position;
    give_back_unstarted(s);
    cursor_ = position - 1;  // it is pending again, at the head
    milliseconds delay = back_off(bounce_rounds_);
    ++bounce_rounds_;
    rescheduled_.clear();  // a new round
    hold_off_rerun(s, id, position, delay);
    return true;
  }

  // Waits `delay` before job `id`, pending at `position` at the head of
  // the queue, runs again, or less: stopping ends the wait, and so does an
  // operator who cancels the job or sends it to the back meanwhile, so that
  // the queue moves on at once rather than after the back-off (up to
  // max_retry_delay). `pgjobq cancel` and `pgjobq reschedule` wake the
  // queue; a cancel() that does not is seen within kRerunCheck.
  void hold_off_rerun(QueueSession& s, JobId id, std::int64_t position,
                      milliseconds delay) {
    using std::chrono::ceil;
    using std::chrono::microseconds;
    const SteadyClock::time_point until = SteadyClock::now() + delay;
    SteadyClock::time_point checked = SteadyClock::now();
    w_.wakeups->clear(index_);
    while (!w_.stop.is_set()) {
      SteadyClock::time_point now = SteadyClock::now();
      if (now >= until) return;
      bool woken = w_.wakeups->wait(
          index_,
          ceil<microseconds>(std::min(until, checked + kRerunCheck) - now));
      if (w_.stop.is_set()) return;
      now = SteadyClock::now();
      if (now >= until) return;
      if (woken && now < checked + kRerunCheckGap) {
        w_.stop.sleep_for(ceil<milliseconds>(
            std::min(until, checked + kRerunCheckGap) - now));
        continue;  // still woken: checks now, if there is time left
      }
      w_.wakeups->clear(index_);  // before the check: none is lost
      checked = SteadyClock::now();
      if (!s.still_waiting(id, position)) {
        log(LogLevel::info,
            queue_label(queue_) + ": job " + std::to_string(id.value) +
                " was cancelled or rescheduled while the worker held off "
                "running it again; moving on");
        return;
      }
    }
  }

  // Hands back the jobs claimed but not started (their attempts taken
  // back), and commits that with the outcomes done so far.
  void give_back_unstarted(QueueSession& s) {
    for (const ClaimedJob& j : batch_) {
      if (!j.spent) {
        done_.push_back({Outcome::Kind::unclaimed, j.id, j.attempt, {}});
      }
    }
    batch_.clear();
    commit(s, false, false);
  }

  // retry_delay doubled `doublings` times, at most max_retry_delay: the
  // wait of the retry policy and of bouncing jobs.
  milliseconds back_off(int doublings) const {
    double factor = std::pow(2.0, std::min(doublings, 30));
    // Capped before the conversion: a retry_delay of months doubled 30
    // times does not fit a milliseconds count, and converting it would be
    // undefined (on x86 the most negative count: no wait at all).
    double delay =
        std::min(static_cast<double>(options_.retry_delay.count()) * factor,
                 static_cast<double>(options_.max_retry_delay.count()));
    return milliseconds(static_cast<milliseconds::rep>(delay));
  }

  // A job completed or failed: the queue moves, so rescheduled jobs that
  // come back are no longer bouncing.
  void progress_made() {
    rescheduled_.clear();
    bounce_rounds_ = 0;
  }

  // How many jobs to claim at once: one while re-running what a dead worker
  // left running (so a poison job is counted alone), one for transactional
  // handlers, otherwise as many as fit in the commit delay at the handler's
  // recent speed.
  int claim_limit() const {
    if (cursor_ < recovery_until_ || options_.transactional) return 1;
    double per_commit = static_cast<double>(options_.max_commit_delay.count()) /
                        std::max(average_us_, 1.0);
    // Clamped before the conversion: an hour's delay over microsecond
    // handlers is more jobs than an int holds.
    return static_cast<int>(
        std::clamp(per_commit, 1.0, static_cast<double>(options_.max_batch)));
  }

  // Takes claimed jobs, and keeps the two facts hold_for_next_job() needs:
  // whether that claim emptied the queue, and how fast jobs arrive.
  void take(Claim claim, int limit) {
    // Fewer head jobs than asked for: the queue is empty behind them.
    // Unless the claim lost some it saw (a cancel or a reschedule took them
    // as it claimed them): then jobs enqueued meanwhile may be waiting, for
    // which no wake-up is owed, so it is not drained and the runner looks
    // again (WorkerTest.AClaimThatLosesItsJobsToACancelLooksAgain).
    drained_ = claim.seen < limit &&
               std::cmp_greater_equal(claim.jobs.size(), claim.seen);
    clock_.sync(claim.server_us, SteadyClock::now());
    std::vector<ClaimedJob>& jobs = claim.jobs;
    if (!jobs.empty()) {
      auto now = SteadyClock::now();
      if (last_arrival_) {
        auto gap = std::chrono::duration_cast<std::chrono::microseconds>(
                       now - *last_arrival_) /
                   static_cast<long>(jobs.size());
        // Only "slower than the commit delay or not" matters: capped, so
        // that the first jobs after a quiet hour count as slow for a claim
        // or two, not for dozens.
        smooth(arrival_gap_us_,
               std::min(static_cast<double>(gap.count()), slow_gap_us()));
      }
      last_arrival_ = now;
    }
    for (ClaimedJob& j : jobs) {
      cursor_ = std::max(cursor_, j.position);
      batch_.push_back(std::move(j));
    }
  }

  // Called with outcomes to commit and nothing left to run. When the last
  // claim emptied the queue but jobs have been arriving faster than the
  // commit delay, the next ones are probably a moment away: committing now
  // would find the queue empty, and its claim would cost a transaction and
  // a WAL flush of its own. So wait, and commit these outcomes with the
  // claim of the jobs that arrived meanwhile:
  //  - for wake-ups until half the commit delay has passed since the first
  //    of these outcomes, so that the claim takes several jobs at once (a
  //    worker transaction costs its backend the same CPU for one job as for
  //    several; on a busy shallow queue this cut the CPU its backend spends
  //    per job by 40%: docs/benchmarks.md, finding 3);
  //  - if none came by then, for the first one, until the whole delay has.
  // Call after clearing the wake flag; clears it again if woken.
  void hold_for_next_job() {
    if (!drained_ ||
        arrival_gap_us_ >=
            static_cast<double>(options_.max_commit_delay.count())) {
      return;
    }
    auto gather_until = done_since_ + options_.max_commit_delay / 2;
    auto give_up_at = done_since_ + options_.max_commit_delay;
    bool woken = false;
    while (true) {
      auto now = SteadyClock::now();
      auto until = (woken || now < gather_until) ? gather_until : give_up_at;
      if (now >= until) return;
      if (w_.wakeups->wait(
              index_, std::chrono::duration_cast<std::chrono::microseconds>(
                          until - now))) {
        w_.wakeups->clear(index_);
        woken = true;
      }
      if (w_.stop.is_set()) return;
    }
  }

  // An arrival gap this long or longer counts as slow.
  double slow_gap_us() const {
    return 2.0 * static_cast<double>(options_.max_commit_delay.count());
  }

  // Files an outcome to commit; its result's JSON text counts towards the
  // commit's kMaxResultBytes.
  void add_done(Outcome outcome) {
    if (done_.empty()) {
      done_since_ = SteadyClock::now();
      done_result_bytes_ = 0;
    }
    done_result_bytes_ += outcome.result_text.size();
    done_.push_back(std::move(outcome));
  }

  void give_up(QueueSession& s, const ClaimedJob& job) {
    // The spent job is still pending, and marking it failed locks its row:
    // that must not come after a requeue has taken the queue's rows, or it
    // deadlocks with a cancel or reschedule of the job (lock order,
    // docs/architecture.md). So what is done before it commits first.
    if (!done_.empty()) commit(s, false, false);
    std::string why = "gave up after " + std::to_string(job.attempt) +
                      (job.attempt == 1 ? " attempt" : " attempts") +
                      " (max_attempts " +
                      std::to_string(options_.max_attempts) + ")";
    log(LogLevel::warning, queue_label(queue_) + ": job " +
                               std::to_string(job.id.value) + ": " + why +
                               "; marking it failed");
    Outcome failed{Outcome::Kind::failed, job.id, job.attempt, why};
    failed.finished_us = clock_.at(SteadyClock::now());
    add_done(std::move(failed));
    progress_made();
  }

  // The session ends while `job` runs (its handler, or a transactional
  // handler's commit: the server ended it, or the worker gives it up):
  // keeps why, the server's words if it said any, else `lost`, for the next
  // session to note on the job (note_lost_run). Otherwise they reach only
  // the log, and a job given up on says "no error was recorded".
  void remember_lost_run(QueueSession& s, const ClaimedJob& job,
                         const std::string& lost) {
    std::string said = server_said(s);
    lost_run_ = LostRun{
        job.id, job.attempt,
        said.empty() ? lost
                     : "connection to PostgreSQL lost while it ran" + said};
  }

  // " (the server: its words)" if the server said why it ended the
  // session (idle_in_transaction_session_timeout ending a transactional
  // handler's idle transaction, a terminated backend), else "".
  static std::string server_said(QueueSession& s) {
    std::string said = s.farewell();
    return said.empty() ? said : " (the server: " + said + ")";
  }

  // In a new session holding the queue, before its first claim: notes on
  // the job a lost session cut short why (remember_lost_run), so that the
  // job carries it when it runs again or is given up on. The note changes
  // no state and is fenced by the attempt (kNoteError): a job a standby
  // claimed meanwhile, or whose commit did land, is left as it is. A note
  // the database refuses is logged, not fatal.
  void note_lost_run(QueueSession& s) {
    if (!lost_run_) return;
    try {
      s.note_error(lost_run_->id, lost_run_->attempt,
                   storable_text(lost_run_->error, kMaxErrorBytes));
    } catch (const DatabaseError& e) {
      log(LogLevel::warning,
          queue_label(queue_) + ": job " + std::to_string(lost_run_->id.value) +
              ": could not note why its run ended: " + e.what());
    }
    lost_run_.reset();
  }

  // After a lost session: the outcomes it was to commit may or may not
  // have been (the commit may have been on its way). Says so, for the
  // log's lines of those jobs' runs; either way the database is right.
  void forget_uncommitted() {
    std::string jobs;
    for (const Outcome& o : done_) {
      if (o.kind == Outcome::Kind::unclaimed) continue;
      jobs += (jobs.empty() ? "" : ", ") + std::to_string(o.id.value);
    }
    if (!jobs.empty()) {
      log(LogLevel::warning, queue_label(queue_) + ": the outcomes of job(s) " +
                                 jobs +
                                 " may not have been committed; each runs "
                                 "again unless it was");
    }
    done_.clear();
  }

  // Commits done_ (and claims more if asked), then publishes what
  // finished. A lost connection propagates: nothing is published for an
  // uncertain commit, and the jobs run again if it did not happen.
  void commit(QueueSession& s, bool claim_more, bool in_transaction) {
    int limit = claim_more ? claim_limit() : 0;
    FlushResult r =
        s.flush(done_, cursor_, limit, options_.max_attempts, in_transaction);
    done_.clear();
    publisher_.publish(r.finished, wake_after_commit_);
    wake_after_commit_.clear();
    // Outcomes that did not apply. A spent job's failure does not when an
    // operator cancelled or rescheduled the (pending) job meanwhile. Any
    // other means another worker claimed this session's jobs: this session
    // lost the queue's lock while it lived (a handler's
    // pg_advisory_unlock_all or DISCARD ALL releases it), and serving on
    // would run every job beside that worker: start over, and stand by.
    if (r.stale > 0 && s.holds_lock()) {
      log(LogLevel::warning,
          queue_label(queue_) + ": " + std::to_string(r.stale) +
              " outcome(s) not recorded: their jobs were changed meanwhile");
    } else if (r.stale > 0) {
      throw ConnectionError(
          std::to_string(r.stale) +
          " outcome(s) not recorded: another worker had taken the jobs "
          "over, so this session no longer holds the queue's lock (did a "
          "handler release advisory locks: pg_advisory_unlock_all, DISCARD "
          "ALL?)");
    }
    if (!claim_more) return;
    take(std::move(r.claimed), limit);
    // The claim ran before the jobs sent to the back, and one of them may
    // be the next job: the queue was not drained.
    if (r.requeued > 0) drained_ = false;
  }

  HandlerRun run_handler(QueueSession& s, const ClaimedJob& job) {
    if (options_.transactional) {
      // The commit claims the next job in this transaction, whose snapshot
      // under REPEATABLE READ or SERIALIZABLE is taken as it begins: clear
      // the wake flag before that, so that a job enqueued after the
      // snapshot keeps its wake-up, and is looked for once committed.
      if (batch_.empty()) w_.wakeups->clear(index_);
      s.begin();
    }
    std::stop_source stop;
    auto started = SteadyClock::now();
    {
      std::lock_guard lock(running_.mutex);
      running_.active = true;
      running_.deadline = options_.job_timeout ? started + *options_.job_timeout
                                               : SteadyClock::time_point::max();
      running_.stop = stop;
      running_.id = job.id;
      running_.attempt = job.attempt;
      running_.timed_out = false;
      running_.session_lost = false;
    }
    JobContext context{
        job.id,   queue_,           job.data,           job.attempt,
        s.conn(), stop.get_token(), &wake_after_commit_};
    HandlerRun run{HandlerRun::Kind::error, {}};
    std::string result_text;
    try {
      HandlerResult result = w_.handler(context);
      if (!result.rescheduled()) {
        // A result jsonb cannot hold (NUL, invalid UTF-8, NaN, absurd
        // nesting, too large) would fail the commit of the whole batch and
        // stop the worker with the job unrecorded: it is this handler's
        // error.
        result_text = serialize_payload(result.result(), kMaxResultBytes,
                                        "the handler's result");
      }
      run = {result.rescheduled() ? HandlerRun::Kind::requeued
                                  : HandlerRun::Kind::completed,
             {}};
      run.result_text = std::move(result_text);
    } catch (const std::exception& e) {
      run.error = e.what();
    } catch (...) {
      run.error = "handler threw something that is not a std::exception";
    }
    bool timed_out = false;
    bool session_lost = false;
    std::shared_future<void> cancel_sent;
    {
      std::lock_guard lock(running_.mutex);
      running_.active = false;
      timed_out = running_.timed_out;
      session_lost = running_.session_lost;
      cancel_sent = std::exchange(running_.cancel_sent, {});
    }
    // A cancel the server receives while the session is idle is dropped;
    // one still on its way would cancel what the worker sends next
    // (WorkerTest.AGracefulStopStillEnforcesTheJobTimeout failed so, now
    // and then, with "canceling statement due to user request"). Bounded:
    // a server that never answers the cancel must not hold the queue.
    if (cancel_sent.valid()) cancel_sent.wait_for(std::chrono::seconds(3));
    auto finished = SteadyClock::now();
    auto elapsed_us = static_cast<double>(
        std::chrono::duration_cast<std::chrono::microseconds>(finished -
                                                              started)
            .count());
    smooth(average_us_, elapsed_us);
    // The server's last words say why: in the log and on the job, or no
    // one learns it.
    if (session_lost || !s.alive()) {
      remember_lost_run(s, job, "connection to PostgreSQL lost while it ran");
      throw ConnectionError(
          "connection to PostgreSQL lost while " + describe(job) + " ran" +
          server_said(s) +
          (session_lost ? "; its handler was stopped, and the job runs again"
                        : ""));
    }
    // The watchdog stops a handler for two reasons: its session was lost
    // (thrown above) or its timeout passed.
    if (timed_out) {
      run = {HandlerRun::Kind::error,
             "timed out after " +
                 std::to_string(
                     options_.job_timeout.value_or(milliseconds(0)).count()) +
                 " ms"};
    }
    try {
      check_connection_state(s, run);
    } catch (const ConnectionError& e) {
      remember_lost_run(s, job, e.what());
      throw;
    }
    run.started = started;
    run.finished = finished;
    return run;
  }

  // The handler must leave the worker's connection as it found it.
  void check_connection_state(QueueSession& s, HandlerRun& run) {
    // A handler's pipeline, ended for it if it can be; one with results
    // unread leaves the session unusable.
    if (PQpipelineStatus(s.conn()) != PQ_PIPELINE_OFF &&
        PQexitPipelineMode(s.conn()) != 1) {
      throw ConnectionError(
          "the handler left the worker's connection in pipeline mode with "
          "results unread; starting a new session");
    }
    // A command the handler left in progress (the transaction's status
    // is then "active", whatever the transaction's own): ended first, so
    // that what follows sees the transaction.
    if (PQtransactionStatus(s.conn()) == PQTRANS_ACTIVE) {
      std::string left = end_left_command(s.conn());
      if (run.kind != HandlerRun::Kind::error) {
        run = {HandlerRun::Kind::error, left};
      }
    }
    PGTransactionStatusType status = PQtransactionStatus(s.conn());
    if (options_.transactional) {
      auto open =
          status == PQTRANS_INTRANS && run.kind != HandlerRun::Kind::error
              ? s.open_transaction()
              : QueueSession::OpenTransaction::begun;
      if (status == PQTRANS_INTRANS &&
          open == QueueSession::OpenTransaction::begun &&
          run.kind != HandlerRun::Kind::error) {
        return;
      }
      if (run.kind != HandlerRun::Kind::error) {
        run = {HandlerRun::Kind::error,
               status == PQTRANS_INERROR
                   ? "the handler's transaction failed (a statement "
                     "errored)"
               : open == QueueSession::OpenTransaction::another
                   ? "the handler ended the worker's transaction and began "
                     "another (its work before that did not go with the "
                     "job's outcome)"
               : open == QueueSession::OpenTransaction::reset
                   ? "the handler reset the session's settings (RESET "
                     "ALL?), the worker's own among them"
                   : "the handler ended the worker's transaction"};
      }
      if (status != PQTRANS_IDLE) s.rollback();
      wake_after_commit_.clear();  // nothing it enqueued was kept
      return;
    }
    if (status != PQTRANS_IDLE) {
      s.rollback();
      if (run.kind != HandlerRun::Kind::error) {
        run = {HandlerRun::Kind::error,
               "the handler left a transaction open on the worker's "
               "connection"};
      }
    }
  }

  // Records `raw_error` on the job and puts it back at the head of the
  // queue; then the error policy decides, unless the failure was
  // `transient` (not the handler's doing): then the job simply runs again.
  // `started_us` is when the handler started (ServerClock), if known.
  void handle_error(QueueSession& s, const ClaimedJob& job,
                    const std::string& raw_error, bool transient = false,
                    std::int64_t started_us = 0) {
    // Handlers may throw anything: invalid UTF-8, NUL, megabytes.
    std::string error = storable_text(raw_error, kMaxErrorBytes);
    std::string what =
        queue_label(queue_) + ": " + describe(job) + " failed: " + error;
    bool crashes = !transient && options_.on_error == ErrorPolicy::crash;
    // Under the crash policy the error is run()'s exception, which its
    // caller reports (pgjobq work: one line, as it exits), not a log line
    // too.
    if (!crashes) {
      log(transient ? LogLevel::warning : LogLevel::error,
          what + (transient ? "; running it again" : ""));
    }
    Outcome errored{Outcome::Kind::errored, job.id, job.attempt, error};
    errored.started_us = started_us;
    add_done(std::move(errored));
    progress_made();
    give_back_unstarted(s);
    // The job is pending again at its place, at the head of the queue.
    cursor_ = job.position - 1;
    if (transient) return;
    if (crashes) throw HandlerFailed(what, job.id);
    // Its last attempt: the next claim marks it failed, at once.
    if (job.attempt >= options_.max_attempts) return;
    if (w_.stop.is_set()) {
      log(LogLevel::info, queue_label(queue_) + ": stopping; job " +
                              std::to_string(job.id.value) +
                              " runs again when a worker next serves the "
                              "queue");
      return;
    }
    milliseconds delay = back_off(job.attempt - 1);
    log(LogLevel::info, queue_label(queue_) + ": retrying job " +
                            std::to_string(job.id.value) + " in " +
                            std::to_string(delay.count()) + " ms");
    hold_off_rerun(s, job.id, job.position, delay);
  }

  Worker::State& w_;
  const WorkerOptions& options_;
  std::size_t index_;
  const std::string& queue_;
  Running& running_;

  bool connected_once_ = false;
  // The wait before the next reconnect: doubling while connections fail,
  // back to the first once a session holds the queue again.
  milliseconds reconnect_delay_ = kFirstReconnect;
  std::deque<ClaimedJob> batch_;       // claimed, not yet run
  std::vector<Outcome> done_;          // run, not yet committed
  std::size_t done_result_bytes_ = 0;  // their results' JSON text
  ServerClock clock_;                  // for the times of handlers' runs
  // Jobs their handlers sent to the back since a job last completed or
  // failed, and how many rounds of them in a row the runner has waited
  // for (back_off_bounced_job).
  std::unordered_set<std::int64_t> rescheduled_;
  int bounce_rounds_ = 0;
  // Queues to wake after done_ commits (JobContext::notify_after_commit).
  std::vector<std::string> wake_after_commit_;
  SteadyClock::time_point done_since_;
  std::int64_t cursor_ = 0;          // claim after this position
  std::int64_t recovery_until_ = 0;  // one job per claim up to here
  // Recent handler run time; until the first run, a guess of 2 ms (it
  // sizes the first claims: claim_limit).
  double average_us_ = 2000.0;
  // The last claim found fewer jobs than it asked for.
  bool drained_ = true;
  // Recent time between arriving jobs, and when the last ones came.
  double arrival_gap_us_ = slow_gap_us();
  std::optional<SteadyClock::time_point> last_arrival_;
  // A job whose run a lost session cut short, and why (remember_lost_run).
  struct LostRun {
    JobId id{};
    int attempt = 0;
    std::string error;
  };
  std::optional<LostRun> lost_run_;

  Publisher& publisher_{*w_.publishers[index_ % w_.publishers.size()]};
};

// Whether the server has closed the connection on `socket` (terminated
// the backend, restarted, idle_session_timeout). Reads nothing: the peer's
// FIN shows as POLLRDHUP whatever is buffered.
bool server_left(int socket) {
  pollfd fd{socket, POLLRDHUP, 0};
  return poll(&fd, 1, 0) > 0 &&
         (fd.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

// Ends the process, for a handler that ignored its stop token past the
// grace period: notes `message` on the job if PostgreSQL answers quickly,
// then exits 70 for the supervisor to restart the worker.
[[noreturn]] void abandon_handler(Worker::State& w, const Running& r,
                                  const std::string& message) {
  log(LogLevel::error, message);
  // The note goes on a thread of its own, given 3 s: the process must end
  // even if PostgreSQL is unreachable, or takes the connection and then
  // never answers (as it may, just after a session was lost).
  auto noted = std::make_shared<std::promise<void>>();
  std::future<void> done = noted->get_future();
  std::thread([db_url = w.options.db_url, id = std::to_string(r.id.value),
               attempt = std::to_string(r.attempt), message, noted] {
    try {
      pg::Keyword quick[] = {
          {"connect_timeout", "2"},
          {"options", "-c statement_timeout=2000 -c lock_timeout=2000"}};
      PgConnPtr conn = pg::connect(db_url, quick);
      pg::Param params[] = {id, attempt, message};
      pg::exec(conn.get(), sql::kNoteError, params);
    } catch (const std::exception&) {
      // Exiting matters more than the note.
    }
    noted->set_value();
  }).detach();
  done.wait_for(std::chrono::seconds(3));
  std::_Exit(70);
}

// Cancels the SQL running on a runner's connection, from a thread of its
// own: PQcancel opens a connection to the server and waits for it to close,
// with no timeout, and a server that cannot be reached (a network cut drops
// the SYN) or never answers would hold the watchdog there, with every
// other handler unwatched and no exit after the grace period
// (ProcessTest.AHandlerPastItsTimeoutEndsTheProcessEvenIfItsCancelHangs).
// Ready once the server has the request (Running::cancel_sent).
std::shared_future<void> cancel_sql(std::shared_ptr<PGcancel> cancel) {
  auto sent = std::make_shared<std::promise<void>>();
  std::shared_future<void> ready = sent->get_future().share();
  auto send = [cancel, sent] {
    char error[256];
    PQcancel(cancel.get(), error, sizeof error);
    sent->set_value();
  };
  try {
    std::thread(send).detach();
  } catch (const std::system_error&) {
    send();  // no thread to be had (EAGAIN): better late than never
  }
  return ready;
}

// Watches every running handler:
//  - when its runner's PostgreSQL session ends, the queue's lock has ended
//    with it and a standby may already be running the same job and the
//    next ones: requests the handler's stop token (`pgjobq work` kills its
//    command) so that the stale run overlaps the standby's for
//    milliseconds, not for the rest of the handler; ends the process if
//    the handler still has not returned after the grace period;
//  - when it overruns its timeout, requests its stop token and cancels any
//    SQL on the worker's connection; ends the process if it still has not
//    returned after the grace period.
// And every idle runner's session: when the server ends one, wakes the
// runner, which then finds it lost and reconnects at once, instead of at
// its next wake-up or poll, up to poll_interval later, with the job that
// woke it waiting behind the reconnect
// (WorkerTest.AnIdleWorkerReconnectsSoonAfterItsSessionEnds).
//
// It looks every 10 ms while a handler runs, every 100 ms while none does
// (an idle worker need not wake up a hundred times a second), until the
// runners are done: stop() lets running jobs finish, and they are watched
// to the end (WorkerTest.AGracefulStopStillEnforcesTheJobTimeout, and
// FaultTest's ...DuringAGracefulStop). Idle sessions are looked at every
// 100 ms either way: looked at every 10 ms, 300 idle queues beside one
// running job cost `pgjobq work` 31 CPU ticks in 5 s, against 9-12.
void watchdog(Worker::State& w) {
  constexpr milliseconds kIdleLook{100};
  bool any_active = false;
  auto next_idle_look = SteadyClock::now();
  while (!w.runners_done.is_set()) {
    bool was_active = any_active;
    w.runners_done.sleep_for(was_active ? milliseconds(10) : kIdleLook);
    any_active = false;
    auto now = SteadyClock::now();
    bool look_at_idle = !was_active || now >= next_idle_look;
    if (look_at_idle) next_idle_look = now + kIdleLook;
    for (std::size_t i = 0; i < w.running.size(); ++i) {
      Running* r = w.running[i].get();
      std::lock_guard lock(r->mutex);
      if (!r->active) {
        // The socket is the session's while the lock is held: the runner
        // closes it only after clearing it here.
        if (look_at_idle && r->socket >= 0 && server_left(r->socket)) {
          w.wakeups->wake(i);
        }
        continue;
      }
      any_active = true;
      std::string job = "job " + std::to_string(r->id.value);
      if (!r->session_lost && r->socket >= 0 && server_left(r->socket)) {
        r->session_lost = true;
        r->lost_at = now;
        r->stop.request_stop();
        log(LogLevel::warning,
            queue_label(w.options.queues[i]) +
                ": the PostgreSQL session ended while " + job +
                " ran; stopping its handler (the job runs again)");
        continue;
      }
      if (r->session_lost) {
        if (now < r->lost_at + w.options.timeout_grace) continue;
        abandon_handler(
            w, *r,
            queue_label(w.options.queues[i]) + ": " + job +
                " did not stop within " +
                std::to_string(w.options.timeout_grace.count()) +
                " ms of losing its PostgreSQL session, while a standby may "
                "be running the queue; exiting");
      }
      if (now < r->deadline) continue;
      if (!r->timed_out) {
        r->timed_out = true;
        r->stop.request_stop();
        if (r->cancel) r->cancel_sent = cancel_sql(r->cancel);
        continue;
      }
      if (now < r->deadline + w.options.timeout_grace) continue;
      abandon_handler(w, *r,
                      job + " overran its timeout by " +
                          std::to_string(w.options.timeout_grace.count()) +
                          " ms and did not stop; exiting so a restart can "
                          "run it again");
    }
  }
}

}  // namespace

Worker::Worker(WorkerOptions options, Handler handler)
    : state_(std::make_unique<State>()) {
  if (options.queues.empty()) throw InvalidInput("worker: no queues given");
  std::set<std::string> seen;
  for (const std::string& q : options.queues) {
    validate_queue_name(q);
    if (!seen.insert(q).second) {
      throw InvalidInput("worker: queue \"" + q + "\" given twice");
    }
  }
  if (!handler) throw InvalidInput("worker: no handler");
  if (options.max_attempts < 1) {
    throw InvalidInput("worker: max_attempts must be at least 1");
  }
  if (options.poll_interval <= milliseconds(0)) {
    throw InvalidInput("worker: the poll interval must be positive");
  }
  if (options.job_timeout && *options.job_timeout <= milliseconds(0)) {
    throw InvalidInput("worker: the job timeout must be positive");
  }
  if (options.max_batch < 1) {
    throw InvalidInput("worker: max_batch must be at least 1");
  }
  if (options.dead_session_timeout < WorkerOptions::kShortestDeadSession) {
    throw InvalidInput("worker: dead_session_timeout must be at least 1 s");
  }
  if (options.dead_session_timeout > WorkerOptions::kLongestDeadSession) {
    throw InvalidInput("worker: dead_session_timeout must be at most 18 h");
  }
  // Every deadline is a clock reading plus one of these: ten years at most,
  // so none can overflow the clock; none negative.
  // (Compared in each option's own unit: converting milliseconds::max() to
  // microseconds would overflow.)
  auto check_duration = [](auto d, const char* name) {
    using Unit = decltype(d);
    if (d < Unit::zero() ||
        d > std::chrono::duration_cast<Unit>(kLongestDuration)) {
      throw InvalidInput(std::string("worker: ") + name +
                         " must be from 0 to ten years");
    }
  };
  check_duration(options.poll_interval, "the poll interval");
  if (options.job_timeout) check_duration(*options.job_timeout, "job_timeout");
  check_duration(options.timeout_grace, "timeout_grace");
  check_duration(options.retry_delay, "retry_delay");
  check_duration(options.max_retry_delay, "max_retry_delay");
  check_duration(options.max_commit_delay, "max_commit_delay");
  check_duration(options.dead_session_timeout, "dead_session_timeout");
  pg::check_url(options.db_url);
  state_->redis_address =
      redis::parse_url(redis_url_or_default(options.redis_url));
  for (std::size_t i = 0; i < options.queues.size(); ++i) {
    state_->running.push_back(std::make_unique<Running>());
  }
  for (std::size_t i = 0; i < std::min(options.queues.size(), kPublishers);
       ++i) {
    state_->publishers.push_back(
        std::make_unique<Publisher>(state_->redis_address));
  }
  state_->options = std::move(options);
  state_->handler = std::move(handler);
  state_->wakeups = std::make_unique<Wakeups>(
      state_->redis_address, state_->options.queues, state_->stop);
}

Worker::~Worker() = default;

void Worker::run() {
  State& s = *state_;
  if (s.ran.exchange(true)) throw Error("worker: run() may be called once");
  std::vector<std::unique_ptr<Runner>> runners;
  for (std::size_t i = 0; i < s.options.queues.size(); ++i) {
    runners.push_back(std::make_unique<Runner>(s, i));
  }
  std::vector<std::thread> threads;
  std::thread timer;
  // A thread per queue, and the process may not get them all (EAGAIN: a
  // limit on processes, RLIMIT_NPROC or the cgroup's pids.max). Then the
  // worker stops: the threads it did start are stopped and joined, and
  // run() throws.
  try {
    s.wakeups->start();
    for (auto& r : runners) threads.emplace_back([&r] { r->run(); });
    timer = std::thread([&s] { watchdog(s); });
  } catch (const std::system_error& e) {
    s.fail(std::make_exception_ptr(
        Error("worker: cannot start a thread for each of its " +
              std::to_string(runners.size()) + " queue(s) (" +
              std::to_string(threads.size()) + " started): " + e.what())));
  }
  for (auto& t : threads) t.join();
  s.stop.set();
  s.runners_done.set();
  if (timer.joinable()) timer.join();
  s.wakeups->join();
  if (s.fatal) std::rethrow_exception(s.fatal);
}

void Worker::stop() noexcept {
  state_->stop.set();
  state_->wakeups->wake_all();
}

int Worker::active_queues() const noexcept { return state_->active.load(); }

void JobContext::notify_after_commit(std::string_view other) const {
  validate_queue_name(other);
  if (!wake_after_commit) return;  // a context not made by a worker
  if (std::find(wake_after_commit->begin(), wake_after_commit->end(), other) ==
      wake_after_commit->end()) {
    wake_after_commit->emplace_back(other);
  }
}

std::string shard_queue(std::string_view base, std::string_view key,
                        int shards) {
  if (shards < 1) throw InvalidInput("shard_queue: shards must be positive");
  // FNV-1a, 64 bits: stable across platforms and releases, unlike
  // std::hash.
  std::uint64_t hash = 14695981039346656037ull;
  for (char c : key) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 1099511628211ull;
  }
  // The longest name first, so that whether a base fits does not depend
  // on the key.
  validate_queue_name(std::string(base) + ":" + std::to_string(shards - 1));
  return std::string(base) + ":" +
         std::to_string(hash % static_cast<std::uint64_t>(shards));
}

}  // namespace pgjobq
