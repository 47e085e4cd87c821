#include "pgjobq/worker.h"

#include <hiredis/hiredis.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <thread>
#include <vector>

#include "pgjobq/admin.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "pgjobq/jobs.h"
#include "pgjobq/log.h"
#include "redis/connection.h"
#include "support/handlers.h"
#include "support/sanitized.h"
#include "support/services.h"
#include "support/worker.h"

namespace pgjobq {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using test::BackgroundWorker;
using test::Gate;
using test::Journal;
using test::wait_until;

class WorkerTest : public test::DatabaseTest {
 protected:
  WorkerOptions options(std::vector<std::string> queues) const {
    WorkerOptions o = worker_options(std::move(queues));
    o.poll_interval = std::chrono::seconds(30);
    o.retry_delay = milliseconds(10);
    return o;
  }
  JobState state_of(JobId id) const {
    PgConnPtr conn = connect();
    return query_job(conn.get(), id)->state;
  }
  // Stops `worker` and returns what its run() threw, "" if nothing.
  static std::string what_run_threw(BackgroundWorker& worker) {
    worker.join();
    std::exception_ptr error = worker.wait_for_exit();
    if (!error) return "";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      return e.what();
    } catch (...) {
      return "something that is not a std::exception";
    }
  }
  bool all_completed(const std::vector<JobId>& ids) const {
    PgConnPtr conn = connect();
    for (JobId id : ids) {
      if (query_job(conn.get(), id)->state != JobState::completed) return false;
    }
    return true;
  }
  // Jobs `data`, then "fine", in queue `q`, each given one attempt under
  // the retry policy and run by `handler` (which must pass "fine"); once
  // "fine" has completed, `jobs` holds the jobs before it as stored. The
  // worker must still serve.
  void run_then_fine(const std::string& q, bool transactional,
                     const std::vector<std::string>& data, Handler handler,
                     std::vector<Job>& jobs) {
    PgConnPtr conn = connect();
    std::vector<JobId> ids;
    for (const std::string& d : data)
      ids.push_back(enqueue(conn.get(), q, json(d)));
    JobId fine = enqueue(conn.get(), q, json("fine"));
    WorkerOptions o = options({q});
    o.transactional = transactional;
    o.on_error = ErrorPolicy::retry;
    o.max_attempts = 1;
    BackgroundWorker worker(o, std::move(handler));
    ASSERT_TRUE(wait_until([&] { return all_completed({fine}); })) << q;
    jobs.clear();
    for (JobId id : ids) jobs.push_back(*query_job(conn.get(), id));
    EXPECT_FALSE(worker.finished()) << q;
  }
  // Jobs first, second (and, later, third) in queue `q`; while first's
  // handler runs, an operator's open transaction cancels second, holding
  // its row and the queue's progress row, so the worker's commit of first
  // waits for it; `meanwhile` runs then, the operator's connection given.
  // Then the operator commits: the worker must have served on, running
  // first and third once each.
  void outwait_an_operator(const std::string& q,
                           const std::function<void(PGconn*)>& meanwhile) {
    PgConnPtr conn = connect();
    JobId first = enqueue(conn.get(), q, json("first"));
    JobId second = enqueue(conn.get(), q, json("second"));
    Gate go_on;
    Journal journal;
    BackgroundWorker worker(options({q}), [&](const JobContext& job) {
      journal.add(job.data.get<std::string>());
      if (job.id == first) go_on.wait();
      return HandlerResult::complete(job.data);
    });
    ASSERT_TRUE(wait_until([&] { return journal.size() == 1; }));
    PgConnPtr operator_conn = connect();
    test::exec(operator_conn.get(), "BEGIN");
    cancel(operator_conn.get(), second);
    go_on.open();
    meanwhile(operator_conn.get());
    EXPECT_FALSE(worker.finished()) << "the worker stopped";
    test::exec(operator_conn.get(), "COMMIT");
    JobId third = enqueue(conn.get(), q, json("third"));
    RedisLink redis(test::redis_url());
    notify(redis, q);
    EXPECT_TRUE(wait_until([&] { return all_completed({first, third}); }));
    EXPECT_EQ(state_of(second), JobState::cancelled);
    EXPECT_FALSE(worker.finished()) << "the worker stopped";
    EXPECT_EQ(what_run_threw(worker), "");
    EXPECT_EQ(journal.entries(), (std::vector<std::string>{"first", "third"}));
    EXPECT_EQ(query_job(conn.get(), first)->attempts, 1);
  }
};

TEST_F(WorkerTest, RunsJobsInFifoOrderAndStoresTheirResults) {
  PgConnPtr conn = connect();
  std::string q = queue("fifo");
  std::vector<JobId> ids;
  for (int i = 0; i < 200; ++i)
    ids.push_back(enqueue(conn.get(), q, json{{"i", i}}));
  Journal journal;
  BackgroundWorker worker(options({q}), [&](const JobContext& job) {
    journal.add(std::to_string(job.data["i"].get<int>()));
    return HandlerResult::complete({{"twice", 2 * job.data["i"].get<int>()}});
  });
  ASSERT_TRUE(wait_until([&] { return journal.size() == 200; }));
  ASSERT_TRUE(wait_until([&] { return all_completed(ids); }));
  auto seen = journal.entries();
  for (int i = 0; i < 200; ++i)
    EXPECT_EQ(seen[static_cast<std::size_t>(i)], std::to_string(i));
  for (int i = 0; i < 200; ++i) {
    auto job = query_job(conn.get(), ids[static_cast<std::size_t>(i)]);
    EXPECT_EQ(job->result, (json{{"twice", 2 * i}}));
    EXPECT_EQ(job->attempts, 1);
    ASSERT_TRUE(job->started_at && job->finished_at);
    EXPECT_LE(*job->started_at, *job->finished_at);
  }
  auto status = queue_status(conn.get(), q);
  ASSERT_EQ(status.size(), 1u);
  EXPECT_EQ(status[0].completed, 200);
  EXPECT_EQ(status[0].pending, 0);
  EXPECT_EQ(status[0].running, 0);
}

TEST_F(WorkerTest, WakesWithinMillisecondsOfANotify) {
  PgConnPtr conn = connect();
  std::string q = queue("wake");
  Journal journal;
  auto o = options({q});
  o.poll_interval = std::chrono::seconds(60);  // a poll cannot explain it
  BackgroundWorker worker(o, [&](const JobContext& job) {
    journal.add(job.data.dump());
    return HandlerResult::complete();
  });
  ASSERT_TRUE(wait_until([&] { return worker.worker().active_queues() == 1; }));
  RedisLink redis(test::redis_url());
  // Let the subscription come up; then each job must be picked up fast.
  for (int i = 0; i < 5; ++i) {
    enqueue(conn.get(), q, json(i));
    ASSERT_TRUE(notify(redis, q));
    EXPECT_TRUE(wait_until(
        [&] { return journal.size() == static_cast<std::size_t>(i + 1); },
        milliseconds(5000)));
  }
}

// The scenario of the library pgjobq replaces: enqueue two, a third is
// refused at limit 2, both pending, the first is the head; completing it
// publishes its result to a subscriber; rescheduling moves job 2 behind;
// stored results read back.
TEST_F(WorkerTest, OriginalLibraryScenario) {
  PgConnPtr conn = connect();
  std::string q = queue("scenario");
  auto j1 = try_enqueue(conn.get(), q, json{{"n", 1}}, 2);
  auto j2 = try_enqueue(conn.get(), q, json{{"n", 2}}, 2);
  ASSERT_TRUE(j1 && j2);
  EXPECT_FALSE(try_enqueue(conn.get(), q, json{{"n", 3}}, 2));
  EXPECT_EQ(queue_status(conn.get(), q)[0].pending, 2);
  EXPECT_EQ(fifo(q).front(), j1->value);

  // A subscriber on job 1's channel.
  std::string url = test::redis_url();
  redisContext* sub =
      redisConnect("127.0.0.1", std::stoi(url.substr(url.rfind(':') + 1)));
  ASSERT_TRUE(sub && !sub->err);
  std::string channel = job_channel(*j1);
  EXPECT_EQ(channel, "pgjobq/job-" + std::to_string(j1->value));
  freeReplyObject(redisCommand(sub, "SUBSCRIBE %s", channel.c_str()));

  Gate second_may_run;
  Journal journal;
  BackgroundWorker worker(options({q}), [&](const JobContext& job) {
    int n = job.data["n"].get<int>();
    if (n == 2) second_may_run.wait();
    journal.add(std::to_string(n));
    return HandlerResult::complete({{"done", n}});
  });
  // Job ids are per database and the test databases share one Redis: a
  // job of another test may publish on the same channel. Wait for ours.
  bool published = false;
  for (int i = 0; i < 50 && !published; ++i) {
    void* raw = nullptr;
    ASSERT_EQ(redisGetReply(sub, &raw), REDIS_OK);
    auto* message = static_cast<redisReply*>(raw);
    ASSERT_EQ(message->type, REDIS_REPLY_ARRAY);
    std::string text(message->element[2]->str, message->element[2]->len);
    freeReplyObject(message);
    published = json::accept(text) && json::parse(text) == json{{"done", 1}};
  }
  EXPECT_TRUE(published);
  redisFree(sub);
  EXPECT_EQ(query_job(conn.get(), *j1)->result, (json{{"done", 1}}));

  // Job 2 is running (held at the gate); job 3 now fits under the limit.
  auto j3 = try_enqueue(conn.get(), q, json{{"n", 3}}, 2);
  ASSERT_TRUE(j3);
  ASSERT_TRUE(wait_until([&] { return state_of(*j2) == JobState::running; }));
  EXPECT_THROW(reschedule(conn.get(), *j2), WrongState) << "job 2 is running";
  second_may_run.open();
  ASSERT_TRUE(wait_until([&] { return all_completed({*j1, *j2, *j3}); }));
  EXPECT_EQ(journal.entries(), (std::vector<std::string>{"1", "2", "3"}));
}

TEST_F(WorkerTest, RescheduleFromTheHandlerMovesTheJobBehindTheOthers) {
  PgConnPtr conn = connect();
  std::string q = queue("again");
  JobId a = enqueue(conn.get(), q, json("a"));
  JobId b = enqueue(conn.get(), q, json("b"));
  Journal journal;
  BackgroundWorker worker(options({q}), [&](const JobContext& job) {
    std::string name = job.data.get<std::string>();
    journal.add(name + "@" + std::to_string(job.attempt));
    if (name == "a" && journal.size() == 1) return HandlerResult::reschedule();
    return HandlerResult::complete(name);
  });
  ASSERT_TRUE(wait_until([&] { return all_completed({a, b}); }));
  EXPECT_EQ(journal.entries(), (std::vector<std::string>{"a@1", "b@1", "a@1"}))
      << "a rescheduled job is a fresh job at the back: attempt 1 again";
  EXPECT_EQ(query_job(conn.get(), a)->result, json("a"));
}

// A job that reschedules itself with nothing else waiting would come
// straight back and spin (`pgjobq work` with a command that exits 75 ran
// 75 times a second): it waits retry_delay, doubling, to max_retry_delay.
// Meanwhile it is pending, so it can be cancelled.
TEST_F(WorkerTest, AJobThatKeepsReschedulingItselfAloneBacksOff) {
  PgConnPtr conn = connect();
  std::string q = queue("bounce");
  JobId id = enqueue(conn.get(), q, json("again"));
  std::atomic<int> runs{0};
  auto o = options({q});
  o.retry_delay = milliseconds(50);
  o.max_retry_delay = milliseconds(200);
  BackgroundWorker worker(o, [&](const JobContext&) {
    ++runs;
    return HandlerResult::reschedule();
  });
  std::this_thread::sleep_for(milliseconds(1500));
  // 1 + (50 + 100 + 200 + 200 ...) ms: about 9 runs; spinning, thousands.
  EXPECT_GE(runs.load(), 3);
  EXPECT_LE(runs.load(), 20);
  EXPECT_TRUE(wait_until([&] {
    try {
      cancel(conn.get(), id);
      return true;
    } catch (const WrongState&) {
      return false;  // caught running, for a moment
    }
  }));
  EXPECT_EQ(state_of(id), JobState::cancelled);
  int after_cancel = runs.load();
  std::this_thread::sleep_for(milliseconds(400));
  EXPECT_LE(runs.load(), after_cancel + 1);
}

// A job that keeps rescheduling itself, sent to the back by an operator
// while the worker holds off running it again: the job now ahead of it
// runs then, not when the wait (60 s here) is over.
TEST_F(WorkerTest, ABouncingJobsWaitEndsWhenAnOperatorSendsItToTheBack) {
  PgConnPtr conn = connect();
  std::string q = queue("bounce-moved");
  JobId bouncing = enqueue(conn.get(), q, json("again"));
  Journal journal;
  auto o = options({q});
  o.retry_delay = std::chrono::seconds(60);
  o.max_retry_delay = std::chrono::seconds(60);
  BackgroundWorker worker(o, [&](const JobContext& job) {
    std::string name = job.data.get<std::string>();
    journal.add(name);
    if (name == "again") return HandlerResult::reschedule();
    return HandlerResult::complete(name);
  });
  // Run, and its reschedule committed (attempts reset: pending, 0; the
  // journal's entry comes before that commit, and a job enqueued before it
  // would be ahead): the worker holds off.
  // The job read after the journal: read before, it could be the job as
  // it was before its first run.
  ASSERT_TRUE(wait_until([&] {
    if (journal.entries().size() != 1) return false;
    auto job = query_job(conn.get(), bouncing);
    return job->state == JobState::pending && job->attempts == 0;
  }));
  JobId next = enqueue(conn.get(), q, json("next"));
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(state_of(next), JobState::pending);
  reschedule(conn.get(), bouncing);  // behind `next`
  EXPECT_TRUE(wait_until([&] { return all_completed({next}); },
                         std::chrono::seconds(20)));
  // Then the bouncing job runs again (a job completed: no more holding
  // off).
  std::vector<std::string> runs = journal.entries();
  ASSERT_GE(runs.size(), 2u);
  EXPECT_EQ(runs[0], "again");
  EXPECT_EQ(runs[1], "next");
}

// Two jobs that keep rescheduling take turns, and each round waits too:
// they do not spin by alternating.
TEST_F(WorkerTest, JobsThatRescheduleInTurnsBackOffToo) {
  PgConnPtr conn = connect();
  std::string q = queue("bounce2");
  enqueue(conn.get(), q, json("a"));
  enqueue(conn.get(), q, json("b"));
  std::atomic<int> runs{0};
  auto o = options({q});
  o.retry_delay = milliseconds(50);
  o.max_retry_delay = milliseconds(200);
  BackgroundWorker worker(o, [&](const JobContext&) {
    ++runs;
    return HandlerResult::reschedule();
  });
  std::this_thread::sleep_for(milliseconds(1500));
  EXPECT_GE(runs.load(), 4);
  EXPECT_LE(runs.load(), 40) << "spinning";
}

// A job that rescheduled once and then fails is retried at the retry
// policy's pace, with no back-off for bounces on top.
TEST_F(WorkerTest, ARescheduledJobThatThenFailsRetriesAtThePolicysPace) {
  PgConnPtr conn = connect();
  std::string q = queue("bounce-err");
  JobId id = enqueue(conn.get(), q, json("x"));
  auto o = options({q});
  o.on_error = ErrorPolicy::retry;
  o.retry_delay = milliseconds(300);
  o.max_attempts = 2;
  std::atomic<int> runs{0};
  BackgroundWorker worker(o, [&](const JobContext&) -> HandlerResult {
    if (++runs == 1) return HandlerResult::reschedule();
    throw std::runtime_error("fails after its reschedule");
  });
  auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until([&] { return state_of(id) == JobState::failed; }));
  // The bounce (300 ms) and one retry delay (300 ms; none after the last
  // attempt): about 600 ms, where bounce waits on top of each retry (600,
  // then 1200 ms) took 2.4 s.
  EXPECT_LT(std::chrono::steady_clock::now() - started, milliseconds(1500));
}

// With other jobs waiting, a rescheduled job simply goes behind them: no
// back-off (retry_delay is ten seconds here).
TEST_F(WorkerTest, AJobRescheduledBehindOthersRunsWithoutWaiting) {
  PgConnPtr conn = connect();
  std::string q = queue("behind");
  JobId a = enqueue(conn.get(), q, json("a"));
  JobId b = enqueue(conn.get(), q, json("b"));
  auto o = options({q});
  o.retry_delay = std::chrono::seconds(10);
  std::atomic<int> a_runs{0};
  BackgroundWorker worker(o, [&](const JobContext& job) {
    if (job.data == json("a") && ++a_runs == 1) {
      return HandlerResult::reschedule();  // a, then b, then a again
    }
    return HandlerResult::complete();
  });
  auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until([&] { return all_completed({a, b}); }));
  EXPECT_LT(std::chrono::steady_clock::now() - started,
            std::chrono::seconds(5));
  EXPECT_EQ(a_runs.load(), 2);
}

TEST_F(WorkerTest, OperatorRescheduleAndCancelReorderPendingJobs) {
  PgConnPtr conn = connect();
  std::string q = queue("ops");
  JobId first = enqueue(conn.get(), q, json(1));
  JobId second = enqueue(conn.get(), q, json(2));
  JobId third = enqueue(conn.get(), q, json(3));
  JobId fourth = enqueue(conn.get(), q, json(4));
  reschedule(conn.get(), first);
  cancel(conn.get(), third);
  EXPECT_THROW(cancel(conn.get(), third), WrongState);
  Journal journal;
  BackgroundWorker worker(options({q}), [&](const JobContext& job) {
    journal.add(job.data.dump());
    return HandlerResult::complete();
  });
  ASSERT_TRUE(wait_until([&] {
    return all_completed({first, second, fourth});
  }));
  EXPECT_EQ(journal.entries(), (std::vector<std::string>{"2", "4", "1"}));
  EXPECT_EQ(state_of(third), JobState::cancelled);
  auto s = queue_status(conn.get(), q)[0];
  EXPECT_EQ(s.completed, 3);
  EXPECT_EQ(s.cancelled, 1);
  EXPECT_EQ(s.pending, 0);
}

// A claim that loses every job it saw (cancelled as it claimed them)
// claims again at once: jobs enqueued meanwhile must not wait for a
// wake-up that nobody owes it (the cancel publishes none to the queue, and
// here neither does the enqueue), nor for the poll.
TEST_F(WorkerTest, AClaimThatLosesItsJobsToACancelLooksAgain) {
  PgConnPtr conn = connect();
  RedisLink redis(test::redis_url());
  std::string q = queue("lost");
  auto o = options({q});
  o.poll_interval = std::chrono::seconds(60);
  Journal journal;
  BackgroundWorker worker(o, [&](const JobContext& job) {
    journal.add(job.data.dump());
    return HandlerResult::complete();
  });
  // Fast jobs first: the worker then claims many at once, and a claim that
  // sees fewer than that takes the queue for drained.
  std::vector<JobId> warm_up;
  for (int i = 0; i < 5; ++i) {
    warm_up.push_back(enqueue(conn.get(), q, json(i)));
    ASSERT_TRUE(notify(redis, q));
    ASSERT_TRUE(wait_until([&] { return all_completed(warm_up); }));
  }
  // Not notified: the worker sleeps on. Then cancelled in a transaction
  // held open, and the worker woken, so that its claim waits for the row.
  JobId lost = enqueue(conn.get(), q, json("lost"));
  PgConnPtr canceller = connect();
  test::exec(canceller.get(), "BEGIN");
  cancel(canceller.get(), lost);
  ASSERT_TRUE(notify(redis, q));
  ASSERT_TRUE(wait_until([&] { return lock_waiters() == 1; }));
  JobId behind = enqueue(conn.get(), q, json("behind"));
  test::exec(canceller.get(), "COMMIT");
  EXPECT_TRUE(
      wait_until([&] { return all_completed({behind}); }, milliseconds(10000)));
  EXPECT_EQ(journal.entries(),
            (std::vector<std::string>{"0", "1", "2", "3", "4", "\"behind\""}));
  EXPECT_EQ(state_of(lost), JobState::cancelled);
}

TEST_F(WorkerTest, RetryPolicyRunsTheSameJobAgainBeforeAnythingBehindIt) {
  PgConnPtr conn = connect();
  std::string q = queue("retry");
  JobId flaky = enqueue(conn.get(), q, json("flaky"));
  JobId after = enqueue(conn.get(), q, json("after"));
  Journal journal;
  auto o = options({q});
  o.on_error = ErrorPolicy::retry;
  BackgroundWorker worker(o, [&](const JobContext& job) {
    std::string name = job.data.get<std::string>();
    journal.add(name + "@" + std::to_string(job.attempt));
    if (name == "flaky" && job.attempt < 3) {
      throw std::runtime_error("boom " + std::to_string(job.attempt));
    }
    return HandlerResult::complete(name);
  });
  ASSERT_TRUE(wait_until([&] { return all_completed({flaky, after}); }));
  EXPECT_EQ(
      journal.entries(),
      (std::vector<std::string>{"flaky@1", "flaky@2", "flaky@3", "after@1"}));
  auto job = query_job(conn.get(), flaky);
  EXPECT_EQ(job->attempts, 3);
  EXPECT_EQ(job->error, "boom 2") << "the last error is kept";
}

// An operator who cancels the job the retry policy is waiting to run again
// unblocks the queue then, not at the end of the wait (60 s here).
TEST_F(WorkerTest, ARetryWaitEndsWhenAnOperatorCancelsTheJob) {
  PgConnPtr conn = connect();
  std::string q = queue("retry-cancel");
  JobId flaky = enqueue(conn.get(), q, json("flaky"));
  JobId after = enqueue(conn.get(), q, json("after"));
  Journal journal;
  auto o = options({q});
  o.on_error = ErrorPolicy::retry;
  o.retry_delay = std::chrono::seconds(60);
  o.max_retry_delay = std::chrono::seconds(60);
  BackgroundWorker worker(o, [&](const JobContext& job) {
    std::string name = job.data.get<std::string>();
    journal.add(name + "@" + std::to_string(job.attempt));
    if (name == "flaky") throw std::runtime_error("boom");
    return HandlerResult::complete(name);
  });
  ASSERT_TRUE(wait_until([&] {
    auto job = query_job(conn.get(), flaky);
    return job->state == JobState::pending && job->error == "boom";
  }));
  // No wake-up: cancel() alone, as a program using the library might.
  cancel(conn.get(), flaky);
  EXPECT_TRUE(wait_until([&] { return all_completed({after}); },
                         std::chrono::seconds(20)));
  EXPECT_EQ(journal.entries(),
            (std::vector<std::string>{"flaky@1", "after@1"}));
  EXPECT_EQ(state_of(flaky), JobState::cancelled);
}

TEST_F(WorkerTest, CrashPolicyRecordsTheErrorAndStopsTheWorker) {
  PgConnPtr conn = connect();
  std::string q = queue("crash");
  JobId bad = enqueue(conn.get(), q, json("bad"));
  JobId next = enqueue(conn.get(), q, json("next"));
  std::atomic<int> runs{0};
  {
    BackgroundWorker worker(options({q}),
                            [&](const JobContext&) -> HandlerResult {
                              ++runs;
                              throw std::runtime_error("disk on fire");
                            });
    std::exception_ptr error = worker.wait_for_exit();
    ASSERT_TRUE(error);
    try {
      std::rethrow_exception(error);
    } catch (const HandlerFailed& e) {
      EXPECT_EQ(e.job(), bad);
      EXPECT_NE(std::string(e.what()).find("disk on fire"), std::string::npos);
    }
  }
  EXPECT_EQ(runs.load(), 1);
  auto job = query_job(conn.get(), bad);
  EXPECT_EQ(job->state, JobState::pending);
  EXPECT_EQ(job->error, "disk on fire");
  EXPECT_EQ(job->attempts, 1);
  EXPECT_EQ(query_job(conn.get(), next)->attempts, 0)
      << "the job behind was not blamed";
  // A restart picks the job up again.
  BackgroundWorker again(options({q}), [&](const JobContext& j) {
    return HandlerResult::complete(j.attempt);
  });
  ASSERT_TRUE(wait_until([&] { return all_completed({bad, next}); }));
  EXPECT_EQ(query_job(conn.get(), bad)->result, json(2));
}

TEST_F(WorkerTest, PoisonJobIsMarkedFailedAfterMaxAttemptsAndTheQueueMovesOn) {
  PgConnPtr conn = connect();
  std::string q = queue("poison");
  JobId poison = enqueue(conn.get(), q, json("poison"));
  JobId fine = enqueue(conn.get(), q, json("fine"));
  auto o = options({q});
  o.max_attempts = 3;
  Handler handler = [](const JobContext& job) -> HandlerResult {
    if (job.data == "poison") throw std::runtime_error("always fails");
    return HandlerResult::complete("ok");
  };
  for (int restart = 0; restart < 3; ++restart) {
    BackgroundWorker worker(o, handler);
    EXPECT_TRUE(worker.wait_for_exit()) << "restart " << restart;
  }
  BackgroundWorker last(o, handler);
  ASSERT_TRUE(wait_until([&] { return all_completed({fine}); }));
  auto job = query_job(conn.get(), poison);
  EXPECT_EQ(job->state, JobState::failed);
  EXPECT_EQ(job->attempts, 3);
  ASSERT_TRUE(job->error);
  EXPECT_NE(job->error->find("gave up after 3 attempts"), std::string::npos)
      << *job->error;
  RedisLink redis(test::redis_url());
  EXPECT_THROW(wait_for_result(conn.get(), redis, poison, milliseconds(100)),
               JobFailed);
  auto s = queue_status(conn.get(), q)[0];
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.completed, 1);
}

TEST_F(WorkerTest, HandlerPastItsTimeoutCountsAsAnError) {
  PgConnPtr conn = connect();
  std::string q = queue("slow");
  JobId slow = enqueue(conn.get(), q, json("slow"));
  auto o = options({q});
  o.job_timeout = milliseconds(100);
  BackgroundWorker worker(o, [&](const JobContext& job) {
    // A well-behaved slow handler: it watches its stop token.
    while (!job.stop.stop_requested())
      std::this_thread::sleep_for(milliseconds(5));
    return HandlerResult::complete("too late");
  });
  EXPECT_TRUE(worker.wait_for_exit());
  auto job = query_job(conn.get(), slow);
  EXPECT_EQ(job->state, JobState::pending);
  ASSERT_TRUE(job->error);
  EXPECT_NE(job->error->find("timed out"), std::string::npos) << *job->error;
}

// A graceful stop lets the running job finish, but not past its timeout:
// the timeout still stops it and counts as its error. (The watch used to
// end with stop(), and the job ran on, and completed, however long.)
TEST_F(WorkerTest, AGracefulStopStillEnforcesTheJobTimeout) {
  PgConnPtr conn = connect();
  std::string q = queue("slowstop");
  JobId slow = enqueue(conn.get(), q, json("slow"));
  auto o = options({q});
  o.job_timeout = milliseconds(500);
  std::atomic<bool> started{false};
  BackgroundWorker worker(o, [&](const JobContext& job) {
    started = true;
    wait_until([&] { return job.stop.stop_requested(); }, milliseconds(20000));
    return HandlerResult::complete("too late");
  });
  ASSERT_TRUE(wait_until([&] { return started.load(); }));
  worker.stop();
  auto stopping = std::chrono::steady_clock::now();
  worker.wait_for_exit();
  EXPECT_LT(std::chrono::steady_clock::now() - stopping, milliseconds(5000));
  auto job = query_job(conn.get(), slow);
  EXPECT_NE(job->state, JobState::completed);
  ASSERT_TRUE(job->error);
  EXPECT_NE(job->error->find("timed out"), std::string::npos) << *job->error;
}

TEST_F(WorkerTest, TimeoutCancelsTheHandlersSqlToo) {
  PgConnPtr conn = connect();
  std::string q = queue("slowsql");
  JobId slow = enqueue(conn.get(), q, json("slow"));
  auto o = options({q});
  o.job_timeout = milliseconds(200);
  o.on_error = ErrorPolicy::retry;
  o.retry_delay = std::chrono::seconds(30);
  BackgroundWorker worker(o, [&](const JobContext& job) {
    PGresult* r = PQexec(job.db, "SELECT pg_sleep(60)");
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    if (!ok) throw std::runtime_error("sleep interrupted");
    return HandlerResult::complete();
  });
  ASSERT_TRUE(wait_until([&] {
    auto job = query_job(conn.get(), slow);
    return job->error.has_value();
  }));
  EXPECT_NE(query_job(conn.get(), slow)->error->find("timed out"),
            std::string::npos);
}

// The stored times tell the order the handlers ran in, whether jobs were
// claimed one by one or ahead, many to a claim: each job starts after the
// one before it finished (they used to show the claim's time, before the
// previous job's finish), after it was enqueued, and ends after it starts.
TEST_F(WorkerTest, StoredTimesShowEachJobStartingAfterTheOneBeforeFinished) {
  PgConnPtr conn = connect();
  std::string q = queue("times");
  // Fast jobs first (claimed many at a time), then slow ones (one by one,
  // each claimed with the previous one's completion).
  std::vector<JobId> ids;
  for (int i = 0; i < 300; ++i) ids.push_back(enqueue(conn.get(), q, json(0)));
  for (int i = 0; i < 6; ++i) ids.push_back(enqueue(conn.get(), q, json(15)));
  BackgroundWorker worker(options({q}), [](const JobContext& job) {
    std::this_thread::sleep_for(milliseconds(job.data.get<int>()));
    return HandlerResult::complete();
  });
  ASSERT_TRUE(wait_until([&] { return all_completed(ids); }));
  std::string in_queue =
      "FROM pgjobq.jobs j JOIN pgjobq.queues q ON q.id = j.queue_id WHERE "
      "q.name = '" +
      q + "'";
  EXPECT_EQ(query_value("SELECT count(*) FROM (SELECT started_at, "
                        "lag(finished_at) OVER (ORDER BY position) AS before " +
                        in_queue + ") t WHERE started_at < before"),
            "0");
  EXPECT_EQ(query_value("SELECT count(*) " + in_queue +
                        " AND NOT (enqueued_at <= started_at AND started_at <= "
                        "finished_at)"),
            "0");
  // The slow jobs' times show their 15 ms runs.
  EXPECT_EQ(query_value("SELECT count(*) " + in_queue +
                        " AND data = '15' AND finished_at - started_at < "
                        "interval '15 ms'"),
            "0");
}

TEST_F(WorkerTest, TransactionalHandlerCommitsWithTheCompletionOrNotAtAll) {
  PgConnPtr conn = connect();
  PQclear(PQexec(conn.get(), "CREATE TABLE effects (job bigint, attempt int)"));
  std::string q = queue("tx");
  JobId id = enqueue(conn.get(), q, json("x"));
  auto o = options({q});
  o.transactional = true;
  o.on_error = ErrorPolicy::retry;
  BackgroundWorker worker(o, [&](const JobContext& job) {
    std::string sql = "INSERT INTO effects VALUES (" +
                      std::to_string(job.id.value) + ", " +
                      std::to_string(job.attempt) + ")";
    PQclear(PQexec(job.db, sql.c_str()));
    if (job.attempt == 1)
      throw std::runtime_error("first attempt fails after writing");
    return HandlerResult::complete("written");
  });
  ASSERT_TRUE(wait_until([&] { return all_completed({id}); }));
  EXPECT_EQ(query_value("SELECT string_agg(attempt::text, ',') FROM effects"),
            "2")
      << "the failed attempt's write was rolled back with it";
}

// A job a transactional handler enqueues exists only once the handler's
// transaction commits; notify_after_commit() wakes its worker after that.
// The next queue's worker polls only every 30 s here, so the job starts
// within the test's time only if the wake-up came after the commit.
TEST_F(WorkerTest,
       TransactionalHandlerWakesTheQueuesItEnqueuedIntoAfterTheCommit) {
  PgConnPtr conn = connect();
  std::string first = queue("chain-a");
  std::string next = queue("chain-b");
  Journal journal;
  BackgroundWorker downstream(options({next}), [&](const JobContext& job) {
    journal.add(job.data.get<std::string>());
    return HandlerResult::complete();
  });
  // The downstream worker has run a job, found its queue empty and waits.
  // (Notified: a worker that looked at its queue before the enqueue
  // committed would find it only at its 30 s poll.)
  enqueue(conn.get(), next, json("warm-up"));
  RedisLink redis(test::redis_url());
  notify(redis, next);
  ASSERT_TRUE(wait_until([&] { return journal.size() == 1; }));
  std::this_thread::sleep_for(milliseconds(200));

  auto o = options({first});
  o.transactional = true;
  BackgroundWorker upstream(o, [&](const JobContext& job) {
    enqueue(job.db, next, json("follow-up"));
    job.notify_after_commit(next);
    job.notify_after_commit(next);  // once is enough; twice is harmless
    EXPECT_THROW(job.notify_after_commit("not a queue!"), InvalidInput);
    return HandlerResult::complete();
  });
  JobId id = enqueue(conn.get(), first, json("start"));
  ASSERT_TRUE(
      wait_until([&] { return journal.size() == 2; }, milliseconds(10000)))
      << "the follow-up job was not woken after its commit";
  EXPECT_EQ(journal.entries().back(), "follow-up");
  EXPECT_EQ(state_of(id), JobState::completed);
}

TEST_F(WorkerTest, TransactionalHandlerWhoseStatementFailsIsAnError) {
  PgConnPtr conn = connect();
  std::string q = queue("txfail");
  JobId id = enqueue(conn.get(), q, json("x"));
  auto o = options({q});
  o.transactional = true;
  BackgroundWorker worker(o, [&](const JobContext& job) {
    // The handler swallows the error, but the transaction is aborted.
    PQclear(PQexec(job.db, "SELECT no_such_column FROM no_such_table"));
    return HandlerResult::complete("pretends all is well");
  });
  EXPECT_TRUE(worker.wait_for_exit());
  auto job = query_job(conn.get(), id);
  EXPECT_EQ(job->state, JobState::pending);
  EXPECT_NE(job->error->find("transaction failed"), std::string::npos)
      << *job->error;
}

// The worker's session speaks UTF-8 whatever its URL (or PGCLIENTENCODING,
// or the role's settings) say: in LATIN1 it handed its handler the job's
// data converted to LATIN1 bytes, and stored the handler's UTF-8 result as
// mojibake.
TEST_F(WorkerTest, TheWorkersSessionIsUtf8WhateverItsUrlSays) {
  PgConnPtr conn = connect();
  std::string q = queue("latin1");
  json data = json::parse("{\"name\": \"J\\u00fcrgen\"}");
  JobId id = enqueue(conn.get(), q, data);
  auto o = options({q});
  o.db_url += "?client_encoding=LATIN1";
  std::mutex mutex;
  json seen;
  BackgroundWorker worker(o, [&](const JobContext& job) {
    std::lock_guard lock(mutex);
    seen = job.data;
    return HandlerResult::complete(job.data);
  });
  ASSERT_TRUE(wait_until([&] { return state_of(id) == JobState::completed; }));
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(seen, data);
  }
  EXPECT_EQ(query_job(conn.get(), id)->result, data);
}

// A worker claims only in the session that holds its queue's lock. Behind a
// pooler in transaction mode its statements can land in another session,
// and a second worker can be handed the first one's session, lock and
// all: there the second one's mark replaces the first one's, as this
// handler's set_config does. The next claim finds a mark not the worker's,
// claims nothing, and the worker stops, loudly, instead of running the
// queue beside another worker.
TEST_F(WorkerTest, AWorkerStopsRatherThanClaimInASessionNotMarkedAsItsOwn) {
  PgConnPtr conn = connect();
  std::string q = queue("mark");
  JobId first = enqueue(conn.get(), q, json("first"));
  JobId second = enqueue(conn.get(), q, json("second"));
  auto o = options({q});
  o.transactional = true;
  o.max_batch = 1;
  std::atomic<int> runs{0};
  BackgroundWorker worker(o, [&](const JobContext& job) {
    ++runs;
    PQclear(PQexec(job.db,
                   "SELECT set_config('pgjobq.lock_mark', 'another worker', "
                   "false)"));
    return HandlerResult::complete();
  });
  ASSERT_TRUE(
      wait_until([&] { return worker.finished(); }, milliseconds(10000)))
      << "the worker went on claiming; runs: " << runs.load();
  std::exception_ptr error = worker.wait_for_exit();
  ASSERT_TRUE(error);
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    EXPECT_TRUE(
        test::contains(e.what(), "not the one holding the queue's lock"))
        << e.what();
    EXPECT_TRUE(test::contains(e.what(), q)) << e.what();
  }
  EXPECT_EQ(runs.load(), 1);
  EXPECT_EQ(state_of(first), JobState::completed);
  auto job = query_job(conn.get(), second);
  EXPECT_EQ(job->state, JobState::pending);
  EXPECT_EQ(job->attempts, 0);
}

// A transactional handler's work that fails only at COMMIT (a deferred
// constraint here; a serialization failure alike) rolls back with the
// job's outcome. That is the handler's error, recorded on the job and
// handled by the error policy; it used to end the worker with the job left
// running and no error recorded, so that every restart ran it again.
TEST_F(WorkerTest, TransactionalHandlerWhoseCommitFailsIsAnError) {
  PgConnPtr conn = connect();
  PQclear(PQexec(conn.get(),
                 "CREATE TABLE parents (id int PRIMARY KEY); CREATE TABLE "
                 "children (parent int REFERENCES parents DEFERRABLE "
                 "INITIALLY DEFERRED)"));
  std::string q = queue("txcommit");
  JobId id = enqueue(conn.get(), q, json("x"));
  auto o = options({q});
  o.transactional = true;
  o.on_error = ErrorPolicy::retry;
  o.max_attempts = 3;
  std::atomic<int> runs{0};
  BackgroundWorker worker(o, [&](const JobContext& job) {
    ++runs;
    PQclear(PQexec(job.db, "INSERT INTO children VALUES (42)"));
    return HandlerResult::complete("never stored");
  });
  ASSERT_TRUE(wait_until([&] { return state_of(id) == JobState::failed; }));
  EXPECT_EQ(runs.load(), 3);
  auto job = query_job(conn.get(), id);
  ASSERT_TRUE(job->error);
  EXPECT_TRUE(test::contains(*job->error, "did not commit")) << *job->error;
  EXPECT_TRUE(test::contains(*job->error, "foreign key")) << *job->error;
  EXPECT_EQ(query_value("SELECT count(*) FROM children"), "0");
  EXPECT_FALSE(worker.finished());
}

// A transactional handler that commits (or rolls back) the worker's
// transaction and begins another leaves a transaction open, as expected,
// but its work before that did not go with the job: an error, not a
// completion (it used to complete the job).
TEST_F(WorkerTest, TransactionalHandlerThatCommitsAndBeginsAgainIsAnError) {
  PgConnPtr conn = connect();
  PQclear(PQexec(conn.get(), "CREATE TABLE effects (job bigint)"));
  std::string q = queue("txagain");
  JobId commits = enqueue(conn.get(), q, json("COMMIT"));
  JobId rolls_back = enqueue(conn.get(), q, json("ROLLBACK"));
  JobId fine = enqueue(conn.get(), q, json("fine"));
  auto o = options({q});
  o.transactional = true;
  o.on_error = ErrorPolicy::retry;
  o.max_attempts = 1;
  BackgroundWorker worker(o, [&](const JobContext& job) {
    std::string sql =
        "INSERT INTO effects VALUES (" + std::to_string(job.id.value) + ")";
    PQclear(PQexec(job.db, sql.c_str()));
    if (job.data != "fine") {
      std::string again = job.data.get<std::string>() + "; BEGIN";
      PQclear(PQexec(job.db, again.c_str()));
    }
    return HandlerResult::complete("done");
  });
  ASSERT_TRUE(wait_until([&] { return all_completed({fine}); }));
  for (JobId id : {commits, rolls_back}) {
    auto job = query_job(conn.get(), id);
    EXPECT_EQ(job->state, JobState::failed) << id.value;
    EXPECT_TRUE(job->error && test::contains(*job->error, "began another"))
        << job->error.value_or("(no error)");
  }
  // What ran before the handler's COMMIT stayed (the documented misuse);
  // the job that ran as meant has its effect once.
  EXPECT_EQ(query_value("SELECT count(*) FROM effects WHERE job = " +
                        std::to_string(commits.value)),
            "1");
  EXPECT_EQ(query_value("SELECT count(*) FROM effects WHERE job = " +
                        std::to_string(fine.value)),
            "1");
  EXPECT_FALSE(worker.finished());
}

// A transactional handler's transaction takes its snapshot as it begins
// when the database's default isolation is REPEATABLE READ (or
// SERIALIZABLE), and the claim of the next job runs in that transaction,
// with the completion: a job enqueued while the handler ran is not in the
// snapshot. Its wake-up came meanwhile, and the worker used to clear it
// only after the handler, then claim nothing, and wait for its poll (30 s
// here) with the job pending.
TEST_F(WorkerTest,
       TransactionalHandlerUnderRepeatableReadMissesNoJobEnqueuedMeanwhile) {
  PgConnPtr conn = connect();
  test::exec(conn.get(), "ALTER DATABASE " + db_name() +
                             " SET default_transaction_isolation = "
                             "'repeatable read'");
  std::string q = queue("txrr");
  auto o = options({q});
  o.transactional = true;
  Gate running, finish;
  std::atomic<bool> first{true};
  Journal journal;
  BackgroundWorker worker(o, [&](const JobContext& job) {
    journal.add(job.data.get<std::string>());
    if (first.exchange(false)) {
      running.open();
      finish.wait();
    }
    return HandlerResult::complete(job.data);
  });
  ASSERT_TRUE(wait_until([&] { return worker.worker().active_queues() == 1; }));
  RedisLink redis(test::redis_url());
  enqueue(conn.get(), q, json("first"));
  ASSERT_TRUE(notify(redis, q));
  running.wait();
  ASSERT_EQ(query_value("SELECT current_setting('default_transaction_"
                        "isolation')"),
            "repeatable read");
  JobId second = enqueue(conn.get(), q, json("second"));
  ASSERT_TRUE(notify(redis, q));
  std::this_thread::sleep_for(milliseconds(100));  // the wake-up is in
  finish.open();
  EXPECT_EQ(wait_for_result(conn.get(), redis, second, milliseconds(10000)),
            json("second"))
      << "the job enqueued while the handler ran waited for the poll";
  EXPECT_EQ(journal.entries(), (std::vector<std::string>{"first", "second"}));
}

// A transactional handler that keeps its transaction idle past the
// database's idle_in_transaction_session_timeout (a call to another
// service between two statements) has its session ended by the server.
// The job runs again, as for any lost session; why the session ended is
// in the log line that says so. The server's words were never read: the
// log said only that the session ended, and the job, given up on, "no
// error was recorded".
TEST_F(WorkerTest, ASessionEndedByTheServerSaysWhyInTheLog) {
  PgConnPtr conn = connect();
  test::exec(conn.get(), "ALTER DATABASE " + db_name() +
                             " SET idle_in_transaction_session_timeout = "
                             "'200ms'");
  std::string q = queue("txidle");
  JobId id = enqueue(conn.get(), q, json("idle"));
  auto o = options({q});
  o.transactional = true;
  o.on_error = ErrorPolicy::retry;
  o.max_attempts = 1;
  std::mutex mutex;
  std::vector<std::string> lines;
  set_log_sink([&](LogLevel, std::string_view text) {
    std::lock_guard lock(mutex);
    lines.emplace_back(text);
  });
  {
    BackgroundWorker worker(o, [&](const JobContext& job) {
      PQclear(PQexec(job.db, "SELECT 1"));
      std::this_thread::sleep_for(milliseconds(600));
      return HandlerResult::complete(job.data);
    });
    EXPECT_TRUE(wait_until([&] { return state_of(id) == JobState::failed; }));
  }
  set_log_sink(nullptr);
  bool said = false;
  std::string all;
  for (const std::string& line : lines) {
    all += line + "\n";
    said = said || (test::contains(
                        line, "lost while job " + std::to_string(id.value)) &&
                    test::contains(line, "idle-in-transaction timeout"));
  }
  EXPECT_TRUE(said) << all;
}

// A transactional handler whose session the server ends (its idle
// transaction past idle_in_transaction_session_timeout here) runs again on
// a new session, and at last is given up on. The server's words are the
// job's error: recorded once the worker holds the queue again, before the
// job runs again or is given up on. The job used to say only "no error was
// recorded: the worker died or lost its connection", the reason reaching
// the log alone.
TEST_F(WorkerTest, ASessionEndedByTheServerSaysWhyOnTheJob) {
  PgConnPtr conn = connect();
  test::exec(conn.get(), "ALTER DATABASE " + db_name() +
                             " SET idle_in_transaction_session_timeout = "
                             "'200ms'");
  std::string q = queue("txidlejob");
  // The server's words come while the session is idle, or as the error of
  // the handler's next statement.
  JobId idle = enqueue(conn.get(), q, json("idle"));
  JobId then_query = enqueue(conn.get(), q, json("then a query"));
  auto o = options({q});
  o.transactional = true;
  o.on_error = ErrorPolicy::retry;
  o.max_attempts = 2;
  std::atomic<int> runs{0};
  BackgroundWorker worker(o, [&](const JobContext& job) {
    ++runs;
    PQclear(PQexec(job.db, "SELECT 1"));
    std::this_thread::sleep_for(milliseconds(600));
    if (job.data == "then a query") PQclear(PQexec(job.db, "SELECT 2"));
    return HandlerResult::complete(job.data);
  });
  ASSERT_TRUE(
      wait_until([&] { return state_of(then_query) == JobState::failed; }));
  EXPECT_EQ(runs.load(), 4);
  for (JobId id : {idle, then_query}) {
    auto job = query_job(conn.get(), id);
    EXPECT_EQ(job->state, JobState::failed);
    ASSERT_TRUE(job->error);
    EXPECT_TRUE(test::contains(*job->error, "gave up after 2 attempts"))
        << *job->error;
    EXPECT_TRUE(test::contains(*job->error, "idle-in-transaction timeout"))
        << *job->error;
    EXPECT_FALSE(test::contains(*job->error, "no error was recorded"))
        << *job->error;
  }
}

// The same for a session ended by pg_terminate_backend while a
// transactional handler runs, with max_attempts 1: the job is given up on
// at the first claim of the new session, and says why.
TEST_F(WorkerTest, ATerminatedSessionSaysWhyOnTheJob) {
  PgConnPtr conn = connect();
  std::string q = queue("txterm");
  JobId id = enqueue(conn.get(), q, json("x"));
  auto o = options({q});
  o.transactional = true;
  o.on_error = ErrorPolicy::retry;
  o.max_attempts = 1;
  std::atomic<int> backend{0};
  BackgroundWorker worker(o, [&](const JobContext& job) {
    backend = PQbackendPID(job.db);
    wait_until([&] { return job.stop.stop_requested(); }, milliseconds(30000));
    return HandlerResult::complete(job.data);
  });
  ASSERT_TRUE(wait_until([&] { return backend.load() != 0; }));
  test::exec(conn.get(), "SELECT pg_terminate_backend(" +
                             std::to_string(backend.load()) + ")");
  ASSERT_TRUE(wait_until([&] { return state_of(id) == JobState::failed; }));
  auto job = query_job(conn.get(), id);
  ASSERT_TRUE(job->error);
  EXPECT_TRUE(test::contains(*job->error, "administrator command"))
      << *job->error;
  EXPECT_FALSE(worker.finished());
}

// A handler that leaves a COPY unfinished on the worker's connection (in
// either form of handler) fails its job, which says so; nothing the COPY
// sent is kept, and the worker runs the next job. It used to say that the
// handler "ended the worker's transaction" (transactional) or "left a
// transaction open" (not).
TEST_F(WorkerTest, AHandlerThatLeavesACopyUnfinishedIsToldSo) {
  PgConnPtr conn = connect();
  test::exec(conn.get(), "CREATE TABLE copied (x int)");
  for (bool transactional : {false, true}) {
    std::vector<Job> jobs;
    ASSERT_NO_FATAL_FAILURE(run_then_fine(
        queue(transactional ? "copytx" : "copy"), transactional,
        {"COPY copied FROM STDIN", "COPY copied TO STDOUT"},
        [](const JobContext& job) {
          if (job.data != "fine") {
            PGresult* r = PQexec(job.db, job.data.get<std::string>().c_str());
            if (PQresultStatus(r) == PGRES_COPY_IN) {
              PQputCopyData(job.db, "1\n", 2);
            }
            PQclear(r);
          }
          return HandlerResult::complete("done");
        },
        jobs));
    for (const Job& job : jobs) {
      EXPECT_EQ(job.state, JobState::failed) << job.id.value;
      EXPECT_TRUE(job.error &&
                  test::contains(*job.error, "left a COPY unfinished"))
          << transactional << ": " << job.error.value_or("(no error)");
    }
  }
  EXPECT_EQ(query_value("SELECT count(*) FROM copied"), "0");
}

// A handler that sends a query and returns without reading its results
// fails its job, which says so; a transactional handler's query goes with
// its rolled-back transaction. It used to say that the handler "ended the
// worker's transaction" (transactional) or "left a transaction open"
// (not).
TEST_F(WorkerTest, AHandlerThatLeavesAQuerysResultsUnreadIsToldSo) {
  PgConnPtr conn = connect();
  test::exec(conn.get(), "CREATE TABLE effects (job bigint)");
  for (bool transactional : {false, true}) {
    std::vector<Job> jobs;
    ASSERT_NO_FATAL_FAILURE(run_then_fine(
        queue(transactional ? "unreadtx" : "unread"), transactional, {"unread"},
        [](const JobContext& job) {
          if (job.data == "unread") {
            std::string sql = "INSERT INTO effects VALUES (" +
                              std::to_string(job.id.value) + ")";
            PQsendQuery(job.db, sql.c_str());
          }
          return HandlerResult::complete("done");
        },
        jobs));
    const Job& job = jobs.at(0);
    EXPECT_EQ(job.state, JobState::failed);
    EXPECT_TRUE(job.error &&
                test::contains(*job.error, "left a query's results unread"))
        << transactional << ": " << job.error.value_or("(no error)");
    EXPECT_EQ(query_value("SELECT count(*) FROM effects WHERE job = " +
                          std::to_string(job.id.value)),
              transactional ? "0" : "1");
  }
}

// A transactional handler that runs RESET ALL resets the worker's
// settings with its own, in the worker's transaction: its error says so
// (the rollback gives them back, and the next job runs). It used to say
// that the handler "ended the worker's transaction and began another".
TEST_F(WorkerTest, ATransactionalHandlerThatRunsResetAllIsToldSo) {
  std::vector<Job> jobs;
  ASSERT_NO_FATAL_FAILURE(run_then_fine(
      queue("txreset"), true, {"RESET ALL"},
      [](const JobContext& job) {
        if (job.data != "fine") {
          PQclear(PQexec(job.db, job.data.get<std::string>().c_str()));
        }
        return HandlerResult::complete("done");
      },
      jobs));
  const Job& job = jobs.at(0);
  EXPECT_EQ(job.state, JobState::failed);
  EXPECT_TRUE(job.error && test::contains(*job.error, "RESET ALL") &&
              !test::contains(*job.error, "began another"))
      << job.error.value_or("(no error)");
}

TEST_F(WorkerTest, HandlerMayUseTheConnectionInAutocommit) {
  PgConnPtr conn = connect();
  PQclear(PQexec(conn.get(), "CREATE TABLE seen (job bigint)"));
  std::string q = queue("sql");
  JobId id = enqueue(conn.get(), q, json("x"));
  BackgroundWorker worker(options({q}), [&](const JobContext& job) {
    std::string sql =
        "INSERT INTO seen VALUES (" + std::to_string(job.id.value) + ")";
    PQclear(PQexec(job.db, sql.c_str()));
    return HandlerResult::complete();
  });
  ASSERT_TRUE(wait_until([&] { return all_completed({id}); }));
  EXPECT_EQ(query_value("SELECT count(*) FROM seen"), "1");
}

TEST_F(WorkerTest, SecondWorkerStandsByAndTakesOver) {
  PgConnPtr conn = connect();
  std::string q = queue("standby");
  Journal journal;
  Handler handler = [&](const JobContext& job) {
    journal.add(job.data.dump());
    return HandlerResult::complete();
  };
  // What status says of the queue's workers: serving, and standing by.
  auto workers = [&] {
    auto s = queue_status(conn.get(), q);
    if (s.empty()) return std::pair<std::int64_t, std::int64_t>{-1, -1};
    return std::pair{s[0].workers, s[0].standbys};
  };
  using Count = std::pair<std::int64_t, std::int64_t>;
  auto first = std::make_unique<BackgroundWorker>(options({q}), handler);
  ASSERT_TRUE(wait_until([&] { return first->worker().active_queues() == 1; }));
  EXPECT_EQ(workers(), Count(1, 0));
  BackgroundWorker second(options({q}), handler);
  EXPECT_TRUE(wait_until([&] { return workers() == Count(1, 1); }))
      << workers().first << " " << workers().second;
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(second.worker().active_queues(), 0);
  first.reset();  // stops gracefully, releasing the lock
  auto since = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until([&] { return second.worker().active_queues() == 1; },
                         milliseconds(3000)));
  EXPECT_LT(std::chrono::steady_clock::now() - since, std::chrono::seconds(1));
  EXPECT_EQ(workers(), Count(1, 0));
  JobId id = enqueue(conn.get(), q, json("after takeover"));
  RedisLink redis(test::redis_url());
  notify(redis, q);
  ASSERT_TRUE(wait_until([&] { return all_completed({id}); }));
}

// A standby's lock wait is one statement that runs for as long as the
// active worker lives, and an operator (or a script that cancels long
// queries) may cancel it with pg_cancel_backend. The standby must go on
// standing by: it used to stop, run() throwing "canceling statement due to
// user request", and the queue had no standby left.
TEST_F(WorkerTest, AStandbyOutwaitsACancelOfItsLockWait) {
  PgConnPtr conn = connect();
  std::string q = queue("standby-cancel");
  Journal journal;
  Handler handler = [&](const JobContext& job) {
    journal.add(job.data.dump());
    return HandlerResult::complete();
  };
  auto first = std::make_unique<BackgroundWorker>(options({q}), handler);
  ASSERT_TRUE(wait_until([&] { return first->worker().active_queues() == 1; }));
  BackgroundWorker second(options({q}), handler);
  const std::string waiting =
      "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
      "AND wait_event_type = 'Lock' AND wait_event = 'advisory'";
  auto rows = [&](const std::string& sql) {
    PGresult* r = PQexec(conn.get(), sql.c_str());
    int n = PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) : -1;
    PQclear(r);
    return n;
  };
  ASSERT_TRUE(wait_until([&] { return rows(waiting) == 1; }));
  EXPECT_EQ(rows("SELECT pg_cancel_backend(pid) FROM (" + waiting + ") w"), 1);
  std::this_thread::sleep_for(milliseconds(500));
  if (second.finished())
    FAIL() << "the standby stopped: " << what_run_threw(second);
  EXPECT_TRUE(wait_until([&] { return rows(waiting) == 1; }))
      << "the standby no longer waits for the queue's lock";
  first.reset();
  ASSERT_TRUE(wait_until([&] { return second.worker().active_queues() == 1; },
                         milliseconds(3000)));
  JobId id = enqueue(conn.get(), q, json("after takeover"));
  RedisLink redis(test::redis_url());
  notify(redis, q);
  EXPECT_TRUE(wait_until([&] { return all_completed({id}); }));
  EXPECT_EQ(what_run_threw(second), "");
}

// A handler that releases the session's advisory locks gives the queue to
// the standby while the worker serves on. The worker's next commit is
// stale (the standby's claim changed its jobs), and it must start over as
// a standby: before, it carried on, and every job ran on both workers.
TEST_F(WorkerTest, AWorkerWhoseHandlerDropsTheQueuesLockGivesTheQueueUp) {
  PgConnPtr conn = connect();
  std::string q = queue("unlock-all");
  constexpr int kJobs = 8;
  std::vector<JobId> ids;
  for (int i = 0; i < kJobs; ++i) {
    ids.push_back(enqueue(conn.get(), q, json(i)));
  }
  std::mutex mutex;
  std::map<std::string, int> runs;  // job data -> handler runs
  auto handler_for = [&](bool unlocks) {
    return [&, unlocks](const JobContext& job) {
      {
        std::lock_guard lock(mutex);
        ++runs[job.data.dump()];
      }
      if (unlocks) {
        PQclear(PQexec(job.db, "SELECT pg_advisory_unlock_all()"));
      }
      std::this_thread::sleep_for(milliseconds(150));
      return HandlerResult::complete();
    };
  };
  // The first worker's handler drops the lock; the standby's does not, so
  // that once it holds the queue it keeps it.
  WorkerOptions first_options = options({q});
  first_options.max_batch = 1;
  BackgroundWorker first(first_options, handler_for(true));
  ASSERT_TRUE(wait_until([&] { return first.worker().active_queues() == 1; }));
  BackgroundWorker second(options({q}), handler_for(false));
  ASSERT_TRUE(
      wait_until([&] { return all_completed(ids); }, std::chrono::seconds(20)));
  std::lock_guard lock(mutex);
  int total = 0;
  for (const auto& [data, n] : runs) total += n;
  EXPECT_EQ(runs.size(), static_cast<std::size_t>(kJobs));
  // The job or two in flight when the lock went run twice; no more.
  EXPECT_LE(total, kJobs + 2) << "the first worker served on";
  EXPECT_EQ(first.worker().active_queues(), 0);
}

// A statement_timeout (or lock_timeout) on the role or the database, common
// in production, must not end a standby's wait for the queue: it used to
// exit with "canceling statement due to statement timeout", leaving the
// queue without a standby. The handler's SQL still runs under the setting.
TEST_F(WorkerTest, AStandbyOutwaitsTheDatabasesStatementTimeout) {
  PgConnPtr conn = connect();
  std::string q = queue("standby-timeout");
  test::exec(conn.get(), "ALTER DATABASE \"" + db_name() +
                             "\" SET statement_timeout = '300ms'");
  test::exec(conn.get(),
             "ALTER DATABASE \"" + db_name() + "\" SET lock_timeout = '300ms'");
  Journal journal;
  Handler handler = [&](const JobContext& job) {
    PGresult* r = PQexec(job.db, "SELECT pg_sleep(1)");
    bool timed_out = PQresultStatus(r) != PGRES_TUPLES_OK;
    PQclear(r);
    journal.add(job.data.dump() + (timed_out ? " timed out" : " slept"));
    return HandlerResult::complete();
  };
  auto first = std::make_unique<BackgroundWorker>(options({q}), handler);
  ASSERT_TRUE(wait_until([&] { return first->worker().active_queues() == 1; }));
  BackgroundWorker second(options({q}), handler);
  std::this_thread::sleep_for(milliseconds(1500));
  EXPECT_FALSE(second.finished()) << "the standby gave up";
  first.reset();
  ASSERT_TRUE(wait_until([&] { return second.worker().active_queues() == 1; },
                         milliseconds(3000)));
  JobId id = enqueue(conn.get(), q, json("after takeover"));
  RedisLink redis(test::redis_url());
  notify(redis, q);
  ASSERT_TRUE(wait_until([&] { return all_completed({id}); }));
  EXPECT_EQ(journal.entries(),
            (std::vector<std::string>{"\"after takeover\" timed out"}));
}

// A lock_timeout or statement_timeout set on the database (common in
// production, for the applications' own statements) must not end the worker
// when its claim or its commit waits for an operator's transaction: here a
// caller's transaction that cancels the job behind the running one holds
// that job's row and the queue's progress row for a second. The worker
// used to stop, run() throwing "canceling statement due to lock timeout",
// the running job's completion lost with it.
TEST_F(WorkerTest, AnOperatorsOpenTransactionOutwaitsTheDatabasesTimeouts) {
  PgConnPtr conn = connect();
  test::exec(conn.get(), "ALTER DATABASE \"" + db_name() +
                             "\" SET statement_timeout = '300ms'");
  test::exec(conn.get(),
             "ALTER DATABASE \"" + db_name() + "\" SET lock_timeout = '200ms'");
  outwait_an_operator(queue("operator-wait"), [](PGconn*) {
    std::this_thread::sleep_for(milliseconds(1000));
  });
}

// An operator's pg_cancel_backend of the worker's commit, waiting behind
// the operator's own open transaction (twice): the commit runs again in
// the same session, the queue kept and no job run twice. (Before: 57014
// stopped the worker, exit 1, for the gentlest tool an operator has.)
TEST_F(WorkerTest, AnOperatorsCancelOfTheWorkersCommitIsRunAgain) {
  outwait_an_operator(queue("operator-cancel"), [&](PGconn* op) {
    std::string waiting =
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> " +
        std::to_string(PQbackendPID(op));
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(wait_until([&] { return !query_value(waiting).empty(); }));
      EXPECT_EQ(
          query_value("SELECT pg_cancel_backend(pid) FROM (" + waiting + ") w"),
          "t");
    }
    ASSERT_TRUE(wait_until([&] { return !query_value(waiting).empty(); }));
  });
}

// PostgreSQL's notices and warnings on a worker's session (the handler's
// own SQL) reach the log, one line each, naming the queue. They used to go
// to stderr raw, several lines and unprefixed.
TEST_F(WorkerTest, NoticesOnTheWorkersSessionAreLoggedAsOneLine) {
  PgConnPtr conn = connect();
  std::string q = queue("notices");
  JobId id = enqueue(conn.get(), q, json(1));
  std::mutex mutex;
  std::vector<std::pair<LogLevel, std::string>> lines;
  set_log_sink([&](LogLevel level, std::string_view text) {
    std::lock_guard lock(mutex);
    lines.emplace_back(level, std::string(text));
  });
  {
    BackgroundWorker worker(options({q}), [](const JobContext& job) {
      PQclear(
          PQexec(job.db, "DO $$ BEGIN RAISE WARNING E'two\\nlines'; END $$"));
      return HandlerResult::complete();
    });
    EXPECT_TRUE(wait_until([&] { return all_completed({id}); }));
  }
  set_log_sink(nullptr);
  std::string expected = "queue \"" + q + "\": postgres: WARNING: two lines";
  bool found = false;
  for (const auto& [level, text] : lines) {
    if (text == expected) {
      found = true;
      EXPECT_EQ(level, LogLevel::warning);
    }
  }
  EXPECT_TRUE(found) << "no line \"" << expected << "\" in the log";
}

// A spent job (max_attempts used up) claimed in a batch is still pending
// until its failure commits, and an operator may cancel it meanwhile: that
// outcome does not apply, yet the session still holds the queue's lock and
// must serve on, not start over as if another worker had taken the queue.
TEST_F(WorkerTest, ASpentJobCancelledMeanwhileIsNoReasonToLetTheQueueGo) {
  PgConnPtr conn = connect();
  std::string q = queue("spent-cancel");
  JobId first = enqueue(conn.get(), q, json("first"));
  JobId spent = enqueue(conn.get(), q, json("spent"));
  test::exec(conn.get(), "UPDATE pgjobq.jobs SET attempts = 3 WHERE id = " +
                             std::to_string(spent.value));
  std::mutex mutex;
  std::vector<std::string> lines;
  set_log_sink([&](LogLevel, std::string_view text) {
    std::lock_guard lock(mutex);
    lines.emplace_back(text);
  });
  auto o = options({q});
  o.max_attempts = 3;
  o.max_commit_delay = milliseconds(200);  // claims both in one batch
  {
    BackgroundWorker worker(o, [&](const JobContext& job) {
      if (job.data == "first") {
        PgConnPtr operator_conn = connect();
        cancel(operator_conn.get(), spent);
      }
      return HandlerResult::complete();
    });
    ASSERT_TRUE(wait_until([&] { return all_completed({first}); }));
    JobId after = enqueue(conn.get(), q, json("after"));
    RedisLink redis(test::redis_url());
    notify(redis, q);
    EXPECT_TRUE(wait_until([&] { return all_completed({after}); }));
  }
  set_log_sink(nullptr);
  EXPECT_EQ(state_of(spent), JobState::cancelled);
  std::lock_guard lock(mutex);
  for (const std::string& line : lines) {
    EXPECT_FALSE(test::contains(line, "reconnecting")) << line;
  }
}

TEST_F(WorkerTest, StopLetsTheRunningJobFinish) {
  PgConnPtr conn = connect();
  std::string q = queue("graceful");
  JobId running = enqueue(conn.get(), q, json("long"));
  JobId waiting = enqueue(conn.get(), q, json("next"));
  Gate gate;
  std::atomic<bool> started{false};
  BackgroundWorker worker(options({q}), [&](const JobContext& job) {
    if (job.data == "long") {
      started = true;
      gate.wait();
    }
    return HandlerResult::complete(job.data);
  });
  ASSERT_TRUE(wait_until([&] { return started.load(); }));
  worker.stop();
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_FALSE(worker.finished()) << "stop waits for the running job";
  gate.open();
  EXPECT_FALSE(worker.wait_for_exit());
  EXPECT_EQ(state_of(running), JobState::completed);
  EXPECT_EQ(state_of(waiting), JobState::pending);
  EXPECT_EQ(query_job(conn.get(), waiting)->attempts, 0);
}

TEST_F(WorkerTest, SeveralQueuesRunSideBySideEachInItsOwnOrder) {
  PgConnPtr conn = connect();
  std::vector<std::string> queues;
  for (int i = 0; i < 4; ++i) queues.push_back(queue("side"));
  std::vector<JobId> ids;
  for (int n = 0; n < 50; ++n) {
    for (const auto& q : queues)
      ids.push_back(enqueue(conn.get(), q, json{{"n", n}}));
  }
  std::mutex m;
  std::map<std::string, std::vector<int>> seen;
  std::atomic<int> concurrent{0}, max_concurrent{0};
  BackgroundWorker worker(options(queues), [&](const JobContext& job) {
    int now = ++concurrent;
    int expected = max_concurrent.load();
    while (now > expected &&
           !max_concurrent.compare_exchange_weak(expected, now)) {
    }
    std::this_thread::sleep_for(milliseconds(1));
    {
      std::lock_guard lock(m);
      seen[std::string(job.queue)].push_back(job.data["n"].get<int>());
    }
    --concurrent;
    return HandlerResult::complete();
  });
  ASSERT_TRUE(wait_until([&] { return all_completed(ids); }));
  for (const auto& q : queues) {
    ASSERT_EQ(seen[q].size(), 50u);
    for (int n = 0; n < 50; ++n)
      EXPECT_EQ(seen[q][static_cast<std::size_t>(n)], n);
  }
  EXPECT_GT(max_concurrent.load(), 1) << "queues ran side by side";
}

TEST_F(WorkerTest, KeepsWorkingByPollingWhileRedisIsDown) {
  test::RedisServer redis_server;
  PgConnPtr conn = connect();
  std::string q = queue("noredis");
  auto o = options({q});
  o.redis_url = redis_server.url();
  o.poll_interval = std::chrono::seconds(120);
  Journal journal;
  BackgroundWorker worker(o, [&](const JobContext& job) {
    journal.add(job.data.dump());
    return HandlerResult::complete();
  });
  ASSERT_TRUE(wait_until([&] { return worker.worker().active_queues() == 1; }));
  redis_server.stop();
  JobId a = enqueue(conn.get(), q, json("while down"));
  ASSERT_TRUE(
      wait_until([&] { return all_completed({a}); }, milliseconds(5000)))
      << "polls every second while Redis is down";
  redis_server.start();
  // Back up: the subscription returns and wake-ups are fast again.
  RedisLink link(redis_server.url());
  JobId b;
  ASSERT_TRUE(wait_until([&] {
    static bool sent = false;
    if (!sent) {
      b = enqueue(conn.get(), q, json("after restart"));
      sent = true;
    }
    notify(link, q);
    return all_completed({b});
  }));
  EXPECT_FALSE(worker.finished());
}

// A worker's Redis connections do not grow with its queues: one
// subscription, and at most four publishing connections its runners share.
// (Each runner had one of its own: 300 queues took 301 connections.)
TEST_F(WorkerTest, ManyQueuesShareAFewRedisConnections) {
  test::RedisServer redis_server;
  PgConnPtr conn = connect();
  std::vector<std::string> queues;
  for (int i = 0; i < 12; ++i) queues.push_back(queue("share"));
  auto o = options(queues);
  o.redis_url = redis_server.url();
  BackgroundWorker worker(o, [](const JobContext& job) {
    return HandlerResult::complete(json{{"queue", job.queue}});
  });
  ASSERT_TRUE(
      wait_until([&] { return worker.worker().active_queues() == 12; }));
  RedisLink link(redis_server.url());
  std::vector<JobId> ids;
  for (const std::string& q : queues) {
    ids.push_back(enqueue(conn.get(), q, json::object()));
    notify(link, q);
  }
  // Every queue published a result, each waiter seeing its own.
  for (std::size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(wait_for_result(conn.get(), link, ids[i], milliseconds(10000)),
              (json{{"queue", queues[i]}}));
  }
  redis::Connection admin = redis::Connection::open(
      redis::parse_url(redis_server.url()), milliseconds(2000));
  std::string_view list[] = {"CLIENT", "LIST"};
  redis::ReplyPtr clients = admin.command(list);
  ASSERT_EQ(clients->type, REDIS_REPLY_STRING);
  std::string text(clients->str, clients->len);
  std::size_t connections = 0;
  for (char c : text) connections += c == '\n';
  // The worker's (1 + 4), the link's (a publisher, maybe a subscriber),
  // this one.
  EXPECT_LE(connections, 8u) << text;
  EXPECT_GE(connections, 3u) << text;
  EXPECT_FALSE(worker.finished());
}

TEST_F(WorkerTest, SurvivesItsConnectionBeingTerminated) {
  PgConnPtr conn = connect();
  std::string q = queue("terminated");
  Journal journal;
  std::atomic<int> handled{0};
  BackgroundWorker worker(options({q}), [&](const JobContext& job) {
    journal.add(job.data.dump());
    ++handled;
    std::this_thread::sleep_for(milliseconds(2));
    return HandlerResult::complete(job.data);
  });
  std::vector<JobId> ids;
  RedisLink redis(test::redis_url());
  for (int i = 0; i < 300; ++i) {
    ids.push_back(enqueue(conn.get(), q, json(i)));
    if (i % 50 == 25) {
      // Kill the worker's session (it holds the queue's advisory lock).
      PQclear(PQexec(conn.get(),
                     "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE "
                     "locktype = 'advisory' AND classid = 1886220545 AND "
                     "database = (SELECT oid FROM pg_database WHERE datname = "
                     "current_database())"));
    }
    notify(redis, q);
  }
  ASSERT_TRUE(
      wait_until([&] { return all_completed(ids); }, milliseconds(30000)));
  // Every job completed exactly once in the database, in order; a job whose
  // completion was lost with the connection may have run twice.
  auto seen = journal.entries();
  std::vector<int> order;
  for (const auto& s : seen) {
    int n = std::stoi(s);
    if (order.empty() || n > order.back())
      order.push_back(n);
    else
      EXPECT_LE(order.back() - n, 64)
          << "a re-run goes back only to the uncommitted batch";
  }
  EXPECT_EQ(order.size(), 300u);
  EXPECT_EQ(
      query_value("SELECT count(*) FROM pgjobq.jobs WHERE state = 'completed'"),
      "300");
  EXPECT_EQ(queue_status(conn.get(), q)[0].completed, 300);
}

TEST_F(WorkerTest, DeepBacklogIsProcessedInOrderInBatches) {
  PgConnPtr conn = connect();
  std::string q = queue("deep");
  std::vector<json> batch;
  for (int i = 0; i < 5000; ++i) batch.push_back(json(i));
  auto ids = enqueue_many(conn.get(), q, batch, {.limit = 100000});
  ASSERT_TRUE(ids);
  std::atomic<int> next{0};
  std::atomic<bool> in_order{true};
  BackgroundWorker worker(options({q}), [&](const JobContext& job) {
    if (job.data.get<int>() != next++) in_order = false;
    return HandlerResult::complete(job.data);
  });
  ASSERT_TRUE(wait_until(
      [&] { return queue_status(conn.get(), q)[0].completed == 5000; },
      milliseconds(60000)));
  EXPECT_TRUE(in_order.load());
  EXPECT_EQ(next.load(), 5000);
  EXPECT_EQ(query_value("SELECT count(*) FROM pgjobq.jobs WHERE attempts <> 1"),
            "0");
  EXPECT_EQ(query_job(conn.get(), ids->back())->result, json(4999));
}

// Jobs arriving one by one, faster than the commit delay: a runner that
// has emptied the queue gathers the next arrivals for half the delay and
// commits the outcomes it holds with their claim, so the worker needs far
// fewer transactions than there are jobs; and no outcome waits much longer
// than the delay after its handler returned.
TEST_F(WorkerTest, ShallowQueueGathersArrivingJobsIntoFewTransactions) {
  PgConnPtr conn = connect();
  std::string q = queue("gather");
  auto o = options({q});
  o.max_commit_delay = milliseconds(200);
  std::mutex mutex;
  std::map<int, Clock::time_point> returned;
  BackgroundWorker worker(o, [&](const JobContext& job) {
    std::lock_guard lock(mutex);
    returned[job.data.get<int>()] = Clock::now();
    return HandlerResult::complete(job.data);
  });
  ASSERT_TRUE(wait_until([&] { return worker.worker().active_queues() == 1; }));
  RedisLink redis(test::redis_url());
  constexpr int kJobs = 80;
  std::vector<JobId> ids;
  for (int i = 0; i < kJobs; ++i) {
    ids.push_back(enqueue(conn.get(), q, json(i)));
    notify(redis, q);
    std::this_thread::sleep_for(milliseconds(2));
  }
  ASSERT_TRUE(wait_until([&] { return all_completed(ids); }));
  // A finished job's row was last written by the transaction that
  // recorded its outcome. Committing each outcome with the claim of the
  // very next job (or on its own) would take about one per job.
  int outcome_transactions = std::stoi(
      query_value("SELECT count(DISTINCT j.xmin::text) FROM pgjobq.jobs j "
                  "JOIN pgjobq.queues q ON q.id = j.queue_id WHERE q.name = '" +
                  q + "'"));
  EXPECT_LE(outcome_transactions, kJobs / 4);
  std::lock_guard lock(mutex);
  for (int i = 0; i < kJobs; ++i) {
    auto job = query_job(conn.get(), ids[static_cast<std::size_t>(i)]);
    ASSERT_TRUE(job->finished_at);
    EXPECT_LT(*job->finished_at - returned.at(i),
              o.max_commit_delay + milliseconds(500))
        << "job " << i;
  }
}

// The worker's statements are prepared once per session and soon run on a
// cached generic plan, made from whatever PostgreSQL knew at the time. A
// worker that starts on a tiny table and then meets a deep backlog must
// still claim and complete each job with index seeks, not with a scan of
// the whole backlog (a plan made for a tiny table did that: 10 ms a claim
// behind 20,000 jobs); and they must be planned once, not at every call.
// Measured by PostgreSQL itself, on the worker's own session: the handler
// of a probe job at the head of the backlog reads the plan counts of the
// worker's prepared statements, then runs its claim and completion (rolled
// back) and counts the buffers they touch.
TEST_F(WorkerTest, ClaimAndCompletionStaySeeksWhenTheBacklogOutgrowsThePlans) {
  PgConnPtr conn = connect();
  std::string q = queue("plans");
  std::map<std::string, int> buffers;  // statement -> buffers it touched
  std::string plans;  // "name generic custom" of the worker's statements
  std::map<std::string, std::string> explained;  // for failure messages
  std::string error;
  BackgroundWorker worker(options({q}), [&](const JobContext& job) {
    if (job.data != "probe") return HandlerResult::complete();
    auto value = [&](const std::string& sql) {
      PGresult* r = PQexec(job.db, sql.c_str());
      std::string v;
      if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        v = PQgetvalue(r, 0, 0);
      } else {
        error += sql + ": " + PQresultErrorMessage(r);
      }
      PQclear(r);
      return v;
    };
    std::string id = std::to_string(job.id.value);
    std::string queue_id =
        value("SELECT queue_id FROM pgjobq.jobs WHERE id = " + id);
    std::string position =
        value("SELECT position FROM pgjobq.jobs WHERE id = " + id);
    std::string next =
        value("SELECT min(id) FROM pgjobq.jobs WHERE queue_id = " + queue_id +
              " AND position > " + position);
    // Planned once for the session, never again per call.
    plans = value(
        "SELECT string_agg(name || ' ' || generic_plans::text || ' ' || "
        "custom_plans::text, ', ' ORDER BY name) FROM pg_prepared_statements "
        "WHERE name IN ('pgjobq_claim_jobs', 'pgjobq_finish_jobs')");
    std::map<std::string, std::string> runs = {
        {"claim", "pgjobq_claim_jobs(" + queue_id + ", " + position +
                      ", 1, 25, current_setting('pgjobq.lock_mark'))"},
        {"finish", "pgjobq_finish_jobs(" + queue_id + ", '[{\"id\": " + next +
                       ", \"attempt\": 0, \"state\": \"completed\"}]')"}};
    // Under the settings the worker runs them with: its generic plans.
    PQclear(PQexec(job.db, "BEGIN"));
    value("EXECUTE pgjobq_seek_plans");
    for (const auto& [name, call] : runs) {
      json plan = json::parse(
          value("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE " + call));
      buffers[name] = plan[0]["Plan"]["Shared Hit Blocks"].get<int>() +
                      plan[0]["Plan"]["Shared Read Blocks"].get<int>();
      explained[name] = plan.dump(1);
    }
    PQclear(PQexec(job.db, "ROLLBACK"));
    return HandlerResult::complete();
  });
  RedisLink redis(test::redis_url());
  // Plans made on a tiny table: a few dozen jobs, one at a time, are more
  // than the five runs after which PostgreSQL settles on a generic plan.
  for (int i = 0; i < 30; ++i) {
    JobId id = enqueue(conn.get(), q, json(i));
    notify(redis, q);
    ASSERT_TRUE(
        wait_until([&] { return state_of(id) == JobState::completed; }));
  }
  // The probe, with 20,000 jobs behind it.
  PQclear(PQexec(conn.get(), "BEGIN"));
  JobId probe = enqueue(conn.get(), q, json("probe"));
  std::vector<json> backlog(20000, json("later"));
  ASSERT_TRUE(enqueue_many(conn.get(), q, backlog, {.limit = 100000}));
  PQclear(PQexec(conn.get(), "COMMIT"));
  notify(redis, q);
  ASSERT_TRUE(wait_until([&] { return state_of(probe) == JobState::completed; },
                         milliseconds(30000)));
  worker.join();
  EXPECT_EQ(error, "");
  ASSERT_EQ(buffers.size(), 2u);
  // A seek touches a handful of buffers; a scan of the backlog, hundreds.
  EXPECT_LT(buffers["claim"], 100)
      << "claiming one job behind 20,000: " << explained["claim"];
  EXPECT_LT(buffers["finish"], 100)
      << "completing one job behind 20,000: " << explained["finish"];
  // Dozens of claims and completions, all on the one generic plan each.
  EXPECT_TRUE(
      std::regex_match(plans, std::regex("pgjobq_claim_jobs [1-9][0-9]* 0, "
                                         "pgjobq_finish_jobs [1-9][0-9]* 0")))
      << "generic and custom plans: " << plans;
}

TEST_F(WorkerTest, RefusesBadOptions) {
  Handler ok = [](const JobContext&) { return HandlerResult::complete(); };
  auto o = options({"a", "a"});
  EXPECT_THROW(Worker(o, ok), InvalidInput);
  EXPECT_THROW(Worker(options({}), ok), InvalidInput);
  EXPECT_THROW(Worker(options({"bad name"}), ok), InvalidInput);
  o = options({"a"});
  o.max_attempts = 0;
  EXPECT_THROW(Worker(o, ok), InvalidInput);
  o = options({"a"});
  o.redis_url = "http://nope";
  EXPECT_THROW(Worker(o, ok), InvalidInput);
  o = options({"a"});
  o.dead_session_timeout = milliseconds(500);  // keepalives count seconds
  EXPECT_THROW(Worker(o, ok), InvalidInput);
  o.dead_session_timeout = milliseconds(1000);
  EXPECT_NO_THROW(Worker(o, ok));
  // Durations no deadline can be computed from without overflowing.
  o = options({"a"});
  o.retry_delay = milliseconds(-1);
  EXPECT_THROW(Worker(o, ok), InvalidInput);
  o = options({"a"});
  o.job_timeout = milliseconds::max();
  EXPECT_THROW(Worker(o, ok), InvalidInput);
  o = options({"a"});
  o.max_commit_delay = std::chrono::microseconds::max();
  EXPECT_THROW(Worker(o, ok), InvalidInput);
  o = options({"a"});
  o.timeout_grace = std::chrono::hours(24 * 365 * 11);
  EXPECT_THROW(Worker(o, ok), InvalidInput);
  // Half of it is the keepalives' idle time, which Linux caps at 32767 s:
  // a day would be accepted here and then refused by every connect.
  o = options({"a"});
  o.dead_session_timeout = std::chrono::hours(19);
  EXPECT_THROW(Worker(o, ok), InvalidInput);
}

// A URL libpq cannot parse is a mistake in the options like any other:
// refused at construction, not a ConnectionError once run() starts, and
// without its password.
TEST_F(WorkerTest, RefusesAMalformedDatabaseUrlWithoutShowingItsPassword) {
  Handler ok = [](const JobContext&) { return HandlerResult::complete(); };
  auto refused = [&](const std::string& url, const std::string& secret) {
    auto o = options({"a"});
    o.db_url = url;
    try {
      Worker worker(o, ok);
      ADD_FAILURE() << "accepted " << url;
    } catch (const InvalidInput& e) {
      EXPECT_TRUE(test::contains(e.what(), "invalid database URL")) << e.what();
      EXPECT_FALSE(test::contains(e.what(), secret)) << e.what();
    }
  };
  refused("postgresql://app:pa%zzSECRET1@127.0.0.1/app", "SECRET1");
  refused("postgresql://127.0.0.1/app?password=SEC%zzRET18", "RET18");
  refused("host=127.0.0.1 password='it''SECRET66'", "SECRET66");
  refused("postgresql://127.0.0.1/app?no_such_option=1", "no secret");
  // Syntax only: a port no server listens on, or a plain database name,
  // is for run() to find out.
  auto o = options({"a"});
  o.db_url = "postgresql://127.0.0.1:1/app";
  EXPECT_NO_THROW(Worker(o, ok));
  o.db_url = "some_database";
  EXPECT_NO_THROW(Worker(o, ok));
  // An empty URL means DATABASE_URL, checked the same way.
  std::optional<std::string> saved;
  if (const char* env = std::getenv("DATABASE_URL")) saved = env;
  setenv("DATABASE_URL", "postgresql://app:pa%zzSECRET2@127.0.0.1/app", 1);
  refused("", "SECRET2");
  if (saved) {
    setenv("DATABASE_URL", saved->c_str(), 1);
  } else {
    unsetenv("DATABASE_URL");
  }
}

TEST_F(WorkerTest, TheLongestDeadSessionTimeoutStillConnects) {
  PgConnPtr conn = connect();
  std::string q = queue("long-dead");
  JobId id = enqueue(conn.get(), q, json(1));
  auto o = options({q});
  o.dead_session_timeout = std::chrono::hours(18);
  BackgroundWorker worker(o, [](const JobContext& job) {
    return HandlerResult::complete(job.data);
  });
  EXPECT_TRUE(wait_until([&] {
    return worker.finished() || state_of(id) == JobState::completed;
  }));
  worker.join();
  EXPECT_EQ(worker.wait_for_exit(), nullptr);
  EXPECT_EQ(state_of(id), JobState::completed);
}

TEST_F(WorkerTest, RunCalledFromTwoThreadsAtOnceRunsOnce) {
  // The second call is refused with an Error, even when both come at
  // once; before, both could pass the check and the process aborted
  // (std::terminate: a second subscriber thread over a running one).
  Handler ok = [](const JobContext&) { return HandlerResult::complete(); };
  // Five threads a round: under the sanitizers 5,000 rounds took 86 s, so
  // fewer there; the plain build keeps the rounds that caught the race.
  const int rounds = test::kSanitized ? 500 : 5000;
  for (int i = 0; i < rounds; ++i) {
    Worker worker(options({queue()}), ok);
    worker.stop();  // each run() returns at once, connecting nothing
    std::atomic<int> refused{0};
    std::atomic<bool> go{false};
    auto call = [&] {
      while (!go.load()) {
      }
      try {
        worker.run();
      } catch (const Error&) {
        ++refused;
      }
    };
    std::thread first(call), second(call);
    go = true;
    first.join();
    second.join();
    ASSERT_EQ(refused.load(), 1) << "round " << i;
  }
}

TEST_F(WorkerTest, AHugeRetryDelayStaysHugeAfterManyAttempts) {
  // retry_delay doubled per attempt (30 doublings at most) overflowed the
  // milliseconds count and became a negative delay: no wait at all, and
  // the job was retried in a tight loop until max_attempts.
  PgConnPtr conn = connect();
  std::string q = queue("huge-retry");
  JobId id = enqueue(conn.get(), q, json("bad"));
  query_value("UPDATE pgjobq.jobs SET attempts = 40 WHERE id = " +
              std::to_string(id.value));
  auto o = options({q});
  o.on_error = ErrorPolicy::retry;
  o.max_attempts = 1000;
  o.retry_delay = std::chrono::hours(24 * 365);
  o.max_retry_delay = std::chrono::hours(24 * 365 * 10);
  std::atomic<int> runs{0};
  BackgroundWorker worker(o, [&](const JobContext&) -> HandlerResult {
    ++runs;
    throw std::runtime_error("no");
  });
  ASSERT_TRUE(wait_until([&] { return runs.load() >= 1; }));
  std::this_thread::sleep_for(milliseconds(1000));
  EXPECT_EQ(runs.load(), 1);
  worker.join();  // the stop cuts the wait short
  EXPECT_EQ(worker.wait_for_exit(), nullptr);
  EXPECT_EQ(query_job(conn.get(), id)->attempts, 41);
  EXPECT_EQ(state_of(id), JobState::pending);
}

TEST_F(WorkerTest, AHugeCommitDelayStillClaimsInBatches) {
  // max_commit_delay over the handlers' run time sizes the claims: ten
  // years over microseconds overflowed an int, which came out as a claim
  // of one job at a time (and undefined behaviour).
  PgConnPtr conn = connect();
  std::string q = queue("huge-delay");
  JobId first = enqueue(conn.get(), q, json(1));
  JobId second = enqueue(conn.get(), q, json(2));
  auto o = options({q});
  o.max_commit_delay = std::chrono::hours(24 * 365 * 10);
  std::atomic<bool> second_ran{false};
  std::optional<JobState> second_while_first_ran;
  BackgroundWorker worker(o, [&](const JobContext& job) {
    if (job.id == first) second_while_first_ran = state_of(second);
    if (job.id == second) second_ran = true;
    return HandlerResult::complete();
  });
  ASSERT_TRUE(wait_until([&] { return second_ran.load(); }));
  EXPECT_EQ(second_while_first_ran, JobState::running)
      << "claimed with the first job";
  worker.join();  // commits the held outcomes
  EXPECT_EQ(worker.wait_for_exit(), nullptr);
  EXPECT_TRUE(all_completed({first, second}));
}

TEST_F(WorkerTest, ShardQueueIsStableAndSpreadsKeys) {
  EXPECT_EQ(shard_queue("orders", "customer-42", 16),
            shard_queue("orders", "customer-42", 16));
  std::set<std::string> used;
  for (int i = 0; i < 1000; ++i)
    used.insert(shard_queue("orders", "k" + std::to_string(i), 16));
  EXPECT_EQ(used.size(), 16u);
  EXPECT_EQ(shard_queue("orders", "", 1), "orders:0");
  EXPECT_THROW(shard_queue("orders", "k", 0), InvalidInput);
  // Whether a base fits does not depend on the key: "<126 chars>:99" is
  // too long, even for a key that lands on shard 7.
  std::string long_base(126, 'b');
  for (const char* key : {"a", "b", "customer-42"}) {
    EXPECT_THROW(shard_queue(long_base, key, 100), InvalidInput) << key;
  }
  EXPECT_NO_THROW(shard_queue(long_base, "a", 10));
  // FNV-1a 64 is fixed; the published test vector for "a" is
  // 0xaf63dc4c8601ec8c, which is 12 modulo 16. Shards must never move
  // between releases.
  EXPECT_EQ(shard_queue("orders", "a", 16), "orders:12");
  EXPECT_EQ(shard_queue("orders", "customer-42", 16), "orders:14");
}

}  // namespace
}  // namespace pgjobq

namespace pgjobq {
namespace {

// Loudly, and naming the queue: each queue takes a connection of its own,
// so a connection limit may run out at any one of them.
TEST_F(WorkerTest, UnreachableDatabaseAtStartIsAnError) {
  std::string q = queue();
  auto o = options({q});
  o.db_url = "postgresql://postgres:pw@127.0.0.1:1/nowhere";
  BackgroundWorker worker(
      o, [](const JobContext&) { return HandlerResult::complete(); });
  std::exception_ptr error = worker.wait_for_exit();
  ASSERT_TRUE(error);
  try {
    std::rethrow_exception(error);
  } catch (const ConnectionError& e) {
    EXPECT_TRUE(test::contains(e.what(), "queue \"" + q + "\": cannot connect"))
        << e.what();
  }
}

// What a worker's run() threw: "ConnectionError: ...", "DatabaseError:
// ...", "other: ..."; "" if it returned.
std::string exit_error(BackgroundWorker& worker) {
  std::exception_ptr error = worker.wait_for_exit();
  if (!error) return "";
  try {
    std::rethrow_exception(error);
  } catch (const ConnectionError& e) {
    return std::string("ConnectionError: ") + e.what();
  } catch (const DatabaseError& e) {
    return std::string("DatabaseError: ") + e.what();
  } catch (const std::exception& e) {
    return std::string("other: ") + e.what();
  }
}

// A new binary on a database not yet migrated to its schema: one line that
// says what to do, before any job is claimed (its statements might not
// fail at all: 005 changed what insert_jobs does, not its signature).
TEST_F(WorkerTest, ASchemaOlderThanTheWorkerOrNoneIsAnErrorSayingToMigrate) {
  PgConnPtr conn = connect();
  std::string q = queue();
  auto handler = [](const JobContext&) { return HandlerResult::complete(); };
  int older = schema_version() - 1;
  test::schema_at_version(conn.get(), older);
  {
    BackgroundWorker worker(options({q}), handler);
    std::string error = exit_error(worker);
    EXPECT_TRUE(test::contains(
        error,
        "DatabaseError: queue \"" + q +
            "\": the database's pgjobq schema is at version " +
            std::to_string(older) + ", older than this pgjobq needs (version " +
            std::to_string(schema_version()) + "): run `pgjobq migrate`"))
        << error;
  }
  test::exec(conn.get(), "SET client_min_messages = warning");
  test::exec(conn.get(), "DROP SCHEMA pgjobq CASCADE");
  {
    BackgroundWorker worker(options({q}), handler);
    std::string error = exit_error(worker);
    EXPECT_TRUE(test::contains(error, "DatabaseError: queue \"" + q +
                                          "\": the database has no pgjobq "
                                          "schema: run `pgjobq migrate`"))
        << error;
  }
}

// The table of versions emptied (a schema-only restore): not "version 0".
TEST_F(WorkerTest, AnEmptyTableOfVersionsIsAnErrorSayingSo) {
  PgConnPtr conn = connect();
  std::string q = queue();
  test::exec(conn.get(), "DELETE FROM pgjobq.schema_migrations");
  BackgroundWorker worker(options({q}), [](const JobContext&) {
    return HandlerResult::complete();
  });
  std::string error = exit_error(worker);
  EXPECT_TRUE(test::contains(error, "DatabaseError: queue \"" + q +
                                        "\": the database's pgjobq schema "
                                        "records no version"))
      << error;
}

// Upgrading: migrate first, then roll the binaries out. Until then the old
// workers serve on the newer schema.
TEST_F(WorkerTest, ASchemaNewerThanTheWorkerIsServed) {
  PgConnPtr conn = connect();
  std::string q = queue();
  test::exec(conn.get(),
             "INSERT INTO pgjobq.schema_migrations (version, name) VALUES (" +
                 std::to_string(schema_version() + 1) + ", 'from_a_newer')");
  JobId id = enqueue(conn.get(), q, json("old worker"));
  BackgroundWorker worker(options({q}), [](const JobContext& job) {
    return HandlerResult::complete(job.data);
  });
  RedisLink redis(test::redis_url());
  EXPECT_EQ(wait_for_result(conn.get(), redis, id, milliseconds(10000)),
            json("old worker"));
}

// A worker must write. A read-only session at start (here the database's
// default_transaction_read_only; a hot standby is the same, HostileTest)
// is an error naming the cause; one met on reconnecting (a failover that
// brought the worker back to its old primary, now fenced or a standby) is
// waited out like any outage, and the queue served once it is over.
TEST_F(WorkerTest, AReadOnlySessionIsRefusedAtStartAndWaitedOutOnceServing) {
  PgConnPtr conn = connect();
  std::string q = queue();
  auto echo = [](const JobContext& job) {
    return HandlerResult::complete(job.data);
  };
  test::exec(conn.get(), "ALTER DATABASE " + db_name() +
                             " SET default_transaction_read_only = on");
  {
    BackgroundWorker worker(options({q}), echo);
    std::string error = exit_error(worker);
    EXPECT_TRUE(test::contains(error, "ConnectionError: queue \"" + q +
                                          "\": the PostgreSQL session is "
                                          "read-only"))
        << error;
  }
  test::exec(conn.get(), "ALTER DATABASE " + db_name() +
                             " RESET default_transaction_read_only");
  BackgroundWorker worker(options({q}), echo);
  RedisLink redis(test::redis_url());
  JobId first = enqueue(conn.get(), q, json(1));
  notify(redis, q);
  EXPECT_EQ(wait_for_result(conn.get(), redis, first, milliseconds(10000)),
            json(1));
  // Fenced: new sessions read-only; the worker's session ended.
  test::exec(conn.get(), "ALTER DATABASE " + db_name() +
                             " SET default_transaction_read_only = on");
  test::exec(conn.get(),
             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
             "WHERE datname = current_database() AND pid <> pg_backend_pid()");
  // The wake-up makes the idle worker find its session gone; it
  // reconnects into read-only sessions, and waits.
  JobId second = enqueue(conn.get(), q, json(2));
  notify(redis, q);
  std::this_thread::sleep_for(milliseconds(1500));
  EXPECT_FALSE(worker.finished());
  EXPECT_EQ(state_of(second), JobState::pending);
  test::exec(conn.get(), "ALTER DATABASE " + db_name() +
                             " RESET default_transaction_read_only");
  // Found when the worker reconnects, without a wake-up.
  EXPECT_EQ(wait_for_result(conn.get(), redis, second, milliseconds(30000)),
            json(2));
  EXPECT_FALSE(worker.finished());
}

// A transactional handler that makes the job's transaction READ ONLY:
// the completion cannot be written there. That is the handler's error,
// not an outage: under the crash policy the worker stops, rather than
// reconnect and run the job again and again as for a server made
// read-only (HostileTest.AServerTurnedReadOnlyUnderAServingWorkerIsWaitedOut).
TEST_F(WorkerTest, AHandlerThatMakesItsTransactionReadOnlyIsNotAnOutage) {
  PgConnPtr conn = connect();
  std::string q = queue();
  JobId id = enqueue(conn.get(), q, json("read only"));
  auto o = options({q});
  o.transactional = true;
  std::atomic<int> runs{0};
  BackgroundWorker worker(o, [&](const JobContext& job) {
    ++runs;
    PQclear(PQexec(job.db, "SET TRANSACTION READ ONLY"));
    return HandlerResult::complete(job.data);
  });
  ASSERT_TRUE(wait_until([&] { return worker.finished(); }))
      << "the worker did not stop; the handler ran " << runs.load() << " times";
  std::string error = exit_error(worker);
  EXPECT_TRUE(test::contains(error, "queue \"" + q + "\": job " +
                                        std::to_string(id.value) +
                                        " (attempt 1) failed: the handler's "
                                        "transaction did not commit"))
      << error;
  EXPECT_TRUE(test::contains(error, "read-only transaction")) << error;
  EXPECT_EQ(runs.load(), 1);
  EXPECT_NE(state_of(id), JobState::completed);
}

// A session ended while its worker waits for work (a backend terminated,
// idle_session_timeout, a restart): the worker reconnects at once, not at
// its next wake-up or poll (30 s here), so the next job does not wait for
// the reconnect.
TEST_F(WorkerTest, AnIdleWorkerReconnectsSoonAfterItsSessionEnds) {
  PgConnPtr conn = connect();
  std::string q = queue();
  BackgroundWorker worker(options({q}), [](const JobContext& job) {
    return HandlerResult::complete(job.data);
  });
  const std::string holder =
      "SELECT coalesce(max(pid), 0) FROM pg_locks WHERE locktype = "
      "'advisory' AND classid = 1886220545 AND granted AND database = "
      "(SELECT oid FROM pg_database WHERE datname = current_database())";
  ASSERT_TRUE(wait_until([&] { return query_value(holder) != "0"; }));
  std::string first = query_value(holder);
  test::exec(conn.get(), "SELECT pg_terminate_backend(" + first + ")");
  EXPECT_TRUE(wait_until(
      [&] {
        std::string now = query_value(holder);
        return now != "0" && now != first;
      },
      milliseconds(5000)))
      << "no new session took the queue's lock";
  RedisLink redis(test::redis_url());
  JobId id = enqueue(conn.get(), q, json("after"));
  notify(redis, q);
  EXPECT_EQ(wait_for_result(conn.get(), redis, id, milliseconds(10000)),
            json("after"));
}

TEST_F(WorkerTest, RedisDownAtStartIsNotAnError) {
  test::RedisServer redis_server;
  redis_server.stop();
  PgConnPtr conn = connect();
  std::string q = queue();
  auto o = options({q});
  o.redis_url = redis_server.url();
  BackgroundWorker worker(o, [](const JobContext& job) {
    return HandlerResult::complete(job.data);
  });
  JobId id = enqueue(conn.get(), q, json("no redis"));
  ASSERT_TRUE(wait_until([&] { return all_completed({id}); }));
  EXPECT_FALSE(worker.finished());
}

}  // namespace
}  // namespace pgjobq

namespace pgjobq {
namespace {

TEST_F(WorkerTest, HandlerErrorThatIsNotUtf8IsRecordedNotFatal) {
  PgConnPtr conn = connect();
  std::string q = queue("utf8");
  JobId bad = enqueue(conn.get(), q, json("bad"));
  JobId next = enqueue(conn.get(), q, json("next"));
  auto o = options({q});
  o.on_error = ErrorPolicy::retry;
  o.max_attempts = 1;
  BackgroundWorker worker(o, [](const JobContext& job) -> HandlerResult {
    if (job.data == "bad") {
      throw std::runtime_error(std::string("bad \xff byte and ") +
                               std::string(20000, 'x'));
    }
    return HandlerResult::complete();
  });
  ASSERT_TRUE(wait_until([&] { return all_completed({next}); }));
  EXPECT_FALSE(worker.finished());
  auto job = query_job(conn.get(), bad);
  EXPECT_EQ(job->state, JobState::failed);
  ASSERT_TRUE(job->error);
  EXPECT_NE(job->error->find("bad \xef\xbf\xbd byte"), std::string::npos);
  EXPECT_NE(job->error->find("[truncated]"), std::string::npos);
  EXPECT_LT(job->error->size(), 9000u);
}

TEST_F(WorkerTest, ANullResultIsStoredAsJsonNull) {
  PgConnPtr conn = connect();
  std::string q = queue("null");
  JobId id = enqueue(conn.get(), q, json(1));
  BackgroundWorker worker(options({q}), [](const JobContext&) {
    return HandlerResult::complete(nullptr);
  });
  ASSERT_TRUE(wait_until([&] { return all_completed({id}); }));
  auto job = query_job(conn.get(), id);
  ASSERT_TRUE(job->result.has_value()) << "completed, with the result null";
  EXPECT_TRUE(job->result->is_null());
}

}  // namespace
}  // namespace pgjobq
