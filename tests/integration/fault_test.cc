// Faults the chaos run (scripts/chaos.sh) found, pinned down one at a time.

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "pgjobq/enqueue.h"
#include "pgjobq/jobs.h"
#include "pgjobq/worker.h"
#include "support/network_cut.h"
#include "support/services.h"
#include "support/worker.h"

namespace pgjobq {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using test::BackgroundWorker;
using test::wait_until;

class FaultTest : public test::DatabaseTest {};

// A worker whose session was cut (pg_terminate_backend, a network cut)
// has lost the queue's lock with it: a standby may already be running its
// claimed jobs. It must not start another job on that dead session.
TEST_F(FaultTest, WorkerStartsNoClaimedJobAfterLosingItsSession) {
  PgConnPtr conn = connect();
  std::string q = queue("lost-session");
  JobId a = enqueue(conn.get(), q, json("a"));
  JobId b = enqueue(conn.get(), q, json("b"));
  std::mutex mutex;
  std::vector<std::pair<std::int64_t, int>> calls;
  WorkerOptions o = worker_options({q});
  o.poll_interval = std::chrono::seconds(30);
  // Claim both jobs at once.
  o.max_batch = 2;
  o.max_commit_delay = std::chrono::seconds(1);
  BackgroundWorker worker(o, [&](const JobContext& job) {
    bool first = false;
    {
      std::lock_guard lock(mutex);
      calls.emplace_back(job.id.value, job.attempt);
      first = calls.size() == 1;
    }
    if (first) {
      // Cut the worker's own session while it runs the first job, and let
      // the cut land before the handler returns.
      std::string pid = std::to_string(PQbackendPID(job.db));
      PgConnPtr admin = connect();
      PQclear(PQexec(admin.get(),
                     ("SELECT pg_terminate_backend(" + pid + ")").c_str()));
      EXPECT_TRUE(wait_until([&] {
        return query_value(
                   "SELECT count(*) FROM pg_stat_activity WHERE pid "
                   "= " +
                   pid) == "0";
      }));
    }
    return HandlerResult::complete(job.data);
  });
  ASSERT_TRUE(wait_until(
      [&] {
        return query_job(conn.get(), a)->state == JobState::completed &&
               query_job(conn.get(), b)->state == JobState::completed;
      },
      milliseconds(15000)));
  std::lock_guard lock(mutex);
  ASSERT_GE(calls.size(), 3u);
  EXPECT_EQ(calls[0], std::make_pair(a.value, 1));
  // After losing the lock, the next run is the first job again, on a fresh
  // session that holds the lock; never the second job on the dead one.
  EXPECT_EQ(calls[1].first, a.value)
      << "job " << calls[1].first << " (attempt " << calls[1].second
      << ") ran on a session that was gone";
  EXPECT_EQ(calls[1].second, 2);
  EXPECT_EQ(query_job(conn.get(), a)->result, json("a"));
  EXPECT_EQ(query_job(conn.get(), b)->result, json("b"));
}

// The same cut while a handler runs: the standby may run the job at once,
// so the stale run must be told to stop (its stop token; `pgjobq work`
// kills its command) rather than run on beside it to the end.
TEST_F(FaultTest, HandlerIsStoppedWhenItsSessionEnds) {
  PgConnPtr conn = connect();
  std::string q = queue("cut-mid-handler");
  JobId id = enqueue(conn.get(), q, json("x"));
  std::atomic<int> backend{0};
  std::atomic<bool> stopped{false};
  WorkerOptions o = worker_options({q});
  o.poll_interval = std::chrono::seconds(30);
  BackgroundWorker worker(o, [&](const JobContext& job) {
    if (job.attempt == 1) {
      backend = PQbackendPID(job.db);
      // Far longer than the test waits, unless stopped.
      wait_until([&] { return job.stop.stop_requested(); },
                 milliseconds(60000));
      stopped = job.stop.stop_requested();
    }
    return HandlerResult::complete(json(job.attempt));
  });
  ASSERT_TRUE(wait_until([&] { return backend != 0; }));
  query_value("SELECT pg_terminate_backend(" + std::to_string(backend) + ")");
  EXPECT_TRUE(wait_until([&] { return stopped.load(); }, milliseconds(5000)))
      << "the handler ran on after its session ended";
  ASSERT_TRUE(wait_until(
      [&] { return query_job(conn.get(), id)->state == JobState::completed; },
      milliseconds(15000)));
  std::optional<Job> job = query_job(conn.get(), id);
  EXPECT_EQ(job->attempts, 2);
  EXPECT_EQ(job->result, json(2));
}

// A network cut between the active worker and PostgreSQL that closes
// nothing (packets silently dropped, as by a failed switch): neither end
// hears of it, and without keepalives the server would keep the session,
// and the queue's lock, for hours. Both ends must give the session up
// within the dead-session timeout: the standby takes the queue over and
// runs the job again, and the stale handler is told to stop.
TEST_F(FaultTest, StandbyTakesOverWhenTheActiveWorkersNetworkIsCut) {
  if (auto why = test::NetworkCut::unavailable()) GTEST_SKIP() << *why;
  PgConnPtr conn = connect();
  std::string q = queue("cut-network");
  JobId id = enqueue(conn.get(), q, json("x"));
  std::atomic<int> port{0}, server_port{0};
  std::atomic<bool> stopped{false};
  WorkerOptions o = worker_options({q});
  o.poll_interval = std::chrono::seconds(30);
  o.dead_session_timeout = std::chrono::seconds(2);
  BackgroundWorker active(o, [&](const JobContext& job) {
    if (job.attempt == 1) {
      PGresult* r =
          PQexec(job.db, "SELECT inet_client_port(), inet_server_port()");
      server_port = std::stoi(PQgetvalue(r, 0, 1));
      port = std::stoi(PQgetvalue(r, 0, 0));
      PQclear(r);
      // Far longer than the test waits, unless stopped.
      wait_until([&] { return job.stop.stop_requested(); },
                 milliseconds(60000));
      stopped = job.stop.stop_requested();
    }
    return HandlerResult::complete(json("active"));
  });
  ASSERT_TRUE(wait_until([&] { return port != 0; }));
  // The standby queues for the lock before the cut.
  BackgroundWorker standby(o, [&](const JobContext& job) {
    return HandlerResult::complete(json(job.attempt));
  });
  ASSERT_TRUE(wait_until([&] {
    return query_value(
               "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
               "AND NOT granted AND database = (SELECT oid FROM pg_database "
               "WHERE datname = current_database())") == "1";
  }));
  test::NetworkCut cut(port, server_port);
  // About 3 s of silence (keepalives after 1 s, two probes 1 s apart) ends
  // the session on the server; then the standby holds the queue.
  ASSERT_TRUE(wait_until(
      [&] { return query_job(conn.get(), id)->state == JobState::completed; },
      milliseconds(20000)))
      << "the cut session kept the queue";
  EXPECT_EQ(query_job(conn.get(), id)->result, json(2));
  EXPECT_TRUE(wait_until([&] { return stopped.load(); }, milliseconds(10000)))
      << "the handler ran on after its session was cut";
}

}  // namespace
}  // namespace pgjobq
