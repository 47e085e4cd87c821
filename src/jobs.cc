// Reading and managing single jobs, and the operator's view of queues.

#include "pgjobq/jobs.h"

#include <string>

#include "context.h"
#include "pg/connection.h"
#include "pgjobq/admin.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "sql/statements.h"

namespace pgjobq {
namespace {

Clock::time_point from_micros(std::int64_t micros) {
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::microseconds(micros)));
}

JobState state_from(std::string_view text) {
  auto state = parse_job_state(text);
  if (!state) throw Error("unknown job state \"" + std::string(text) + "\"");
  return *state;
}

std::string describe(JobId id) { return "job " + std::to_string(id.value); }

}  // namespace

std::optional<Job> query_job(PGconn* db, JobId id) {
  try {
    pg::Param params[] = {pg::param(id.value)};
    bool utf8 = pg::utf8_session(db);
    pg::Result row =
        pg::exec(db, utf8 ? sql::kSelectJob : sql::kSelectJobAsUtf8, params);
    if (row.rows() == 0) return std::nullopt;
    auto text = [&](int col) {
      return utf8 ? std::string(row.text(0, col)) : row.bytes(0, col);
    };
    Job job;
    job.id = JobId{row.int64(0, 0)};
    job.queue = std::string(row.text(0, 1));
    job.state = state_from(row.text(0, 2));
    job.data = nlohmann::json::parse(text(3));
    if (!row.is_null(0, 4)) job.result = nlohmann::json::parse(text(4));
    if (!row.is_null(0, 5)) job.error = text(5);
    job.attempts = static_cast<int>(row.int64(0, 6));
    job.enqueued_at = from_micros(row.int64(0, 7));
    if (!row.is_null(0, 8)) job.started_at = from_micros(row.int64(0, 8));
    if (!row.is_null(0, 9)) job.finished_at = from_micros(row.int64(0, 9));
    return job;
  } catch (...) {
    rethrow_with_context("read " + describe(id));
  }
}

void reschedule(PGconn* db, JobId id) {
  try {
    pg::Param params[] = {pg::param(id.value)};
    pg::Result row = pg::exec(db, sql::kRescheduleJob, params);
    if (row.rows() == 0) throw NoSuchJob(id);
    if (!row.boolean(0, 1)) {
      JobState state = state_from(row.text(0, 0));
      throw WrongState(describe(id) + " is " + std::string(to_string(state)) +
                           "; only pending, failed and cancelled jobs can "
                           "be rescheduled",
                       state);
    }
  } catch (...) {
    rethrow_with_context("reschedule " + describe(id));
  }
}

void cancel(PGconn* db, JobId id) {
  try {
    pg::Param params[] = {pg::param(id.value)};
    pg::Result row = pg::exec(db, sql::kCancelJob, params);
    if (row.rows() == 0) throw NoSuchJob(id);
    if (!row.boolean(0, 1)) {
      JobState state = state_from(row.text(0, 0));
      throw WrongState(describe(id) + " is " + std::string(to_string(state)) +
                           "; only pending jobs can be cancelled",
                       state);
    }
  } catch (...) {
    rethrow_with_context("cancel " + describe(id));
  }
}

std::vector<QueueStatus> queue_status(PGconn* db,
                                      std::optional<std::string_view> queue) {
  if (queue) validate_queue_name(*queue);
  try {
    pg::Param params[] = {queue ? pg::param(*queue) : pg::Param()};
    pg::Result rows = pg::exec(db, sql::kQueueStatus, params);
    std::vector<QueueStatus> out;
    out.reserve(static_cast<std::size_t>(rows.rows()));
    for (int r = 0; r < rows.rows(); ++r) {
      QueueStatus s;
      s.queue = std::string(rows.text(r, 0));
      std::int64_t unfinished = rows.int64(r, 1);
      s.completed = rows.int64(r, 2);
      s.failed = rows.int64(r, 3);
      s.cancelled = rows.int64(r, 4);
      s.running = rows.int64(r, 5);
      s.pending = unfinished - s.running;
      if (!rows.is_null(r, 6)) {
        s.oldest_pending_age = std::chrono::microseconds(rows.int64(r, 6));
      }
      s.workers = rows.int64(r, 7);
      s.standbys = rows.int64(r, 8);
      out.push_back(std::move(s));
    }
    return out;
  } catch (...) {
    rethrow_with_context("read queue status");
  }
}

std::int64_t prune(PGconn* db, std::chrono::microseconds older_than,
                   const std::function<void(std::int64_t)>& progress,
                   int batch_size) {
  if (older_than.count() < 0) {
    throw InvalidInput("prune: the age must not be negative");
  }
  if (batch_size <= 0) throw InvalidInput("prune: batch size must be positive");
  if (PQtransactionStatus(db) != PQTRANS_IDLE) {
    throw Error("prune: must run outside a transaction");
  }
  try {
    pg::Param age[] = {pg::param(std::int64_t{older_than.count()})};
    std::string cutoff(pg::exec(db, sql::kPruneCutoff, age).text(0, 0));
    std::int64_t after = 0;
    std::int64_t deleted = 0;
    while (true) {
      // Each batch commits on its own (autocommit), so locks are brief.
      pg::Param params[] = {pg::param(after), pg::param(cutoff),
                            pg::param(std::int64_t{batch_size})};
      pg::Result row = pg::exec(db, sql::kPruneBatch, params);
      deleted += row.int64(0, 1);
      if (progress) progress(deleted);
      if (row.is_null(0, 0)) break;
      after = row.int64(0, 0);
    }
    return deleted;
  } catch (...) {
    rethrow_with_context("prune");
  }
}

}  // namespace pgjobq
