// The enqueue path: validate everything, then one statement in the caller's
// transaction. The SQL is pgjobq.insert_job for one job
// (src/sql/migrations/004_cheaper_enqueue.sql) and pgjobq.insert_jobs for a
// batch (002_insert_jobs_function.sql, as replaced by 003 and then 005).

#include "pgjobq/enqueue.h"

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "context.h"
#include "pg/connection.h"
#include "pgjobq/errors.h"
#include "sql/statements.h"
#include "validate.h"

namespace pgjobq {
namespace {

// Enqueues the payloads (a serialized JSON array of `count` elements).
// Returns the ids in payload order, or nullopt if the limit refused.
std::optional<std::vector<JobId>> insert(PGconn* db, std::string_view queue,
                                         std::string payloads,
                                         std::int64_t count,
                                         std::int64_t limit) {
  pg::Param params[] = {pg::param(queue), pg::param(limit), std::move(payloads),
                        pg::param(count)};
  pg::Result rows = pg::exec(db, sql::kInsertJobs, params);
  if (rows.rows() == 0) return std::nullopt;  // the limit refused
  if (rows.rows() != count) {
    throw Error("inserted " + std::to_string(rows.rows()) + " jobs of " +
                std::to_string(count));
  }
  // RETURNING gives no order guarantee; positions do.
  std::vector<std::pair<std::int64_t, std::int64_t>> by_position;
  by_position.reserve(static_cast<std::size_t>(count));
  for (int r = 0; r < rows.rows(); ++r) {
    by_position.emplace_back(rows.int64(r, 1), rows.int64(r, 0));
  }
  std::sort(by_position.begin(), by_position.end());
  std::vector<JobId> ids;
  ids.reserve(by_position.size());
  for (const auto& [position, id] : by_position) ids.push_back(JobId{id});
  return ids;
}

// `text` (data's JSON, serialize_payload's) as this session can send it.
// A session in another client encoding than UTF8 has the server read the
// text in that encoding: UTF-8 would be stored as mojibake. JSON's \u
// escapes are ASCII, which every client encoding reads alike.
std::string for_session(PGconn* db, const nlohmann::json& data,
                        std::string text) {
  if (pg::utf8_session(db) || std::all_of(text.begin(), text.end(), [](char c) {
        return static_cast<unsigned char>(c) < 0x80;
      })) {
    return text;
  }
  return data.dump(-1, ' ', true);
}

// PostgreSQL ends the session of a client that sends a message over 1 GiB
// ("invalid message length"): refuse what would not fit before sending it,
// rather than lose the caller's connection and transaction. (The rest of
// the message, the statement and the other parameters, is far below the
// margin.)
constexpr std::size_t kMaxSentBytes = (std::size_t{1} << 30) - (1 << 20);

void check_sendable(const std::string& text, std::string_view what) {
  if (text.size() > kMaxSentBytes) {
    throw InvalidInput(std::string(what) + " is " +
                       std::to_string(text.size()) +
                       " bytes of JSON, more than PostgreSQL accepts in one "
                       "message (1 GiB)");
  }
}

void check_limit(std::int64_t limit) {
  if (limit <= 0) {
    throw InvalidInput("the back-pressure limit must be positive, not " +
                       std::to_string(limit));
  }
}

}  // namespace

std::optional<JobId> try_enqueue(PGconn* db, std::string_view queue,
                                 const nlohmann::json& data,
                                 std::int64_t limit) {
  return try_enqueue(db, queue, data, EnqueueOptions{limit});
}

std::optional<JobId> try_enqueue(PGconn* db, std::string_view queue,
                                 const nlohmann::json& data,
                                 const EnqueueOptions& options) {
  validate_queue_name(queue);
  check_limit(options.limit);
  pg::Param params[] = {
      pg::param(queue), pg::param(options.limit),
      for_session(
          db, data,
          serialize_payload(data, options.max_payload_bytes, "job data"))};
  check_sendable(*params[2], "job data");
  try {
    pg::Result row = pg::exec(db, sql::kInsertJob, params);
    if (row.is_null(0, 0)) return std::nullopt;  // the limit refused
    return JobId{row.int64(0, 0)};
  } catch (...) {
    rethrow_with_context("enqueue on queue \"" + std::string(queue) + "\"");
  }
}

JobId enqueue(PGconn* db, std::string_view queue, const nlohmann::json& data) {
  auto id =
      try_enqueue(db, queue, data, std::numeric_limits<std::int64_t>::max());
  if (!id) throw Error("enqueue without a limit was refused");
  return *id;
}

std::optional<std::vector<JobId>> enqueue_many(
    PGconn* db, std::string_view queue, const std::vector<nlohmann::json>& jobs,
    const EnqueueOptions& options) {
  validate_queue_name(queue);
  check_limit(options.limit);
  if (jobs.empty()) return std::vector<JobId>{};
  std::string payloads = "[";
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    if (i > 0) payloads += ',';
    payloads +=
        for_session(db, jobs[i],
                    serialize_payload(jobs[i], options.max_payload_bytes,
                                      "data of job " + std::to_string(i + 1)));
  }
  payloads += ']';
  check_sendable(payloads,
                 "the batch of " + std::to_string(jobs.size()) + " jobs");
  try {
    return insert(db, queue, std::move(payloads),
                  static_cast<std::int64_t>(jobs.size()), options.limit);
  } catch (...) {
    rethrow_with_context("enqueue " + std::to_string(jobs.size()) +
                         " jobs on queue \"" + std::string(queue) + "\"");
  }
}

}  // namespace pgjobq
