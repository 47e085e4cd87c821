#!/usr/bin/env bash
# docs/schema.sql is the live schema, all migrations applied, in one file:
# what `pgjobq migrate` leaves in a fresh database, as pg_dump prints it
# (ctest CliSchema.DocsSchemaIsWhatTheMigrationsCreate, run through
# tests/run.sh). This test fails when a migration changes the schema and
# the file was not written again. To write it again:
#
#   PGJOBQ_WRITE_SCHEMA=1 tests/run.sh build/test -R CliSchema
#
#   tests/cli/schema_test.sh PGJOBQ_CLI SOURCE_DIR
set -euo pipefail

cli=${1:?usage: schema_test.sh PGJOBQ_CLI SOURCE_DIR}
source_dir=${2:?usage: schema_test.sh PGJOBQ_CLI SOURCE_DIR}
admin=${PGJOBQ_TEST_PG_ADMIN_URL:?run through tests/run.sh}
pg_bin=${PGJOBQ_PG_BIN:-/usr/lib/postgresql/15/bin}
want="$source_dir/docs/schema.sql"

db="pgjobq_schema_$$"
url="${admin%/*}/$db"
out=$(mktemp -d /tmp/pgjobq-schema.XXXXXX)
cleanup() {
  "$pg_bin/psql" -qX "$admin" -c "DROP DATABASE IF EXISTS $db" >/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT

"$pg_bin/psql" -qX "$admin" -c "CREATE DATABASE $db" >/dev/null
"$cli" migrate --db "$url" >/dev/null

{
  cat <<'EOF'
-- The pgjobq schema as `pgjobq migrate` leaves it: every migration of
-- src/sql/migrations/ applied, printed by pg_dump (PostgreSQL 15). For
-- reading only: the migrations are what creates it, and their comments
-- say why each part is as it is. Written by tests/cli/schema_test.sh,
-- which fails when a migration changes the schema and this file was not
-- written again:
--
--   PGJOBQ_WRITE_SCHEMA=1 tests/run.sh build/test -R CliSchema
EOF
  # Only the objects: from the first object's heading to the "dump
  # complete" line, without pg_dump's versions, its random \restrict key
  # and its session settings.
  "$pg_bin/pg_dump" --schema-only --no-owner --no-privileges \
    --schema=pgjobq "$url" |
    awk '/^-- Name: / && !started { started = 1; print ""; held = "--" }
         /^-- PostgreSQL database dump complete$/ { started = 0 }
         started { print held; held = $0 }' |
    sed -e '/^SET /d' -e '/^SELECT pg_catalog.set_config/d' | cat -s
} >"$out/schema.sql"

if [ "${PGJOBQ_WRITE_SCHEMA:-}" = 1 ]; then
  cp "$out/schema.sql" "$want"
  echo "wrote $want"
  exit 0
fi

if ! diff -u "$want" "$out/schema.sql"; then
  echo "schema test: docs/schema.sql is not what the migrations create;" \
    "write it again with PGJOBQ_WRITE_SCHEMA=1 tests/run.sh build/test" \
    "-R CliSchema" >&2
  exit 1
fi
echo "docs/schema.sql is what the migrations create"
