// pgjobq_bench: each figure of the benchmarks issue beside a bare-PostgreSQL
// reference measured in the same run, and their ratio. The machines this
// runs on are shared and noisy, so absolute numbers mean little: every
// reference is measured in rounds alternating with its pgjobq figure, and a
// row's ratio is the median of its per-round ratios.
//
//   pgjobq_bench --db URL [--redis URL] [--json] [--quick] [--rows 1,3a,8]
//
// --db names a server (any database on it; the run creates and drops
// databases of its own). scripts/bench.sh starts throwaway servers and runs
// this; docs/benchmarks.md explains each row.

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "harness.h"
#include "pgjobq/log.h"
#include "references.h"
#include "report.h"
#include "scenarios.h"

#ifndef PGJOBQ_BENCH_CLI
#define PGJOBQ_BENCH_CLI ""
#endif

namespace pgjobq::bench {
namespace {

struct Config {
  std::string db;
  std::string redis;
  std::string cli;
  bool json = false;
  bool quick = false;
  int rounds = 3;
  int deep_rounds = 3;
  double seconds = 1.0;
  int deep_jobs = 20000;
  int cli_jobs = 500;
  int queues = 16;
  int queue_jobs = 1000;
  int latency_samples = 500;
  int max_ahead = 16;
  int producers = 2;
  long history_jobs = 1000000;
  long memory_jobs = 1000000;
  std::string rows;
};

// A reference measurement; `other` is a second reference taken alongside
// (row 5 compares with one connection and with sixteen).
struct Reference {
  double value = 0;
  double other = 0;
};

// Measurements of a pgjobq figure and its references, round by round.
struct Rounds {
  std::vector<double> subject;
  std::vector<double> reference;
  std::vector<double> other;
  std::vector<double> ratio;
  // How far apart the two references of each kept round were.
  std::vector<double> spread;
  int discarded = 0;
};

// A round whose references before and after the pgjobq measurement differ
// by more than this saw the machine change speed (other work started or
// stopped) and is measured again.
constexpr double kMaxSpread = 0.25;

std::string fixed(double v, int decimals) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(decimals);
  s << v;
  return s.str();
}

// Runs rounds of (reference, subject, reference): the reference of a round
// is the mean of the two around its subject, so a drift in the machine's
// speed hits both alike, and a round whose two references disagree by more
// than kMaxSpread is discarded and run again (at most `rounds` times over).
// `settle` runs before each measurement, so none pays for the writes of the
// one before.
Rounds sandwich(const std::string& label, int rounds,
                const std::function<void()>& settle,
                const std::function<Reference()>& reference,
                const std::function<double()>& subject) {
  Rounds r;
  const int max_attempts = 2 * rounds;
  int attempts = 0;
  while (static_cast<int>(r.subject.size()) < rounds &&
         attempts < max_attempts) {
    ++attempts;
    settle();
    Reference before = reference();
    settle();
    double sub = subject();
    settle();
    Reference after = reference();
    double high = std::max(before.value, after.value);
    double spread = high > 0 ? std::abs(before.value - after.value) / high : 0;
    int needed = rounds - static_cast<int>(r.subject.size());
    std::string line = label + " round " + std::to_string(attempts) +
                       ": pgjobq " + fixed(sub, 0) + ", reference " +
                       fixed(before.value, 0) + " / " + fixed(after.value, 0);
    if (spread > kMaxSpread && max_attempts - attempts >= needed) {
      ++r.discarded;
      progress(line + ": references " + fixed(spread * 100, 0) +
               "% apart, discarded");
      continue;
    }
    double ref = (before.value + after.value) / 2;
    r.reference.push_back(ref);
    r.other.push_back((before.other + after.other) / 2);
    r.subject.push_back(sub);
    r.ratio.push_back(ref > 0 ? sub / ref : 0);
    r.spread.push_back(spread);
    progress(line + ", ratio " + fixed(r.ratio.back(), 3));
  }
  return r;
}

Rounds sandwich(const std::string& label, int rounds,
                const std::function<void()>& settle,
                const std::function<double()>& reference,
                const std::function<double()>& subject) {
  return sandwich(
      label, rounds, settle, [&] { return Reference{reference()}; }, subject);
}

void fill(Row& row, const Rounds& r) {
  row.pgjobq = median(r.subject);
  row.reference = median(r.reference);
  row.ratio = median(r.ratio);
  row.detail["rounds"] = {{"pgjobq", r.subject},
                          {"reference", r.reference},
                          {"ratio", r.ratio},
                          {"reference_spread", r.spread},
                          {"discarded", r.discarded}};
  if (r.discarded > 0) {
    row.note += std::string(row.note.empty() ? "" : "; ") +
                std::to_string(r.discarded) +
                " round(s) run again: the machine changed speed mid-round";
  }
}

class Bench {
 public:
  explicit Bench(Config config) : c_(std::move(config)) {
    std::stringstream list(c_.rows);
    for (std::string id; std::getline(list, id, ',');) {
      if (!id.empty()) selected_.insert(id);
    }
  }

  Report run() {
    auto start = SteadyClock::now();
    report_.cpus = static_cast<int>(std::thread::hardware_concurrency());
    report_.load_before = load_average();
    ScratchDatabase main_db(c_.db, "pgjobq_bench_" + std::to_string(getpid()));
    {
      PgConnPtr db = main_db.connect();
      prepare_database(db.get());
      report_.settings = server_settings(db.get());
    }
    s_ = {main_db.url(), c_.redis};
    describe_config();

    if (wants("1")) row1();
    if (wants("2")) row2();
    if (wants("3a")) row3a();
    if (wants("3b")) row3b();
    if (wants("4")) row4();
    if (wants("5")) row5();
    if (wants("6")) row6();
    if (wants("7")) row7();
    if (wants("8")) row8();
    if (wants("9")) row9();
    report_.seconds = seconds_since(start);
    report_.load_after = load_average();
    return std::move(report_);
  }

 private:
  bool wants(const std::string& id) const {
    return selected_.empty() || selected_.contains(id);
  }

  void describe_config() {
    report_.config = {{"rounds", c_.rounds},
                      {"deep_rounds", c_.deep_rounds},
                      {"window_s", c_.seconds},
                      {"deep_jobs", c_.deep_jobs},
                      {"cli_jobs", c_.cli_jobs},
                      {"queues", c_.queues},
                      {"jobs_per_queue", c_.queue_jobs},
                      {"latency_samples", c_.latency_samples},
                      {"shallow_producers", c_.producers},
                      {"shallow_max_ahead", c_.max_ahead},
                      {"finished_jobs", c_.history_jobs},
                      {"memory_jobs", c_.memory_jobs}};
  }

  // Runs `body` to fill `rows` (added to the report in order); an error
  // marks them failed instead of ending the run.
  void measure(std::vector<Row> rows,
               const std::function<void(std::vector<Row>&)>& body) {
    try {
      body(rows);
    } catch (const std::exception& e) {
      progress("row " + rows.front().id + " failed: " + e.what());
      for (Row& r : rows) {
        if (r.pgjobq) continue;
        r.failed = true;
        r.note = std::string("failed: ") + e.what();
      }
    }
    for (Row& r : rows) report_.rows.push_back(std::move(r));
  }

  double bare_rate() { return bare_commit_rate(s_.db_url, c_.seconds); }

  void row1() {
    Row row{"1", "enqueue, 1 job per txn", "jobs/s",
            "bare 1-row INSERT..RETURNING commit",
            Target::ratio_at_least(0.85)};
    measure({row}, [&](std::vector<Row>& rows) {
      fill(rows[0],
           sandwich(
               "1 (enqueue 1/txn)", c_.rounds, settle_,
               [&] { return bare_rate(); },
               [&] { return enqueue_rate(s_, "bench-1", c_.seconds); }));
    });
  }

  void row2() {
    Row row{"2", "enqueue_many, 1,000 jobs per txn", "jobs/s",
            "bare 1,000-row INSERT..SELECT", Target::ratio_at_least(0.7)};
    measure({row}, [&](std::vector<Row>& rows) {
      fill(rows[0],
           sandwich(
               "2 (enqueue 1,000/txn)", c_.rounds, settle_,
               [&] {
                 return bare_bulk_insert_rate(s_.db_url, 1000, c_.seconds);
               },
               [&] {
                 return enqueue_many_rate(s_, "bench-2", 1000, c_.seconds);
               }));
    });
  }

  void row3a() {
    Row row{"3a", "1 queue, no-op handler, shallow (jobs arrive one by one)",
            "jobs/s", "bare 1-row commit (as row 1)",
            Target::ratio_at_least(0.75)};
    measure({row}, [&](std::vector<Row>& rows) {
      std::vector<ShallowResult> runs;
      Rounds r = sandwich(
          "3a (shallow queue)", c_.rounds, settle_, [&] { return bare_rate(); },
          [&] {
            runs.push_back(shallow_worker_rate(s_, "bench-3a", c_.seconds,
                                               c_.producers, c_.max_ahead));
            return runs.back().jobs_per_second;
          });
      fill(rows[0], r);
      std::vector<double> depth, produced;
      for (const ShallowResult& x : runs) {
        depth.push_back(x.mean_depth);
        produced.push_back(x.enqueued_per_second);
      }
      rows[0].detail["mean_depth"] = depth;
      rows[0].detail["enqueued_per_s"] = produced;
      // What the producers manage with no worker at all, against the same
      // reference: the ceiling of the row on this machine.
      Rounds alone = sandwich(
          "3a producers alone", c_.rounds, settle_, [&] { return bare_rate(); },
          [&] {
            return shallow_producers_rate(s_, "bench-3a-alone", c_.seconds,
                                          c_.producers);
          });
      rows[0].detail["producers_alone"] = {{"jobs_per_s", alone.subject},
                                           {"reference", alone.reference},
                                           {"ratio", alone.ratio}};
      rows[0].note = "queue depth seen by the producer: median " +
                     fixed(median(depth), 1) + " jobs (cap " +
                     std::to_string(c_.max_ahead) + "); the " +
                     std::to_string(c_.producers) +
                     " producers alone, with no worker: " +
                     fixed(median(alone.subject), 0) + " jobs/s, " +
                     fixed(median(alone.ratio), 2) + " of the commit rate";
    });
  }

  void row3b() {
    Row row{"3b",
            "1 queue, no-op handler, deep (" + std::to_string(c_.deep_jobs) +
                " jobs waiting)",
            "jobs/s", "bare 1-row commit (as row 1)",
            Target::ratio_at_least(1.5)};
    measure({row}, [&](std::vector<Row>& rows) {
      fill(rows[0], sandwich(
                        "3b (deep queue)", c_.rounds, settle_,
                        [&] { return bare_rate(); },
                        [&] {
                          return deep_worker_rate(s_, {"bench-3b"},
                                                  c_.deep_jobs);
                        }));
    });
  }

  std::string find_cli() const {
    if (!c_.cli.empty()) return c_.cli;
    std::vector<std::filesystem::path> candidates;
    if (std::string_view(PGJOBQ_BENCH_CLI).size() > 0) {
      candidates.emplace_back(PGJOBQ_BENCH_CLI);
    }
    // The build tree: <build>/bench/pgjobq_bench next to <build>/cli/pgjobq.
    std::error_code error;
    auto self = std::filesystem::read_symlink("/proc/self/exe", error);
    if (!error)
      candidates.push_back(self.parent_path() / ".." / "cli" / "pgjobq");
    for (const auto& path : candidates) {
      if (access(path.c_str(), X_OK) == 0) return path.lexically_normal();
    }
    return {};
  }

  void row4() {
    Row row{"4",
            "`pgjobq work -- /bin/cat`, deep (" + std::to_string(c_.cli_jobs) +
                " jobs waiting)",
            "jobs/s", "bare 1-row commit (as row 1)", Target::none()};
    std::string cli = find_cli();
    if (cli.empty()) {
      row.note =
          "skipped: no pgjobq CLI binary (build the pgjobq_cli target or pass "
          "--pgjobq-cli PATH)";
      progress("row 4 " + row.note);
      report_.rows.push_back(std::move(row));
      return;
    }
    measure({row}, [&](std::vector<Row>& rows) {
      rows[0].detail["cli"] = cli;
      fill(rows[0], sandwich(
                        "4 (pgjobq work -- cat)", c_.rounds, settle_,
                        [&] { return bare_rate(); },
                        [&] {
                          return cli_worker_rate(s_, cli, "bench-4",
                                                 c_.cli_jobs);
                        }));
      rows[0].note = "one process per job; binary " + cli;
    });
  }

  void row5() {
    std::string what = std::to_string(c_.queues) +
                       " queues in one Worker, no-op handler, deep (" +
                       std::to_string(c_.queue_jobs) + " jobs each)";
    Row vs_one{"5a", what, "jobs/s", "bare 1-row commit, 1 connection",
               Target::ratio_at_least(3.0)};
    Row vs_many{"5b", what, "jobs/s",
                "bare 1-row commits, " + std::to_string(c_.queues) +
                    " connections at once",
                Target::ratio_at_least(0.6)};
    measure({vs_one, vs_many}, [&](std::vector<Row>& rows) {
      std::vector<std::string> queues;
      for (int i = 0; i < c_.queues; ++i) {
        queues.push_back("bench-5:" + std::to_string(i));
      }
      Rounds r = sandwich(
          "5 (16 queues)", c_.rounds, settle_,
          [&] {
            Reference ref;
            ref.other =
                bare_parallel_commit_rate(s_.db_url, c_.queues, c_.seconds);
            settle();
            ref.value = bare_rate();
            progress("5 references: 1 connection " + fixed(ref.value, 0) +
                     ", " + std::to_string(c_.queues) + " connections " +
                     fixed(ref.other, 0));
            return ref;
          },
          [&] { return deep_worker_rate(s_, queues, c_.queue_jobs); });
      fill(rows[0], r);
      Rounds m = r;
      m.reference = r.other;
      for (std::size_t i = 0; i < m.ratio.size(); ++i) {
        m.ratio[i] = m.reference[i] > 0 ? r.subject[i] / m.reference[i] : 0;
      }
      fill(rows[1], m);
    });
  }

  // Rows "<id> p50", "<id> p99" (and "<id> max") from latency samples.
  void latency_rows(std::vector<Row>& rows, const LatencySamples& samples) {
    const double points[] = {50, 99, 100};
    for (std::size_t i = 0; i < rows.size(); ++i) {
      rows[i].pgjobq = percentile(samples.pgjobq_ms, points[i]);
      rows[i].reference = percentile(samples.reference_ms, points[i]);
      rows[i].ratio = *rows[i].pgjobq / *rows[i].reference;
    }
    rows[0].detail["samples"] = samples.pgjobq_ms.size();
    rows[0].detail["mean_ms"] = [&] {
      double sum = 0;
      for (double v : samples.pgjobq_ms) sum += v;
      return sum / static_cast<double>(samples.pgjobq_ms.size());
    }();
  }

  void row6() {
    std::string what = "enqueue commit + notify -> handler start";
    std::string ref = "bare 1-row commit latency";
    std::vector<Row> rows = {
        {"6 p50", what + ", p50", "ms", ref + ", p50",
         Target::value_below(0.4)},
        {"6 p99", what + ", p99", "ms", ref + ", p99", Target::value_below(2)},
        {"6 max", what + ", max", "ms", ref + ", max", Target::none()}};
    measure(rows, [&](std::vector<Row>& out) {
      settle();
      progress("6 (latency to handler start): " +
               std::to_string(c_.latency_samples) + " jobs");
      latency_rows(out,
                   handler_start_latency(s_, "bench-6", c_.latency_samples));
    });
  }

  void row7() {
    std::string what = "enqueue + notify -> wait_for_result returns";
    std::string ref = "bare 1-row commit latency";
    std::vector<Row> rows = {
        {"7 p50", what + ", p50", "ms", ref + ", p50",
         Target::value_below(1.5)},
        {"7 p99", what + ", p99", "ms", ref + ", p99", Target::none()}};
    measure(rows, [&](std::vector<Row>& out) {
      settle();
      progress("7 (enqueue to result): " + std::to_string(c_.latency_samples) +
               " jobs");
      latency_rows(out, result_latency(s_, "bench-7", c_.latency_samples));
    });
  }

  void row8() {
    std::string with = " with " + std::to_string(c_.history_jobs) +
                       " finished jobs in the table";
    std::string ref = "the same, empty table";
    std::vector<Row> rows = {
        {"8/1", "row 1" + with, "jobs/s", ref, Target::ratio_at_least(0.9)},
        {"8/3a", "row 3a" + with, "jobs/s", ref, Target::ratio_at_least(0.9)},
        {"8/3b", "row 3b" + with, "jobs/s", ref, Target::ratio_at_least(0.9)}};
    measure(rows, [&](std::vector<Row>& out) {
      std::string base = "pgjobq_bench_" + std::to_string(getpid());
      ScratchDatabase empty_db(c_.db, base + "_empty");
      ScratchDatabase full_db(c_.db, base + "_full");
      for (const ScratchDatabase* d : {&empty_db, &full_db}) {
        PgConnPtr db = d->connect();
        prepare_database(db.get());
      }
      Servers empty{empty_db.url(), c_.redis};
      Servers full{full_db.url(), c_.redis};
      progress("8: loading " + std::to_string(c_.history_jobs) +
               " finished jobs");
      auto load_start = SteadyClock::now();
      load_finished_jobs(full, "bench-8", c_.history_jobs);
      out[0].detail["load_s"] = seconds_since(load_start);
      progress("8: loaded in " + fixed(seconds_since(load_start), 1) + " s");
      // The worker rows first: row 1 leaves its jobs pending.
      fill(out[1], sandwich(
                       "8/3a (shallow, full/empty)", c_.rounds, settle_,
                       [&] {
                         return shallow_worker_rate(empty, "bench-8",
                                                    c_.seconds, c_.producers,
                                                    c_.max_ahead)
                             .jobs_per_second;
                       },
                       [&] {
                         return shallow_worker_rate(full, "bench-8", c_.seconds,
                                                    c_.producers, c_.max_ahead)
                             .jobs_per_second;
                       }));
      fill(out[2],
           sandwich(
               "8/3b (deep, full/empty)", c_.deep_rounds, settle_,
               [&] {
                 return deep_worker_rate(empty, {"bench-8"}, c_.deep_jobs);
               },
               [&] {
                 return deep_worker_rate(full, {"bench-8"}, c_.deep_jobs);
               }));
      fill(out[0],
           sandwich(
               "8/1 (enqueue, full/empty)", c_.rounds, settle_,
               [&] { return enqueue_rate(empty, "bench-8", c_.seconds); },
               [&] { return enqueue_rate(full, "bench-8", c_.seconds); }));
    });
  }

  // Issue 3: worker memory stays flat over a million jobs. The reference
  // is the same process after the first tenth of them.
  void row9() {
    Row row{"9",
            "worker resident memory after " + std::to_string(c_.memory_jobs) +
                " jobs",
            "MiB", "after the first tenth", Target::ratio_at_most(1.1)};
    measure({row}, [&](std::vector<Row>& rows) {
      settle();
      progress("9 (worker memory): loading " + std::to_string(c_.memory_jobs) +
               " jobs");
      std::vector<double> rss = worker_memory(s_, "bench-9", c_.memory_jobs);
      rows[0].pgjobq = rss.back();
      rows[0].reference = rss.front();
      rows[0].ratio = rss.back() / rss.front();
      rows[0].detail["resident_mib_by_tenth"] = rss;
    });
  }

  // Before each measurement: a CHECKPOINT, so that the dirty pages and WAL
  // of the previous one are flushed before the clock starts, not during.
  void settle() {
    if (!checkpoints_) return;
    try {
      PgConnPtr db = connect_database(c_.db);
      exec_script(db.get(), "CHECKPOINT");
    } catch (const std::exception& e) {
      checkpoints_ = false;
      progress(std::string("measuring without CHECKPOINT between rounds: ") +
               e.what());
    }
  }

  Config c_;
  bool checkpoints_ = true;
  std::function<void()> settle_ = [this] { settle(); };
  std::set<std::string> selected_;
  Servers s_;
  Report report_;
};

}  // namespace
}  // namespace pgjobq::bench

int main(int argc, char** argv) {
  using namespace pgjobq::bench;
  Config c;
  if (const char* env = std::getenv("DATABASE_URL")) c.db = env;
  CLI::App app{
      "pgjobq benchmark: each figure beside a bare-PostgreSQL reference "
      "measured in the same run"};
  app.add_option("--db", c.db,
                 "PostgreSQL server URL (default DATABASE_URL); the run "
                 "creates and drops databases of its own");
  app.add_option("--redis", c.redis,
                 "Redis URL (default REDIS_URL, else redis://127.0.0.1:6379)");
  app.add_flag("--json", c.json, "print JSON instead of the table");
  app.add_flag("--quick", c.quick,
               "a short run that checks everything works (numbers are rough)");
  app.add_option("--rows", c.rows,
                 "comma-separated rows to run: 1,2,3a,3b,4,5,6,7,8,9 "
                 "(default all)");
  app.add_option("--pgjobq-cli", c.cli,
                 "the pgjobq binary for row 4 (default: the build tree's)");
  auto* rounds = app.add_option("--rounds", c.rounds, "rounds per row");
  auto* seconds =
      app.add_option("--seconds", c.seconds, "length of each timed window");
  auto* deep =
      app.add_option("--deep-jobs", c.deep_jobs, "backlog of rows 3b and 8/3b");
  auto* cli_jobs = app.add_option("--cli-jobs", c.cli_jobs, "backlog of row 4");
  auto* queue_jobs = app.add_option("--queue-jobs", c.queue_jobs,
                                    "backlog per queue of row 5");
  auto* samples = app.add_option("--latency-samples", c.latency_samples,
                                 "jobs timed in rows 6 and 7");
  auto* history = app.add_option("--finished-jobs", c.history_jobs,
                                 "finished jobs loaded for row 8");
  auto* memory = app.add_option("--memory-jobs", c.memory_jobs,
                                "jobs the worker runs through in row 9");
  app.add_option("--producers", c.producers,
                 "row 3a: connections enqueueing one job per transaction");
  app.add_option("--max-ahead", c.max_ahead,
                 "row 3a: how far the producer may get ahead of the worker");
  CLI11_PARSE(app, argc, argv);
  if (c.db.empty()) {
    std::cerr << "pgjobq_bench: give --db URL or set DATABASE_URL\n";
    return 2;
  }
  if (c.redis.empty()) c.redis = pgjobq::redis_url_or_default();
  if (c.quick) {
    // Only what was not set explicitly.
    if (rounds->count() == 0) c.rounds = 1;
    if (seconds->count() == 0) c.seconds = 0.2;
    if (deep->count() == 0) c.deep_jobs = 500;
    if (cli_jobs->count() == 0) c.cli_jobs = 30;
    if (queue_jobs->count() == 0) c.queue_jobs = 40;
    if (samples->count() == 0) c.latency_samples = 20;
    if (history->count() == 0) c.history_jobs = 20000;
    if (memory->count() == 0) c.memory_jobs = 20000;
  }
  c.deep_rounds = std::min(c.rounds, c.deep_rounds);
  pgjobq::set_log_sink([](pgjobq::LogLevel level, std::string_view text) {
    if (level < pgjobq::LogLevel::warning) return;
    progress(std::string("pgjobq ") +
             (level == pgjobq::LogLevel::error ? "error" : "warning") + ": " +
             std::string(text));
  });
  try {
    Report report = Bench(c).run();
    if (c.json) {
      print_json(std::cout, report);
    } else {
      print_table(std::cout, report);
    }
    bool failed = std::any_of(report.rows.begin(), report.rows.end(),
                              [](const Row& r) { return r.failed; });
    return failed ? 1 : 0;
  } catch (const std::exception& e) {
    std::cerr << "pgjobq_bench: " << e.what() << "\n";
    return 1;
  }
}
