#pragma once

// The bare-PostgreSQL references each pgjobq figure is divided by. They
// insert the same payload into bench.jobs (shaped like pgjobq.jobs) over the
// same kind of connection (the URL given, TCP loopback in scripts/bench.sh),
// as unnamed statements like pgjobq's enqueue, with no queue bookkeeping:
// what the server can do, not what a queue can.

#include <libpq-fe.h>

#include <string>

namespace pgjobq::bench {

// One-row `INSERT ... RETURNING id` per transaction (autocommit) on one
// connection for `seconds`. Returns commits per second.
double bare_commit_rate(const std::string& db_url, double seconds);

// The same on `connections` connections at once, each on its own thread.
// Returns the aggregate commits per second.
double bare_parallel_commit_rate(const std::string& db_url, int connections,
                                 double seconds);

// `rows`-row `INSERT ... SELECT ... RETURNING id` per transaction, the rows
// passed as one JSON array parameter built from the payloads each time (as
// enqueue_many does). Returns rows per second.
double bare_bulk_insert_rate(const std::string& db_url, int rows,
                             double seconds);

// One one-row INSERT commit on `db`. Returns its latency in milliseconds.
double bare_commit_latency_ms(PGconn* db);

}  // namespace pgjobq::bench
