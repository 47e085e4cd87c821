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
      // Concurrent migrators queue here, without the role's or database's
      // wait limits; each then sees what the one before it committed, so
      // every migration runs exactly once.
      pg::Result limits = pg::exec(db, sql::kWaitLimits);
      pg::exec(db, sql::kLiftWaitLimitsLocally);
      pg::exec(db, sql::kMigrationLock);
      for (int r = 0; r < limits.rows(); ++r) {
        pg::Param setting[] = {pg::param(limits.text(r, 0)),
                               pg::param(limits.text(r, 1))};
        pg::exec(db, sql::kSetLocal, setting);
      }
      // "schema already exists, skipping" and the like are not news.
      pg::exec_script(db, "SET LOCAL client_min_messages = warning");
      if (!pg::exec(db, sql::kMigrationsTableExists).boolean(0, 0)) {
        pg::exec_script(db, sql::kMigrationsTable.text);
      }
      pg::Result rows = pg::exec(db, sql::kAppliedMigrations);
      std::set<std::int64_t> done;
      for (int r = 0; r < rows.rows(); ++r) done.insert(rows.int64(r, 0));
      // A schema migrated by a newer pgjobq is not "up to date" for this
      // one, and nothing here can bring it back: say so, change nothing.
      if (!done.empty() && *done.rbegin() > schema_version()) {
        throw Error("migrate: the database's pgjobq schema is at version " +
                    std::to_string(*done.rbegin()) +
                    ", newer than this pgjobq knows (version " +
                    std::to_string(schema_version()) +
                    "); nothing was changed: run a pgjobq at least as new "
                    "as the one that migrated it");
      }
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
    // insufficient_privilege: creating or changing the schema needs its
    // owner (or a role that may create in the database, the first time).
    std::string hint = e.sqlstate() == "42501"
                           ? " (applying a migration needs the owner of the "
                             "pgjobq schema, or, the first time, a role that "
                             "may create schemas in the database)"
                           : "";
    throw DatabaseError("migrate: " + std::string(e.what()) + hint,
                        e.sqlstate());
  } catch (const ConnectionError& e) {
    throw ConnectionError("migrate: " + std::string(e.what()));
  }
  return applied;
}

}  // namespace pgjobq
