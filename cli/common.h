#pragma once

// What every command shares: the connection options, exit codes, and the
// parsing of arguments (durations, job ids) that CLI11 leaves as strings.

#include <chrono>
#include <cstdint>
#include <exception>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pgjobq/connection.h"
#include "pgjobq/job.h"

namespace pgjobq::cli {

// The exit codes of DESIGN.md.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitQueueFull = 3;
inline constexpr int kExitTimeout = 4;
inline constexpr int kExitJobFailed = 5;
inline constexpr int kExitNoSuchJob = 6;

// The global options: --db and --redis. Empty means the environment
// (DATABASE_URL or PG* variables; REDIS_URL or redis://127.0.0.1:6379).
struct Connections {
  std::string db_url;
  std::string redis_url;
};

// The passwords `connections` and the environment hold: of both URLs, of
// DATABASE_URL and REDIS_URL, and PGPASSWORD. What no message may show
// (pgjobq::scrub_secrets).
std::vector<std::string> connection_secrets(const Connections& connections);

// Connects to PostgreSQL (connect_database) and keeps the server's
// NOTICE chatter ("schema already exists, skipping") off stderr; warnings
// still show, as one "pgjobq: postgres: ..." line each.
PgConnPtr connect(const Connections& connections);
// The same, giving up on a server that does not answer after `within`
// (at least 2 s; see connect_database).
PgConnPtr connect(const Connections& connections,
                  std::chrono::milliseconds within);
// Whether a connection that just failed is worth trying again: the server
// did not answer, cannot take connections yet (starting up, shutting
// down, recovering), or is out of connections (max_connections, a role's
// or a database's CONNECTION LIMIT) or other resources. One that answers
// and refused otherwise (a password, a role, a database gone or closed to
// connections, pg_hba) will refuse again. Asks the server with a
// connection of its own, reading its refusal's SQLSTATE, so that no
// message, maybe translated, has to be read.
bool worth_reconnecting(const Connections& connections);

// An error with its own exit code, for outcomes the library reports as
// values (a full queue) and for usage errors found after parsing.
class ExitError : public std::runtime_error {
 public:
  ExitError(int code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

// A usage error (exit 2) found after CLI11 accepted the arguments.
inline ExitError usage_error(const std::string& message) {
  return ExitError(kExitUsage, message);
}

// The exit code for an exception a command let through: DESIGN.md's
// mapping of pgjobq's errors (and ExitError's own code).
int exit_code_for(const std::exception& error) noexcept;

// Parses a duration: terms of a non-negative decimal number and a unit,
// one of us, ms, s, m, h, d, w or their spelled-out names (sec, minutes,
// hour, days, weeks...), with or without spaces between them ("30s",
// "1.5m", "7d", "1h30m", "7 days"). A bare number means seconds when
// `bare_seconds` is true and is refused otherwise. Throws ExitError (usage)
// naming `option` for anything else, or for more than ten years.
std::chrono::microseconds parse_duration(std::string_view text,
                                         std::string_view option,
                                         bool bare_seconds = true);

// Parses a job id: a positive decimal integer. Throws ExitError: usage for
// anything else, "no such job" for digits beyond a bigint (no job has them).
// Messages quote refused arguments through redact(): a URL given in the
// wrong place shows no password, not even a cut-off one.
JobId parse_job_id(std::string_view text);

// A duration for people: "850ms", "42.1s", "3m07s", "5h02m", "2d04h".
std::string format_age(std::chrono::microseconds age);

// `message` made into one printable line: every secret replaced by "***",
// line breaks and other control characters by spaces
// (pgjobq::scrub_secrets).
std::string one_line(std::string message,
                     const std::vector<std::string>& secrets = {});

// `bytes` for a message: printable ASCII as is, everything else escaped
// (\n, \xNN), at most `max` bytes of it followed by "..." when cut. Safe
// to store in PostgreSQL text and to print on one line.
std::string escape_bytes(std::string_view bytes, std::size_t max = 80);

// Whether file descriptor `fd` is a terminal.
bool is_terminal(int fd) noexcept;

// Writes `line` and a newline to stdout and flushes, so that a caller
// reading our output sees each line as soon as it is final.
void print_line(std::string_view line);

// How many lines print_line() has written (main() fails a command whose
// output went to a stdout that was closed).
std::size_t lines_printed() noexcept;

}  // namespace pgjobq::cli
