#include "pg/connection.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "pgjobq/errors.h"

namespace pgjobq::pg {
namespace {

// libpq messages end in a newline and may span lines; ours are one line.
std::string one_line(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\n' || c == '\r') {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out += c;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

[[noreturn]] void throw_connection_lost(PGconn* conn) {
  std::string detail = one_line(PQerrorMessage(conn));
  throw ConnectionError("connection to PostgreSQL lost" +
                        (detail.empty() ? std::string() : ": " + detail));
}

struct ParamArrays {
  std::vector<const char*> values;
  explicit ParamArrays(std::span<const Param> params) {
    values.reserve(params.size());
    for (const Param& p : params) values.push_back(p ? p->c_str() : nullptr);
  }
  int count() const { return static_cast<int>(values.size()); }
};

}  // namespace

std::int64_t Result::int64(int row, int col) const {
  std::string_view s = text(row, col);
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size()) {
    throw Error("unexpected value from PostgreSQL: \"" + std::string(s) +
                "\" is not an integer");
  }
  return value;
}

std::string Result::bytes(int row, int col) const {
  std::size_t length = 0;
  unsigned char* raw = PQunescapeBytea(reinterpret_cast<const unsigned char*>(
                                           PQgetvalue(result_.get(), row, col)),
                                       &length);
  if (!raw) throw Error("out of memory reading a bytea value");
  std::string out(reinterpret_cast<const char*>(raw), length);
  PQfreemem(raw);
  return out;
}

bool utf8_session(PGconn* conn) noexcept {
  const char* encoding = PQparameterStatus(conn, "client_encoding");
  return encoding && std::string_view(encoding) == "UTF8";
}

Result check(PGconn* conn, PGresult* raw) {
  ResultPtr result(raw);
  if (!result) {
    // A caller's connection in pipeline mode gets no result from a
    // synchronous call, and is fine: it must not be taken for lost.
    if (PQstatus(conn) == CONNECTION_OK &&
        PQpipelineStatus(conn) != PQ_PIPELINE_OFF) {
      throw InvalidInput(
          "the connection is in pipeline mode; pgjobq runs its statements "
          "synchronously (leave pipeline mode first)");
    }
    throw_connection_lost(conn);
  }
  switch (PQresultStatus(result.get())) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
      return Result(std::move(result));
    case PGRES_PIPELINE_ABORTED:
      throw DatabaseError("statement skipped after an earlier error", "");
    default:
      break;
  }
  if (PQstatus(conn) == CONNECTION_BAD) throw_connection_lost(conn);
  const char* state = PQresultErrorField(result.get(), PG_DIAG_SQLSTATE);
  const char* primary =
      PQresultErrorField(result.get(), PG_DIAG_MESSAGE_PRIMARY);
  std::string message =
      one_line(primary ? primary : PQresultErrorMessage(result.get()));
  std::string sqlstate = state ? state : "";
  // An unmigrated database is the commonest first-run mistake, and a
  // database behind its binary (a function the binary needs is missing)
  // the commonest upgrade mistake; say so.
  if (sqlstate == "3F000" || sqlstate == "42P01" || sqlstate == "42704" ||
      sqlstate == "42883") {
    message +=
        " (is the pgjobq schema missing, or older than this pgjobq? run "
        "`pgjobq migrate`)";
  }
  // read_only_sql_transaction: pgjobq writes.
  if (sqlstate == "25006") {
    message +=
        " (pgjobq writes: it needs a read-write transaction on the "
        "primary, not a hot standby, a READ ONLY transaction or "
        "default_transaction_read_only)";
  }
  // Server-side failures that mean the session is over (admin shutdown,
  // crash recovery) are connection errors to our callers.
  if (sqlstate.starts_with("57P") || sqlstate.starts_with("08")) {
    throw ConnectionError("connection to PostgreSQL lost: " + message);
  }
  throw DatabaseError(message, sqlstate);
}

bool announces_session_end(const PGresult* notice) noexcept {
  const char* state = PQresultErrorField(notice, PG_DIAG_SQLSTATE);
  return state && std::string_view(state).starts_with("57P");
}

std::string notice_line(const PGresult* notice) {
  const char* severity = PQresultErrorField(notice, PG_DIAG_SEVERITY);
  const char* primary = PQresultErrorField(notice, PG_DIAG_MESSAGE_PRIMARY);
  if (!primary) return one_line(PQresultErrorMessage(notice));
  return one_line(std::string(severity ? severity : "NOTICE") + ": " + primary);
}

Result exec(PGconn* conn, const Statement& statement,
            std::span<const Param> params) {
  ParamArrays arrays(params);
  // Outside a transaction the statement is a transaction of its own, and a
  // serialization failure undid all of it: run it again. A
  // session whose default_transaction_isolation is REPEATABLE READ or
  // SERIALIZABLE gets one whenever a row it waited for (its queue's, say,
  // held by another enqueuer) was changed meanwhile; an autocommit enqueue
  // used to fail with "could not serialize access due to concurrent
  // update". Each failure means another transaction committed first, so
  // the retries do not spin; they are bounded all the same. Inside the
  // caller's transaction the error is the caller's (the transaction is
  // aborted). A deadlock (40P01) is not retried: PostgreSQL chose this
  // statement to fail, and its caller is told, as before
  // (RaceTest.TransactionalHandlerThatEnqueuesSurvivesADeadlock).
  constexpr int kMaxAttempts = 100;
  bool own_transaction = PQtransactionStatus(conn) == PQTRANS_IDLE;
  for (int attempt = 1;; ++attempt) {
    try {
      return check(conn,
                   PQexecParams(conn, statement.text, arrays.count(), nullptr,
                                arrays.values.data(), nullptr, nullptr, 0));
    } catch (const DatabaseError& e) {
      if (!own_transaction || e.sqlstate() != "40001" ||
          attempt == kMaxAttempts ||
          PQtransactionStatus(conn) != PQTRANS_IDLE) {
        throw;
      }
    }
    // Most failures pass at once; a crowd of them backs off a little.
    if (attempt > 3) {
      std::this_thread::sleep_for(
          std::chrono::milliseconds(std::min(attempt, 50)));
    }
  }
}

Result exec_script(PGconn* conn, const char* sql) {
  return check(conn, PQexec(conn, sql));
}

Connection Connection::open(std::string_view url,
                            std::span<const Keyword> extra) {
  return Connection(connect(url, extra));
}

void Connection::prepare(const Statement& statement) {
  if (is_prepared(statement)) return;
  check(conn_.get(),
        PQprepare(conn_.get(), statement.name, statement.text, 0, nullptr));
  prepared_.insert(statement.name);
}

Result Connection::exec(const Statement& statement,
                        std::span<const Param> params) {
  prepare(statement);
  ParamArrays arrays(params);
  return check(conn_.get(),
               PQexecPrepared(conn_.get(), statement.name, arrays.count(),
                              arrays.values.data(), nullptr, nullptr, 0));
}

std::vector<Result> run_pipeline(Connection& conn,
                                 std::span<const Call> calls) {
  PGconn* c = conn.get();
  for (const Call& call : calls) {
    if (!conn.is_prepared(*call.statement)) {
      throw Error(std::string("internal error: statement ") +
                  call.statement->name + " piped before being prepared");
    }
  }
  if (PQenterPipelineMode(c) != 1) throw_connection_lost(c);
  bool sent = true;
  for (const Call& call : calls) {
    ParamArrays arrays(call.params);
    if (PQsendQueryPrepared(c, call.statement->name, arrays.count(),
                            arrays.values.data(), nullptr, nullptr, 0) != 1) {
      sent = false;
      break;
    }
  }
  if (!sent || PQpipelineSync(c) != 1) {
    PQexitPipelineMode(c);
    throw_connection_lost(c);
  }
  // Read every result up to the sync point before judging any of them.
  std::vector<ResultPtr> raw;
  raw.reserve(calls.size());
  for (std::size_t i = 0; i < calls.size(); ++i) {
    ResultPtr r(PQgetResult(c));
    if (!r) break;  // the connection is gone
    while (ResultPtr extra{PQgetResult(c)}) {
      // A statement yields one result, then NULL; anything else is odd
      // enough to keep the first and drop the rest.
    }
    raw.push_back(std::move(r));
  }
  // Then the sync's own result. An error before it is the implicit
  // transaction failing to commit at the sync (a deferred constraint, a
  // serialization failure): nothing the statements did was kept. libpq
  // hands it over as an error, a NULL, then the sync.
  ResultPtr commit_error;
  bool synced = false;
  for (int nulls = 0; raw.size() == calls.size() && nulls < 2;) {
    ResultPtr r(PQgetResult(c));
    if (!r) {
      ++nulls;
      continue;
    }
    nulls = 0;
    if (PQresultStatus(r.get()) == PGRES_PIPELINE_SYNC) {
      synced = true;
      break;
    }
    if (!commit_error) commit_error = std::move(r);
  }
  PQexitPipelineMode(c);
  std::vector<Result> results;
  results.reserve(raw.size());
  for (ResultPtr& r : raw) results.push_back(check(c, r.release()));
  if (commit_error) check(c, commit_error.release());
  if (!synced) throw_connection_lost(c);
  return results;
}

}  // namespace pgjobq::pg
