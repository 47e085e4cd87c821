#pragma once

#include <string>
#include <vector>

namespace pgjobq::sql {

// One schema migration: src/sql/migrations/NNN_name.sql. Migrations are
// append-only: one that has shipped never changes (databases have run it);
// a change is the next NNN. After adding one, write docs/schema.sql again
// (tests/cli/schema_test.sh says how).
struct Migration {
  int version;
  const char* name;
  const char* text;
};

// Every migration, in version order. Generated from the .sql files by
// cmake/embed_migrations.cmake.
const std::vector<Migration>& migrations();

}  // namespace pgjobq::sql
