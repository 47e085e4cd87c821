#include "pgjobq/jobs.h"

#include <thread>

#include "pgjobq/admin.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "pgjobq/worker.h"
#include "support/services.h"
#include "support/worker.h"

namespace pgjobq {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using test::BackgroundWorker;
using test::exec;
using test::wait_until;

class JobsTest : public test::DatabaseTest {
 protected:
  // Runs the queue's jobs to the end with `handler`, then stops.
  void drain(const std::string& queue, Handler handler, int max_attempts = 25) {
    WorkerOptions o = worker_options({queue});
    o.on_error = ErrorPolicy::retry;
    o.retry_delay = milliseconds(1);
    o.max_attempts = max_attempts;
    BackgroundWorker worker(o, std::move(handler));
    PgConnPtr conn = connect();
    ASSERT_TRUE(wait_until([&] {
      auto s = queue_status(conn.get(), queue);
      return !s.empty() && s[0].pending == 0 && s[0].running == 0;
    }));
  }
};

TEST_F(JobsTest, QueryOfAnUnknownJobIsEmpty) {
  PgConnPtr conn = connect();
  EXPECT_FALSE(query_job(conn.get(), JobId{424242}));
  EXPECT_FALSE(query_job(conn.get(), JobId{-5}));
}

TEST_F(JobsTest, RescheduleSendsAPendingJobToTheBack) {
  PgConnPtr conn = connect();
  std::string q = queue();
  JobId a = enqueue(conn.get(), q, json("a"));
  JobId b = enqueue(conn.get(), q, json("b"));
  JobId c = enqueue(conn.get(), q, json("c"));
  reschedule(conn.get(), a);
  EXPECT_EQ(fifo(q, true),
            (std::vector<std::int64_t>{b.value, c.value, a.value}));
  EXPECT_EQ(query_job(conn.get(), a)->state, JobState::pending);
  EXPECT_EQ(queue_status(conn.get(), q)[0].pending, 3);
}

TEST_F(JobsTest, RescheduleInARolledBackTransactionChangesNothing) {
  PgConnPtr conn = connect();
  std::string q = queue();
  JobId a = enqueue(conn.get(), q, json("a"));
  JobId b = enqueue(conn.get(), q, json("b"));
  PQclear(PQexec(conn.get(), "BEGIN"));
  reschedule(conn.get(), a);
  PQclear(PQexec(conn.get(), "ROLLBACK"));
  EXPECT_EQ(fifo(q, true), (std::vector<std::int64_t>{a.value, b.value}));
}

TEST_F(JobsTest, RescheduleOfAFailedJobRequeuesItAndFixesTheCounts) {
  PgConnPtr conn = connect();
  std::string q = queue();
  JobId doomed = enqueue(conn.get(), q, json("doomed"));
  drain(
      q,
      [](const JobContext&) -> HandlerResult {
        throw std::runtime_error("nope");
      },
      1);
  ASSERT_EQ(query_job(conn.get(), doomed)->state, JobState::failed);
  EXPECT_EQ(queue_status(conn.get(), q)[0].failed, 1);

  reschedule(conn.get(), doomed);
  auto job = query_job(conn.get(), doomed);
  EXPECT_EQ(job->state, JobState::pending);
  EXPECT_EQ(job->attempts, 0);
  EXPECT_FALSE(job->finished_at);
  auto s = queue_status(conn.get(), q)[0];
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.pending, 1);
  // Counted against the limit again.
  EXPECT_FALSE(try_enqueue(conn.get(), q, json("x"), 1));

  drain(q, [](const JobContext&) { return HandlerResult::complete("fixed"); });
  job = query_job(conn.get(), doomed);
  EXPECT_EQ(job->result, json("fixed"));
  // Its first claim as a fresh job dropped the old life's "gave up after 1
  // attempt", which used to stay on the completed job.
  EXPECT_FALSE(job->error) << *job->error;
}

TEST_F(JobsTest, RescheduleRefusesRunningAndCompletedJobs) {
  PgConnPtr conn = connect();
  std::string q = queue();
  JobId done = enqueue(conn.get(), q, json(1));
  drain(q, [](const JobContext&) { return HandlerResult::complete(); });
  EXPECT_THROW(reschedule(conn.get(), done), WrongState);
  EXPECT_THROW(reschedule(conn.get(), JobId{999999}), NoSuchJob);
}

TEST_F(JobsTest, CancelMakesAPendingJobFinalAndFreesItsPlace) {
  PgConnPtr conn = connect();
  std::string q = queue();
  JobId a = enqueue(conn.get(), q, json("a"));
  ASSERT_FALSE(try_enqueue(conn.get(), q, json("b"), 1));
  cancel(conn.get(), a);
  auto job = query_job(conn.get(), a);
  EXPECT_EQ(job->state, JobState::cancelled);
  EXPECT_TRUE(job->finished_at);
  EXPECT_TRUE(try_enqueue(conn.get(), q, json("b"), 1))
      << "a cancelled job no longer counts against the limit";
  auto s = queue_status(conn.get(), q)[0];
  EXPECT_EQ(s.cancelled, 1);
  EXPECT_EQ(s.pending, 1);
  EXPECT_THROW(cancel(conn.get(), a), WrongState);
  EXPECT_THROW(cancel(conn.get(), JobId{999999}), NoSuchJob);
}

TEST_F(JobsTest, CancelledJobCanBeRescheduled) {
  PgConnPtr conn = connect();
  std::string q = queue();
  JobId a = enqueue(conn.get(), q, json("a"));
  cancel(conn.get(), a);
  reschedule(conn.get(), a);
  EXPECT_EQ(query_job(conn.get(), a)->state, JobState::pending);
  auto s = queue_status(conn.get(), q)[0];
  EXPECT_EQ(s.cancelled, 0);
  EXPECT_EQ(s.pending, 1);
}

TEST_F(JobsTest, StatusCountsEveryStateAndTheOldestPendingAge) {
  PgConnPtr conn = connect();
  std::string q = queue("status");
  std::string empty = queue("empty");
  enqueue(conn.get(), empty, json(0));
  cancel(conn.get(), enqueue(conn.get(), empty, json(1)));
  for (int i = 0; i < 3; ++i) enqueue(conn.get(), q, json{{"ok", true}});
  enqueue(conn.get(), q, json{{"ok", false}});
  drain(
      q,
      [](const JobContext& job) -> HandlerResult {
        if (!job.data["ok"].get<bool>()) throw std::runtime_error("bad");
        return HandlerResult::complete();
      },
      1);
  enqueue(conn.get(), q, json{{"ok", true}});
  std::this_thread::sleep_for(milliseconds(20));
  auto all = queue_status(conn.get(), std::nullopt);
  ASSERT_GE(all.size(), 2u);
  auto s = queue_status(conn.get(), q);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].queue, q);
  EXPECT_EQ(s[0].pending, 1);
  EXPECT_EQ(s[0].running, 0);
  EXPECT_EQ(s[0].completed, 3);
  EXPECT_EQ(s[0].failed, 1);
  EXPECT_EQ(s[0].cancelled, 0);
  ASSERT_TRUE(s[0].oldest_pending_age);
  EXPECT_GE(*s[0].oldest_pending_age, std::chrono::milliseconds(20));
  auto e = queue_status(conn.get(), empty)[0];
  EXPECT_EQ(e.pending, 1);
  EXPECT_EQ(e.cancelled, 1);
  EXPECT_TRUE(queue_status(conn.get(), "no-such-queue").empty());
  EXPECT_THROW(queue_status(conn.get(), "bad name"), InvalidInput);
}

// The oldest pending job's age counts from its enqueue: a job sent to the
// back of its queue an hour after it was enqueued has waited an hour
// unfinished, and an operator watching the age for stuck work sees that.
TEST_F(JobsTest, ARescheduledJobKeepsItsAgeInTheStatus) {
  PgConnPtr conn = connect();
  std::string q = queue("status-age");
  JobId old_job = enqueue(conn.get(), q, json("old"));
  exec(conn.get(),
       "UPDATE pgjobq.jobs SET enqueued_at = now() - interval '1 hour' "
       "WHERE id = " +
           std::to_string(old_job.value));
  enqueue(conn.get(), q, json("new"));
  reschedule(conn.get(), old_job);
  auto s = queue_status(conn.get(), q);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].pending, 2);
  ASSERT_TRUE(s[0].oldest_pending_age);
  EXPECT_GE(*s[0].oldest_pending_age, std::chrono::minutes(59));
  EXPECT_LT(*s[0].oldest_pending_age, std::chrono::minutes(61));
}

TEST_F(JobsTest, PruneDeletesOnlyFinishedJobsOlderThanTheAge) {
  PgConnPtr conn = connect();
  std::string q = queue("prune");
  for (int i = 0; i < 25; ++i) enqueue(conn.get(), q, json(i));
  drain(q, [](const JobContext&) { return HandlerResult::complete(); });
  JobId cancelled = enqueue(conn.get(), q, json("c"));
  cancel(conn.get(), cancelled);
  JobId waiting = enqueue(conn.get(), q, json("w"));

  EXPECT_EQ(prune(conn.get(), std::chrono::hours(1)), 0)
      << "nothing is an hour old yet";
  std::vector<std::int64_t> progress;
  std::int64_t deleted = prune(
      conn.get(), std::chrono::microseconds(0),
      [&](std::int64_t n) { progress.push_back(n); }, 10);
  EXPECT_EQ(deleted, 26);
  EXPECT_GE(progress.size(), 3u) << "batches of 10 report as they go";
  EXPECT_EQ(progress.back(), 26);
  EXPECT_FALSE(query_job(conn.get(), cancelled));
  EXPECT_EQ(query_job(conn.get(), waiting)->state, JobState::pending);
  auto s = queue_status(conn.get(), q)[0];
  EXPECT_EQ(s.completed, 0);
  EXPECT_EQ(s.cancelled, 0);
  EXPECT_EQ(s.pending, 1);
  // The queue keeps working after a prune.
  drain(q, [](const JobContext&) { return HandlerResult::complete("after"); });
  EXPECT_EQ(query_job(conn.get(), waiting)->result, json("after"));
}

TEST_F(JobsTest, PruneKeepsItsAgeWhateverTheSessionsDateStyleAndTimeZone) {
  PgConnPtr conn = connect();
  std::string q = queue("prune");
  JobId fresh = enqueue(conn.get(), q, json("just finished"));
  cancel(conn.get(), fresh);
  // Shown in this style, the time zone is an abbreviation, CST, which
  // PostgreSQL reads back as US Central (-06), not China (+08): a cut-off
  // that went through text landed 14 hours later.
  exec(conn.get(), "SET DateStyle = 'SQL, DMY'");
  exec(conn.get(), "SET TimeZone = 'Asia/Shanghai'");
  EXPECT_EQ(prune(conn.get(), std::chrono::hours(1)), 0)
      << "a job cancelled a moment ago is not an hour old";
  EXPECT_TRUE(query_job(conn.get(), fresh));
  exec(conn.get(), "SET DateStyle = 'Postgres, MDY'");
  exec(conn.get(), "SET TimeZone = 'Asia/Kolkata'");  // IST, read as Israel's
  EXPECT_EQ(prune(conn.get(), std::chrono::hours(1)), 0);
  EXPECT_EQ(prune(conn.get(), std::chrono::microseconds(0)), 1);
  EXPECT_FALSE(query_job(conn.get(), fresh));
}

TEST_F(JobsTest, PruneOlderThanAnyTimeDeletesNothingRatherThanFail) {
  PgConnPtr conn = connect();
  std::string q = queue("prune");
  JobId done = enqueue(conn.get(), q, json("cancelled a moment ago"));
  cancel(conn.get(), done);
  // Ages past PostgreSQL's timestamps (4714 BC) or its intervals: no job
  // finished that long ago. (Before: "prune: interval out of range" and
  // "prune: timestamp out of range", DatabaseError.)
  using std::chrono::duration_cast;
  using std::chrono::microseconds;
  for (microseconds age :
       {duration_cast<microseconds>(std::chrono::years(10000)),
        duration_cast<microseconds>(std::chrono::years(100000)),
        microseconds::max()}) {
    EXPECT_EQ(prune(conn.get(), age), 0) << age.count() << " us";
  }
  EXPECT_TRUE(query_job(conn.get(), done));
  EXPECT_EQ(queue_status(conn.get(), q)[0].cancelled, 1);
  EXPECT_EQ(prune(conn.get(), microseconds(0)), 1);
}

}  // namespace
}  // namespace pgjobq
