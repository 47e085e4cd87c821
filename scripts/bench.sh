#!/usr/bin/env bash
# The benchmarks (docs/benchmarks.md). Builds an optimized pgjobq_bench (and
# the pgjobq CLI, for row 4) in its own build directory, starts a throwaway
# PostgreSQL 15 with its default durability settings (fsync and
# synchronous_commit on) and a throwaway redis-server, both on loopback,
# runs every row, prints the table on stdout (JSON with --json), and stops
# both servers, even on failure. Progress goes to stderr.
#
#   scripts/bench.sh [--json] [--quick] [--rows 1,3a,...] [pgjobq_bench options]
#
# PGJOBQ_BENCH_BUILD_DIR overrides the build directory (default build-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build_dir=${PGJOBQ_BENCH_BUILD_DIR:-$root/build-bench}

echo "== build ($build_dir)" >&2
# -O2 rather than CMake's -O3: g++ 12 at -O3 reports a false -Wrestrict in
# std::string concatenation, and warnings are errors.
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
  "-DCMAKE_CXX_FLAGS_RELEASE=-O2 -DNDEBUG" -DPGJOBQ_BUILD_TESTS=OFF \
  -DPGJOBQ_BUILD_BENCH=ON >&2
cmake --build "$build_dir" -j "$(nproc)" --target pgjobq_bench >&2
cli=()
if cmake --build "$build_dir" -j "$(nproc)" --target pgjobq_cli >&2 2>/dev/null &&
    [ -x "$build_dir/cli/pgjobq" ]; then
  cli=(--pgjobq-cli "$build_dir/cli/pgjobq")
else
  echo "== no pgjobq CLI target in this tree: row 4 will be skipped" >&2
fi

# shellcheck source=tests/services.sh
source "$root/tests/services.sh"
echo "== starting PostgreSQL and Redis (bench profile: default durability)" >&2
services_start bench
trap services_stop EXIT

echo "== running" >&2
"$build_dir/bench/pgjobq_bench" --db "$PGJOBQ_TEST_PG_ADMIN_URL" \
  --redis "$PGJOBQ_TEST_REDIS_URL" "${cli[@]}" "$@"
