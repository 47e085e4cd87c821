#pragma once

// What every benchmark row shares: owned connections and plain SQL through
// libpq (the bench uses only pgjobq's public headers), clocks and
// statistics, the job payload, and the databases the run creates.

#include <libpq-fe.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pgjobq/connection.h"

namespace pgjobq::bench {

using SteadyClock = std::chrono::steady_clock;

// Seconds from `since` to now.
double seconds_since(SteadyClock::time_point since);

// Milliseconds between two instants.
double milliseconds_between(SteadyClock::time_point from,
                            SteadyClock::time_point to);

struct PgResultDeleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using PgResultPtr = std::unique_ptr<PGresult, PgResultDeleter>;

// Runs `sql` with text parameters (unnamed statement, like pgjobq's own
// enqueue on a caller's connection). Throws std::runtime_error naming `sql`
// if it fails.
PgResultPtr exec(PGconn* db, const char* sql,
                 std::initializer_list<std::string_view> params = {});

// Runs SQL text without parameters (may hold several statements).
void exec_script(PGconn* db, const std::string& sql);

// The first column of the first row of `sql`, as text.
std::string query_value(PGconn* db, const std::string& sql);

// `url` with its database replaced by `database`. Understands postgres://
// and postgresql:// URIs and libpq key=value strings.
std::string with_database(std::string_view url, std::string_view database);

// Median and percentile (0..100, nearest rank) of `values`; 0 when empty.
double median(std::vector<double> values);
double percentile(std::vector<double> values, double p);

// The job every row enqueues (about 70 bytes of JSON), and its text.
const nlohmann::json& payload();
const std::string& payload_text();

// A process-wide counter for the reference table's unique positions.
std::int64_t next_reference_positions(std::int64_t count);

// Creates the pgjobq schema (pgjobq::migrate) and the reference table
// bench.jobs, shaped like pgjobq.jobs (same columns, defaults, indexes and
// fillfactor), in the database `db` is connected to.
void prepare_database(PGconn* db);

// PostgreSQL settings that decide commit cost, as (name, value).
std::vector<std::pair<std::string, std::string>> server_settings(PGconn* db);

// The 1-minute load average (0 if unknown).
double load_average();

// Progress line on stderr.
void progress(const std::string& line);

// A database of its own for one benchmark run, dropped on destruction.
class ScratchDatabase {
 public:
  // Creates `name` on the server `server_url` points at.
  ScratchDatabase(std::string server_url, std::string name);
  ~ScratchDatabase();
  ScratchDatabase(const ScratchDatabase&) = delete;
  ScratchDatabase& operator=(const ScratchDatabase&) = delete;

  const std::string& url() const noexcept { return url_; }
  const std::string& name() const noexcept { return name_; }
  // A connection to it that keeps NOTICEs off stderr.
  PgConnPtr connect() const;

 private:
  std::string server_url_;
  std::string name_;
  std::string url_;
};

}  // namespace pgjobq::bench
