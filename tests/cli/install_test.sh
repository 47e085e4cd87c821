#!/usr/bin/env bash
# What users get: installs pgjobq from BUILD_DIR into a temporary prefix,
# builds examples/ against it (with find_package(pgjobq), and one program
# with pkg-config), then runs the examples against the test servers.
#
#   tests/cli/install_test.sh BUILD_DIR SOURCE_DIR [SANITIZE]
#
# Run by ctest under tests/run.sh, which exports the servers' addresses.
set -euo pipefail

build=${1:?usage: install_test.sh BUILD_DIR SOURCE_DIR [SANITIZE]}
source_dir=${2:?usage: install_test.sh BUILD_DIR SOURCE_DIR [SANITIZE]}
sanitize=${3:-OFF}
: "${PGJOBQ_TEST_PG_ADMIN_URL:?run the tests through tests/run.sh}"
: "${PGJOBQ_TEST_REDIS_URL:?run the tests through tests/run.sh}"
pg_bin=${PGJOBQ_PG_BIN:-/usr/lib/postgresql/15/bin}

tmp=$(mktemp -d /tmp/pgjobq-install-test.XXXXXX)
db=install_test_$$_$RANDOM
worker_pid=
psql=("$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 "$PGJOBQ_TEST_PG_ADMIN_URL")

cleanup() {
  if [ -n "$worker_pid" ]; then
    kill -KILL "$worker_pid" 2>/dev/null || true
    wait "$worker_pid" 2>/dev/null || true
  fi
  "${psql[@]}" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" \
    >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "FAILED: $*" >&2
  exit 1
}

# A library built with the sanitizers needs them in the final link too.
flags=""
case "$sanitize" in
  ON | on | 1 | TRUE | true | YES | yes)
    flags="-fsanitize=address,undefined -fno-omit-frame-pointer" ;;
esac

echo "== cmake --install $build --prefix $tmp/prefix"
cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log" ||
  { cat "$tmp/install.log"; fail "install"; }
for f in bin/pgjobq lib/libpgjobq.a include/pgjobq/enqueue.h \
    lib/cmake/pgjobq/pgjobqConfig.cmake lib/pkgconfig/pgjobq.pc; do
  [ -e "$tmp/prefix/$f" ] || fail "$f was not installed"
done
"$tmp/prefix/bin/pgjobq" --version

echo "== examples/ with find_package(pgjobq)"
cmake -S "$source_dir/examples" -B "$tmp/build" \
  -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
  >"$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log"; fail "configure"; }
cmake --build "$tmp/build" -j 2 >"$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log"; fail "build"; }

echo "== a program built with pkg-config"
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
pkg-config --exists pgjobq || fail "pkg-config does not find pgjobq"
# Small, so it compiles fast; RedisLink pulls hiredis into the link, which
# checks that the static library's dependencies are in Libs.
cat >"$tmp/pc_test.cc" <<'CC'
#include <pgjobq/connection.h>

#include <iostream>

int main() {
  pgjobq::RedisLink redis("redis://:secret@127.0.0.1:1");
  std::cout << pgjobq::redact("postgresql://u:secret@h/db") << ' '
            << redis.url() << '\n';
}
CC
# shellcheck disable=SC2046,SC2086
c++ -std=c++20 $flags -o "$tmp/pc_test" "$tmp/pc_test.cc" \
  $(pkg-config --cflags --libs pgjobq) || fail "pkg-config build"
pc_out=$("$tmp/pc_test")
echo "$pc_out"
[ "$pc_out" = "postgresql://u:***@h/db redis://:***@127.0.0.1:1" ] ||
  fail "pkg-config program printed: $pc_out"

echo "== run them"
"${psql[@]}" -c "CREATE DATABASE $db"
export DATABASE_URL="${PGJOBQ_TEST_PG_ADMIN_URL%/*}/$db"
export REDIS_URL="$PGJOBQ_TEST_REDIS_URL"
"$tmp/prefix/bin/pgjobq" migrate
"$tmp/build/order_worker" 2>"$tmp/worker.log" &
worker_pid=$!

out=$(timeout 60 "$tmp/build/place_order" ada book pen lamp) ||
  { cat "$tmp/worker.log"; fail "place_order"; }
echo "$out"
grep -q "200 OK: order 1 packed 3 of 3 item(s)" <<<"$out" ||
  fail "the order was not packed exactly once per item"

out=$(timeout 60 "$tmp/build/place_order" --rollback bob kettle) ||
  fail "place_order --rollback"
echo "$out"
grep -q "never existed" <<<"$out" || fail "rolled-back job exists"
id=$(sed -n 's/.*packing job(s): //p' <<<"$out")
[ -n "$id" ] || fail "no job id printed"
set +e
"$tmp/prefix/bin/pgjobq" show "$id" 2>/dev/null
code=$?
set -e
[ "$code" = 6 ] || fail "pgjobq show $id exited $code, not 6 (no such job)"

echo "== stop the worker with SIGTERM"
kill -TERM "$worker_pid"
for _ in $(seq 1 1000); do
  kill -0 "$worker_pid" 2>/dev/null || break
  sleep 0.01
done
set +e
wait "$worker_pid"
code=$?
set -e
worker_pid=
cat "$tmp/worker.log"
[ "$code" = 0 ] || fail "order_worker exited $code after SIGTERM"
grep -q "packed lamp of order 1" "$tmp/worker.log" || fail "worker log"
echo "== ok"
