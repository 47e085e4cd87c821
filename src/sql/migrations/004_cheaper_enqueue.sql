-- 004_cheaper_enqueue: the same enqueue, for a third less server time.
--
-- Found with perf on the backend (docs/benchmarks.md, finding 6): an
-- enqueue of one job spent a fifth of its time re-reading the CHECK
-- constraints of the queue's rows, since PostgreSQL parses and prepares a
-- table's CHECK expressions again in every statement that updates it, and
-- every enqueue updates its queue's row (as every completion updates its
-- progress row). And a single job went through the batch path: a
-- set-returning function, a JSON array taken apart, a sort.
--
--  * The queue name's rule moves into a domain: checked where a name is
--    stored (a new queue), not on every change to the row's counters.
--  * The counters' `>= 0` checks go. Nothing in pgjobq lowers `admitted`
--    or `finished`; the tests and the chaos run check the counts.
--  * pgjobq.insert_job() enqueues one job: one UPDATE and one INSERT.
--    Everything else (a new queue, a full one) it hands to
--    pgjobq.insert_jobs() of 003, which decides it exactly as before.
CREATE DOMAIN pgjobq.queue_name AS text
  CHECK (VALUE ~ '^[A-Za-z0-9_.:/-]{1,128}$');

ALTER TABLE pgjobq.queues
  DROP CONSTRAINT queues_name_check,
  DROP CONSTRAINT queues_admitted_check,
  ALTER COLUMN name TYPE pgjobq.queue_name;

ALTER TABLE pgjobq.queue_progress
  DROP CONSTRAINT queue_progress_finished_check;

-- Returns the new job's id, or NULL when the queue already holds
-- `job_limit` unfinished jobs (nothing enqueued, no error). The invariants
-- are insert_jobs()'s (002): the UPDATE locks the queue's row until the
-- caller's transaction ends (positions in commit order), and admits the
-- job only while admitted - finished < job_limit (the exact limit, O(1)).
CREATE FUNCTION pgjobq.insert_job(queue_name text, job_limit bigint,
                                  payload jsonb)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
  queue_key integer;
  top bigint;
  new_id bigint;
BEGIN
  UPDATE pgjobq.queues q
  SET last_position = q.last_position + 1,
      admitted = q.admitted + 1
  WHERE q.name = queue_name
    AND q.admitted + 1
        - (SELECT p.finished FROM pgjobq.queue_progress p
           WHERE p.queue_id = q.id) <= job_limit
  RETURNING q.id, q.last_position INTO queue_key, top;
  IF FOUND THEN
    INSERT INTO pgjobq.jobs (queue_id, position, data)
    VALUES (queue_key, top, payload)
    RETURNING id INTO new_id;
    RETURN new_id;
  END IF;
  -- A queue not seen yet, or a full one: the batch path knows both.
  SELECT j.job_id INTO new_id
  FROM pgjobq.insert_jobs(queue_name, job_limit, jsonb_build_array(payload),
                          1) j;
  RETURN new_id;
END;
$$;
