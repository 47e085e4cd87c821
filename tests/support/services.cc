#include "support/services.h"

#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>

#include "pg/connection.h"
#include "pgjobq/admin.h"
#include "sql/migrate.h"
#include "sql/statements.h"

namespace pgjobq::test {

std::string required_env(const char* name) {
  const char* value = std::getenv(name);
  if (!value || !*value) {
    ADD_FAILURE() << name << " is not set: run the tests through tests/run.sh";
    throw std::runtime_error(std::string(name) + " is not set");
  }
  return value;
}

std::string database_url(std::string_view database) {
  std::string admin = required_env("PGJOBQ_TEST_PG_ADMIN_URL");
  return admin.substr(0, admin.rfind('/') + 1) + std::string(database);
}

std::string redis_url() { return required_env("PGJOBQ_TEST_REDIS_URL"); }

std::string unique_name(std::string_view prefix) {
  static std::atomic<int> counter{0};
  static thread_local std::mt19937 rng{std::random_device{}()};
  return std::string(prefix) + "-" + std::to_string(getpid()) + "-" +
         std::to_string(counter++) + "-" + std::to_string(rng() % 100000);
}

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

bool wait_until(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void exec(PGconn* conn, const std::string& sql) {
  PGresult* r = PQexec(conn, sql.c_str());
  auto status = PQresultStatus(r);
  std::string error = PQresultErrorMessage(r);
  PQclear(r);
  EXPECT_TRUE(status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
      << sql << ": " << error;
}

void schema_at_version(PGconn* conn, int version) {
  exec(conn, "SET client_min_messages = warning");
  exec(conn, "DROP SCHEMA IF EXISTS pgjobq CASCADE");
  exec(conn, sql::kMigrationsTable.text);
  for (const sql::Migration& m : sql::migrations()) {
    if (m.version > version) break;
    exec(conn, m.text);
    pg::Param params[] = {pg::param(std::int64_t{m.version}),
                          pg::param(m.name)};
    pg::exec(conn, sql::kRecordMigration, params);
  }
  exec(conn, "RESET client_min_messages");
}

namespace {

void exec_or_fail(PGconn* conn, const std::string& sql) {
  PGresult* r = PQexec(conn, sql.c_str());
  auto status = PQresultStatus(r);
  std::string error = PQresultErrorMessage(r);
  PQclear(r);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    throw std::runtime_error(sql + ": " + error);
  }
}

constexpr const char* kTemplate = "pgjobq_test_template";

// The migrated template, made once per test run. Test processes run in
// parallel, so they take turns on an advisory lock.
void ensure_template(PGconn* admin) {
  exec_or_fail(admin, "SELECT pg_advisory_lock(7411)");
  PGresult* r = PQexec(admin, (std::string("SELECT 1 FROM pg_database WHERE "
                                           "datname = '") +
                               kTemplate + "'")
                                  .c_str());
  bool exists = PQntuples(r) == 1;
  PQclear(r);
  if (!exists) {
    exec_or_fail(admin,
                 std::string("CREATE DATABASE ") + kTemplate + "_building");
    {
      PgConnPtr conn =
          connect_database(database_url(std::string(kTemplate) + "_building"));
      migrate(conn.get());
    }
    exec_or_fail(admin, std::string("ALTER DATABASE ") + kTemplate +
                            "_building RENAME TO " + kTemplate);
  }
  exec_or_fail(admin, "SELECT pg_advisory_unlock(7411)");
}

}  // namespace

void DatabaseTest::SetUp() {
  db_name_ = "t_" + std::to_string(getpid()) + "_" +
             std::to_string(std::random_device{}() % 1000000);
  PgConnPtr admin = connect_database(required_env("PGJOBQ_TEST_PG_ADMIN_URL"));
  ensure_template(admin.get());
  exec_or_fail(admin.get(),
               "CREATE DATABASE " + db_name_ + " TEMPLATE " + kTemplate);
  db_url_ = database_url(db_name_);
  // Every test database shares one Redis, and so the job channels
  // (pgjobq/job-<id>): give each its own range of job ids, far above the
  // ids tests use for jobs that do not exist, so that no test hears another
  // test's job on its channel.
  std::uniform_int_distribution<std::int64_t> range(1, 1000000);
  std::mt19937_64 rng{std::random_device{}()};
  PgConnPtr conn = connect();
  exec_or_fail(conn.get(),
               "ALTER TABLE pgjobq.jobs ALTER COLUMN id RESTART "
               "WITH " +
                   std::to_string(range(rng) * 1000000000));
}

void DatabaseTest::TearDown() {
  if (db_name_.empty()) return;
  try {
    PgConnPtr admin =
        connect_database(required_env("PGJOBQ_TEST_PG_ADMIN_URL"));
    exec_or_fail(admin.get(),
                 "DROP DATABASE IF EXISTS " + db_name_ + " WITH (FORCE)");
  } catch (const std::exception& e) {
    ADD_FAILURE() << "dropping " << db_name_ << ": " << e.what();
  }
}

PgConnPtr DatabaseTest::connect() const { return connect_database(db_url_); }

WorkerOptions DatabaseTest::worker_options(
    std::vector<std::string> queues) const {
  WorkerOptions o;
  o.db_url = db_url_;
  o.redis_url = redis_url();
  o.queues = std::move(queues);
  return o;
}

int DatabaseTest::lock_waiters() const {
  return std::stoi(
      query_value("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                  "current_database() AND wait_event_type = 'Lock'"));
}

std::vector<std::int64_t> DatabaseTest::fifo(const std::string& queue,
                                             bool unfinished_only) const {
  PgConnPtr conn = connect();
  std::string sql =
      "SELECT j.id FROM pgjobq.jobs j JOIN pgjobq.queues q ON q.id = "
      "j.queue_id WHERE q.name = '" +
      queue + "'" +
      (unfinished_only ? " AND j.state IN ('pending', 'running')" : "") +
      " ORDER BY j.position";
  PGresult* r = PQexec(conn.get(), sql.c_str());
  std::vector<std::int64_t> ids;
  for (int i = 0; i < PQntuples(r); ++i) {
    ids.push_back(std::stoll(PQgetvalue(r, i, 0)));
  }
  PQclear(r);
  return ids;
}

std::string DatabaseTest::query_value(const std::string& sql) const {
  PgConnPtr conn = connect();
  PGresult* r = PQexec(conn.get(), sql.c_str());
  auto status = PQresultStatus(r);
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    std::string error = PQresultErrorMessage(r);
    PQclear(r);
    throw std::runtime_error(sql + ": " + error);
  }
  std::string value =
      PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : "";
  PQclear(r);
  return value;
}

RedisServer::RedisServer() {
  char tmpl[] = "/tmp/pgjobq-redis.XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  start();
}

RedisServer::~RedisServer() {
  stop();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string RedisServer::url() const {
  std::string url = "unix://" + socket_path();
  if (!password_.empty()) url += "?password=" + password_;
  return url;
}

void RedisServer::start(std::string_view password) {
  if (pid_ > 0) return;
  password_ = std::string(password);
  std::string server = required_env("PGJOBQ_REDIS_SERVER");
  std::filesystem::remove(socket_path());
  // Everything the child needs is built before fork: a child of a
  // threaded process may only call async-signal-safe functions.
  std::string log = dir_ + "/redis.log";
  std::string socket = socket_path();
  std::vector<std::string> args{server, "--port",    "0", "--unixsocket",
                                socket, "--save",    "",  "--appendonly",
                                "no",   "--logfile", log, "--dir",
                                dir_};
  if (!password_.empty()) {
    args.push_back("--requirepass");
    args.push_back(password_);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    execv(server.c_str(), argv.data());
    _exit(127);
  }
  pid_ = pid;
  // Ready means answering PING (with the password, if one is set).
  auto answers = [&] {
    redisContext* c = redisConnectUnix(socket.c_str());
    bool ok = false;
    if (c && !c->err) {
      if (!password_.empty()) {
        freeReplyObject(redisCommand(c, "AUTH %s", password_.c_str()));
      }
      auto* reply = static_cast<redisReply*>(redisCommand(c, "PING"));
      ok = reply && reply->type == REDIS_REPLY_STATUS;
      if (reply) freeReplyObject(reply);
    }
    if (c) redisFree(c);
    return ok;
  };
  if (!wait_until(answers)) {
    throw std::runtime_error("private redis-server did not start");
  }
}

void RedisServer::pause() {
  if (pid_ > 0) kill(pid_, SIGSTOP);
}

void RedisServer::resume() {
  if (pid_ > 0) kill(pid_, SIGCONT);
}

void RedisServer::stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  std::filesystem::remove(socket_path());
}

}  // namespace pgjobq::test
