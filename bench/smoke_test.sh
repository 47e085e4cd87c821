#!/usr/bin/env bash
# Smoke test of the benchmark (ctest bench_smoke, run through tests/run.sh):
# a --quick run of every row must succeed and print a sane table, and the
# --json form must hold every row. It checks that the command works, never
# how fast anything is.
#
#   bench/smoke_test.sh PGJOBQ_BENCH [PGJOBQ_CLI]
set -euo pipefail

bench=${1:?usage: smoke_test.sh PGJOBQ_BENCH [PGJOBQ_CLI]}
cli=${2:-}
db=${PGJOBQ_TEST_PG_ADMIN_URL:?run through tests/run.sh}
redis=${PGJOBQ_TEST_REDIS_URL:?run through tests/run.sh}
out=$(mktemp -d /tmp/pgjobq-bench-smoke.XXXXXX)
trap 'rm -rf "$out"' EXIT

args=(--quick --db "$db" --redis "$redis")
if [ -n "$cli" ]; then args+=(--pgjobq-cli "$cli"); fi

fail() {
  echo "bench smoke test: $*" >&2
  echo "--- table" >&2
  cat "$out/table" >&2 || true
  echo "--- stderr (last lines)" >&2
  tail -30 "$out/stderr" >&2 || true
  exit 1
}

"$bench" "${args[@]}" >"$out/table" 2>"$out/stderr" ||
  fail "the benchmark exited $?"

grep -q '^PostgreSQL:.*synchronous_commit=' "$out/table" ||
  fail "the PostgreSQL settings are missing"
grep -q 'progress\|round\|bench:' "$out/stderr" ||
  fail "no progress on stderr"

# check_figure ROW VALUE [positive]: VALUE is a number (its unit aside),
# and with `positive` not zero.
check_figure() {
  local number
  number=$(echo "$2" | tr -d ' ,' | sed 's/ms$//; s/jobs\/s$//; s/MiB$//')
  [[ "$number" =~ ^[0-9]+(\.[0-9]+)?$ ]] ||
    fail "row $1: \"$2\" is not a number"
  if [ "${3:-}" = positive ] && [[ "$number" =~ ^0(\.0+)?$ ]]; then
    fail "row $1: a figure is zero"
  fi
}

# Every row, each with a positive pgjobq figure and reference, and a ratio
# (row 4 may be skipped when there is no CLI binary). The ratio is printed
# to two places, so a positive one can read 0.00: row 4's, a process per
# job, did on a loaded machine (12 jobs/s against 2,447 commits/s).
for row in 1 2 3a 3b 4 5a 5b '6 p50' '6 p99' '6 max' '7 p50' '7 p99' \
    8/1 8/3a 8/3b 9; do
  line=$(grep -F "| $row | " "$out/table") || fail "row $row is missing"
  if [ "$row" = 4 ] && [ -z "$cli" ] && echo "$line" | grep -q skipped; then
    continue
  fi
  echo "$line" | grep -q 'FAILED\|skipped' && fail "row $row: $line"
  # Columns: | row | measures | pgjobq | ref measures | ref | ratio | ...
  IFS='|' read -r _ _ _ pgjobq _ ref ratio _ <<<"$line"
  check_figure "$row" "$pgjobq" positive
  check_figure "$row" "$ref" positive
  check_figure "$row" "$ratio"
done

# JSON: quick again, just the cheap rows, and every field there.
"$bench" "${args[@]}" --rows 1,6 --json >"$out/json" 2>"$out/stderr" ||
  fail "the --json run exited $?"
for key in '"postgresql"' '"synchronous_commit"' '"rows"' '"ratio"' \
    '"row": "1"' '"row": "6 p99"'; do
  grep -qF "$key" "$out/json" || fail "JSON lacks $key"
done
echo "bench smoke test: passed"
