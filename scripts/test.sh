#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is
# missing, checks formatting, builds, and runs every test against throwaway
# PostgreSQL and Redis servers; then runs every test again (but the
# packaging test and the benchmark's smoke test) in a build with
# AddressSanitizer and UndefinedBehaviorSanitizer.
#
#   scripts/test.sh                          # everything
#   PGJOBQ_SKIP_SANITIZE=1 scripts/test.sh   # the plain round only
#   PGJOBQ_STANDALONE=1 scripts/test.sh      # also each source on its own
#
# Time matters (CI allows 10 minutes on 2 cores), so: builds are
# unoptimized (the benchmarks build their own, optimized) unity builds (each
# target's sources compiled as one file: half the CPU time), the sanitized
# build compiles at the lowest CPU priority while the plain round's tests
# run, which mostly wait on the servers, and the sanitized round starts the
# tests the plain round found slowest first. The sanitized build uses
# clang++-14 (the plain one the default compiler, g++): it compiles it with
# half the CPU time g++ takes (87 s against about 150 s on 2 cores), and
# warnings are then errors under both compilers. Unity builds hide a source
# that uses what only another file of its batch includes: with
# PGJOBQ_STANDALONE=1 every source is also compiled on its own, checked
# only (scripts/syntax-only.sh), at low priority while the sanitized tests
# run. That costs CI's time budget (a run took 599 s with it), so CI does
# not; run it before a change that adds or moves includes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
started=$(date +%s)

# A heading on stderr, with the seconds since the start.
stage() { echo "== [$(($(date +%s) - started)) s] $*" >&2; }

scripts/install-deps.sh

jobs=$(nproc)
# Tests mostly wait on servers, so run more at once than there are cores.
test_jobs=$((jobs * 2))
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi

stage formatting
mapfile -t sources < <(git ls-files '*.cc' '*.h')
clang-format --dry-run --Werror "${sources[@]}"

stage build
cmake "${generator[@]}" -S . -B build/test -DCMAKE_BUILD_TYPE= \
  -DPGJOBQ_UNITY_BUILD=ON >/dev/null
cmake --build build/test -j "$jobs"

sanitize_pid=
if [ -z "${PGJOBQ_SKIP_SANITIZE:-}" ]; then
  stage "building with AddressSanitizer and UndefinedBehaviorSanitizer" \
    "(in the background, build/sanitize.log)"
  # A build directory configured for another compiler starts afresh.
  grep -qs 'CMAKE_CXX_COMPILER:[A-Z]*=.*clang++-14' \
    build/sanitize/CMakeCache.txt || rm -rf build/sanitize
  cmake "${generator[@]}" -S . -B build/sanitize -DCMAKE_BUILD_TYPE= \
    -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_CXX_FLAGS=-g1 \
    -DPGJOBQ_SANITIZE=ON -DPGJOBQ_BUILD_BENCH=OFF \
    -DPGJOBQ_UNITY_BUILD=ON >/dev/null
  # Its own process group, so that a failure here stops the whole build.
  setsid nice -n 19 cmake --build build/sanitize -j "$jobs" \
    >build/sanitize.log 2>&1 &
  sanitize_pid=$!
fi

# Compiles every source on its own, checking only; in the background.
standalone_pid=
start_standalone_check() {
  stage "compiling each source on its own (in the background," \
    "build/standalone.log)"
  cmake "${generator[@]}" -S . -B build/standalone -DCMAKE_BUILD_TYPE= \
    -DCMAKE_CXX_COMPILER_LAUNCHER="$root/scripts/syntax-only.sh" \
    -DCMAKE_CXX_LINKER_LAUNCHER="$root/scripts/syntax-only.sh" \
    -DPGJOBQ_PRECOMPILE_HEADERS=OFF -DPGJOBQ_BUILD_BENCH=OFF >/dev/null
  # Object files only: nothing links, no test list is read from a binary.
  mapfile -t objects < <(cmake --build build/standalone -- -t targets all |
    sed -n 's/^\(.*\.o\): CXX_COMPILER.*/\1/p')
  setsid nice -n 19 cmake --build build/standalone -j "$jobs" -- \
    "${objects[@]}" >build/standalone.log 2>&1 &
  standalone_pid=$!
}
finish_standalone_check() {
  if ! wait "$standalone_pid"; then
    standalone_pid=
    grep -A8 FAILED build/standalone.log | head -60 >&2
    stage "a source does not compile on its own"
    exit 1
  fi
  standalone_pid=
}
trap '[ -n "$sanitize_pid" ] && kill -- "-$sanitize_pid" 2>/dev/null;
  [ -n "$standalone_pid" ] && kill -- "-$standalone_pid" 2>/dev/null; true' EXIT

standalone=${PGJOBQ_STANDALONE:-}

stage tests
[ -n "$sanitize_pid" ] || [ -z "$standalone" ] || start_standalone_check
tests/run.sh "$root/build/test" -j "$test_jobs"

if [ -n "$sanitize_pid" ]; then
  if ! wait "$sanitize_pid"; then
    sanitize_pid=
    tail -50 build/sanitize.log >&2
    stage "the sanitized build failed"
    exit 1
  fi
  sanitize_pid=
  [ -z "$standalone" ] || start_standalone_check
  stage "tests under the sanitizers"
  # ctest runs the tests it knows to be slow first.
  mkdir -p build/sanitize/Testing/Temporary
  cp build/test/Testing/Temporary/CTestCostData.txt \
    build/sanitize/Testing/Temporary/ 2>/dev/null || true
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    tests/run.sh "$root/build/sanitize" -j "$test_jobs"
fi
[ -z "$standalone_pid" ] || finish_standalone_check
stage "all tests passed"
