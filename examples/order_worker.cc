// A worker with a C++ handler: packs the items place_order enqueued.
//
// The handler is transactional: its UPDATE runs in the transaction that
// completes the job, so each item is counted exactly once even though a
// job may run more than once (a worker killed mid-job runs it again).
//
//   order_worker            # DATABASE_URL and REDIS_URL say where
//
// SIGTERM or SIGINT lets the running job finish, then exits 0. A handler
// error is recorded on the job and retried with back-off; a job tried 5
// times is marked failed.

#include <libpq-fe.h>
#include <pgjobq/worker.h>
#include <signal.h>

#include <iostream>
#include <string>
#include <thread>

int main() {
  // Block the stop signals before any thread starts (threads inherit the
  // mask); one thread takes them with sigwait, where stop() is safe.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  pgjobq::WorkerOptions options;  // DATABASE_URL, REDIS_URL
  options.queues = {"packing"};
  options.transactional = true;
  options.on_error = pgjobq::ErrorPolicy::retry;
  options.max_attempts = 5;

  pgjobq::Worker worker(options, [](const pgjobq::JobContext& job) {
    std::string order = std::to_string(job.data.at("order").get<long long>());
    std::string item = job.data.at("item").get<std::string>();
    // In the job's transaction: commits with the completion, or not at all.
    const char* params[] = {order.c_str()};
    PGresult* r =
        PQexecParams(job.db,
                     "UPDATE shop_orders SET packed = packed + 1 WHERE id = $1 "
                     "RETURNING packed",
                     1, nullptr, params, nullptr, nullptr, 0);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    std::string packed = ok ? PQgetvalue(r, 0, 0) : "";
    std::string error = PQresultErrorMessage(r);
    PQclear(r);
    if (!ok) {
      // Recorded on the job; the retry policy runs it again later.
      throw std::runtime_error("order " + order + " not found: " + error);
    }
    std::cerr << "order_worker: packed " << item << " of order " << order
              << " (job " << job.id.value << ", attempt " << job.attempt
              << ")\n";
    return pgjobq::HandlerResult::complete(
        {{"item", item},
         {"box", "B-" + order},
         {"packed_so_far", std::stoi(packed)}});
  });

  std::thread signals([&worker, stop_signals] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    worker.stop();  // the running job finishes first
  });
  signals.detach();

  try {
    worker.run();
  } catch (const std::exception& e) {
    std::cerr << "order_worker: " << e.what() << '\n';
    return 1;
  }
  return 0;
}
