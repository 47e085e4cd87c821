// Races between a worker and the people around it (enqueuers in open
// transactions, operators cancelling and rescheduling), each one pinned down
// by holding the row locks that decide it on purpose.

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pgjobq/admin.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "pgjobq/jobs.h"
#include "pgjobq/worker.h"
#include "support/handlers.h"
#include "support/services.h"
#include "support/worker.h"

namespace pgjobq {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using test::BackgroundWorker;
using test::Gate;
using test::Journal;
using test::wait_until;

class RaceTest : public test::DatabaseTest {
 protected:
  void SetUp() override {
    test::DatabaseTest::SetUp();
    conn_ = connect();
  }

  // Runs `sql` on `conn`; fails the test if it fails.
  static void run(PGconn* conn, const std::string& sql) {
    PGresult* r = PQexec(conn, sql.c_str());
    ExecStatusType status = PQresultStatus(r);
    EXPECT_TRUE(status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
        << sql << ": " << PQerrorMessage(conn);
    PQclear(r);
  }

  // A worker on `queue` that finds jobs by its claims and wake-ups alone:
  // no poll comes in the middle of a race.
  WorkerOptions options(const std::string& queue) const {
    WorkerOptions o = worker_options({queue});
    o.poll_interval = std::chrono::seconds(30);
    return o;
  }

  bool session_waits_on(const std::string& wait_event) const {
    return query_value(
               "SELECT count(*) FROM pg_stat_activity WHERE datname "
               "= current_database() AND wait_event = '" +
               wait_event + "'") != "0";
  }

  // An operator's `reschedule(id)` on a connection of its own, on a thread
  // of its own (it is meant to wait for locks); what it threw, if
  // anything, lands in `error` ("" if nothing).
  std::thread reschedule_in_background(JobId id, std::string& error) const {
    error.clear();
    return std::thread([this, id, &error] {
      PgConnPtr c = connect();
      try {
        reschedule(c.get(), id);
      } catch (const std::exception& e) {
        error = e.what();
      }
    });
  }

  JobState state_of(JobId id) const {
    return query_job(conn_.get(), id)->state;
  }

  PgConnPtr conn_;
};

// A head job rescheduled by an operator while the worker's claim waits for
// its row comes out of that wait at its new position, at the back. The
// claim used to take it there: it ran before the jobs in between, and the
// cursor jumped over them, so that they were never run, not even after a
// restart.
TEST_F(RaceTest, RescheduleOfTheHeadJobDuringTheClaimKeepsFifo) {
  std::string q = queue("resched");
  std::atomic<bool> first_started{false};
  Gate release_first;
  Journal journal;
  auto handler = [&](const JobContext& job) {
    journal.add(job.data.dump());
    if (job.data == 0) {
      first_started = true;
      release_first.wait();
    }
    return HandlerResult::complete();
  };
  auto o = options(q);
  enqueue(conn_.get(), q, json(0));
  BackgroundWorker worker(o, handler);
  ASSERT_TRUE(wait_until([&] { return first_started.load(); }));
  JobId head = enqueue(conn_.get(), q, json(1));
  enqueue(conn_.get(), q, json(2));
  enqueue(conn_.get(), q, json(3));
  // An enqueuer holds the queue's row in an open transaction...
  PgConnPtr enqueuer = connect();
  run(enqueuer.get(), "BEGIN");
  enqueue(enqueuer.get(), q, json(4));
  // ...so the reschedule of job 1 locks that job's row and waits for it.
  std::string reschedule_error;
  std::thread operator_thread =
      reschedule_in_background(head, reschedule_error);
  ASSERT_TRUE(wait_until([&] { return lock_waiters() == 1; }));
  // Job 0 finishes; the claim of the next jobs waits for job 1's row.
  release_first.open();
  ASSERT_TRUE(wait_until([&] { return lock_waiters() == 2; }));
  run(enqueuer.get(), "COMMIT");
  operator_thread.join();
  EXPECT_EQ(reschedule_error, "");
  std::vector<std::string> expected = {"0", "2", "3", "4", "1"};
  EXPECT_TRUE(wait_until([&] { return journal.size() >= 5; }))
      << json(journal.entries()).dump();
  EXPECT_EQ(journal.entries(), expected);
  EXPECT_EQ(queue_status(conn_.get(), q).at(0).pending, 0);
  worker.join();
  EXPECT_EQ(worker.wait_for_exit(), nullptr);
}

// The worker's commit of a completion, with the claim of the next job,
// against an operator's cancel of that next job, each holding one row the
// other wants. The commit used to take the queue's progress row before
// claiming (a cancel takes the job's row, then the progress row): a
// deadlock, which PostgreSQL broke by failing one of them. A trigger holds
// the worker's transaction at the progress row, so that the cancel comes
// in exactly there.
TEST_F(RaceTest, CancelOfTheNextJobDuringACommitIsNoDeadlock) {
  run(conn_.get(), R"sql(
    CREATE FUNCTION public.slow_progress() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM public.hold_progress) THEN
        PERFORM pg_sleep(1.5);
      END IF;
      RETURN NEW;
    END $$;
    CREATE TABLE public.hold_progress ();
    CREATE TRIGGER slow_progress BEFORE UPDATE ON pgjobq.queue_progress
      FOR EACH ROW EXECUTE FUNCTION public.slow_progress();
  )sql");
  std::string q = queue("cancel-next");
  std::atomic<bool> first_started{false};
  Gate release_first;
  auto o = options(q);
  JobId first = enqueue(conn_.get(), q, json("first"));
  JobId next = enqueue(conn_.get(), q, json("next"));
  BackgroundWorker worker(o, [&](const JobContext& job) {
    if (job.data == "first") {
      first_started = true;
      release_first.wait();
    }
    return HandlerResult::complete();
  });
  ASSERT_TRUE(wait_until([&] { return first_started.load(); }));
  ASSERT_EQ(state_of(next), JobState::pending) << "claimed one at a time";
  run(conn_.get(), "INSERT INTO public.hold_progress DEFAULT VALUES");
  release_first.open();
  ASSERT_TRUE(wait_until([&] { return session_waits_on("PgSleep"); }));
  // The worker's transaction holds the progress row now.
  std::string cancel_error = "none";
  try {
    cancel(conn_.get(), next);
  } catch (const WrongState&) {
    cancel_error = "wrong state";  // the worker claimed it first
  } catch (const Error& e) {
    cancel_error = e.what();
  }
  EXPECT_EQ(cancel_error, "wrong state");
  run(conn_.get(), "DELETE FROM public.hold_progress");
  EXPECT_TRUE(wait_until([&] {
    return state_of(first) == JobState::completed &&
           state_of(next) == JobState::completed;
  }));
  EXPECT_FALSE(worker.finished());
  worker.join();
  EXPECT_EQ(worker.wait_for_exit(), nullptr);
}

// A caller's transaction may combine pgjobq's operations in any order: here
// an enqueue (the queue's row) and then a cancel (a job's row, then the
// progress row), while the worker commits a completion and a handler's
// reschedule (the queue's row too). That is a real deadlock, and
// PostgreSQL ends it by failing the worker's transaction, which waited
// first. The worker runs it again instead of dying of it.
TEST_F(RaceTest, WorkerRunsItsCommitAgainWhenPostgresBreaksADeadlock) {
  std::string q = queue("deadlock");
  std::atomic<bool> a_started{false};
  Gate release_a;
  JobId a = enqueue(conn_.get(), q, json("a"));
  JobId b = enqueue(conn_.get(), q, json("b"));
  auto o = options(q);
  // a and b in one claim, their outcomes in one commit.
  o.max_commit_delay = milliseconds(1000);
  std::atomic<int> b_runs{0};
  BackgroundWorker worker(o, [&](const JobContext& job) {
    if (job.data == "a") {
      a_started = true;
      release_a.wait();
      return HandlerResult::complete();
    }
    if (job.data == "b" && ++b_runs == 1) return HandlerResult::reschedule();
    return HandlerResult::complete();
  });
  ASSERT_TRUE(wait_until([&] { return a_started.load(); }));
  JobId later = enqueue(conn_.get(), q, json("later"));
  PgConnPtr caller = connect();
  run(caller.get(), "BEGIN");
  enqueue(caller.get(), q, json("c"));
  release_a.open();
  // The worker's commit waits for the caller's transaction.
  ASSERT_TRUE(wait_until([&] { return lock_waiters() == 1; }));
  EXPECT_NO_THROW(cancel(caller.get(), later));
  run(caller.get(), "COMMIT");
  EXPECT_TRUE(wait_until([&] {
    return state_of(a) == JobState::completed &&
           state_of(b) == JobState::completed;
  }));
  EXPECT_EQ(state_of(later), JobState::cancelled);
  EXPECT_FALSE(worker.finished());
  // (Backends report their statistics within about ten seconds.)
  EXPECT_TRUE(wait_until(
      [&] {
        return query_value(
                   "SELECT deadlocks > 0 FROM pg_stat_database "
                   "WHERE datname = current_database()") == "t";
      },
      milliseconds(15000)))
      << "the deadlock this test is about did not happen";
}

// A long enqueuing transaction holds its queue's row until it ends. A worker
// starting meanwhile (or reconnecting, or taking over) used to wait for it
// before serving anything, the committed jobs included.
TEST_F(RaceTest, WorkerStartsWhileAnEnqueuingTransactionIsOpen) {
  std::string q = queue("long-txn");
  JobId committed = enqueue(conn_.get(), q, json(1));
  PgConnPtr enqueuer = connect();
  run(enqueuer.get(), "BEGIN");
  JobId open = enqueue(enqueuer.get(), q, json(2));
  BackgroundWorker worker(worker_options({q}), [](const JobContext&) {
    return HandlerResult::complete();
  });
  EXPECT_TRUE(
      wait_until([&] { return state_of(committed) == JobState::completed; }));
  run(enqueuer.get(), "COMMIT");
  RedisLink redis(test::redis_url());
  notify(redis, q);
  EXPECT_TRUE(
      wait_until([&] { return state_of(open) == JobState::completed; }));
}

// The same for a queue that does not exist yet, created by a transaction
// that stays open: the worker waits for it, but can still be stopped.
TEST_F(RaceTest, WorkerWaitingForANewQueueToBeCommittedCanStop) {
  std::string q = queue("new-queue");
  PgConnPtr enqueuer = connect();
  run(enqueuer.get(), "BEGIN");
  JobId id = enqueue(enqueuer.get(), q, json(1));
  std::atomic<int> runs{0};
  {
    BackgroundWorker worker(worker_options({q}), [&](const JobContext&) {
      ++runs;
      return HandlerResult::complete();
    });
    std::this_thread::sleep_for(milliseconds(500));
    auto asked = std::chrono::steady_clock::now();
    worker.join();
    EXPECT_LT(std::chrono::steady_clock::now() - asked, milliseconds(2000));
    EXPECT_EQ(worker.wait_for_exit(), nullptr);
  }
  EXPECT_EQ(runs.load(), 0);
  run(enqueuer.get(), "COMMIT");
  BackgroundWorker worker(worker_options({q}), [&](const JobContext&) {
    ++runs;
    return HandlerResult::complete();
  });
  EXPECT_TRUE(wait_until([&] { return state_of(id) == JobState::completed; }));
}

// A poison job is marked failed while it is still pending: that locks its
// row, which an operator's reschedule locks before the queue's row. The
// commit that did it also held the requeue of a handler's reschedule (the
// queue's row, then the progress row), and then asked for the poison job's
// row: a deadlock. Now what is done before a poison job commits first.
// (Found by a review.)
TEST_F(RaceTest, RescheduleOfAPoisonJobDuringACommitIsNoDeadlock) {
  std::string q = queue("spent");
  std::atomic<bool> a_started{false};
  Gate release_a;
  JobId a = enqueue(conn_.get(), q, json("a"));
  JobId poison = enqueue(conn_.get(), q, json("poison"));
  run(conn_.get(), "UPDATE pgjobq.jobs SET attempts = 3 WHERE id = " +
                       std::to_string(poison.value));
  auto o = options(q);
  o.max_attempts = 3;
  o.max_commit_delay = milliseconds(1000);  // a and the poison job at once
  std::atomic<int> a_runs{0};
  BackgroundWorker worker(o, [&](const JobContext& job) {
    if (job.data == "a" && ++a_runs == 1) {
      a_started = true;
      release_a.wait();
      return HandlerResult::reschedule();
    }
    return HandlerResult::complete();
  });
  ASSERT_TRUE(wait_until([&] { return a_started.load(); }));
  // An enqueuer holds the queue's row, to line the locks up.
  PgConnPtr enqueuer = connect();
  run(enqueuer.get(), "BEGIN");
  enqueue(enqueuer.get(), q, json("c"));
  release_a.open();
  ASSERT_TRUE(wait_until([&] { return lock_waiters() == 1; }));
  std::string reschedule_error;
  std::thread operator_thread =
      reschedule_in_background(poison, reschedule_error);
  ASSERT_TRUE(wait_until([&] { return lock_waiters() == 2; }));
  run(enqueuer.get(), "COMMIT");
  operator_thread.join();
  EXPECT_EQ(reschedule_error, "");
  // Rescheduled as a fresh job, it runs after the others.
  EXPECT_TRUE(wait_until([&] {
    return state_of(a) == JobState::completed &&
           state_of(poison) == JobState::completed;
  }));
  EXPECT_EQ(query_value("SELECT deadlocks FROM pg_stat_database "
                        "WHERE datname = current_database()"),
            "0");
  EXPECT_FALSE(worker.finished());
}

// A transactional handler's transaction is like a caller's: it may take
// the queue's row (enqueueing a follow-up job into its own queue) before
// the worker appends the claim of the next job to it. An operator's
// reschedule of that next job (its row, then the queue's) then deadlocks
// with it, and PostgreSQL fails one of the two: the reschedule, with an
// error its caller can retry, or the handler's transaction, and then the
// job simply runs again, not counted as the handler's error. Either way no
// job is lost and the worker goes on. (Found by a review; a known limit.)
TEST_F(RaceTest, TransactionalHandlerThatEnqueuesSurvivesADeadlock) {
  std::string q = queue("txn-enqueue");
  std::atomic<bool> a_enqueued{false};
  Gate release_a;
  JobId a = enqueue(conn_.get(), q, json("a"));
  JobId next = enqueue(conn_.get(), q, json("next"));
  auto o = options(q);
  o.transactional = true;  // under the crash policy
  std::atomic<int> a_runs{0};
  BackgroundWorker worker(o, [&](const JobContext& job) {
    if (job.data == "a") {
      enqueue(job.db, q, json("follow-up"));
      if (++a_runs == 1) {
        a_enqueued = true;
        release_a.wait();
      }
    }
    return HandlerResult::complete();
  });
  ASSERT_TRUE(wait_until([&] { return a_enqueued.load(); }));
  std::string reschedule_error;
  std::thread operator_thread =
      reschedule_in_background(next, reschedule_error);
  ASSERT_TRUE(wait_until([&] { return lock_waiters() == 1; }));
  release_a.open();
  operator_thread.join();
  if (!reschedule_error.empty()) {
    EXPECT_TRUE(test::contains(reschedule_error, "deadlock"))
        << reschedule_error;
  }
  // The follow-up job, from the handler's one committed run, runs last.
  auto follow_ups = [&](const std::string& state) {
    return query_value(
        "SELECT count(*) FROM pgjobq.jobs WHERE data = '\"follow-up\"'" +
        (state.empty() ? std::string() : " AND state = '" + state + "'"));
  };
  EXPECT_TRUE(wait_until([&] { return follow_ups("completed") == "1"; }));
  EXPECT_EQ(follow_ups(""), "1");
  EXPECT_EQ(state_of(a), JobState::completed);
  EXPECT_EQ(state_of(next), JobState::completed);
  EXPECT_FALSE(worker.finished());
  worker.join();
  EXPECT_EQ(worker.wait_for_exit(), nullptr);
}

}  // namespace
}  // namespace pgjobq
