-- Least-privilege PostgreSQL roles for pgjobq (docs/security.md explains
-- them; SecurityTest.* in tests/chaos/security_test.cc runs this very file
-- and checks what each role can and cannot do).
--
-- Run as the owner of the pgjobq schema (the role that runs
-- `pgjobq migrate`) after every migrate; GRANT is idempotent. Create the
-- three group roles once, as a superuser or a role with CREATEROLE:
--
--   CREATE ROLE pgjobq_enqueuer NOLOGIN;
--   CREATE ROLE pgjobq_worker NOLOGIN;
--   CREATE ROLE pgjobq_operator NOLOGIN;
--
-- then give them to the login roles of your services:
--
--   GRANT pgjobq_enqueuer TO app;
--   GRANT pgjobq_worker TO mail_worker;
--   GRANT pgjobq_operator TO ops;
--
-- Nobody but the owner can change the schema (CREATE, ALTER, DROP).

-- Everyone: find the schema, read queues and jobs (status, show, wait),
-- and the versions applied (`pgjobq migrate` finds the schema up to date).
GRANT USAGE ON SCHEMA pgjobq
  TO pgjobq_enqueuer, pgjobq_worker, pgjobq_operator;
GRANT SELECT ON pgjobq.queues, pgjobq.queue_progress, pgjobq.jobs,
  pgjobq.schema_migrations
  TO pgjobq_enqueuer, pgjobq_worker, pgjobq_operator;
-- A wait inside a transaction asks whether that transaction wrote the job
-- (SECURITY INVOKER; matters where EXECUTE has been revoked from PUBLIC).
GRANT EXECUTE ON FUNCTION pgjobq.written_by_this_transaction(xid)
  TO pgjobq_enqueuer, pgjobq_worker, pgjobq_operator;

-- The enqueuing application: add jobs, creating a queue on its first job.
-- It takes positions and counts admissions on the queue's row, and cannot
-- change or delete a job once it exists.
GRANT INSERT (name), UPDATE (last_position, admitted) ON pgjobq.queues
  TO pgjobq_enqueuer;
GRANT INSERT (queue_id) ON pgjobq.queue_progress TO pgjobq_enqueuer;
GRANT INSERT (queue_id, position, data) ON pgjobq.jobs TO pgjobq_enqueuer;
GRANT USAGE ON SEQUENCE pgjobq.queues_id_seq, pgjobq.jobs_id_seq
  TO pgjobq_enqueuer;
-- Enqueue calls pgjobq.insert_jobs(), which runs with the caller's rights
-- (SECURITY INVOKER), so this adds nothing to the grants above; it matters
-- where EXECUTE has been revoked from PUBLIC.
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgjobq TO pgjobq_enqueuer;

-- A worker: claim jobs, record their outcomes, send them to the back of
-- their queue (a handler's reschedule), create a queue it is told to serve.
-- It cannot add jobs, cancel them, admit failed ones again, or delete any.
GRANT INSERT (name), UPDATE (last_position) ON pgjobq.queues
  TO pgjobq_worker;
GRANT INSERT (queue_id),
      UPDATE (handled_position, finished, completed, failed)
  ON pgjobq.queue_progress TO pgjobq_worker;
GRANT UPDATE (state, attempts, result, error, started_at, finished_at,
              position)
  ON pgjobq.jobs TO pgjobq_worker;
GRANT USAGE ON SEQUENCE pgjobq.queues_id_seq TO pgjobq_worker;

-- An operator: cancel and reschedule jobs and prune finished ones. It
-- cannot add jobs or change their data. (A reschedule clears the result,
-- so an operator may write that column: trust operators with results.)
GRANT UPDATE (last_position, admitted) ON pgjobq.queues TO pgjobq_operator;
GRANT UPDATE (completed, failed, cancelled, finished)
  ON pgjobq.queue_progress TO pgjobq_operator;
GRANT UPDATE (state, position, attempts, result, started_at, finished_at)
  ON pgjobq.jobs TO pgjobq_operator;
GRANT DELETE ON pgjobq.jobs TO pgjobq_operator;
