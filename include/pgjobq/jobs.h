#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>

#include "pgjobq/connection.h"
#include "pgjobq/job.h"

namespace pgjobq {

// Reads one job. Returns nullopt if there is no such job. Throws
// DatabaseError or ConnectionError. Thread-safe for distinct connections.
std::optional<Job> query_job(PGconn* db, JobId id);

// The Redis channel announcing `id`'s end: "pgjobq/job-<id>". The message is
// the result JSON (`null` for a failed or cancelled job); it is only a hint:
// the stored job is the truth.
std::string job_channel(JobId id);

// Waits until job `id` finishes and returns its result as stored in
// PostgreSQL. Subscribes to the job's channel first, then reads the job, then
// waits, so a job that finishes in between is still seen. A Redis message
// only wakes the wait; the value returned is always read from PostgreSQL,
// so a forged message changes nothing. If Redis is unreachable it polls
// PostgreSQL with a bounded backoff instead. The subscription's connection
// stays open in `redis` for the next wait.
//
// Run it outside a transaction, or in a READ COMMITTED one: each check
// needs to see newly committed jobs (in a REPEATABLE READ or SERIALIZABLE
// transaction it throws InvalidInput; so it does for a job this very
// transaction enqueued or rescheduled and has not committed, which no worker
// can see before it commits). A `timeout` over a century, such as
// milliseconds::max(), waits for ever.
//
// Throws Timeout when `timeout` passes first, JobFailed if the job ended
// failed or cancelled, NoSuchJob for an unknown id, DatabaseError or
// ConnectionError. Not thread-safe for one `redis` link.
nlohmann::json wait_for_result(PGconn* db, RedisLink& redis, JobId id,
                               std::chrono::milliseconds timeout);

// Sends job `id` to the back of its queue as a fresh job (attempts reset to
// 0). Applies to pending jobs, and to failed or cancelled ones, which become
// pending again. Runs in the caller's transaction if one is open; outside
// one, a serialization failure is retried (as for try_enqueue). Throws
// NoSuchJob, WrongState (running or completed), DatabaseError,
// ConnectionError. Wake the worker with notify() after commit. Thread-safe
// for distinct connections.
void reschedule(PGconn* db, JobId id);

// Cancels pending job `id`: it will never run. Runs in the caller's
// transaction if one is open. Throws NoSuchJob, WrongState (not pending),
// DatabaseError, ConnectionError. Thread-safe for distinct connections.
void cancel(PGconn* db, JobId id);

}  // namespace pgjobq
