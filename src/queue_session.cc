#include "queue_session.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "context.h"
#include "pgjobq/admin.h"
#include "pgjobq/errors.h"
#include "pgjobq/log.h"
#include "sql/statements.h"

namespace pgjobq {
namespace {

const pg::Statement* const kWorkerStatements[] = {
    &sql::kClaimJobs,        &sql::kFinishJobs,     &sql::kRequeueJobs,
    &sql::kReleaseJobs,      &sql::kBegin,          &sql::kMarkJobTransaction,
    &sql::kInJobTransaction, &sql::kHoldsQueueLock, &sql::kCommit,
    &sql::kRollback,         &sql::kResumePoint,    &sql::kFindQueue,
    &sql::kCreateQueue,      &sql::kShortLockWait,  &sql::kLockQueue,
    &sql::kSeekPlans,        &sql::kUnlimitedWaits, &sql::kRestoreWaitLimits,
    &sql::kJobStillWaiting};

// What to do when a worker's statements run in sessions not its own.
constexpr const char* kOwnSessionAdvice =
    "; a connection pooler in transaction mode between the worker and the "
    "server? A worker needs a session of its own: connect it directly, or "
    "through a pooler in session mode";

// kClaimJobs' rows: the jobs, then the count of jobs seen.
Claim parse_claimed(const pg::Result& rows, const std::string& queue) {
  Claim claim;
  int last = rows.rows() - 1;
  if (last < 0 || !rows.is_null(last, 0)) {
    throw Error("internal error: a claim without its count");
  }
  if (!rows.boolean(last, 7)) {
    // Not a ConnectionError: reconnecting would not help a worker whose
    // connections are shared behind its back.
    throw Error(queue_label(queue) +
                ": the worker's claim ran in a PostgreSQL session that is "
                "not the one holding the queue's lock (or it was reset, as "
                "RESET ALL or DISCARD ALL do)" +
                kOwnSessionAdvice);
  }
  claim.seen = static_cast<int>(rows.int64(last, 5));
  claim.server_us = rows.int64(last, 6);
  std::vector<ClaimedJob>& jobs = claim.jobs;
  jobs.reserve(static_cast<std::size_t>(last));
  for (int r = 0; r < last; ++r) {
    ClaimedJob job;
    job.id = JobId{rows.int64(r, 0)};
    job.position = rows.int64(r, 1);
    job.attempt = static_cast<int>(rows.int64(r, 2));
    job.spent = rows.boolean(r, 4);
    if (!job.spent) job.data = nlohmann::json::parse(rows.text(r, 3));
    jobs.push_back(std::move(job));
  }
  return claim;
}

// A ServerClock time for kFinishJobs: null when unknown (0).
nlohmann::json server_time_or_null(std::int64_t us) {
  return us > 0 ? nlohmann::json(us) : nlohmann::json(nullptr);
}

// Serializes outcomes for a statement parameter. Results were checked when
// the handler returned and error texts made storable; replacing anything
// else that is not UTF-8 keeps one bad string from failing a whole batch.
std::string storable_json(const nlohmann::json& outcomes) {
  return outcomes.dump(-1, ' ', false,
                       nlohmann::json::error_handler_t::replace);
}

// Opens the worker's connection so that it gives up on a silent peer after
// about `dead_after`, on both ends (TCP keepalives: probes start after half
// of it, two more a quarter apart; whole seconds, as the settings take
// them).
pg::Connection open_session(const std::string& db_url,
                            std::chrono::milliseconds dead_after) {
  std::string idle_s =
      std::to_string(std::max<long long>(1, dead_after.count() / 2000));
  std::string interval_s =
      std::to_string(std::max<long long>(1, dead_after.count() / 4000));
  std::string count = "2";
  std::string user_timeout_ms = std::to_string(dead_after.count());
  pg::Keyword ours[] = {{"keepalives", "1"},
                        {"keepalives_idle", idle_s},
                        {"keepalives_interval", interval_s},
                        {"keepalives_count", count},
                        {"tcp_user_timeout", user_timeout_ms}};
  pg::Connection conn = pg::Connection::open(db_url, ours);
  pg::Param theirs[] = {idle_s, interval_s, count, user_timeout_ms};
  conn.exec(sql::kSessionKeepalives, theirs);
  return conn;
}

// Retrying what is_transient() calls transient: from 10 ms, doubling to
// 1 s (plus up to as much again, at random), for half a minute to a minute
// in all before giving up.
constexpr int kTransientTries = 35;
constexpr std::chrono::milliseconds kFirstTransientPause{10};
constexpr std::chrono::milliseconds kMaxTransientPause{1000};

// An error that ends the session, as its severity says (not localized).
bool ends_session(const PGresult* message) {
  const char* severity =
      PQresultErrorField(message, PG_DIAG_SEVERITY_NONLOCALIZED);
  return severity && (std::string_view(severity) == "FATAL" ||
                      std::string_view(severity) == "PANIC");
}

// Refuses a session a worker cannot serve a queue in, in words that say
// what to do, before PostgreSQL's own words ("cannot execute UPDATE in a
// read-only transaction", "function ... does not exist") would, at the
// first claim or in the middle of a job. A read-only server is a
// ConnectionError: a failover may bring the worker back to its old
// primary, now a standby, before the names point at the new one, and a
// worker that was connected waits that out; one that never was exits
// (Runner::run). A schema older than the binary is a DatabaseError:
// nothing but `pgjobq migrate` mends it. A newer one is served: migrations
// add and replace, and keep the statements of the pgjobq before working
// (README, "Upgrading").
void check_session(PGconn* conn) {
  pg::Result row = pg::exec(conn, sql::kSessionCheck);
  if (row.boolean(0, 0)) {
    throw ConnectionError(
        "the PostgreSQL server is a hot standby (in recovery), where "
        "nothing can be written: a worker needs the primary (with several "
        "hosts in the URL, add target_session_attrs=read-write)");
  }
  if (row.boolean(0, 1)) {
    throw ConnectionError(
        "the PostgreSQL session is read-only (default_transaction_read_only "
        "is on: for the role, the database or the server, or in the "
        "connection's options or PGOPTIONS): a worker must write its jobs' "
        "states");
  }
  if (!row.boolean(0, 2)) {
    throw DatabaseError(
        "the database has no pgjobq schema: run `pgjobq migrate`", "3F000");
  }
  // A role that may not read the versions (custom grants) is not refused
  // for it: its statements' own errors will say what is missing.
  if (!row.boolean(0, 3)) return;
  pg::Result version = pg::exec(conn, sql::kSchemaVersion);
  if (version.is_null(0, 0)) {
    throw DatabaseError(
        "the database's pgjobq schema records no version "
        "(pgjobq.schema_migrations is empty): run `pgjobq migrate`, which "
        "says what to do",
        "");
  }
  std::int64_t at = version.int64(0, 0);
  if (at < schema_version()) {
    throw DatabaseError(
        "the database's pgjobq schema is at version " + std::to_string(at) +
            ", older than this pgjobq needs (version " +
            std::to_string(schema_version()) + "): run `pgjobq migrate`",
        "");
  }
}

}  // namespace

QueueSession::QueueSession(const std::string& db_url, std::string queue,
                           std::chrono::milliseconds dead_after)
    : queue_(std::move(queue)),
      conn_(open_session(db_url, dead_after)),
      mark_(std::to_string(std::random_device()()) + "-" +
            std::to_string(std::random_device()())) {
  // libpq hands an error that arrives while no statement runs (a
  // terminated backend's goodbye) to the notice receiver. The rest (the
  // handler's own SQL's notices and warnings) go to the log, one line
  // each; a goodbye is left to the connection's loss, which is logged.
  PQsetNoticeReceiver(
      conn_.get(),
      [](void* self, const PGresult* message) {
        auto* session = static_cast<QueueSession*>(self);
        if (ends_session(message)) {
          session->ending_ = true;
          try {
            session->farewell_ = pg::notice_line(message);
          } catch (...) {
          }
          if (session->asking_farewell_) return;  // farewell() reports it
        }
        if (pg::announces_session_end(message)) return;
        const char* severity =
            PQresultErrorField(message, PG_DIAG_SEVERITY_NONLOCALIZED);
        std::string_view s = severity ? severity : "";
        LogLevel level = s == "DEBUG" || s == "LOG"     ? LogLevel::debug
                         : s == "NOTICE" || s == "INFO" ? LogLevel::info
                                                        : LogLevel::warning;
        // Nothing may unwind through libpq's C frames: not a bad_alloc,
        // not a user's log sink that throws.
        try {
          log(level, queue_label(session->queue_) +
                         ": postgres: " + pg::notice_line(message));
        } catch (...) {
        }
      },
      this);
  check_session(conn_.get());
  for (const pg::Statement* s : kWorkerStatements) conn_.prepare(*s);
}

bool QueueSession::resolve_queue() {
  pg::Param name = pg::param(queue_);
  pg::Param params[] = {name};
  pg::Result row = conn_.exec(sql::kFindQueue, params);
  if (row.rows() == 0) {
    // A new queue. Another transaction creating it makes the INSERT wait
    // for that transaction, which may take long: give up after a moment,
    // so that the caller can look at its stop signal and try again.
    pg::Call calls[] = {{&sql::kBegin, {}},
                        {&sql::kShortLockWait, {}},
                        {&sql::kCreateQueue, {name}},
                        {&sql::kCommit, {}}};
    try {
      row = std::move(pg::run_pipeline(conn_, calls)[2]);
    } catch (const DatabaseError& e) {
      end_failed_transaction();
      if (e.sqlstate() != "55P03") throw;
      return false;
    }
  }
  if (row.rows() == 0) return false;
  queue_id_ = static_cast<std::int32_t>(row.int64(0, 0));
  return true;
}

void QueueSession::request_lock() {
  conn_.exec(sql::kUnlimitedWaits);
  pg::Param params[] = {pg::param(std::int64_t{queue_id_}), mark_};
  const char* values[] = {params[0]->c_str(), params[1]->c_str()};
  if (PQsendQueryPrepared(conn_.get(), sql::kLockQueue.name, 2, values, nullptr,
                          nullptr, 0) != 1) {
    pg::check(conn_.get(), nullptr);
  }
  lock_requested_ = true;
}

bool QueueSession::await_lock(std::chrono::milliseconds timeout, int wake_fd) {
  PGconn* c = conn_.get();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (PQisBusy(c)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd fds[2] = {{PQsocket(c), POLLIN, 0}, {wake_fd, POLLIN, 0}};
    int ready = poll(fds, wake_fd >= 0 ? 2 : 1, static_cast<int>(left.count()));
    if (ready < 0 && errno != EINTR) {
      throw ConnectionError(std::string("waiting for the queue lock: poll: ") +
                            std::strerror(errno));
    }
    if (ready <= 0) continue;
    if (wake_fd >= 0 && fds[1].revents != 0) return false;
    if (PQconsumeInput(c) != 1) pg::check(c, nullptr);
  }
  lock_requested_ = false;
  pg::ResultPtr result(PQgetResult(c));
  // The NULL that ends the statement's results.
  pg::ResultPtr end(PQgetResult(c));
  // The wait is one statement that lasts as long as the active worker
  // does, and an operator (or a script that cancels long queries) may
  // cancel it: the standby asks again and stands by. It used to stop the
  // worker (WorkerTest.AStandbyOutwaitsACancelOfItsLockWait).
  if (result && PQresultStatus(result.get()) == PGRES_FATAL_ERROR &&
      PQstatus(c) == CONNECTION_OK) {
    const char* state = PQresultErrorField(result.get(), PG_DIAG_SQLSTATE);
    if (state && std::string_view(state) == "57014") {
      log(LogLevel::warning,
          queue_label(queue_) +
              ": the wait for the queue's lock was cancelled; waiting again");
      request_lock();
      return false;
    }
  }
  pg::check(c, result.release());
  conn_.exec(sql::kRestoreWaitLimits);
  return true;
}

void QueueSession::cancel_lock_wait() {
  if (!lock_requested_) return;
  PGconn* c = conn_.get();
  if (PGcancel* cancel = PQgetCancel(c)) {
    char error[256];
    PQcancel(cancel, error, sizeof error);
    PQfreeCancel(cancel);
  }
  // Drain: either the cancel error or, if the lock came first, success
  // (the lock then goes with the connection).
  while (pg::ResultPtr r{PQgetResult(c)}) {
  }
  lock_requested_ = false;
}

bool QueueSession::still_connected() {
  PGconn* c = conn_.get();
  // A few rounds: the server's last words, then the end of the stream.
  for (int i = 0; i < 4 && PQstatus(c) == CONNECTION_OK; ++i) {
    pollfd fd{PQsocket(c), POLLIN, 0};
    if (poll(&fd, 1, 0) <= 0) break;
    if (PQconsumeInput(c) != 1) return false;
  }
  // Parses what was read; an idle session's FATAL reaches the receiver.
  PQisBusy(c);
  return !ending_ && PQstatus(c) == CONNECTION_OK;
}

std::string QueueSession::farewell() {
  PGconn* c = conn_.get();
  // Whatever is left to read, even on a connection libpq already gave up
  // on (it keeps what it read); parsed, an idle session's FATAL reaches
  // the notice receiver.
  pollfd fd{PQsocket(c), POLLIN, 0};
  if (fd.fd >= 0 && poll(&fd, 1, 0) > 0) PQconsumeInput(c);
  asking_farewell_ = true;
  PQisBusy(c);
  asking_farewell_ = false;
  // A FATAL that came as a statement's error (the handler sent one after
  // the server had ended the session) went to that statement's result,
  // not to the receiver; libpq's message for the connection's last
  // operation begins with it. Only a FATAL or PANIC line: anything else
  // there is an older statement's error, or libpq's own words.
  if (farewell_.empty() && PQstatus(c) == CONNECTION_BAD) {
    std::string_view message = PQerrorMessage(c);
    message = message.substr(0, message.find('\n'));
    if (message.starts_with("FATAL:") || message.starts_with("PANIC:")) {
      std::string line;
      // "FATAL:  its message": one space, as notice_line() writes it.
      for (char ch : message) {
        if (ch != ' ' || line.empty() || line.back() != ' ') line += ch;
      }
      farewell_ = line;
    }
  }
  return farewell_;
}

void QueueSession::resume() {
  pg::Param params[] = {pg::param(std::int64_t{queue_id_})};
  pg::Result row = conn_.exec(sql::kResumePoint, params);
  if (row.rows() != 1) {
    throw Error(queue_label(queue_) + " has no progress row");
  }
  handled_ = row.int64(0, 0);
  recovery_until_ = row.is_null(0, 1) ? 0 : row.int64(0, 1);
}

Claim QueueSession::claim(std::int64_t after, int limit, int max_attempts) {
  pg::Call calls[] = {{&sql::kSeekPlans, {}},
                      {&sql::kClaimJobs,
                       {pg::param(std::int64_t{queue_id_}), pg::param(after),
                        pg::param(std::int64_t{limit}),
                        pg::param(std::int64_t{max_attempts}), mark_}}};
  // One implicit transaction, up to the pipeline's sync.
  return parse_claimed(run_retrying(calls, kTransientTries)[1], queue_);
}

FlushResult QueueSession::flush(const std::vector<Outcome>& outcomes,
                                std::int64_t claim_after, int claim_limit,
                                int max_attempts, bool in_transaction) {
  // The finished jobs' array is written as text: a completed job's result
  // goes in as the handler's check wrote it, neither copied nor dumped
  // again.
  std::string finish;
  auto add_finished = [&finish](const nlohmann::json& fields,
                                const std::string* result_text) {
    std::string entry = storable_json(fields);
    if (result_text) {
      entry.pop_back();  // the object's '}'
      entry += ",\"result\":";
      entry += *result_text;
      entry += '}';
    }
    finish += finish.empty() ? '[' : ',';
    finish += entry;
  };
  nlohmann::json requeue = nlohmann::json::array();
  nlohmann::json release = nlohmann::json::array();
  std::unordered_map<std::int64_t, const Outcome*> by_id;
  for (const Outcome& o : outcomes) {
    by_id[o.id.value] = &o;
    switch (o.kind) {
      case Outcome::Kind::completed:
        add_finished({{"id", o.id.value},
                      {"attempt", o.attempt},
                      {"state", "completed"},
                      {"started_us", server_time_or_null(o.started_us)},
                      {"finished_us", server_time_or_null(o.finished_us)}},
                     &o.result_text);
        break;
      case Outcome::Kind::failed:
        add_finished({{"id", o.id.value},
                      {"attempt", o.attempt},
                      {"state", "failed"},
                      {"error", o.error},
                      {"finished_us", server_time_or_null(o.finished_us)}},
                     nullptr);
        break;
      case Outcome::Kind::requeued:
        requeue.push_back({{"id", o.id.value}, {"attempt", o.attempt}});
        break;
      case Outcome::Kind::errored:
        release.push_back({{"id", o.id.value},
                           {"attempt", o.attempt},
                           {"error", o.error},
                           {"uncount", false},
                           {"started_us", server_time_or_null(o.started_us)}});
        break;
      case Outcome::Kind::unclaimed:
        release.push_back({{"id", o.id.value},
                           {"attempt", o.attempt},
                           {"error", nullptr},
                           {"uncount", true}});
        break;
    }
  }

  pg::Param queue_id = pg::param(std::int64_t{queue_id_});
  std::vector<pg::Call> calls;
  int statements = (finish.empty() ? 0 : 1) + (requeue.empty() ? 0 : 1) +
                   (release.empty() ? 0 : 1) + (claim_limit > 0 ? 1 : 0);
  // The pipeline runs as one implicit transaction up to its sync, so one
  // statement (after kSeekPlans) commits atomically as it is; several
  // are wrapped in BEGIN ... COMMIT, in the same trip, to say so.
  bool wrap = !in_transaction && statements > 1;
  if (statements == 0 && !in_transaction) return {};
  if (wrap) calls.push_back({&sql::kBegin, {}});
  calls.push_back({&sql::kSeekPlans, {}});
  // Adds a statement; returns where its result will be.
  auto add = [&](const pg::Statement& statement, std::vector<pg::Param> p) {
    calls.push_back({&statement, std::move(p)});
    return calls.size() - 1;
  };
  std::optional<std::size_t> finish_at, requeue_at, release_at, claim_at;
  // In the lock order of docs/architecture.md: the head jobs (the claim),
  // the queue's row (requeue), then the progress row (requeue, finish).
  // The claim used to come last, after the finish had taken the progress
  // row, and deadlocked with a cancel of a head job (job row, then progress
  // row). The jobs finished here lie at or before the cursor, so the claim
  // cannot see them either way; jobs requeued here wait for the next claim.
  if (claim_limit > 0) {
    claim_at =
        add(sql::kClaimJobs, {queue_id, pg::param(claim_after),
                              pg::param(std::int64_t{claim_limit}),
                              pg::param(std::int64_t{max_attempts}), mark_});
  }
  if (!requeue.empty()) {
    requeue_at = add(sql::kRequeueJobs, {queue_id, storable_json(requeue)});
  }
  if (!finish.empty()) {
    finish_at = add(sql::kFinishJobs, {queue_id, finish + ']'});
  }
  if (!release.empty()) {
    release_at = add(sql::kReleaseJobs, {queue_id, storable_json(release)});
  }
  if (wrap || in_transaction) calls.push_back({&sql::kCommit, {}});

  // A transactional handler's work goes with its transaction, so that one
  // is tried once: the caller decides what a failure means.
  std::vector<pg::Result> results =
      run_retrying(calls, in_transaction ? 1 : kTransientTries);
  FlushResult out;
  int applied = 0;
  if (finish_at) {
    const pg::Result& done = results[*finish_at];
    for (int r = 0; r < done.rows(); ++r) {
      std::int64_t id = done.int64(r, 0);
      const Outcome* o = by_id.at(id);
      out.finished.emplace_back(JobId{id}, o->kind == Outcome::Kind::completed
                                               ? o->result_text
                                               : "null");
    }
    applied += done.rows();
  }
  // Requeues and releases that did not apply are stale as well; their
  // counts come from the rows each statement returned.
  if (requeue_at) {
    out.requeued = results[*requeue_at].rows();
    applied += out.requeued;
  }
  if (release_at) applied += results[*release_at].rows();
  out.stale = static_cast<int>(outcomes.size()) - applied;
  if (claim_at) out.claimed = parse_claimed(results[*claim_at], queue_);
  return out;
}

bool shows_foreign_session(const DatabaseError& e) {
  return e.sqlstate() == "26000" || e.sqlstate() == "42P05";
}

Error foreign_session_error(std::string_view queue, const DatabaseError& e) {
  std::string error = queue_label(queue) +
                      ": the worker's statements ran in a PostgreSQL "
                      "session that is not its own (" +
                      e.what();
  // A handler that drops the session's statements looks the same.
  if (e.sqlstate() == "26000") {
    error += "; or a handler ran DEALLOCATE or DISCARD ALL";
  }
  error += ')';
  error += kOwnSessionAdvice;
  return Error(error);
}

bool is_transient(const DatabaseError& e) {
  return e.sqlstate() == "40P01" || e.sqlstate() == "40001" ||
         e.sqlstate() == "57014";
}

std::vector<pg::Result> QueueSession::run_retrying(
    std::span<const pg::Call> calls, int tries) {
  std::chrono::milliseconds pause = kFirstTransientPause;
  std::minstd_rand jitter(static_cast<unsigned>(PQbackendPID(conn_.get())));
  for (int attempt = 1;; ++attempt) {
    try {
      return pg::run_pipeline(conn_, calls);
    } catch (const DatabaseError& e) {
      end_failed_transaction();
      if (!is_transient(e) || attempt >= tries) throw;
      // An operator's cancel is said at once: it was asked for.
      if (attempt == 3 || (e.sqlstate() == "57014" && attempt == 1)) {
        log(LogLevel::warning, queue_label(queue_) + ": " + e.what() +
                                   "; running the worker's transaction again");
      }
      // Apart from whoever it collided with, who may be retrying too.
      auto spread = std::chrono::milliseconds(
          jitter() % static_cast<unsigned>(pause.count() + 1));
      std::this_thread::sleep_for(pause + spread);
      pause = std::min(pause * 2, kMaxTransientPause);
    }
  }
}

void QueueSession::end_failed_transaction() {
  if (PQtransactionStatus(conn_.get()) == PQTRANS_INERROR) {
    PQclear(PQexec(conn_.get(), sql::kRollback.text));  // best effort
  }
}

void QueueSession::begin() {
  pg::Call calls[] = {{&sql::kBegin, {}}, {&sql::kMarkJobTransaction, {}}};
  pg::run_pipeline(conn_, calls);
}

bool QueueSession::holds_lock() {
  pg::Param params[] = {pg::param(std::int64_t{queue_id_})};
  return conn_.exec(sql::kHoldsQueueLock, params).boolean(0, 0);
}

bool QueueSession::still_waiting(JobId id, std::int64_t position) {
  pg::Param params[] = {pg::param(id.value), pg::param(position)};
  return conn_.exec(sql::kJobStillWaiting, params).boolean(0, 0);
}

QueueSession::OpenTransaction QueueSession::open_transaction() {
  pg::Result row = conn_.exec(sql::kInJobTransaction);
  if (row.boolean(0, 0)) return OpenTransaction::begun;
  return row.boolean(0, 1) ? OpenTransaction::reset : OpenTransaction::another;
}

void QueueSession::note_error(JobId id, int attempt, const std::string& error) {
  pg::Param params[] = {pg::param(id.value), pg::param(std::int64_t{attempt}),
                        error};
  conn_.exec(sql::kNoteError, params);
}

void QueueSession::rollback() { conn_.exec(sql::kRollback); }

}  // namespace pgjobq
