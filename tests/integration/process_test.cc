// Real worker processes, killed with SIGKILL and restarted the way a
// supervisor would: what the contract promises under crashes.

#include "support/process.h"

#include <signal.h>

#include <chrono>
#include <memory>
#include <thread>

#include "pgjobq/admin.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/jobs.h"
#include "support/cancel_proxy.h"
#include "support/services.h"

namespace pgjobq {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using test::Process;
using test::wait_until;

class ProcessTest : public test::DatabaseTest {
 protected:
  std::unique_ptr<Process> start_worker(const std::string& name,
                                        std::vector<std::string> extra) {
    std::vector<std::string> argv{PGJOBQ_TEST_WORKER, "--db",
                                  db_url() + "?application_name=" + name,
                                  "--redis", test::redis_url()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(argv);
  }
  // The application_name of the session holding `queue`'s lock, or "".
  std::string lock_holder(const std::string& queue) const {
    return query_value(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
        "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND "
        "l.classid = 1886220545 AND l.objid = (SELECT id FROM pgjobq.queues "
        "WHERE name = '" +
        queue +
        "') AND l.database = (SELECT oid FROM pg_database WHERE datname = "
        "current_database())");
  }
  int journal(JobId id, const std::string& event) const {
    std::string n = query_value(
        "SELECT count(*) FROM journal WHERE job = " + std::to_string(id.value) +
        " AND event = '" + event + "'");
    return n.empty() ? 0 : std::stoi(n);
  }
  bool journal_exists() const {
    return query_value("SELECT to_regclass('journal') IS NOT NULL") == "t";
  }
  std::optional<Job> job(JobId id) const {
    PgConnPtr conn = connect();
    return query_job(conn.get(), id);
  }
};

TEST_F(ProcessTest, KilledMidJobTheJobRunsAgainAndCompletesOnce) {
  PgConnPtr conn = connect();
  std::string q = queue("kill");
  JobId id = enqueue(conn.get(), q, json{{"sleep_ms", 3000}});
  JobId after = enqueue(conn.get(), q, json::object());
  auto first = start_worker("first", {q});
  ASSERT_TRUE(wait_until(
      [&] { return journal_exists() && journal(id, "start") == 1; }));
  first->kill();
  EXPECT_EQ(job(id)->state, JobState::running) << "killed before completing";
  EXPECT_EQ(job(id)->attempts, 1);

  auto second = start_worker("second", {q});
  ASSERT_TRUE(
      wait_until([&] { return job(after)->state == JobState::completed; },
                 milliseconds(20000)));
  auto done = job(id);
  EXPECT_EQ(done->state, JobState::completed);
  EXPECT_EQ(done->attempts, 2);
  EXPECT_EQ(journal(id, "start"), 2);
  EXPECT_EQ(journal(id, "finish"), 1);
  EXPECT_EQ(done->result, (json{{"pid", second->pid()}}));
  second->signal(SIGTERM);
  EXPECT_EQ(second->wait(10000), 0) << "SIGTERM stops gracefully";
}

TEST_F(ProcessTest, StandbyTakesOverWithinASecondOfAKill) {
  PgConnPtr conn = connect();
  std::string q = queue("takeover");
  enqueue(conn.get(), q, json::object());  // creates the queue
  auto active = start_worker("active", {q});
  ASSERT_TRUE(wait_until([&] { return lock_holder(q) == "active"; }));
  auto standby = start_worker("standby", {q});
  // The standby is waiting for the lock, not holding it.
  ASSERT_TRUE(wait_until([&] {
    return query_value(
               "SELECT count(*) FROM pg_stat_activity WHERE "
               "application_name = 'standby' AND wait_event_type = "
               "'Lock'") == "1";
  }));
  EXPECT_EQ(lock_holder(q), "active");

  auto killed_at = std::chrono::steady_clock::now();
  active->kill();
  ASSERT_TRUE(wait_until([&] { return lock_holder(q) == "standby"; },
                         milliseconds(5000)));
  auto took = std::chrono::steady_clock::now() - killed_at;
  EXPECT_LT(took, std::chrono::seconds(1))
      << std::chrono::duration_cast<milliseconds>(took).count() << " ms";

  JobId id = enqueue(conn.get(), q, json::object());
  RedisLink redis(test::redis_url());
  notify(redis, q);
  ASSERT_TRUE(
      wait_until([&] { return job(id)->state == JobState::completed; }));
  EXPECT_EQ(job(id)->result, (json{{"pid", standby->pid()}}));
}

// A handler deaf to its stop token: once its timeout and the grace period
// have passed, the process exits 70 for its supervisor, and says why on
// the job.
TEST_F(ProcessTest, AHandlerThatIgnoresItsTimeoutEndsTheProcessWith70) {
  PgConnPtr conn = connect();
  std::string q = queue("deaf");
  JobId id = enqueue(conn.get(), q, json{{"sleep_ms", 60000}});
  auto worker =
      start_worker("deaf", {"--job-timeout-ms", "200", "--grace-ms", "300", q});
  EXPECT_EQ(worker->wait(10000), 70);
  auto stuck = job(id);
  EXPECT_EQ(stuck->state, JobState::running);
  ASSERT_TRUE(stuck->error);
  EXPECT_TRUE(test::contains(*stuck->error, "overran its timeout"))
      << *stuck->error;
}

// The same when the cancel of its SQL goes unanswered (the server cannot
// take a new connection: overloaded, or a half-broken network). PQcancel
// waits for an answer with no timeout; sent from the watchdog itself, it
// held the watchdog, and the process never exited.
TEST_F(ProcessTest, AHandlerPastItsTimeoutEndsTheProcessEvenIfItsCancelHangs) {
  test::CancelSwallowingProxy proxy(
      std::stoi(test::required_env("PGJOBQ_PG_PORT")));
  PgConnPtr conn = connect();
  std::string q = queue("deaf-cancel");
  JobId id = enqueue(conn.get(), q, json{{"sleep_ms", 60000}});
  Process worker({PGJOBQ_TEST_WORKER, "--db",
                  "postgresql://postgres@127.0.0.1:" +
                      std::to_string(proxy.port()) + "/" + db_name(),
                  "--redis", test::redis_url(), "--job-timeout-ms", "200",
                  "--grace-ms", "300", q});
  EXPECT_EQ(worker.wait(10000), 70);
  EXPECT_EQ(proxy.cancels(), 1);
  auto stuck = job(id);
  EXPECT_EQ(stuck->state, JobState::running);
}

// The same when the worker's session ends under a running handler: a
// standby may already run the queue, so a handler that will not stop must
// not run on beside it for longer than the grace period.
TEST_F(ProcessTest, AHandlerThatIgnoresALostSessionEndsTheProcessWith70) {
  PgConnPtr conn = connect();
  std::string q = queue("deaf-lost");
  JobId id = enqueue(conn.get(), q, json{{"sleep_ms", 60000}});
  auto worker = start_worker("deaf-lost", {"--grace-ms", "500", q});
  ASSERT_TRUE(wait_until(
      [&] { return journal_exists() && journal(id, "start") == 1; }));
  auto cut = std::chrono::steady_clock::now();
  query_value(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
      "application_name = 'deaf-lost'");
  EXPECT_EQ(worker->wait(10000), 70);
  auto took = std::chrono::steady_clock::now() - cut;
  EXPECT_LT(took, std::chrono::seconds(5))
      << std::chrono::duration_cast<milliseconds>(took).count() << " ms";
  EXPECT_EQ(journal(id, "finish"), 0);
}

// A job that kills its process every time: restarted like a supervisor
// would, the worker counts each crash, marks the job failed after max
// attempts, and the jobs around it (claimed in the same batch) complete
// without being blamed.
TEST_F(ProcessTest, PoisonJobThatKillsTheProcessIsFailedAndOthersAreNotBlamed) {
  PgConnPtr conn = connect();
  std::string q = queue("poison");
  std::vector<json> jobs;
  for (int i = 0; i < 40; ++i) jobs.push_back(json::object());
  jobs.push_back(json{{"die", true}});
  for (int i = 0; i < 40; ++i) jobs.push_back(json::object());
  auto ids = enqueue_many(conn.get(), q, jobs);
  ASSERT_TRUE(ids);
  JobId poison = (*ids)[40];

  int restarts = 0;
  auto finished = [&] {
    auto s = queue_status(conn.get(), q);
    return s[0].completed + s[0].failed == 81;
  };
  std::unique_ptr<Process> worker;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!finished() && std::chrono::steady_clock::now() < deadline) {
    if (!worker || !worker->running()) {
      worker = start_worker("w" + std::to_string(restarts++),
                            {"--max-attempts", "3", q});
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_TRUE(finished());
  auto p = job(poison);
  EXPECT_EQ(p->state, JobState::failed);
  EXPECT_EQ(p->attempts, 3);
  EXPECT_NE(p->error->find("gave up after 3 attempts"), std::string::npos)
      << *p->error;
  EXPECT_EQ(journal(poison, "start"), 3) << "run exactly max_attempts times";
  EXPECT_EQ(restarts, 4) << "three deaths, then a worker that lives";
  for (std::size_t i = 0; i < ids->size(); ++i) {
    if (i == 40) continue;
    auto j = job((*ids)[i]);
    EXPECT_EQ(j->state, JobState::completed) << "job " << i;
    EXPECT_LE(j->attempts, 2) << "job " << i << " was blamed";
  }
}

TEST_F(ProcessTest, CrashPolicyExitsNonZeroAndARestartRunsTheJobAgain) {
  PgConnPtr conn = connect();
  std::string q = queue("crashpolicy");
  JobId id = enqueue(conn.get(), q, json{{"fail", true}});
  auto worker = start_worker("crasher", {q});
  EXPECT_EQ(worker->wait(20000), 1);
  auto j = job(id);
  EXPECT_EQ(j->state, JobState::pending);
  EXPECT_EQ(j->error, "told to fail");
  EXPECT_EQ(j->attempts, 1);
}

// With --max-attempts 1 a job that kills its process is failed; the jobs
// claimed behind it in the same batch never started, and must still run:
// they were tried 0 times. (They were failed, "gave up after 1 attempt",
// 13 to 30 of them a run. A job before it that ran, its completion not yet
// committed, was tried once: failing it is what max_attempts 1 means.)
TEST_F(ProcessTest, JobsClaimedBehindAPoisonJobRunEvenWithOneAttempt) {
  PgConnPtr conn = connect();
  std::string q = queue("poison1");
  std::vector<json> jobs;
  for (int i = 0; i < 40; ++i) jobs.push_back(json::object());
  jobs.push_back(json{{"die", true}});
  for (int i = 0; i < 40; ++i) jobs.push_back(json::object());
  auto ids = enqueue_many(conn.get(), q, jobs);
  ASSERT_TRUE(ids);
  auto finished = [&] {
    auto s = queue_status(conn.get(), q);
    return s[0].completed + s[0].failed == 81;
  };
  std::unique_ptr<Process> worker;
  int restarts = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!finished() && std::chrono::steady_clock::now() < deadline) {
    if (!worker || !worker->running()) {
      worker = start_worker("w" + std::to_string(restarts++),
                            {"--max-attempts", "1", q});
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_TRUE(finished());
  EXPECT_EQ(job((*ids)[40])->state, JobState::failed);
  // Claimed ahead, its one attempt was uncertain: at most one more run.
  EXPECT_LE(journal((*ids)[40], "start"), 2);
  for (std::size_t i = 0; i < ids->size(); ++i) {
    if (i == 40) continue;
    auto j = job((*ids)[i]);
    if (j->state == JobState::completed) continue;
    EXPECT_GE(journal((*ids)[i], "start"), 1)
        << "job " << i << " is " << to_string(j->state)
        << " without ever having started: " << j->error.value_or("");
  }
}

}  // namespace
}  // namespace pgjobq
