#pragma once

// Every SQL statement pgjobq runs, by name. Each says which invariant it
// protects. The schema is src/sql/migrations/ read in order: the tables
// are 001_init.sql's as altered by 004 (which made the queue name a domain
// and dropped the counters' CHECKs); the enqueue functions are
// insert_jobs from 005 (which replaced 003's, which replaced 002's) and
// insert_job from 004. docs/schema.sql holds all of it as it ends up, in
// one file (tests/cli/schema_test.sh keeps it current).
//
// Positions (FIFO by commit order) are taken in four places, each by
// `UPDATE pgjobq.queues SET last_position = last_position + n`, which
// holds the queue's row until the transaction ends: insert_job (migration
// 004), insert_jobs (005), kRescheduleJob and kRequeueJobs. A change to
// how positions are taken changes all four.
//
// Lock order, everywhere: job rows, then the queue's `queues` row, then its
// `queue_progress` row; a worker's commit sends its statements in that
// order too (QueueSession::flush). So pgjobq's autocommit operations cannot
// deadlock with a worker; a caller's transaction that combines several of
// them can, and the worker then runs its transaction again
// (docs/architecture.md, "Lock order").

#include "pg/connection.h"

namespace pgjobq::sql {

// ---------------------------------------------------------------- enqueue

// $1 queue name, $2 limit, $3 jsonb payload. Enqueues one job: returns its
// id, or NULL when the limit refuses. pgjobq.insert_job, in
// src/sql/migrations/004_cheaper_enqueue.sql, keeps insert_jobs'
// invariants (below) with one UPDATE and one INSERT.
inline constexpr pg::Statement kInsertJob{"pgjobq_insert_job", R"sql(
SELECT pgjobq.insert_job($1, $2::bigint, $3::jsonb)
)sql"};

// $1 queue name, $2 limit, $3 jsonb array of payloads, $4 its length.
// Returns (id, position) per job, or no rows when the limit refuses. The
// work, and the invariants it keeps (FIFO by commit order, the exact limit,
// O(1)), are in pgjobq.insert_jobs: src/sql/migrations/
// 005_refuse_oversized_batches.sql (002 wrote its first version, 003 its
// second). A function, because this statement runs on
// the caller's connection unprepared, and PL/pgSQL caches its plans.
inline constexpr pg::Statement kInsertJobs{"pgjobq_insert_jobs", R"sql(
SELECT job_id, job_position
FROM pgjobq.insert_jobs($1, $2::bigint, $3::jsonb, $4::bigint)
)sql"};

// ------------------------------------------------------------ reading jobs

// $1 job id. One job with its queue's name; times as epoch microseconds.
inline constexpr pg::Statement kSelectJob{"pgjobq_select_job", R"sql(
SELECT j.id, q.name, j.state, j.data, j.result, j.error, j.attempts,
       (extract(epoch FROM j.enqueued_at) * 1000000)::bigint,
       (extract(epoch FROM j.started_at) * 1000000)::bigint,
       (extract(epoch FROM j.finished_at) * 1000000)::bigint
FROM pgjobq.jobs j
JOIN pgjobq.queues q ON q.id = j.queue_id
WHERE j.id = $1
)sql"};

// kSelectJob for a session whose client_encoding is not UTF8: data,
// result and error as their UTF-8 bytes (bytea), which no conversion
// touches. As text, the server would convert them into the session's
// encoding: bytes that are not UTF-8, or an error for a character the
// encoding lacks.
inline constexpr pg::Statement kSelectJobAsUtf8{"pgjobq_select_job_as_utf8",
                                                R"sql(
SELECT j.id, q.name, j.state, convert_to(j.data::text, 'UTF8'),
       convert_to(j.result::text, 'UTF8'), convert_to(j.error, 'UTF8'),
       j.attempts,
       (extract(epoch FROM j.enqueued_at) * 1000000)::bigint,
       (extract(epoch FROM j.started_at) * 1000000)::bigint,
       (extract(epoch FROM j.finished_at) * 1000000)::bigint
FROM pgjobq.jobs j
JOIN pgjobq.queues q ON q.id = j.queue_id
WHERE j.id = $1
)sql"};

// $1 job id. What a waiter needs: the state and, once finished, the outcome.
inline constexpr pg::Statement kSelectOutcome{"pgjobq_select_outcome", R"sql(
SELECT state, result, error FROM pgjobq.jobs WHERE id = $1
)sql"};

// kSelectOutcome for a session whose client_encoding is not UTF8 (see
// kSelectJobAsUtf8).
inline constexpr pg::Statement kSelectOutcomeAsUtf8{
    "pgjobq_select_outcome_as_utf8", R"sql(
SELECT state, convert_to(result::text, 'UTF8'), convert_to(error, 'UTF8')
FROM pgjobq.jobs WHERE id = $1
)sql"};

// $1 job id. For a wait in the session's open transaction: its isolation
// level, and whether job $1 is pending by this very transaction's doing
// (enqueued or rescheduled in it, or in one of its savepoints, open or
// released; not committed yet), which no worker can see before it
// commits. pgjobq.written_by_this_transaction (migration 006) tells from
// the row's xmin.
inline constexpr pg::Statement kWaitInTransaction{"pgjobq_wait_in_transaction",
                                                  R"sql(
SELECT current_setting('transaction_isolation'),
       EXISTS (
         SELECT 1
         FROM pgjobq.jobs j
         WHERE j.id = $1 AND j.state = 'pending'
           AND pgjobq.written_by_this_transaction(j.xmin))
)sql"};

// ------------------------------------------------------------- operations

// $1 job id. Sends a pending, failed or cancelled job to the back of its
// queue as a fresh job. Returns one row (state before, moved) if the job
// exists.
//
// FIFO by commit order: the new position comes from the queue's row, locked
// like an enqueue. The limit: a failed or cancelled job is admitted again
// (admitted + 1); `finished` is left alone, as it must only ever grow for
// the enqueue's limit check to be safe. The job row is locked first (lock
// order).
inline constexpr pg::Statement kRescheduleJob{"pgjobq_reschedule_job", R"sql(
WITH job AS (
  SELECT id, queue_id, state FROM pgjobq.jobs WHERE id = $1 FOR UPDATE
), movable AS (
  SELECT * FROM job WHERE state IN ('pending', 'failed', 'cancelled')
), queue AS (
  UPDATE pgjobq.queues q
  SET last_position = q.last_position + 1,
      admitted = q.admitted + (m.state <> 'pending')::int
  FROM movable m
  WHERE q.id = m.queue_id
  RETURNING q.last_position
), progress AS (
  UPDATE pgjobq.queue_progress p
  SET failed = p.failed - (m.state = 'failed')::int,
      cancelled = p.cancelled - (m.state = 'cancelled')::int
  FROM movable m
  WHERE p.queue_id = m.queue_id AND m.state <> 'pending'
), moved AS (
  UPDATE pgjobq.jobs j
  SET position = queue.last_position, state = 'pending', attempts = 0,
      started_at = NULL, finished_at = NULL, result = NULL
  FROM queue
  WHERE j.id = $1
  RETURNING j.id
)
SELECT job.state, EXISTS (SELECT 1 FROM moved) FROM job
)sql"};

// $1 job id. Cancels a pending job. Returns one row (state before,
// cancelled) if the job exists. Counts it finished, exactly once: the job
// row lock makes it race safely with the worker's claim.
inline constexpr pg::Statement kCancelJob{"pgjobq_cancel_job", R"sql(
WITH job AS (
  SELECT id, queue_id, state FROM pgjobq.jobs WHERE id = $1 FOR UPDATE
), cancelled AS (
  UPDATE pgjobq.jobs j
  SET state = 'cancelled', finished_at = clock_timestamp()
  FROM job
  WHERE j.id = job.id AND job.state = 'pending'
  RETURNING j.queue_id
), progress AS (
  UPDATE pgjobq.queue_progress p
  SET finished = p.finished + 1, cancelled = p.cancelled + 1
  FROM cancelled c
  WHERE p.queue_id = c.queue_id
)
SELECT job.state, EXISTS (SELECT 1 FROM cancelled) FROM job
)sql"};

// ----------------------------------------------------------------- worker
//
// These run as prepared statements, so PostgreSQL soon plans them once,
// generically, without knowing how many jobs a call touches. Each therefore
// names the rows it changes as `id = ANY (ARRAY(...))`, which a generic plan
// turns into primary-key lookups; a join against jsonb_to_recordset or a
// CTE alone was planned as a scan of the queue or the table, and slowed as
// the backlog or the table grew. The fence `queue_id + 0 = $1` is written so
// that it is not an index condition: on an index of its own it would offer
// the planner a scan of the whole queue. They run after kSeekPlans.
//
// Only the worker holding a queue's advisory lock runs these for that
// queue. Every change to a claimed job is fenced by (state, attempts): if
// the job is no longer the attempt this worker claimed, nothing happens and
// the caller learns it from the rows returned. That is what makes
// completion recorded exactly once.

// Runs first in every transaction of the worker's claims and outcomes, and
// lasts until it ends; the handler's own SQL never runs under it. Those
// statements are prepared once per session, and PostgreSQL then picks each
// time between a fresh plan for the values at hand and a cached generic
// one, from what its statistics say:
//  - made on a tiny table (a fresh install, the first jobs of the day), the
//    generic plans were a bitmap scan of every unfinished job of the queue
//    plus a sort (the claim) and a scan of the queue's index (a
//    completion), and stayed after the backlog grew to thousands of jobs;
//  - the claim, its LIMIT a parameter, was never found cheaper generic than
//    fresh, so it was planned again at every call, which cost more than
//    running it.
// Each statement below is written to be answered by index seeks alone (the
// head by (queue_id, position), every other job by its id). Ruling out the
// other scans and always using the generic plan makes every plan a seek,
// made once per session, whatever the statistics say.
// And no statement_timeout or lock_timeout of the role's or the database's
// (kRestoreWaitLimits gave them back for the handlers): a claim or a commit
// waiting for an operator's transaction (a cancel of a head job holds its
// row and the queue's progress row) failed with 55P03 or 57014, which
// stopped the worker, its outcomes uncommitted
// (WorkerTest.AnOperatorsOpenTransactionOutwaitsTheDatabasesTimeouts).
inline constexpr pg::Statement kSeekPlans{"pgjobq_seek_plans", R"sql(
SELECT set_config('enable_seqscan', 'off', true),
       set_config('enable_bitmapscan', 'off', true),
       set_config('plan_cache_mode', 'force_generic_plan', true),
       set_config('statement_timeout', '0', true),
       set_config('lock_timeout', '0', true)
)sql"};

// $1 seconds of silence before the first keepalive probe, $2 seconds
// between probes, $3 unanswered probes, $4 milliseconds sent data may go
// unacknowledged. For the rest of the worker's session. A worker cut off
// from the server by the network (no FIN, no RST) would otherwise keep its
// session, and the queue's lock with it, until the server's TCP gave up on
// its own: over two hours, with the queue stuck and its standby waiting.
// (The worker's side of the connection gets the same settings as libpq
// keywords.) Ignored on a unix socket, which cannot be cut that way.
inline constexpr pg::Statement kSessionKeepalives{"pgjobq_session_keepalives",
                                                  R"sql(
SELECT set_config('tcp_keepalives_idle', $1, false),
       set_config('tcp_keepalives_interval', $2, false),
       set_config('tcp_keepalives_count', $3, false),
       set_config('tcp_user_timeout', $4, false)
)sql"};

// What a worker checks of a new session before it prepares its
// statements (queue_session.cc): whether the server is a hot standby,
// whether the session is read-only (default_transaction_read_only), and
// whether pgjobq.schema_migrations exists and may be read, for
// kSchemaVersion.
inline constexpr pg::Statement kSessionCheck{"pgjobq_session_check", R"sql(
SELECT pg_is_in_recovery(),
       current_setting('transaction_read_only') = 'on',
       to_regclass('pgjobq.schema_migrations') IS NOT NULL,
       coalesce(has_table_privilege(to_regclass('pgjobq.schema_migrations'),
                                    'SELECT'), false)
)sql"};

// The version of the database's pgjobq schema (null if none is recorded).
inline constexpr pg::Statement kSchemaVersion{"pgjobq_schema_version", R"sql(
SELECT max(version) FROM pgjobq.schema_migrations
)sql"};

// $1 queue name. The queue's id, if the queue exists. A plain read: it
// never waits for an enqueuing transaction, which holds the queue's row
// until it ends.
inline constexpr pg::Statement kFindQueue{"pgjobq_find_queue", R"sql(
SELECT id FROM pgjobq.queues WHERE name = $1
)sql"};

// $1 queue name. The queue's id, creating the queue if needed. The INSERT
// waits for a transaction that is creating the same queue, so it runs in
// a transaction of its own after kShortLockWait.
inline constexpr pg::Statement kCreateQueue{"pgjobq_create_queue", R"sql(
WITH created AS (
  INSERT INTO pgjobq.queues (name) VALUES ($1)
  ON CONFLICT (name) DO NOTHING
  RETURNING id
), progress AS (
  INSERT INTO pgjobq.queue_progress (queue_id) SELECT id FROM created
)
SELECT id FROM created
UNION ALL
SELECT id FROM pgjobq.queues WHERE name = $1
LIMIT 1
)sql"};

// For the rest of the transaction: give up on a row lock after a moment
// (SQLSTATE 55P03) rather than wait for another transaction to end.
inline constexpr pg::Statement kShortLockWait{"pgjobq_short_lock_wait", R"sql(
SELECT set_config('lock_timeout', '200ms', true)
)sql"};

// For this session, until kRestoreWaitLimits: no statement_timeout, no
// lock_timeout, and (PostgreSQL 17 and later) no transaction_timeout. A
// standby waits in kLockQueue for as long as the active worker lives; a
// limit set on the role or the database (common in production) would end
// that wait, and the standby with it.
inline constexpr pg::Statement kUnlimitedWaits{"pgjobq_unlimited_waits", R"sql(
SELECT set_config(name, '0', false) FROM pg_settings
WHERE name IN ('statement_timeout', 'lock_timeout', 'transaction_timeout')
)sql"};

// Back to the limits the session started with (the role's, the database's,
// the connection's options), for the worker's statements and the handlers'.
inline constexpr pg::Statement kRestoreWaitLimits{"pgjobq_restore_wait_limits",
                                                  R"sql(
SELECT set_config(name, reset_val, false) FROM pg_settings
WHERE name IN ('statement_timeout', 'lock_timeout', 'transaction_timeout')
)sql"};

// $1 queue id. Blocks until this session holds the queue's lock: one
// active worker per queue. A session lock, so it ends with the connection:
// a worker that dies, or loses its connection, lets a standby take over.
// Sent after kUnlimitedWaits.
//
// pgjobq's advisory locks use the two-key form, its first key a class of
// its own: 1886220545 (0x706D7101, "pmq" and 1) for queues, keyed by queue
// id; 1886220544 (0x706D7100) for migrations (kMigrationLock). The numbers
// must never change: workers of every version must exclude one another,
// and the tests, scripts/chaos.sh and operators (architecture.md) find the
// holder of a queue in pg_locks by them.
//
// $2 the session's mark, a random number of the worker's: once the lock is
// held, it is set in the session, which every claim then checks (see
// kClaimJobs), so that only the session holding the lock claims.
inline constexpr pg::Statement kLockQueue{"pgjobq_lock_queue", R"sql(
SELECT pg_advisory_lock(1886220545, $1::int),
       set_config('pgjobq.lock_mark', $2, false)
)sql"};

// $1 queue id. Whether this session holds the queue's lock (kLockQueue):
// asked only when a commit found outcomes stale, as pg_locks reads every
// backend's locks.
inline constexpr pg::Statement kHoldsQueueLock{"pgjobq_holds_queue_lock",
                                               R"sql(
SELECT EXISTS (
  SELECT 1 FROM pg_locks
  WHERE locktype = 'advisory' AND classid = 1886220545 AND objid = $1
    AND objsubid = 2 AND pid = pg_backend_pid() AND granted)
)sql"};

// $1 queue id. Where to resume: the worker's cursor, and the last position
// of a job left running by a worker that died (NULL if none). Jobs up to
// that position are re-run one per transaction, so a job that kills the
// process is counted alone and the jobs claimed with it are not blamed.
inline constexpr pg::Statement kResumePoint{"pgjobq_resume_point", R"sql(
SELECT p.handled_position,
       (SELECT max(j.position) FROM pgjobq.jobs j
        WHERE j.queue_id = $1 AND j.position > p.handled_position
          AND j.state = 'running')
FROM pgjobq.queue_progress p
WHERE p.queue_id = $1
)sql"};

// $1 queue id, $2 claim after this position, $3 at most this many, $4 max
// attempts, $5 the session's mark (kLockQueue). Claims the head of the
// queue: marks up to $3 jobs running and counts an attempt for each,
// durably, before any handler runs (so a crash is counted). Returns (id,
// position, attempts, data, spent, NULL, NULL, NULL) per job in FIFO
// order, then one last row (NULL, ..., seen, server_us, own_session): how
// many head jobs the statement's snapshot saw, up to $3 (fewer means the
// queue was drained), the server's clock in microseconds since 1970, onto
// which the worker maps its own (ServerClock), and whether the session
// still carries the mark set with the queue's lock.
//
// The mark: the lock is the session's, so the claim must run in the
// session that took it. Behind a connection pooler in transaction mode it
// may not (and a second worker may be handed the lock holder's session,
// where the lock, re-entrant, is granted to it too; its mark then replaces
// the first one's). A claim in a session without the worker's mark claims
// nothing, and the worker stops (QueueSession::claim).
//
// FIFO: the jobs are the first unfinished ones after the cursor, by
// position. The seek starts at the cursor, so finished jobs behind it
// (however many millions) are never walked.
// Races: the head is read from the statement's snapshot, and the UPDATE
// re-checks each row it has to wait for (a cancel or a reschedule holding
// it) on the row's newest version. A cancelled job drops out. So does one
// rescheduled meanwhile: it comes out of the wait at its new position at
// the back, which is beyond the queue's last position as the snapshot saw
// it (positions only grow), and claiming it there would run it before the
// jobs in between and move the cursor over them. Either way the claim
// returns fewer jobs than `seen`, and the caller claims again.
// Poison jobs: a job already tried $4 times is not claimed; it comes back
// with spent = true and the batch stops before it, for the caller to mark
// failed.
inline constexpr pg::Statement kClaimJobs{"pgjobq_claim_jobs", R"sql(
WITH bound AS (
  SELECT q.last_position FROM pgjobq.queues q WHERE q.id = $1
), head AS (
  SELECT id, position, attempts, state, started_at
  FROM pgjobq.jobs
  WHERE queue_id = $1 AND state IN ('pending', 'running')
    AND position > $2 AND position <= (SELECT last_position FROM bound)
    AND current_setting('pgjobq.lock_mark', true) = $5
  ORDER BY position
  LIMIT $3
), spent AS (
  -- A job a dead worker left running with no started_at was claimed
  -- ahead of the job that ran first: its last attempt may never have
  -- started, so it does not count here. (It counted, and with
  -- max_attempts 1 the jobs claimed behind a job that killed the worker
  -- were failed without ever running.)
  SELECT min(position) AS position FROM head
  WHERE attempts - (state = 'running' AND started_at IS NULL)::int >= $4
), first AS (
  SELECT min(position) AS position FROM head
), claimed AS (
  UPDATE pgjobq.jobs j
  SET state = 'running', attempts = j.attempts + 1,
      -- Only the first job starts now; the ones claimed ahead of their
      -- start get it from their outcome (kFinishJobs, kReleaseJobs).
      started_at = CASE WHEN j.position = (SELECT position FROM first)
                        THEN clock_timestamp() END,
      -- A first attempt (a new job, or one an operator rescheduled, which
      -- starts its life again at 0) carries no error of an earlier life.
      error = CASE WHEN j.attempts = 0 THEN NULL ELSE j.error END
  WHERE j.id = ANY (ARRAY(
    SELECT h.id FROM head h
    WHERE h.position < coalesce((SELECT position FROM spent),
                                9223372036854775807)))
    -- The re-check. A fence, not an index condition (as queue_id + 0).
    AND j.state IN ('pending', 'running')
    AND j.position + 0 <= (SELECT last_position FROM bound)
  RETURNING j.id, j.position, j.attempts, j.data
)
SELECT id, position, attempts, data, false AS spent, NULL::bigint AS seen,
       NULL::bigint AS server_us, NULL::boolean AS own_session
FROM claimed
UNION ALL
SELECT h.id, h.position, h.attempts, NULL, true, NULL, NULL, NULL
FROM head h JOIN spent s ON h.position = s.position
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, (SELECT count(*) FROM head),
       (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
       coalesce(current_setting('pgjobq.lock_mark', true) = $5, false)
ORDER BY 2 NULLS LAST
)sql"};

// $1 queue id, $2 jsonb array of {id, attempt, state, result, error,
// started_us, finished_us} with state "completed" or "failed" and the
// times on the server's clock (null: the claim's start, and now). Records each
// outcome once and moves the cursor and counters with it, in the same
// statement, so they agree. Returns the ids recorded; a job missing from them
// was no longer this worker's attempt.
inline constexpr pg::Statement kFinishJobs{"pgjobq_finish_jobs", R"sql(
WITH done AS (
  UPDATE pgjobq.jobs j
  SET state = c.state::pgjobq.job_state,
      -- jsonb_to_recordset reads a JSON null as SQL NULL; a completed job's
      -- null result is stored as JSON null, so it reads back as a result.
      result = CASE WHEN c.state = 'completed'
                    THEN coalesce(c.result, 'null'::jsonb) END,
      -- A job given up on keeps the story: why, and its last error.
      error = CASE
        WHEN c.state = 'failed' THEN c.error || coalesce(
          '; last error: ' || j.error,
          '; no error was recorded: the worker died or lost its connection '
          'while running it')
        ELSE coalesce(c.error, j.error) END,
      -- When the handler ran, on the server's clock (the worker maps its
      -- own onto it at each claim): a job claimed ahead, in a batch, starts
      -- only after the one before it finished, and says so.
      started_at = coalesce(timestamptz 'epoch' +
                              c.started_us * interval '1 microsecond',
                            j.started_at),
      finished_at = coalesce(timestamptz 'epoch' +
                               c.finished_us * interval '1 microsecond',
                             clock_timestamp())
  FROM jsonb_to_recordset($2::jsonb)
       AS c (id bigint, attempt int, state text, result jsonb, error text,
             started_us bigint, finished_us bigint)
  WHERE j.id = c.id AND j.queue_id + 0 = $1 AND j.attempts = c.attempt
    AND j.state IN ('running', 'pending')
    AND j.id = ANY (ARRAY(SELECT (e ->> 'id')::bigint
                          FROM jsonb_array_elements($2::jsonb) e))
  RETURNING j.id, j.position, j.state
), progress AS (
  UPDATE pgjobq.queue_progress p
  SET handled_position =
        greatest(p.handled_position, (SELECT max(position) FROM done)),
      finished = p.finished + (SELECT count(*) FROM done),
      completed = p.completed +
        (SELECT count(*) FROM done WHERE state = 'completed'),
      failed = p.failed + (SELECT count(*) FROM done WHERE state = 'failed')
  WHERE p.queue_id = $1
)
SELECT id FROM done
)sql"};

// $1 queue id, $2 jsonb array of {id, attempt}. Sends running jobs to the
// back of their queue, in their order, as fresh jobs (attempts reset).
// FIFO by commit order: positions come from the queue's row, locked like an
// enqueue. The cursor moves past the old positions. Returns the ids moved.
inline constexpr pg::Statement kRequeueJobs{"pgjobq_requeue_jobs", R"sql(
WITH moving AS (
  SELECT j.id, j.position AS old_position,
         row_number() OVER (ORDER BY j.position) AS n
  FROM pgjobq.jobs j
  JOIN jsonb_to_recordset($2::jsonb) AS c (id bigint, attempt int)
    ON c.id = j.id
  WHERE j.queue_id + 0 = $1 AND j.state = 'running'
    AND j.attempts = c.attempt
    AND j.id = ANY (ARRAY(SELECT (e ->> 'id')::bigint
                          FROM jsonb_array_elements($2::jsonb) e))
), queue AS (
  UPDATE pgjobq.queues q
  SET last_position = q.last_position + (SELECT count(*) FROM moving)
  WHERE q.id = $1 AND EXISTS (SELECT 1 FROM moving)
  RETURNING q.last_position
), moved AS (
  UPDATE pgjobq.jobs j
  SET position = queue.last_position - (SELECT count(*) FROM moving) + m.n,
      state = 'pending', attempts = 0, started_at = NULL
  FROM moving m, queue
  WHERE j.id = m.id AND j.id = ANY (ARRAY(SELECT id FROM moving))
  RETURNING j.id, m.old_position
), progress AS (
  UPDATE pgjobq.queue_progress p
  SET handled_position =
        greatest(p.handled_position, (SELECT max(old_position) FROM moved))
  WHERE p.queue_id = $1
)
SELECT id FROM moved
)sql"};

// $1 queue id, $2 jsonb array of {id, attempt, error, uncount, started_us}
// (when the failed handler started, on the server's clock). Puts running
// jobs back to pending where they stand (FIFO: they stay at the head).
// With an error: the handler failed; the attempt stays counted and the
// error is recorded. With uncount: the job was claimed but never started
// (the rest of a batch), so its attempt is taken back.
inline constexpr pg::Statement kReleaseJobs{"pgjobq_release_jobs", R"sql(
UPDATE pgjobq.jobs j
SET state = 'pending',
    error = coalesce(c.error, j.error),
    attempts = j.attempts - c.uncount::int,
    started_at = CASE WHEN c.uncount AND j.attempts = 1 THEN NULL
                      ELSE coalesce(timestamptz 'epoch' +
                                      c.started_us * interval '1 microsecond',
                                    j.started_at) END
FROM jsonb_to_recordset($2::jsonb)
     AS c (id bigint, attempt int, error text, uncount boolean,
           started_us bigint)
WHERE j.id = c.id AND j.queue_id + 0 = $1 AND j.state = 'running'
  AND j.attempts = c.attempt
  AND j.id = ANY (ARRAY(SELECT (e ->> 'id')::bigint
                        FROM jsonb_array_elements($2::jsonb) e))
RETURNING j.id
)sql"};

// $1 job id, $2 attempt, $3 error. Notes an error on a running job without
// changing its state, for a handler that overran its timeout and will not
// stop (the process exits and a restart runs the job again), and for a job
// whose run a lost session cut short (the next session notes why, before
// the job runs again or is given up on). Completion recorded once: fenced
// by (state, attempts), it changes nothing of a job finished meanwhile (a
// commit that did land) or claimed again (by a standby).
inline constexpr pg::Statement kNoteError{"pgjobq_note_error", R"sql(
UPDATE pgjobq.jobs SET error = $3
WHERE id = $1 AND attempts = $2 AND state = 'running'
)sql"};

// $1 job id, $2 position. Whether the job still waits there, pending: asked
// while the worker holds off running it again (the retry policy's wait,
// a job that keeps rescheduling itself), so that an operator who cancels
// it or sends it to the back meanwhile does not wait that out too.
inline constexpr pg::Statement kJobStillWaiting{"pgjobq_job_still_waiting",
                                                R"sql(
SELECT EXISTS (
  SELECT 1 FROM pgjobq.jobs
  WHERE id = $1 AND position = $2 AND state = 'pending')
)sql"};

inline constexpr pg::Statement kBegin{"pgjobq_begin", "BEGIN"};

// A transactional handler's transaction: kMarkJobTransaction, right after
// its BEGIN, sets a transaction-local setting that only that transaction
// has; kInJobTransaction, after the handler, says whether the open
// transaction is still that one. A handler that ran COMMIT or ROLLBACK and
// then BEGIN leaves a transaction open, but not the worker's: its work
// before would not commit (or roll back) with the job. Its second column
// says whether the session's lock mark (kLockQueue) is gone too: the
// handler ran RESET ALL, which empties both (a ROLLBACK gives them back).
inline constexpr pg::Statement kMarkJobTransaction{
    "pgjobq_mark_job_transaction", R"sql(
SELECT set_config('pgjobq.job_transaction', 'on', true)
)sql"};
inline constexpr pg::Statement kInJobTransaction{"pgjobq_in_job_transaction",
                                                 R"sql(
SELECT coalesce(current_setting('pgjobq.job_transaction', true), '') = 'on',
       coalesce(current_setting('pgjobq.lock_mark', true), '') = ''
)sql"};
inline constexpr pg::Statement kCommit{"pgjobq_commit", "COMMIT"};
inline constexpr pg::Statement kRollback{"pgjobq_rollback", "ROLLBACK"};

// ------------------------------------------------------------------ admin

// $1 queue name or NULL for all. Counts come from the counters; only the
// unfinished jobs (after the cursor) are read, never the finished ones.
inline constexpr pg::Statement kQueueStatus{"pgjobq_queue_status", R"sql(
WITH workers AS (
  -- The sessions holding each queue's lock (kLockQueue) and waiting for
  -- it, in this database: pg_locks read once, not once a queue.
  SELECT l.objid,
         count(*) FILTER (WHERE l.granted) AS active,
         count(*) FILTER (WHERE NOT l.granted) AS standby
  FROM pg_catalog.pg_locks l
  WHERE l.locktype = 'advisory' AND l.classid = 1886220545
    AND l.objsubid = 2
    AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                      WHERE d.datname = pg_catalog.current_database())
  GROUP BY l.objid
)
SELECT q.name, q.admitted - p.finished, p.completed, p.failed, p.cancelled,
       u.running,
       (extract(epoch FROM clock_timestamp() - u.oldest) * 1000000)::bigint,
       coalesce(w.active, 0), coalesce(w.standby, 0)
FROM pgjobq.queues q
JOIN pgjobq.queue_progress p ON p.queue_id = q.id
LEFT JOIN workers w ON w.objid = q.id::oid
CROSS JOIN LATERAL (
  SELECT count(*) FILTER (WHERE j.state = 'running') AS running,
         min(j.enqueued_at) FILTER (WHERE j.state = 'pending') AS oldest
  FROM pgjobq.jobs j
  WHERE j.queue_id = q.id AND j.position > p.handled_position
) u
WHERE $1::text IS NULL OR q.name = $1
ORDER BY q.name
)sql"};

// $1 older-than in microseconds. The cut-off, fixed once per prune, in
// microseconds since 1970: a timestamptz as text would go through the
// session's DateStyle and TimeZone, and a zone abbreviation such as CST
// (Asia/Shanghai, +08) reads back as another zone's (US Central, -06).
// Subtracted as microseconds, and no earlier than PostgreSQL's earliest
// timestamp (4714 BC), so that kPruneBatch can turn it back into one: an
// age longer than that (microseconds::max()) deletes nothing. As an
// interval it was "interval out of range", and beyond 4714 BC "timestamp
// out of range" (JobsTest.PruneOlderThanAnyTimeDeletesNothingRatherThanFail).
inline constexpr pg::Statement kPruneCutoff{"pgjobq_prune_cutoff", R"sql(
SELECT greatest(
  (extract(epoch FROM clock_timestamp()) * 1000000)::bigint - $1::bigint,
  (extract(epoch FROM timestamptz '4714-11-24 00:00:00+00 BC') *
   1000000)::bigint)
)sql"};

// $1 id to start after, $2 cut-off (kPruneCutoff), $3 batch size. Deletes the
// finished jobs among the next $3 ids and keeps the per-state counters true.
// Returns (last id examined, rows deleted); last id is NULL when the table is
// exhausted. Walks the primary key once over the whole prune, never rescanning.
//
// The jobs to delete are locked first, in the order of their ids, whatever
// the plan: two prunes at once (two operators, two cron jobs) used to lock
// them in the order each one's plan read them (the heap's, or the ids',
// which changes with the statistics and the batch size), and deadlocked
// (OperatorStormTest.ConcurrentPrunesDoNotDeadlock). The lock's re-check
// drops a job rescheduled meanwhile; the DELETE only takes rows locked.
// The progress rows of the queues it deleted from are locked the same
// way, in queue order (`locked`), before the UPDATE changes any: the
// condition on `locked` does not depend on the row, so the plan checks it
// once, first (a One-Time Filter), and two prunes that deleted from the
// same queues cannot take their progress rows in crossed orders.
inline constexpr pg::Statement kPruneBatch{"pgjobq_prune_batch", R"sql(
WITH batch AS (
  SELECT id FROM pgjobq.jobs WHERE id > $1 ORDER BY id LIMIT $3
), doomed AS (
  SELECT j.id FROM pgjobq.jobs j
  WHERE j.id = ANY (ARRAY(SELECT id FROM batch))
    AND j.state IN ('completed', 'failed', 'cancelled')
    AND j.finished_at <
        timestamptz 'epoch' + $2::bigint * interval '1 microsecond'
  ORDER BY j.id
  FOR UPDATE OF j
), deleted AS (
  DELETE FROM pgjobq.jobs j
  WHERE j.id = ANY (ARRAY(SELECT id FROM doomed))
    AND j.state IN ('completed', 'failed', 'cancelled')
    AND j.finished_at <
        timestamptz 'epoch' + $2::bigint * interval '1 microsecond'
  RETURNING j.queue_id, j.state
), counts AS (
  SELECT queue_id,
         count(*) FILTER (WHERE state = 'completed') AS completed,
         count(*) FILTER (WHERE state = 'failed') AS failed,
         count(*) FILTER (WHERE state = 'cancelled') AS cancelled
  FROM deleted GROUP BY queue_id
), locked AS (
  SELECT p.queue_id FROM pgjobq.queue_progress p
  WHERE p.queue_id IN (SELECT queue_id FROM counts)
  ORDER BY p.queue_id
  FOR UPDATE OF p
), progress AS (
  UPDATE pgjobq.queue_progress p
  SET completed = p.completed - c.completed,
      failed = p.failed - c.failed,
      cancelled = p.cancelled - c.cancelled
  FROM counts c
  WHERE p.queue_id = c.queue_id
    AND (SELECT count(*) FROM locked) >= 0
)
SELECT (SELECT max(id) FROM batch), (SELECT count(*) FROM deleted)
)sql"};

// ------------------------------------------------------------- migrations

// Serializes concurrent migrators for the length of their transaction
// (the lock class: see kLockQueue).
inline constexpr pg::Statement kMigrationLock{"pgjobq_migration_lock", R"sql(
SELECT pg_advisory_xact_lock(1886220544, 0)
)sql"};
// The same, if no other migrator holds it: whether it was taken.
inline constexpr pg::Statement kTryMigrationLock{"pgjobq_try_migration_lock",
                                                 R"sql(
SELECT pg_try_advisory_xact_lock(1886220544, 0)
)sql"};

// The wait limits in force (statement_timeout, lock_timeout and, from
// PostgreSQL 17, transaction_timeout), by name; kLiftWaitLimitsLocally
// then lifts them for the rest of the transaction: a migrator waits in
// kMigrationLock for as long as the one ahead of it takes ("safe to run
// concurrently"), whatever limits the role or the database set. They are
// put back with kSetLocal once the lock is held, so that the migrations'
// own statements keep them (a DBA's lock_timeout on DDL is policy).
inline constexpr pg::Statement kWaitLimits{"pgjobq_wait_limits", R"sql(
SELECT name, current_setting(name) FROM pg_settings
WHERE name IN ('statement_timeout', 'lock_timeout', 'transaction_timeout')
)sql"};
inline constexpr pg::Statement kLiftWaitLimitsLocally{
    "pgjobq_lift_wait_limits_locally", R"sql(
SELECT set_config(name, '0', true) FROM pg_settings
WHERE name IN ('statement_timeout', 'lock_timeout', 'transaction_timeout')
)sql"};

// $1 setting, $2 value: for the rest of the transaction.
inline constexpr pg::Statement kSetLocal{"pgjobq_set_local", R"sql(
SELECT set_config($1, $2, true)
)sql"};

inline constexpr pg::Statement kMigrationsTable{"pgjobq_migrations_table",
                                                R"sql(
CREATE SCHEMA IF NOT EXISTS pgjobq;
CREATE TABLE IF NOT EXISTS pgjobq.schema_migrations (
  version integer PRIMARY KEY,
  name text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);
)sql"};

// Whether pgjobq.schema_migrations exists, read from the catalogs, which
// every role may read: kMigrationsTable runs only when it does not, since
// PostgreSQL checks CREATE SCHEMA IF NOT EXISTS for the right to create in
// the database before it looks whether the schema exists (a role that may
// not create anything could not even learn that nothing is to be done).
inline constexpr pg::Statement kMigrationsTableExists{
    "pgjobq_migrations_table_exists", R"sql(
SELECT EXISTS (
  SELECT 1 FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = 'pgjobq' AND c.relname = 'schema_migrations')
)sql"};

// Whether the pgjobq schema holds tables besides schema_migrations, from
// the catalogs: with no migration recorded, a schema restored without its
// data (pg_dump --schema-only) or whose versions were deleted, which
// migrating from scratch would fail on ("type ... already exists").
inline constexpr pg::Statement kSchemaHasOtherTables{
    "pgjobq_schema_has_other_tables", R"sql(
SELECT EXISTS (
  SELECT 1 FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = 'pgjobq' AND c.relkind = 'r'
    AND c.relname <> 'schema_migrations')
)sql"};

inline constexpr pg::Statement kAppliedMigrations{"pgjobq_applied_migrations",
                                                  R"sql(
SELECT version FROM pgjobq.schema_migrations ORDER BY version
)sql"};

// $1 milliseconds: the longest a migration's statement waits for a lock
// in this try, for the rest of the transaction; a shorter lock_timeout of
// the role's or the database's stays (see migrate.cc). So does a
// statement_timeout, and the lock wait stays well under it: the statement
// cancelled (57014) first would say nothing about a lock, and end the
// retrying.
inline constexpr pg::Statement kMigrationLockWait{"pgjobq_migration_lock_wait",
                                                  R"sql(
SELECT set_config('lock_timeout',
                  least(NULLIF(l.setting::bigint, 0),
                        CASE WHEN s.setting::bigint > 0
                             THEN greatest(s.setting::bigint / 2, 1) END,
                        $1::bigint)::text, true)
FROM pg_settings l, pg_settings s
WHERE l.name = 'lock_timeout' AND s.name = 'statement_timeout'
)sql"};

// The sessions holding locks on pgjobq's tables, oldest transaction first
// (a few): what a migration that gave up waited for. A prepared
// transaction's locks have no session (pid null); they come first, as
// nothing but an operator ends them. The transaction's age
// is null for another role's session without pg_read_all_stats.
inline constexpr pg::Statement kLockHolders{"pgjobq_lock_holders", R"sql(
SELECT l.pid, extract(epoch FROM now() - min(a.xact_start))::bigint
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_class c ON c.oid = l.relation
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE n.nspname = 'pgjobq' AND l.granted
  AND l.pid IS DISTINCT FROM pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_catalog.pg_database
                    WHERE datname = current_database())
GROUP BY l.pid
ORDER BY l.pid IS NOT NULL, min(a.xact_start) NULLS LAST
LIMIT 3
)sql"};

// $1 version, $2 name.
inline constexpr pg::Statement kRecordMigration{"pgjobq_record_migration",
                                                R"sql(
INSERT INTO pgjobq.schema_migrations (version, name) VALUES ($1, $2)
)sql"};

}  // namespace pgjobq::sql
