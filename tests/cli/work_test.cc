// `pgjobq work QUEUE... -- CMD`, end to end: a real worker process running
// small shell commands against the test servers.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli/cli_fixture.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/jobs.h"
#include "support/sanitized.h"

namespace pgjobq::test {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

class CliWorkTest : public CliTest {
 protected:
  // `pgjobq work QUEUES... OPTIONS... -- sh -c SCRIPT`
  std::unique_ptr<Subprocess> work(
      const std::vector<std::string>& queues, const std::string& script,
      const std::vector<std::string>& options = {}) {
    std::vector<std::string> args{"work"};
    args.insert(args.end(), queues.begin(), queues.end());
    args.insert(args.end(), options.begin(), options.end());
    args.insert(args.end(), {"--", "sh", "-c", script});
    return start(args);
  }

  std::string file(const std::string& name) { return dir() + "/" + name; }
  bool exists(const std::string& name) {
    return std::filesystem::exists(file(name));
  }
  std::string read(const std::string& name) {
    std::ifstream in(file(name));
    return std::string((std::istreambuf_iterator<char>(in)), {});
  }
  void touch(const std::string& name) { std::ofstream(file(name)) << "x"; }
  // A command that creates the file "started", waits for the test to
  // touch("go"), then echoes its job's data as the result.
  std::string started_then_held_until_go() {
    return "touch " + file("started") + "; while [ ! -e " + file("go") +
           " ]; do sleep 0.01; done; cat";
  }

  // `pgjobq work QUEUES... OPTIONS... -- sh -c SCRIPT` started by a shell
  // that first runs `ulimit ULIMIT` (say "-Sn 64").
  std::unique_ptr<Subprocess> work_under_ulimit(
      const std::string& ulimit, const std::vector<std::string>& queues,
      const std::string& script, const std::vector<std::string>& options = {}) {
    std::vector<std::string> argv{"sh", "-c",
                                  "ulimit " + ulimit + " && exec \"$0\" \"$@\"",
                                  PGJOBQ_CLI, "work"};
    argv.insert(argv.end(), queues.begin(), queues.end());
    argv.insert(argv.end(), options.begin(), options.end());
    argv.insert(argv.end(), {"--", "sh", "-c", script});
    return std::make_unique<Subprocess>(argv, env());
  }

  bool finished(JobId id) {
    std::string s = state_of(id);
    return s == "completed" || s == "failed" || s == "cancelled";
  }
};

TEST_F(CliWorkTest, RunsTheCommandPerJobAndStoresItsStdoutAsTheResult) {
  std::string q = queue();
  JobId first = add_job(q, R"({"to": "ada"})");
  auto worker = work(
      {q},
      "printf '{\"data\":%s,\"id\":%s,\"queue\":\"%s\",\"attempt\":%s}' "
      "\"$(cat)\" \"$PGJOBQ_JOB_ID\" \"$PGJOBQ_QUEUE\" \"$PGJOBQ_ATTEMPT\"; "
      "echo \"handled $PGJOBQ_JOB_ID\" >&2");
  ASSERT_TRUE(wait_until([&] { return finished(first); })) << worker->err();
  EXPECT_EQ(state_of(first), "completed");
  EXPECT_EQ(json::parse(job_field(first, "result")),
            json({{"data", {{"to", "ada"}}},
                  {"id", first.value},
                  {"queue", q},
                  {"attempt", 1}}));

  // Woken over Redis: `enqueue --wait` returns the result.
  ProcessResult r =
      pgjobq({"enqueue", q, "[1, 2]", "--wait", "--timeout", "30"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json result = json::parse(r.out.substr(r.out.find('\n') + 1));
  EXPECT_EQ(result["data"], json({1, 2}));

  // The command's stderr reaches the worker's.
  EXPECT_TRUE(contains(worker->err(), "handled " + std::to_string(first.value)))
      << worker->err();
  EXPECT_TRUE(worker->running());
  // No zombies: every command was reaped.
  for (pid_t child : children_of(worker->pid())) {
    EXPECT_FALSE(process_gone(child)) << "zombie " << child;
  }
}

TEST_F(CliWorkTest, EmptyStdoutCompletesWithNull) {
  std::string q = queue();
  JobId id = add_job(q, "{}");
  auto worker = work({q}, "cat > /dev/null");
  ASSERT_TRUE(wait_until([&] { return finished(id); })) << worker->err();
  EXPECT_EQ(state_of(id), "completed");
  ProcessResult r = pgjobq({"wait", std::to_string(id.value)});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "null\n");
  EXPECT_TRUE(
      json::parse(pgjobq({"show", std::to_string(id.value)}).out)["result"]
          .is_null());
}

TEST_F(CliWorkTest, ServesSeveralQueuesSideBySide) {
  std::string slow = queue("slow");
  std::string fast = queue("fast");
  JobId blocked = add_job(slow, "\"slow\"");
  JobId quick = add_job(fast, "\"fast\"");
  // The slow queue's job waits for a file the test creates only after the
  // fast queue's job has completed.
  auto worker = work({slow, fast}, "if [ \"$PGJOBQ_QUEUE\" = " + slow +
                                       " ]; then "
                                       "while [ ! -e " +
                                       file("go") +
                                       " ]; do sleep 0.01; done; "
                                       "fi; echo '\"ok\"'");
  // The slow job cannot finish before the test says so.
  ASSERT_TRUE(wait_until([&] {
    return finished(quick) && state_of(blocked) == "running";
  })) << worker->err();
  EXPECT_EQ(state_of(quick), "completed");
  touch("go");
  ASSERT_TRUE(wait_until([&] { return finished(blocked); })) << worker->err();
  EXPECT_EQ(state_of(blocked), "completed");
}

TEST_F(CliWorkTest, Exit75SendsTheJobToTheBackOfItsQueue) {
  std::string q = queue();
  JobId a = add_job(q, "\"a\"");
  JobId b = add_job(q, "\"b\"");
  // Job a asks to be rescheduled the first time it runs.
  auto worker = work({q}, "d=$(cat); echo \"$d\" >> " + file("log") +
                              "; if [ \"$d\" = '\"a\"' ] && [ ! -e " +
                              file("a-once") + " ]; then touch " +
                              file("a-once") + "; exit 75; fi; echo \"$d\"");
  ASSERT_TRUE(wait_until([&] { return finished(a) && finished(b); }))
      << worker->err();
  EXPECT_EQ(read("log"), "\"a\"\n\"b\"\n\"a\"\n");
  EXPECT_EQ(job_field(a, "result"), "\"a\"");
  EXPECT_EQ(job_field(a, "attempts"), "1");  // a reschedule starts afresh
}

TEST_F(CliWorkTest, NonJsonStdoutIsAnErrorAndCrashExitsNonZero) {
  std::string q = queue();
  JobId id = add_job(q, "{}");
  auto worker = work({q}, "echo 'sent 3 mails'");
  std::optional<int> code = worker->wait(milliseconds(30000));
  ASSERT_TRUE(code.has_value()) << worker->err();
  EXPECT_NE(*code, 0);
  EXPECT_EQ(state_of(id), "pending");  // runs again after a restart
  EXPECT_EQ(job_field(id, "attempts"), "1");
  std::string error = job_field(id, "error");
  EXPECT_TRUE(contains(error, "not valid JSON")) << error;
  EXPECT_TRUE(contains(error, "sent 3 mails")) << error;
  EXPECT_TRUE(contains(worker->err(), "not valid JSON")) << worker->err();
}

TEST_F(CliWorkTest, CrashPolicyRecordsTheErrorAndExitsNonZero) {
  std::string q = queue();
  JobId id = add_job(q, "{}");
  JobId next = add_job(q, "{}");
  auto worker = work({q}, "exit 3", {"--on-error", "crash"});
  std::optional<int> code = worker->wait(milliseconds(30000));
  ASSERT_TRUE(code.has_value()) << worker->err();
  EXPECT_EQ(*code, 1);
  EXPECT_TRUE(contains(job_field(id, "error"), "exited with status 3"));
  EXPECT_EQ(state_of(id), "pending");
  EXPECT_EQ(state_of(next), "pending");
  EXPECT_EQ(job_field(next, "attempts"), "0");  // FIFO: never started
  // One error line, the last (DESIGN.md: every error is one clear line):
  // the job's failure and why the worker exits.
  std::string err = worker->err();
  std::string last = err.substr(err.rfind('\n', err.size() - 2) + 1);
  EXPECT_TRUE(contains(last, "pgjobq: error:")) << err;
  EXPECT_TRUE(
      contains(last, "job " + std::to_string(id.value) + " (attempt 1) failed"))
      << err;
  EXPECT_TRUE(contains(last, "exited with status 3")) << err;
  EXPECT_TRUE(contains(last, "stopping (--on-error crash)")) << err;
  std::size_t error_lines = 0;
  for (std::size_t at = err.find("pgjobq: error:"); at != std::string::npos;
       at = err.find("pgjobq: error:", at + 1)) {
    ++error_lines;
  }
  EXPECT_EQ(error_lines, 1u) << err;
}

TEST_F(CliWorkTest, TheEndOfAFailedCommandsStderrIsRecordedOnTheJob) {
  std::string q = queue();
  JobId id = add_job(q, "{}");
  auto worker = work({q},
                     "echo 'connecting to smtp.example' >&2; "
                     "echo 'error: timed out' >&2; exit 3");
  std::optional<int> code = worker->wait(milliseconds(30000));
  ASSERT_TRUE(code.has_value()) << worker->err();
  EXPECT_EQ(*code, 1);
  std::string error = job_field(id, "error");
  EXPECT_TRUE(contains(error,
                       "exited with status 3; its stderr was: \"connecting "
                       "to smtp.example error: timed out\""))
      << error;
  // It also went on to the worker's stderr as it came, line by line.
  EXPECT_TRUE(contains(worker->err(),
                       "\nconnecting to smtp.example\nerror: timed out\n"))
      << worker->err();
}

TEST_F(CliWorkTest, RetryPolicyGivesUpAfterMaxAttempts) {
  std::string q = queue();
  JobId id = add_job(q, "{}");
  auto worker = work(
      {q}, "echo nope >&2; exit 9",
      {"--on-error", "retry", "--max-attempts", "2", "--retry-delay", "10ms"});
  ASSERT_TRUE(wait_until([&] { return finished(id); }, milliseconds(30000)))
      << worker->err();
  EXPECT_EQ(state_of(id), "failed");
  EXPECT_EQ(job_field(id, "attempts"), "2");
  ProcessResult r = pgjobq({"wait", std::to_string(id.value)});
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_TRUE(worker->running());  // retry never exits
}

TEST_F(CliWorkTest, JobTimeoutKillsTheWholeProcessGroup) {
  std::string q = queue();
  JobId id = add_job(q, "{}");
  auto worker = work({q},
                     "sleep 60 & echo $! > " + file("bg") + "; echo $$ > " +
                         file("sh") + "; sleep 60",
                     {"--job-timeout", "300ms"});
  std::optional<int> code = worker->wait(milliseconds(30000));
  ASSERT_TRUE(code.has_value()) << worker->err();
  EXPECT_EQ(*code, 1);  // the crash policy: a timeout is an error
  EXPECT_TRUE(contains(job_field(id, "error"), "timed out"))
      << job_field(id, "error");
  EXPECT_EQ(state_of(id), "pending");
  ASSERT_TRUE(exists("bg") && exists("sh"));
  EXPECT_TRUE(wait_until([&] { return process_gone(std::stoi(read("bg"))); }));
  EXPECT_TRUE(wait_until([&] { return process_gone(std::stoi(read("sh"))); }));
}

TEST_F(CliWorkTest, SigtermLetsTheRunningJobFinishThenExits0) {
  std::string q = queue();
  JobId running = add_job(q, "1");
  JobId waiting = add_job(q, "2");
  auto worker = work({q}, started_then_held_until_go());
  ASSERT_TRUE(wait_until([&] { return exists("started"); })) << worker->err();
  worker->signal(SIGTERM);
  // The job is not interrupted: the worker waits for it.
  ASSERT_TRUE(wait_until([&] {
    return contains(worker->err(), "finishing the running job");
  })) << worker->err();
  EXPECT_TRUE(worker->running());
  EXPECT_EQ(state_of(running), "running");
  touch("go");
  EXPECT_EQ(worker->wait(milliseconds(30000)), 0) << worker->err();
  EXPECT_EQ(state_of(running), "completed");
  EXPECT_EQ(job_field(running, "result"), "1");
  EXPECT_EQ(state_of(waiting), "pending");
  EXPECT_EQ(job_field(waiting, "attempts"), "0");
}

TEST_F(CliWorkTest, SigintBehavesLikeSigterm) {
  std::string q = queue();
  auto worker = work({q}, "cat");
  ASSERT_TRUE(wait_until([&] { return contains(worker->err(), "serving"); }))
      << worker->err();
  worker->signal(SIGINT);
  EXPECT_EQ(worker->wait(milliseconds(30000)), 0) << worker->err();
}

// A closed terminal must not cut a job short: SIGHUP stops the worker as
// SIGTERM does (it used to kill it, leaving the job `running`), and a
// second one (the shell's, then the kernel's) does not stop it at once.
TEST_F(CliWorkTest, SighupLetsTheRunningJobFinishLikeSigterm) {
  std::string q = queue();
  JobId id = add_job(q, "7");
  auto worker = work({q}, started_then_held_until_go());
  ASSERT_TRUE(wait_until([&] { return exists("started"); })) << worker->err();
  worker->signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] {
    return contains(worker->err(), "SIGHUP: finishing the running job");
  })) << worker->err();
  worker->signal(SIGHUP);
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_TRUE(worker->running()) << worker->err();
  touch("go");
  EXPECT_EQ(worker->wait(milliseconds(30000)), 0) << worker->err();
  EXPECT_EQ(state_of(id), "completed");
  EXPECT_EQ(job_field(id, "result"), "7");
}

// Started with SIGHUP ignored (`nohup pgjobq work ...`), the worker keeps
// ignoring it and serves on.
TEST_F(CliWorkTest, AWorkerStartedUnderNohupIgnoresSighup) {
  std::string q = queue();
  JobId first = add_job(q, "3");
  JobId second = add_job(q, "4");
  signal(SIGHUP, SIG_IGN);  // inherited by the worker, as nohup does
  auto worker = work({q}, started_then_held_until_go());
  signal(SIGHUP, SIG_DFL);
  ASSERT_TRUE(wait_until([&] { return exists("started"); })) << worker->err();
  worker->signal(SIGHUP);
  std::this_thread::sleep_for(milliseconds(300));
  touch("go");
  // It serves on: the next job runs too.
  ASSERT_TRUE(wait_until([&] { return state_of(second) == "completed"; }))
      << worker->err();
  EXPECT_EQ(state_of(first), "completed");
  EXPECT_TRUE(worker->running());
  EXPECT_FALSE(contains(worker->err(), "SIGHUP")) << worker->err();
  worker->signal(SIGTERM);
  EXPECT_EQ(worker->wait(milliseconds(30000)), 0) << worker->err();
}

// Started with SIGCHLD ignored (a parent that ignores it passes that on
// through exec), the worker still sees each command exit. (Before: the
// kernel reaped the commands at once, the worker never saw one end, and
// it spun at 100% CPU with the job running forever, deaf to SIGTERM.)
TEST_F(CliWorkTest, AWorkerStartedWithSigchldIgnoredStillSeesItsCommandsEnd) {
  std::string q = queue();
  JobId first = add_job(q, "5");
  JobId second = add_job(q, "6");
  signal(SIGCHLD, SIG_IGN);  // inherited by the worker
  auto worker = work({q}, "cat");
  signal(SIGCHLD, SIG_DFL);
  ASSERT_TRUE(wait_until([&] { return finished(second); })) << worker->err();
  EXPECT_EQ(state_of(first), "completed");
  EXPECT_EQ(job_field(first, "result"), "5");
  EXPECT_EQ(job_field(second, "result"), "6");
  worker->signal(SIGTERM);
  EXPECT_EQ(worker->wait(milliseconds(30000)), 0) << worker->err();
}

// As PID 1 (a container's entrypoint, no init), the worker is the parent
// of every orphan: a process a command leaves behind (killed as the
// command exits) must not stay a zombie. (Before: one zombie per such job,
// forever, until the container's pids ran out and commands could no
// longer start.) SIGTERM still lets the job finish, then exits 0.
TEST_F(CliWorkTest, AsPid1TheWorkerLeavesNoZombies) {
  if (access("/usr/bin/unshare", X_OK) != 0 ||
      run_process({"/usr/bin/unshare", "--pid", "--fork", "true"}).exit_code !=
          0) {
    GTEST_SKIP() << "needs unshare(1) and the right to a PID namespace";
  }
  std::string q = queue();
  std::vector<JobId> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(add_job(q, std::to_string(i)));
  std::vector<std::string> argv{"/usr/bin/unshare",
                                "--pid",
                                "--fork",
                                "--kill-child",
                                PGJOBQ_CLI,
                                "work",
                                q,
                                "--",
                                "sh",
                                "-c",
                                "(sleep 60 >/dev/null 2>&1 &); cat"};
  Subprocess unshare(argv, env());
  ASSERT_TRUE(wait_until([&] { return finished(ids.back()); }))
      << unshare.err();
  for (JobId id : ids) EXPECT_EQ(state_of(id), "completed");
  std::vector<pid_t> pid1 = children_of(unshare.pid());
  ASSERT_EQ(pid1.size(), 1u);
  // A child listed that is gone by its state is a zombie (or being reaped
  // this very moment: looked at again).
  auto zombies = [&] {
    std::vector<pid_t> found;
    for (pid_t child : children_of(pid1.front())) {
      if (process_gone(child)) found.push_back(child);
    }
    return found;
  };
  EXPECT_TRUE(wait_until([&] { return zombies().empty(); }))
      << zombies().size() << " zombie(s)";
  kill(pid1.front(), SIGTERM);
  EXPECT_EQ(unshare.wait(milliseconds(30000)), 0) << unshare.err();
}

// A queue name may begin with '-' (DESIGN.md: letters, digits and
// `_ - . : /`). Among the QUEUE arguments it reads as an option, so
// --queue=NAME (or --queue NAME) names it; it adds to the QUEUE arguments.
// No queue at all is still a usage error. (Before: no `pgjobq work` command
// line could serve such a queue.)
TEST_F(CliWorkTest,
       AQueueWhoseNameBeginsWithADashIsServedThroughTheQueueOption) {
  std::string dashed = "-" + queue();
  std::string plain = queue();
  JobId a = add_job(dashed, "1");
  JobId b = add_job(plain, "2");
  JobId c = add_job("--" + plain, "3");
  auto worker =
      work({plain}, "cat", {"--queue=" + dashed, "--queue", "--" + plain});
  ASSERT_TRUE(wait_until([&] {
    return finished(a) && finished(b) && finished(c);
  })) << worker->err();
  EXPECT_EQ(job_field(a, "result"), "1");
  EXPECT_EQ(job_field(b, "result"), "2");
  EXPECT_EQ(job_field(c, "result"), "3");
  worker->signal(SIGTERM);
  EXPECT_EQ(worker->wait(milliseconds(30000)), 0) << worker->err();
  ProcessResult none = pgjobq({"work", "--", "true"});
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_TRUE(contains(none.err, "QUEUE is required")) << none.err;
}

TEST_F(CliWorkTest, ASecondSignalKillsTheCommandAndExitsAtOnce) {
  std::string q = queue();
  JobId id = add_job(q, "{}");
  auto worker = work({q}, "echo $$ > " + file("sh") + "; sleep 60");
  ASSERT_TRUE(wait_until([&] { return exists("sh") && !read("sh").empty(); }))
      << worker->err();
  worker->signal(SIGTERM);
  ASSERT_TRUE(wait_until(
      [&] { return contains(worker->err(), "finishing the running job"); }));
  worker->signal(SIGTERM);
  std::optional<int> code = worker->wait(milliseconds(10000));
  ASSERT_TRUE(code.has_value()) << worker->err();
  EXPECT_NE(*code, 0);
  EXPECT_TRUE(wait_until([&] { return process_gone(std::stoi(read("sh"))); }));
  // The job was not finished; a worker runs it again later.
  EXPECT_EQ(state_of(id), "running");
}

TEST_F(CliWorkTest, AWorkerKilledWithSigkillTakesItsCommandsGroupWithIt) {
  // Otherwise the command would go on beside the job's next attempt on a
  // standby: two runs of one queue at once.
  std::string q = queue();
  JobId id = add_job(q, "{}");
  auto worker = work({q}, "sleep 60 & echo $! > " + file("bg") +
                              "; echo $$ > " + file("sh") + "; sleep 60");
  ASSERT_TRUE(wait_until([&] { return exists("sh") && !read("sh").empty(); }))
      << worker->err();
  ASSERT_TRUE(exists("bg"));
  pid_t shell = std::stoi(read("sh"));
  pid_t background = std::stoi(read("bg"));
  worker->signal(SIGKILL);
  ASSERT_TRUE(worker->wait(milliseconds(10000)).has_value());
  EXPECT_TRUE(wait_until([&] { return process_gone(shell); }));
  EXPECT_TRUE(wait_until([&] { return process_gone(background); }));
  EXPECT_EQ(state_of(id), "running");  // a worker runs it again later
}

TEST_F(CliWorkTest, EndlessStdoutIsAnError) {
  std::string q = queue();
  JobId id = add_job(q, "{}");
  auto worker = work(
      {q}, "yes",
      {"--on-error", "retry", "--max-attempts", "1", "--retry-delay", "1ms"});
  ASSERT_TRUE(wait_until([&] { return finished(id); }, milliseconds(30000)))
      << worker->err();
  EXPECT_EQ(state_of(id), "failed");
  EXPECT_TRUE(contains(job_field(id, "error"), "bytes to stdout"))
      << job_field(id, "error");
}

// The command line of the command is quoted in the job's error and in the
// worker's log. A password in it (a URL handed to the handler, PGPASSWORD
// passed on) must not be, as no URL's password ever is.
TEST_F(CliWorkTest, PasswordsInTheCommandLineReachNeitherTheLogNorTheJob) {
  std::string q = queue();
  JobId id = add_job(q, "{}");
  const std::string url_secret = "Url-Secret-5521";
  const std::string env_secret = "Env-Secret-8130";
  // PGPASSWORD is not asked for: the test servers trust loopback.
  auto worker =
      start({"work", q, "--", "sh", "-c", "exit 3",
             "postgresql://app:" + url_secret + "@127.0.0.1/app", env_secret},
            {{"PGPASSWORD", env_secret}});
  std::optional<int> code = worker->wait(milliseconds(30000));
  ASSERT_TRUE(code.has_value()) << worker->err();
  EXPECT_EQ(*code, 1);
  std::string error = job_field(id, "error");
  EXPECT_TRUE(contains(error, "exited with status 3")) << error;
  EXPECT_TRUE(contains(error, "postgresql://app:***@")) << error;
  for (const std::string& secret : {url_secret, env_secret}) {
    EXPECT_FALSE(contains(error, secret)) << error;
    EXPECT_FALSE(contains(worker->err(), secret)) << worker->err();
  }
}

// The processes a command leaves behind belong to its job: they end when
// it ends. Otherwise a failed attempt's processes run on beside the job's
// next attempts, and past the worker's own exit.
TEST_F(CliWorkTest, ProcessesACommandLeavesBehindEndWithItsJob) {
  std::string q = queue();
  JobId id = add_job(q, "\"fail\"");
  JobId ok = add_job(q, "\"ok\"");
  auto worker = work(
      {q},
      "sleep 60 >/dev/null 2>&1 & echo $! >> " + file("bg") +
          "; [ \"$(cat)\" = '\"ok\"' ] && exit 0; exit 3",
      {"--on-error", "retry", "--max-attempts", "2", "--retry-delay", "10ms"});
  ASSERT_TRUE(wait_until([&] { return finished(id) && finished(ok); },
                         milliseconds(30000)))
      << worker->err();
  EXPECT_EQ(state_of(id), "failed");
  EXPECT_EQ(state_of(ok), "completed");
  std::istringstream pids(read("bg"));
  int count = 0;
  for (pid_t pid; pids >> pid; ++count) {
    EXPECT_TRUE(wait_until([&] { return process_gone(pid); }))
        << "process " << pid << " of a finished attempt still runs";
  }
  EXPECT_EQ(count, 3);
  // Under the crash policy the worker exits after the error: nothing the
  // command started outlives it.
  std::string crash_q = queue("crash");
  add_job(crash_q, "{}");
  auto crashing = work({crash_q}, "sleep 60 >/dev/null 2>&1 & echo $! > " +
                                      file("crash-bg") + "; exit 3");
  ASSERT_TRUE(crashing->wait(milliseconds(30000)).has_value())
      << crashing->err();
  ASSERT_TRUE(exists("crash-bg"));
  EXPECT_TRUE(
      wait_until([&] { return process_gone(std::stoi(read("crash-bg"))); }));
}

// A descriptor per queue and some five per running command: 250 busy
// queues passed the usual soft limit of 1,024. The worker raises its soft
// limit to the hard one; its commands get the limit it was started with.
TEST_F(CliWorkTest, RaisesItsOpenFileLimitButNotItsCommands) {
  rlimit ours{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &ours), 0);
  if (ours.rlim_max != RLIM_INFINITY && ours.rlim_max <= 64) {
    GTEST_SKIP() << "the hard open-file limit is only " << ours.rlim_max;
  }
  std::string q = queue();
  JobId id = add_job(q, "{}");
  auto worker = work_under_ulimit("-Sn 64", {q}, "ulimit -Sn");
  ASSERT_TRUE(wait_until([&] { return finished(id); })) << worker->err();
  EXPECT_EQ(job_field(id, "result"), "64");
  std::ifstream limits("/proc/" + std::to_string(worker->pid()) + "/limits");
  std::string line;
  while (std::getline(limits, line) && !line.starts_with("Max open files")) {
  }
  std::istringstream fields(line.substr(std::string("Max open files").size()));
  std::string soft;
  std::string hard;
  fields >> soft >> hard;
  EXPECT_EQ(soft, hard) << line;
  EXPECT_NE(soft, "64") << line;
}

// A worker that cannot have a thread for each queue (a limit on processes:
// RLIMIT_NPROC, a cgroup's pids.max) stops the threads it started and exits
// 1 with one line. (Before: std::terminate, "terminate called after
// throwing an instance of 'std::system_error'", and a core dump.)
TEST_F(CliWorkTest, TooFewThreadsForItsQueuesIsOneErrorLine) {
  // Root is exempt from RLIMIT_NPROC: run as nobody, whose processes this
  // is the only one of.
  if (geteuid() != 0 || access("/usr/bin/setpriv", X_OK) != 0 ||
      access("/usr/bin/prlimit", X_OK) != 0) {
    GTEST_SKIP() << "needs root, setpriv and prlimit (util-linux)";
  }
  std::vector<std::string> argv{
      "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
      "/usr/bin/prlimit", "--nproc=12",    PGJOBQ_CLI,      "work"};
  for (int i = 0; i < 40; ++i) argv.push_back(queue("threads"));
  argv.insert(argv.end(), {"--", "true"});
  Subprocess worker(argv, env());
  std::optional<int> code = worker.wait(milliseconds(30000));
  ASSERT_TRUE(code.has_value()) << worker.err();
  EXPECT_EQ(*code, 1) << worker.err();
  std::string err = worker.err();
  std::string last = err.substr(err.rfind('\n', err.size() - 2) + 1);
  EXPECT_TRUE(contains(last,
                       "pgjobq: error: worker: cannot start a thread "
                       "for each of its 40 queue(s)"))
      << err;
}

// At its hard limit, a worker whose queues' commands take every descriptor
// makes the next command wait for one, rather than fail a job that never
// ran. (Before: "cannot create a pipe: Too many open files" was the job's
// error, and with --max-attempts 1 the job ended failed.)
TEST_F(CliWorkTest, CommandsWaitForDescriptorsRatherThanFailTheirJobs) {
  if (test::kSanitized) {
    // Their runtime probes memory through a pipe of its own: out of
    // descriptors, UBSan took std::generic_category() for an invalid
    // vptr and ended the worker.
    GTEST_SKIP() << "the sanitizers need descriptors of their own";
  }
  std::vector<std::string> queues;
  std::vector<JobId> ids;
  for (int i = 0; i < 6; ++i) {
    queues.push_back(queue("fd" + std::to_string(i)));
    ids.push_back(add_job(queues.back(), std::to_string(i)));
  }
  // Six sessions, six Redis publishers, the subscriber and the standard
  // descriptors take some 20 of the 30: room for one or two commands.
  auto worker =
      work_under_ulimit("-n 30", queues, "sleep 0.3; cat",
                        {"--on-error", "retry", "--max-attempts", "1"});
  ASSERT_TRUE(wait_until(
      [&] {
        return std::all_of(ids.begin(), ids.end(),
                           [&](JobId id) { return finished(id); });
      },
      milliseconds(30000)))
      << worker->err();
  for (std::size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(state_of(ids[i]), "completed") << job_field(ids[i], "error");
    EXPECT_EQ(job_field(ids[i], "attempts"), "1");
    EXPECT_EQ(job_field(ids[i], "result"), std::to_string(i));
  }
  // It did run short.
  EXPECT_TRUE(contains(worker->err(), "Too many open files")) << worker->err();
  EXPECT_TRUE(worker->running()) << worker->err();
}

}  // namespace
}  // namespace pgjobq::test
