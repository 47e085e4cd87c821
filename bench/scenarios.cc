#include "scenarios.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <functional>
#include <limits>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "harness.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/jobs.h"
#include "pgjobq/worker.h"
#include "references.h"

extern char** environ;

namespace pgjobq::bench {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kStallTimeout{60000};
constexpr int kChunk = 1000;  // jobs per enqueue_many call

SteadyClock::time_point after(double seconds) {
  return SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(
                                  std::chrono::duration<double>(seconds));
}

// What the no-op handler leaves behind: how many jobs started, and when
// the latest one did.
class Probe {
 public:
  void on_job(JobId id) {
    auto now = SteadyClock::now();
    {
      std::lock_guard lock(mutex_);
      ++handled_;
      last_id_ = id;
      last_start_ = now;
    }
    cv_.notify_all();
  }

  long handled() {
    std::lock_guard lock(mutex_);
    return handled_;
  }

  // Waits until at least `count` jobs have started. Returns false on
  // timeout.
  bool wait_handled(long count, milliseconds timeout = kStallTimeout) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return handled_ >= count; });
  }

  // Waits until job `id` has started; returns when it did.
  std::optional<SteadyClock::time_point> wait_started(
      JobId id, milliseconds timeout = kStallTimeout) {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, timeout, [&] { return last_id_ == id; })) {
      return std::nullopt;
    }
    return last_start_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  long handled_ = 0;
  JobId last_id_;
  SteadyClock::time_point last_start_;
};

// A Worker with a no-op handler, on a thread of its own.
class BenchWorker {
 public:
  BenchWorker(const Servers& s, std::vector<std::string> queues, Probe& probe)
      : worker_(options(s, std::move(queues)),
                [&probe](const JobContext& job) {
                  probe.on_job(job.id);
                  return HandlerResult::complete();
                }),
        thread_([this] {
          try {
            worker_.run();
          } catch (...) {
            error_ = std::current_exception();
          }
        }) {}
  ~BenchWorker() { stop(); }
  BenchWorker(const BenchWorker&) = delete;
  BenchWorker& operator=(const BenchWorker&) = delete;

  // Stops the worker (its running jobs finish and commit) and rethrows
  // whatever run() threw.
  void stop() {
    worker_.stop();
    if (thread_.joinable()) thread_.join();
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  static WorkerOptions options(const Servers& s,
                               std::vector<std::string> queues) {
    WorkerOptions o;
    o.db_url = s.db_url;
    o.redis_url = s.redis_url;
    o.queues = std::move(queues);
    return o;
  }

  Worker worker_;
  std::exception_ptr error_;
  std::thread thread_;
};

EnqueueOptions unlimited() {
  EnqueueOptions o;
  o.limit = std::numeric_limits<std::int64_t>::max();
  return o;
}

// One job through each queue and back: the worker is up, subscribed or
// polling, its statements prepared, and idle.
void warm_up(PGconn* db, RedisLink& redis,
             const std::vector<std::string>& queues) {
  std::vector<JobId> ids;
  for (const std::string& q : queues) {
    ids.push_back(enqueue(db, q, payload()));
    notify(redis, q);
  }
  for (JobId id : ids) wait_for_result(db, redis, id, kStallTimeout);
}

// Enqueues `jobs` jobs on `queue` in the open transaction, in chunks.
// Returns the last id.
JobId enqueue_backlog(PGconn* db, const std::string& queue, int jobs) {
  JobId last;
  std::vector<nlohmann::json> chunk;
  for (int done = 0; done < jobs; done += kChunk) {
    chunk.assign(static_cast<std::size_t>(std::min(kChunk, jobs - done)),
                 payload());
    auto ids = enqueue_many(db, queue, chunk, unlimited());
    if (!ids || ids->empty()) throw std::runtime_error("backlog refused");
    last = ids->back();
  }
  return last;
}

// Random gaps between latency samples, so the worker is idle each time and
// samples do not fall into step with anything periodic.
class Gaps {
 public:
  void sleep() {
    std::uniform_int_distribution<int> us(2000, 4000);
    std::this_thread::sleep_for(std::chrono::microseconds(us(rng_)));
  }

 private:
  std::mt19937 rng_{12345};
};

// A `pgjobq work` process, stopped with SIGTERM (then SIGKILL) on stop() or
// destruction. Its output goes to a log file, shown if it fails.
class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string>& argv,
               const std::vector<std::string>& extra_env) {
    char log_template[] = "/tmp/pgjobq-bench-cli.XXXXXX";
    int log_fd = mkstemp(log_template);
    if (log_fd < 0) throw std::runtime_error("mkstemp failed");
    log_path_ = log_template;
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      std::string_view entry(*e);
      bool replaced = false;
      for (const std::string& x : extra_env) {
        if (entry.starts_with(x.substr(0, x.find('=') + 1))) replaced = true;
      }
      if (!replaced) env.emplace_back(entry);
    }
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    std::vector<char*> envp, args;
    for (std::string& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_copy = argv;
    for (std::string& a : argv_copy) args.push_back(a.data());
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, log_fd, 1);
    posix_spawn_file_actions_adddup2(&actions, log_fd, 2);
    posix_spawn_file_actions_addclose(&actions, log_fd);
    int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(),
                         envp.data());
    posix_spawn_file_actions_destroy(&actions);
    close(log_fd);
    if (rc != 0) {
      pid_ = -1;
      throw std::runtime_error("could not start " + argv[0] + ": " +
                               std::strerror(rc));
    }
  }
  ~ChildProcess() {
    stop();
    unlink(log_path_.c_str());
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // SIGTERM, up to 10 s to exit, then SIGKILL. Returns the wait status.
  int stop() {
    if (pid_ <= 0) return status_;
    kill(pid_, SIGTERM);
    auto deadline = after(10);
    while (true) {
      pid_t done = waitpid(pid_, &status_, WNOHANG);
      if (done == pid_) break;
      if (SteadyClock::now() >= deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status_, 0);
        break;
      }
      std::this_thread::sleep_for(milliseconds(5));
    }
    pid_ = -1;
    return status_;
  }

  bool running() {
    if (pid_ <= 0) return false;
    if (waitpid(pid_, &status_, WNOHANG) == pid_) pid_ = -1;
    return pid_ > 0;
  }

  std::string log_tail() const {
    std::ifstream in(log_path_);
    std::stringstream all;
    all << in.rdbuf();
    std::string text = all.str();
    if (text.size() > 2000) text = "..." + text.substr(text.size() - 2000);
    return text;
  }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
  std::string log_path_;
};

// `count` producer threads, each with its own PostgreSQL and Redis
// connections, calling `step` over and over until stopped or until one
// throws. join() stops them and rethrows the first error; destruction
// stops and joins them too.
class Producers {
 public:
  using Step = std::function<void(PGconn*, RedisLink&)>;
  Producers(const Servers& s, int count, Step step) : step_(std::move(step)) {
    for (int p = 0; p < count; ++p) {
      threads_.emplace_back([this, &s] {
        try {
          PgConnPtr db = connect_database(s.db_url);
          RedisLink redis(s.redis_url);
          while (!stopping_) step_(db.get(), redis);
        } catch (...) {
          std::lock_guard lock(mutex_);
          if (!error_) error_ = std::current_exception();
          stopping_ = true;
        }
      });
    }
  }
  ~Producers() { stop(); }
  Producers(const Producers&) = delete;
  Producers& operator=(const Producers&) = delete;

  void join() {
    stop();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void stop() {
    stopping_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  Step step_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::exception_ptr error_;
  std::vector<std::thread> threads_;
};

}  // namespace

double enqueue_rate(const Servers& s, const std::string& queue,
                    double seconds) {
  PgConnPtr db = connect_database(s.db_url);
  enqueue(db.get(), queue, payload());  // creates the queue; warms caches
  auto start = SteadyClock::now();
  auto deadline = after(seconds);
  long jobs = 0;
  while (SteadyClock::now() < deadline) {
    enqueue(db.get(), queue, payload());
    ++jobs;
  }
  return static_cast<double>(jobs) / seconds_since(start);
}

double enqueue_many_rate(const Servers& s, const std::string& queue,
                         int per_transaction, double seconds) {
  PgConnPtr db = connect_database(s.db_url);
  std::vector<nlohmann::json> jobs(static_cast<std::size_t>(per_transaction),
                                   payload());
  enqueue_many(db.get(), queue, jobs, unlimited());
  auto start = SteadyClock::now();
  auto deadline = after(seconds);
  long batches = 0;
  while (SteadyClock::now() < deadline) {
    // One statement, so one transaction: no BEGIN/COMMIT round trips,
    // exactly like the bare reference.
    if (!enqueue_many(db.get(), queue, jobs, unlimited())) {
      throw std::runtime_error("enqueue_many refused without a limit");
    }
    ++batches;
  }
  return static_cast<double>(batches) * per_transaction / seconds_since(start);
}

ShallowResult shallow_worker_rate(const Servers& s, const std::string& queue,
                                  double seconds, int producers,
                                  int max_ahead) {
  Probe probe;
  BenchWorker worker(s, {queue}, probe);
  {
    PgConnPtr db = connect_database(s.db_url);
    RedisLink redis(s.redis_url);
    warm_up(db.get(), redis, {queue});
  }
  long base = probe.handled();
  std::atomic<long> reserved{base};  // jobs producers have started on
  std::atomic<long> enqueued{base};  // ... and committed
  std::mutex depth_mutex;
  double depth_sum = 0;
  long depth_samples = 0;
  Producers feeders(s, producers, [&](PGconn* db, RedisLink& redis) {
    long n = ++reserved;
    // At most max_ahead unfinished jobs: wait for the handler to have
    // started job n - max_ahead.
    if (!probe.wait_handled(n - max_ahead)) {
      throw std::runtime_error("the worker stopped taking jobs");
    }
    {
      std::lock_guard lock(depth_mutex);
      depth_sum += static_cast<double>(n - 1 - probe.handled());
      ++depth_samples;
    }
    enqueue(db, queue, payload());
    notify(redis, queue);
    ++enqueued;
  });
  // Reach a steady state first.
  std::this_thread::sleep_for(
      std::chrono::duration<double>(std::min(0.3, seconds)));
  long handled_before, enqueued_before;
  {
    std::lock_guard lock(depth_mutex);
    depth_sum = 0;
    depth_samples = 0;
    handled_before = probe.handled();
    enqueued_before = enqueued;
  }
  auto start = SteadyClock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  long handled = probe.handled() - handled_before;
  long produced = enqueued - enqueued_before;
  double elapsed = seconds_since(start);
  ShallowResult r;
  {
    std::lock_guard lock(depth_mutex);
    r.mean_depth =
        depth_samples ? depth_sum / static_cast<double>(depth_samples) : 0;
  }
  feeders.join();
  r.jobs_per_second = static_cast<double>(handled) / elapsed;
  r.enqueued_per_second = static_cast<double>(produced) / elapsed;
  if (!probe.wait_handled(enqueued)) {
    throw std::runtime_error("the worker did not drain the queue");
  }
  worker.stop();
  return r;
}

double shallow_producers_rate(const Servers& s, const std::string& queue,
                              double seconds, int producers) {
  // The first enqueue creates the queue, during the warm-up below; no
  // warm_up(), which waits for a job that no worker here will run.
  std::atomic<long> enqueued{0};
  std::atomic<bool> counting{false};
  Producers threads(s, producers, [&](PGconn* db, RedisLink& redis) {
    enqueue(db, queue, payload());
    notify(redis, queue);
    if (counting) ++enqueued;
  });
  // Reach a steady state first, as shallow_worker_rate does.
  std::this_thread::sleep_for(
      std::chrono::duration<double>(std::min(0.3, seconds)));
  counting = true;
  auto start = SteadyClock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  long produced = enqueued;
  double elapsed = seconds_since(start);
  threads.join();
  return static_cast<double>(produced) / elapsed;
}

double deep_worker_rate(const Servers& s,
                        const std::vector<std::string>& queues,
                        int jobs_per_queue) {
  Probe probe;
  BenchWorker worker(s, queues, probe);
  PgConnPtr db = connect_database(s.db_url);
  RedisLink redis(s.redis_url);
  warm_up(db.get(), redis, queues);
  std::vector<JobId> last;
  exec(db.get(), "BEGIN");
  for (const std::string& q : queues) {
    last.push_back(enqueue_backlog(db.get(), q, jobs_per_queue));
  }
  exec(db.get(), "COMMIT");
  auto start = SteadyClock::now();
  for (const std::string& q : queues) notify(redis, q);
  for (JobId id : last) wait_for_result(db.get(), redis, id, kStallTimeout);
  double elapsed = seconds_since(start);
  worker.stop();
  return static_cast<double>(jobs_per_queue) *
         static_cast<double>(queues.size()) / elapsed;
}

double cli_worker_rate(const Servers& s, const std::string& cli,
                       const std::string& queue, int jobs) {
  ChildProcess child({cli, "work", queue, "--", "/bin/cat"},
                     {"DATABASE_URL=" + s.db_url, "REDIS_URL=" + s.redis_url});
  PgConnPtr db = connect_database(s.db_url);
  RedisLink redis(s.redis_url);
  try {
    warm_up(db.get(), redis, {queue});
    exec(db.get(), "BEGIN");
    JobId last = enqueue_backlog(db.get(), queue, jobs);
    exec(db.get(), "COMMIT");
    auto start = SteadyClock::now();
    notify(redis, queue);
    wait_for_result(db.get(), redis, last, kStallTimeout);
    double elapsed = seconds_since(start);
    int status = child.stop();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      throw std::runtime_error("pgjobq work did not exit 0 on SIGTERM");
    }
    return jobs / elapsed;
  } catch (const std::exception& e) {
    bool alive = child.running();
    throw std::runtime_error(std::string(e.what()) +
                             (alive ? "" : " (pgjobq work exited)") +
                             "; its output:\n" + child.log_tail());
  }
}

LatencySamples handler_start_latency(const Servers& s, const std::string& queue,
                                     int samples) {
  Probe probe;
  BenchWorker worker(s, {queue}, probe);
  PgConnPtr db = connect_database(s.db_url);
  RedisLink redis(s.redis_url);
  warm_up(db.get(), redis, {queue});
  Gaps gaps;
  LatencySamples out;
  for (int i = 0; i < samples; ++i) {
    out.reference_ms.push_back(bare_commit_latency_ms(db.get()));
    gaps.sleep();
    JobId id = enqueue(db.get(), queue, payload());
    auto committed = SteadyClock::now();
    notify(redis, queue);
    auto started = probe.wait_started(id);
    if (!started) throw std::runtime_error("the handler never started");
    out.pgjobq_ms.push_back(milliseconds_between(committed, *started));
    gaps.sleep();  // the worker commits and goes back to waiting
  }
  worker.stop();
  return out;
}

LatencySamples result_latency(const Servers& s, const std::string& queue,
                              int samples) {
  Probe probe;
  BenchWorker worker(s, {queue}, probe);
  PgConnPtr db = connect_database(s.db_url);
  RedisLink redis(s.redis_url);
  warm_up(db.get(), redis, {queue});
  Gaps gaps;
  LatencySamples out;
  for (int i = 0; i < samples; ++i) {
    out.reference_ms.push_back(bare_commit_latency_ms(db.get()));
    gaps.sleep();
    auto begin = SteadyClock::now();
    JobId id = enqueue(db.get(), queue, payload());
    notify(redis, queue);
    wait_for_result(db.get(), redis, id, kStallTimeout);
    out.pgjobq_ms.push_back(milliseconds_between(begin, SteadyClock::now()));
    gaps.sleep();
  }
  worker.stop();
  return out;
}

namespace {

// VmRSS of this process in MiB, from /proc/self/status.
double resident_mib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::stod(line.substr(6)) / 1024.0;  // kB
    }
  }
  throw std::runtime_error("no VmRSS in /proc/self/status");
}

}  // namespace

std::vector<double> worker_memory(const Servers& s, const std::string& queue,
                                  long jobs) {
  {
    PgConnPtr db = connect_database(s.db_url);
    // Through pgjobq.insert_jobs, but built server-side, in chunks.
    constexpr long kServerChunk = 100000;
    for (long done = 0; done < jobs; done += kServerChunk) {
      std::string n = std::to_string(std::min(kServerChunk, jobs - done));
      exec(db.get(),
           "SELECT count(*) FROM pgjobq.insert_jobs($1, 9223372036854775807, "
           "(SELECT jsonb_agg($2::jsonb) FROM generate_series(1, $3::int)), "
           "$3::bigint)",
           {queue, payload_text(), n});
    }
  }
  Probe probe;
  BenchWorker worker(s, {queue}, probe);
  std::vector<double> samples;
  for (int tenth = 1; tenth <= 10; ++tenth) {
    if (!probe.wait_handled(jobs * tenth / 10, std::chrono::minutes(10))) {
      throw std::runtime_error("worker stalled at " +
                               std::to_string(probe.handled()) + " jobs");
    }
    samples.push_back(resident_mib());
    progress("9: " + std::to_string(probe.handled()) + " jobs, " +
             std::to_string(std::lround(samples.back())) + " MiB resident");
  }
  worker.stop();
  return samples;
}

void load_finished_jobs(const Servers& s, const std::string& queue,
                        long count) {
  PgConnPtr db = connect_database(s.db_url);
  // Written against schema 001 (src/sql/migrations/001_init.sql): the jobs
  // and the counters a worker would have left after running them.
  exec(db.get(),
       "WITH q AS ("
       "  INSERT INTO pgjobq.queues (name, last_position, admitted)"
       "  VALUES ($1, $2::bigint, $2::bigint) RETURNING id"
       "), p AS ("
       "  INSERT INTO pgjobq.queue_progress"
       "    (queue_id, handled_position, finished, completed)"
       "  SELECT id, $2::bigint, $2::bigint, $2::bigint FROM q"
       ")"
       "INSERT INTO pgjobq.jobs (queue_id, position, state, attempts, data,"
       "  result, enqueued_at, started_at, finished_at) "
       "SELECT q.id, g, 'completed', 1, $3::jsonb, 'null'::jsonb,"
       "  now() - interval '1 hour', now() - interval '1 hour',"
       "  now() - interval '1 hour' "
       "FROM q, generate_series(1, $2::bigint) AS g",
       {queue, std::to_string(count), payload_text()});
  exec_script(db.get(), "VACUUM (ANALYZE) pgjobq.jobs");
  try {
    // Start the measurements with no checkpoint of the load in progress.
    exec_script(db.get(), "CHECKPOINT");
  } catch (const std::exception& e) {
    progress(std::string("no CHECKPOINT after loading (") + e.what() + ")");
  }
}

}  // namespace pgjobq::bench
