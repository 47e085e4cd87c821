#!/usr/bin/env bash
# Starts a throwaway PostgreSQL 15 and redis-server in a temporary directory
# (loopback ports and unix sockets), runs ctest in BUILD_DIR with the given
# arguments, and stops both servers from an exit trap, even when tests fail.
#
#   tests/run.sh BUILD_DIR [ctest arguments...]
#
# Tests find the servers through PGJOBQ_TEST_* variables (see
# tests/support/services.cc). tests/services.sh does the starting and
# stopping, and is shared with the demo, the benchmarks and the chaos run.
set -euo pipefail

build_dir=${1:?usage: tests/run.sh BUILD_DIR [ctest args...]}
shift
here=$(cd "$(dirname "$0")" && pwd)

# shellcheck source=tests/services.sh
source "$here/services.sh"
services_start test
trap services_stop EXIT

cd "$build_dir"
ctest --output-on-failure "$@"
