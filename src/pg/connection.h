#pragma once

// The libpq edge: owned connections, results, and the one place statements
// are executed. Knows nothing of jobs.

#include <libpq-fe.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "pgjobq/connection.h"

namespace pgjobq::pg {

template <auto Free>
struct Deleter {
  void operator()(auto* p) const noexcept { Free(p); }
};
using ResultPtr = std::unique_ptr<PGresult, Deleter<PQclear>>;

// A statement parameter in text format; nullopt is SQL NULL.
using Param = std::optional<std::string>;

// A named SQL statement. Owned connections prepare it under `name` on first
// use; borrowed ones run `text` as an unnamed statement, since a caller's
// connection may sit behind a pooler or have its statements deallocated.
struct Statement {
  const char* name;
  const char* text;
};

// The rows of a successful statement. Column accessors take (row, column).
class Result {
 public:
  explicit Result(ResultPtr result) noexcept : result_(std::move(result)) {}

  int rows() const noexcept { return PQntuples(result_.get()); }
  bool is_null(int row, int col) const noexcept {
    return PQgetisnull(result_.get(), row, col) != 0;
  }
  std::string_view text(int row, int col) const noexcept {
    return {PQgetvalue(result_.get(), row, col),
            static_cast<std::size_t>(PQgetlength(result_.get(), row, col))};
  }
  std::int64_t int64(int row, int col) const;
  // A bytea column's bytes (either output format, hex or escape).
  std::string bytes(int row, int col) const;
  bool boolean(int row, int col) const noexcept {
    return text(row, col) == "t";
  }

 private:
  ResultPtr result_;
};

// Checks a result from libpq: returns it if the statement succeeded, else
// throws ConnectionError (the connection is gone) or DatabaseError (with the
// server's SQLSTATE and primary message on one line).
Result check(PGconn* conn, PGresult* result);

// Whether a notice (or an error that came while no statement ran) says the
// server is ending the session: SQLSTATE class 57P (shutdown, crash,
// terminated backend, idle timeout). The connection's loss follows and is
// reported as such, so the notice itself need not be.
bool announces_session_end(const PGresult* notice) noexcept;

// A notice as one line: "WARNING: its message".
std::string notice_line(const PGresult* notice);

// Whether the session's client_encoding is UTF8. In any other, PostgreSQL
// converts text it is sent from that encoding and text it returns into it,
// so pgjobq's UTF-8 must not go through text columns and parameters as is.
bool utf8_session(PGconn* conn) noexcept;

// Runs one statement with text parameters on any connection and returns its
// rows. Throws as check() does. Sent outside a transaction, where it is a
// transaction of its own, a serialization failure (40001) runs it again,
// up to 100 times; in a transaction, it is thrown.
Result exec(PGconn* conn, const Statement& statement,
            std::span<const Param> params = {});

// Runs SQL text without parameters, possibly several statements (simple
// query protocol, for migrations and BEGIN/COMMIT). Returns the last result.
Result exec_script(PGconn* conn, const char* sql);

// Renders a value as a text parameter.
inline Param param(std::int64_t value) { return std::to_string(value); }
inline Param param(std::string value) { return value; }
inline Param param(std::string_view value) { return std::string(value); }
inline Param param(const char* value) { return std::string(value); }

// A libpq connection keyword and its value, such as {"keepalives", "1"}.
struct Keyword {
  const char* name;
  std::string value;
};

// pgjobq::connect_database, with `extra` keywords. The URL's own settings
// win over them, except client_encoding, which is always UTF8. Throws
// ConnectionError. Thread-safe.
PgConnPtr connect(std::string_view url, std::span<const Keyword> extra);

// Throws InvalidInput if libpq cannot parse `url` (or, when it is empty,
// DATABASE_URL) as the connection string or URI it looks like: what
// connect() would otherwise report as a ConnectionError only once it
// tries. A plain database name always passes. Without a server.
void check_url(std::string_view url);

// An owned connection that prepares statements on first use.
class Connection {
 public:
  // Connects to `url` (see pg::connect). Throws ConnectionError.
  static Connection open(std::string_view url,
                         std::span<const Keyword> extra = {});

  explicit Connection(PgConnPtr conn) noexcept : conn_(std::move(conn)) {}

  PGconn* get() const noexcept { return conn_.get(); }
  bool alive() const noexcept {
    return conn_ && PQstatus(conn_.get()) == CONNECTION_OK;
  }

  // Runs `statement`, preparing it on this connection the first time.
  Result exec(const Statement& statement, std::span<const Param> params = {});

  // Prepares `statement` on this connection unless it already is. Pipelines
  // need their statements prepared before they start.
  void prepare(const Statement& statement);
  bool is_prepared(const Statement& statement) const noexcept {
    return prepared_.contains(statement.name);
  }

 private:
  PgConnPtr conn_;
  std::unordered_set<std::string_view> prepared_;
};

// One statement of a pipeline.
struct Call {
  const Statement* statement;
  std::vector<Param> params;
};

// Sends every call in one round trip (libpq pipeline mode) and returns their
// results in order. The statements must already be prepared on `conn`. If
// one fails, the server skips the rest; this throws the first error (as
// check() does) after reading everything, so `conn` stays usable unless it
// was lost. Without a BEGIN among them, the calls are one implicit
// transaction that commits at the pipeline's sync; a failure to commit there
// (a deferred constraint, a serialization failure) is thrown too.
std::vector<Result> run_pipeline(Connection& conn, std::span<const Call> calls);

}  // namespace pgjobq::pg
