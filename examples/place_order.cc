// A web handler, as a command: "POST /orders" for CUSTOMER and ITEMs.
//
// It stores the order and enqueues one "packing" job per item in the same
// transaction: the jobs exist exactly when the order does. Then it waits
// for their results, as a handler that answers synchronously would.
//
//   place_order [--rollback] CUSTOMER ITEM...
//
// --rollback plays a handler that fails after enqueuing (a declined card,
// say): the transaction rolls back and neither the order nor its jobs ever
// existed. DATABASE_URL and REDIS_URL say where the servers are.
//
// Exit codes: 0 done, 1 error, 3 the packing queue is full (HTTP 503).

#include <libpq-fe.h>
#include <pgjobq/connection.h>
#include <pgjobq/enqueue.h>
#include <pgjobq/errors.h>
#include <pgjobq/jobs.h>

#include <chrono>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr const char* kQueue = "packing";

// Runs one statement on the caller's connection; throws if it fails.
std::string exec(PGconn* db, const char* sql,
                 const std::vector<std::string>& params = {}) {
  std::vector<const char*> values;
  for (const std::string& p : params) values.push_back(p.c_str());
  PGresult* r = PQexecParams(db, sql, static_cast<int>(values.size()), nullptr,
                             values.data(), nullptr, nullptr, 0);
  ExecStatusType status = PQresultStatus(r);
  std::string value =
      status == PGRES_TUPLES_OK && PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "";
  std::string error = PQresultErrorMessage(r);
  PQclear(r);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    throw std::runtime_error(std::string(sql) + ": " + error);
  }
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  bool rollback = !args.empty() && args.front() == "--rollback";
  if (rollback) args.erase(args.begin());
  if (args.size() < 2) {
    std::cerr << "usage: place_order [--rollback] CUSTOMER ITEM...\n";
    return 2;
  }
  std::string customer = args.front();
  std::vector<std::string> items(args.begin() + 1, args.end());

  try {
    pgjobq::PgConnPtr db = pgjobq::connect_database();  // DATABASE_URL
    PGconn* conn = db.get();
    // The application's own table (a real one has its own migrations).
    PQsetNoticeProcessor(
        conn, [](void*, const char*) {}, nullptr);
    exec(conn,
         "CREATE TABLE IF NOT EXISTS shop_orders ("
         " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
         " customer text NOT NULL, items integer NOT NULL,"
         " packed integer NOT NULL DEFAULT 0)");

    // One transaction: the order row and its jobs commit together.
    exec(conn, "BEGIN");
    std::string order_id =
        exec(conn,
             "INSERT INTO shop_orders (customer, items) VALUES ($1, $2) "
             "RETURNING id",
             {customer, std::to_string(items.size())});
    std::vector<nlohmann::json> jobs;
    for (const std::string& item : items) {
      jobs.push_back({{"order", std::stoll(order_id)}, {"item", item}});
    }
    // All or nothing, and refused when the queue already holds 4096
    // unfinished jobs: back-pressure instead of an ever-growing backlog.
    auto ids = pgjobq::enqueue_many(conn, kQueue, jobs);
    if (!ids) {
      exec(conn, "ROLLBACK");
      std::cout << "503 Service Unavailable: too much work queued; order of "
                << customer << " not taken\n";
      return 3;
    }
    std::cout << "order " << order_id << " for " << customer << ": enqueued "
              << ids->size() << " packing job(s):";
    for (pgjobq::JobId id : *ids) std::cout << ' ' << id.value;
    std::cout << '\n';

    if (rollback) {
      exec(conn, "ROLLBACK");
      std::cout << "payment declined: transaction rolled back\n";
      for (pgjobq::JobId id : *ids) {
        std::cout << "  job " << id.value << ": "
                  << (pgjobq::query_job(conn, id) ? "exists (a bug!)"
                                                  : "never existed")
                  << '\n';
      }
      std::cout << "  order " << order_id << ": "
                << exec(conn, "SELECT count(*) FROM shop_orders WHERE id = $1",
                        {order_id})
                << " row(s)\n";
      return 0;
    }
    exec(conn, "COMMIT");  // the jobs exist from here on

    // Wake the worker. If Redis is down the job is safe in PostgreSQL and
    // the worker's poll finds it; only latency grows.
    pgjobq::RedisLink redis;  // REDIS_URL, else redis://127.0.0.1:6379
    std::string why;
    if (!pgjobq::notify(redis, kQueue, &why)) std::cerr << why << '\n';

    for (pgjobq::JobId id : *ids) {
      nlohmann::json result =
          pgjobq::wait_for_result(conn, redis, id, std::chrono::seconds(30));
      std::cout << "  job " << id.value << " done: " << result.dump() << '\n';
    }
    std::cout << "200 OK: order " << order_id << " packed "
              << exec(conn, "SELECT packed FROM shop_orders WHERE id = $1",
                      {order_id})
              << " of " << items.size() << " item(s)\n";
    return 0;
  } catch (const pgjobq::Timeout& e) {
    std::cerr << "504 Gateway Timeout: " << e.what() << '\n';
    return 4;
  } catch (const std::exception& e) {
    std::cerr << "500 Internal Server Error: " << e.what() << '\n';
    return 1;
  }
}
