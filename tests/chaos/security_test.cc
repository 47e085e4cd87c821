// docs/security.md, tested: least-privilege roles (docs/security-roles.sql,
// run as written), wrong passwords, TLS through libpq's sslmode, passwords
// kept out of every message and log; and servers that are down or go away,
// through the command line.

#include <signal.h>

#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "chaos/hostile.h"
#include "pgjobq/admin.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "pgjobq/jobs.h"
#include "pgjobq/worker.h"
#include "support/worker.h"

namespace pgjobq::test {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

// The SQLSTATE of a DatabaseError `f` throws ("" if it throws none).
template <typename F>
std::string sqlstate_of(F&& f) {
  try {
    f();
  } catch (const DatabaseError& e) {
    return e.sqlstate();
  }
  return "";
}

std::string exec_error(PGconn* conn, const std::string& sql) {
  PGresult* r = PQexec(conn, sql.c_str());
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  std::string out = state ? state : "";
  PQclear(r);
  return out;
}

constexpr const char* kDenied = "42501";  // insufficient_privilege

// The three roles of docs/security-roles.sql, made under names of this
// test's own (roles are shared by every database of the server), each given
// to a login role, as the file says to.
class RolesTest : public HostileTest {
 protected:
  void SetUp() override {
    HostileTest::SetUp();
    suffix_ = std::to_string(getpid()) + "_" +
              std::to_string(std::random_device{}() % 100000);
    std::ifstream in(PGJOBQ_ROLES_SQL);
    std::stringstream text;
    text << in.rdbuf();
    std::string sql = text.str();
    ASSERT_FALSE(sql.empty());
    for (const char* role : {"enqueuer", "worker", "operator"}) {
      std::string group = std::string("pgjobq_") + role;
      sql = std::regex_replace(sql, std::regex("\\b" + group + "\\b"),
                               group + "_" + suffix_);
      admin("CREATE ROLE " + group + "_" + suffix_ + " NOLOGIN");
      admin("CREATE ROLE " + login(role) + " LOGIN IN ROLE " + group + "_" +
            suffix_);
    }
    PgConnPtr owner = connect();
    // The file must suffice where PUBLIC may not run functions either.
    PQclear(PQexec(owner.get(),
                   "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pgjobq FROM "
                   "PUBLIC"));
    PGresult* r = PQexec(owner.get(), sql.c_str());
    std::string error = PQresultErrorMessage(r);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    ASSERT_TRUE(ok) << error;
  }
  void TearDown() override {
    HostileTest::TearDown();  // drops the database, and the grants with it
    for (const char* role : {"enqueuer", "worker", "operator"}) {
      admin("DROP ROLE IF EXISTS " + login(role));
      admin("DROP ROLE IF EXISTS pgjobq_" + std::string(role) + "_" + suffix_);
    }
  }
  std::string login(const std::string& role) const {
    return "t_" + role + "_" + suffix_;
  }
  // The test database, as `role`'s login (the test server trusts loopback).
  std::string url_as(const std::string& role) const {
    std::string url = db_url();
    return "postgresql://" + login(role) + "@" + url.substr(url.find('@') + 1);
  }
  PgConnPtr connect_as(const std::string& role) const {
    return connect_database(url_as(role));
  }
  void admin(const std::string& sql) const {
    PgConnPtr conn = connect_database(required_env("PGJOBQ_TEST_PG_ADMIN_URL"));
    PGresult* r = PQexec(conn.get(), sql.c_str());
    std::string error = PQresultErrorMessage(r);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) throw std::runtime_error(sql + ": " + error);
  }
  WorkerOptions worker_options(const std::string& role,
                               const std::string& queue) const {
    WorkerOptions o;
    o.db_url = url_as(role);
    o.redis_url = redis_url();
    o.queues = {queue};
    o.on_error = ErrorPolicy::retry;
    o.retry_delay = milliseconds(1);
    o.max_attempts = 2;
    return o;
  }
  // What nobody but the owner may do.
  void expect_no_schema_changes(PGconn* conn) {
    EXPECT_EQ(exec_error(conn, "DROP TABLE pgjobq.jobs"), kDenied);
    EXPECT_EQ(exec_error(conn, "CREATE TABLE pgjobq.evil (x int)"), kDenied);
    EXPECT_EQ(exec_error(conn, "ALTER TABLE pgjobq.jobs ADD COLUMN x int"),
              kDenied);
    EXPECT_EQ(exec_error(conn, "TRUNCATE pgjobq.jobs"), kDenied);
  }

  std::string suffix_;
};

TEST_F(RolesTest, EnqueuerCanEnqueueAndWaitButNotTouchJobs) {
  std::string q = queue();
  PgConnPtr app = connect_as("enqueuer");
  // Enqueue, in its own transaction, on a new queue and an existing one.
  PQclear(PQexec(app.get(), "BEGIN"));
  JobId a = enqueue(app.get(), q, json("a"));
  ASSERT_FALSE(try_enqueue(app.get(), q, json("refused"), 1));
  JobId b = enqueue(app.get(), queue("other"), json("b"));
  PQclear(PQexec(app.get(), "COMMIT"));
  ASSERT_TRUE(enqueue_many(app.get(), q, {json(1), json(2)}));
  EXPECT_EQ(query_job(app.get(), a)->data, json("a"));
  EXPECT_EQ(queue_status(app.get(), q)[0].pending, 3);
  // And through the command line.
  ProcessResult r = pgjobq({"--db", url_as("enqueuer"), "enqueue", q, "{}"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(pgjobq({"--db", url_as("enqueuer"), "status", q}).exit_code, 0);
  // It waits for results a worker (of another role) stores.
  {
    PgConnPtr owner = connect();
    BackgroundWorker worker(
        worker_options("worker", q),
        [](const JobContext& j) { return HandlerResult::complete(j.data); });
    RedisLink redis(redis_url());
    EXPECT_EQ(wait_for_result(app.get(), redis, a, milliseconds(10000)),
              json("a"));
  }
  // Also inside a transaction, where the wait asks
  // pgjobq.written_by_this_transaction whether the job is its own: no
  // permission error, it waits (for a job no worker serves here).
  for (const char* role : {"enqueuer", "worker", "operator"}) {
    PgConnPtr conn = connect_as(role);
    RedisLink redis(redis_url());
    PQclear(PQexec(conn.get(), "BEGIN"));
    EXPECT_THROW(wait_for_result(conn.get(), redis, b, milliseconds(100)),
                 Timeout)
        << role;
    PQclear(PQexec(conn.get(), "ROLLBACK"));
  }
  // It cannot change a job, forge a result, or delete one.
  std::string id = std::to_string(b.value);
  EXPECT_EQ(exec_error(app.get(),
                       "UPDATE pgjobq.jobs SET result = '\"forged\"', state = "
                       "'completed' WHERE id = " +
                           id),
            kDenied);
  EXPECT_EQ(exec_error(app.get(), "DELETE FROM pgjobq.jobs WHERE id = " + id),
            kDenied);
  EXPECT_EQ(sqlstate_of([&] { cancel(app.get(), b); }), kDenied);
  EXPECT_EQ(sqlstate_of([&] { reschedule(app.get(), b); }), kDenied);
  EXPECT_EQ(
      sqlstate_of([&] { prune(app.get(), std::chrono::microseconds(0)); }),
      kDenied);
  ProcessResult cancel_cli = pgjobq({"--db", url_as("enqueuer"), "cancel", id});
  EXPECT_EQ(cancel_cli.exit_code, 1);
  EXPECT_TRUE(OneLine(cancel_cli.err));
  EXPECT_TRUE(contains(cancel_cli.err, "permission denied")) << cancel_cli.err;
  // Nor serve a queue: the worker says so and stops.
  BackgroundWorker rogue(worker_options("enqueuer", q), [](const JobContext&) {
    return HandlerResult::complete();
  });
  std::exception_ptr error = rogue.wait_for_exit();
  ASSERT_TRUE(error);
  try {
    std::rethrow_exception(error);
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), kDenied) << e.what();
  }
  EXPECT_EQ(query_job(app.get(), b)->state, JobState::pending);
  expect_no_schema_changes(app.get());
}

TEST_F(RolesTest, WorkerCanRunJobsButNotAddCancelOrDeleteThem) {
  std::string q = queue();
  PgConnPtr owner = connect();
  JobId done = enqueue(owner.get(), q, json("done"));
  JobId again = enqueue(owner.get(), q, json("again"));
  JobId poison = enqueue(owner.get(), q, json("poison"));
  JobId last = enqueue(owner.get(), q, json("last"));
  std::atomic<int> agains{0};
  {
    // Every statement a worker runs: claims, completions, a reschedule
    // from the handler, handler errors, a job given up on.
    BackgroundWorker worker(worker_options("worker", q),
                            [&](const JobContext& job) {
                              if (job.data == json("again") && agains++ == 0) {
                                return HandlerResult::reschedule();
                              }
                              if (job.data == json("poison")) {
                                throw std::runtime_error("poison");
                              }
                              return HandlerResult::complete(job.data);
                            });
    ASSERT_TRUE(wait_until([&] {
      return query_job(owner.get(), again)->state == JobState::completed;
    }));
    EXPECT_FALSE(worker.finished());
  }
  EXPECT_EQ(query_job(owner.get(), done)->result, json("done"));
  EXPECT_EQ(query_job(owner.get(), poison)->state, JobState::failed);
  EXPECT_EQ(query_job(owner.get(), last)->state, JobState::completed);
  // And through the command line.
  JobId cli_job = enqueue(owner.get(), q, json("cli"));
  auto cli = start({"--db", url_as("worker"), "work", q, "--", "cat"});
  EXPECT_TRUE(wait_until([&] {
    return query_job(owner.get(), cli_job)->state == JobState::completed;
  }));
  cli->signal(SIGTERM);
  EXPECT_EQ(cli->wait(milliseconds(10000)), 0);
  // It cannot add jobs, cancel them, take a failed one back, or delete.
  PgConnPtr worker = connect_as("worker");
  JobId pending = enqueue(owner.get(), queue("idle"), json(1));
  EXPECT_EQ(sqlstate_of([&] { enqueue(worker.get(), q, json(1)); }), kDenied);
  EXPECT_EQ(sqlstate_of([&] { cancel(worker.get(), pending); }), kDenied);
  EXPECT_EQ(sqlstate_of([&] { reschedule(worker.get(), poison); }), kDenied);
  EXPECT_EQ(
      sqlstate_of([&] { prune(worker.get(), std::chrono::microseconds(0)); }),
      kDenied);
  EXPECT_EQ(exec_error(worker.get(), "DELETE FROM pgjobq.jobs"), kDenied);
  EXPECT_EQ(exec_error(worker.get(), "UPDATE pgjobq.jobs SET data = '1'"),
            kDenied);
  EXPECT_EQ(query_job(owner.get(), pending)->state, JobState::pending);
  expect_no_schema_changes(worker.get());
}

// `pgjobq migrate` run by a role that may not create anything (a worker's
// or the application's, say before it starts serving) finds an up-to-date
// schema up to date, instead of failing on CREATE SCHEMA IF NOT EXISTS,
// which PostgreSQL checks for the right to create before it looks whether
// the schema exists. A migration it would have to apply still needs the
// owner, and says so in one line without changing anything.
TEST_F(RolesTest, EveryRoleFindsAnUpToDateSchemaUpToDate) {
  for (const char* role : {"enqueuer", "worker", "operator"}) {
    SCOPED_TRACE(role);
    ProcessResult r = pgjobq({"--db", url_as(role), "migrate"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(contains(r.out, "up to date")) << r.out;
    EXPECT_EQ(r.err, "");
  }
  std::string latest = std::to_string(schema_version());
  PgConnPtr owner = connect();
  exec(owner.get(),
       "DELETE FROM pgjobq.schema_migrations WHERE version = " + latest);
  ProcessResult r = pgjobq({"--db", url_as("worker"), "migrate"});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err, "owner")) << r.err;
  EXPECT_EQ(query_value("SELECT count(*) FROM pgjobq.schema_migrations WHERE "
                        "version = " +
                        latest),
            "0");
  ProcessResult as_owner = pgjobq({"--db", db_url(), "migrate"});
  EXPECT_EQ(as_owner.exit_code, 0) << as_owner.err;
}

TEST_F(RolesTest, OperatorCanCancelRescheduleAndPruneButNotAddJobs) {
  std::string q = queue();
  PgConnPtr owner = connect();
  JobId a = enqueue(owner.get(), q, json("a"));
  JobId b = enqueue(owner.get(), q, json("b"));
  JobId c = enqueue(owner.get(), q, json("c"));
  std::string ops = url_as("operator");
  EXPECT_EQ(pgjobq({"--db", ops, "status"}).exit_code, 0);
  EXPECT_EQ(pgjobq({"--db", ops, "show", std::to_string(a.value)}).exit_code,
            0);
  ProcessResult r = pgjobq({"--db", ops, "cancel", std::to_string(a.value)});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = pgjobq({"--db", ops, "reschedule", std::to_string(b.value)});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = pgjobq({"--db", ops, "reschedule", std::to_string(a.value)});
  EXPECT_EQ(r.exit_code, 0) << "a cancelled job back in the queue\n" << r.err;
  {
    BackgroundWorker worker(
        worker_options("worker", q),
        [](const JobContext& j) { return HandlerResult::complete(j.data); });
    ASSERT_TRUE(wait_until(
        [&] { return queue_status(owner.get(), q)[0].completed == 3; }));
  }
  r = pgjobq({"--db", ops, "wait", std::to_string(c.value)});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = pgjobq({"--db", ops, "prune", "--older-than", "0s"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(query_job(owner.get(), c));
  // It cannot add jobs or change what they carry.
  PgConnPtr op = connect_as("operator");
  EXPECT_EQ(sqlstate_of([&] { enqueue(op.get(), q, json(1)); }), kDenied);
  EXPECT_EQ(exec_error(op.get(), "UPDATE pgjobq.jobs SET data = '1'"), kDenied);
  r = pgjobq({"--db", ops, "enqueue", q, "{}"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(OneLine(r.err));
  expect_no_schema_changes(op.get());
}

// ---------------------------------------------------------- passwords

class PasswordTest : public HostileTest {};

TEST_F(PasswordTest, WrongPostgresqlPasswordIsOneLineThatNeverShowsIt) {
  PrivatePostgres pg;
  pg.admin("CREATE ROLE app LOGIN PASSWORD 'right-horse-battery'");
  pg.admin("CREATE DATABASE app OWNER app");
  const std::string wrong = "Wr0ng-Staple-9";
  std::string bad = pg.url("app", wrong, "app");
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"migrate"},
                                             {"enqueue", "q", "{}"},
                                             {"wait", "1", "--timeout", "1"},
                                             {"show", "1"},
                                             {"status"},
                                             {"work", "q", "--", "cat"}}) {
    std::vector<std::string> argv{"--db", bad};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessResult r = pgjobq(argv);
    EXPECT_EQ(r.exit_code, 1) << args[0] << "\n" << r.err;
    EXPECT_TRUE(OneLine(r.err)) << args[0];
    EXPECT_TRUE(contains(r.err, "password authentication failed"))
        << args[0] << "\n"
        << r.err;
    EXPECT_FALSE(contains(r.err, wrong)) << r.err;
    // The password from PGPASSWORD instead of the URL.
    std::vector<std::string> env_argv{
        "--db",
        "postgresql://app@127.0.0.1:" + std::to_string(pg.port()) + "/app"};
    env_argv.insert(env_argv.end(), args.begin(), args.end());
    r = pgjobq(env_argv, "", {{"PGPASSWORD", wrong}});
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_FALSE(contains(r.err, wrong)) << r.err;
  }
  try {
    connect_database(bad);
    ADD_FAILURE() << "connected with a wrong password";
  } catch (const ConnectionError& e) {
    EXPECT_FALSE(contains(e.what(), wrong)) << e.what();
    EXPECT_TRUE(contains(e.what(), "***")) << e.what();
  }
  WorkerOptions o;
  o.db_url = bad;
  o.redis_url = redis_url();
  o.queues = {"q"};
  Worker worker(o, [](const JobContext&) { return HandlerResult::complete(); });
  EXPECT_THROW(worker.run(), ConnectionError);
  // Nothing happened to the database; the right password works.
  std::string good = pg.url("app", "right-horse-battery", "app");
  ProcessResult r = pgjobq({"--db", good, "migrate"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(pg.admin("SELECT count(*) FROM pgjobq.jobs", "app"), "0");
  r = pgjobq({"--db", good, "enqueue", "q", "{}"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// A worker meets every outage there is, with passwords in both URLs: not
// one of its log lines, nor any command's message, shows either.
TEST_F(PasswordTest, PasswordsNeverReachTheLogs) {
  PrivatePostgres pg;
  const std::string pg_secret = "pg-Secret-7734";
  const std::string redis_secret = "redis-Secret-4471";
  pg.admin("CREATE ROLE app LOGIN PASSWORD '" + pg_secret + "'");
  pg.admin("CREATE DATABASE app OWNER app");
  std::string db = pg.url("app", pg_secret, "app", "application_name=victim");
  RedisServer redis;
  redis.stop();
  redis.start(redis_secret);
  ASSERT_EQ(pgjobq({"--db", db, "migrate"}).exit_code, 0);
  std::string command =
      script("handler.sh",
             "#!/bin/sh\nread x; [ \"$x\" = '\"fail\"' ] && exit 3; echo $x\n");
  auto worker = start({"--db", db, "--redis", redis.url(), "work", "q",
                       "--on-error", "retry", "--max-attempts", "2",
                       "--retry-delay", "0.05", "--", command});
  auto run_job = [&](const std::string& data) {
    ProcessResult r = pgjobq({"--db", db, "--redis", redis.url(), "enqueue",
                              "q", data, "--wait", "--timeout", "20"});
    return r;
  };
  EXPECT_EQ(run_job("\"one\"").exit_code, 0);
  EXPECT_EQ(run_job("\"fail\"").exit_code, 5);  // a handler error, logged
  redis.stop();                                 // Redis gone
  ProcessResult r = run_job("\"two\"");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, redis_secret)) << r.err;
  redis.start(redis_secret);
  // Its PostgreSQL session cut.
  pg.admin(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
      "application_name = 'victim' AND pid <> pg_backend_pid()");
  EXPECT_EQ(run_job("\"three\"").exit_code, 0);
  // A wrong Redis password: a warning, the job enqueued all the same.
  std::string wrong_redis =
      "unix://" + redis.socket_path() + "?password=" + redis_secret + "-not";
  r = pgjobq({"--db", db, "--redis", wrong_redis, "enqueue", "q", "\"four\""});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, redis_secret)) << r.err;
  worker->signal(SIGTERM);
  EXPECT_EQ(worker->wait(milliseconds(20000)), 0);
  std::string log = worker->err();
  EXPECT_TRUE(contains(log, "exited with status 3")) << log;
  EXPECT_TRUE(contains(log, "Redis")) << "the outage was logged:\n" << log;
  EXPECT_FALSE(contains(log, pg_secret)) << log;
  EXPECT_FALSE(contains(log, redis_secret)) << log;
  // The server itself never saw the password in clear (SCRAM), and the
  // worker's connections are in its log only by name.
  EXPECT_FALSE(contains(pg.log(), pg_secret));
}

TEST_F(PasswordTest, WrongRedisPasswordMeansPollingNotFailure) {
  RedisServer redis;
  redis.stop();
  redis.start("the-right-one");
  std::string wrong =
      "unix://" + redis.socket_path() + "?password=not-the-right-one";
  std::string q = queue();
  ProcessResult r = pgjobq({"--redis", wrong, "enqueue", q, "\"x\""});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(OneLine(r.err)) << "one warning";
  EXPECT_FALSE(contains(r.err, "not-the-right-one")) << r.err;
  JobId id{std::stoll(r.out)};
  auto worker = start({"--redis", wrong, "work", q, "--", "cat"});
  r = pgjobq(
      {"--redis", wrong, "wait", std::to_string(id.value), "--timeout", "20"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out), json("x"));
  worker->signal(SIGTERM);
  EXPECT_EQ(worker->wait(milliseconds(10000)), 0);
  EXPECT_FALSE(contains(worker->err(), "not-the-right-one")) << worker->err();
}

// The Redis ACL line of docs/security.md, as written there, with
// `password` for PASSWORD, split into the command's words.
std::vector<std::string> documented_redis_acl(const std::string& password) {
  std::ifstream in(PGJOBQ_SECURITY_DOC);
  std::stringstream text;
  text << in.rdbuf();
  std::smatch found;
  std::string doc = text.str();
  if (!std::regex_search(doc, found, std::regex("`(ACL SETUSER [^`]*)`"))) {
    return {};
  }
  std::vector<std::string> words;
  std::istringstream line(found[1].str());
  for (std::string word; line >> word;) {
    words.push_back(word == ">PASSWORD" ? ">" + password : word);
  }
  return words;
}

// One command on the test's Redis as its default (admin) user.
struct RedisAdmin {
  redisContext* context;
  explicit RedisAdmin(const std::string& socket)
      : context(redisConnectUnix(socket.c_str())) {}
  ~RedisAdmin() { redisFree(context); }
  RedisAdmin(const RedisAdmin&) = delete;
  RedisAdmin& operator=(const RedisAdmin&) = delete;
  // The reply's type and, for a status, error or array, its text or size.
  std::pair<int, std::string> command(const std::vector<std::string>& words) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const std::string& w : words) {
      argv.push_back(w.c_str());
      lengths.push_back(w.size());
    }
    auto* reply = static_cast<redisReply*>(redisCommandArgv(
        context, static_cast<int>(argv.size()), argv.data(), lengths.data()));
    if (!reply) return {REDIS_REPLY_ERROR, "no reply"};
    std::pair<int, std::string> out{reply->type, ""};
    if (reply->type == REDIS_REPLY_ARRAY) {
      out.second = std::to_string(reply->elements);
    } else if (reply->str) {
      out.second.assign(reply->str, reply->len);
    }
    freeReplyObject(reply);
    return out;
  }
};

TEST_F(PasswordTest, TheDocumentedRedisAclIsAllPgjobqNeeds) {
  const std::string password = "acl-Secret-5521";
  std::vector<std::string> acl = documented_redis_acl(password);
  ASSERT_FALSE(acl.empty()) << "no ACL SETUSER line in docs/security.md";
  RedisServer redis;
  RedisAdmin admin(redis.socket_path());
  ASSERT_EQ(admin.command(acl),
            std::make_pair(REDIS_REPLY_STATUS, std::string("OK")));
  std::string url =
      "unix://" + redis.socket_path() + "?user=pgjobq&password=" + password;
  std::string q = queue();
  auto worker = start({"--redis", url, "work", q, "--", "cat"});
  // The command line: enqueue, notify, wait.
  ProcessResult r = pgjobq({"--redis", url, "enqueue", q, "\"by the cli\"",
                            "--wait", "--timeout", "20"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "") << "no Redis warning";
  EXPECT_NE(r.out.find("\"by the cli\""), std::string::npos) << r.out;
  // The library: several waits on one link, each subscribing and
  // unsubscribing on the link's one subscriber connection.
  PgConnPtr db = connect();
  RedisLink link(url);
  for (int n = 0; n < 5; ++n) {
    JobId id = enqueue(db.get(), q, json(n));
    std::string error;
    EXPECT_TRUE(notify(link, q, &error)) << error;
    EXPECT_EQ(wait_for_result(db.get(), link, id, milliseconds(20000)),
              json(n));
  }
  worker->signal(SIGTERM);
  EXPECT_EQ(worker->wait(milliseconds(10000)), 0);
  EXPECT_FALSE(contains(worker->err(), "Redis")) << worker->err();
  EXPECT_EQ(admin.command({"ACL", "LOG"}),
            std::make_pair(REDIS_REPLY_ARRAY, std::string("0")))
      << "Redis refused some command of pgjobq's";
}

// ----------------------------------------------------------------- TLS

TEST_F(PasswordTest, TlsToPostgresqlThroughSslmode) {
  PrivatePostgres pg(/*tls=*/true);
  pg.admin("CREATE ROLE app LOGIN PASSWORD 'tls-pw'");
  pg.admin("CREATE DATABASE app OWNER app");
  auto url = [&](const std::string& params) {
    return pg.url("app", "tls-pw", "app", params);
  };
  // Encrypted, and the server's certificate checked against our CA.
  std::string verified = url("sslmode=verify-full&sslrootcert=" + pg.ca_file());
  ProcessResult r = pgjobq({"--db", verified, "migrate"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  PgConnPtr conn = connect_database(verified);
  PGresult* ssl = PQexec(
      conn.get(), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
  EXPECT_STREQ(PQgetvalue(ssl, 0, 0), "t");
  PQclear(ssl);
  std::string q = queue();
  JobId id = enqueue(conn.get(), q, json("over tls"));
  auto worker = start({"--db", verified, "work", q, "--", "cat"});
  r = pgjobq(
      {"--db", verified, "wait", std::to_string(id.value), "--timeout", "20"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out), json("over tls"));
  worker->signal(SIGTERM);
  EXPECT_EQ(worker->wait(milliseconds(10000)), 0);
  EXPECT_EQ(pgjobq({"--db", url("sslmode=require"), "status"}).exit_code, 0);
  // A certificate our CA did not sign is refused, in one line.
  std::string other_ca = dir() + "/other-ca.crt";
  ASSERT_EQ(run_process({"openssl", "req", "-new", "-x509", "-days", "1",
                         "-nodes", "-subj", "/CN=someone else", "-keyout",
                         dir() + "/other.key", "-out", other_ca})
                .exit_code,
            0);
  r = pgjobq(
      {"--db", url("sslmode=verify-full&sslrootcert=" + other_ca), "status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err, "certificate verify failed")) << r.err;
  EXPECT_FALSE(contains(r.err, "tls-pw")) << r.err;
  // This server takes no unencrypted connections.
  r = pgjobq({"--db", url("sslmode=disable"), "status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err, "no encryption")) << r.err;
}

// ------------------------------------------------ servers down or going

// A worker or an enqueuer pointed at a hot standby (a read replica in the
// wrong place, a failover's old primary come back as a standby): one line
// that says the primary is needed. The reading commands work there.
TEST_F(HostileTest, AHotStandbyIsOneLineSayingThePrimaryIsNeeded) {
  PrivatePostgres primary;
  primary.admin("CREATE ROLE app LOGIN PASSWORD 'pw'");
  primary.admin("CREATE DATABASE app OWNER app");
  ASSERT_EQ(
      pgjobq({"--db", primary.url("app", "pw", "app"), "migrate"}).exit_code,
      0);
  ASSERT_EQ(pgjobq({"--db", primary.url("app", "pw", "app"), "enqueue", "q",
                    "\"before\""})
                .exit_code,
            0);
  PrivatePostgres standby(PrivatePostgres::StandbyOf{primary});
  ASSERT_TRUE(wait_until([&] {
    try {
      return standby.admin("SELECT count(*) FROM pgjobq.jobs", "app") == "1";
    } catch (const std::exception&) {
      return false;  // still starting up
    }
  }));
  ASSERT_EQ(standby.admin("SELECT pg_is_in_recovery()"), "t");
  std::string db = standby.url("app", "pw", "app");

  ProcessResult r = pgjobq({"--db", db, "work", "q", "--", "cat"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err,
                       "queue \"q\": the PostgreSQL server is a hot "
                       "standby"))
      << r.err;
  EXPECT_TRUE(contains(r.err, "target_session_attrs=read-write")) << r.err;

  r = pgjobq({"--db", db, "enqueue", "q", "{}"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err, "read-only transaction")) << r.err;
  EXPECT_TRUE(contains(r.err, "not a hot standby")) << r.err;

  r = pgjobq({"--db", db, "status", "q", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out).at(0).at("pending"), 1) << r.out;
}

// A server made read-only in place (default_transaction_read_only by ALTER
// SYSTEM and a reload, as a guard against a full disk does): the sessions
// already open turn read-only too. A serving worker waits that out, as it
// waits out a read-only session met on reconnecting, instead of exiting at
// its next write (and, restarted by its supervisor, failing at start until
// the supervisor gives up).
TEST_F(HostileTest, AServerTurnedReadOnlyUnderAServingWorkerIsWaitedOut) {
  PrivatePostgres pg;
  pg.admin("CREATE ROLE app LOGIN PASSWORD 'pw'");
  pg.admin("CREATE DATABASE app OWNER app");
  std::string db = pg.url("app", "pw", "app");
  ASSERT_EQ(pgjobq({"--db", db, "migrate"}).exit_code, 0);
  auto worker = start({"--db", db, "work", "q", "--", "cat"});
  ProcessResult r =
      pgjobq({"--db", db, "enqueue", "q", "1", "--wait", "--timeout", "20"});
  ASSERT_EQ(r.exit_code, 0) << r.err << worker->err();
  pg.admin("ALTER SYSTEM SET default_transaction_read_only = on");
  pg.admin("SELECT pg_reload_conf()");
  // The job is enqueued in a session of its own that may still write.
  r = pgjobq({"--db",
              pg.url("app", "pw", "app",
                     "options=-c%20default_transaction_read_only%3Doff"),
              "enqueue", "q", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string id = r.out.substr(0, r.out.find('\n'));
  // Its claim fails; it says so and reconnects, into read-only sessions.
  EXPECT_TRUE(wait_until([&] {
    return contains(worker->err(), "the PostgreSQL session is read-only");
  })) << worker->err();
  EXPECT_TRUE(worker->running()) << worker->err();
  pg.admin("ALTER SYSTEM RESET default_transaction_read_only");
  pg.admin("SELECT pg_reload_conf()");
  r = pgjobq({"--db", db, "wait", id, "--timeout", "30"});
  EXPECT_EQ(r.exit_code, 0) << r.err << worker->err();
  EXPECT_EQ(r.out, "2\n");
  EXPECT_TRUE(worker->running()) << worker->err();
}

TEST_F(HostileTest, PostgresqlDownAtStartIsOneLineForEveryCommand) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"migrate"},
                                             {"enqueue", "q", "{}"},
                                             {"enqueue", "q", "{}", "--wait"},
                                             {"wait", "1"},
                                             {"show", "1"},
                                             {"status"},
                                             {"cancel", "1"},
                                             {"reschedule", "1"},
                                             {"prune"},
                                             {"work", "q", "--", "cat"}}) {
    std::vector<std::string> argv{"--db", kDeadPostgres};
    argv.insert(argv.end(), args.begin(), args.end());
    auto started = std::chrono::steady_clock::now();
    ProcessResult r = pgjobq(argv);
    EXPECT_EQ(r.exit_code, 1) << args[0] << "\n" << r.err;
    EXPECT_TRUE(OneLine(r.err)) << args[0];
    EXPECT_TRUE(contains(r.err, "cannot connect")) << r.err;
    EXPECT_LT(std::chrono::steady_clock::now() - started,
              std::chrono::seconds(5))
        << args[0];
  }
}

// A command whose PostgreSQL session is cut mid-wait says so in one line,
// reconnects, and still ends with the job's outcome; it neither hangs nor
// gives up (it used to exit 1).
TEST_F(HostileTest, PostgresqlGoingAwayMidWaitIsOneLineAndAReconnect) {
  seed();
  std::string q = queue();
  JobId id = add_job(q, "1");
  std::string before = stored();
  std::string url = db_url() + "?application_name=cut-me";
  auto waiter =
      start({"--db", url, "wait", std::to_string(id.value), "--timeout", "60"});
  auto backends = [&] {
    return query_value(
        "SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE "
        "application_name = 'cut-me'");
  };
  std::string first;
  ASSERT_TRUE(wait_until([&] { return !(first = backends()).empty(); }));
  query_value("SELECT pg_terminate_backend(" + first + ")");
  ASSERT_TRUE(wait_until([&] {
    std::string now = backends();
    return !now.empty() && now != first;
  })) << "no new session after the cut: "
      << waiter->err();
  EXPECT_EQ(stored(), before);
  ASSERT_EQ(pgjobq({"cancel", std::to_string(id.value)}).exit_code, 0);
  std::optional<int> code = waiter->wait(milliseconds(10000));
  ASSERT_TRUE(code) << "still waiting after its job was cancelled";
  EXPECT_EQ(*code, 5) << waiter->err();
  // One line each: the loss, the reconnection, the outcome.
  std::vector<std::string> lines;
  std::istringstream err(waiter->err());
  for (std::string line; std::getline(err, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 3u) << waiter->err();
  EXPECT_TRUE(lines[0].starts_with("pgjobq: warning: wait for job"))
      << lines[0];
  EXPECT_TRUE(contains(lines[0], "reconnecting")) << lines[0];
  EXPECT_TRUE(lines[1].starts_with("pgjobq: info: reconnected")) << lines[1];
  EXPECT_TRUE(lines[2].starts_with("pgjobq: error: job")) << lines[2];
  EXPECT_TRUE(contains(lines[2], "cancelled")) << lines[2];
}

// A waiter on a private server, for the restarts and hangs the shared one
// cannot have.
class WaitOutageTest : public HostileTest {
 protected:
  static constexpr const char* kPassword = "outage-Secret-31";
  void SetUp() override {
    HostileTest::SetUp();
    pg_.emplace();
    pg_->admin(std::string("CREATE ROLE app LOGIN PASSWORD '") + kPassword +
               "'");
    pg_->admin("CREATE DATABASE app OWNER app");
    url_ = pg_->url("app", kPassword, "app");
    ASSERT_EQ(pgjobq({"--db", url_, "migrate"}).exit_code, 0);
    ProcessResult r = pgjobq({"--db", url_, "enqueue", "q", "{}"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    id_ = r.out.substr(0, r.out.find('\n'));
  }
  void TearDown() override {
    pg_.reset();
    HostileTest::TearDown();
  }
  // The wait command's session, if it has one.
  std::string waiters_backend() const {
    return pg_->admin(
        "SELECT string_agg(pid::text, ',') FROM pg_stat_activity "
        "WHERE datname = 'app' AND usename = 'app'");
  }
  // The waiter, cut off, comes back: once it has a session again, its job
  // is cancelled, and it must exit 5 having logged `says`, never the
  // password.
  void expect_back_and_told_of_the_cancel(Subprocess& waiter,
                                          const std::string& says) const {
    ASSERT_TRUE(wait_until([&] { return !waiters_backend().empty(); },
                           milliseconds(20000)))
        << waiter.err();
    ASSERT_EQ(pgjobq({"--db", url_, "cancel", id_}).exit_code, 0);
    std::optional<int> code = waiter.wait(milliseconds(30000));
    EXPECT_EQ(code, 5) << waiter.err();
    EXPECT_TRUE(contains(waiter.err(), says)) << waiter.err();
    EXPECT_FALSE(contains(waiter.err(), kPassword)) << waiter.err();
  }
  std::optional<PrivatePostgres> pg_;
  std::string url_;
  std::string id_;
};

// A PostgreSQL restart mid-wait: the waiter reconnects once the server is
// back, and still sees its job end.
TEST_F(WaitOutageTest, WaitRidesOutAPostgresqlRestart) {
  auto waiter = start({"--db", url_, "wait", id_, "--timeout", "60"});
  ASSERT_TRUE(wait_until([&] { return !waiters_backend().empty(); }));
  pg_->restart();
  expect_back_and_told_of_the_cancel(*waiter, "reconnecting");
}

// A server out of connections (here the role's CONNECTION LIMIT; a full
// max_connections reads the same, SQLSTATE 53300) refuses the waiter's
// reconnection for a while: the wait keeps trying, and still sees its job
// end. It used to give up at the second refusal (exit 1), as it does for
// refusals that come again (CliWaitReconnectTest).
TEST_F(WaitOutageTest, WaitRidesOutTooManyConnections) {
  auto waiter = start({"--db", url_, "wait", id_, "--timeout", "60"});
  std::string backend;
  ASSERT_TRUE(
      wait_until([&] { return !(backend = waiters_backend()).empty(); }));
  pg_->admin("ALTER ROLE app CONNECTION LIMIT 0");
  pg_->admin("SELECT pg_terminate_backend(" + backend + ")");
  // Refused again and again for 3 s (the retries start 0.1 s apart).
  std::this_thread::sleep_for(milliseconds(3000));
  EXPECT_FALSE(waiter->wait(milliseconds(0)).has_value()) << waiter->err();
  pg_->admin("ALTER ROLE app CONNECTION LIMIT -1");
  expect_back_and_told_of_the_cancel(*waiter, "reconnected");
}

// A server that hangs (takes connections, answers none) once the waiter
// has lost its session: each reconnect attempt is bounded by --timeout,
// and the wait ends about on time with the connection error. It used to
// take libpq's connect_timeout (10 s) for each attempt.
TEST_F(WaitOutageTest, WaitGivesUpOnTimeAgainstAHungPostgresql) {
  auto waiter = start({"--db", url_, "wait", id_, "--timeout", "3"});
  std::string backend;
  ASSERT_TRUE(
      wait_until([&] { return !(backend = waiters_backend()).empty(); }));
  pg_->pause();
  auto cut = std::chrono::steady_clock::now();
  kill(std::stoi(backend), SIGTERM);  // its session ends; nobody answers
  std::optional<int> code = waiter->wait(milliseconds(30000));
  auto took = std::chrono::steady_clock::now() - cut;
  pg_->resume();
  EXPECT_EQ(code, 1) << waiter->err();
  EXPECT_LT(took, std::chrono::seconds(7)) << waiter->err();
  EXPECT_TRUE(contains(waiter->err(), "timeout expired")) << waiter->err();
  EXPECT_FALSE(contains(waiter->err(), kPassword)) << waiter->err();
}

// A command that never exits holds its queue until --job-timeout: then its
// whole process group is killed (SIGKILL if it ignores SIGTERM), the job
// counts an error, and under --on-error retry the queue moves on once it
// is spent.
TEST_F(HostileTest, CommandThatNeverExitsIsKilledAtItsTimeout) {
  std::string q = queue();
  JobId stuck = add_job(q, "\"stuck\"");
  JobId next = add_job(q, "\"next\"");
  std::string command =
      script("stuck.sh",
             "#!/bin/sh\n"
             "read x\n"
             "[ \"$x\" = '\"next\"' ] && { echo '\"ran\"'; exit 0; }\n"
             "trap '' TERM\n"
             "sleep 1000 & wait; while :; do sleep 1; done\n");
  auto worker =
      start({"work", q, "--job-timeout", "0.5", "--on-error", "retry",
             "--max-attempts", "2", "--retry-delay", "0.05", "--", command});
  ASSERT_TRUE(wait_until([&] { return state_of(next) == "completed"; },
                         milliseconds(30000)))
      << worker->err();
  EXPECT_EQ(state_of(stuck), "failed");
  std::string error = job_field(stuck, "error");
  EXPECT_TRUE(contains(error, "job timeout") || contains(error, "timed out"))
      << error;
  worker->signal(SIGTERM);
  EXPECT_EQ(worker->wait(milliseconds(10000)), 0);
  // Nothing it started is left behind.
  EXPECT_TRUE(wait_until([&] {
    return run_process({"pgrep", "-f", command}).exit_code != 0;
  })) << "processes of the stuck command survived";
}

}  // namespace
}  // namespace pgjobq::test
