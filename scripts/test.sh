#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is
# missing, checks formatting, builds, and runs every test against throwaway
# PostgreSQL and Redis servers; then builds again with AddressSanitizer and
# UndefinedBehaviorSanitizer and runs every test again.
#
#   scripts/test.sh            # everything
#   PGJOBQ_SKIP_SANITIZE=1 scripts/test.sh   # plain build only (quicker)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/install-deps.sh

jobs=$(nproc)
# Tests mostly wait on servers, so run more at once than there are cores.
test_jobs=$(( jobs * 2 ))

echo "== formatting" >&2
mapfile -t sources < <(git ls-files '*.cc' '*.h' 2>/dev/null || find include src cli tests bench examples -name '*.cc' -o -name '*.h')
clang-format --dry-run --Werror "${sources[@]}"

echo "== build" >&2
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/release -j "$jobs"

echo "== tests" >&2
tests/run.sh "$root/build/release" -j "$test_jobs"

if [ -z "${PGJOBQ_SKIP_SANITIZE:-}" ]; then
  echo "== build with AddressSanitizer and UndefinedBehaviorSanitizer" >&2
  cmake -S . -B build/sanitize -DCMAKE_BUILD_TYPE=Debug -DPGJOBQ_SANITIZE=ON \
    -DPGJOBQ_BUILD_BENCH=OFF >/dev/null
  cmake --build build/sanitize -j "$jobs"
  echo "== tests under the sanitizers" >&2
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    tests/run.sh "$root/build/sanitize" -j "$test_jobs"
fi
echo "== all tests passed" >&2
