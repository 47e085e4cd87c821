// A worker process for tests that kill, restart and race real processes.
//
//   test_worker --db URL --redis URL [--max-attempts N] [--retry]
//               [--batch N] [--job-timeout-ms N] [--grace-ms N] QUEUE...
//
// Handler, by job data (an object):
//   "sleep_ms": N   sleep first (deaf to the stop token)
//   "die": true     kill this process with SIGKILL (a poison job)
//   "fail": true    throw (a handler error)
// Every start and finish goes to the table `journal` (created if missing)
// on a connection of its own, committed before the job goes on, so tests
// see what ran even when the process dies. The result is {"pid": <pid>}.
// SIGTERM/SIGINT stop the worker gracefully (exit 0); a handler error under
// the crash policy exits 1.

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pgjobq/connection.h"
#include "pgjobq/worker.h"
#include "support/serve_until_signal.h"

namespace {

void exec_or_die(PGconn* conn, const std::string& sql,
                 std::vector<std::string> params = {}) {
  std::vector<const char*> values;
  for (auto& p : params) values.push_back(p.c_str());
  PGresult* r = PQexecParams(conn, sql.c_str(), static_cast<int>(values.size()),
                             nullptr, values.data(), nullptr, nullptr, 0);
  auto status = PQresultStatus(r);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    std::cerr << "test_worker: " << PQresultErrorMessage(r);
    std::_Exit(2);
  }
  PQclear(r);
}

}  // namespace

int main(int argc, char** argv) {
  pgjobq::WorkerOptions options;
  options.poll_interval = std::chrono::seconds(30);
  options.retry_delay = std::chrono::milliseconds(10);
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&] {
      if (i + 1 >= argc) std::exit(2);
      return std::string(argv[++i]);
    };
    if (arg == "--db") {
      options.db_url = next();
    } else if (arg == "--redis") {
      options.redis_url = next();
    } else if (arg == "--max-attempts") {
      options.max_attempts = std::stoi(next());
    } else if (arg == "--retry") {
      options.on_error = pgjobq::ErrorPolicy::retry;
    } else if (arg == "--batch") {
      options.max_batch = std::stoi(next());
    } else if (arg == "--job-timeout-ms") {
      options.job_timeout = std::chrono::milliseconds(std::stoi(next()));
    } else if (arg == "--grace-ms") {
      options.timeout_grace = std::chrono::milliseconds(std::stoi(next()));
    } else {
      options.queues.push_back(arg);
    }
  }

  pgjobq::PgConnPtr journal = pgjobq::connect_database(options.db_url);
  exec_or_die(
      journal.get(),
      "CREATE TABLE IF NOT EXISTS journal (job bigint, event text, "
      "attempt int, pid int, at timestamptz DEFAULT clock_timestamp())");
  std::mutex journal_mutex;
  std::string pid = std::to_string(getpid());
  auto record = [&](const pgjobq::JobContext& job, const char* event) {
    std::lock_guard lock(journal_mutex);
    exec_or_die(journal.get(),
                "INSERT INTO journal (job, event, attempt, pid) VALUES ($1, "
                "$2, $3, $4)",
                {std::to_string(job.id.value), event,
                 std::to_string(job.attempt), pid});
  };

  pgjobq::Worker worker(options, [&](const pgjobq::JobContext& job) {
    record(job, "start");
    if (job.data.contains("sleep_ms")) {
      std::this_thread::sleep_for(
          std::chrono::milliseconds(job.data["sleep_ms"].get<int>()));
    }
    if (job.data.value("die", false)) raise(SIGKILL);
    if (job.data.value("fail", false)) throw std::runtime_error("told to fail");
    record(job, "finish");
    return pgjobq::HandlerResult::complete({{"pid", getpid()}});
  });

  return pgjobq::test::serve_until_signal(worker, "test_worker");
}
