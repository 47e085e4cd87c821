// Faults the chaos run (scripts/chaos.sh) found, pinned down one at a time.

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pgjobq/enqueue.h"
#include "pgjobq/jobs.h"
#include "pgjobq/worker.h"
#include "redis/connection.h"
#include "support/handlers.h"
#include "support/network_cut.h"
#include "support/services.h"
#include "support/silent_socket.h"
#include "support/worker.h"

namespace pgjobq {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using test::BackgroundWorker;
using test::Gate;
using test::wait_until;

class FaultTest : public test::DatabaseTest {};

// A first attempt that records its session's backend and runs until its
// stop token is requested (far longer than a test waits, unless stopped);
// later attempts complete at once with their attempt number.
struct RunsUntilStopped {
  std::atomic<int> backend{0};
  std::atomic<bool> stopped{false};
  Handler handler() {
    return [this](const JobContext& job) {
      if (job.attempt == 1) {
        backend = PQbackendPID(job.db);
        wait_until([&] { return job.stop.stop_requested(); },
                   milliseconds(60000));
        stopped = job.stop.stop_requested();
      }
      return HandlerResult::complete(json(job.attempt));
    };
  }
  // Terminates the running first attempt's session (through `db`) and
  // expects its stop token within 5 s.
  void cut_its_session(PGconn* db) const {
    test::exec(db,
               "SELECT pg_terminate_backend(" + std::to_string(backend) + ")");
    EXPECT_TRUE(wait_until([&] { return stopped.load(); }, milliseconds(5000)))
        << "the handler ran on after its session ended";
  }
};

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
  RunsUntilStopped run;
  WorkerOptions o = worker_options({q});
  o.poll_interval = std::chrono::seconds(30);
  BackgroundWorker worker(o, run.handler());
  ASSERT_TRUE(wait_until([&] { return run.backend != 0; }));
  run.cut_its_session(conn.get());
  ASSERT_TRUE(wait_until(
      [&] { return query_job(conn.get(), id)->state == JobState::completed; },
      milliseconds(15000)));
  std::optional<Job> job = query_job(conn.get(), id);
  EXPECT_EQ(job->attempts, 2);
  EXPECT_EQ(job->result, json(2));
}

// The same after stop(): a worker draining its running job for a graceful
// shutdown still watches it. (The watch used to end with stop(), and the
// stale run went on beside the standby's for the rest of the handler.)
TEST_F(FaultTest, HandlerIsStoppedWhenItsSessionEndsDuringAGracefulStop) {
  PgConnPtr conn = connect();
  std::string q = queue("cut-while-stopping");
  JobId id = enqueue(conn.get(), q, json("x"));
  RunsUntilStopped run;
  WorkerOptions o = worker_options({q});
  o.poll_interval = std::chrono::seconds(30);
  BackgroundWorker worker(o, run.handler());
  ASSERT_TRUE(wait_until([&] { return run.backend != 0; }));
  worker.stop();
  std::this_thread::sleep_for(milliseconds(300));
  run.cut_its_session(conn.get());
  worker.wait_for_exit();
  // Its completion was not committed: the job runs again later.
  std::optional<Job> job = query_job(conn.get(), id);
  EXPECT_EQ(job->state, JobState::running);
  EXPECT_EQ(job->attempts, 1);
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

// The worker's own transaction failing at its implicit commit, as a
// deferred trigger someone put on the jobs table does (a serialization
// failure at commit would too). libpq reports it after the statement's own
// result, at the pipeline's sync, where it went unread: the worker
// published the result of a completion that was never stored, and went on.
TEST_F(FaultTest, ACommitThatFailsAtTheSyncStopsTheWorkerUnpublished) {
  PgConnPtr conn = connect();
  PQclear(PQexec(conn.get(), R"sql(
    CREATE FUNCTION public.refuse_completion() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.state = 'completed' THEN
        RAISE EXCEPTION 'completion refused at commit';
      END IF;
      RETURN NEW;
    END $$;
    CREATE CONSTRAINT TRIGGER refuse_completion AFTER UPDATE ON pgjobq.jobs
      DEFERRABLE INITIALLY DEFERRED
      FOR EACH ROW EXECUTE FUNCTION public.refuse_completion();
  )sql"));
  std::string q = queue("sync-failure");
  JobId id = enqueue(conn.get(), q, json("x"));
  auto results = redis::Subscriber::open(redis::parse_url(test::redis_url()),
                                         milliseconds(2000));
  std::string channels[] = {job_channel(id)};
  results.subscribe(channels);
  std::atomic<bool> started{false};
  Gate finish;
  BackgroundWorker worker(worker_options({q}), [&](const JobContext&) {
    started = true;
    finish.wait();
    return HandlerResult::complete(json{{"ok", 1}});
  });
  ASSERT_TRUE(wait_until([&] { return started.load(); }));
  // Stopping, the worker commits the outcome alone, with no BEGIN: the
  // commit is the pipeline's sync.
  worker.stop();
  finish.open();
  std::exception_ptr error = worker.wait_for_exit();
  ASSERT_TRUE(error) << "run() returned as if the job were stored";
  try {
    std::rethrow_exception(error);
  } catch (const DatabaseError& e) {
    EXPECT_TRUE(test::contains(e.what(), "completion refused")) << e.what();
  }
  EXPECT_FALSE(results.next(milliseconds(500)))
      << "a result was published for a completion that was not stored";
  auto job = query_job(conn.get(), id);
  EXPECT_EQ(job->state, JobState::running);
  EXPECT_EQ(job->attempts, 1);
}

// Such a Redis costs each attempt to publish results its whole timeout
// (2 s). The worker used to try again at every commit, so that each commit
// took 2 s for as long as Redis hung; now it backs off.
// A Redis that hangs (paused: its connections open and silent) is found
// out within seconds by the subscriber's pings, and the worker polls
// PostgreSQL meanwhile. It used to take 20 s of silence, during which an
// idle worker waited for its 120 s poll.
TEST_F(FaultTest, AnIdleWorkerNoticesAHungRedisWithinSeconds) {
  test::RedisServer redis_server;
  PgConnPtr conn = connect();
  std::string q = queue("paused-redis");
  WorkerOptions o = worker_options({q});
  o.redis_url = redis_server.url();
  o.poll_interval = std::chrono::seconds(60);
  BackgroundWorker worker(o, [](const JobContext& job) {
    return HandlerResult::complete(job.data);
  });
  ASSERT_TRUE(wait_until([&] { return worker.worker().active_queues() == 1; }));
  std::this_thread::sleep_for(milliseconds(500));  // subscribed and idle
  redis_server.pause();
  JobId id = enqueue(conn.get(), q, json(1));
  auto since = std::chrono::steady_clock::now();
  EXPECT_TRUE(wait_until(
      [&] { return query_job(conn.get(), id)->state == JobState::completed; },
      milliseconds(15000)));
  EXPECT_LT(std::chrono::steady_clock::now() - since, std::chrono::seconds(6));
  redis_server.resume();
}

TEST_F(FaultTest, AHungRedisDoesNotStallEveryCommit) {
  test::SilentSocket hung_redis;
  PgConnPtr conn = connect();
  std::string q = queue("hung-redis");
  std::vector<JobId> ids;
  for (int i = 0; i < 8; ++i) ids.push_back(enqueue(conn.get(), q, json(i)));
  WorkerOptions o = worker_options({q});
  o.redis_url = hung_redis.url();
  auto started = std::chrono::steady_clock::now();
  // Slower than the commit delay: one commit per job.
  BackgroundWorker worker(o, [](const JobContext&) {
    std::this_thread::sleep_for(milliseconds(5));
    return HandlerResult::complete();
  });
  EXPECT_TRUE(wait_until(
      [&] {
        for (JobId id : ids) {
          if (query_job(conn.get(), id)->state != JobState::completed) {
            return false;
          }
        }
        return true;
      },
      milliseconds(30000)));
  // One attempt's 2 s; the old code took 8 of them.
  EXPECT_LT(std::chrono::steady_clock::now() - started, milliseconds(6000));
}

// Stopping does not wait for such a Redis either: the subscriber thread
// used to sit out its 5 s wait for the subscription's confirmation.
TEST_F(FaultTest, AWorkerStopsPromptlyWhileRedisHangs) {
  test::SilentSocket hung_redis;
  WorkerOptions o = worker_options({queue("hung-stop")});
  o.redis_url = hung_redis.url();
  BackgroundWorker worker(
      o, [](const JobContext&) { return HandlerResult::complete(); });
  ASSERT_TRUE(wait_until([&] { return worker.worker().active_queues() == 1; }));
  auto asked = std::chrono::steady_clock::now();
  worker.join();
  EXPECT_LT(std::chrono::steady_clock::now() - asked, milliseconds(1500));
  EXPECT_EQ(worker.wait_for_exit(), nullptr);
}

}  // namespace
}  // namespace pgjobq
