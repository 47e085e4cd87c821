-- 001_init: queues, the worker's progress through them, and jobs.
--
-- Invariants (docs/architecture.md explains them at length):
--  * Positions within a queue follow the commit order of the enqueuing
--    transactions: an enqueuer takes its position from its queue's row and
--    holds that row's lock until it commits.
--  * Unfinished jobs = queues.admitted - queue_progress.finished, exactly,
--    without counting rows.
--  * Every unfinished job of a queue has position > its handled_position, so
--    the worker finds the head with an index seek that starts there and never
--    walks the finished jobs behind it.

CREATE TYPE pgjobq.job_state AS ENUM
  ('pending', 'running', 'completed', 'failed', 'cancelled');

-- Written by enqueuers (and reschedules, which enqueue again). A row lock
-- here orders the enqueuers of one queue.
CREATE TABLE pgjobq.queues (
  id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name text NOT NULL UNIQUE
    CHECK (name ~ '^[A-Za-z0-9_.:/-]{1,128}$'),
  -- The highest position handed out.
  last_position bigint NOT NULL DEFAULT 0,
  -- Jobs ever admitted (a failed or cancelled job that is rescheduled is
  -- admitted again).
  admitted bigint NOT NULL DEFAULT 0 CHECK (admitted >= 0),
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Written by the queue's worker, by cancel and by prune. Kept apart from
-- `queues` so a long enqueuing transaction, which holds its queue's row,
-- never blocks the worker.
CREATE TABLE pgjobq.queue_progress (
  queue_id integer PRIMARY KEY REFERENCES pgjobq.queues (id),
  -- The worker's cursor: no unfinished job sits at or before it.
  handled_position bigint NOT NULL DEFAULT 0,
  -- Jobs that reached a final state, ever. Only ever grows: enqueuers read
  -- it from their snapshot, and a stale value must only err on refusing.
  finished bigint NOT NULL DEFAULT 0 CHECK (finished >= 0),
  -- Finished jobs still stored, by state (prune subtracts).
  completed bigint NOT NULL DEFAULT 0,
  failed bigint NOT NULL DEFAULT 0,
  cancelled bigint NOT NULL DEFAULT 0
);

-- No foreign key to queues: the queue id always comes from the queue row the
-- enqueuer has just locked, and a per-row RI check would cost bulk enqueues
-- dearly. Queues are never deleted.
CREATE TABLE pgjobq.jobs (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  queue_id integer NOT NULL,
  position bigint NOT NULL,
  state pgjobq.job_state NOT NULL DEFAULT 'pending',
  -- Starts by a worker; a crash counts, a reschedule resets it.
  attempts integer NOT NULL DEFAULT 0,
  data jsonb NOT NULL,
  result jsonb,
  -- The last handler error, or why the job failed.
  error text,
  enqueued_at timestamptz NOT NULL DEFAULT statement_timestamp(),
  started_at timestamptz,
  finished_at timestamptz
) WITH (fillfactor = 80);
-- Leave room in each page so that claiming and completing a job (which
-- change no indexed column) are HOT updates that add no index entries.

-- FIFO order, and the seek to a queue's head. Unique: two jobs of a queue
-- never share a position.
CREATE UNIQUE INDEX jobs_queue_position ON pgjobq.jobs (queue_id, position);
