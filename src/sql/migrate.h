#pragma once

#include <string>
#include <vector>

namespace pgjobq::sql {

// One schema migration: src/sql/migrations/NNN_name.sql.
struct Migration {
  int version;
  const char* name;
  const char* text;
};

// Every migration, in version order. Generated from the .sql files by
// cmake/embed_migrations.cmake.
const std::vector<Migration>& migrations();

}  // namespace pgjobq::sql
