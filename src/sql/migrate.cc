#include "sql/migrate.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <string>
#include <thread>

#include "pg/connection.h"
#include "pgjobq/admin.h"
#include "pgjobq/errors.h"
#include "pgjobq/log.h"
#include "sql/statements.h"

namespace pgjobq {
namespace {

using std::chrono::milliseconds;

// Migrations alter the tables that every enqueue and every claim write. A
// migration waiting for such a table's lock behind a long transaction (an
// application's that enqueued a job and is still open, say) would make
// every enqueue and claim after it wait too, behind the migration, since
// PostgreSQL grants a table's locks in the order they were asked for: the
// whole system would stall for as long as that transaction lasts. So a
// try waits for each lock a moment only (lock_timeout: from 100 ms,
// doubling to 1 s) and, refused, rolls the try back, lets the traffic
// through for three times as long (half a second at least), and tries
// again, until the caller's time is up (the last pause and try are cut to
// end then, the try waiting a tenth of a second at least): while the
// transaction lasts, traffic waits about a quarter of the time at most,
// never more than a second at once. (A busy system's short transactions
// let a try through within its first tenth of a second: new ones queue
// behind the try.)
//
// The tries are savepoints of one transaction, which holds the migrators'
// lock (kMigrationLock) throughout: rolling back to the savepoint lets go
// of the table locks the try took, and the pause keeps the turn, so that
// concurrent migrators' tries do not fill it (with four, traffic waited
// nearly all the time). One transaction also keeps it all on one server
// session behind a pooler in transaction mode, where a session lock could
// be released on another and stay held.
constexpr milliseconds kFirstLockWait{100};
constexpr milliseconds kMaxLockWait{1000};
constexpr milliseconds pause_after(milliseconds lock_wait) {
  return std::max(milliseconds(500), 3 * lock_wait);
}

constexpr const char* kNoVersionRecorded =
    "migrate: pgjobq.schema_migrations records no migration, yet the pgjobq "
    "schema has tables (restored without its data, or its rows deleted?); "
    "nothing was changed: put back its rows, one per migration the schema "
    "has (version and name)";

// A try that gave up on a lock (lock_timeout, or a deadlock broken by the
// server): it changed nothing and may simply run again.
bool lock_refused(const DatabaseError& e) {
  return e.sqlstate() == "55P03" || e.sqlstate() == "40P01";
}

// One try, in the migration transaction: every migration not yet
// applied. Returns how many it applied.
int apply_missing(PGconn* db) {
  if (!pg::exec(db, sql::kMigrationsTableExists).boolean(0, 0)) {
    pg::exec_script(db, sql::kMigrationsTable.text);
  }
  pg::Result rows = pg::exec(db, sql::kAppliedMigrations);
  std::set<std::int64_t> done;
  for (int r = 0; r < rows.rows(); ++r) done.insert(rows.int64(r, 0));
  if (done.empty() && pg::exec(db, sql::kSchemaHasOtherTables).boolean(0, 0)) {
    throw Error(kNoVersionRecorded);
  }
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
  int applied = 0;
  for (const sql::Migration& m : sql::migrations()) {
    if (done.contains(m.version)) continue;
    pg::exec_script(db, m.text);
    pg::Param params[] = {pg::param(std::int64_t{m.version}),
                          pg::param(m.name)};
    pg::exec(db, sql::kRecordMigration, params);
    ++applied;
  }
  return applied;
}

// Opens the migration transaction and waits there for the migrators'
// lock. Concurrent migrators queue for it without the role's or the
// database's wait limits; each then sees what the one before it
// committed, so every migration runs exactly once. The limits are put
// back for the migrations' own statements (a DBA's lock_timeout on DDL is
// policy), except the transaction's and the idle-in-transaction ones: the
// transaction lasts through the tries and pauses by design.
void begin_turn(PGconn* db) {
  pg::exec_script(db, "BEGIN");
  pg::Result limits = pg::exec(db, sql::kWaitLimits);
  pg::exec(db, sql::kLiftWaitLimitsLocally);
  if (!pg::exec(db, sql::kTryMigrationLock).boolean(0, 0)) {
    log(LogLevel::info,
        "migrate: another migrate is running; waiting for it to finish");
    pg::exec(db, sql::kMigrationLock);
  }
  for (int r = 0; r < limits.rows(); ++r) {
    if (limits.text(r, 0) == "transaction_timeout") continue;
    pg::Param setting[] = {pg::param(limits.text(r, 0)),
                           pg::param(limits.text(r, 1))};
    pg::exec(db, sql::kSetLocal, setting);
  }
  pg::exec_script(db,
                  "SET LOCAL idle_in_transaction_session_timeout = 0;"
                  // "schema already exists, skipping" and the like are not
                  // news.
                  "SET LOCAL client_min_messages = warning");
}

// "pid 4242 (in a transaction for 75 s), a prepared transaction": who
// holds locks on pgjobq's tables now, oldest first; "" if nobody does or
// the catalogs cannot say.
std::string lock_holders(PGconn* db) {
  std::string out;
  try {
    pg::Result rows = pg::exec(db, sql::kLockHolders);
    for (int r = 0; r < rows.rows(); ++r) {
      if (!out.empty()) out += ", ";
      if (rows.is_null(r, 0)) {
        out += "a prepared transaction (pg_prepared_xacts)";
        continue;
      }
      out += "pid " + std::string(rows.text(r, 0));
      if (!rows.is_null(r, 1)) {
        out += " (in a transaction for " + std::string(rows.text(r, 1)) + " s)";
      }
    }
  } catch (const Error&) {
    return "";
  }
  return out;
}

std::string seconds_text(milliseconds d) {
  auto tenths = (d.count() + 50) / 100;
  return std::to_string(tenths / 10) +
         (tenths % 10 ? "." + std::to_string(tenths % 10) : "") + " s";
}

}  // namespace

int schema_version() noexcept {
  const auto& all = sql::migrations();
  return all.empty() ? 0 : all.back().version;
}

int migrate(PGconn* db, milliseconds lock_wait) {
  if (PQtransactionStatus(db) != PQTRANS_IDLE) {
    throw Error("migrate: must run outside a transaction");
  }
  if (lock_wait < milliseconds(0)) {
    throw InvalidInput("migrate: the time to wait for locks is negative");
  }
  auto start = std::chrono::steady_clock::now();
  milliseconds wait = kFirstLockWait;
  try {
    try {
      begin_turn(db);
      for (int tries = 1;; ++tries) {
        pg::exec_script(db, "SAVEPOINT pgjobq_try");
        try {
          pg::Param limit[] = {pg::param(std::int64_t{wait.count()})};
          pg::exec(db, sql::kMigrationLockWait, limit);
          int applied = apply_missing(db);
          pg::exec_script(db, "COMMIT");
          return applied;
        } catch (const DatabaseError& e) {
          if (!lock_refused(e)) throw;
          pg::exec_script(db, "ROLLBACK TO SAVEPOINT pgjobq_try");
          // In milliseconds: start + lock_wait in the clock's nanoseconds
          // would overflow for the longest waits (milliseconds::max()).
          auto elapsed = std::chrono::duration_cast<milliseconds>(
              std::chrono::steady_clock::now() - start);
          milliseconds left = lock_wait - elapsed;
          if (left <= milliseconds(0)) {
            pg::exec_script(db, "ROLLBACK");
            std::string holders = lock_holders(db);
            throw DatabaseError(
                "gave up after " + seconds_text(elapsed) + " and " +
                    std::to_string(tries) + (tries == 1 ? " try" : " tries") +
                    ": a transaction holds a lock on pgjobq's tables that "
                    "a migration needs, and nothing was changed" +
                    (holders.empty() ? std::string()
                                     : "; holding locks now: " + holders) +
                    " (end it, or give migrate longer to wait)",
                e.sqlstate());
          }
          if (tries == 1) {
            log(LogLevel::info,
                "migrate: a transaction holds a lock a migration needs; "
                "trying again, so that enqueues and workers do not queue "
                "behind the migration (" +
                    std::string(e.what()) + ")");
          }
          // The last pause and try fit in what is left, so that migrate
          // tries until its time is up, not a pause before it.
          milliseconds pause = std::min(pause_after(wait), left);
          std::this_thread::sleep_for(pause);
          wait = std::min(
              {wait * 2, kMaxLockWait, std::max(left - pause, kFirstLockWait)});
        }
      }
    } catch (...) {
      if (PQstatus(db) == CONNECTION_OK &&
          PQtransactionStatus(db) != PQTRANS_IDLE) {
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
}

}  // namespace pgjobq
