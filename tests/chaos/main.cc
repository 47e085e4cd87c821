// pgjobq_chaos: the chaos run's driver. scripts/chaos.sh runs it:
//
//   pgjobq_chaos setup  --db URL
//   pgjobq_chaos handle --dir DIR    (the command of `pgjobq work`)
//   pgjobq_chaos worker --db URL --redis URL --dir DIR QUEUE...
//   pgjobq_chaos load   --db URL --redis URL --dir DIR [options]
//   pgjobq_chaos check  --db URL --dir DIR [options]
//   pgjobq_chaos sanitized          (prints 1 if built with ASan, else 0)

#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <iterator>
#include <memory>
#include <mutex>

#include "chaos/chaos.h"
#include "pgjobq/connection.h"
#include "pgjobq/errors.h"
#include "pgjobq/worker.h"
#include "support/sanitized.h"
#include "support/serve_until_signal.h"

namespace pgjobq::chaos {

Args::Args(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.starts_with("--") && i + 1 < argc) {
      flags_[arg.substr(2)] = argv[++i];
    } else {
      positional_.push_back(arg);
    }
  }
}

std::string Args::text(const std::string& name,
                       const std::string& fallback) const {
  auto it = flags_.find(name);
  return it == flags_.end() ? fallback : it->second;
}

std::string Args::required(const std::string& name) const {
  auto it = flags_.find(name);
  if (it == flags_.end()) {
    throw std::runtime_error("missing --" + name);
  }
  return it->second;
}

std::int64_t Args::number(const std::string& name,
                          std::int64_t fallback) const {
  auto it = flags_.find(name);
  return it == flags_.end() ? fallback : std::stoll(it->second);
}

double Args::real(const std::string& name, double fallback) const {
  auto it = flags_.find(name);
  return it == flags_.end() ? fallback : std::stod(it->second);
}

PgConnPtr connect_quietly(const std::string& url) {
  PgConnPtr conn = connect_database(url);
  PQsetNoticeProcessor(
      conn.get(), [](void*, const char*) {}, nullptr);
  return conn;
}

Rows query(PGconn* db, const std::string& sql,
           const std::vector<std::string>& params) {
  std::vector<const char*> values;
  for (const std::string& p : params) values.push_back(p.c_str());
  std::shared_ptr<PGresult> r(
      PQexecParams(db, sql.c_str(), static_cast<int>(values.size()), nullptr,
                   values.data(), nullptr, nullptr, 0),
      PQclear);
  auto status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return {r};
  std::string message = r ? PQresultErrorMessage(r.get()) : "no result";
  if (PQstatus(db) != CONNECTION_OK) throw ConnectionError(message);
  const char* state = r ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : "";
  throw DatabaseError(message, state ? state : "");
}

namespace {

using test::kSanitized;

// The per-job command of `pgjobq work`: data on stdin, the job in the
// environment, the result on stdout.
int handle_command(const Args& args) {
  const char* id = std::getenv("PGJOBQ_JOB_ID");
  const char* queue = std::getenv("PGJOBQ_QUEUE");
  const char* attempt = std::getenv("PGJOBQ_ATTEMPT");
  if (!id || !queue || !attempt) {
    std::cerr << "pgjobq_chaos handle: PGJOBQ_* variables missing\n";
    return 2;
  }
  std::string input(std::istreambuf_iterator<char>(std::cin), {});
  nlohmann::json data = nlohmann::json::parse(input);
  RunJournal journal(args.required("dir"), queue);
  try {
    nlohmann::json result =
        handle_job(journal, std::stoll(id), std::stoi(attempt), data);
    std::cout << result.dump() << std::endl;
    return 0;
  } catch (const std::runtime_error&) {
    return 1;
  }
}

// A library Worker process serving the queues given, with the same handler.
int worker_process(const Args& args) {
  WorkerOptions options;
  options.db_url = args.required("db");
  options.redis_url = args.required("redis");
  options.queues = args.positional();
  options.poll_interval = std::chrono::seconds(30);
  std::string dir = args.required("dir");
  std::mutex mutex;
  std::map<std::string, std::unique_ptr<RunJournal>> journals;
  Worker worker(options, [&](const JobContext& job) {
    RunJournal* journal = nullptr;
    {
      std::lock_guard lock(mutex);
      auto& slot = journals[std::string(job.queue)];
      if (!slot) slot = std::make_unique<RunJournal>(dir, job.queue);
      journal = slot.get();
    }
    // One runner thread per queue: a queue's journal is used by one thread.
    return HandlerResult::complete(
        handle_job(*journal, job.id.value, job.attempt, job.data));
  });
  return pgjobq::test::serve_until_signal(worker, "pgjobq_chaos worker");
}

// The audit the check relies on, kept by triggers in the transactions that
// change jobs, so nothing the library does escapes it.
int setup(const Args& args) {
  PgConnPtr db = connect_database(args.required("db"));
  // Several statements: the simple query protocol.
  std::shared_ptr<PGresult> r(PQexec(db.get(), R"sql(
CREATE SCHEMA chaos;
-- One row per job inserted, in the enqueuing transaction and never
-- updated: its xmin's commit timestamp is the job's commit time, and seq
-- orders the jobs of one transaction.
CREATE TABLE chaos.enqueued (
  job bigint PRIMARY KEY, queue_id int NOT NULL, seq bigserial);
-- One row per committed transition to a final state.
CREATE TABLE chaos.finished (
  job bigint NOT NULL, state text NOT NULL, result jsonb, attempts int);
-- Any change to a job already completed.
CREATE TABLE chaos.changed (job bigint NOT NULL, old jsonb, new jsonb);
CREATE FUNCTION chaos.on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO chaos.enqueued (job, queue_id) VALUES (NEW.id, NEW.queue_id);
  RETURN NULL;
END $$;
CREATE FUNCTION chaos.on_finish() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO chaos.finished (job, state, result, attempts)
  VALUES (NEW.id, NEW.state::text, NEW.result, NEW.attempts);
  RETURN NULL;
END $$;
CREATE FUNCTION chaos.on_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO chaos.changed (job, old, new)
  VALUES (NEW.id, to_jsonb(OLD), to_jsonb(NEW));
  RETURN NULL;
END $$;
CREATE TRIGGER chaos_enqueued AFTER INSERT ON pgjobq.jobs
  FOR EACH ROW EXECUTE FUNCTION chaos.on_insert();
CREATE TRIGGER chaos_finished AFTER UPDATE ON pgjobq.jobs FOR EACH ROW
  WHEN (OLD.state IS DISTINCT FROM NEW.state
        AND NEW.state IN ('completed', 'failed', 'cancelled'))
  EXECUTE FUNCTION chaos.on_finish();
CREATE TRIGGER chaos_changed AFTER UPDATE ON pgjobq.jobs FOR EACH ROW
  WHEN (OLD.state = 'completed') EXECUTE FUNCTION chaos.on_change();
)sql"),
                              PQclear);
  if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
    throw std::runtime_error(PQresultErrorMessage(r.get()));
  }
  return 0;
}

}  // namespace

int run_handler(const Args& args) { return handle_command(args); }
int run_worker(const Args& args) { return worker_process(args); }
int run_setup(const Args& args) { return setup(args); }

}  // namespace pgjobq::chaos

int main(int argc, char** argv) {
  using namespace pgjobq::chaos;
  std::string command = argc > 1 ? argv[1] : "";
  try {
    Args args(argc, argv, 2);
    if (command == "handle") return run_handler(args);
    if (command == "worker") return run_worker(args);
    if (command == "setup") return run_setup(args);
    if (command == "load") return run_load(args);
    if (command == "check") return run_check(args);
    if (command == "sanitized") {
      std::cout << (kSanitized ? 1 : 0) << std::endl;
      return 0;
    }
  } catch (const std::exception& e) {
    std::cerr << "pgjobq_chaos " << command << ": " << e.what() << std::endl;
    return 1;
  }
  std::cerr << "usage: pgjobq_chaos setup|handle|worker|load|check|sanitized "
               "[--flag value...]\n";
  return 2;
}
