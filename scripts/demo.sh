#!/usr/bin/env bash
# The pgjobq demo. On a fresh Debian 12 machine, as root:
#
#   ./scripts/demo.sh
#
# Installs the Debian packages it needs, builds pgjobq, installs it into a
# temporary prefix and builds examples/ against it, starts a throwaway
# PostgreSQL and Redis, and shows pgjobq at work: transactional enqueue
# (a batch committed, a batch rolled back), workers in C++ and in shell,
# back-pressure, waiting for results, Redis going away, and `status`. It
# stops everything it started, by PID, when it ends (or fails).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -t 1 ]; then
  bold=$'\e[1m' dim=$'\e[2m' green=$'\e[32m' red=$'\e[31m' reset=$'\e[0m'
else
  bold='' dim='' green='' red='' reset=''
fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$reset"; }
say() { printf '   %s\n' "$*"; }
# A command as one would type it: arguments quoted where the shell needs it.
shown() {
  local arg out=()
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=("$arg")
    else
      out+=("'${arg//\'/\'\\\'\'}'")
    fi
  done
  printf '%s$ %s%s\n' "$dim" "${out[*]}" "$reset"
}
# Shows a command, runs it, and shows its exit code when it is not 0.
run() {
  shown "$@"
  local code=0
  "$@" || code=$?
  if [ "$code" != 0 ]; then printf '%s(exit code %s)%s\n' "$red" "$code" "$reset"; fi
  return 0
}
# Prefixes a worker's log lines so they stand apart from the rest.
tag() { sed -u "s/^/   ${dim}[$1]${reset} /"; }

work=""
worker_pids=()
cleanup() {
  local pid
  for pid in "${worker_pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if declare -F services_stop >/dev/null; then services_stop; fi
  if [ -n "$work" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

step "1. Install what is missing (Debian packages only)"
scripts/install-deps.sh
say "ok"

step "2. Build pgjobq, install it, build examples/ against the installed package"
jobs=$(nproc)
work=$(mktemp -d /tmp/pgjobq-demo.XXXXXX)
quiet() { "$@" >"$work/log" 2>&1 || { cat "$work/log"; return 1; }; }
quiet cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPGJOBQ_BUILD_TESTS=OFF -DPGJOBQ_BUILD_BENCH=OFF
quiet cmake --build build/demo -j "$jobs"
quiet cmake --install build/demo --prefix "$work/prefix"
quiet cmake -S examples -B "$work/examples" -DCMAKE_PREFIX_PATH="$work/prefix"
quiet cmake --build "$work/examples" -j "$jobs"
export PATH="$work/prefix/bin:$work/examples:$PATH"
say "pgjobq $(pgjobq --version) in $work/prefix (bin/pgjobq, lib/libpgjobq.a,"
say "include/pgjobq/, lib/cmake/pgjobq/, lib/pkgconfig/pgjobq.pc)"

step "3. Start a throwaway PostgreSQL 15 and Redis"
# shellcheck source=tests/services.sh
source tests/services.sh
services_start test
export DATABASE_URL="$PGJOBQ_TEST_PG_ADMIN_URL"
export REDIS_URL="$PGJOBQ_TEST_REDIS_URL"
say "DATABASE_URL=$DATABASE_URL"
say "REDIS_URL=$REDIS_URL"

step "4. Create pgjobq's schema"
run pgjobq migrate

step "5. Start two workers"
say "order_worker (examples/order_worker.cc): a C++ handler for queue"
say "'packing' whose UPDATE commits in the same transaction as the job."
order_worker 2> >(tag order_worker) &
worker_pids+=($!)
say "pgjobq work: runs examples/thumbnail.sh once per job of 'thumbnails'."
pgjobq work thumbnails -- examples/thumbnail.sh 2> >(tag "pgjobq work") &
thumbnail_worker=$!
worker_pids+=("$thumbnail_worker")

step "6. A web handler stores an order and enqueues its jobs in ONE transaction"
say "examples/place_order.cc: BEGIN; INSERT the order; enqueue one 'packing'"
say "job per item; COMMIT; then wait for every job's result."
run place_order ada book pen lamp kettle

step "7. A transaction that rolls back: its jobs never existed"
shown place_order --rollback bob teapot mug
out=$(place_order --rollback bob teapot mug)
printf '%s\n' "$out"
ids=$(sed -n 's/.*packing job(s): //p' <<<"$out")
for id in $ids; do run pgjobq show "$id"; done
say "Nothing to run, nothing to clean up: the jobs rolled back with the order."

step "8. The command line: enqueue, and wait for the result"
run pgjobq enqueue thumbnails '{"image": "cat.jpg"}' --wait --timeout 30s

step "9. Back-pressure: a queue refuses work beyond its limit"
say "Queue 'reports' has no worker. With --limit 3, the fourth job is refused"
say "(exit code 3) and nothing is enqueued."
for n in 1 2 3 4; do run pgjobq enqueue reports "{\"report\": $n}" --limit 3; done

step "10. Enqueue several jobs, then wait for each result"
ids=()
for image in dog.png bird.gif fox.webp; do
  ids+=("$(pgjobq enqueue thumbnails "{\"image\": \"$image\"}")")
done
say "enqueued jobs ${ids[*]}"
for id in "${ids[@]}"; do run pgjobq wait "$id" --timeout 30s; done
run pgjobq show "${ids[0]}"

step "11. Redis goes away: nothing is lost, only latency grows"
say "Redis only wakes workers and waiters up. Stopping it (our throwaway one)..."
kill "$PGJOBQ_REDIS_PID"
wait "$PGJOBQ_REDIS_PID" 2>/dev/null || true
PGJOBQ_REDIS_PID=
say "...the job is still enqueued (a warning), and the worker finds it by"
say "polling PostgreSQL:"
run pgjobq enqueue thumbnails '{"image": "owl.svg"}' --wait --timeout 30s

step "12. pgjobq status"
run pgjobq status

step "13. Stop the workers: SIGTERM lets a running job finish, then they exit 0"
for pid in "${worker_pids[@]}"; do kill -TERM "$pid"; done
for pid in "${worker_pids[@]}"; do
  code=0
  wait "$pid" || code=$?
  say "worker $pid exited with code $code"
done
worker_pids=()
sleep 0.1  # let the log taggers print their last lines
printf '\n%sDone.%s Stopping PostgreSQL and removing %s.\n' "$green" "$reset" "$work"
