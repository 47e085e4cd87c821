// The enqueue path and the job operations in the caller's transactions as
// callers really use them: savepoints, two-phase commit, isolation levels
// other than READ COMMITTED (set per transaction or as the session's
// default), aborted and read-only transactions, odd session settings.

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "pgjobq/admin.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "pgjobq/jobs.h"
#include "support/services.h"

namespace pgjobq {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using test::exec;
using test::wait_until;

class TransactionTest : public test::DatabaseTest {
 protected:
  // `admitted - finished` and the unfinished rows of `queue`, as one
  // string each, for comparing the counters with the rows.
  std::string counted_unfinished(const std::string& queue) const {
    return query_value(
        "SELECT q.admitted - p.finished FROM pgjobq.queues q JOIN "
        "pgjobq.queue_progress p ON p.queue_id = q.id WHERE q.name = '" +
        queue + "'");
  }
  std::string stored_unfinished(const std::string& queue) const {
    return query_value(
        "SELECT count(*) FROM pgjobq.jobs j JOIN pgjobq.queues q ON q.id = "
        "j.queue_id WHERE q.name = '" +
        queue + "' AND j.state IN ('pending', 'running')");
  }
  bool waits_for_a_lock(PGconn* conn) const {
    return query_value(
               "SELECT wait_event_type FROM pg_stat_activity WHERE pid = " +
               std::to_string(PQbackendPID(conn))) == "Lock";
  }
};

// A session whose default isolation is REPEATABLE READ or SERIALIZABLE
// (set on the role or the database, as some shops do) runs each autocommit
// statement as such a transaction. One that waited for the queue's row (an
// enqueuer holding it) then found it changed, and failed: "could not
// serialize access due to concurrent update", for `pgjobq enqueue` too.
// Outside a transaction nothing of it was kept, so pgjobq runs it again.
TEST_F(TransactionTest,
       AutocommitOperationsUnderAStricterDefaultIsolationRetry) {
  for (const char* level : {"serializable", "repeatable read"}) {
    SCOPED_TRACE(level);
    PgConnPtr holder = connect();
    PgConnPtr strict = connect();
    exec(strict.get(),
         std::string("SET default_transaction_isolation = '") + level + "'");
    std::string q = queue();
    JobId parked = enqueue(holder.get(), q, json("parked"));
    JobId doomed = enqueue(holder.get(), q, json("to cancel"));

    // Each operation while another transaction holds the row it needs,
    // then commits a change to it. Returns the id the operation placed.
    std::vector<std::int64_t> expected{doomed.value};
    auto contend = [&](const std::function<void()>& hold,
                       const std::function<std::int64_t()>& operation) {
      exec(holder.get(), "BEGIN");
      hold();
      std::future<std::int64_t> done =
          std::async(std::launch::async, operation);
      EXPECT_TRUE(wait_until([&] { return waits_for_a_lock(strict.get()); }));
      exec(holder.get(), "COMMIT");
      std::int64_t id = 0;
      EXPECT_NO_THROW(id = done.get());
      if (id != 0) expected.push_back(id);
      EXPECT_EQ(PQtransactionStatus(strict.get()), PQTRANS_IDLE);
    };
    auto hold_queue = [&] {
      expected.push_back(enqueue(holder.get(), q, json("holder")).value);
    };
    contend(hold_queue,
            [&] { return enqueue(strict.get(), q, json("enqueue")).value; });
    contend(hold_queue, [&] {
      return try_enqueue(strict.get(), q, json("try"), 100).value().value;
    });
    contend(hold_queue, [&] {
      return enqueue_many(strict.get(), q, {json("many")}).value().at(0).value;
    });
    contend(hold_queue, [&] {
      reschedule(strict.get(), parked);
      return parked.value;
    });
    // A cancel waits for the queue's progress row, which another cancel
    // holds.
    JobId other = enqueue(holder.get(), q, json("other"));
    expected.push_back(other.value);
    contend([&] { cancel(holder.get(), other); },
            [&] {
              cancel(strict.get(), doomed);
              return std::int64_t{0};
            });
    EXPECT_EQ(fifo(q), expected) << "commit order";
    EXPECT_EQ(query_job(holder.get(), doomed)->state, JobState::cancelled);
    EXPECT_EQ(query_job(holder.get(), other)->state, JobState::cancelled);
    EXPECT_EQ(counted_unfinished(q), stored_unfinished(q));
  }
}

// Eight enqueuers at once under SERIALIZABLE: half in transactions of
// their own of two jobs each, retried by the caller on a serialization
// failure as PostgreSQL asks, half in autocommit under a SERIALIZABLE
// default, which pgjobq retries. The limit holds exactly, and positions
// follow the order the enqueuing transactions committed in
// (track_commit_timestamp, which tests/run.sh turns on).
TEST_F(TransactionTest, ConcurrentSerializableEnqueuersKeepTheLimitAndOrder) {
  std::string q = queue();
  constexpr int kLimit = 60;
  std::atomic<int> accepted{0};
  std::atomic<int> unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      PgConnPtr conn = connect();
      exec(conn.get(), "SET default_transaction_isolation = serializable");
      for (int i = 0; i < 12; ++i) {
        try {
          if (t % 2 == 1) {
            if (try_enqueue(conn.get(), q, json{{"t", t}, {"i", i}}, kLimit)) {
              ++accepted;
            }
            continue;
          }
          for (int attempt = 0;; ++attempt) {
            // A serialization failure may come at the enqueue or at COMMIT.
            std::string failed;
            exec(conn.get(), "BEGIN");
            std::optional<std::vector<JobId>> ids;
            try {
              ids = enqueue_many(conn.get(), q, {json(t), json(i)},
                                 EnqueueOptions{kLimit});
            } catch (const DatabaseError& e) {
              failed = e.sqlstate();
            }
            PGresult* end =
                PQexec(conn.get(), failed.empty() ? "COMMIT" : "ROLLBACK");
            if (failed.empty() && PQresultStatus(end) != PGRES_COMMAND_OK) {
              const char* state = PQresultErrorField(end, PG_DIAG_SQLSTATE);
              failed = state ? state : "?";
            }
            PQclear(end);
            if (failed.empty()) {
              if (ids) accepted += 2;
              break;
            }
            if (failed != "40001" || attempt == 100) {
              throw std::runtime_error("SQLSTATE " + failed);
            }
          }
        } catch (const std::exception& e) {
          ++unexpected;
          ADD_FAILURE() << e.what();
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_EQ(accepted.load(), kLimit);
  EXPECT_EQ(counted_unfinished(q), std::to_string(kLimit));
  EXPECT_EQ(stored_unfinished(q), std::to_string(kLimit));
  // No job committed earlier sits behind one committed later.
  EXPECT_EQ(query_value(
                "SELECT count(*) FROM (SELECT pg_xact_commit_timestamp(j.xmin) "
                "AS committed, lag(pg_xact_commit_timestamp(j.xmin)) OVER "
                "(ORDER BY j.position) AS before FROM pgjobq.jobs j JOIN "
                "pgjobq.queues q ON q.id = j.queue_id WHERE q.name = '" +
                q + "') t WHERE committed < before"),
            "0");
}

// ROLLBACK TO SAVEPOINT takes back an enqueue, the queue it created, and
// the queue's lock: an enqueuer waiting for it goes ahead at once, while
// the caller's transaction goes on, and the caller's next enqueue comes
// after it (it commits later).
TEST_F(TransactionTest, RollbackToASavepointUndoesTheEnqueueAndFreesTheQueue) {
  PgConnPtr caller = connect();
  PgConnPtr other = connect();
  std::string fresh = queue("fresh");
  std::string q = queue();
  JobId first = enqueue(other.get(), q, json("first"));

  exec(caller.get(), "BEGIN");
  exec(caller.get(), "CREATE TABLE app (note text)");
  exec(caller.get(), "SAVEPOINT before_jobs");
  JobId undone = enqueue(caller.get(), q, json("undone"));
  JobId undone_fresh = enqueue(caller.get(), fresh, json("undone"));
  std::future<JobId> waiting = std::async(
      std::launch::async, [&] { return enqueue(other.get(), q, json("b")); });
  ASSERT_TRUE(wait_until([&] { return waits_for_a_lock(other.get()); }));
  exec(caller.get(), "ROLLBACK TO SAVEPOINT before_jobs");
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(5)),
            std::future_status::ready)
      << "the queue's lock went with the savepoint";
  JobId second = waiting.get();
  EXPECT_FALSE(query_job(caller.get(), undone));
  EXPECT_FALSE(query_job(caller.get(), undone_fresh));
  // A refusal inside a savepoint of the caller's: no error, so nothing to
  // roll back, and the savepoint is still there to release.
  exec(caller.get(), "SAVEPOINT limited");
  EXPECT_FALSE(try_enqueue(caller.get(), q, json("refused"), 2));
  exec(caller.get(), "RELEASE SAVEPOINT limited");
  JobId third = enqueue(caller.get(), q, json("third"));
  exec(caller.get(), "INSERT INTO app VALUES ('kept')");
  exec(caller.get(), "COMMIT");

  EXPECT_EQ(fifo(q), (std::vector<std::int64_t>{first.value, second.value,
                                                third.value}));
  EXPECT_EQ(query_value("SELECT count(*) FROM pgjobq.queues WHERE name = '" +
                        fresh + "'"),
            "0");
  EXPECT_EQ(counted_unfinished(q), "3");
  EXPECT_EQ(stored_unfinished(q), "3");
  EXPECT_EQ(query_value("SELECT count(*) FROM app"), "1");
}

// An enqueue in a transaction an earlier error aborted: PostgreSQL's own
// error, naming the queue; the transaction stays as it was (aborted, for
// the caller to roll back, or back to its savepoint and carry on).
TEST_F(TransactionTest, EnqueueInAnAbortedTransactionIsAClearErrorAndNoMore) {
  PgConnPtr conn = connect();
  std::string q = queue();
  exec(conn.get(), "BEGIN");
  JobId kept = enqueue(conn.get(), q, json("kept"));
  exec(conn.get(), "SAVEPOINT s");
  PQclear(PQexec(conn.get(), "SELECT 1/0"));
  ASSERT_EQ(PQtransactionStatus(conn.get()), PQTRANS_INERROR);
  for (int i = 0; i < 2; ++i) {
    try {
      if (i == 0) {
        try_enqueue(conn.get(), q, json("lost"), 10);
      } else {
        enqueue_many(conn.get(), q, {json("lost")});
      }
      ADD_FAILURE() << "expected DatabaseError";
    } catch (const DatabaseError& e) {
      EXPECT_EQ(e.sqlstate(), "25P02");
      EXPECT_TRUE(test::contains(e.what(), "queue \"" + q + "\""));
      EXPECT_TRUE(test::contains(e.what(), "current transaction is aborted"))
          << e.what();
    }
    EXPECT_EQ(PQtransactionStatus(conn.get()), PQTRANS_INERROR);
  }
  EXPECT_THROW(cancel(conn.get(), kept), DatabaseError);
  exec(conn.get(), "ROLLBACK TO SAVEPOINT s");
  JobId after = enqueue(conn.get(), q, json("after"));
  exec(conn.get(), "COMMIT");
  EXPECT_EQ(fifo(q), (std::vector<std::int64_t>{kept.value, after.value}));
  EXPECT_EQ(counted_unfinished(q), "2");
}

// A read-only transaction, or a session that is read-only by default:
// PostgreSQL's error, naming the queue; nothing stored.
TEST_F(TransactionTest, EnqueueInAReadOnlyTransactionIsAClearError) {
  PgConnPtr conn = connect();
  std::string q = queue();
  JobId id = enqueue(conn.get(), q, json(1));
  for (const char* setup :
       {"BEGIN READ ONLY", "SET default_transaction_read_only = on"}) {
    SCOPED_TRACE(setup);
    exec(conn.get(), setup);
    try {
      enqueue(conn.get(), q, json(2));
      ADD_FAILURE() << "expected DatabaseError";
    } catch (const DatabaseError& e) {
      EXPECT_EQ(e.sqlstate(), "25006");
      EXPECT_TRUE(test::contains(e.what(), "queue \"" + q +
                                               "\": cannot "
                                               "execute UPDATE in a read-only "
                                               "transaction"))
          << e.what();
      EXPECT_TRUE(test::contains(e.what(),
                                 "(pgjobq writes: it needs a "
                                 "read-write transaction on the "
                                 "primary"))
          << e.what();
    }
    EXPECT_THROW(cancel(conn.get(), id), DatabaseError);
    exec(conn.get(), "ROLLBACK");
    exec(conn.get(), "RESET default_transaction_read_only");
  }
  EXPECT_EQ(fifo(q), (std::vector<std::int64_t>{id.value}));
  EXPECT_EQ(query_job(conn.get(), id)->state, JobState::pending);
}

// REPEATABLE READ and SERIALIZABLE transactions: an enqueuer of the same
// queue that committed after the snapshot was taken makes the enqueue a
// serialization failure (SQLSTATE 40001, the caller retries its
// transaction), never a job out of commit order or over the limit. And the
// limit counts finished jobs as of the snapshot: it may refuse where a
// fresh transaction would not, never admit more.
TEST_F(TransactionTest, SnapshotIsolationFailsConcurrentEnqueuersClearly) {
  for (const char* level : {"REPEATABLE READ", "SERIALIZABLE"}) {
    SCOPED_TRACE(level);
    PgConnPtr caller = connect();
    PgConnPtr other = connect();
    std::string q = queue();
    JobId head = enqueue(other.get(), q, json("head"));

    exec(caller.get(), std::string("BEGIN ISOLATION LEVEL ") + level);
    exec(caller.get(), "SELECT 1");  // the snapshot
    JobId later = enqueue(other.get(), q, json("later"));
    try {
      enqueue(caller.get(), q, json("too late"));
      ADD_FAILURE() << "expected a serialization failure";
    } catch (const DatabaseError& e) {
      EXPECT_EQ(e.sqlstate(), "40001");
      EXPECT_TRUE(test::contains(e.what(), "could not serialize")) << e.what();
    }
    exec(caller.get(), "ROLLBACK");
    // The retry goes through, behind the job that committed first.
    exec(caller.get(), std::string("BEGIN ISOLATION LEVEL ") + level);
    JobId retried = enqueue(caller.get(), q, json("retried"));
    exec(caller.get(), "COMMIT");
    EXPECT_EQ(fifo(q), (std::vector<std::int64_t>{head.value, later.value,
                                                  retried.value}));

    // Full at limit 3; a job cancelled after the snapshot is not seen.
    exec(caller.get(), std::string("BEGIN ISOLATION LEVEL ") + level);
    EXPECT_FALSE(try_enqueue(caller.get(), q, json("full"), 3));
    cancel(other.get(), head);
    EXPECT_FALSE(try_enqueue(caller.get(), q, json("still full"), 3));
    EXPECT_EQ(PQtransactionStatus(caller.get()), PQTRANS_INTRANS);
    exec(caller.get(), "COMMIT");
    EXPECT_TRUE(try_enqueue(caller.get(), q, json("room"), 3));
    EXPECT_EQ(counted_unfinished(q), "3");
    EXPECT_EQ(stored_unfinished(q), "3");
  }
}

// Two-phase commit: PREPARE TRANSACTION keeps the queue's row, so the
// prepared jobs come before any job enqueued after; COMMIT PREPARED from
// another session makes them real, ROLLBACK PREPARED takes them back (and
// the queue they created). Needs max_prepared_transactions (tests/run.sh
// sets it).
TEST_F(TransactionTest, PreparedTransactionsKeepCommitOrderAndTheLimit) {
  if (query_value("SHOW max_prepared_transactions") == "0") {
    GTEST_SKIP() << "max_prepared_transactions is 0";
  }
  PgConnPtr caller = connect();
  PgConnPtr other = connect();
  PgConnPtr coordinator = connect();
  std::string q = queue();
  std::string fresh = queue("fresh");
  std::string gid = test::unique_name("gid");
  std::string gid2 = test::unique_name("gid");

  exec(caller.get(), "BEGIN");
  JobId prepared = enqueue(caller.get(), q, json("prepared"));
  exec(caller.get(), "PREPARE TRANSACTION '" + gid + "'");
  // Its job counts: a limit of 2 admits one more job and no other.
  std::future<std::optional<JobId>> waiting =
      std::async(std::launch::async,
                 [&] { return try_enqueue(other.get(), q, json("after"), 2); });
  ASSERT_TRUE(wait_until([&] { return waits_for_a_lock(other.get()); }));
  exec(coordinator.get(), "COMMIT PREPARED '" + gid + "'");
  std::optional<JobId> after = waiting.get();
  ASSERT_TRUE(after);
  EXPECT_FALSE(try_enqueue(other.get(), q, json("over"), 2));
  EXPECT_EQ(fifo(q), (std::vector<std::int64_t>{prepared.value, after->value}));

  exec(caller.get(), "BEGIN");
  JobId undone = enqueue(caller.get(), q, json("undone"));
  JobId undone_fresh = enqueue(caller.get(), fresh, json("undone"));
  exec(caller.get(), "PREPARE TRANSACTION '" + gid2 + "'");
  exec(coordinator.get(), "ROLLBACK PREPARED '" + gid2 + "'");
  EXPECT_FALSE(query_job(other.get(), undone));
  EXPECT_FALSE(query_job(other.get(), undone_fresh));
  EXPECT_EQ(query_value("SELECT count(*) FROM pgjobq.queues WHERE name = '" +
                        fresh + "'"),
            "0");
  EXPECT_EQ(counted_unfinished(q), "2");
  EXPECT_EQ(stored_unfinished(q), "2");
}

// Odd settings in the caller's session: an empty search_path, triggers
// off (session_replication_role = replica, which also skips foreign keys),
// tight statement and lock timeouts. Enqueue, cancel and reschedule work,
// and the counters still agree with the rows; a timeout is PostgreSQL's
// error, naming the queue.
TEST_F(TransactionTest, OddSessionSettingsChangeNothingOrFailClearly) {
  PgConnPtr conn = connect();
  PgConnPtr holder = connect();
  std::string q = queue();
  exec(conn.get(), "SET search_path = ''");
  exec(conn.get(), "SET session_replication_role = replica");
  JobId a = enqueue(conn.get(), q, json("a"));
  ASSERT_TRUE(enqueue_many(conn.get(), q, {json("b"), json("c")}));
  cancel(conn.get(), a);
  reschedule(conn.get(), a);
  EXPECT_EQ(query_job(conn.get(), a)->state, JobState::pending);
  EXPECT_EQ(counted_unfinished(q), "3");
  EXPECT_EQ(stored_unfinished(q), "3");
  exec(conn.get(), "RESET session_replication_role");

  exec(holder.get(), "BEGIN");
  enqueue(holder.get(), q, json("holder"));
  for (const char* setting :
       {"SET lock_timeout = '50ms'", "SET statement_timeout = '50ms'"}) {
    SCOPED_TRACE(setting);
    exec(conn.get(), setting);
    try {
      enqueue(conn.get(), q, json("timed out"));
      ADD_FAILURE() << "expected DatabaseError";
    } catch (const DatabaseError& e) {
      EXPECT_TRUE(e.sqlstate() == "55P03" || e.sqlstate() == "57014")
          << e.sqlstate();
      EXPECT_TRUE(test::contains(e.what(), "enqueue on queue \"" + q + "\""))
          << e.what();
    }
    EXPECT_EQ(PQtransactionStatus(conn.get()), PQTRANS_IDLE);
    exec(conn.get(), "RESET lock_timeout");
    exec(conn.get(), "RESET statement_timeout");
  }
  exec(holder.get(), "COMMIT");
  EXPECT_NO_THROW(enqueue(conn.get(), q, json("d")));
  EXPECT_EQ(counted_unfinished(q), "5");
  EXPECT_EQ(stored_unfinished(q), "5");

  // A transaction left idle past idle_in_transaction_session_timeout: the
  // server ends the session; the next enqueue says the connection is lost,
  // and the job enqueued before went with the transaction.
  exec(conn.get(), "SET idle_in_transaction_session_timeout = '100ms'");
  exec(conn.get(), "BEGIN");
  JobId gone = enqueue(conn.get(), q, json("gone"));
  std::this_thread::sleep_for(milliseconds(400));
  EXPECT_THROW(enqueue(conn.get(), q, json("lost")), ConnectionError);
  EXPECT_FALSE(query_job(holder.get(), gone));
  EXPECT_EQ(stored_unfinished(q), "5");
}

}  // namespace
}  // namespace pgjobq
