# Throwaway PostgreSQL and Redis for tests, benchmarks, the demo and chaos.
# Source this file, then:
#   services_start PROFILE   # PROFILE: test (fsync off) or bench (defaults)
#   services_stop            # idempotent; call from an EXIT trap
# After services_start these are exported:
#   PGJOBQ_SERVICES_DIR       the temporary directory holding both servers
#   PGJOBQ_PG_BIN             PostgreSQL 15 binaries
#   PGJOBQ_PG_DATA            the data directory
#   PGJOBQ_PG_PORT            loopback port (also names the unix socket)
#   PGJOBQ_PG_SOCKET_DIR      directory of the unix socket
#   PGJOBQ_TEST_PG_ADMIN_URL  superuser URL of the `postgres` database
#   PGJOBQ_REDIS_PORT, PGJOBQ_REDIS_SOCKET, PGJOBQ_REDIS_PID
#   PGJOBQ_TEST_REDIS_URL     redis://127.0.0.1:PORT
#   PGJOBQ_REDIS_SERVER       the redis-server binary, for tests that run
#                             their own
# Only processes started here are stopped, by PID.

PGJOBQ_PG_BIN=${PGJOBQ_PG_BIN:-/usr/lib/postgresql/15/bin}

# Runs a command as the postgres user when we are root (initdb and postgres
# refuse to run as root), else as ourselves.
_as_pg_user() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

_free_port() {
  local port
  for _ in $(seq 1 200); do
    port=$(( (RANDOM << 15 | RANDOM) % 30000 + 20000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

_wait_for() {  # _wait_for SECONDS COMMAND...
  local deadline=$(( $(date +%s) + $1 ))
  shift
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then return 1; fi
    sleep 0.1
  done
}

services_start() {
  local profile=${1:-test}
  if [ ! -x "$PGJOBQ_PG_BIN/postgres" ]; then
    echo "PostgreSQL 15 not found in $PGJOBQ_PG_BIN" >&2
    return 1
  fi
  PGJOBQ_REDIS_SERVER=${PGJOBQ_REDIS_SERVER:-$(command -v redis-server)}
  PGJOBQ_SERVICES_DIR=$(mktemp -d /tmp/pgjobq-services.XXXXXX)
  chmod 755 "$PGJOBQ_SERVICES_DIR"
  local dir=$PGJOBQ_SERVICES_DIR
  mkdir -p "$dir/pg"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir/pg"; fi
  PGJOBQ_PG_DATA=$dir/pg/data
  PGJOBQ_PG_SOCKET_DIR=$dir/pg
  _as_pg_user "$PGJOBQ_PG_BIN/initdb" -D "$PGJOBQ_PG_DATA" -A trust \
    -U postgres -E UTF8 --no-instructions >"$dir/pg/initdb.log" 2>&1 || {
    cat "$dir/pg/initdb.log" >&2
    return 1
  }
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$PGJOBQ_PG_SOCKET_DIR'"
    echo "max_connections = 300"
    echo "shared_buffers = 256MB"
    if [ "$profile" = test ]; then
      # Tests need no durability; the benchmarks keep the defaults.
      echo "fsync = off"
      echo "full_page_writes = off"
      # Lets tests check FIFO against the order transactions really committed.
      echo "track_commit_timestamp = on"
      # Lets tests enqueue in two-phase commits (PREPARE TRANSACTION).
      echo "max_prepared_transactions = 10"
    fi
  } >>"$PGJOBQ_PG_DATA/postgresql.conf"
  local started=0
  for _ in 1 2 3 4 5; do
    PGJOBQ_PG_PORT=$(_free_port)
    if _as_pg_user "$PGJOBQ_PG_BIN/pg_ctl" -D "$PGJOBQ_PG_DATA" -w -t 30 \
        -o "-p $PGJOBQ_PG_PORT" -l "$dir/pg/postgres.log" start \
        >/dev/null 2>&1; then
      started=1
      break
    fi
  done
  if [ "$started" != 1 ]; then
    echo "PostgreSQL did not start:" >&2
    tail -20 "$dir/pg/postgres.log" >&2
    return 1
  fi
  PGJOBQ_TEST_PG_ADMIN_URL="postgresql://postgres@127.0.0.1:$PGJOBQ_PG_PORT/postgres"

  mkdir -p "$dir/redis"
  PGJOBQ_REDIS_SOCKET=$dir/redis/redis.sock
  started=0
  for _ in 1 2 3 4 5; do
    PGJOBQ_REDIS_PORT=$(_free_port)
    "$PGJOBQ_REDIS_SERVER" --port "$PGJOBQ_REDIS_PORT" --bind 127.0.0.1 \
      --unixsocket "$PGJOBQ_REDIS_SOCKET" --unixsocketperm 777 \
      --save '' --appendonly no --daemonize no \
      --logfile "$dir/redis/redis.log" --dir "$dir/redis" &
    PGJOBQ_REDIS_PID=$!
    if _wait_for 10 test -S "$PGJOBQ_REDIS_SOCKET" &&
        kill -0 "$PGJOBQ_REDIS_PID" 2>/dev/null; then
      started=1
      break
    fi
    kill "$PGJOBQ_REDIS_PID" 2>/dev/null || true
    wait "$PGJOBQ_REDIS_PID" 2>/dev/null || true
  done
  if [ "$started" != 1 ]; then
    echo "redis-server did not start:" >&2
    tail -20 "$dir/redis/redis.log" >&2
    return 1
  fi
  PGJOBQ_TEST_REDIS_URL="redis://127.0.0.1:$PGJOBQ_REDIS_PORT"
  export PGJOBQ_SERVICES_DIR PGJOBQ_PG_BIN PGJOBQ_PG_DATA PGJOBQ_PG_PORT \
    PGJOBQ_PG_SOCKET_DIR PGJOBQ_TEST_PG_ADMIN_URL PGJOBQ_REDIS_PORT \
    PGJOBQ_REDIS_SOCKET PGJOBQ_REDIS_PID PGJOBQ_TEST_REDIS_URL \
    PGJOBQ_REDIS_SERVER
}

services_stop() {
  local dir=${PGJOBQ_SERVICES_DIR:-}
  [ -n "$dir" ] || return 0
  if [ -n "${PGJOBQ_REDIS_PID:-}" ]; then
    kill "$PGJOBQ_REDIS_PID" 2>/dev/null || true
    wait "$PGJOBQ_REDIS_PID" 2>/dev/null || true
  fi
  if [ -f "$PGJOBQ_PG_DATA/postmaster.pid" ]; then
    _as_pg_user "$PGJOBQ_PG_BIN/pg_ctl" -D "$PGJOBQ_PG_DATA" -m immediate \
      -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  PGJOBQ_SERVICES_DIR=
}
