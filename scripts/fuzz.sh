#!/usr/bin/env bash
# Fuzzes pgjobq's parsers with libFuzzer, under AddressSanitizer and
# UndefinedBehaviorSanitizer, for a bounded time per target; see
# docs/security.md for what each target checks and what was found.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Targets (tests/fuzz/): redact redis_url duration handler_output.
# Builds with clang++-14 in build-fuzz/ (coverage for the library and the
# command line's parsing too). The corpus grows in build-fuzz/corpus/NAME;
# inputs that break a target land in build-fuzz/artifacts/NAME/. Exits 1 if
# any target found something.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(redact redis_url duration handler_output)

cxx=$(command -v clang++-14 || command -v clang++ || true)
if [ -z "$cxx" ]; then
  echo "fuzz.sh: clang++ not found (apt-get install clang-14 libclang-rt-14-dev)" >&2
  exit 1
fi

build=build-fuzz
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPGJOBQ_FUZZ=ON -DPGJOBQ_SANITIZE=ON \
  -DPGJOBQ_BUILD_BENCH=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link" >/dev/null
cmake --build "$build" -j "$(nproc)" \
  --target "${targets[@]/#/fuzz_}" >/dev/null

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for name in "${targets[@]}"; do
  corpus=$build/corpus/$name
  artifacts=$build/artifacts/$name
  mkdir -p "$corpus" "$artifacts"
  log=$build/fuzz-$name.log
  rc=0
  "$build/tests/fuzz/fuzz_$name" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$corpus" "tests/fuzz/corpus/$name" \
    >"$log" 2>&1 || rc=$?
  runs=$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" |
    grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
  found=$(find "$artifacts" -type f | wc -l)
  if [ "$rc" = 0 ] && [ "$found" = 0 ]; then
    echo "fuzz $name: ok, ${seconds}s, $runs runs, coverage $cov, corpus $(ls "$corpus" | wc -l)"
  else
    status=1
    echo "fuzz $name: FOUND something (exit $rc, $found artifact(s) in $artifacts); see $log"
    grep -m3 -E 'fuzz property violated|ERROR: |runtime error' "$log" || true
  fi
done
exit "$status"
