#!/usr/bin/env bash
# The chaos run: jobs flow through many queues while workers are killed,
# Redis and PostgreSQL are restarted and backends terminated; then every
# promise of DESIGN.md is checked and ONE summary line printed. Exits
# non-zero if any check fails. docs/reliability.md explains it and keeps the
# last long run's line.
#
#   scripts/chaos.sh [--short | --long] [options]
#
#   --short           about a minute (the test suite runs this)
#   --long            100,000 jobs, 12 queues
#   --seconds S       how long to enqueue (short: 35)
#   --jobs N          stop enqueuing after N jobs (long: 100000)
#   --queues N        how many queues (short: 8, long: 12)
#   --cli PATH        the pgjobq binary     } default: build both in
#   --driver PATH     the pgjobq_chaos binary } build-chaos/
#   --keep            keep the run's directory (logs, journals)
#
# Servers are throwaway (tests/services.sh), on loopback and unix sockets.
# Only processes this script started are signalled, by PID.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
profile=short
seconds=
max_jobs=
queues=
cli=
driver=
keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --short) profile=short ;;
    --long) profile=long ;;
    --seconds) seconds=$2; shift ;;
    --jobs) max_jobs=$2; shift ;;
    --queues) queues=$2; shift ;;
    --cli) cli=$2; shift ;;
    --driver) driver=$2; shift ;;
    --keep) keep=1 ;;
    *) echo "chaos.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if [ -n "$cli" ]; then cli=$(realpath "$cli"); fi
if [ -n "$driver" ]; then driver=$(realpath "$driver"); fi
if [ -z "$cli" ] || [ -z "$driver" ]; then
  cmake -S "$root" -B "$root/build-chaos" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    >/dev/null
  cmake --build "$root/build-chaos" -j "$(nproc)" \
    --target pgjobq_cli pgjobq_chaos >/dev/null
  cli=$root/build-chaos/cli/pgjobq
  driver=$root/build-chaos/tests/chaos/pgjobq_chaos
fi

# The schedule. Intervals are seconds between faults of each kind; the
# minimums are what the check insists on.
sanitized=$("$driver" sanitized)
if [ "$profile" = short ]; then
  queues=${queues:-8}
  # Under the sanitizers every process (and a command runs per job) is
  # several times slower: enqueue for less time, fault as often.
  if [ "$sanitized" = 1 ]; then seconds=${seconds:-25}; else seconds=${seconds:-35}; fi
  max_jobs=${max_jobs:-1000000000}
  kill_every=$(awk "BEGIN { print $seconds / 30 }")
  redis_every=$(awk "BEGIN { print $seconds / 7 }")
  pg_first=$(awk "BEGIN { print $seconds * 0.25 }")
  pg_every=$(awk "BEGIN { print $seconds * 0.3 }")
  term_every=2
  min_kills=20 min_redis=5 min_pg=2 min_term=1
  drain=90
  limit=40
else
  queues=${queues:-12}
  seconds=${seconds:-7200}
  max_jobs=${max_jobs:-100000}
  kill_every=2 redis_every=20 pg_first=30 pg_every=60 term_every=3
  min_kills=20 min_redis=5 min_pg=2 min_term=1
  drain=300
  limit=100
fi

# shellcheck source=tests/services.sh
source "$root/tests/services.sh"
run=$(mktemp -d /tmp/pgjobq-chaos.XXXXXX)
chmod 755 "$run"
mkdir -p "$run/journal"
declare -a slot_pid slot_start slot_cmd slot_killed_at slot_next_start
load_pid=
status=1

cleanup() {
  { exec 2>&3; } 2>/dev/null || true
  local pid
  for pid in "${slot_pid[@]:-}" $load_pid; do
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done
  services_stop
  if [ "$status" = 0 ] && [ "$keep" = 0 ]; then
    rm -rf "$run"
  else
    echo "chaos.sh: logs and journals kept in $run" >&2
  fi
}
trap cleanup EXIT

now() { echo "${EPOCHREALTIME}"; }
later() { awk "BEGIN { exit !($1 >= $2) }"; }   # later A B: A >= B
plus() { awk "BEGIN { printf \"%.6f\", $1 + $2 }"; }
ms_between() { awk "BEGIN { printf \"%d\", ($2 - $1) * 1000 }"; }

services_start test
db="postgresql://postgres@127.0.0.1:$PGJOBQ_PG_PORT/chaos"
redis=$PGJOBQ_TEST_REDIS_URL
psql_chaos() {
  psql -X -q -t -A -h 127.0.0.1 -p "$PGJOBQ_PG_PORT" -U postgres -d chaos \
    -c "$1" 2>/dev/null
}
psql -X -q -h 127.0.0.1 -p "$PGJOBQ_PG_PORT" -U postgres -d postgres \
  -c "CREATE DATABASE chaos" >/dev/null
"$cli" --db "$db" migrate >/dev/null
"$driver" setup --db "$db"

# ------------------------------------------------------------- workers
#
# Every queue has three workers: two `pgjobq work` processes and one
# library Worker process; one holds the queue, two stand by.
slots=0
add_slot() {
  slot_cmd[$slots]=$1
  slot_pid[$slots]=
  slot_killed_at[$slots]=
  slot_next_start[$slots]=0
  slots=$((slots + 1))
}
handler=("$driver" handle --dir "$run/journal")
for ((k = 0; k < queues / 2; k++)); do
  qs=""
  for ((j = 0; j < 4; j++)); do qs+=" chaos-$(( (2 * k + j) % queues ))"; done
  add_slot "$cli --db $db --redis $redis work$qs --poll-interval 30 -- ${handler[*]}"
done
for ((k = 0; k < (queues + 3) / 4; k++)); do
  qs=""
  for ((j = 0; j < 4 && 4 * k + j < queues; j++)); do qs+=" chaos-$((4 * k + j))"; done
  add_slot "$driver worker --db $db --redis $redis --dir $run/journal$qs"
done

start_time() { awk '{ print $22 }' "/proc/$1/stat" 2>/dev/null || true; }

start_slot() {
  local i=$1
  # shellcheck disable=SC2086
  ${slot_cmd[$i]} >>"$run/slot-$i.log" 2>&1 &
  slot_pid[$i]=$!
  slot_start[$i]=$(start_time "${slot_pid[$i]}")
  slot_started_at[$i]=$(now)
}

slot_alive() {
  local pid=${slot_pid[$1]}
  [ -n "$pid" ] || return 1
  local stat
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  local fields
  read -r -a fields <<<"${stat##*) }"
  # fields[0] is the state, fields[19] the start time.
  [ "${fields[0]}" != Z ] && [ "${fields[19]}" = "${slot_start[$1]}" ]
}

kills=0 replaced=0 replace_max_ms=0 crash_exits=0 unexpected_exits=0
declare -a slot_started_at
# Restarts every slot whose process is gone, as a supervisor would.
supervise() {
  local i rc t
  for ((i = 0; i < slots; i++)); do
    if slot_alive "$i"; then continue; fi
    t=$(now)
    if [ -n "${slot_pid[$i]}" ] && [ "${slot_next_start[$i]}" = 0 ]; then
      rc=0
      wait "${slot_pid[$i]}" 2>/dev/null || rc=$?
      if [ -n "${slot_killed_at[$i]}" ] && [ "$rc" = 137 ]; then
        :
      elif [ "$rc" = 1 ]; then
        # The crash policy after a handler error, or PostgreSQL down at
        # start: the supervisor's business, after a short pause.
        crash_exits=$((crash_exits + 1))
        slot_next_start[$i]=$(plus "$t" 0.2)
      else
        unexpected_exits=$((unexpected_exits + 1))
        echo "chaos.sh: worker slot $i (pid ${slot_pid[$i]}) exited $rc" >&3
      fi
    fi
    if [ "${slot_next_start[$i]}" != 0 ] && ! later "$t" "${slot_next_start[$i]}"; then
      continue
    fi
    slot_next_start[$i]=0
    start_slot "$i"
    if [ -n "${slot_killed_at[$i]}" ]; then
      local ms
      ms=$(ms_between "${slot_killed_at[$i]}" "$(now)")
      replaced=$((replaced + 1))
      if [ "$ms" -gt "$replace_max_ms" ]; then replace_max_ms=$ms; fi
      slot_killed_at[$i]=
    fi
  done
}

# -------------------------------------------------------------- faults

kill_worker() {
  local alive=() i
  for ((i = 0; i < slots; i++)); do
    if slot_alive "$i"; then alive+=("$i"); fi
  done
  [ ${#alive[@]} -gt 0 ] || return 0
  i=${alive[$((RANDOM % ${#alive[@]}))]}
  kill -9 "${slot_pid[$i]}" 2>/dev/null || return 0
  slot_killed_at[$i]=$(now)
  echo "${slot_killed_at[$i]} kill slot $i pid ${slot_pid[$i]}" >>"$run/faults.log"
  kills=$((kills + 1))
}

redis_restarts=0
restart_redis() {
  echo "$(now) redis down" >>"$run/faults.log"
  kill -9 "$PGJOBQ_REDIS_PID" 2>/dev/null || true
  wait "$PGJOBQ_REDIS_PID" 2>/dev/null || true
  # Down for a moment: workers and waiters poll PostgreSQL meanwhile.
  sleep "0.$((RANDOM % 8 + 1))"
  "$PGJOBQ_REDIS_SERVER" --port "$PGJOBQ_REDIS_PORT" --bind 127.0.0.1 \
    --unixsocket "$PGJOBQ_REDIS_SOCKET" --unixsocketperm 777 \
    --save '' --appendonly no --daemonize no \
    --logfile "$PGJOBQ_SERVICES_DIR/redis/redis.log" \
    --dir "$PGJOBQ_SERVICES_DIR/redis" &
  PGJOBQ_REDIS_PID=$!
  local deadline=$(( $(date +%s) + 10 ))
  until [ "$(redis-cli -p "$PGJOBQ_REDIS_PORT" ping 2>/dev/null)" = PONG ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "chaos.sh: redis-server did not come back" >&3
      return 1
    fi
    sleep 0.05
  done
  redis_restarts=$((redis_restarts + 1))
  echo "$(now) redis up" >>"$run/faults.log"
}

pg_restarts=0
restart_postgres() {
  echo "$(now) postgres restart" >>"$run/faults.log"
  _as_pg_user "$PGJOBQ_PG_BIN/pg_ctl" -D "$PGJOBQ_PG_DATA" -m immediate -w \
    -t 60 -l "$PGJOBQ_SERVICES_DIR/pg/postgres.log" restart >/dev/null 2>&1 || {
    echo "chaos.sh: pg_ctl restart failed" >&3
    tail -20 "$PGJOBQ_SERVICES_DIR/pg/postgres.log" >&3
    return 1
  }
  pg_restarts=$((pg_restarts + 1))
  echo "$(now) postgres up" >>"$run/faults.log"
}

terminated=0
terminate_backends() {
  local out n
  out=$(psql_chaos "SELECT pid, client_port, pg_terminate_backend(pid) FROM
      (SELECT pid, client_port FROM pg_stat_activity WHERE datname = 'chaos'
      AND backend_type = 'client backend' AND pid <> pg_backend_pid()
      ORDER BY random() LIMIT $((RANDOM % 3 + 1))) s") || out=
  n=$(grep -c '|t$' <<<"$out" || true)
  echo "$(now) terminate $(tr '\n' ' ' <<<"$out")" >>"$run/faults.log"
  terminated=$((terminated + ${n:-0}))
}

held_queues() {
  psql_chaos "SELECT count(DISTINCT objid) FROM pg_locks WHERE
    locktype = 'advisory' AND granted AND classid = 1886220545 AND
    database = (SELECT oid FROM pg_database WHERE datname = 'chaos')" || echo 0
}

# ---------------------------------------------------------------- run

echo "chaos.sh: $profile run, $queues queues, $slots workers, sanitized=$sanitized, in $run" >&2
# Bash reports each background job a signal ended ("Killed") on stderr:
# from here on that chatter goes to a log; messages meant for people to fd 3.
exec 3>&2 2>>"$run/supervisor.log"
supervise
"$driver" load --db "$db" --redis "$redis" --dir "$run" --cli "$cli" \
  --queues "$queues" --seconds "$((seconds * 3))" --max-jobs "$max_jobs" \
  --limit "$limit" --drain-seconds "$drain" 2>&3 &
load_pid=$!

begin=$(now)
planned_end=$(plus "$begin" "$seconds")
next_kill=$(plus "$begin" "$kill_every")
next_redis=$(plus "$begin" "$redis_every")
next_pg=$(plus "$begin" "$pg_first")
next_term=$(plus "$begin" "$term_every")
while kill -0 "$load_pid" 2>/dev/null; do
  supervise
  if [ ! -e "$run/phase" ]; then
    t=$(now)
    if later "$t" "$next_kill"; then
      kill_worker
      # From the planned time: a slow tick is caught up on.
      next_kill=$(plus "$next_kill" "$kill_every")
    fi
    if later "$t" "$next_term"; then
      terminate_backends
      next_term=$(plus "$next_term" "$term_every")
    fi
    if later "$t" "$next_redis"; then
      restart_redis
      next_redis=$(plus "$(now)" "$redis_every")
    fi
    if later "$t" "$next_pg"; then
      restart_postgres
      next_pg=$(plus "$(now)" "$pg_every")
    fi
    # Enqueuing ends once the planned time has passed and every kind of
    # fault has happened as often as the check demands (the long run ends
    # by its job count instead).
    if later "$t" "$planned_end" && [ "$kills" -ge "$min_kills" ] &&
        [ "$redis_restarts" -ge "$min_redis" ] &&
        [ "$pg_restarts" -ge "$min_pg" ] &&
        [ "$terminated" -ge "$min_term" ]; then
      touch "$run/stop"
    fi
  fi
  sleep 0.05
done
load_rc=0
wait "$load_pid" || load_rc=$?
load_pid=
if [ "$load_rc" != 0 ]; then echo "chaos.sh: the load exited $load_rc" >&3; fi

# Every slot running and every queue held, then a graceful stop.
deadline=$(( $(date +%s) + 30 ))
held=0
while true; do
  supervise
  alive=0
  for ((i = 0; i < slots; i++)); do
    if slot_alive "$i"; then alive=$((alive + 1)); fi
  done
  held=$(held_queues)
  if [ "$alive" = "$slots" ] && [ "${held:-0}" = "$queues" ]; then break; fi
  if [ "$(date +%s)" -ge "$deadline" ]; then break; fi
  sleep 0.1
done
unclean=0
for ((i = 0; i < slots; i++)); do
  kill -TERM "${slot_pid[$i]}" 2>/dev/null || true
done
deadline=$(( $(date +%s) + 20 ))
for ((i = 0; i < slots; i++)); do
  while slot_alive "$i" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.05; done
  if slot_alive "$i"; then
    kill -9 "${slot_pid[$i]}" 2>/dev/null || true
    unclean=$((unclean + 1))
  fi
  rc=0
  wait "${slot_pid[$i]}" 2>/dev/null || rc=$?
  if [ "$rc" != 0 ]; then unclean=$((unclean + 1)); fi
  slot_pid[$i]=
done
elapsed=$(awk "BEGIN { printf \"%d\", $(now) - $begin }")
reports=$(cat "$run"/slot-*.log "$run"/cli-clients.log 2>/dev/null |
  grep -c -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' || true)

exec 2>&3
check_rc=0
"$driver" check --db "$db" --dir "$run" --queues "$queues" \
  --seconds "$elapsed" --kills "$kills" --replaced "$replaced" \
  --replace-max-ms "$replace_max_ms" --crash-exits "$crash_exits" \
  --unexpected-exits "$unexpected_exits" --unclean-stops "$unclean" \
  --redis-restarts "$redis_restarts" --pg-restarts "$pg_restarts" \
  --terminated "$terminated" --slots "$slots" --slots-alive "$alive" \
  --held "${held:-0}" --sanitizer-reports "$reports" \
  --min-kills "$min_kills" --min-redis-restarts "$min_redis" \
  --min-pg-restarts "$min_pg" --min-terminated "$min_term" || check_rc=$?
if [ "$check_rc" = 0 ] && [ "$load_rc" = 0 ]; then status=0; fi
exit "$status"
