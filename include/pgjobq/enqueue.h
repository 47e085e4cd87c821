#pragma once

#include <libpq-fe.h>

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pgjobq/connection.h"
#include "pgjobq/job.h"

namespace pgjobq {

// Back-pressure default: a queue holding this many unfinished (pending or
// running) jobs refuses more.
inline constexpr std::int64_t kDefaultLimit = 4096;

// Payloads larger than this (serialized JSON, bytes) are refused.
inline constexpr std::size_t kDefaultMaxPayloadBytes = 1024 * 1024;

// Payloads nested deeper than this are refused.
inline constexpr int kMaxJsonDepth = 256;

struct EnqueueOptions {
  // Refuse when the queue already holds `limit` unfinished jobs (counting
  // the ones being added). Must be positive.
  std::int64_t limit = kDefaultLimit;
  // Refuse a payload whose serialized JSON is larger than this.
  std::size_t max_payload_bytes = kDefaultMaxPayloadBytes;
};

// Throws InvalidInput unless `queue` is 1-128 characters of letters, digits
// and `_ - . : /`. Touches no server. Thread-safe.
void validate_queue_name(std::string_view queue);

// Enqueues `data` on `queue` in whatever transaction is open on `db` (it
// never begins, commits or rolls back; outside a transaction the job commits
// at once). The job's place in the queue follows the order in which enqueuing
// transactions commit; enqueuers of one queue wait for each other's commit.
//
// Returns the job's id, or nullopt when the queue already holds `limit`
// unfinished jobs; then nothing was written and the transaction is usable.
// Throws InvalidInput (bad name, malformed, too deep or too large payload;
// nothing sent) or DatabaseError / ConnectionError (the caller's transaction
// is then aborted, as with any failed statement). In a REPEATABLE READ or
// SERIALIZABLE transaction, an enqueuer of the same queue that committed
// after the transaction's snapshot makes it a DatabaseError with SQLSTATE
// 40001 (retry the transaction), and `finished` jobs are counted as of the
// snapshot, so the limit may refuse where a fresh transaction would not.
// Outside a transaction such a failure (under default_transaction_isolation)
// is retried and never seen. Thread-safe for distinct connections.
std::optional<JobId> try_enqueue(PGconn* db, std::string_view queue,
                                 const nlohmann::json& data,
                                 std::int64_t limit = kDefaultLimit);
std::optional<JobId> try_enqueue(PGconn* db, std::string_view queue,
                                 const nlohmann::json& data,
                                 const EnqueueOptions& options);

// As try_enqueue with no limit: always enqueues. Throws as try_enqueue
// does. Thread-safe for distinct connections.
JobId enqueue(PGconn* db, std::string_view queue, const nlohmann::json& data);

// Enqueues every element of `jobs`, in order, in one round trip: all are
// accepted or, if they would take the queue past `limit`, none (nullopt).
// Returns the ids in the order of `jobs`. An empty `jobs` returns an empty
// vector without touching the server. A refusal writes nothing and leaves
// the transaction usable. Throws as try_enqueue does (InvalidInput if any
// element is bad, or the batch is over 1 GiB of JSON, more than PostgreSQL
// takes in one message; nothing sent). Thread-safe for distinct
// connections.
std::optional<std::vector<JobId>> enqueue_many(
    PGconn* db, std::string_view queue, const std::vector<nlohmann::json>& jobs,
    const EnqueueOptions& options = {});

// The Redis channel that wakes `queue`'s worker: "pgjobq/<queue>-notify".
// Does not check the name. Thread-safe.
std::string queue_channel(std::string_view queue);

// Wakes `queue`'s worker. Call after the enqueuing transaction commits.
// Returns false if Redis could not be reached (the job is safe in PostgreSQL
// and the worker's poll will find it); `error` then says why. Never throws
// for a Redis failure; throws InvalidInput for an invalid queue name.
bool notify(RedisLink& redis, std::string_view queue,
            std::string* error = nullptr);

}  // namespace pgjobq
