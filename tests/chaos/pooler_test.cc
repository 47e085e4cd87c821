// A real connection pooler (pgbouncer) between pgjobq and PostgreSQL
// (README, "Connection poolers"; docs/reliability.md). Enqueuing keeps
// nothing in the session between calls, so it works through a pooler in
// transaction mode, in the caller's transaction too. A worker needs a
// session of its own: through a pooler in session mode it serves as if
// connected directly; through one in transaction mode its statements land
// in whichever server session the pooler hands out, and it stops with one
// clear error rather than run the queue from a session it does not hold.

#include <signal.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "chaos/hostile.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "pgjobq/jobs.h"
#include "pgjobq/worker.h"
#include "support/worker.h"

namespace pgjobq::test {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

constexpr const char* kOwnSession = "A worker needs a session of its own";

class PoolerTest : public HostileTest {
 protected:
  void SetUp() override {
    HostileTest::SetUp();
    if (!Pgbouncer::installed()) {
      GTEST_SKIP() << "no pgbouncer at " << Pgbouncer::binary()
                   << " (apt-get install pgbouncer, or set PGJOBQ_PGBOUNCER)";
    }
  }

  // The pid of the server session holding `queue`'s lock ("" if none).
  std::string lock_holder(const std::string& queue) const {
    return query_value(
        "SELECT l.pid FROM pg_locks l JOIN pgjobq.queues q ON l.objid = q.id "
        "WHERE l.locktype = 'advisory' AND l.classid = 1886220545 AND "
        "l.granted AND l.database = (SELECT oid FROM pg_database WHERE "
        "datname = current_database()) AND q.name = '" +
        queue + "'");
  }

  // The ids of `queue`'s jobs in the order they started ("" if none).
  std::string started_order(const std::string& queue) const {
    return query_value(
        "SELECT string_agg(j.id::text, ',' ORDER BY j.started_at) FROM "
        "pgjobq.jobs j JOIN pgjobq.queues q ON q.id = j.queue_id WHERE "
        "q.name = '" +
        queue + "' AND j.started_at IS NOT NULL");
  }

  // `queue`'s job ids in FIFO order, joined by commas.
  std::string fifo_order(const std::string& queue) const {
    std::string out;
    for (std::int64_t id : fifo(queue)) {
      out += (out.empty() ? "" : ",") + std::to_string(id);
    }
    return out;
  }

  // The first column of the first row of `sql` on `conn` ("" if none).
  static std::string value(PGconn* conn, const std::string& sql) {
    PGresult* r = PQexec(conn, sql.c_str());
    std::string v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0
                        ? PQgetvalue(r, 0, 0)
                        : "";
    PQclear(r);
    return v;
  }

  std::string handler_script() {
    return script("handler.sh",
                  "#!/bin/sh\ncat >/dev/null\necho "
                  "\"{\\\"id\\\":$PGJOBQ_JOB_ID}\"\n");
  }
};

// Through a pooler in transaction mode, with the worker connected
// directly: an autocommit enqueue, a transaction enqueuing two jobs beside
// a row of the caller's (all or nothing), a rolled-back one (no job),
// try_enqueue's limit (refusing, the transaction still usable),
// wait_for_result, `pgjobq wait`, and `pgjobq enqueue --wait` and
// `--limit`.
TEST_F(PoolerTest, EnqueueAndWaitWorkThroughATransactionModePooler) {
  Pgbouncer bouncer("transaction", 2);
  std::string q = queue("pooled");
  std::mutex mutex;
  std::vector<json> ran;
  BackgroundWorker worker(worker_options({q}), [&](const JobContext& job) {
    std::lock_guard lock(mutex);
    ran.push_back(job.data);
    return HandlerResult::complete(json{{"got", job.data}});
  });
  PgConnPtr pooled = connect_database(bouncer.url(db_name()));
  exec(pooled.get(), "CREATE TABLE orders (id int)");

  JobId first = enqueue(pooled.get(), q, json(1));
  exec(pooled.get(), "BEGIN");
  exec(pooled.get(), "INSERT INTO orders VALUES (2)");
  JobId second = enqueue(pooled.get(), q, json(2));
  JobId third = enqueue(pooled.get(), q, json(3));
  exec(pooled.get(), "COMMIT");
  exec(pooled.get(), "BEGIN");
  exec(pooled.get(), "INSERT INTO orders VALUES (99)");
  JobId rolled_back = enqueue(pooled.get(), q, json("rolled back"));
  exec(pooled.get(), "ROLLBACK");
  RedisLink redis(redis_url());
  notify(redis, q);

  EXPECT_EQ(wait_for_result(pooled.get(), redis, third, milliseconds(20000)),
            (json{{"got", 3}}));
  EXPECT_EQ(wait_for_result(pooled.get(), redis, first, milliseconds(1000)),
            (json{{"got", 1}}));
  EXPECT_EQ(wait_for_result(pooled.get(), redis, second, milliseconds(1000)),
            (json{{"got", 2}}));
  EXPECT_FALSE(query_job(pooled.get(), rolled_back));
  EXPECT_EQ(query_value("SELECT string_agg(id::text, ',') FROM orders"), "2");
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(ran, (std::vector<json>{1, 2, 3}));
  }

  // The limit, on a queue no worker serves.
  std::string full = queue("full");
  EXPECT_TRUE(try_enqueue(pooled.get(), full, json(1), 2));
  exec(pooled.get(), "BEGIN");
  EXPECT_TRUE(try_enqueue(pooled.get(), full, json(2), 2));
  EXPECT_FALSE(try_enqueue(pooled.get(), full, json(3), 2));
  exec(pooled.get(), "INSERT INTO orders VALUES (4)");
  exec(pooled.get(), "COMMIT");
  EXPECT_EQ(count_jobs(full), 2);
  EXPECT_EQ(query_value("SELECT count(*) FROM orders"), "2");

  // The command line, through the pooler.
  ProcessResult r = pgjobq(
      {"--db", bouncer.url(db_name()), "enqueue", full, "{}", "--limit", "2"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_EQ(count_jobs(full), 2);
  r = pgjobq({"--db", bouncer.url(db_name()), "wait",
              std::to_string(first.value), "--timeout", "5"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "{\"got\":1}")) << r.out;
  r = pgjobq({"--db", bouncer.url(db_name()), "enqueue", q, "{\"n\":5}",
              "--wait", "--timeout", "20"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "{\"got\":{\"n\":5}}")) << r.out;
  EXPECT_EQ(started_order(q), fifo_order(q));
}

// A worker through a pooler in transaction mode. While nothing else uses
// the pool, the pooler hands its every statement the one server session
// it used last, which holds the queue's lock, and it runs a job. Let a
// client of the pooler take that session for a transaction, and the
// worker's next claim lands in another one, which it did not prepare, does
// not hold the lock in, and which does not carry its mark: it stops with
// the documented error (it used to stop with PostgreSQL's `prepared
// statement "pgjobq_seek_plans" does not exist`), having claimed nothing.
// The lock stays with the server session the pooler keeps (the known
// limit, docs/reliability.md): an operator ends that session, and a
// worker connected directly runs the rest, each job once, in FIFO order.
TEST_F(PoolerTest, AWorkerThroughATransactionModePoolerStopsWithAClearError) {
  Pgbouncer bouncer("transaction", 2);
  PgConnPtr conn = connect();
  std::string q = queue("txpool");
  JobId first = enqueue(conn.get(), q, json(1));
  std::mutex mutex;
  std::vector<json> ran;
  Handler handler = [&](const JobContext& job) {
    std::lock_guard lock(mutex);
    ran.push_back(job.data);
    return HandlerResult::complete();
  };
  auto o = worker_options({q});
  o.db_url = bouncer.url(db_name());
  auto pooled_worker = std::make_unique<BackgroundWorker>(o, handler);
  std::string holder;
  ASSERT_TRUE(wait_until([&] {
    holder = lock_holder(q);
    return !holder.empty() && state_of(first) == "completed" &&
           query_value("SELECT state FROM pg_stat_activity WHERE pid = " +
                       holder) == "idle";
  }));

  PgConnPtr other = connect_database(bouncer.url(db_name()));
  exec(other.get(), "BEGIN");
  ASSERT_EQ(value(other.get(), "SELECT pg_backend_pid()"), holder)
      << "the pooler did not hand this client the worker's last session";
  JobId second = enqueue(conn.get(), q, json(2));
  JobId third = enqueue(conn.get(), q, json(3));
  RedisLink redis(redis_url());
  notify(redis, q);

  ASSERT_TRUE(wait_until([&] { return pooled_worker->finished(); }))
      << "the worker went on serving";
  std::exception_ptr error = pooled_worker->wait_for_exit();
  ASSERT_TRUE(error);
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), kOwnSession)) << e.what();
    EXPECT_TRUE(contains(e.what(), "pooler in transaction mode")) << e.what();
    EXPECT_TRUE(contains(e.what(), q)) << e.what();
  }
  for (JobId id : {second, third}) {
    auto job = query_job(conn.get(), id);
    EXPECT_EQ(job->state, JobState::pending);
    EXPECT_EQ(job->attempts, 0);
  }
  exec(other.get(), "COMMIT");
  other.reset();
  pooled_worker.reset();
  EXPECT_EQ(lock_holder(q), holder);

  exec(conn.get(), "SELECT pg_terminate_backend(" + holder + ")");
  BackgroundWorker direct(worker_options({q}), handler);
  ASSERT_TRUE(wait_until([&] { return state_of(third) == "completed"; }));
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(ran, (std::vector<json>{1, 2, 3}));
  }
  EXPECT_EQ(query_value("SELECT string_agg(attempts::text, ',') FROM "
                        "pgjobq.jobs"),
            "1,1,1");
  EXPECT_EQ(started_order(q), fifo_order(q));
}

// `pgjobq work` through a pooler in transaction mode whose one server
// session another `pgjobq work` already prepared its statements in: one
// line saying a worker needs a session of its own, exit 1 (it used to be
// PostgreSQL's `prepared statement "pgjobq_session_keepalives" already
// exists`), and the queue's jobs untouched.
TEST_F(PoolerTest, WorkThroughATransactionModePoolerIsOneLineAndExitOne) {
  Pgbouncer bouncer("transaction", 1);
  std::string handler = handler_script();
  std::string served = queue("served");
  std::string refused = queue("refused");
  JobId a = add_job(refused, "\"a\"");
  JobId b = add_job(refused, "\"b\"");
  std::string pooled = bouncer.url(db_name());
  auto first = start({"--db", pooled, "work", served, "--", handler});
  ASSERT_TRUE(wait_until([&] { return !lock_holder(served).empty(); }))
      << first->err();

  ProcessResult r = pgjobq({"--db", pooled, "work", refused, "--", handler});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err, kOwnSession)) << r.err;
  EXPECT_TRUE(contains(r.err, "pooler in transaction mode")) << r.err;
  EXPECT_TRUE(contains(r.err, refused)) << r.err;
  for (JobId id : {a, b}) {
    EXPECT_EQ(state_of(id), "pending");
    EXPECT_EQ(job_field(id, "attempts"), "0");
  }
  first->signal(SIGTERM);
  EXPECT_EQ(first->wait(milliseconds(10000)), 0) << first->err();
}

// Through a pooler in session mode a worker has its session to itself: it
// serves in FIFO order. When it is gone the pooler resets the server
// session (DISCARD ALL: its lock and its statements go) and hands it to
// the next worker, a `pgjobq work`, which serves too.
TEST_F(PoolerTest, WorkersThroughASessionModePoolerServeInFifoOrder) {
  Pgbouncer bouncer("session", 1);
  PgConnPtr conn = connect();
  std::string q = queue("session");
  std::vector<JobId> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(enqueue(conn.get(), q, json(i)));
  std::mutex mutex;
  std::vector<json> ran;
  auto o = worker_options({q});
  o.db_url = bouncer.url(db_name());
  {
    BackgroundWorker worker(o, [&](const JobContext& job) {
      std::lock_guard lock(mutex);
      ran.push_back(job.data);
      return HandlerResult::complete();
    });
    ASSERT_TRUE(
        wait_until([&] { return state_of(ids.back()) == "completed"; }));
    worker.stop();
    EXPECT_FALSE(worker.wait_for_exit());
  }
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(ran, (std::vector<json>{0, 1, 2, 3, 4}));
  }

  JobId last = add_job(q, "5");
  auto work = start(
      {"--db", bouncer.url(db_name()), "work", q, "--", handler_script()});
  ASSERT_TRUE(wait_until([&] { return state_of(last) == "completed"; }))
      << work->err();
  EXPECT_EQ(job_field(last, "result"),
            "{\"id\": " + std::to_string(last.value) + "}");
  work->signal(SIGTERM);
  EXPECT_EQ(work->wait(milliseconds(10000)), 0) << work->err();
  EXPECT_EQ(started_order(q), fifo_order(q));
  EXPECT_EQ(query_value("SELECT string_agg(DISTINCT attempts::text, ',') "
                        "FROM pgjobq.jobs"),
            "1");
}

}  // namespace
}  // namespace pgjobq::test
