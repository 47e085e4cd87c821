#include "references.h"

#include <atomic>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace pgjobq::bench {
namespace {

constexpr const char* kInsertOne =
    "INSERT INTO bench.jobs (queue_id, position, data) "
    "VALUES ($1::int, $2::bigint, $3::jsonb) RETURNING id";

constexpr const char* kInsertMany =
    "INSERT INTO bench.jobs (queue_id, position, data) "
    "SELECT $1::int, $2::bigint + e.n, e.data "
    "FROM jsonb_array_elements($3::jsonb) WITH ORDINALITY AS e (data, n) "
    "RETURNING id";

void insert_one(PGconn* db, int queue_id) {
  std::string position = std::to_string(next_reference_positions(1));
  exec(db, kInsertOne, {std::to_string(queue_id), position, payload().dump()});
}

// Inserts one row per transaction until `deadline`. Returns how many.
long commit_until(PGconn* db, int queue_id, SteadyClock::time_point deadline) {
  long commits = 0;
  while (SteadyClock::now() < deadline) {
    insert_one(db, queue_id);
    ++commits;
  }
  return commits;
}

}  // namespace

double bare_commit_rate(const std::string& db_url, double seconds) {
  PgConnPtr db = connect_database(db_url);
  insert_one(db.get(), 1);  // warm up the backend's caches
  auto start = SteadyClock::now();
  long commits =
      commit_until(db.get(), 1,
                   start + std::chrono::duration_cast<SteadyClock::duration>(
                               std::chrono::duration<double>(seconds)));
  return static_cast<double>(commits) / seconds_since(start);
}

double bare_parallel_commit_rate(const std::string& db_url, int connections,
                                 double seconds) {
  std::vector<PgConnPtr> dbs;
  for (int i = 0; i < connections; ++i) {
    dbs.push_back(connect_database(db_url));
    insert_one(dbs.back().get(), 100 + i);
  }
  std::atomic<long> total{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::vector<std::thread> threads;
  auto start = SteadyClock::now();
  auto deadline = start + std::chrono::duration_cast<SteadyClock::duration>(
                              std::chrono::duration<double>(seconds));
  for (int i = 0; i < connections; ++i) {
    threads.emplace_back([&, i] {
      try {
        total += commit_until(dbs[static_cast<std::size_t>(i)].get(), 100 + i,
                              deadline);
      } catch (...) {
        if (!failed.exchange(true)) error = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  double elapsed = seconds_since(start);
  if (error) std::rethrow_exception(error);
  return static_cast<double>(total.load()) / elapsed;
}

double bare_bulk_insert_rate(const std::string& db_url, int rows,
                             double seconds) {
  PgConnPtr db = connect_database(db_url);
  std::vector<nlohmann::json> jobs(static_cast<std::size_t>(rows), payload());
  auto insert_batch = [&] {
    // Serialized each time, as enqueue_many does with its vector.
    nlohmann::json array(jobs);
    std::string first = std::to_string(next_reference_positions(rows) - 1);
    PgResultPtr ids = exec(db.get(), kInsertMany, {"2", first, array.dump()});
    if (PQntuples(ids.get()) != rows) {
      throw std::runtime_error("bulk reference inserted the wrong count");
    }
  };
  insert_batch();
  auto start = SteadyClock::now();
  auto deadline = start + std::chrono::duration_cast<SteadyClock::duration>(
                              std::chrono::duration<double>(seconds));
  long batches = 0;
  while (SteadyClock::now() < deadline) {
    insert_batch();
    ++batches;
  }
  return static_cast<double>(batches) * rows / seconds_since(start);
}

double bare_commit_latency_ms(PGconn* db) {
  auto start = SteadyClock::now();
  insert_one(db, 3);
  return milliseconds_between(start, SteadyClock::now());
}

}  // namespace pgjobq::bench
