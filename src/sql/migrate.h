#pragma once

#include <string>
#include <vector>

namespace pgjobq::sql {

// One schema migration: src/sql/migrations/NNN_name.sql. Migrations are
// append-only: one that has shipped never changes (databases have run it);
// a change is the next NNN. A migration keeps the previous release's
// statements working (add and replace; drop or rename only what no
// release still in service uses): upgrades migrate first and roll the
// binaries out after (README, "Upgrading"), and a worker refuses only a
// schema older than itself (queue_session.cc, check_session). A migration
// that alters a busy table runs on a live system: migrate.cc retries its
// locks rather than queue traffic behind it. After adding one, write
// docs/schema.sql again (tests/cli/schema_test.sh says how).
struct Migration {
  int version;
  const char* name;
  const char* text;
};

// Every migration, in version order. Generated from the .sql files by
// cmake/embed_migrations.cmake.
const std::vector<Migration>& migrations();

}  // namespace pgjobq::sql
