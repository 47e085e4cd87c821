-- 006_written_by_this_transaction: whether a row the caller can see was
-- written by the caller's own transaction, not committed yet.
--
-- wait_for_result refuses to wait, inside a transaction, for a job that
-- very transaction enqueued or rescheduled: no worker can see the job
-- before the commit, so the wait could only time out, holding the queue's
-- row all the while (sql::kWaitInTransaction). It used to look for the
-- row's xmin among the transaction ids whose locks the session holds
-- (pg_locks). A subtransaction gives its id's lock up when it ends, also
-- when released (RELEASE SAVEPOINT) and its rows kept: a job enqueued in a
-- released savepoint went unrecognized, and the wait timed out.
--
-- A row the caller can see was written either by a transaction that had
-- committed when the caller's snapshot was taken, or by the caller's own
-- transaction (or one of its subtransactions, released or open). Only the
-- latter are in progress, so pg_xact_status() tells them apart. It takes a
-- full transaction id (epoch and all), and xmin is the low 32 bits: the
-- caller's own ids were all given out after its top-level one, less than
-- 2^31 ids later (the server stops giving out ids long before that), which
-- puts the epoch back. A row's xmin outside that range is not the
-- caller's. A frozen row keeps its raw xmin, which may be many epochs old
-- and read as an id not given out yet: pg_xact_status() then raises
-- "transaction ID ... is in the future", and the row is not the caller's.
CREATE OR REPLACE FUNCTION pgjobq.written_by_this_transaction(row_xmin xid)
RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  top bigint := pg_current_xact_id_if_assigned()::text::bigint;
  id bigint := row_xmin::text::bigint;
BEGIN
  -- No id yet: this transaction has written nothing. Ids below 3 are
  -- special (invalid, bootstrap, frozen).
  IF top IS NULL OR id < 3 THEN
    RETURN false;
  END IF;
  id := top + (id - top % 4294967296 + 4294967296) % 4294967296;
  IF id - top >= 2147483648 THEN
    RETURN false;
  END IF;
  BEGIN
    RETURN pg_xact_status(id::text::xid8) = 'in progress';
  EXCEPTION WHEN invalid_parameter_value THEN
    RETURN false;
  END;
END
$$;
