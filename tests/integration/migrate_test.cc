#include "sql/migrate.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "pg/connection.h"
#include "pgjobq/admin.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "sql/statements.h"
#include "support/services.h"

namespace pgjobq {
namespace {

// These tests start from an empty database, not the migrated template.
class MigrateTest : public test::DatabaseTest {
 protected:
  void SetUp() override {
    DatabaseTest::SetUp();
    PgConnPtr conn = connect();
    PQclear(PQexec(conn.get(), "DROP SCHEMA pgjobq CASCADE"));
  }
};

TEST_F(MigrateTest, CreatesTheSchemaAndIsSafeToRunAgain) {
  PgConnPtr conn = connect();
  EXPECT_EQ(migrate(conn.get()), static_cast<int>(schema_version()));
  EXPECT_EQ(migrate(conn.get()), 0);
  EXPECT_EQ(query_value("SELECT max(version) FROM pgjobq.schema_migrations"),
            std::to_string(schema_version()));
  EXPECT_NO_THROW(enqueue(conn.get(), "after-migrate", nlohmann::json(1)));
}

TEST_F(MigrateTest, ConcurrentMigratorsApplyEachMigrationOnce) {
  constexpr int kMigrators = 6;
  std::vector<int> applied(kMigrators, -1);
  std::vector<std::string> errors(kMigrators);
  std::vector<std::thread> threads;
  for (int i = 0; i < kMigrators; ++i) {
    threads.emplace_back([&, i] {
      try {
        PgConnPtr conn = connect();
        applied[static_cast<std::size_t>(i)] = migrate(conn.get());
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(i)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  int total = 0;
  for (int i = 0; i < kMigrators; ++i) {
    EXPECT_EQ(errors[static_cast<std::size_t>(i)], "");
    total += applied[static_cast<std::size_t>(i)];
  }
  EXPECT_EQ(total, schema_version());
  EXPECT_EQ(query_value("SELECT count(*) FROM pgjobq.schema_migrations"),
            std::to_string(schema_version()));
}

// A database at any earlier version, holding queues and jobs, upgrades to
// the latest with its jobs intact, and then enqueues and refuses as before.
TEST_F(MigrateTest, UpgradesFromEveryEarlierVersionKeepingTheJobs) {
  const auto& all = sql::migrations();
  for (std::size_t at = 1; at < all.size(); ++at) {
    SCOPED_TRACE("from version " + std::to_string(all[at - 1].version));
    PgConnPtr conn = connect();
    test::schema_at_version(conn.get(), all[at - 1].version);
    // What a running system leaves behind: a queue with a finished and a
    // pending job, written as the enqueue and the worker of version 1 did.
    pg::exec_script(conn.get(), R"sql(
      INSERT INTO pgjobq.queues (name, last_position, admitted)
        VALUES ('old', 2, 2);
      INSERT INTO pgjobq.queue_progress (queue_id, handled_position, finished,
                                         completed)
        SELECT id, 1, 1, 1 FROM pgjobq.queues;
      INSERT INTO pgjobq.jobs (queue_id, position, state, data, result)
        SELECT q.id, v.position, v.state::pgjobq.job_state, v.data::jsonb,
               v.result::jsonb
        FROM pgjobq.queues q,
             (VALUES (1, 'completed', '"done"', '"result"'),
                     (2, 'pending', '"waiting"', NULL))
               AS v (position, state, data, result);
    )sql");
    EXPECT_EQ(migrate(conn.get()), static_cast<int>(all.size() - at));
    EXPECT_EQ(query_value("SELECT string_agg(data::text || '/' || state, ' ' "
                          "ORDER BY position) FROM pgjobq.jobs"),
              "\"done\"/completed \"waiting\"/pending");
    // The queue holds one unfinished job: a limit of 2 admits one more.
    EXPECT_TRUE(try_enqueue(conn.get(), "old", nlohmann::json(3), 2));
    EXPECT_FALSE(try_enqueue(conn.get(), "old", nlohmann::json(4), 2));
    EXPECT_TRUE(try_enqueue(conn.get(), "new", nlohmann::json(5), 2));
    EXPECT_EQ(queue_status(conn.get(), "old").at(0).pending, 2);
    // The database still refuses a name the channels could not carry.
    PGresult* r =
        PQexec(conn.get(), "INSERT INTO pgjobq.queues (name) VALUES ('a b')");
    EXPECT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
    EXPECT_STREQ(PQresultErrorField(r, PG_DIAG_SQLSTATE), "23514");
    PQclear(r);
  }
}

// Migration 004 alters pgjobq.queues, which every enqueue writes: it needs
// the table's strongest lock, which waits for every transaction holding
// the table (the application's below) and makes every later enqueue wait
// behind it. Upgrading a live system must not stall it.
constexpr int kBeforeAlteringQueues = 3;

// An enqueue as the pgjobq of kBeforeAlteringQueues did it: what runs
// while the database is upgraded, before the new binaries roll out.
void old_enqueue(PGconn* conn, const std::string& queue) {
  test::exec(conn, "SELECT * FROM pgjobq.insert_jobs('" + queue +
                       "', 4096, '[\"job\"]', 1)");
}

// An application's transaction, open with a job enqueued: it holds locks
// on pgjobq's tables until it ends.
struct OpenTransaction {
  PgConnPtr conn;
  explicit OpenTransaction(PgConnPtr c) : conn(std::move(c)) {
    test::exec(conn.get(), "BEGIN");
    old_enqueue(conn.get(), "held");
  }
  int pid() const { return PQbackendPID(conn.get()); }
};

// migrate() on a thread of its own, with a connection of its own.
struct BackgroundMigrate {
  int applied = -1;
  std::string error;
  std::thread thread;
  BackgroundMigrate(PgConnPtr conn, std::chrono::milliseconds lock_wait)
      : thread([this, c = std::move(conn), lock_wait] {
          try {
            applied = migrate(c.get(), lock_wait);
          } catch (const std::exception& e) {
            error = e.what();
          }
        }) {}
  ~BackgroundMigrate() { join(); }
  void join() {
    if (thread.joinable()) thread.join();
  }
};

TEST_F(MigrateTest, AnUpgradeBehindALongTransactionDoesNotStallEnqueues) {
  PgConnPtr conn = connect();
  test::schema_at_version(conn.get(), kBeforeAlteringQueues);
  OpenTransaction app(connect());
  BackgroundMigrate migrator(connect(), std::chrono::seconds(60));
  // Meanwhile another client enqueues, every 300 ms for 4 s. Behind a
  // migration waiting for the open transaction, each would wait for it
  // (here: give up after 8 s, so that the old behaviour fails rather than
  // hangs).
  PgConnPtr other = connect();
  test::exec(other.get(), "SET statement_timeout = '8s'");
  std::chrono::milliseconds worst{0};
  for (int i = 0; i < 13; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    old_enqueue(other.get(), "busy");
    if (::testing::Test::HasFailure()) break;
    worst =
        std::max(worst, std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - t0));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  // A try waits a second at most for its locks; enqueues behind it too.
  EXPECT_LT(worst, std::chrono::milliseconds(2500));
  EXPECT_EQ(query_value("SELECT max(version) FROM pgjobq.schema_migrations"),
            std::to_string(kBeforeAlteringQueues))
      << "the migration did not wait for the open transaction";
  test::exec(app.conn.get(), "COMMIT");
  migrator.join();
  EXPECT_EQ(migrator.error, "");
  EXPECT_EQ(migrator.applied, schema_version() - kBeforeAlteringQueues);
  EXPECT_EQ(query_value("SELECT count(*) FROM pgjobq.jobs"), "14");
}

// migrate() on `m`, which must give up on a lock (55P03, "gave up ...");
// returns its message ("" and a failure if it did not give up).
std::string give_up_message(PGconn* m, std::chrono::milliseconds lock_wait) {
  try {
    migrate(m, lock_wait);
    ADD_FAILURE() << "migrate did not give up";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "55P03") << e.what();
    EXPECT_TRUE(test::contains(e.what(), "gave up")) << e.what();
    return e.what();
  }
  return "";
}

TEST_F(MigrateTest, GivesUpOnALockHeldTooLongNamingItsHolderChangingNothing) {
  PgConnPtr conn = connect();
  test::schema_at_version(conn.get(), kBeforeAlteringQueues);
  OpenTransaction app(connect());
  PgConnPtr m = connect();
  auto t0 = std::chrono::steady_clock::now();
  std::string error = give_up_message(m.get(), std::chrono::milliseconds(1500));
  EXPECT_TRUE(test::contains(error, "nothing was changed")) << error;
  EXPECT_TRUE(test::contains(
      error, "pid " + std::to_string(app.pid()) + " (in a transaction"))
      << error;
  // It tries until its time is up, not a pause before (it gave up after
  // 0.93 s on a loaded machine, when the next pause would pass 1.5 s).
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, std::chrono::milliseconds(1500));
  EXPECT_LT(took, std::chrono::seconds(10));
  EXPECT_EQ(query_value("SELECT max(version) FROM pgjobq.schema_migrations"),
            std::to_string(kBeforeAlteringQueues));
  test::exec(app.conn.get(), "COMMIT");
  EXPECT_EQ(migrate(m.get()), schema_version() - kBeforeAlteringQueues);
}

// A library caller that means "wait for as long as it takes".
TEST_F(MigrateTest, TheLongestLockWaitKeepsTrying) {
  PgConnPtr conn = connect();
  test::schema_at_version(conn.get(), kBeforeAlteringQueues);
  OpenTransaction app(connect());
  BackgroundMigrate migrator(connect(), std::chrono::milliseconds::max());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  test::exec(app.conn.get(), "COMMIT");
  migrator.join();
  EXPECT_EQ(migrator.error, "");
  EXPECT_EQ(migrator.applied, schema_version() - kBeforeAlteringQueues);
}

// A prepared transaction holds its locks with no session to end: the
// message says what to look at.
TEST_F(MigrateTest, NamesAPreparedTransactionThatHoldsALock) {
  PgConnPtr conn = connect();
  test::schema_at_version(conn.get(), kBeforeAlteringQueues);
  std::string gid = test::unique_name("migrate-blocker");
  {
    OpenTransaction app(connect());
    test::exec(app.conn.get(), "PREPARE TRANSACTION '" + gid + "'");
  }
  PgConnPtr m = connect();
  std::string error = give_up_message(m.get(), std::chrono::milliseconds(0));
  EXPECT_TRUE(test::contains(error, "a prepared transaction")) << error;
  test::exec(conn.get(), "ROLLBACK PREPARED '" + gid + "'");
  EXPECT_EQ(migrate(m.get()), schema_version() - kBeforeAlteringQueues);
}

// Several machines migrating at once (a deploy's every instance) behind
// the same long transaction: their tries must take turns with the traffic,
// not with one another. Were each migrator to pause on its own, the others'
// tries would fill its pauses and every enqueue would wait behind one.
TEST_F(MigrateTest,
       ConcurrentMigratorsBehindALongTransactionLetEnqueuesThrough) {
  constexpr int kMigrators = 4;
  PgConnPtr conn = connect();
  test::schema_at_version(conn.get(), kBeforeAlteringQueues);
  OpenTransaction app(connect());
  std::vector<int> applied(kMigrators, -1);
  std::vector<std::string> errors(kMigrators);
  std::vector<std::thread> migrators;
  for (int i = 0; i < kMigrators; ++i) {
    migrators.emplace_back([&, i] {
      try {
        PgConnPtr m = connect();
        applied[static_cast<std::size_t>(i)] =
            migrate(m.get(), std::chrono::seconds(60));
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(i)] = e.what();
      }
    });
  }
  ASSERT_TRUE(test::wait_until([&] {
    return query_value(
               "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
               "AND classid = 1886220544 AND objid = 0 AND NOT granted") ==
           std::to_string(kMigrators - 1);
  }));
  // Back-to-back enqueues for 5 s, once the tries wait up to a second: a
  // try blocks them a second at most, then they run for three times as
  // long. Each takes milliseconds when not blocked.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  PgConnPtr other = connect();
  test::exec(other.get(), "SET statement_timeout = '8s'");
  using std::chrono::milliseconds;
  milliseconds blocked{0};
  auto start = std::chrono::steady_clock::now();
  auto until = start + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < until) {
    auto t0 = std::chrono::steady_clock::now();
    old_enqueue(other.get(), "busy");
    if (::testing::Test::HasFailure()) break;
    auto took = std::chrono::duration_cast<milliseconds>(
        std::chrono::steady_clock::now() - t0);
    if (took > milliseconds(50)) blocked += took;
  }
  auto window = std::chrono::duration_cast<milliseconds>(
      std::chrono::steady_clock::now() - start);
  EXPECT_LT(blocked.count() * 2, window.count())
      << "blocked " << blocked.count() << " ms of " << window.count();
  EXPECT_EQ(query_value("SELECT max(version) FROM pgjobq.schema_migrations"),
            std::to_string(kBeforeAlteringQueues));
  test::exec(app.conn.get(), "COMMIT");
  for (std::thread& t : migrators) t.join();
  int total = 0;
  for (int i = 0; i < kMigrators; ++i) {
    EXPECT_EQ(errors[static_cast<std::size_t>(i)], "");
    total += applied[static_cast<std::size_t>(i)];
  }
  EXPECT_EQ(total, schema_version() - kBeforeAlteringQueues);
}

// A statement_timeout shorter than a try's lock wait (the role's or the
// database's, as web applications' roles often have) must not end the
// retrying early with "canceling statement due to statement timeout": a
// try gives up on its lock before the statement would be cancelled.
TEST_F(MigrateTest, AShortStatementTimeoutStillRetriesAndGivesUpHonestly) {
  PgConnPtr conn = connect();
  test::schema_at_version(conn.get(), kBeforeAlteringQueues);
  test::exec(conn.get(), "ALTER DATABASE " + db_name() +
                             " SET statement_timeout = '500ms'");
  OpenTransaction app(connect());
  PgConnPtr m = connect();
  auto t0 = std::chrono::steady_clock::now();
  give_up_message(m.get(), std::chrono::milliseconds(6000));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::seconds(6));
  test::exec(app.conn.get(), "COMMIT");
  EXPECT_EQ(migrate(m.get()), schema_version() - kBeforeAlteringQueues);
}

// A schema restored without its data (pg_dump --schema-only), or whose
// versions were deleted: migrating it from scratch would fail on its own
// tables ("type ... already exists"). Say what is wrong; change nothing.
TEST_F(MigrateTest, ATableOfVersionsEmptiedIsRefusedSayingSoChangingNothing) {
  PgConnPtr conn = connect();
  migrate(conn.get());
  enqueue(conn.get(), "kept", nlohmann::json(1));
  test::exec(conn.get(), "DELETE FROM pgjobq.schema_migrations");
  try {
    migrate(conn.get());
    ADD_FAILURE() << "migrate did not refuse";
  } catch (const Error& e) {
    EXPECT_TRUE(test::contains(e.what(), "records no migration")) << e.what();
    EXPECT_TRUE(test::contains(e.what(), "nothing was changed")) << e.what();
  }
  EXPECT_EQ(query_value("SELECT count(*) FROM pgjobq.jobs"), "1");
  EXPECT_EQ(query_value("SELECT count(*) FROM pgjobq.schema_migrations"), "0");
}

TEST_F(MigrateTest, RefusesToRunInsideATransaction) {
  PgConnPtr conn = connect();
  PQclear(PQexec(conn.get(), "BEGIN"));
  EXPECT_THROW(migrate(conn.get()), Error);
}

}  // namespace
}  // namespace pgjobq
