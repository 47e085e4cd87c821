#include <algorithm>
#include <atomic>
#include <future>
#include <thread>

#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "pgjobq/jobs.h"
#include "pgjobq/worker.h"
#include "redis/connection.h"
#include "support/services.h"
#include "support/silent_socket.h"
#include "support/worker.h"

namespace pgjobq {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;
using test::BackgroundWorker;
using test::exec;
using test::wait_until;

class WaitTest : public test::DatabaseTest {
 protected:
  WorkerOptions options(const std::string& queue,
                        const std::string& redis_url) const {
    WorkerOptions o = worker_options({queue});
    o.redis_url = redis_url;
    o.poll_interval = std::chrono::seconds(30);
    return o;
  }
  bool completed(JobId id) const {
    PgConnPtr conn = connect();
    return query_job(conn.get(), id)->state == JobState::completed;
  }
};

// Asks a Redis server directly, for what only the server knows.
class RedisProbe {
 public:
  explicit RedisProbe(const std::string& url)
      : conn_(redis::Connection::open(redis::parse_url(url),
                                      milliseconds(2000))) {}
  // INFO's total_connections_received: connections the server ever took.
  long connections_received() {
    std::string_view args[] = {"INFO", "stats"};
    redis::ReplyPtr reply = conn_.command(args);
    std::string info(reply->str, reply->len);
    std::string key = "total_connections_received:";
    return std::stol(info.substr(info.find(key) + key.size()));
  }
  // How many clients are subscribed to `channel`.
  long subscribers(const std::string& channel) {
    std::string_view args[] = {"PUBSUB", "NUMSUB", channel};
    redis::ReplyPtr reply = conn_.command(args);
    return reply->element[1]->integer;
  }

 private:
  redis::Connection conn_;
};

// A handler that waits for the test's go-ahead, so jobs finish when the
// test says.
class Release {
 public:
  void allow() { allowed_ = true; }
  void wait() const {
    while (!allowed_) std::this_thread::sleep_for(milliseconds(1));
  }

 private:
  std::atomic<bool> allowed_{false};
};

TEST_F(WaitTest, ReturnsAtOnceForAJobAlreadyCompleted) {
  PgConnPtr conn = connect();
  std::string q = queue();
  JobId id = enqueue(conn.get(), q, json{{"x", 1}});
  {
    BackgroundWorker worker(options(q, test::redis_url()),
                            [](const JobContext& job) {
                              return HandlerResult::complete(job.data);
                            });
    ASSERT_TRUE(wait_until([&] { return completed(id); }));
  }
  RedisLink redis(test::redis_url());
  auto start = SteadyClock::now();
  EXPECT_EQ(wait_for_result(conn.get(), redis, id, milliseconds(5000)),
            (json{{"x", 1}}));
  EXPECT_LT(SteadyClock::now() - start, milliseconds(500));
}

TEST_F(WaitTest, ReturnsTheResultSoonAfterTheJobCompletes) {
  PgConnPtr conn = connect();
  std::string q = queue();
  Release release;
  BackgroundWorker worker(options(q, test::redis_url()),
                          [&](const JobContext& job) {
                            release.wait();
                            return HandlerResult::complete(job.data["n"]);
                          });
  JobId id = enqueue(conn.get(), q, json{{"n", 42}});
  RedisLink notifier(test::redis_url());
  notify(notifier, q);
  auto waiter = std::async(std::launch::async, [&] {
    PgConnPtr own = connect();
    RedisLink redis(test::redis_url());
    return wait_for_result(own.get(), redis, id, milliseconds(10000));
  });
  std::this_thread::sleep_for(milliseconds(50));
  auto released_at = SteadyClock::now();
  release.allow();
  EXPECT_EQ(waiter.get(), json(42));
  // Woken by the published result, not by the (1 s) re-check.
  EXPECT_LT(SteadyClock::now() - released_at, milliseconds(200));
}

TEST_F(WaitTest, WithRedisStoppedItStillReturnsByPolling) {
  PgConnPtr conn = connect();
  std::string q = queue();
  test::RedisServer redis_server;
  redis_server.stop();
  Release release;
  // The worker publishes to the shared Redis; the waiter's Redis is down.
  BackgroundWorker worker(options(q, test::redis_url()),
                          [&](const JobContext&) {
                            release.wait();
                            return HandlerResult::complete("polled");
                          });
  JobId id = enqueue(conn.get(), q, json(1));
  RedisLink notifier(test::redis_url());
  notify(notifier, q);
  RedisLink dead(redis_server.url(), milliseconds(200));
  auto waiter = std::async(std::launch::async, [&] {
    PgConnPtr own = connect();
    return wait_for_result(own.get(), dead, id, milliseconds(10000));
  });
  std::this_thread::sleep_for(milliseconds(100));
  release.allow();
  EXPECT_EQ(waiter.get(), json("polled"));
}

TEST_F(WaitTest, RedisDyingMidWaitFallsBackToPolling) {
  PgConnPtr conn = connect();
  std::string q = queue();
  test::RedisServer redis_server;
  Release release;
  BackgroundWorker worker(options(q, test::redis_url()),
                          [&](const JobContext&) {
                            release.wait();
                            return HandlerResult::complete("still seen");
                          });
  JobId id = enqueue(conn.get(), q, json(1));
  RedisLink notifier(test::redis_url());
  notify(notifier, q);
  RedisLink link(redis_server.url(), milliseconds(200));
  auto waiter = std::async(std::launch::async, [&] {
    PgConnPtr own = connect();
    return wait_for_result(own.get(), link, id, milliseconds(10000));
  });
  std::this_thread::sleep_for(milliseconds(100));
  redis_server.stop();
  std::this_thread::sleep_for(milliseconds(100));
  release.allow();
  EXPECT_EQ(waiter.get(), json("still seen"));
}

TEST_F(WaitTest, ForgedMessagesDoNotChangeWhatWaitReturns) {
  PgConnPtr conn = connect();
  std::string q = queue();
  Release release;
  BackgroundWorker worker(options(q, test::redis_url()),
                          [&](const JobContext&) {
                            release.wait();
                            return HandlerResult::complete({{"real", true}});
                          });
  JobId id = enqueue(conn.get(), q, json(1));
  RedisLink attacker(test::redis_url());
  notify(attacker, q);
  auto waiter = std::async(std::launch::async, [&] {
    PgConnPtr own = connect();
    RedisLink redis(test::redis_url());
    return wait_for_result(own.get(), redis, id, milliseconds(10000));
  });
  // Forge results while the job is still running.
  for (int i = 0; i < 20; ++i) {
    attacker.publish(job_channel(id), R"({"real": false})");
    attacker.publish(job_channel(id), "not even json");
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_EQ(waiter.wait_for(milliseconds(100)), std::future_status::timeout)
      << "a forged message must not end the wait";
  release.allow();
  EXPECT_EQ(waiter.get(), (json{{"real", true}}));
  // And after completion, forging more changes nothing stored.
  attacker.publish(job_channel(id), R"({"real": false})");
  RedisLink redis(test::redis_url());
  EXPECT_EQ(wait_for_result(conn.get(), redis, id, milliseconds(1000)),
            (json{{"real", true}}));
  EXPECT_EQ(query_job(conn.get(), id)->result, (json{{"real", true}}));
}

// A link's subscriber is reused wait after wait: a message on the channel
// of an earlier wait, on its way when that wait unsubscribed, is read while
// the next wait subscribes. It used to be kept for next(), and a run of
// waits that returned at once (their jobs already done) kept every one:
// 3000 such waits under a stream of 100 kB messages grew the process by
// 100 MB. Now it is dropped as it is read.
TEST_F(WaitTest, AReusedSubscriberDropsMessagesOfChannelsItLeft) {
  redis::Address address = redis::parse_url(test::redis_url());
  auto subscriber = redis::Subscriber::open(address, milliseconds(2000));
  std::string earlier[] = {job_channel(JobId{1})};
  std::string later[] = {job_channel(JobId{2})};
  ASSERT_TRUE(subscriber.subscribe(earlier, milliseconds(2000)));
  RedisLink publisher(test::redis_url());
  // Delivered: Redis handles it before the UNSUBSCRIBE below.
  publisher.publish(earlier[0], "stale");
  subscriber.unsubscribe(earlier);
  ASSERT_TRUE(subscriber.subscribe(later, milliseconds(2000)));
  publisher.publish(later[0], "fresh");
  auto message = subscriber.next(milliseconds(2000));
  ASSERT_TRUE(message);
  EXPECT_EQ(message->channel, later[0]);
  EXPECT_EQ(message->payload, "fresh");
}

TEST_F(WaitTest, OneLinkWaitsOnOneConnectionAndLeavesNoSubscriptions) {
  PgConnPtr conn = connect();
  std::string q = queue();
  test::RedisServer redis_server;
  BackgroundWorker worker(
      options(q, redis_server.url()),
      [](const JobContext& job) { return HandlerResult::complete(job.data); });
  RedisLink notifier(redis_server.url());
  RedisLink waiter(redis_server.url());
  RedisProbe probe(redis_server.url());
  // Once a first job's result is published, the worker and the notifier
  // hold every connection they will use (the worker opens its publishing
  // one after the job's commit, so seeing the job completed is not enough).
  // (Enqueued in a transaction, to subscribe before the worker can see
  // the job.)
  PQclear(PQexec(conn.get(), "BEGIN"));
  JobId first = enqueue(conn.get(), q, json(0));
  auto first_result = redis::Subscriber::open(
      redis::parse_url(redis_server.url()), milliseconds(2000));
  std::string first_channel[] = {job_channel(first)};
  first_result.subscribe(first_channel);
  PQclear(PQexec(conn.get(), "COMMIT"));
  notify(notifier, q);
  ASSERT_TRUE(first_result.next(milliseconds(10000)));
  long connections_before = probe.connections_received();
  std::vector<JobId> ids;
  for (int n = 1; n <= 20; ++n) {
    JobId id = enqueue(conn.get(), q, json(n));
    notify(notifier, q);
    EXPECT_EQ(wait_for_result(conn.get(), waiter, id, milliseconds(10000)),
              json(n));
    ids.push_back(id);
  }
  // A job that never finishes: the wait that times out unsubscribes too.
  JobId stuck = enqueue(conn.get(), queue(), json(1));
  EXPECT_THROW(wait_for_result(conn.get(), waiter, stuck, milliseconds(50)),
               Timeout);
  ids.push_back(stuck);
  EXPECT_EQ(probe.connections_received() - connections_before, 1)
      << "21 waits on one link: one subscriber connection";
  EXPECT_TRUE(wait_until([&] {
    return std::all_of(ids.begin(), ids.end(), [&](JobId id) {
      return probe.subscribers(job_channel(id)) == 0;
    });
  })) << "every wait unsubscribed when it ended";
}

TEST_F(WaitTest, AKeptSubscriptionLostToARedisRestartIsOpenedAgain) {
  PgConnPtr conn = connect();
  std::string q = queue();
  test::RedisServer redis_server;
  RedisLink waiter(redis_server.url());
  // A first wait opens the link's subscriber connection...
  JobId done = enqueue(conn.get(), q, json(1));
  cancel(conn.get(), done);
  EXPECT_THROW(wait_for_result(conn.get(), waiter, done, milliseconds(1000)),
               JobFailed);
  // ... which a restart breaks while the link is idle.
  redis_server.restart();
  Release release;
  BackgroundWorker worker(options(q, test::redis_url()),
                          [&](const JobContext&) {
                            release.wait();
                            return HandlerResult::complete("after restart");
                          });
  JobId id = enqueue(conn.get(), q, json(2));
  RedisLink notifier(test::redis_url());
  notify(notifier, q);
  auto result = std::async(std::launch::async, [&] {
    PgConnPtr own = connect();
    return wait_for_result(own.get(), waiter, id, milliseconds(10000));
  });
  RedisProbe probe(redis_server.url());
  EXPECT_TRUE(wait_until([&] {
    return probe.subscribers(job_channel(id)) == 1;
  })) << "the wait subscribed again on a new connection, not just polled";
  release.allow();
  EXPECT_EQ(result.get(), json("after restart"));
}

TEST_F(WaitTest, TimesOutWhenTheJobDoesNotFinish) {
  PgConnPtr conn = connect();
  JobId id = enqueue(conn.get(), queue(), json(1));  // no worker
  RedisLink redis(test::redis_url());
  auto start = SteadyClock::now();
  EXPECT_THROW(wait_for_result(conn.get(), redis, id, milliseconds(300)),
               Timeout);
  auto took = SteadyClock::now() - start;
  EXPECT_GE(took, milliseconds(300));
  EXPECT_LT(took, milliseconds(1500));
}

TEST_F(WaitTest, TheLongestTimeoutWaitsForever) {
  PgConnPtr conn = connect();
  JobId id = enqueue(conn.get(), queue(), json(1));  // no worker
  std::thread canceller([&] {
    std::this_thread::sleep_for(milliseconds(300));
    PgConnPtr own = connect();
    cancel(own.get(), id);
  });
  RedisLink redis(test::redis_url());
  // It waits (no Timeout at once from an overflowed deadline) until the job
  // ends: cancelled here.
  EXPECT_THROW(wait_for_result(conn.get(), redis, id, milliseconds::max()),
               JobFailed);
  canceller.join();
}

TEST_F(WaitTest, AWaitInAFixedSnapshotIsRefused) {
  PgConnPtr conn = connect();
  JobId id = enqueue(conn.get(), queue(), json(1));
  RedisLink redis(test::redis_url());
  for (const char* level : {"REPEATABLE READ", "SERIALIZABLE"}) {
    exec(conn.get(), std::string("BEGIN ISOLATION LEVEL ") + level);
    EXPECT_THROW(wait_for_result(conn.get(), redis, id, milliseconds(5000)),
                 InvalidInput)
        << level;
    exec(conn.get(), "ROLLBACK");
  }
  // READ COMMITTED sees the job end (cancelled) while the transaction is
  // open.
  exec(conn.get(), "BEGIN");
  std::thread canceller([&] {
    std::this_thread::sleep_for(milliseconds(200));
    PgConnPtr own = connect();
    cancel(own.get(), id);
  });
  EXPECT_THROW(wait_for_result(conn.get(), redis, id, milliseconds(10000)),
               JobFailed);
  canceller.join();
  exec(conn.get(), "ROLLBACK");
}

// A wait in the very transaction that enqueued (or rescheduled) the job,
// before it commits: no worker can see the job, so the wait could only
// time out, holding the queue's row all the while and stalling every other
// enqueuer of the queue. It is refused at once, the transaction untouched.
TEST_F(WaitTest, AWaitForAJobItsOwnTransactionHasNotCommittedIsRefused) {
  PgConnPtr conn = connect();
  PgConnPtr other = connect();
  std::string q = queue();
  RedisLink redis(test::redis_url());
  JobId committed = enqueue(other.get(), q, json("committed"));
  auto expect_refused = [&](JobId id) {
    auto start = SteadyClock::now();
    try {
      wait_for_result(conn.get(), redis, id, milliseconds(10000));
      ADD_FAILURE() << "expected InvalidInput";
    } catch (const InvalidInput& e) {
      EXPECT_TRUE(test::contains(e.what(), "has not committed")) << e.what();
    }
    EXPECT_LT(SteadyClock::now() - start, milliseconds(5000));
    EXPECT_EQ(PQtransactionStatus(conn.get()), PQTRANS_INTRANS);
  };
  exec(conn.get(), "BEGIN");
  expect_refused(enqueue(conn.get(), q, json("mine")));
  exec(conn.get(), "SAVEPOINT s");
  expect_refused(enqueue(conn.get(), q, json("in a savepoint")));
  exec(conn.get(), "ROLLBACK TO SAVEPOINT s");
  exec(conn.get(), "ROLLBACK");
  // In a savepoint released since (its subtransaction's id has no lock any
  // more), also from inside a savepoint opened after it.
  exec(conn.get(), "BEGIN");
  exec(conn.get(), "SAVEPOINT s");
  JobId released = enqueue(conn.get(), q, json("in a released savepoint"));
  exec(conn.get(), "RELEASE SAVEPOINT s");
  expect_refused(released);
  exec(conn.get(), "SAVEPOINT t");
  expect_refused(released);
  exec(conn.get(), "ROLLBACK");
  // A job another transaction committed is waited for as ever, also in a
  // transaction; one this transaction rescheduled is not.
  exec(conn.get(), "BEGIN");
  EXPECT_THROW(wait_for_result(conn.get(), redis, committed, milliseconds(100)),
               Timeout);
  reschedule(conn.get(), committed);
  expect_refused(committed);
  exec(conn.get(), "ROLLBACK");
  EXPECT_THROW(wait_for_result(conn.get(), redis, committed, milliseconds(100)),
               Timeout);
}

TEST_F(WaitTest, UnknownJobIsNoSuchJob) {
  PgConnPtr conn = connect();
  RedisLink redis(test::redis_url());
  EXPECT_THROW(
      wait_for_result(conn.get(), redis, JobId{987654}, milliseconds(100)),
      NoSuchJob);
  EXPECT_THROW(wait_for_result(conn.get(), redis, JobId{-1}, milliseconds(100)),
               NoSuchJob);
}

TEST_F(WaitTest, CancelledJobIsJobFailed) {
  PgConnPtr conn = connect();
  JobId id = enqueue(conn.get(), queue(), json(1));
  cancel(conn.get(), id);
  RedisLink redis(test::redis_url());
  try {
    wait_for_result(conn.get(), redis, id, milliseconds(1000));
    FAIL() << "expected JobFailed";
  } catch (const JobFailed& e) {
    EXPECT_EQ(e.state(), JobState::cancelled);
  }
}

TEST_F(WaitTest, FailedJobIsJobFailedWithTheStoredError) {
  PgConnPtr conn = connect();
  std::string q = queue();
  JobId id = enqueue(conn.get(), q, json(1));
  auto o = options(q, test::redis_url());
  o.max_attempts = 1;
  o.on_error = ErrorPolicy::retry;
  o.retry_delay = milliseconds(1);
  BackgroundWorker worker(o, [](const JobContext&) -> HandlerResult {
    throw std::runtime_error("out of ink");
  });
  RedisLink redis(test::redis_url());
  try {
    wait_for_result(conn.get(), redis, id, milliseconds(10000));
    FAIL() << "expected JobFailed";
  } catch (const JobFailed& e) {
    EXPECT_EQ(e.state(), JobState::failed);
    EXPECT_NE(e.stored_error().find("out of ink"), std::string::npos)
        << e.stored_error();
  }
}

TEST_F(WaitTest, ANullResultIsReturnedAsNull) {
  PgConnPtr conn = connect();
  std::string q = queue();
  JobId id = enqueue(conn.get(), q, json(1));
  BackgroundWorker worker(options(q, test::redis_url()), [](const JobContext&) {
    return HandlerResult::complete();
  });
  RedisLink redis(test::redis_url());
  EXPECT_TRUE(
      wait_for_result(conn.get(), redis, id, milliseconds(10000)).is_null());
}

// A Redis that takes connections and never answers: the wait polls
// PostgreSQL instead, and gives up when its own timeout says, not after
// Redis's (2 s).
TEST_F(WaitTest, AHungRedisDoesNotStretchTheTimeout) {
  test::SilentSocket hung_redis;
  PgConnPtr conn = connect();
  JobId id = enqueue(conn.get(), queue(), json(1));
  RedisLink redis(hung_redis.url());
  auto started = std::chrono::steady_clock::now();
  EXPECT_THROW(wait_for_result(conn.get(), redis, id, milliseconds(150)),
               Timeout);
  EXPECT_LT(std::chrono::steady_clock::now() - started, milliseconds(1000));
}

// The same on a link whose kept subscription went quiet (Redis stopped
// with SIGSTOP between two waits): the SUBSCRIBE on it took the whole
// timeout, then a fresh connection a whole timeout again.
TEST_F(WaitTest, AHungRedisBehindAKeptSubscriptionDoesNotStretchTheTimeout) {
  test::RedisServer redis_server;
  PgConnPtr conn = connect();
  std::string q = queue();
  RedisLink redis(redis_server.url());
  JobId done = enqueue(conn.get(), q, json(1));
  cancel(conn.get(), done);
  EXPECT_THROW(wait_for_result(conn.get(), redis, done, milliseconds(1000)),
               JobFailed);  // the link now keeps a subscription
  JobId id = enqueue(conn.get(), q, json(2));  // no worker
  redis_server.pause();
  auto started = std::chrono::steady_clock::now();
  EXPECT_THROW(wait_for_result(conn.get(), redis, id, milliseconds(1500)),
               Timeout);
  auto took = std::chrono::steady_clock::now() - started;
  redis_server.resume();
  EXPECT_LT(took, milliseconds(2500))
      << std::chrono::duration_cast<milliseconds>(took).count() << " ms";
}

// The check behind that refusal, on ids no row of this test would carry:
// the transaction's own id; one not given out yet, as the raw xmin of a
// frozen row many epochs old may read (pg_xact_status raises "in the
// future" for it); a committed row's; a special one (frozen). And in a
// transaction that has written nothing, no id at all is its own.
TEST_F(WaitTest, WrittenByThisTransactionIsTrueForItsOwnIdsOnly) {
  PgConnPtr conn = connect();
  PgConnPtr other = connect();
  JobId committed = enqueue(other.get(), queue(), json(1));
  // pgjobq.written_by_this_transaction of each id, given `top`, a 64-bit
  // id, as "t f ...".
  auto answers = [&](const std::string& top) {
    std::string sql =
        "SELECT string_agg(pgjobq.written_by_this_transaction(x)::text, ' ' "
        "ORDER BY n) FROM (SELECT " +
        top +
        " AS top) t, LATERAL (VALUES "
        "(1, (top % 4294967296)::text::xid), "
        "(2, ((top + 1000000000) % 4294967296)::text::xid), "
        "(3, (SELECT xmin FROM pgjobq.jobs WHERE id = " +
        std::to_string(committed.value) + ")), (4, '2'::xid)) v(n, x)";
    PGresult* r = PQexec(conn.get(), sql.c_str());
    std::string out = PQresultStatus(r) == PGRES_TUPLES_OK
                          ? PQgetvalue(r, 0, 0)
                          : PQresultErrorMessage(r);
    PQclear(r);
    return out;
  };
  exec(conn.get(), "BEGIN");
  EXPECT_EQ(answers("pg_current_xact_id()::text::bigint"),
            "true false false false");
  exec(conn.get(), "ROLLBACK");
  exec(conn.get(), "BEGIN");
  EXPECT_EQ(answers("(SELECT max(xmin::text::bigint) FROM pgjobq.jobs)"),
            "false false false false");
  exec(conn.get(), "ROLLBACK");
}

}  // namespace
}  // namespace pgjobq
