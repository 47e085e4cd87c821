-- 002_insert_jobs_function: the enqueue path as one server-side function.
--
-- Enqueue runs on the caller's connection, so it cannot rely on prepared
-- statements (poolers, DEALLOCATE ALL). Sent as plain SQL, the statement was
-- planned on every call, and planning cost as much as executing. PL/pgSQL
-- caches the plans of the statements below per session, and the call
-- itself is trivial to plan. It also creates a new queue without another
-- round trip.
--
-- Returns (job_id, job_position) per job, in payload order, or no rows when
-- the queue already holds too many unfinished jobs.
--
-- FIFO by commit order: the UPDATE locks the queue's row until the caller's
-- transaction ends, so enqueuers of one queue take positions, and commit,
-- one after another; a later position can never become visible before an
-- earlier one.
-- The limit: admitted - finished is the exact number of unfinished jobs.
-- `finished` comes from the statement's snapshot and only ever grows, so a
-- stale value can only refuse, never overfill. A refused UPDATE locks
-- nothing, raises nothing, and leaves the caller's transaction usable.
-- O(1): no row counting; the cost does not grow with the queue's depth.
CREATE FUNCTION pgjobq.insert_jobs(queue_name text, job_limit bigint,
                                   payloads jsonb, job_count bigint)
RETURNS TABLE (job_id bigint, job_position bigint)
LANGUAGE plpgsql
AS $$
DECLARE
  queue_key integer;
  top bigint;
BEGIN
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
    -- Refused, or a queue not seen yet. An existing queue refused.
    IF attempt = 2
       OR EXISTS (SELECT 1 FROM pgjobq.queues q WHERE q.name = queue_name) THEN
      RETURN;
    END IF;
    -- Create it (waiting for a transaction creating it right now), in the
    -- caller's transaction: a rollback takes the new queue with it. The
    -- next statement sees it (READ COMMITTED takes a snapshot per
    -- statement).
    WITH created AS (
      INSERT INTO pgjobq.queues AS q (name) VALUES (queue_name)
      ON CONFLICT (name) DO NOTHING
      RETURNING q.id
    )
    INSERT INTO pgjobq.queue_progress (queue_id) SELECT id FROM created;
  END LOOP;
END;
$$;
