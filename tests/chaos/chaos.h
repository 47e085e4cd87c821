#pragma once

// The chaos run's driver (scripts/chaos.sh starts it): the job handler and
// its journal, a library worker process, the load (enqueuers, waiters,
// command-line clients) and the final check. docs/reliability.md tells
// what it proves and how.

#include <libpq-fe.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "pgjobq/connection.h"

namespace pgjobq::chaos {

// Command-line flags: --name value pairs, then positional arguments.
class Args {
 public:
  Args(int argc, char** argv, int first);
  std::string text(const std::string& name, const std::string& fallback) const;
  std::string required(const std::string& name) const;
  std::int64_t number(const std::string& name, std::int64_t fallback) const;
  double real(const std::string& name, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> flags_;
  std::vector<std::string> positional_;
};

// The name of queue `i` of the run.
std::string queue_name(int i);

// The wall clock in nanoseconds since the epoch.
std::int64_t wall_ns();

// ------------------------------------------------------------- journal
//
// Every run of a handler appends to a file per queue (<dir>/<queue>.log):
//   S job attempt pid ppid ns    a run started
//   F job attempt pid ppid ns    it finished (its result follows)
//   E job attempt pid ppid ns    it failed on purpose (exit 1 / throw)
//   O job attempt pid ppid ns holder_job holder_attempt holder_pid
//                                it found another run of the queue alive
//   W (as O)                     ... and now that run is gone
// Runs hold a POSIX write lock on <dir>/<queue>.lock from before S to after
// F or E, and the kernel drops it when the process dies, so an O line is
// exact evidence of two live runs on one queue. The lock names the holding
// process; each run writes its job and attempt to <dir>/<queue>.run-<pid>
// before locking, so the holder is named even if it dies at once (0 0:
// unknown). Appends are single
// write()s with O_APPEND: the file order is the order of events. The page
// cache outlives every process the run kills, which is all the durability
// the journal needs.

class RunJournal {
 public:
  RunJournal(const std::string& dir, std::string_view queue);
  ~RunJournal();
  RunJournal(const RunJournal&) = delete;
  RunJournal& operator=(const RunJournal&) = delete;

  // Takes the queue's run lock (writing an O line first if another live
  // run holds it), then appends S.
  void start(std::int64_t job, int attempt);
  // Appends F or E, then drops the lock.
  void finish(std::int64_t job, int attempt);
  void error(std::int64_t job, int attempt);

 private:
  void append(char kind, std::int64_t job, int attempt,
              const std::string& extra = {});
  std::string intent_path(pid_t pid) const;
  void unlock();
  std::string base_;
  int log_fd_ = -1;
  int lock_fd_ = -1;
};

struct JournalEvent {
  char kind = 0;
  std::int64_t job = 0;
  int attempt = 0;
  int pid = 0;
  int ppid = 0;
  std::int64_t ns = 0;
  std::int64_t holder_job = 0;
  int holder_attempt = 0;
  int holder_pid = 0;
};

std::vector<JournalEvent> read_journal(const std::string& dir,
                                       std::string_view queue);

// What a handler does with a job, in the CLI's handler process or in a
// library worker: journal, "work" (sleep data.sleep_us), fail the first
// attempt if data.fail_first, and return the result. Throws on purpose
// failures.
nlohmann::json handle_job(RunJournal& journal, std::int64_t job, int attempt,
                          const nlohmann::json& data);

// --------------------------------------------------------------- parts

int run_handler(const Args& args);  // `handle`: the command of pgjobq work
int run_worker(const Args& args);   // `worker`: a library Worker process
int run_setup(const Args& args);    // `setup`: audit schema and triggers
int run_load(const Args& args);     // `load`: enqueuers, waiters, drain
int run_check(const Args& args);    // `check`: verify, print one line

// ----------------------------------------------------------- libpq bits

// connect_database, with the server's notices (a restart's "terminating
// connection" warnings) dropped.
PgConnPtr connect_quietly(const std::string& url);

// Runs `sql` with text parameters; throws pgjobq::ConnectionError when the
// connection is gone and pgjobq::DatabaseError for other failures.
struct Rows {
  std::shared_ptr<PGresult> result;
  int size() const { return PQntuples(result.get()); }
  std::string text(int row, int col) const {
    return PQgetvalue(result.get(), row, col);
  }
  bool null(int row, int col) const {
    return PQgetisnull(result.get(), row, col) != 0;
  }
  std::int64_t int64(int row, int col) const {
    return std::stoll(text(row, col));
  }
};
Rows query(PGconn* db, const std::string& sql,
           const std::vector<std::string>& params = {});

}  // namespace pgjobq::chaos
