#include <thread>
#include <vector>

#include "pgjobq/admin.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
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

TEST_F(MigrateTest, RefusesToRunInsideATransaction) {
  PgConnPtr conn = connect();
  PQclear(PQexec(conn.get(), "BEGIN"));
  EXPECT_THROW(migrate(conn.get()), Error);
}

}  // namespace
}  // namespace pgjobq
