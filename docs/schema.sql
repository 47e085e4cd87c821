-- The pgjobq schema as `pgjobq migrate` leaves it: every migration of
-- src/sql/migrations/ applied, printed by pg_dump (PostgreSQL 15). For
-- reading only: the migrations are what creates it, and their comments
-- say why each part is as it is. Written by tests/cli/schema_test.sh,
-- which fails when a migration changes the schema and this file was not
-- written again:
--
--   PGJOBQ_WRITE_SCHEMA=1 tests/run.sh build/test -R CliSchema

--
-- Name: pgjobq; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA pgjobq;

--
-- Name: job_state; Type: TYPE; Schema: pgjobq; Owner: -
--

CREATE TYPE pgjobq.job_state AS ENUM (
    'pending',
    'running',
    'completed',
    'failed',
    'cancelled'
);

--
-- Name: queue_name; Type: DOMAIN; Schema: pgjobq; Owner: -
--

CREATE DOMAIN pgjobq.queue_name AS text
	CONSTRAINT queue_name_check CHECK ((VALUE ~ '^[A-Za-z0-9_.:/-]{1,128}$'::text));

--
-- Name: insert_job(text, bigint, jsonb); Type: FUNCTION; Schema: pgjobq; Owner: -
--

CREATE FUNCTION pgjobq.insert_job(queue_name text, job_limit bigint, payload jsonb) RETURNS bigint
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

--
-- Name: insert_jobs(text, bigint, jsonb, bigint); Type: FUNCTION; Schema: pgjobq; Owner: -
--

CREATE FUNCTION pgjobq.insert_jobs(queue_name text, job_limit bigint, payloads jsonb, job_count bigint) RETURNS TABLE(job_id bigint, job_position bigint)
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

--
-- Name: written_by_this_transaction(xid); Type: FUNCTION; Schema: pgjobq; Owner: -
--

CREATE FUNCTION pgjobq.written_by_this_transaction(row_xmin xid) RETURNS boolean
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

--
-- Name: jobs; Type: TABLE; Schema: pgjobq; Owner: -
--

CREATE TABLE pgjobq.jobs (
    id bigint NOT NULL,
    queue_id integer NOT NULL,
    "position" bigint NOT NULL,
    state pgjobq.job_state DEFAULT 'pending'::pgjobq.job_state NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    data jsonb NOT NULL,
    result jsonb,
    error text,
    enqueued_at timestamp with time zone DEFAULT statement_timestamp() NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone
)
WITH (fillfactor='80');

--
-- Name: jobs_id_seq; Type: SEQUENCE; Schema: pgjobq; Owner: -
--

ALTER TABLE pgjobq.jobs ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME pgjobq.jobs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: queue_progress; Type: TABLE; Schema: pgjobq; Owner: -
--

CREATE TABLE pgjobq.queue_progress (
    queue_id integer NOT NULL,
    handled_position bigint DEFAULT 0 NOT NULL,
    finished bigint DEFAULT 0 NOT NULL,
    completed bigint DEFAULT 0 NOT NULL,
    failed bigint DEFAULT 0 NOT NULL,
    cancelled bigint DEFAULT 0 NOT NULL
);

--
-- Name: queues; Type: TABLE; Schema: pgjobq; Owner: -
--

CREATE TABLE pgjobq.queues (
    id integer NOT NULL,
    name pgjobq.queue_name NOT NULL,
    last_position bigint DEFAULT 0 NOT NULL,
    admitted bigint DEFAULT 0 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: queues_id_seq; Type: SEQUENCE; Schema: pgjobq; Owner: -
--

ALTER TABLE pgjobq.queues ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME pgjobq.queues_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: schema_migrations; Type: TABLE; Schema: pgjobq; Owner: -
--

CREATE TABLE pgjobq.schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: jobs jobs_pkey; Type: CONSTRAINT; Schema: pgjobq; Owner: -
--

ALTER TABLE ONLY pgjobq.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);

--
-- Name: queue_progress queue_progress_pkey; Type: CONSTRAINT; Schema: pgjobq; Owner: -
--

ALTER TABLE ONLY pgjobq.queue_progress
    ADD CONSTRAINT queue_progress_pkey PRIMARY KEY (queue_id);

--
-- Name: queues queues_name_key; Type: CONSTRAINT; Schema: pgjobq; Owner: -
--

ALTER TABLE ONLY pgjobq.queues
    ADD CONSTRAINT queues_name_key UNIQUE (name);

--
-- Name: queues queues_pkey; Type: CONSTRAINT; Schema: pgjobq; Owner: -
--

ALTER TABLE ONLY pgjobq.queues
    ADD CONSTRAINT queues_pkey PRIMARY KEY (id);

--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: pgjobq; Owner: -
--

ALTER TABLE ONLY pgjobq.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);

--
-- Name: jobs_queue_position; Type: INDEX; Schema: pgjobq; Owner: -
--

CREATE UNIQUE INDEX jobs_queue_position ON pgjobq.jobs USING btree (queue_id, "position");

--
-- Name: queue_progress queue_progress_queue_id_fkey; Type: FK CONSTRAINT; Schema: pgjobq; Owner: -
--

ALTER TABLE ONLY pgjobq.queue_progress
    ADD CONSTRAINT queue_progress_queue_id_fkey FOREIGN KEY (queue_id) REFERENCES pgjobq.queues(id);

