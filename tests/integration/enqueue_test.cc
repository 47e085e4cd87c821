#include "pgjobq/enqueue.h"

#include <hiredis/hiredis.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <latch>
#include <mutex>
#include <thread>
#include <vector>

#include "pgjobq/admin.h"
#include "pgjobq/errors.h"
#include "pgjobq/jobs.h"
#include "sql/statements.h"
#include "support/services.h"

namespace pgjobq {
namespace {

using nlohmann::json;
using test::wait_until;

using test::exec;

class EnqueueTest : public test::DatabaseTest {
 protected:
  std::int64_t jobs_in(const std::string& queue) const {
    return std::stoll(query_value(
        "SELECT count(*) FROM pgjobq.jobs j JOIN pgjobq.queues q ON "
        "q.id = j.queue_id WHERE q.name = '" +
        queue + "'"));
  }
  std::int64_t all_jobs() const {
    return std::stoll(query_value("SELECT count(*) FROM pgjobq.jobs"));
  }
};

TEST_F(EnqueueTest, StoresTheJobAsPendingWithItsData) {
  PgConnPtr conn = connect();
  std::string q = queue("mail");
  json data = {{"to", "ada@example.com"}, {"n", 1}};
  JobId id = enqueue(conn.get(), q, data);
  auto job = query_job(conn.get(), id);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->id, id);
  EXPECT_EQ(job->queue, q);
  EXPECT_EQ(job->state, JobState::pending);
  EXPECT_EQ(job->data, data);
  EXPECT_FALSE(job->result);
  EXPECT_FALSE(job->error);
  EXPECT_EQ(job->attempts, 0);
  EXPECT_FALSE(job->started_at);
  EXPECT_FALSE(job->finished_at);
  auto age = Clock::now() - job->enqueued_at;
  EXPECT_LT(std::chrono::abs(age), std::chrono::minutes(1));
}

TEST_F(EnqueueTest, AutocommitEnqueueIsVisibleToOthersAtOnce) {
  PgConnPtr conn = connect();
  std::string q = queue();
  enqueue(conn.get(), q, json::object());
  EXPECT_EQ(jobs_in(q), 1);
}

TEST_F(EnqueueTest, RolledBackTransactionLeavesNoJob) {
  PgConnPtr conn = connect();
  std::string q = queue();
  exec(conn.get(), "BEGIN");
  JobId id = enqueue(conn.get(), q, json{{"x", 1}});
  ASSERT_TRUE(enqueue_many(conn.get(), q, {json(1), json(2)}));
  EXPECT_EQ(jobs_in(q), 0) << "uncommitted jobs must be invisible";
  exec(conn.get(), "ROLLBACK");
  EXPECT_EQ(jobs_in(q), 0);
  EXPECT_FALSE(query_job(conn.get(), id));
  EXPECT_EQ(query_value("SELECT count(*) FROM pgjobq.queues WHERE name = '" +
                        q + "'"),
            "0")
      << "the queue created in the transaction goes with it";
}

TEST_F(EnqueueTest, JobsAndTheCallersOwnRowCommitAtomically) {
  PgConnPtr conn = connect();
  std::string q = queue("orders");
  exec(conn.get(), "CREATE TABLE app_orders (id int PRIMARY KEY)");

  exec(conn.get(), "BEGIN");
  exec(conn.get(), "INSERT INTO app_orders VALUES (1)");
  enqueue(conn.get(), q, json{{"order", 1}});
  ASSERT_TRUE(enqueue_many(conn.get(), q, {json{{"order", 1}, {"step", 2}}}));
  exec(conn.get(), "COMMIT");
  EXPECT_EQ(query_value("SELECT count(*) FROM app_orders"), "1");
  EXPECT_EQ(jobs_in(q), 2);

  exec(conn.get(), "BEGIN");
  exec(conn.get(), "INSERT INTO app_orders VALUES (2)");
  enqueue(conn.get(), q, json{{"order", 2}});
  exec(conn.get(), "ROLLBACK");
  EXPECT_EQ(query_value("SELECT count(*) FROM app_orders"), "1");
  EXPECT_EQ(jobs_in(q), 2);
}

TEST_F(EnqueueTest, LimitRefusesAndTheTransactionStaysUsable) {
  PgConnPtr conn = connect();
  std::string q = queue();
  exec(conn.get(), "CREATE TABLE audit (note text)");
  exec(conn.get(), "BEGIN");
  EXPECT_TRUE(try_enqueue(conn.get(), q, json(1), 2));
  EXPECT_TRUE(try_enqueue(conn.get(), q, json(2), 2));
  EXPECT_FALSE(try_enqueue(conn.get(), q, json(3), 2));
  EXPECT_EQ(PQtransactionStatus(conn.get()), PQTRANS_INTRANS);
  exec(conn.get(), "INSERT INTO audit VALUES ('refused, carried on')");
  exec(conn.get(), "COMMIT");
  EXPECT_EQ(jobs_in(q), 2);
  EXPECT_EQ(query_value("SELECT count(*) FROM audit"), "1");
  EXPECT_TRUE(try_enqueue(conn.get(), q, json(4), 3));
}

TEST_F(EnqueueTest, RefusedEnqueueHoldsNoLockOnTheQueue) {
  PgConnPtr a = connect();
  PgConnPtr b = connect();
  std::string q = queue();
  ASSERT_TRUE(try_enqueue(a.get(), q, json(1), 1));
  exec(a.get(), "BEGIN");
  ASSERT_FALSE(try_enqueue(a.get(), q, json(2), 1));
  // b's enqueue must not wait for a's open transaction.
  exec(b.get(), "SET lock_timeout = '2s'");
  EXPECT_NO_THROW(enqueue(b.get(), q, json(3)));
  exec(a.get(), "COMMIT");
}

// A batch larger than its limit into a queue not seen yet: refused before
// the queue is created, so the refused caller's open transaction holds no
// row another enqueuer would wait for (migration 005; before it, b waited
// for a's COMMIT).
TEST_F(EnqueueTest, RefusedBatchForANewQueueWritesNothingAndHoldsNoLock) {
  PgConnPtr a = connect();
  PgConnPtr b = connect();
  std::string q = queue("new");
  exec(a.get(), "BEGIN");
  EXPECT_FALSE(enqueue_many(a.get(), q, {json(1), json(2)}, EnqueueOptions{1}));
  EXPECT_EQ(PQtransactionStatus(a.get()), PQTRANS_INTRANS);
  exec(b.get(), "SET lock_timeout = '2s'");
  EXPECT_NO_THROW(enqueue(b.get(), q, json(3)));
  exec(a.get(), "COMMIT");
  EXPECT_EQ(jobs_in(q), 1);
  // The same batch within its limit is still accepted, and one over it
  // into the existing queue still refused.
  EXPECT_TRUE(enqueue_many(a.get(), q, {json(4), json(5)}, EnqueueOptions{3}));
  EXPECT_FALSE(enqueue_many(a.get(), q, {json(6), json(7)}, EnqueueOptions{4}));
  EXPECT_EQ(jobs_in(q), 3);
}

TEST_F(EnqueueTest, EightConcurrentEnqueuersWithLimit100AcceptExactly100) {
  std::string q = queue("limited");
  {
    // Create the queue first so all eight race on the same row.
    PgConnPtr conn = connect();
    exec(conn.get(), "BEGIN");
    ASSERT_TRUE(try_enqueue(conn.get(), q, json(0), 100));
    exec(conn.get(), "ROLLBACK");
  }
  std::atomic<int> accepted{0};
  std::atomic<int> refused{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  std::vector<std::string> errors(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      try {
        PgConnPtr conn = connect();
        while (!go) std::this_thread::yield();
        for (int i = 0; i < 40; ++i) {
          // Half in explicit transactions with a second statement after the
          // enqueue, so locks are held across round trips.
          bool explicit_txn = (i + t) % 2 == 0;
          if (explicit_txn) PQclear(PQexec(conn.get(), "BEGIN"));
          auto id = try_enqueue(conn.get(), q, json{{"t", t}, {"i", i}}, 100);
          if (explicit_txn) {
            PQclear(PQexec(conn.get(), "SELECT pg_sleep(0.001)"));
            PQclear(PQexec(conn.get(), "COMMIT"));
          }
          (id ? accepted : refused)++;
        }
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(t)] = e.what();
      }
    });
  }
  go = true;
  for (auto& t : threads) t.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
  EXPECT_EQ(accepted.load(), 100);
  EXPECT_EQ(refused.load(), 8 * 40 - 100);
  EXPECT_EQ(jobs_in(q), 100);
}

// The scenario a position taken at insert time gets wrong: T1 enqueues
// first, T2 enqueues and commits, and only then does T1 commit. A worker
// that ran T2's job would later find T1's job ahead of it. pgjobq makes T2
// wait for T1, so positions follow commit order.
TEST_F(EnqueueTest, InterleavedTransactionsGetCommitOrder) {
  PgConnPtr t1 = connect();
  PgConnPtr t2 = connect();
  PgConnPtr observer = connect();
  std::string q = queue("fifo");
  enqueue(observer.get(), q, json("zero"));  // the queue exists

  exec(t1.get(), "BEGIN");
  JobId first = enqueue(t1.get(), q, json("t1"));

  std::atomic<bool> t2_committed{false};
  JobId second;
  std::thread other([&] {
    exec(t2.get(), "BEGIN");
    second = enqueue(t2.get(), q, json("t2"));
    exec(t2.get(), "COMMIT");
    t2_committed = true;
  });
  int t2_pid = PQbackendPID(t2.get());
  // T2 is stuck on T1's lock, not done: no job of T2 is visible yet.
  ASSERT_TRUE(wait_until([&] {
    return query_value(
               "SELECT wait_event_type FROM pg_stat_activity WHERE "
               "pid = " +
               std::to_string(t2_pid)) == "Lock";
  }));
  EXPECT_FALSE(t2_committed.load());
  EXPECT_EQ(jobs_in(q), 1);
  exec(t1.get(), "COMMIT");
  other.join();
  ASSERT_TRUE(t2_committed.load());
  auto order = fifo(q);
  ASSERT_EQ(order.size(), 3u);
  EXPECT_EQ(order[1], first.value);
  EXPECT_EQ(order[2], second.value);
}

// The mirror image: T2 enqueues first but commits first, T1 enqueues later
// and commits later; T1's job must come after T2's.
TEST_F(EnqueueTest, LaterEnqueuerThatCommitsLaterComesLater) {
  PgConnPtr t1 = connect();
  PgConnPtr t2 = connect();
  std::string q = queue("fifo");
  enqueue(t1.get(), q, json("zero"));
  exec(t1.get(), "BEGIN");
  exec(t1.get(), "SELECT 1");
  exec(t2.get(), "BEGIN");
  JobId b = enqueue(t2.get(), q, json("t2"));
  JobId a;
  std::thread later([&] {
    a = enqueue(t1.get(), q, json("t1"));
    exec(t1.get(), "COMMIT");
  });
  int t1_pid = PQbackendPID(t1.get());
  ASSERT_TRUE(wait_until([&] {
    return query_value(
               "SELECT wait_event_type FROM pg_stat_activity WHERE "
               "pid = " +
               std::to_string(t1_pid)) == "Lock";
  }));
  exec(t2.get(), "COMMIT");
  later.join();
  auto order = fifo(q);
  ASSERT_EQ(order.size(), 3u);
  EXPECT_EQ(order[1], b.value);
  EXPECT_EQ(order[2], a.value);
}

// Many enqueuers at once, in transactions with work between enqueue and
// commit. PostgreSQL itself records when each transaction committed
// (track_commit_timestamp, on in the test server): position order must be
// commit order.
TEST_F(EnqueueTest, ManyEnqueuersKeepCommitOrderWithinTheQueue) {
  std::string q = queue("race");
  constexpr int kThreads = 6;
  constexpr int kEach = 30;
  std::vector<std::thread> threads;
  std::vector<std::string> errors(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        PgConnPtr conn = connect();
        for (int i = 0; i < kEach; ++i) {
          PQclear(PQexec(conn.get(), "BEGIN"));
          enqueue(conn.get(), q, json{{"t", t}, {"i", i}});
          if (i % 3 == 0) PQclear(PQexec(conn.get(), "SELECT pg_sleep(0.002)"));
          PQclear(PQexec(conn.get(), "COMMIT"));
        }
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(t)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
  PgConnPtr conn = connect();
  std::string sql =
      "SELECT (j.data->>'t')::int, (j.data->>'i')::int, "
      "(extract(epoch FROM pg_xact_commit_timestamp(j.xmin)) * 1e6)::bigint "
      "FROM pgjobq.jobs j JOIN pgjobq.queues q ON q.id = j.queue_id "
      "WHERE q.name = '" +
      q + "' ORDER BY j.position";
  PGresult* r = PQexec(conn.get(), sql.c_str());
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
  ASSERT_EQ(PQntuples(r), kThreads * kEach);
  std::int64_t previous_commit = 0;
  std::vector<int> next_of_thread(kThreads, 0);
  for (int row = 0; row < PQntuples(r); ++row) {
    int t = std::stoi(PQgetvalue(r, row, 0));
    int i = std::stoi(PQgetvalue(r, row, 1));
    std::int64_t committed = std::stoll(PQgetvalue(r, row, 2));
    EXPECT_GE(committed, previous_commit) << "row " << row;
    previous_commit = committed;
    EXPECT_EQ(i, next_of_thread[static_cast<std::size_t>(t)]++)
        << "each thread's jobs in its own order";
  }
  PQclear(r);
}

// Found under the sanitizers: an enqueuer that did not see a new queue,
// then saw it committed by another enqueuer a moment later, took that for
// a full queue and refused a job it had no limit for. Enqueuers racing to
// create a queue must all get in.
TEST_F(EnqueueTest, ConcurrentFirstEnqueuesOfANewQueueAreNeverRefused) {
  constexpr int kThreads = 6;
  constexpr int kRounds = 40;
  std::vector<PgConnPtr> conns;
  for (int t = 0; t < kThreads; ++t) conns.push_back(connect());
  for (int round = 0; round < kRounds; ++round) {
    std::string q = queue("new-" + std::to_string(round));
    std::latch start(kThreads);
    std::vector<std::string> errors(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        start.arrive_and_wait();
        try {
          enqueue(conns[static_cast<std::size_t>(t)].get(), q, json(t));
        } catch (const std::exception& e) {
          errors[static_cast<std::size_t>(t)] = e.what();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (const auto& e : errors) ASSERT_EQ(e, "") << "round " << round;
    std::vector<QueueStatus> status = queue_status(conns[0].get(), q);
    ASSERT_EQ(status.size(), 1u);
    ASSERT_EQ(status[0].pending, kThreads) << "round " << round;
  }
}

TEST_F(EnqueueTest, EnqueueManyIsAllOrNothingAgainstTheLimit) {
  PgConnPtr conn = connect();
  std::string q = queue();
  EnqueueOptions five{.limit = 5};
  auto first = enqueue_many(conn.get(), q, {json(1), json(2), json(3)}, five);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->size(), 3u);
  EXPECT_FALSE(enqueue_many(conn.get(), q, {json(4), json(5), json(6)}, five));
  EXPECT_EQ(jobs_in(q), 3);
  EXPECT_TRUE(enqueue_many(conn.get(), q, {json(4), json(5)}, five));
  EXPECT_EQ(jobs_in(q), 5);
  EXPECT_FALSE(
      enqueue_many(conn.get(), queue(), std::vector<json>(6, json(0)), five))
      << "more than the limit refused on a brand-new queue too";
}

TEST_F(EnqueueTest, EnqueueManyReturnsIdsInFifoOrder) {
  PgConnPtr conn = connect();
  std::string q = queue();
  std::vector<json> jobs;
  for (int i = 0; i < 50; ++i) jobs.push_back(json{{"i", i}});
  auto ids = enqueue_many(conn.get(), q, jobs);
  ASSERT_TRUE(ids);
  ASSERT_EQ(ids->size(), 50u);
  auto order = fifo(q);
  std::vector<std::int64_t> returned;
  for (JobId id : *ids) returned.push_back(id.value);
  EXPECT_EQ(returned, order);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(query_job(conn.get(), (*ids)[static_cast<std::size_t>(i)])->data,
              jobs[static_cast<std::size_t>(i)]);
  }
  EXPECT_TRUE(enqueue_many(conn.get(), q, {})->empty());
}

TEST_F(EnqueueTest, BadInputIsRefusedWithNothingWritten) {
  PgConnPtr conn = connect();
  exec(conn.get(), "BEGIN");
  EXPECT_THROW(enqueue(conn.get(), "bad name", json(1)), InvalidInput);
  EXPECT_THROW(enqueue(conn.get(), "", json(1)), InvalidInput);
  EXPECT_THROW(enqueue(conn.get(), "q*", json(1)), InvalidInput);
  EXPECT_THROW(enqueue(conn.get(), std::string(129, 'q'), json(1)),
               InvalidInput);
  EXPECT_THROW(enqueue(conn.get(), "q", std::string(2 << 20, 'x')),
               InvalidInput);
  EXPECT_THROW(enqueue(conn.get(), "q", std::string("nul\0", 4)), InvalidInput);
  EXPECT_THROW(enqueue(conn.get(), "q", json::parse("{oops", nullptr, false)),
               InvalidInput);
  EXPECT_THROW(try_enqueue(conn.get(), "q", json(1), 0), InvalidInput);
  EXPECT_THROW(enqueue_many(conn.get(), "q", {json(1), std::string("\xff")}),
               InvalidInput);
  EnqueueOptions small{.limit = 10, .max_payload_bytes = 10};
  EXPECT_THROW(try_enqueue(conn.get(), "q", std::string(20, 'x'), small),
               InvalidInput);
  // Nothing reached the server, so the transaction is still good.
  EXPECT_EQ(PQtransactionStatus(conn.get()), PQTRANS_INTRANS);
  enqueue(conn.get(), "q", json(1));
  exec(conn.get(), "COMMIT");
  EXPECT_EQ(all_jobs(), 1);
}

// A caller's connection in pipeline mode cannot run pgjobq's synchronous
// statements: that is the caller's mistake (InvalidInput), not a lost
// connection, and the connection stays good.
TEST_F(EnqueueTest, AConnectionInPipelineModeIsRefusedNotTakenForLost) {
  PgConnPtr conn = connect();
  std::string q = queue("pipeline");
  ASSERT_EQ(PQenterPipelineMode(conn.get()), 1);
  EXPECT_THROW(enqueue(conn.get(), q, json(1)), InvalidInput);
  EXPECT_THROW(query_job(conn.get(), JobId{1}), InvalidInput);
  EXPECT_EQ(PQstatus(conn.get()), CONNECTION_OK);
  ASSERT_EQ(PQexitPipelineMode(conn.get()), 1);
  EXPECT_NO_THROW(enqueue(conn.get(), q, json(2)));
  EXPECT_EQ(jobs_in(q), 1);
}

TEST_F(EnqueueTest, PayloadLimitIsConfigurable) {
  PgConnPtr conn = connect();
  std::string big(2 << 20, 'x');
  EnqueueOptions roomy{.limit = 10, .max_payload_bytes = 4 << 20};
  auto id = try_enqueue(conn.get(), queue(), big, roomy);
  ASSERT_TRUE(id);
  EXPECT_EQ(query_job(conn.get(), *id)->data, big);
}

// The message of the DatabaseError an enqueue on queue "q" throws after
// `sql` has broken the schema; empty (and a test failure) if none.
std::string enqueue_error_after(PGconn* conn, const std::string& sql) {
  exec(conn, sql);
  try {
    enqueue(conn, "q", json(1));
  } catch (const DatabaseError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected DatabaseError after " << sql;
  return "";
}

// A binary newer than its database's schema (upgraded, not migrated).
TEST_F(EnqueueTest, DatabaseBehindTheBinarySaysToMigrate) {
  PgConnPtr conn = connect();
  std::string error =
      enqueue_error_after(conn.get(), "DROP FUNCTION pgjobq.insert_job");
  EXPECT_NE(error.find("run `pgjobq migrate`"), std::string::npos) << error;
}

// A caller's session in another client encoding has PostgreSQL convert
// what it is sent from that encoding, and what it returns into it: the
// UTF-8 of a JSON payload used to be stored as mojibake ("\u00fc" became
// "\u00c3\u00bc", which a worker then got), and reading a job back threw
// nlohmann's parse_error, or failed for a character LATIN1 lacks.
TEST_F(EnqueueTest, ACallersLatin1SessionStoresAndReadsJsonFaithfully) {
  PgConnPtr conn = connect();
  PgConnPtr utf8 = connect();
  std::string q = queue("latin1");
  json data = {{"name", "J\u00fcrgen \u00c5ngstr\u00f6m"},
               {"smile", "\U0001F600"},
               {"caf\u00e9", {"\u00e0", "\u4e2d\u6587"}}};
  data = json::parse(data.dump());  // the escapes above as UTF-8
  exec(conn.get(), "SET client_encoding = 'LATIN1'");
  exec(conn.get(), "BEGIN");
  JobId one = enqueue(conn.get(), q, data);
  auto many = enqueue_many(conn.get(), q, {data, json("\u00df")});
  ASSERT_TRUE(many);
  exec(conn.get(), "COMMIT");
  json sharp = json::parse(json("\u00df").dump());
  EXPECT_EQ(query_job(utf8.get(), one)->data, data)
      << "what a UTF-8 session (a worker's) reads";
  EXPECT_EQ(query_job(utf8.get(), (*many)[0])->data, data);
  EXPECT_EQ(query_job(utf8.get(), (*many)[1])->data, sharp);
  // Read back in the LATIN1 session: the same UTF-8 JSON.
  EXPECT_EQ(query_job(conn.get(), one)->data, data);
  exec(utf8.get(),
       "UPDATE pgjobq.jobs SET state = 'completed', result = data,"
       " error = 'f\u00fcr' WHERE id = " +
           std::to_string(one.value));
  auto job = query_job(conn.get(), one);
  EXPECT_EQ(job->result, data);
  EXPECT_EQ(job->error, std::string("f\xc3\xbcr"));
  RedisLink redis(test::redis_url());
  EXPECT_EQ(wait_for_result(conn.get(), redis, one, std::chrono::seconds(5)),
            data);
}

// Each job is under its limit, but the batch is over 1 GiB: PostgreSQL
// closed the connection on such a message ("invalid message length"), so
// enqueue_many threw ConnectionError and the caller lost its session and
// its transaction's other work.
// Heavy (about a minute and 2 GiB of memory in a test build, more under
// the sanitizers), so CI skips it: PGJOBQ_HEAVY_TESTS=1 runs it.
TEST_F(EnqueueTest, ABatchTooLargeForOneMessageIsRefusedBeforeSending) {
  if (!std::getenv("PGJOBQ_HEAVY_TESTS")) {
    GTEST_SKIP() << "builds 1 GiB of JSON; set PGJOBQ_HEAVY_TESTS=1 to run";
  }
  PgConnPtr conn = connect();
  std::string q = queue("huge");
  exec(conn.get(), "CREATE TABLE app_rows (id int)");
  exec(conn.get(), "BEGIN");
  exec(conn.get(), "INSERT INTO app_rows VALUES (1)");
  std::vector<json> jobs(1040, json(std::string(1040000, 'x')));
  EXPECT_THROW(enqueue_many(conn.get(), q, jobs), InvalidInput);
  jobs.clear();
  EXPECT_EQ(PQstatus(conn.get()), CONNECTION_OK);
  EXPECT_EQ(PQtransactionStatus(conn.get()), PQTRANS_INTRANS);
  exec(conn.get(), "COMMIT");
  EXPECT_EQ(query_value("SELECT count(*) FROM app_rows"), "1");
  EXPECT_EQ(all_jobs(), 0);
}

TEST_F(EnqueueTest, UnmigratedDatabaseSaysToMigrate) {
  PgConnPtr conn = connect();
  std::string error =
      enqueue_error_after(conn.get(), "DROP SCHEMA pgjobq CASCADE");
  EXPECT_NE(error.find("pgjobq migrate"), std::string::npos) << error;
  EXPECT_NE(error.find("enqueue on queue \"q\""), std::string::npos) << error;
}

// O(1) enqueue: the buffers an enqueue touches do not grow with the number
// of jobs waiting (no counting, no scan), on the one-job path and the batch
// path alike. Measured by PostgreSQL itself.
TEST_F(EnqueueTest, EnqueueCostDoesNotGrowWithQueueDepth) {
  PgConnPtr conn = connect();
  auto buffers_for = [&](const pg::Statement& statement,
                         std::vector<const char*> params) {
    exec(conn.get(), "BEGIN");
    std::string sql = std::string("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") +
                      statement.text;
    PGresult* r =
        PQexecParams(conn.get(), sql.c_str(), static_cast<int>(params.size()),
                     nullptr, params.data(), nullptr, nullptr, 0);
    EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
    json plan = json::parse(PQgetvalue(r, 0, 0));
    PQclear(r);
    exec(conn.get(), "ROLLBACK");
    const json& top = plan[0]["Plan"];
    return top["Shared Hit Blocks"].get<int>() +
           top["Shared Read Blocks"].get<int>();
  };
  std::string shallow = queue("shallow");
  std::string deep = queue("deep");
  enqueue(conn.get(), shallow, json(0));
  std::vector<json> batch(5000, json{{"padding", std::string(100, 'p')}});
  for (int i = 0; i < 8; ++i)
    ASSERT_TRUE(enqueue_many(conn.get(), deep, batch, {.limit = 1 << 30}));
  exec(conn.get(), "ANALYZE pgjobq.jobs");
  // $1 name, $2 limit, $3 payload (one job) or payloads, $4 count (batch).
  std::pair<const char*, std::function<int(const std::string&)>> paths[] = {
      {"one job",
       [&](const std::string& q) {
         return buffers_for(sql::kInsertJob,
                            {q.c_str(), "1000000", "{\"x\":1}"});
       }},
      {"batch",
       [&](const std::string& q) {
         return buffers_for(sql::kInsertJobs,
                            {q.c_str(), "1000000", "[{\"x\":1}]", "1"});
       }},
  };
  for (const auto& [path, buffers_for_one_enqueue] : paths) {
    // Warm both queues once, then compare.
    buffers_for_one_enqueue(shallow);
    buffers_for_one_enqueue(deep);
    int at_depth_1 = buffers_for_one_enqueue(shallow);
    int at_depth_40000 = buffers_for_one_enqueue(deep);
    EXPECT_LE(at_depth_40000, at_depth_1 + 4)
        << path << ": an enqueue behind 40,000 jobs touched " << at_depth_40000
        << " buffers, one behind 1 touched " << at_depth_1;
  }
}

TEST_F(EnqueueTest, NotifyPublishesOnTheQueueChannel) {
  std::string q = queue("wake");
  redisContext* sub = nullptr;
  {
    std::string url = test::redis_url();
    int port = std::stoi(url.substr(url.rfind(':') + 1));
    sub = redisConnect("127.0.0.1", port);
  }
  ASSERT_TRUE(sub && !sub->err);
  std::string channel = "pgjobq/" + q + "-notify";
  EXPECT_EQ(queue_channel(q), channel);
  auto* confirm = static_cast<redisReply*>(
      redisCommand(sub, "SUBSCRIBE %s", channel.c_str()));
  ASSERT_TRUE(confirm);
  freeReplyObject(confirm);
  RedisLink link(test::redis_url());
  EXPECT_TRUE(notify(link, q));
  void* raw = nullptr;
  ASSERT_EQ(redisGetReply(sub, &raw), REDIS_OK);
  auto* message = static_cast<redisReply*>(raw);
  ASSERT_EQ(message->type, REDIS_REPLY_ARRAY);
  EXPECT_EQ(std::string(message->element[1]->str), channel);
  freeReplyObject(message);
  redisFree(sub);
}

TEST_F(EnqueueTest, NotifyWithRedisDownReportsWithoutThrowing) {
  test::RedisServer redis;
  RedisLink link(redis.url(), std::chrono::milliseconds(500));
  EXPECT_TRUE(notify(link, "q"));
  redis.stop();
  std::string error;
  EXPECT_FALSE(notify(link, "q", &error));
  EXPECT_NE(error.find("not sent"), std::string::npos) << error;
  redis.start();
  EXPECT_TRUE(notify(link, "q")) << "the link reconnects by itself";
}

TEST_F(EnqueueTest, RedisPasswordIsSentAndNeverShown) {
  test::RedisServer redis;
  redis.restart();
  redis.stop();
  redis.start("hunter2");
  RedisLink good(redis.url());
  EXPECT_TRUE(notify(good, "q"));
  RedisLink bad("unix://" + redis.socket_path() + "?password=wrongpass");
  std::string error;
  EXPECT_FALSE(notify(bad, "q", &error));
  EXPECT_EQ(error.find("wrongpass"), std::string::npos) << error;
  EXPECT_NE(error.find("***"), std::string::npos) << error;
}

}  // namespace
}  // namespace pgjobq
