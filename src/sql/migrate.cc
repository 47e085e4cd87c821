#include "sql/migrate.h"

#include <set>
#include <string>

#include "pg/connection.h"
#include "pgjobq/admin.h"
#include "pgjobq/errors.h"
#include "sql/statements.h"

namespace pgjobq {

int schema_version() noexcept {
  const auto& all = sql::migrations();
  return all.empty() ? 0 : all.back().version;
}

int migrate(PGconn* db) {
  if (PQtransactionStatus(db) != PQTRANS_IDLE) {
    throw Error("migrate: must run outside a transaction");
  }
  int applied = 0;
  try {
    pg::exec_script(db, "BEGIN");
    try {
      // Concurrent migrators queue here; each then sees what the one before
      // it committed, so every migration runs exactly once.
      pg::exec(db, sql::kMigrationLock);
      // "schema already exists, skipping" and the like are not news.
      pg::exec_script(db, "SET LOCAL client_min_messages = warning");
      pg::exec_script(db, sql::kMigrationsTable.text);
      pg::Result rows = pg::exec(db, sql::kAppliedMigrations);
      std::set<std::int64_t> done;
      for (int r = 0; r < rows.rows(); ++r) done.insert(rows.int64(r, 0));
      for (const sql::Migration& m : sql::migrations()) {
        if (done.contains(m.version)) continue;
        pg::exec_script(db, m.text);
        pg::Param params[] = {pg::param(std::int64_t{m.version}),
                              pg::param(m.name)};
        pg::exec(db, sql::kRecordMigration, params);
        ++applied;
      }
      pg::exec_script(db, "COMMIT");
    } catch (...) {
      if (PQstatus(db) == CONNECTION_OK) {
        PQclear(PQexec(db, "ROLLBACK"));
      }
      throw;
    }
  } catch (const DatabaseError& e) {
    throw DatabaseError("migrate: " + std::string(e.what()), e.sqlstate());
  } catch (const ConnectionError& e) {
    throw ConnectionError("migrate: " + std::string(e.what()));
  }
  return applied;
}

}  // namespace pgjobq
