// Every command of `pgjobq` but `work`, run as a user would: success
// paths, and each error path with its exit code and its one stderr line.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cli/cli_fixture.h"
#include "pgjobq/admin.h"
#include "pgjobq/connection.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/jobs.h"
#include "support/silent_socket.h"
#include "support/worker.h"

namespace pgjobq::test {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

// Nothing listens on port 1 of the loopback interface.
constexpr const char* kSecret = "pa55-Secret-word";
const std::string kDeadPostgres =
    std::string("postgresql://app:") + kSecret + "@127.0.0.1:1/app";
const std::string kDeadRedis =
    std::string("redis://:") + kSecret + "@127.0.0.1:1/0";

// ------------------------------------------------------------ usage

TEST_F(CliTest, NoCommandIsAUsageError) {
  ProcessResult r = pgjobq({});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err, "pgjobq --help")) << r.err;
}

TEST_F(CliTest, UnknownCommandIsAUsageError) {
  ProcessResult r = pgjobq({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err, "unknown command \"frobnicate\"")) << r.err;
}

TEST_F(CliTest, UsageErrorsExit2WithOneLine) {
  std::string q = queue();
  std::vector<std::vector<std::string>> cases{
      {"enqueue"},
      {"enqueue", q, "{}", "--frob"},
      {"enqueue", q, "{}", "--limit", "0"},
      {"enqueue", q, "{}", "--limit", "many"},
      {"enqueue", q, "{}", "--limit", "0x10"},
      {"enqueue", q, "{}", "--limit", "-3"},
      {"enqueue", q, "{}", "--limit", "99999999999999999999"},
      {"enqueue", q, "{}", "--wait", "--timeout", ""},
      {"enqueue", q, "{}", "--timeout", "5"},  // --timeout needs --wait
      {"enqueue", q, "{}", "--wait", "--timeout", "5x"},
      {"wait"},
      {"wait", "abc"},
      {"wait", "1x"},
      {"wait", "1", "--timeout", "-1"},
      {"wait", "1", "--timeout", ""},
      {"show", "1", "2"},
      {"cancel", "x"},
      {"reschedule", "1.5"},
      {"prune", "--older-than", "5"},
      {"prune", "--older-than", "5y"},
      {"status", "a", "b"},
      {"work"},
      {"work", q},
      {"work", q, "--"},
      {"work", q, "--on-error", "explode", "--", "true"},
      {"work", q, "--max-attempts", "0", "--", "true"},
      {"work", q, "--max-attempts", "3000000000", "--", "true"},
      {"work", q, "--job-timeout", "0", "--", "true"},
      {"work", q, "--poll-interval", "soon", "--", "true"},
      {"work", q, "--dead-session-timeout", "500ms", "--", "true"},
      {"work", q, "--dead-session-timeout", "19h", "--", "true"},
      {"work", q, "--", "/nonexistent/handler"},
      {"work", q, "other", q, "--", "true"},
      {"status", "--", "x", "y"},
  };
  for (const auto& args : cases) {
    ProcessResult r = pgjobq(args);
    std::string label;
    for (const auto& a : args) label += a + " ";
    EXPECT_EQ(r.exit_code, 2) << label << "\n" << r.err;
    EXPECT_TRUE(OneLine(r.err)) << label;
    EXPECT_TRUE(contains(r.err, "usage error")) << label << "\n" << r.err;
    EXPECT_LT(r.err.size(), 300u) << "one clear line: " << r.err;
  }
  EXPECT_EQ(count_jobs(q), 0);
}

// Whole numbers are decimal, leading zeros and all: 010 is ten.
TEST_F(CliTest, LimitIsReadInDecimal) {
  std::string q = queue();
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(pgjobq({"enqueue", q, "{}", "--limit", "010"}).exit_code, 0)
        << "job " << i + 1 << " of a limit of ten";
  }
  EXPECT_EQ(pgjobq({"enqueue", q, "{}", "--limit", "010"}).exit_code, 3);
}

TEST_F(CliTest, UsageErrorsNeverPrintAPasswordGivenInTheWrongPlace) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"status", "a", kDeadPostgres},
           {kDeadPostgres},
           {"enqueue", "q", "{}", "--limit", kDeadRedis},
           {"show", kDeadPostgres}}) {
    ProcessResult r = pgjobq(args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(OneLine(r.err));
    EXPECT_FALSE(contains(r.err, kSecret)) << r.err;
  }
}

TEST_F(CliTest, HelpOnEveryCommandShowsAnExample) {
  for (const char* command : {"enqueue", "wait", "show", "reschedule", "cancel",
                              "work", "migrate", "status", "prune"}) {
    ProcessResult r = pgjobq({command, "--help"});
    EXPECT_EQ(r.exit_code, 0) << command;
    EXPECT_TRUE(contains(r.out, "Example")) << command << "\n" << r.out;
    EXPECT_TRUE(contains(r.out, std::string("pgjobq ") + command))
        << command << "\n"
        << r.out;
  }
  ProcessResult top = pgjobq({"--help"});
  EXPECT_EQ(top.exit_code, 0);
  EXPECT_TRUE(contains(top.out, "Exit codes"));
}

// ------------------------------------------------------------ migrate

TEST_F(CliTest, MigrateCreatesTheSchemaAndIsSafeToRunAgain) {
  // A database of our own that was never migrated.
  std::string name = "fresh_" + std::to_string(getpid()) + "_" +
                     std::to_string(std::random_device{}() % 1000000);
  PgConnPtr admin = connect_database(required_env("PGJOBQ_TEST_PG_ADMIN_URL"));
  PQclear(PQexec(admin.get(), ("CREATE DATABASE " + name).c_str()));
  EnvChanges fresh{{"DATABASE_URL", database_url(name)}};

  ProcessResult before = pgjobq({"status"}, {}, fresh);
  EXPECT_EQ(before.exit_code, 1);
  EXPECT_TRUE(OneLine(before.err));
  EXPECT_TRUE(contains(before.err, "pgjobq migrate")) << before.err;

  ProcessResult first = pgjobq({"migrate"}, {}, fresh);
  EXPECT_EQ(first.exit_code, 0) << first.err;
  EXPECT_TRUE(contains(first.out, "applied")) << first.out;
  EXPECT_EQ(first.err, "");
  ProcessResult again = pgjobq({"migrate"}, {}, fresh);
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_TRUE(contains(again.out, "up to date")) << again.out;
  EXPECT_EQ(again.err, "");  // no NOTICE chatter
  EXPECT_EQ(pgjobq({"enqueue", "q", "1"}, {}, fresh).exit_code, 0);

  PQclear(
      PQexec(admin.get(), ("DROP DATABASE " + name + " WITH (FORCE)").c_str()));
}

// A database migrated by a newer pgjobq holds migrations this binary does
// not know: "up to date" would be false, and an operator rolling back a
// deploy must hear that the schema is ahead of the binary.
TEST_F(CliTest, MigrateRefusesASchemaNewerThanItself) {
  int newer = schema_version() + 1;
  PgConnPtr conn = connect();
  exec(conn.get(),
       "INSERT INTO pgjobq.schema_migrations (version, name) VALUES (" +
           std::to_string(newer) + ", 'from_the_future')");
  ProcessResult r = pgjobq({"migrate"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err, "newer")) << r.err;
  EXPECT_TRUE(contains(r.err, "version " + std::to_string(newer))) << r.err;
  EXPECT_EQ(query_value("SELECT count(*) FROM pgjobq.schema_migrations"),
            std::to_string(newer));
}

// "Safe to run concurrently" under the limits production databases often
// set: a migrator waits its turn on the migration lock however long the
// one ahead takes, as a standby waits for its queue, instead of failing
// with "canceling statement due to lock timeout" (or statement timeout).
// The migrations' own statements keep those limits.
TEST_F(CliTest, MigrateWaitsItsTurnDespiteLockAndStatementTimeouts) {
  PgConnPtr admin = connect();
  exec(admin.get(),
       "ALTER DATABASE " + db_name() + " SET lock_timeout = '100ms'");
  exec(admin.get(),
       "ALTER DATABASE " + db_name() + " SET statement_timeout = '300ms'");
  PgConnPtr holder = connect();  // another migrator, taking its time
  exec(holder.get(), "SELECT pg_advisory_lock(1886220544, 0)");
  auto migrator = start({"migrate"});
  EXPECT_TRUE(wait_until([&] {
    return query_value(
               "SELECT count(*) FROM pg_locks WHERE locktype = "
               "'advisory' AND classid = 1886220544 AND objid = 0 "
               "AND NOT granted") == "1";
  })) << migrator->err();
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  EXPECT_TRUE(migrator->running()) << migrator->err();
  exec(holder.get(), "SELECT pg_advisory_unlock(1886220544, 0)");
  EXPECT_EQ(migrator->wait(std::chrono::milliseconds(10000)), 0)
      << migrator->err();
  EXPECT_TRUE(contains(migrator->out(), "up to date")) << migrator->out();
  // One line to say why it waited; nothing else.
  EXPECT_EQ(migrator->err(),
            "pgjobq: info: migrate: another migrate is running; waiting for "
            "it to finish\n");
}

// An upgrade on a live system, with an application's transaction open on
// pgjobq's tables for longer than --lock-wait: one line saying it waits
// (enqueues are let through meanwhile: MigrateTest), then the error line,
// naming the session; nothing changed. The version before 004, which
// alters pgjobq.queues.
TEST_F(CliTest, MigrateGivesUpOnALongTransactionNamingIt) {
  PgConnPtr conn = connect();
  schema_at_version(conn.get(), 3);
  PgConnPtr app = connect();
  exec(app.get(), "BEGIN");
  exec(app.get(), "LOCK TABLE pgjobq.queues IN ROW EXCLUSIVE MODE");
  ProcessResult r = pgjobq({"migrate", "--lock-wait", "1s"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_EQ(r.out, "");
  std::size_t first_end = r.err.find('\n');
  ASSERT_NE(first_end, std::string::npos) << r.err;
  EXPECT_TRUE(contains(r.err.substr(0, first_end), "info: migrate: ")) << r.err;
  std::string last = r.err.substr(first_end + 1);
  EXPECT_TRUE(OneLine(last));
  EXPECT_TRUE(contains(last, "gave up after")) << last;
  EXPECT_TRUE(contains(last, "pid " + std::to_string(PQbackendPID(app.get()))))
      << last;
  EXPECT_EQ(query_value("SELECT max(version) FROM pgjobq.schema_migrations"),
            "3");
  exec(app.get(), "COMMIT");
  r = pgjobq({"migrate", "--lock-wait", "1s"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(
      contains(r.out, "applied " + std::to_string(schema_version() - 3)))
      << r.out;
  EXPECT_EQ(pgjobq({"migrate", "--lock-wait", "soon"}).exit_code, 2);
}

// A session made read-only by the connection's own options (the URL's
// `options`, or PGOPTIONS): the error says where to look, among the
// other places the setting can come from.
TEST_F(CliTest, WorkOnAReadOnlySessionSaysWhereTheSettingMayComeFrom) {
  ProcessResult r = pgjobq(
      {"--db", db_url() + "?options=-c%20default_transaction_read_only%3Don",
       "work", "q", "--", "cat"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err, "the PostgreSQL session is read-only")) << r.err;
  EXPECT_TRUE(contains(r.err, "the connection's options")) << r.err;
}

// ------------------------------------------------------------ enqueue

TEST_F(CliTest, EnqueuePrintsTheIdAndStoresTheData) {
  std::string q = queue();
  ProcessResult r = pgjobq({"enqueue", q, R"({"to": "ada", "n": [1, 2]})"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  JobId id{std::stoll(r.out)};
  EXPECT_EQ(r.out, std::to_string(id.value) + "\n");
  EXPECT_EQ(state_of(id), "pending");
  EXPECT_EQ(json::parse(job_field(id, "data")),
            json::parse(R"({"to": "ada", "n": [1, 2]})"));
}

// A script capturing the id must not get exit 0 without it: a full disk
// or a closed stdout is an error (the job itself is stored).
TEST_F(CliTest, AnOutputThatCannotBeWrittenIsAnError) {
  std::string q = queue();
  for (const char* redirect : {">/dev/full", ">&-"}) {
    Subprocess sh({"/bin/sh", "-c",
                   std::string("exec \"$0\" enqueue \"$1\" '{}' ") + redirect,
                   PGJOBQ_CLI, q},
                  env());
    std::optional<int> code = sh.wait(milliseconds(10000));
    EXPECT_EQ(code, 1) << redirect << ": " << sh.err();
    EXPECT_TRUE(contains(sh.err(), "could not write to standard output"))
        << redirect << ": " << sh.err();
  }
  EXPECT_EQ(count_jobs(q), 2);
  Subprocess sh(
      {"/bin/sh", "-c", "exec \"$0\" status --json >/dev/full", PGJOBQ_CLI},
      env());
  EXPECT_EQ(sh.wait(milliseconds(10000)), 1) << sh.err();
  // A command that prints nothing has nothing to lose.
  JobId id = add_job(q, "{}");
  Subprocess cancel({"/bin/sh", "-c", "exec \"$0\" cancel \"$1\" >&-",
                     PGJOBQ_CLI, std::to_string(id.value)},
                    env());
  EXPECT_EQ(cancel.wait(milliseconds(10000)), 0) << cancel.err();
  EXPECT_EQ(state_of(id), "cancelled");
}

// Runs ARGV with its stdout a pipe whose reader is gone (`pgjobq ... |
// head -c0` once head has exited); returns its exit code and stderr.
ProcessResult run_with_stdout_unread(const std::vector<std::string>& argv,
                                     const EnvChanges& env,
                                     const std::string& err_path) {
  ProcessResult r;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2 failed";
    return r;
  }
  close(fds[0]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = -1;
  int rc = spawn(argv, env, &actions, nullptr, &pid);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn failed";
    return r;
  }
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = exit_code_of(status);
  std::ifstream err(err_path);
  r.err.assign(std::istreambuf_iterator<char>(err), {});
  return r;
}

// A reader that went away is a stdout that cannot be written: exit 1 with
// one line, as for a closed one, not a silent death by SIGPIPE (141) as
// the id is printed, before the queue's worker was woken.
TEST_F(CliTest, AStdoutWhoseReaderIsGoneIsAnErrorAndTheWorkerIsStillWoken) {
  std::string q = queue();
  Subscription sub(redis_url(), queue_channel(q));
  ProcessResult r = run_with_stdout_unread({PGJOBQ_CLI, "enqueue", q, "{}"},
                                           env(), dir() + "/err");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err, "could not write to standard output")) << r.err;
  EXPECT_EQ(count_jobs(q), 1);
  EXPECT_TRUE(sub.next(milliseconds(5000)).has_value())
      << "the job was enqueued but its worker not woken";
  ProcessResult status = run_with_stdout_unread(
      {PGJOBQ_CLI, "status", "--json"}, env(), dir() + "/err");
  EXPECT_EQ(status.exit_code, 1) << status.err;
  EXPECT_TRUE(OneLine(status.err));
}

TEST_F(CliTest, EnqueueReadsJsonFromStdin) {
  std::string q = queue();
  ProcessResult r = pgjobq({"enqueue", q, "-"}, "{\"from\": \"stdin\"}\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(job_field(JobId{std::stoll(r.out)}, "data")),
            json({{"from", "stdin"}}));
}

TEST_F(CliTest, EnqueueWithoutJsonStoresNull) {
  std::string q = queue();
  ProcessResult r = pgjobq({"enqueue", q});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(job_field(JobId{std::stoll(r.out)}, "data"), "null");
}

TEST_F(CliTest, EnqueueRefusesBadJsonAndStoresNothing) {
  std::string q = queue();
  struct Case {
    std::string arg;
    std::string input;
    std::string expect;
  };
  std::string many_ones;
  for (int i = 0; i < 600000; ++i) many_ones += "1,";
  std::vector<Case> cases{
      {"{\"to\": ", "", "not valid JSON"},
      {"{'single': 1}", "", "not valid JSON"},
      {"", "", "not valid JSON"},
      {"-", "{\"a\": 1} trailing", "not valid JSON"},
      {"-", "", "not valid JSON"},
      {"\"\xc3\x28\"", "", "not valid JSON"},  // invalid UTF-8
      {"\"nul \\u0000 here\"", "", "NUL"},
      {std::string(60000, '[') + std::string(60000, ']'), "", "nested"},
      {"-", "[" + many_ones + "1]", "more than the limit"},
      {"-", "\"" + std::string(1024 * 1024, 'x') + "\"", "more than the limit"},
  };
  for (const Case& c : cases) {
    ProcessResult r = pgjobq({"enqueue", q, c.arg}, c.input);
    EXPECT_EQ(r.exit_code, 1) << c.arg.substr(0, 40) << "\n" << r.err;
    EXPECT_TRUE(OneLine(r.err)) << c.arg.substr(0, 40);
    EXPECT_TRUE(contains(r.err, c.expect)) << c.arg.substr(0, 40) << "\n"
                                           << r.err;
    EXPECT_LT(r.err.size(), 1000u);
    EXPECT_EQ(r.out, "");
  }
  EXPECT_EQ(count_jobs(q), 0);
}

TEST_F(CliTest, EnqueueRefusesABadQueueNameBeforeTouchingAServer) {
  // The servers are unreachable: only a check made first can answer.
  for (const std::string& name : std::vector<std::string>{
           "has space", "", "semi;colon", "ünïcode", std::string(129, 'q')}) {
    ProcessResult r = pgjobq(
        {"--db", kDeadPostgres, "--redis", kDeadRedis, "enqueue", name, "{}"});
    EXPECT_EQ(r.exit_code, 1) << name;
    EXPECT_TRUE(OneLine(r.err)) << name;
    EXPECT_TRUE(contains(r.err, "invalid queue name")) << r.err;
  }
}

TEST_F(CliTest, EnqueueRefusesWhenTheQueueIsFull) {
  std::string q = queue();
  ASSERT_EQ(pgjobq({"enqueue", q, "1", "--limit", "2"}).exit_code, 0);
  ASSERT_EQ(pgjobq({"enqueue", q, "2", "--limit", "2"}).exit_code, 0);
  ProcessResult full = pgjobq({"enqueue", q, "3", "--limit", "2"});
  EXPECT_EQ(full.exit_code, 3);
  EXPECT_EQ(full.out, "");
  EXPECT_TRUE(OneLine(full.err));
  EXPECT_TRUE(contains(full.err, "is full")) << full.err;
  EXPECT_EQ(count_jobs(q), 2);
  // A higher limit takes it.
  EXPECT_EQ(pgjobq({"enqueue", q, "3", "--limit", "3"}).exit_code, 0);
}

TEST_F(CliTest, EnqueueWakesTheQueuesWorker) {
  std::string q = queue();
  Subscription sub(redis_url(), queue_channel(q));
  ASSERT_EQ(pgjobq({"enqueue", q, "{}"}).exit_code, 0);
  EXPECT_TRUE(sub.next(milliseconds(5000)).has_value());
}

TEST_F(CliTest, EnqueueWithRedisDownStillEnqueuesAndWarns) {
  std::string q = queue();
  ProcessResult r = pgjobq({"--redis", kDeadRedis, "enqueue", q, "{}"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err, "warning")) << r.err;
  EXPECT_FALSE(contains(r.err, kSecret)) << r.err;
  EXPECT_EQ(state_of(JobId{std::stoll(r.out)}), "pending");
}

TEST_F(CliTest, EnqueueWaitPrintsTheIdThenTheResult) {
  std::string q = queue();
  WorkerOptions o = worker_options({q});
  BackgroundWorker worker(o, [](const JobContext& job) {
    return HandlerResult::complete({{"doubled", job.data.get<int>() * 2}});
  });
  ProcessResult r = pgjobq({"enqueue", q, "21", "--wait", "--timeout", "30"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::size_t newline = r.out.find('\n');
  ASSERT_NE(newline, std::string::npos);
  JobId id{std::stoll(r.out.substr(0, newline))};
  EXPECT_EQ(json::parse(r.out.substr(newline + 1)), json({{"doubled", 42}}));
  EXPECT_EQ(state_of(id), "completed");
}

TEST_F(CliTest, EnqueueWaitTimesOut) {
  std::string q = queue();
  ProcessResult r = pgjobq({"enqueue", q, "{}", "--wait", "--timeout", "0.2"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_EQ(state_of(JobId{std::stoll(r.out)}), "pending");
}

// Against a Redis that takes connections and never answers, the wake-up
// and the wait both give up within --timeout: it used to take 2 s for the
// wake-up and 2 s more for the subscription, whatever --timeout said.
TEST_F(CliTest, EnqueueWaitTimesOutOnTimeAgainstAHungRedis) {
  test::SilentSocket hung_redis;
  std::string q = queue();
  auto started = std::chrono::steady_clock::now();
  ProcessResult r = pgjobq({"--redis", hung_redis.url(), "enqueue", q, "{}",
                            "--wait", "--timeout", "0.3"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - started,
            std::chrono::milliseconds(1500));
  // The timeout counts from the start: the wake-up the hung Redis held
  // (its bound, 2 s) comes out of it, and is not added on top.
  started = std::chrono::steady_clock::now();
  r = pgjobq({"--redis", hung_redis.url(), "enqueue", q, "{}", "--wait",
              "--timeout", "2.5"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - started,
            std::chrono::milliseconds(3500));
  EXPECT_TRUE(contains(r.err, "timed out")) << r.err;
}

// ------------------------------------------------------------ wait

class CliJobTest : public CliTest {
 protected:
  // A job that ends `failed`: a handler that always throws, tried once.
  JobId failed_job() {
    std::string q = queue();
    JobId id = add_job(q, "{}");
    WorkerOptions o = worker_options({q});
    o.on_error = ErrorPolicy::retry;
    o.max_attempts = 1;
    o.retry_delay = milliseconds(1);
    BackgroundWorker worker(o, [](const JobContext&) -> HandlerResult {
      throw std::runtime_error("printer on fire");
    });
    EXPECT_TRUE(wait_until([&] { return state_of(id) == "failed"; }));
    return id;
  }

  JobId completed_job(const json& result) {
    std::string q = queue();
    JobId id = add_job(q, "{}");
    WorkerOptions o = worker_options({q});
    BackgroundWorker worker(
        o, [&](const JobContext&) { return HandlerResult::complete(result); });
    EXPECT_TRUE(wait_until([&] { return state_of(id) == "completed"; }));
    return id;
  }
};

TEST_F(CliJobTest, WaitPrintsTheStoredResult) {
  JobId id = completed_job({{"ok", true}});
  ProcessResult r = pgjobq({"wait", std::to_string(id.value)});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "{\"ok\":true}\n");
}

TEST_F(CliJobTest, WaitSeesAJobFinishWhileWaiting) {
  std::string q = queue();
  JobId id = add_job(q, "5");
  auto waiter = start({"wait", std::to_string(id.value), "--timeout", "60"});
  WorkerOptions o = worker_options({q});
  BackgroundWorker worker(
      o, [](const JobContext&) { return HandlerResult::complete("done"); });
  EXPECT_EQ(waiter->wait(milliseconds(30000)), 0) << waiter->err();
  EXPECT_EQ(waiter->out(), "\"done\"\n");
}

TEST_F(CliJobTest, WaitTimesOutWith4) {
  JobId id = add_job(queue(), "{}");
  ProcessResult r =
      pgjobq({"wait", std::to_string(id.value), "--timeout", "150ms"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_EQ(r.out, "");
}

TEST_F(CliJobTest, WaitOnAFailedJobExits5WithItsError) {
  JobId id = failed_job();
  ProcessResult r = pgjobq({"wait", std::to_string(id.value)});
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err, "failed")) << r.err;
  EXPECT_TRUE(contains(r.err, "printer on fire")) << r.err;
}

TEST_F(CliJobTest, WaitOnACancelledJobExits5) {
  JobId id = add_job(queue(), "{}");
  ASSERT_EQ(pgjobq({"cancel", std::to_string(id.value)}).exit_code, 0);
  ProcessResult r = pgjobq({"wait", std::to_string(id.value)});
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_TRUE(contains(r.err, "cancelled")) << r.err;
}

TEST_F(CliJobTest, WaitOnAnUnknownJobExits6) {
  ProcessResult r = pgjobq({"wait", "987654321"});
  EXPECT_EQ(r.exit_code, 6);
  EXPECT_TRUE(OneLine(r.err));
}

TEST_F(CliJobTest, WaitWithRedisDownPollsPostgresql) {
  JobId id = add_job(queue(), "{}");
  auto waiter = start({"--redis", kDeadRedis, "wait", std::to_string(id.value),
                       "--timeout", "60"});
  ASSERT_EQ(pgjobq({"cancel", std::to_string(id.value)}).exit_code, 0);
  EXPECT_EQ(waiter->wait(milliseconds(30000)), 5);
  EXPECT_FALSE(contains(waiter->err(), kSecret));
}

// The wait command's PostgreSQL backend, seen from the `postgres`
// database, which stays open when the test closes its own.
class CliWaitReconnectTest : public CliJobTest {
 protected:
  std::string admin_value(const std::string& sql) const {
    PgConnPtr admin = connect_database(database_url("postgres"));
    std::unique_ptr<PGresult, decltype(&PQclear)> r(
        PQexec(admin.get(), sql.c_str()), &PQclear);
    EXPECT_NE(PQresultStatus(r.get()), PGRES_FATAL_ERROR)
        << sql << ": " << PQerrorMessage(admin.get());
    return PQntuples(r.get()) > 0 ? PQgetvalue(r.get(), 0, 0) : "";
  }
  // The waiter, named by PGAPPNAME: the test's own sessions (add_job's,
  // just closed, may linger in pg_stat_activity for a moment) are not it.
  std::unique_ptr<Subprocess> start_waiter(
      const std::vector<std::string>& args) const {
    return start(args, {{"PGAPPNAME", "pgjobq-test-waiter"}});
  }
  std::string waiters_backends() const {
    return "FROM pg_stat_activity WHERE datname = '" + db_name() +
           "' AND backend_type = 'client backend'"
           " AND application_name = 'pgjobq-test-waiter'";
  }
  // The pid of the waiter's one backend, "" while it has none (or more).
  std::string waiter_backend() const {
    return admin_value("SELECT min(pid) " + waiters_backends() +
                       " HAVING count(*) = 1");
  }
  bool waiter_connected() const { return !waiter_backend().empty(); }
  // Ends the waiter's session; returns its pid.
  std::string terminate_waiter() const {
    std::string pid = waiter_backend();
    EXPECT_FALSE(pid.empty()) << "no waiter to terminate";
    admin_value("SELECT pg_terminate_backend(" + pid + ")");
    return pid;
  }
  // Whether the waiter has a session again, not `old` (which may linger
  // in pg_stat_activity as it ends).
  bool waiter_reconnected(const std::string& old) const {
    std::string pid = waiter_backend();
    return !pid.empty() && pid != old;
  }
  void allow_connections(bool allow) const {
    admin_value("ALTER DATABASE \"" + db_name() + "\" WITH ALLOW_CONNECTIONS " +
                (allow ? "true" : "false"));
  }
};

// A PostgreSQL restart or failover ends the waiter's session; the wait
// reconnects and still sees the job finish (it used to exit 1).
TEST_F(CliWaitReconnectTest, WaitRidesOutALostPostgresqlSession) {
  std::string q = queue();
  JobId id = add_job(q, "5");
  auto waiter =
      start_waiter({"wait", std::to_string(id.value), "--timeout", "60"});
  ASSERT_TRUE(wait_until([&] { return waiter_connected(); }));
  std::string old = terminate_waiter();
  ASSERT_TRUE(wait_until([&] { return waiter_reconnected(old); }))
      << "the waiter did not reconnect: " << waiter->err();
  WorkerOptions o = worker_options({q});
  BackgroundWorker worker(
      o, [](const JobContext&) { return HandlerResult::complete("done"); });
  EXPECT_EQ(waiter->wait(milliseconds(30000)), 0) << waiter->err();
  EXPECT_EQ(waiter->out(), "\"done\"\n");
  EXPECT_TRUE(contains(waiter->err(), "reconnecting")) << waiter->err();
  EXPECT_FALSE(contains(waiter->err(), kSecret)) << waiter->err();
}

// A server that answers and refuses the reconnection (here the database
// takes no connections; a password changed, a role or a database gone are
// the same) will refuse again: the wait ends at once with that error
// (exit 1), not at its --timeout. Servers that do not answer are waited
// for (WaitOutageTest).
TEST_F(CliWaitReconnectTest, WaitGivesUpAtOnceWhenPostgresqlRefusesIt) {
  JobId id = add_job(queue(), "{}");
  auto waiter =
      start_waiter({"wait", std::to_string(id.value), "--timeout", "60"});
  ASSERT_TRUE(wait_until([&] { return waiter_connected(); }));
  allow_connections(false);
  auto cut = std::chrono::steady_clock::now();
  terminate_waiter();
  std::optional<int> code = waiter->wait(milliseconds(30000));
  auto took = std::chrono::steady_clock::now() - cut;
  allow_connections(true);
  EXPECT_EQ(code, 1) << waiter->err();
  EXPECT_LT(took, milliseconds(6000));
  EXPECT_TRUE(contains(waiter->err(), "not currently accepting connections"))
      << waiter->err();
  EXPECT_FALSE(contains(waiter->err(), kSecret)) << waiter->err();
}

// enqueue --wait waits the same way once its job is stored.
TEST_F(CliWaitReconnectTest, EnqueueWaitRidesOutALostPostgresqlSession) {
  std::string q = queue();
  auto waiter = start_waiter({"enqueue", q, "7", "--wait", "--timeout", "60"});
  ASSERT_TRUE(wait_until([&] {
    return query_value("SELECT count(*) FROM pgjobq.jobs") == "1" &&
           waiter_connected();
  }));
  std::string old = terminate_waiter();
  ASSERT_TRUE(wait_until([&] { return waiter_reconnected(old); }))
      << "the waiter did not reconnect: " << waiter->err();
  WorkerOptions o = worker_options({q});
  BackgroundWorker worker(o, [](const JobContext& job) {
    return HandlerResult::complete(job.data.get<int>() * 6);
  });
  EXPECT_EQ(waiter->wait(milliseconds(30000)), 0) << waiter->err();
  std::string out = waiter->out();
  EXPECT_EQ(out.substr(out.find('\n') + 1), "42\n") << out;
}

// ------------------------------------------------------------ show

TEST_F(CliJobTest, ShowPrintsEveryKeyWithNullsWhereUnset) {
  JobId id = add_job(queue(), R"({"to": "ada"})");
  ProcessResult r = pgjobq({"show", std::to_string(id.value)});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json job = json::parse(r.out);
  std::vector<std::string> keys;
  for (auto it = job.begin(); it != job.end(); ++it) keys.push_back(it.key());
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "attempts", "data", "enqueued_at", "error", "finished_at",
                      "id", "queue", "result", "started_at", "state"}));
  EXPECT_EQ(job["id"], id.value);
  EXPECT_EQ(job["state"], "pending");
  EXPECT_EQ(job["data"], json({{"to", "ada"}}));
  EXPECT_TRUE(job["result"].is_null());
  EXPECT_TRUE(job["error"].is_null());
  EXPECT_TRUE(job["started_at"].is_null());
  EXPECT_TRUE(job["finished_at"].is_null());
  EXPECT_EQ(job["attempts"], 0);
  // ISO 8601 in UTC: 2026-11-24T22:29:15.123456Z
  std::string at = job["enqueued_at"];
  EXPECT_EQ(at.size(), 27u) << at;
  EXPECT_EQ(at[10], 'T');
  EXPECT_EQ(at.back(), 'Z');
  // The keys come in DESIGN.md's order.
  EXPECT_LT(r.out.find("\"id\""), r.out.find("\"queue\""));
  EXPECT_LT(r.out.find("\"started_at\""), r.out.find("\"finished_at\""));
}

TEST_F(CliJobTest, ShowACompletedJobHasItsResultAndTimes) {
  JobId id = completed_job({{"sent", 3}});
  json job = json::parse(pgjobq({"show", std::to_string(id.value)}).out);
  EXPECT_EQ(job["state"], "completed");
  EXPECT_EQ(job["result"], json({{"sent", 3}}));
  EXPECT_EQ(job["attempts"], 1);
  EXPECT_TRUE(job["started_at"].is_string());
  EXPECT_TRUE(job["finished_at"].is_string());
}

TEST_F(CliJobTest, ShowAFailedJobHasItsError) {
  JobId id = failed_job();
  json job = json::parse(pgjobq({"show", std::to_string(id.value)}).out);
  EXPECT_EQ(job["state"], "failed");
  EXPECT_TRUE(contains(job["error"].get<std::string>(), "printer on fire"));
}

TEST_F(CliJobTest, ShowAnUnknownJobExits6) {
  ProcessResult r = pgjobq({"show", "987654321"});
  EXPECT_EQ(r.exit_code, 6);
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_EQ(r.out, "");
}

TEST_F(CliJobTest, AnIdBeyondEveryJobExits6) {
  for (const char* command : {"show", "wait", "cancel", "reschedule"}) {
    ProcessResult r = pgjobq({command, "99999999999999999999"});
    EXPECT_EQ(r.exit_code, 6) << command << ": " << r.err;
    EXPECT_TRUE(OneLine(r.err)) << r.err;
    EXPECT_TRUE(contains(r.err, "no job with id 99999999999999999999"))
        << r.err;
  }
}

// ------------------------------------------------------------ cancel

TEST_F(CliJobTest, CancelMakesAPendingJobCancelledAndWakesItsWaiters) {
  JobId id = add_job(queue(), "{}");
  Subscription sub(redis_url(), job_channel(id));
  ProcessResult r = pgjobq({"cancel", std::to_string(id.value)});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(state_of(id), "cancelled");
  // Job ids are per database and the test databases share one Redis: a
  // job of another test may publish on the same channel. Wait for ours.
  bool woken = false;
  for (int i = 0; i < 50 && !woken; ++i) {
    std::optional<std::string> message = sub.next(milliseconds(5000));
    if (!message) break;
    woken = *message == "null";
  }
  EXPECT_TRUE(woken);
}

TEST_F(CliJobTest, CancelOfAFinishedJobIsAnError) {
  JobId id = completed_job(1);
  ProcessResult r = pgjobq({"cancel", std::to_string(id.value)});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err, "completed")) << r.err;
  EXPECT_EQ(state_of(id), "completed");
}

TEST_F(CliJobTest, CancelOfAnUnknownJobExits6) {
  EXPECT_EQ(pgjobq({"cancel", "987654321"}).exit_code, 6);
}

TEST_F(CliJobTest, CancelWithRedisDownStillCancels) {
  JobId id = add_job(queue(), "{}");
  ProcessResult r =
      pgjobq({"--redis", kDeadRedis, "cancel", std::to_string(id.value)});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err, "warning")) << r.err;
  EXPECT_FALSE(contains(r.err, kSecret));
  EXPECT_EQ(state_of(id), "cancelled");
}

// ------------------------------------------------------------ reschedule

TEST_F(CliJobTest, RescheduleSendsTheJobToTheBackAndWakesTheWorker) {
  std::string q = queue();
  JobId first = add_job(q, "1");
  JobId second = add_job(q, "2");
  Subscription sub(redis_url(), queue_channel(q));
  ProcessResult r = pgjobq({"reschedule", std::to_string(first.value)});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(sub.next(milliseconds(5000)).has_value());
  EXPECT_GT(std::stoll(job_field(first, "position")),
            std::stoll(job_field(second, "position")));
}

TEST_F(CliJobTest, RescheduleMakesAFailedJobPendingAgain) {
  JobId id = failed_job();
  EXPECT_EQ(pgjobq({"reschedule", std::to_string(id.value)}).exit_code, 0);
  EXPECT_EQ(state_of(id), "pending");
  EXPECT_EQ(job_field(id, "attempts"), "0");
}

TEST_F(CliJobTest, RescheduleOfAnUnknownJobExits6) {
  ProcessResult r = pgjobq({"reschedule", "987654321"});
  EXPECT_EQ(r.exit_code, 6);
  EXPECT_TRUE(OneLine(r.err));
}

// ------------------------------------------------------------ status

TEST_F(CliJobTest, StatusPrintsATableAndJson) {
  std::string busy = queue("busy");
  std::string idle = queue("idle");
  add_job(busy, "1");
  add_job(busy, "2");
  JobId done = completed_job(1);
  std::string done_queue = job_field(done,
                                     "(SELECT name FROM pgjobq.queues "
                                     "WHERE id = queue_id)");
  JobId cancelled = add_job(idle, "1");
  ASSERT_EQ(pgjobq({"cancel", std::to_string(cancelled.value)}).exit_code, 0);

  ProcessResult table = pgjobq({"status"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_TRUE(contains(table.out, "QUEUE")) << table.out;
  EXPECT_TRUE(contains(table.out, "PENDING")) << table.out;
  EXPECT_TRUE(contains(table.out, "OLDEST PENDING")) << table.out;
  EXPECT_TRUE(contains(table.out, "WORKERS  STANDBYS")) << table.out;
  EXPECT_TRUE(contains(table.out, busy)) << table.out;

  ProcessResult r = pgjobq({"status", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json rows = json::parse(r.out);
  ASSERT_TRUE(rows.is_array());
  std::map<std::string, json> by_queue;
  for (const json& row : rows) by_queue[row["queue"]] = row;
  ASSERT_EQ(by_queue.count(busy), 1u) << r.out;
  EXPECT_EQ(by_queue[busy]["pending"], 2);
  EXPECT_EQ(by_queue[busy]["running"], 0);
  EXPECT_EQ(by_queue[busy]["completed"], 0);
  EXPECT_EQ(by_queue[busy]["failed"], 0);
  EXPECT_TRUE(by_queue[busy]["oldest_pending_age_seconds"].is_number());
  EXPECT_EQ(by_queue[done_queue]["completed"], 1);
  EXPECT_EQ(by_queue[idle]["cancelled"], 1);
  EXPECT_TRUE(by_queue[idle]["oldest_pending_age_seconds"].is_null());
  // No worker serves these queues.
  EXPECT_EQ(by_queue[busy]["workers"], 0);
  EXPECT_EQ(by_queue[busy]["standbys"], 0);
}

TEST_F(CliJobTest, StatusOfOneQueue) {
  std::string q = queue();
  add_job(q, "1");
  add_job(queue(), "1");
  json rows = json::parse(pgjobq({"status", q, "--json"}).out);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["queue"], q);
  EXPECT_EQ(rows[0]["pending"], 1);
  // A queue nobody used: all zero.
  rows = json::parse(pgjobq({"status", "never-used", "--json"}).out);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["pending"], 0);
  ProcessResult table = pgjobq({"status", q});
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_TRUE(contains(table.out, q));
  ProcessResult bad = pgjobq({"status", "no spaces"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(OneLine(bad.err));
  // An empty name is no name, not "every queue".
  ProcessResult empty = pgjobq({"status", ""});
  EXPECT_EQ(empty.exit_code, 1);
  EXPECT_TRUE(contains(empty.err, "invalid queue name")) << empty.err;
}

// ------------------------------------------------------------ prune

TEST_F(CliJobTest, PruneDeletesFinishedJobsOlderThanTheDuration) {
  std::string q = queue();
  JobId pending = add_job(q, "1");
  JobId old = add_job(q, "2");
  ASSERT_EQ(pgjobq({"cancel", std::to_string(old.value)}).exit_code, 0);

  ProcessResult keep = pgjobq({"prune", "--older-than", "1 day"});
  EXPECT_EQ(keep.exit_code, 0) << keep.err;
  EXPECT_EQ(keep.out, "0\n");
  EXPECT_EQ(keep.err, "");  // no progress when stderr is not a terminal
  EXPECT_EQ(state_of(old), "cancelled");

  ASSERT_TRUE(wait_until([&] {
    return query_value(
               "SELECT now() - finished_at > interval '50ms' FROM "
               "pgjobq.jobs WHERE id = " +
               std::to_string(old.value)) == "t";
  }));
  ProcessResult r = pgjobq({"prune", "--older-than", "50ms"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "1\n");
  EXPECT_EQ(state_of(old), "");  // gone
  EXPECT_EQ(state_of(pending), "pending");
}

// Runs `pgjobq ARGS...` with its stderr on a terminal (a pty); returns
// what it wrote there.
std::string stderr_on_a_terminal(const std::vector<std::string>& argv,
                                 const EnvChanges& env) {
  int master = -1;
  int slave = -1;
  if (openpty(&master, &slave, nullptr, nullptr, nullptr) != 0) {
    ADD_FAILURE() << "openpty failed";
    return "";
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, slave, 2);
  posix_spawn_file_actions_addclose(&actions, master);
  pid_t pid = -1;
  int rc = spawn(argv, env, &actions, nullptr, &pid);
  posix_spawn_file_actions_destroy(&actions);
  close(slave);
  std::string out;
  if (rc == 0) {
    // Read until the child closes the terminal (EIO), bounded by a deadline.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    char buf[4096];
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd fd{master, POLLIN, 0};
      if (poll(&fd, 1, 100) <= 0) continue;
      ssize_t n = read(master, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    int status = 0;
    waitpid(pid, &status, 0);
  } else {
    ADD_FAILURE() << "posix_spawn failed";
  }
  close(master);
  return out;
}

TEST_F(CliJobTest, PruneShowsProgressOnATerminal) {
  JobId id = add_job(queue(), "{}");
  ASSERT_EQ(pgjobq({"cancel", std::to_string(id.value)}).exit_code, 0);
  std::string err =
      stderr_on_a_terminal({PGJOBQ_CLI, "prune", "--older-than", "0s"}, env());
  EXPECT_TRUE(contains(err, "pruning: 1 finished jobs deleted")) << err;
  EXPECT_EQ(state_of(id), "");
}

// An error after the progress line goes on a line of its own: here the
// second batch waits for a job another session holds, past lock_timeout.
TEST_F(CliJobTest, AnErrorAfterPruneProgressIsALineOfItsOwn) {
  std::string q = queue();
  JobId first = add_job(q, "{}");
  // Over one batch (10,000) of finished jobs, the last one held.
  exec(connect().get(),
       "INSERT INTO pgjobq.jobs (queue_id, position, state, data, "
       "finished_at) SELECT queue_id, position + g, 'cancelled', '{}', "
       "now() - interval '1 day' FROM pgjobq.jobs, generate_series(1, "
       "10001) g WHERE id = " +
           std::to_string(first.value));
  PgConnPtr holder = connect();
  exec(holder.get(),
       "BEGIN; SELECT 1 FROM pgjobq.jobs WHERE id = (SELECT max(id) FROM "
       "pgjobq.jobs) FOR UPDATE");
  std::string err =
      stderr_on_a_terminal({PGJOBQ_CLI, "prune", "--older-than", "1h"},
                           env({{"PGOPTIONS", "-c lock_timeout=200ms"}}));
  ASSERT_TRUE(contains(err, "deleted so far")) << err;
  ASSERT_TRUE(contains(err, "pgjobq: error: prune")) << err;
  std::string before = err.substr(0, err.find("pgjobq: error: prune"));
  EXPECT_TRUE(before.ends_with("\n")) << err;
}

// ------------------------------------------------------------ connections

TEST_F(CliTest, LibpqVariablesAreUsedWithoutDatabaseUrl) {
  // postgresql://postgres@127.0.0.1:PORT/DATABASE
  std::string url = db_url();
  std::string host_port = url.substr(url.find('@') + 1);
  host_port = host_port.substr(0, host_port.find('/'));
  std::string q = queue();
  ProcessResult r =
      pgjobq({"enqueue", q, "{}"}, {},
             {{"DATABASE_URL", std::nullopt},
              {"PGHOST", host_port.substr(0, host_port.find(':'))},
              {"PGPORT", host_port.substr(host_port.find(':') + 1)},
              {"PGUSER", "postgres"},
              {"PGDATABASE", db_name()}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count_jobs(q), 1);
}

TEST_F(CliTest, UnreachablePostgresqlExits1WithoutThePassword) {
  std::string dead_conninfo =
      std::string("host=127.0.0.1 port=1 user=app password=") + kSecret;
  std::vector<std::vector<std::string>> commands{
      {"migrate"},     {"enqueue", "q", "{}"}, {"wait", "1"}, {"show", "1"},
      {"cancel", "1"}, {"reschedule", "1"},    {"status"},    {"prune"},
  };
  for (const auto& command : commands) {
    for (const EnvChanges& how : {EnvChanges{{"DATABASE_URL", kDeadPostgres}},
                                  EnvChanges{{"DATABASE_URL", dead_conninfo}},
                                  EnvChanges{{"DATABASE_URL", std::nullopt},
                                             {"PGHOST", "127.0.0.1"},
                                             {"PGPORT", "1"},
                                             {"PGPASSWORD", kSecret}}}) {
      ProcessResult r = pgjobq(command, {}, how);
      EXPECT_EQ(r.exit_code, 1) << command[0] << ": " << r.err;
      EXPECT_TRUE(OneLine(r.err)) << command[0];
      EXPECT_FALSE(contains(r.err, kSecret)) << r.err;
      EXPECT_FALSE(contains(r.out, kSecret));
    }
    std::vector<std::string> with_flag{"--db", kDeadPostgres};
    with_flag.insert(with_flag.end(), command.begin(), command.end());
    ProcessResult r = pgjobq(with_flag);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_FALSE(contains(r.err, kSecret)) << r.err;
    EXPECT_TRUE(contains(r.err, "127.0.0.1")) << r.err;
  }
}

TEST_F(CliTest, AWorkerExits1WhenPostgresqlIsUnreachable) {
  ProcessResult r = pgjobq({"--db", kDeadPostgres, "--redis", kDeadRedis,
                            "work", queue(), "--", "cat"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "pgjobq: error:")) << r.err;
  EXPECT_FALSE(contains(r.err, kSecret)) << r.err;
}

TEST_F(CliTest, ABadRedisUrlIsAnErrorWithoutThePassword) {
  ProcessResult r =
      pgjobq({"--redis", std::string("http://:") + kSecret + "@127.0.0.1:1",
              "enqueue", queue(), "{}"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_FALSE(contains(r.err, kSecret)) << r.err;
}

TEST_F(CliTest, TheDbFlagWinsOverDatabaseUrl) {
  std::string q = queue();
  ProcessResult r = pgjobq({"--db", db_url(), "enqueue", q, "{}"}, {},
                           {{"DATABASE_URL", kDeadPostgres}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count_jobs(q), 1);
}

}  // namespace
}  // namespace pgjobq::test
