// The load of a chaos run: enqueuers in transactions (some rolled back on
// purpose) against a back-pressure limit, waiters with timeouts, clients
// running the real `pgjobq enqueue --wait`, and a sampler of queue depths.
// Every one of them expects its connections to be cut at any moment and
// carries on. At the end it waits for the queues to drain and writes
// everything it saw to <dir>/load.json for the check.

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "chaos/chaos.h"
#include "pgjobq/connection.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "pgjobq/jobs.h"

extern char** environ;

namespace pgjobq::chaos {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

struct Options {
  std::string db;
  std::string redis;
  std::string dir;
  std::string cli;  // the pgjobq binary, for the CLI clients ("" for none)
  int queues = 8;
  int enqueuers = 4;
  int waiters = 3;
  int cli_clients = 1;
  std::int64_t limit = 40;
  double seconds = 30;
  std::int64_t max_jobs = 1'000'000'000;
  double drain_seconds = 90;
  double rollback_rate = 0.1;
  double fail_rate = 0.01;
  int max_sleep_us = 2000;
  // A wait that returns this much later than its timeout has hung.
  milliseconds hang_slack{1000};
};

// What everyone saw, under one mutex.
struct Record {
  std::mutex mutex;
  std::vector<std::int64_t> committed;    // COMMIT answered OK
  std::vector<std::int64_t> rolled_back;  // ROLLBACK on purpose
  std::vector<std::int64_t> aborted;      // an error before COMMIT
  std::vector<std::int64_t> unknown;      // the connection died in COMMIT
  std::vector<std::int64_t> recent;       // for waiters to pick from
  json observed = json::array();          // [id, result a waiter got]
  std::int64_t txns_committed = 0, txns_rolled_back = 0, txns_failed = 0,
               txns_unknown = 0, refused = 0, notify_failed = 0;
  std::int64_t waits = 0, waits_ok = 0, waits_timeout = 0, waits_error = 0,
               waits_failed = 0, waits_lost = 0, waits_hung = 0;
  std::int64_t max_overrun_ms = 0;
  std::int64_t cli_runs = 0, cli_ok = 0, cli_full = 0, cli_timeout = 0,
               cli_error = 0, cli_bad = 0, cli_hung = 0;
  std::int64_t cli_max_overrun_ms = 0;
  std::int64_t sampled_max_unfinished = 0;
  std::vector<std::string> problems;

  void add_recent(const std::vector<std::int64_t>& ids) {
    for (std::int64_t id : ids) {
      if (recent.size() >= 256) recent.erase(recent.begin());
      recent.push_back(id);
    }
  }
  void problem(std::string text) {
    std::cerr << "chaos load: " << text << std::endl;
    if (problems.size() < 20) problems.push_back(std::move(text));
  }
};

class Load {
 public:
  explicit Load(Options o) : o_(std::move(o)) {}

  void run() {
    std::vector<std::thread> threads;
    for (int i = 0; i < o_.enqueuers; ++i) {
      threads.emplace_back([this, i] { enqueuer(i); });
    }
    for (int i = 0; i < o_.waiters; ++i) {
      threads.emplace_back([this, i] { waiter(i); });
    }
    if (!o_.cli.empty()) {
      for (int i = 0; i < o_.cli_clients; ++i) {
        threads.emplace_back([this, i] { cli_client(i); });
      }
    }
    std::thread sampler([this] { sample(); });
    auto start = SteadyClock::now();
    auto end = start + std::chrono::duration_cast<SteadyClock::duration>(
                           std::chrono::duration<double>(o_.seconds));
    auto next_report = start + std::chrono::seconds(5);
    // scripts/chaos.sh says when it has done all it meant to (<dir>/stop).
    std::string stop_file = o_.dir + "/stop";
    while (SteadyClock::now() < end && jobs_.load() < o_.max_jobs &&
           access(stop_file.c_str(), F_OK) != 0) {
      std::this_thread::sleep_for(milliseconds(50));
      if (SteadyClock::now() >= next_report) {
        report("load");
        next_report += std::chrono::seconds(5);
      }
    }
    stop_ = true;
    for (auto& t : threads) t.join();
    // Faults stop now (scripts/chaos.sh watches this file); workers drain.
    std::ofstream(o_.dir + "/phase") << "drain\n";
    drained_ = drain(start);
    done_ = true;
    sampler.join();
    write();
  }

 private:
  // ------------------------------------------------------------ enqueue

  void enqueuer(int index) {
    std::mt19937_64 rng(std::random_device{}() + static_cast<unsigned>(index));
    PgConnPtr conn;
    RedisLink redis(o_.redis, milliseconds(500));
    std::uniform_real_distribution<double> unit(0, 1);
    std::uniform_int_distribution<int> pick_queue(0, o_.queues - 1);
    std::uniform_int_distribution<int> sleep_us(0, o_.max_sleep_us);
    while (!stop_) {
      if (!session_or_pause(conn)) continue;
      // One or two queues, in name order, so that two enqueuers never lock
      // each other's queues in opposite orders; one or two jobs each.
      std::set<int> queues{pick_queue(rng)};
      if (unit(rng) < 0.3) queues.insert(pick_queue(rng));
      bool doomed = unit(rng) < o_.rollback_rate;
      std::vector<std::int64_t> ids;
      std::set<int> touched;
      int refused = 0;
      try {
        query(conn.get(), "BEGIN");
        for (int q : queues) {
          int count = unit(rng) < 0.3 ? 2 : 1;
          for (int k = 0; k < count; ++k) {
            json data{{"n", next_n_++},
                      {"sleep_us", sleep_us(rng)},
                      {"fail_first", unit(rng) < o_.fail_rate},
                      {"doomed", doomed}};
            auto id = try_enqueue(conn.get(), queue_name(q), data, o_.limit);
            if (id) {
              ids.push_back(id->value);
              touched.insert(q);
            } else {
              ++refused;
            }
          }
        }
      } catch (const Error& e) {
        // The transaction is aborted (or its session gone): none of it
        // may ever exist.
        if (PQstatus(conn.get()) == CONNECTION_OK) {
          PQclear(PQexec(conn.get(), "ROLLBACK"));
        } else {
          conn.reset();
        }
        std::lock_guard lock(r_.mutex);
        r_.aborted.insert(r_.aborted.end(), ids.begin(), ids.end());
        ++r_.txns_failed;
        r_.refused += refused;
        continue;
      }
      if (doomed) {
        PQclear(PQexec(conn.get(), "ROLLBACK"));
        std::lock_guard lock(r_.mutex);
        r_.rolled_back.insert(r_.rolled_back.end(), ids.begin(), ids.end());
        ++r_.txns_rolled_back;
        r_.refused += refused;
        continue;
      }
      PGresult* res = PQexec(conn.get(), "COMMIT");
      bool ok = PQresultStatus(res) == PGRES_COMMAND_OK &&
                std::string_view(PQcmdStatus(res)) == "COMMIT";
      PQclear(res);
      bool lost = PQstatus(conn.get()) != CONNECTION_OK;
      {
        std::lock_guard lock(r_.mutex);
        r_.refused += refused;
        if (ok) {
          r_.committed.insert(r_.committed.end(), ids.begin(), ids.end());
          r_.add_recent(ids);
          ++r_.txns_committed;
        } else if (lost) {
          // Did it commit before the session died? The database knows.
          r_.unknown.insert(r_.unknown.end(), ids.begin(), ids.end());
          ++r_.txns_unknown;
        } else {
          r_.aborted.insert(r_.aborted.end(), ids.begin(), ids.end());
          ++r_.txns_failed;
        }
      }
      if (lost) conn.reset();
      if (ok) jobs_ += static_cast<std::int64_t>(ids.size());
      if (ok) {
        for (int q : touched) {
          if (!notify(redis, queue_name(q))) {
            std::lock_guard lock(r_.mutex);
            ++r_.notify_failed;
          }
        }
      }
      if (refused > 0) {
        // The queue is full: give the workers a moment.
        std::this_thread::sleep_for(
            std::chrono::microseconds(2000 + rng() % 8000));
      }
    }
  }

  // -------------------------------------------------------------- wait

  void waiter(int index) {
    std::mt19937_64 rng(std::random_device{}() + 1000u +
                        static_cast<unsigned>(index));
    const milliseconds timeouts[] = {milliseconds(50), milliseconds(300),
                                     milliseconds(1000), milliseconds(3000)};
    PgConnPtr conn;
    RedisLink redis(o_.redis);
    while (!stop_) {
      std::int64_t id = 0;
      {
        std::lock_guard lock(r_.mutex);
        if (!r_.recent.empty()) id = r_.recent[rng() % r_.recent.size()];
      }
      if (id == 0) {
        std::this_thread::sleep_for(milliseconds(10));
        continue;
      }
      if (!session_or_pause(conn)) continue;
      milliseconds timeout = timeouts[rng() % 4];
      auto started = SteadyClock::now();
      enum { ok, timed_out, failed, lost, error } outcome = error;
      json result;
      std::string what;
      try {
        result = wait_for_result(conn.get(), redis, JobId{id}, timeout);
        outcome = ok;
      } catch (const Timeout&) {
        outcome = timed_out;
      } catch (const JobFailed& e) {
        outcome = failed;
        what = e.what();
      } catch (const NoSuchJob& e) {
        outcome = lost;
        what = e.what();
      } catch (const Error& e) {
        outcome = error;
      }
      auto elapsed = std::chrono::duration_cast<milliseconds>(
          SteadyClock::now() - started);
      std::int64_t overrun = (elapsed - timeout).count();
      std::lock_guard lock(r_.mutex);
      ++r_.waits;
      r_.max_overrun_ms = std::max(r_.max_overrun_ms, overrun);
      if (elapsed > timeout + o_.hang_slack) {
        ++r_.waits_hung;
        r_.problem("wait for job " + std::to_string(id) + " took " +
                   std::to_string(elapsed.count()) + " ms with a timeout of " +
                   std::to_string(timeout.count()) + " ms");
      }
      switch (outcome) {
        case ok:
          ++r_.waits_ok;
          r_.observed.push_back({id, result});
          break;
        case timed_out:
          ++r_.waits_timeout;
          break;
        case failed:
          ++r_.waits_failed;
          r_.problem("a waiter saw a committed job fail: " + what);
          break;
        case lost:
          ++r_.waits_lost;
          r_.problem("a waiter found no committed job: " + what);
          break;
        case error:
          ++r_.waits_error;
          if (PQstatus(conn.get()) != CONNECTION_OK) conn.reset();
          break;
      }
    }
  }

  // ------------------------------------------------------- CLI clients

  struct CliRun {
    int exit_code = -1;
    std::string out;
    bool killed = false;
  };

  // Runs the CLI with stdout captured and stderr to the clients' log;
  // SIGKILLs it past `limit`.
  CliRun run_cli(const std::vector<std::string>& argv, milliseconds limit) {
    CliRun run;
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return run;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    std::string log = o_.dir + "/cli-clients.log";
    posix_spawn_file_actions_addopen(&actions, 2, log.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    std::vector<char*> args;
    std::vector<std::string> copy = argv;
    for (std::string& a : copy) args.push_back(a.data());
    args.push_back(nullptr);
    pid_t pid = -1;
    int rc =
        posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    if (rc != 0) {
      close(out[0]);
      return run;
    }
    auto deadline = SteadyClock::now() + limit;
    char buffer[4096];
    bool open = true;
    while (open) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline -
                                                           SteadyClock::now());
      if (left.count() <= 0) {
        kill(pid, SIGKILL);
        run.killed = true;
        break;
      }
      pollfd fd{out[0], POLLIN, 0};
      if (poll(&fd, 1, static_cast<int>(left.count())) <= 0) continue;
      ssize_t n = read(out[0], buffer, sizeof buffer);
      if (n > 0) {
        run.out.append(buffer, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        open = false;
      }
    }
    close(out[0]);
    int status = 0;
    while (true) {
      pid_t done = waitpid(pid, &status, run.killed ? 0 : WNOHANG);
      if (done == pid) break;
      if (done < 0 && errno != EINTR) break;
      if (SteadyClock::now() >= deadline && !run.killed) {
        kill(pid, SIGKILL);
        run.killed = true;
      }
      std::this_thread::sleep_for(milliseconds(2));
    }
    run.exit_code =
        WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return run;
  }

  // `pgjobq enqueue QUEUE JSON --limit L --wait --timeout T`, as a user
  // would type it, over and over.
  void cli_client(int index) {
    std::mt19937_64 rng(std::random_device{}() + 2000u +
                        static_cast<unsigned>(index));
    while (!stop_) {
      std::this_thread::sleep_for(milliseconds(100 + rng() % 200));
      int q = static_cast<int>(rng() % static_cast<unsigned>(o_.queues));
      json data{{"n", next_n_++},
                {"sleep_us", 0},
                {"fail_first", false},
                {"doomed", false},
                {"cli", true}};
      milliseconds timeout(rng() % 2 ? 500 : 3000);
      std::vector<std::string> argv{
          o_.cli,
          "--db",
          o_.db,
          "--redis",
          o_.redis,
          "enqueue",
          queue_name(q),
          data.dump(),
          "--limit",
          std::to_string(o_.limit),
          "--wait",
          "--timeout",
          std::to_string(static_cast<double>(timeout.count()) / 1000.0)};
      auto started = SteadyClock::now();
      // Past this, the run is killed: it hung.
      CliRun run = run_cli(argv, timeout + milliseconds(15000));
      auto elapsed = std::chrono::duration_cast<milliseconds>(
          SteadyClock::now() - started);
      std::vector<std::string> lines;
      std::size_t from = 0;
      while (from < run.out.size()) {
        std::size_t nl = run.out.find('\n', from);
        if (nl == std::string::npos) nl = run.out.size();
        lines.push_back(run.out.substr(from, nl - from));
        from = nl + 1;
      }
      std::optional<std::int64_t> id;
      if (!lines.empty()) {
        try {
          id = std::stoll(lines[0]);
        } catch (const std::exception&) {
        }
      }
      // A fresh connection (10 s connect timeout) plus the wait: a run that
      // ends later than its timeout plus the slack and a connect has hung.
      std::int64_t overrun = (elapsed - timeout).count();
      std::lock_guard lock(r_.mutex);
      ++r_.cli_runs;
      r_.cli_max_overrun_ms = std::max(r_.cli_max_overrun_ms, overrun);
      if (run.killed ||
          elapsed > timeout + o_.hang_slack + milliseconds(2000)) {
        ++r_.cli_hung;
        r_.problem("pgjobq enqueue --wait took " +
                   std::to_string(elapsed.count()) + " ms with --timeout " +
                   std::to_string(timeout.count()) + " ms");
      }
      if (id) {
        r_.committed.push_back(*id);
        r_.add_recent({*id});
        ++jobs_;
      }
      switch (run.exit_code) {
        case 0:
          ++r_.cli_ok;
          if (id && lines.size() >= 2) {
            try {
              r_.observed.push_back({*id, json::parse(lines[1])});
            } catch (const json::exception&) {
              ++r_.cli_bad;
              r_.problem(
                  "pgjobq enqueue --wait printed a result that is "
                  "not JSON: " +
                  lines[1]);
            }
          } else {
            ++r_.cli_bad;
            r_.problem("pgjobq enqueue --wait exited 0 without id and result");
          }
          break;
        case 3:
          ++r_.cli_full;
          if (id) {
            ++r_.cli_bad;
            r_.problem("queue full (exit 3) yet an id was printed");
          }
          break;
        case 4:
          ++r_.cli_timeout;
          break;
        case 1:
          ++r_.cli_error;  // a server was down: allowed, counted
          break;
        default:
          ++r_.cli_bad;
          r_.problem("pgjobq enqueue --wait exited " +
                     std::to_string(run.exit_code));
      }
    }
  }

  // ------------------------------------------------------------ sessions

  // Connects `conn` again unless it is a live session; throws Error if it
  // cannot.
  void reconnect_if_needed(PgConnPtr& conn) {
    if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
      conn = connect_quietly(o_.db);
    }
  }

  // The same for the loops that must ride out a PostgreSQL restart: false,
  // after a short pause, when the server cannot be reached yet.
  bool session_or_pause(PgConnPtr& conn) {
    try {
      reconnect_if_needed(conn);
      return true;
    } catch (const Error&) {
      conn.reset();
      std::this_thread::sleep_for(milliseconds(100));
      return false;
    }
  }

  // ----------------------------------------------------------- sampling

  // The most unfinished jobs any queue held, as seen now and then. The
  // check computes the exact maximum from commit timestamps.
  void sample() {
    PgConnPtr conn;
    while (!done_) {
      std::this_thread::sleep_for(milliseconds(200));
      try {
        reconnect_if_needed(conn);
        Rows rows = query(conn.get(), R"sql(
SELECT coalesce(max((SELECT count(*) FROM pgjobq.jobs j
                     WHERE j.queue_id = p.queue_id
                       AND j.position > p.handled_position
                       AND j.state IN ('pending', 'running'))), 0)
FROM pgjobq.queue_progress p
)sql");
        std::lock_guard lock(r_.mutex);
        r_.sampled_max_unfinished =
            std::max(r_.sampled_max_unfinished, rows.int64(0, 0));
      } catch (const Error&) {
        conn.reset();
      }
    }
  }

  // --------------------------------------------------------------- drain

  std::int64_t unfinished(PgConnPtr& conn) {
    reconnect_if_needed(conn);
    return query(conn.get(),
                 "SELECT count(*) FROM pgjobq.jobs WHERE state IN "
                 "('pending', 'running')")
        .int64(0, 0);
  }

  bool drain(SteadyClock::time_point start) {
    auto deadline = SteadyClock::now() +
                    std::chrono::duration_cast<SteadyClock::duration>(
                        std::chrono::duration<double>(o_.drain_seconds));
    auto next_report = SteadyClock::now() + std::chrono::seconds(5);
    PgConnPtr conn;
    while (SteadyClock::now() < deadline) {
      try {
        if (unfinished(conn) == 0) {
          auto took = std::chrono::duration_cast<milliseconds>(
              SteadyClock::now() - start);
          std::cerr << "chaos load: drained after " << took.count() << " ms"
                    << std::endl;
          return true;
        }
      } catch (const Error&) {
        conn.reset();
      }
      if (SteadyClock::now() >= next_report) {
        report("drain");
        next_report += std::chrono::seconds(5);
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
    std::lock_guard lock(r_.mutex);
    r_.problem("the queues did not drain within " +
               std::to_string(o_.drain_seconds) + " s");
    return false;
  }

  void report(const char* phase) {
    std::int64_t left = -1;
    try {
      PgConnPtr conn;
      left = unfinished(conn);
    } catch (const Error&) {
    }
    std::lock_guard lock(r_.mutex);
    std::cerr << "chaos load (" << phase << "): committed "
              << r_.committed.size() << ", unfinished " << left << ", refused "
              << r_.refused << ", waits " << r_.waits << ", cli runs "
              << r_.cli_runs << std::endl;
  }

  void write() {
    std::lock_guard lock(r_.mutex);
    json out{{"committed", r_.committed},
             {"rolled_back", r_.rolled_back},
             {"aborted", r_.aborted},
             {"unknown", r_.unknown},
             {"observed", r_.observed},
             {"drained", drained_},
             {"limit", o_.limit},
             {"txns_committed", r_.txns_committed},
             {"txns_rolled_back", r_.txns_rolled_back},
             {"txns_failed", r_.txns_failed},
             {"txns_unknown", r_.txns_unknown},
             {"refused", r_.refused},
             {"notify_failed", r_.notify_failed},
             {"waits", r_.waits},
             {"waits_ok", r_.waits_ok},
             {"waits_timeout", r_.waits_timeout},
             {"waits_error", r_.waits_error},
             {"waits_failed", r_.waits_failed},
             {"waits_lost", r_.waits_lost},
             {"waits_hung", r_.waits_hung},
             {"max_overrun_ms", r_.max_overrun_ms},
             {"cli_runs", r_.cli_runs},
             {"cli_ok", r_.cli_ok},
             {"cli_full", r_.cli_full},
             {"cli_timeout", r_.cli_timeout},
             {"cli_error", r_.cli_error},
             {"cli_bad", r_.cli_bad},
             {"cli_hung", r_.cli_hung},
             {"cli_max_overrun_ms", r_.cli_max_overrun_ms},
             {"sampled_max_unfinished", r_.sampled_max_unfinished},
             {"problems", r_.problems}};
    std::ofstream(o_.dir + "/load.json") << out.dump() << "\n";
  }

  Options o_;
  Record r_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  std::atomic<std::int64_t> jobs_{0};
  std::atomic<std::int64_t> next_n_{0};
  bool drained_ = false;
};

}  // namespace

int run_load(const Args& args) {
  Options o;
  o.db = args.required("db");
  o.redis = args.required("redis");
  o.dir = args.required("dir");
  o.cli = args.text("cli", "");
  o.queues = static_cast<int>(args.number("queues", o.queues));
  o.enqueuers = static_cast<int>(args.number("enqueuers", o.enqueuers));
  o.waiters = static_cast<int>(args.number("waiters", o.waiters));
  o.cli_clients = static_cast<int>(args.number("cli-clients", o.cli_clients));
  o.limit = args.number("limit", o.limit);
  o.seconds = args.real("seconds", o.seconds);
  o.max_jobs = args.number("max-jobs", o.max_jobs);
  o.drain_seconds = args.real("drain-seconds", o.drain_seconds);
  o.rollback_rate = args.real("rollback-rate", o.rollback_rate);
  o.fail_rate = args.real("fail-rate", o.fail_rate);
  o.max_sleep_us =
      static_cast<int>(args.number("max-sleep-us", o.max_sleep_us));
  o.hang_slack = milliseconds(args.number("hang-slack-ms", 1000));
  Load(std::move(o)).run();
  return 0;
}

}  // namespace pgjobq::chaos
