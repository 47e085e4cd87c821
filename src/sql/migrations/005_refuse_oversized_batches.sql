-- 005_refuse_oversized_batches: pgjobq.insert_jobs() of 003, corrected.
--
-- A batch larger than its limit, enqueued into a queue that did not exist
-- yet, was refused only after the function had created the queue in the
-- caller's transaction: the refused caller then held the new queue's row,
-- and every other enqueuer of that queue waited for its transaction to end
-- (the header of enqueue_many promises that a refusal writes nothing).
-- Such a batch is now refused first: a queue holds no negative number of
-- unfinished jobs, so job_count > job_limit never fits. Everything else is
-- as in 003 and 002, whose comments explain the function.
CREATE OR REPLACE FUNCTION pgjobq.insert_jobs(queue_name text, job_limit bigint,
                                   payloads jsonb, job_count bigint)
RETURNS TABLE (job_id bigint, job_position bigint)
LANGUAGE plpgsql
AS $$
DECLARE
  queue_key integer;
  top bigint;
BEGIN
  -- More jobs than the limit can never fit: refuse before anything else,
  -- and above all before a new queue is created below.
  IF job_count > job_limit THEN
    RETURN;
  END IF;
  FOR attempt IN 1..2 LOOP
    UPDATE pgjobq.queues q
    SET last_position = q.last_position + job_count,
        admitted = q.admitted + job_count
    WHERE q.name = queue_name
      AND q.admitted + job_count
          - (SELECT p.finished FROM pgjobq.queue_progress p
             WHERE p.queue_id = q.id) <= job_limit
    RETURNING q.id, q.last_position INTO queue_key, top;
    IF FOUND THEN
      RETURN QUERY
        INSERT INTO pgjobq.jobs AS j (queue_id, position, data)
        SELECT queue_key, top - job_count + e.n, e.data
        FROM jsonb_array_elements(payloads) WITH ORDINALITY AS e (data, n)
        ORDER BY e.n
        RETURNING j.id, j.position;
      RETURN;
    END IF;
    -- The second UPDATE saw the queue (see below): it is full.
    IF attempt = 2 THEN
      RETURN;
    END IF;
    -- Refused, or a queue the UPDATE did not see. Either way, look again
    -- with a fresh snapshot: the queue may have been created and committed
    -- by another enqueuer since. (Returning here when it exists was the bug
    -- this migration fixes: a concurrent first enqueue of a new queue was
    -- refused.)
    IF NOT EXISTS (SELECT 1 FROM pgjobq.queues q WHERE q.name = queue_name)
    THEN
      -- Create it (waiting for a transaction creating it right now), in
      -- the caller's transaction: a rollback takes the new queue with it.
      WITH created AS (
        INSERT INTO pgjobq.queues AS q (name) VALUES (queue_name)
        ON CONFLICT (name) DO NOTHING
        RETURNING q.id
      )
      INSERT INTO pgjobq.queue_progress (queue_id) SELECT id FROM created;
    END IF;
    -- Now the queue's row is committed or ours, and the next statement
    -- sees it (READ COMMITTED takes a snapshot per statement).
  END LOOP;
END;
$$;
