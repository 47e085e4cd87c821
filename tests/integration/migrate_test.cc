#include "sql/migrate.h"

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
    PQclear(PQexec(conn.get(), "SET client_min_messages = warning"));
    PQclear(PQexec(conn.get(), "DROP SCHEMA IF EXISTS pgjobq CASCADE"));
    pg::exec_script(conn.get(), sql::kMigrationsTable.text);
    for (std::size_t i = 0; i < at; ++i) {
      pg::exec_script(conn.get(), all[i].text);
      pg::Param params[] = {pg::param(std::int64_t{all[i].version}),
                            pg::param(all[i].name)};
      pg::exec(conn.get(), sql::kRecordMigration, params);
    }
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

TEST_F(MigrateTest, RefusesToRunInsideATransaction) {
  PgConnPtr conn = connect();
  PQclear(PQexec(conn.get(), "BEGIN"));
  EXPECT_THROW(migrate(conn.get()), Error);
}

}  // namespace
}  // namespace pgjobq
