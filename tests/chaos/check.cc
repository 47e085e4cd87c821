// The end of a chaos run: reads the audit tables (kept by triggers in the
// very transactions that enqueued and finished jobs), the handlers'
// journals, what the load saw and what scripts/chaos.sh did, checks every
// promise, and prints one summary line. Exits 1 if anything failed.

#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "chaos/chaos.h"
#include "pgjobq/connection.h"

namespace pgjobq::chaos {
namespace {

using nlohmann::json;

struct Job {
  std::int64_t id = 0;
  std::string queue;
  std::int64_t seq = 0;
  std::int64_t committed_us = 0;  // commit timestamp of its enqueue
  bool exists = false;
  std::string state;
  int attempts = 0;
  std::optional<json> result;
  bool doomed = false;
};

struct Finish {
  std::string state;
  std::optional<json> result;
  int attempts = 0;
  std::int64_t committed_us = 0;
};

class Check {
 public:
  explicit Check(const Args& args) : args_(args) {}

  int run() {
    dir_ = args_.required("dir");
    queues_ = static_cast<int>(args_.number("queues", 8));
    {
      std::ifstream in(dir_ + "/load.json");
      if (!in) {
        fail("no load.json: the load did not finish");
        load_ = json::object();
      } else {
        load_ = json::parse(in);
      }
    }
    limit_ = load_.value("limit", std::int64_t{0});
    read_database();
    check_commits();
    check_completions();
    check_journals();
    for (const std::string& note : overlap_notes_) {
      std::cerr << "overlap: " << note << "\n";
    }
    if (overlaps_violation_ + overlaps_unnamed_ > 0) {
      fail(std::to_string(overlaps_violation_ + overlaps_unnamed_) +
           " runs started while a run of another job of their queue that "
           "was not a duplicate was alive");
    }
    check_limit();
    check_waits();
    check_workers();
    print();
    return failures_.empty() ? 0 : 1;
  }

 private:
  void fail(const std::string& why) {
    if (failures_.size() < 50) failures_.push_back(why);
  }

  std::int64_t stat(const char* name) const {
    return load_.value(name, std::int64_t{0});
  }

  std::unordered_set<std::int64_t> ids(const char* name) const {
    std::unordered_set<std::int64_t> out;
    if (load_.contains(name)) {
      for (const json& id : load_[name]) out.insert(id.get<std::int64_t>());
    }
    return out;
  }

  void read_database() {
    PgConnPtr db = connect_quietly(args_.required("db"));
    Rows rows = query(db.get(), R"sql(
SELECT e.job, q.name, e.seq,
       (extract(epoch FROM pg_xact_commit_timestamp(e.xmin)) * 1000000)::bigint,
       j.id IS NOT NULL, j.state, j.attempts, j.result::text,
       coalesce(j.data->>'doomed' = 'true', false)
FROM chaos.enqueued e
JOIN pgjobq.queues q ON q.id = e.queue_id
LEFT JOIN pgjobq.jobs j ON j.id = e.job
)sql");
    for (int r = 0; r < rows.size(); ++r) {
      Job j;
      j.id = rows.int64(r, 0);
      j.queue = rows.text(r, 1);
      j.seq = rows.int64(r, 2);
      j.committed_us = rows.int64(r, 3);
      j.exists = rows.text(r, 4) == "t";
      if (j.exists) {
        j.state = rows.text(r, 5);
        j.attempts = static_cast<int>(rows.int64(r, 6));
        if (!rows.null(r, 7)) j.result = json::parse(rows.text(r, 7));
        j.doomed = rows.text(r, 8) == "t";
      }
      jobs_[j.id] = j;
    }
    Rows finished = query(db.get(), R"sql(
SELECT f.job, f.state, f.result::text, f.attempts,
       (extract(epoch FROM pg_xact_commit_timestamp(f.xmin)) * 1000000)::bigint
FROM chaos.finished f
)sql");
    for (int r = 0; r < finished.size(); ++r) {
      Finish f;
      f.state = finished.text(r, 1);
      if (!finished.null(r, 2)) f.result = json::parse(finished.text(r, 2));
      f.attempts = static_cast<int>(finished.int64(r, 3));
      f.committed_us = finished.int64(r, 4);
      finishes_[finished.int64(r, 0)].push_back(std::move(f));
    }
    unaudited_ = query(db.get(), R"sql(
SELECT count(*) FROM pgjobq.jobs j
WHERE NOT EXISTS (SELECT 1 FROM chaos.enqueued e WHERE e.job = j.id)
)sql")
                     .int64(0, 0);
    changed_ =
        query(db.get(), "SELECT count(*) FROM chaos.changed").int64(0, 0);
    doomed_stored_ = query(db.get(),
                           "SELECT count(*) FROM pgjobq.jobs WHERE "
                           "data->>'doomed' = 'true'")
                         .int64(0, 0);
  }

  // Committed jobs exist; rolled-back and aborted ones do not.
  void check_commits() {
    for (std::int64_t id : ids("committed")) {
      if (!jobs_.contains(id) || !jobs_[id].exists) {
        ++committed_missing_;
        fail("job " + std::to_string(id) + " was committed but is missing");
      }
    }
    rolled_back_ = ids("rolled_back");
    aborted_ = ids("aborted");
    for (const auto* set : {&rolled_back_, &aborted_}) {
      for (std::int64_t id : *set) {
        if (jobs_.contains(id)) {
          ++uncommitted_exist_;
          fail("job " + std::to_string(id) +
               " of a rolled-back or failed transaction exists");
        }
      }
    }
    for (std::int64_t id : ids("unknown")) {
      if (jobs_.contains(id)) ++unknown_committed_;
    }
    if (unaudited_ != 0) {
      fail(std::to_string(unaudited_) + " jobs exist without an enqueue audit");
    }
    if (doomed_stored_ != 0) {
      fail(std::to_string(doomed_stored_) +
           " jobs meant to be rolled back are stored");
    }
    for (const auto& [id, job] : jobs_) {
      if (!job.exists) {
        fail("job " + std::to_string(id) + " was committed and then vanished");
      }
    }
  }

  // Each committed job completed, exactly once, with the result it kept.
  void check_completions() {
    for (const auto& [id, job] : jobs_) {
      const auto it = finishes_.find(id);
      std::size_t completions = 0;
      std::size_t others = 0;
      if (it != finishes_.end()) {
        for (const Finish& f : it->second) {
          (f.state == "completed" ? completions : others) += 1;
        }
      }
      std::string label = "job " + std::to_string(id);
      if (job.state != "completed") {
        ++not_completed_;
        fail(label + " is " + job.state);
        continue;
      }
      if (completions != 1 || others != 0) {
        ++not_once_;
        fail(label + " reached a final state " +
             std::to_string(completions + others) + " times");
        continue;
      }
      const Finish& f = it->second.front();
      if (f.result != job.result) {
        ++not_once_;
        fail(label + ": stored result changed after completion");
        continue;
      }
      if (!job.result || !job.result->is_object() ||
          job.result->value("job", std::int64_t{0}) != id ||
          job.result->value("attempt", -1) != job.attempts) {
        ++not_once_;
        fail(label + ": result " + (job.result ? job.result->dump() : "none") +
             " is not the last attempt's (" + std::to_string(job.attempts) +
             ")");
        continue;
      }
      ++completed_once_;
    }
    if (changed_ != 0) {
      fail(std::to_string(changed_) + " changes to completed jobs");
    }
    if (load_.contains("observed")) {
      for (const json& pair : load_["observed"]) {
        std::int64_t id = pair[0].get<std::int64_t>();
        auto it = jobs_.find(id);
        ++observed_;
        if (it == jobs_.end() || it->second.result != pair[1]) {
          ++observed_wrong_;
          fail("a waiter got " + pair[1].dump() + " for job " +
               std::to_string(id) + ", which stored something else");
        }
      }
    }
  }

  // FIFO: within each queue, first starts follow commit order, and a job
  // starts only once every job before it finished; no two runs overlap.
  void check_journals() {
    std::map<std::string, std::vector<const Job*>> by_queue;
    for (const auto& [id, job] : jobs_) by_queue[job.queue].push_back(&job);
    for (int q = 0; q < queues_; ++q) by_queue[queue_name(q)];
    for (auto& [queue, list] : by_queue) {
      std::sort(list.begin(), list.end(), [](const Job* a, const Job* b) {
        return std::tie(a->committed_us, a->seq) <
               std::tie(b->committed_us, b->seq);
      });
      check_queue(queue, list);
    }
  }

  void check_queue(const std::string& queue,
                   const std::vector<const Job*>& order) {
    std::unordered_map<std::int64_t, std::size_t> rank;
    for (std::size_t i = 0; i < order.size(); ++i) rank[order[i]->id] = i;
    std::vector<bool> started(order.size()), finished(order.size());
    std::set<std::pair<std::int64_t, int>> finished_attempts;
    std::size_t next = 0;              // rank expected to start next
    std::size_t first_unfinished = 0;  // every rank below has finished
    std::vector<JournalEvent> events = read_journal(dir_ + "/journal", queue);
    for (const JournalEvent& e : events) {
      auto it = rank.find(e.job);
      if (e.kind == 'O') {
        overlap(queue, e);
        continue;
      }
      if (e.kind == 'W') continue;
      if (it == rank.end()) {
        if (e.kind == 'S') {
          ++ran_uncommitted_;
          if (rolled_back_.contains(e.job) || aborted_.contains(e.job)) {
            ++uncommitted_ran_;
          }
          fail(queue + ": job " + std::to_string(e.job) +
               " ran but was never committed");
        }
        continue;
      }
      std::size_t i = it->second;
      if (e.kind == 'S') {
        ++runs_;
        if (started[i]) continue;  // a re-run: at-least-once
        started[i] = true;
        if (i != next) {
          ++order_violations_;
          fail(queue + ": job " + std::to_string(e.job) + " started " +
               (i > next ? "before job " + std::to_string(order[next]->id)
                         : "after later jobs") +
               " though committed " + (i > next ? "later" : "earlier"));
        }
        next = std::max(next, i + 1);
        while (first_unfinished < order.size() && finished[first_unfinished]) {
          ++first_unfinished;
        }
        if (first_unfinished < i) {
          ++early_starts_;
          fail(queue + ": job " + std::to_string(e.job) +
               " started before job " +
               std::to_string(order[first_unfinished]->id) + " finished");
        }
      } else if (e.kind == 'F') {
        finished[i] = true;
        finished_attempts.insert({e.job, e.attempt});
      }
    }
    for (std::size_t i = 0; i < order.size(); ++i) {
      const Job& job = *order[i];
      if (!started[i]) {
        ++never_ran_;
        fail(queue + ": job " + std::to_string(job.id) + " never ran");
      } else if (job.state == "completed" &&
                 !finished_attempts.contains({job.id, job.attempts})) {
        ++result_without_run_;
        fail(queue + ": job " + std::to_string(job.id) +
             " completed by attempt " + std::to_string(job.attempts) +
             ", which the journal never saw finish");
      }
    }
  }

  // Whether run (job, attempt) is a duplicate: its job was completed by a
  // later attempt. Execution is at-least-once: when a worker's session is
  // cut just as it starts a job (a command takes a while to start), the
  // standby that takes the lock runs the job again, and the stale run may
  // still be going.
  bool superseded(std::int64_t job, int attempt) const {
    auto it = jobs_.find(job);
    return it != jobs_.end() && it->second.state == "completed" &&
           attempt < it->second.attempts;
  }

  // Two live runs on one queue. With a duplicate among them, at-least-once;
  // two runs that each completed their job break FIFO.
  void overlap(const std::string& queue, const JournalEvent& e) {
    std::string kind;
    if (e.holder_job == 0) {
      ++overlaps_unnamed_;
      kind = "UNNAMED";
    } else if (superseded(e.job, e.attempt) ||
               superseded(e.holder_job, e.holder_attempt)) {
      ++overlaps_duplicate_;
      kind = "duplicate";
    } else {
      ++overlaps_violation_;
      kind = "VIOLATION";
    }
    std::string text =
        queue + ": job " + std::to_string(e.job) + " attempt " +
        std::to_string(e.attempt) + " (pid " + std::to_string(e.pid) +
        ") started while job " + std::to_string(e.holder_job) + " attempt " +
        std::to_string(e.holder_attempt) + " (pid " +
        std::to_string(e.holder_pid) + ") was still running: " + kind;
    overlap_notes_.push_back(text);
  }

  // The back-pressure limit, exactly: replays enqueue and finish commits in
  // commit-timestamp order (finishes first on a tie) per queue.
  void check_limit() {
    std::map<std::string, std::vector<std::pair<std::int64_t, int>>> events;
    for (const auto& [id, job] : jobs_) {
      events[job.queue].push_back({job.committed_us, +1});
      if (auto it = finishes_.find(id); it != finishes_.end()) {
        for (const Finish& f : it->second) {
          events[job.queue].push_back({f.committed_us, -1});
        }
      }
    }
    for (auto& [queue, list] : events) {
      std::sort(list.begin(), list.end());
      std::int64_t depth = 0;
      for (const auto& [at, delta] : list) {
        depth += delta;
        max_unfinished_ = std::max(max_unfinished_, depth);
      }
    }
    if (max_unfinished_ > limit_) {
      fail("a queue held " + std::to_string(max_unfinished_) +
           " unfinished jobs; the limit is " + std::to_string(limit_));
    }
    if (stat("sampled_max_unfinished") > limit_) {
      fail("a sample saw " + std::to_string(stat("sampled_max_unfinished")) +
           " unfinished jobs in a queue");
    }
  }

  void check_waits() {
    for (const char* name :
         {"waits_hung", "waits_lost", "waits_failed", "cli_hung", "cli_bad"}) {
      if (stat(name) != 0) {
        fail(std::string(name) + " = " + std::to_string(stat(name)));
      }
    }
    if (load_.contains("problems")) {
      for (const json& p : load_["problems"])
        fail("load: " + p.get<std::string>());
    }
    if (!load_.value("drained", false)) fail("the queues never drained");
  }

  void check_workers() {
    auto at_least = [&](const char* name, const char* minimum) {
      std::int64_t value = args_.number(name, 0);
      std::int64_t min = args_.number(minimum, 0);
      if (value < min) {
        fail(std::string(name) + " = " + std::to_string(value) +
             ", fewer than " + std::to_string(min));
      }
    };
    at_least("kills", "min-kills");
    at_least("redis-restarts", "min-redis-restarts");
    at_least("pg-restarts", "min-pg-restarts");
    at_least("terminated", "min-terminated");
    if (args_.number("replaced", 0) < args_.number("kills", 0)) {
      fail("killed workers not all replaced");
    }
    if (args_.number("slots-alive", 0) != args_.number("slots", 0)) {
      fail("not every worker slot was running at the end");
    }
    if (args_.number("held", 0) != queues_) {
      fail("only " + args_.text("held", "0") + " of " +
           std::to_string(queues_) + " queues had an active worker at the end");
    }
    if (args_.number("unexpected-exits", 0) != 0) {
      fail(args_.text("unexpected-exits", "") +
           " worker exits with an unexpected status");
    }
    if (args_.number("unclean-stops", 0) != 0) {
      fail(args_.text("unclean-stops", "") +
           " workers did not stop cleanly on SIGTERM");
    }
    if (args_.number("sanitizer-reports", 0) != 0) {
      fail(args_.text("sanitizer-reports", "") + " sanitizer reports in logs");
    }
  }

  void print() {
    for (const std::string& f : failures_) std::cerr << "FAIL: " << f << "\n";
    std::ostringstream s;
    s << "chaos: " << (failures_.empty() ? "PASS" : "FAIL")  //
      << " seconds=" << args_.text("seconds", "?")           //
      << " queues=" << queues_                               //
      << " jobs=" << jobs_.size()                            //
      << " completed_once=" << completed_once_               //
      << " not_completed=" << not_completed_                 //
      << " not_once=" << not_once_                           //
      << " txns=" << stat("txns_committed")                  //
      << " rolled_back_txns=" << stat("txns_rolled_back")    //
      << " rolled_back_jobs=" << rolled_back_.size()         //
      << " aborted_jobs=" << aborted_.size()                 //
      << " uncommitted_stored=" << uncommitted_exist_        //
      << " uncommitted_ran=" << ran_uncommitted_             //
      << " commit_unknown=" << ids("unknown").size() << "("
      << unknown_committed_ << " committed)"        //
      << " runs=" << runs_                          //
      << " order_violations=" << order_violations_  //
      << " early_starts=" << early_starts_          //
      << " overlaps=" << overlaps_violation_ + overlaps_unnamed_
      << " duplicate_overlaps=" << overlaps_duplicate_  //
      << " limit=" << limit_                            //
      << " max_unfinished=" << max_unfinished_          //
      << " refused=" << stat("refused")                 //
      << " waits=" << stat("waits") << "(ok " << stat("waits_ok")
      << ", timeout " << stat("waits_timeout") << ", error "
      << stat("waits_error") << ", hung " << stat("waits_hung")
      << ", max overrun " << stat("max_overrun_ms") << "ms)"  //
      << " cli_waits=" << stat("cli_runs") << "(ok " << stat("cli_ok")
      << ", full " << stat("cli_full") << ", timeout " << stat("cli_timeout")
      << ", error " << stat("cli_error") << ", hung " << stat("cli_hung")
      << ")"                                                      //
      << " results_checked=" << observed_                         //
      << " kills=" << args_.text("kills", "0")                    //
      << " replaced=" << args_.text("replaced", "0")              //
      << " max_replace_ms=" << args_.text("replace-max-ms", "?")  //
      << " crash_exits=" << args_.text("crash-exits", "0")        //
      << " redis_restarts=" << args_.text("redis-restarts", "0")  //
      << " pg_restarts=" << args_.text("pg-restarts", "0")        //
      << " backends_terminated=" << args_.text("terminated", "0");
    std::cout << s.str() << std::endl;
  }

  const Args& args_;
  std::string dir_;
  int queues_ = 0;
  json load_;
  std::int64_t limit_ = 0;
  std::map<std::int64_t, Job> jobs_;
  std::unordered_map<std::int64_t, std::vector<Finish>> finishes_;
  std::unordered_set<std::int64_t> rolled_back_, aborted_;
  std::int64_t unaudited_ = 0, changed_ = 0, doomed_stored_ = 0;
  std::int64_t committed_missing_ = 0, uncommitted_exist_ = 0,
               unknown_committed_ = 0;
  std::int64_t completed_once_ = 0, not_completed_ = 0, not_once_ = 0;
  std::int64_t observed_ = 0, observed_wrong_ = 0;
  std::int64_t runs_ = 0, order_violations_ = 0, early_starts_ = 0,
               overlaps_duplicate_ = 0, overlaps_violation_ = 0,
               overlaps_unnamed_ = 0, ran_uncommitted_ = 0,
               uncommitted_ran_ = 0, never_ran_ = 0, result_without_run_ = 0;
  std::int64_t max_unfinished_ = 0;
  std::vector<std::string> failures_;
  std::vector<std::string> overlap_notes_;
};

}  // namespace

int run_check(const Args& args) { return Check(args).run(); }

}  // namespace pgjobq::chaos
