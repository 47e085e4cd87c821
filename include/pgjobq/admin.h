#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pgjobq/job.h"

namespace pgjobq {

// Creates or upgrades pgjobq's schema (the `pgjobq` schema in the connected
// database). Safe to run again and from several processes at once: they
// take turns on an advisory lock, waiting for it without the role's or
// database's statement and lock timeouts (the migrations' own statements
// keep them). Must be called outside a transaction.
// Never stalls a live system behind a long transaction: a migration that
// needs a lock on a table some transaction holds (an application's, open
// with an enqueued job) waits at most 1 s for it, during which enqueues
// and claims wait behind it, then rolls back, lets them through for three
// times as long, and tries again, for up to `lock_wait` in all (src/sql/
// migrate.cc says how long each wait is); then it throws DatabaseError
// (55P03, or 40P01 when the last try ended in a deadlock), changing
// nothing, naming the sessions that hold the locks.
// Returns how many migrations were applied (0 when up to date; finding
// that needs only read access to pgjobq.schema_migrations, no right to
// create). Throws Error, changing nothing, for a schema a newer pgjobq
// migrated (a version beyond schema_version()); DatabaseError,
// ConnectionError.
int migrate(PGconn* db,
            std::chrono::milliseconds lock_wait = std::chrono::seconds(60));

// The schema version this library needs.
int schema_version() noexcept;

// One queue's counts, from counters kept by enqueue and the worker.
struct QueueStatus {
  std::string queue;
  std::int64_t pending = 0;
  std::int64_t running = 0;
  // Finished jobs still stored (pruning lowers these).
  std::int64_t completed = 0;
  std::int64_t failed = 0;
  std::int64_t cancelled = 0;
  // Age of the oldest pending job, if any is pending: from its enqueue, so
  // a rescheduled job keeps its age (it has waited that long unfinished).
  std::optional<std::chrono::microseconds> oldest_pending_age;
  // Workers serving the queue right now (holding its lock: 0 or 1), and
  // standbys waiting to take it over. 0 and 0: no worker runs its jobs.
  std::int64_t workers = 0;
  std::int64_t standbys = 0;
};

// Status of every queue (sorted by name), or of `queue` alone. The cost does
// not grow with the number of finished jobs. Throws InvalidInput for an
// invalid name, DatabaseError, ConnectionError.
std::vector<QueueStatus> queue_status(PGconn* db,
                                      std::optional<std::string_view> queue);

// Deletes finished (completed, failed, cancelled) jobs that finished more
// than `older_than` ago, in batches of `batch_size`, each its own
// transaction, so it never holds locks for long. `progress`, if given, is
// called after each batch with the rows deleted so far. Must be called
// outside a transaction (else it throws Error, changing nothing). An age
// longer than any time PostgreSQL can store (microseconds::max()) deletes
// nothing. Returns how many jobs were deleted. Throws InvalidInput for a
// negative age or a batch size below 1, DatabaseError, ConnectionError.
std::int64_t prune(
    PGconn* db, std::chrono::microseconds older_than,
    const std::function<void(std::int64_t deleted)>& progress = {},
    int batch_size = 10000);

}  // namespace pgjobq
