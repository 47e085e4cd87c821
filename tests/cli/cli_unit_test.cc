// The command line's parsing and its command runner, without servers.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <stop_token>
#include <string>
#include <thread>

#include "cli/command_runner.h"
#include "cli/common.h"
#include "cli/json_input.h"
#include "cli/subprocess.h"
#include "cli/work_command.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"

namespace pgjobq::cli {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Whether `condition` holds within ten seconds.
bool eventually(const std::function<bool()>& condition) {
  auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return true;
}

int usage_code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ExitError& e) {
    return e.code();
  }
  return -1;
}

TEST(CliDuration, ParsesNumbersWithUnits) {
  EXPECT_EQ(parse_duration("30s", "--x"), seconds(30));
  EXPECT_EQ(parse_duration("15m", "--x"), std::chrono::minutes(15));
  EXPECT_EQ(parse_duration("7d", "--x"), std::chrono::hours(24 * 7));
  EXPECT_EQ(parse_duration("2w", "--x"), std::chrono::hours(24 * 14));
  EXPECT_EQ(parse_duration("3h", "--x"), std::chrono::hours(3));
  EXPECT_EQ(parse_duration("250ms", "--x"), milliseconds(250));
  EXPECT_EQ(parse_duration("5us", "--x"), microseconds(5));
  EXPECT_EQ(parse_duration("1.5m", "--x"), seconds(90));
  EXPECT_EQ(parse_duration("0s", "--x"), microseconds(0));
}

TEST(CliDuration, AddsTermsAndReadsSpelledOutUnits) {
  EXPECT_EQ(parse_duration("1h30m", "--x"), std::chrono::minutes(90));
  EXPECT_EQ(parse_duration("2d 12h", "--x"), std::chrono::hours(60));
  EXPECT_EQ(parse_duration("7 days", "--x", false), std::chrono::hours(24 * 7));
  EXPECT_EQ(parse_duration("1 hour 5 minutes", "--x"),
            std::chrono::minutes(65));
  EXPECT_EQ(parse_duration("5 s", "--x"), seconds(5));
  EXPECT_EQ(parse_duration("1.5sec", "--x"), milliseconds(1500));
  EXPECT_EQ(parse_duration("2weeks", "--x"), std::chrono::hours(24 * 14));
}

TEST(CliDuration, BareNumbersAreSecondsWhereAllowed) {
  EXPECT_EQ(parse_duration("2", "--timeout"), seconds(2));
  EXPECT_EQ(parse_duration("0.25", "--timeout"), milliseconds(250));
  EXPECT_EQ(usage_code_of([] { parse_duration("7", "--older-than", false); }),
            kExitUsage);
}

TEST(CliDuration, RefusesWhatIsNotADuration) {
  for (const char* bad :
       {"",       "s",    "-5s",   "5x",         " 5s",      "5s ",
        "1..2s",  ".5s",  "5.s",   "abc",        "1e3s",     "99999999999d",
        "5sm",    "1h30", "30 1h", "5 days ago", "3650d 1d", "5s,3s",
        "1h-30m", "Ms"}) {
    EXPECT_EQ(usage_code_of([&] { parse_duration(bad, "--older-than"); }),
              kExitUsage)
        << bad;
  }
  try {
    parse_duration("5x", "--older-than");
  } catch (const ExitError& e) {
    EXPECT_NE(std::string(e.what()).find("--older-than"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("unit"), std::string::npos);
  }
}

TEST(CliJobId, ParsesPositiveIntegersOnly) {
  EXPECT_EQ(parse_job_id("42").value, 42);
  EXPECT_EQ(parse_job_id("9223372036854775807").value, 9223372036854775807LL);
  for (const char* bad : {"", "-", "+1", "1.5", "abc", "12a", " 1", "1 ", "--1",
                          "1-", "0x10", "99999999999999999999a"}) {
    EXPECT_EQ(usage_code_of([&] { parse_job_id(bad); }), kExitUsage) << bad;
  }
  // Integers no job can have (0, negative, beyond a bigint) are well
  // formed, and name no job.
  for (const char* none :
       {"0", "-1", "-0", "-9223372036854775808", "-9223372036854775809",
        "9223372036854775808", "99999999999999999999"}) {
    EXPECT_EQ(usage_code_of([&] { parse_job_id(none); }), kExitNoSuchJob)
        << none;
  }
}

TEST(CliFormat, AgesReadEasily) {
  EXPECT_EQ(format_age(milliseconds(850)), "850ms");
  EXPECT_EQ(format_age(milliseconds(42100)), "42.1s");
  EXPECT_EQ(format_age(seconds(187)), "3m07s");
  EXPECT_EQ(format_age(std::chrono::minutes(302)), "5h02m");
  EXPECT_EQ(format_age(std::chrono::hours(52)), "2d04h");
}

TEST(CliJson, ParsesDocumentsOfAnyKind) {
  EXPECT_EQ(parse_json("{\"a\": [1, 2]}", "job data", 1000),
            nlohmann::json({{"a", {1, 2}}}));
  EXPECT_EQ(parse_json("null", "job data", 1000), nlohmann::json());
  EXPECT_EQ(parse_json(" \"x\" \n", "job data", 1000), nlohmann::json("x"));
}

TEST(CliJson, RefusesMalformedJsonWithThePosition) {
  try {
    parse_json("{\"a\": }", "job data", 1000);
    FAIL();
  } catch (const InvalidInput& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("job data is not valid JSON"), std::string::npos);
    EXPECT_NE(what.find("column"), std::string::npos);
    EXPECT_EQ(what.find("[json.exception"), std::string::npos);
  }
  EXPECT_THROW(parse_json("", "job data", 1000), InvalidInput);
  EXPECT_THROW(parse_json("{} {}", "job data", 1000), InvalidInput);
  EXPECT_THROW(parse_json("\"\xff\"", "job data", 1000), InvalidInput);
}

TEST(CliJson, RefusesAbsurdNestingBeforeParsing) {
  // Deep enough to hurt a recursive parser or printer.
  std::string deep(200000, '[');
  try {
    parse_json(deep, "job data", kDefaultMaxPayloadBytes);
    FAIL();
  } catch (const InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("nested deeper than 256"),
              std::string::npos);
  }
  std::string ok = std::string(256, '[') + std::string(256, ']');
  EXPECT_NO_THROW(parse_json(ok, "job data", kDefaultMaxPayloadBytes));
  std::string too_deep = std::string(257, '[') + std::string(257, ']');
  EXPECT_THROW(parse_json(too_deep, "job data", kDefaultMaxPayloadBytes),
               InvalidInput);
  // Brackets inside strings do not count.
  EXPECT_EQ(json_nesting_depth("[\"[[[[\\\"[[\"]", 10), 1);
}

TEST(CliJson, RefusesNulAndOversizedDocuments) {
  EXPECT_THROW(parse_json("\"a\\u0000b\"", "job data", 1000), InvalidInput);
  EXPECT_THROW(parse_json("{\"a\\u0000\": 1}", "job data", 1000), InvalidInput);
  std::string big = "\"" + std::string(2000, 'x') + "\"";
  try {
    parse_json(big, "job data", 1000);
    FAIL();
  } catch (const InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("more than the limit of 1000"),
              std::string::npos);
  }
  // The limit applies to the compact form, not to the whitespace around it.
  std::string spaced = "[" + std::string(3000, ' ') + "1]";
  EXPECT_NO_THROW(parse_json(spaced, "job data", 1000));
}

TEST(CliSplit, WorkTakesTheCommandAfterTheSeparator) {
  std::vector<std::string> command;
  bool separator = false;
  auto rest = split_command(
      {"--db", "x", "work", "a", "b", "--", "sh", "-c", "echo -- hi"}, command,
      separator);
  EXPECT_TRUE(separator);
  EXPECT_EQ(rest, (std::vector<std::string>{"--db", "x", "work", "a", "b"}));
  EXPECT_EQ(command, (std::vector<std::string>{"sh", "-c", "echo -- hi"}));
}

TEST(CliSplit, OtherCommandsKeepTheirSeparator) {
  std::vector<std::string> command;
  bool separator = false;
  std::vector<std::string> args{"enqueue", "q", "--", "-5"};
  EXPECT_EQ(split_command(args, command, separator), args);
  EXPECT_FALSE(separator);
  // A --db value that happens to be "work" does not make a work command.
  args = {"--db", "work", "status", "--", "x"};
  EXPECT_EQ(split_command(args, command, separator), args);
  EXPECT_FALSE(separator);
  args = {"work", "q"};
  EXPECT_EQ(split_command(args, command, separator), args);
  EXPECT_FALSE(separator);
  EXPECT_TRUE(command.empty());
}

TEST(CliExitCode, FollowsDesignMd) {
  EXPECT_EQ(exit_code_for(Error("x")), kExitError);
  EXPECT_EQ(exit_code_for(ConnectionError("x")), kExitError);
  EXPECT_EQ(exit_code_for(InvalidInput("x")), kExitError);
  EXPECT_EQ(exit_code_for(DatabaseError("x", "42P01")), kExitError);
  EXPECT_EQ(exit_code_for(WrongState("x", JobState::running)), kExitError);
  EXPECT_EQ(exit_code_for(Timeout("x")), kExitTimeout);
  EXPECT_EQ(exit_code_for(JobFailed("x", JobState::failed, "e")),
            kExitJobFailed);
  EXPECT_EQ(exit_code_for(JobFailed("x", JobState::cancelled, "")),
            kExitJobFailed);
  EXPECT_EQ(exit_code_for(NoSuchJob(JobId{3})), kExitNoSuchJob);
  EXPECT_EQ(exit_code_for(ExitError(kExitQueueFull, "x")), kExitQueueFull);
  EXPECT_EQ(exit_code_for(usage_error("x")), kExitUsage);
  EXPECT_EQ(exit_code_for(std::runtime_error("x")), kExitError);
}

TEST(CliSecrets, OneLineScrubsSecretsAndLineBreaks) {
  EXPECT_EQ(one_line("cannot connect: pw1 at\nhost\r\n", {"pw1"}),
            "cannot connect: *** at host");
  EXPECT_EQ(one_line("a\tb\x01"
                     "c"),
            "a b c");
}

TEST(CliEscape, KeepsMessagesPrintableAndShort) {
  EXPECT_EQ(escape_bytes("ok \"x\""), "ok \"x\"");
  EXPECT_EQ(escape_bytes(std::string("a\0b\n\xff", 5)), "a\\x00b\\n\\xff");
  EXPECT_EQ(escape_bytes("abcdef", 3), "abc...");
}

// ---------------------------------------------------------------- runner

class CliRunnerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // As `pgjobq work` does: a command that exits without reading its
    // input must not kill us with SIGPIPE.
    signal(SIGPIPE, SIG_IGN);
  }
  void SetUp() override {
    char tmpl[] = "/tmp/pgjobq-runner-test.XXXXXX";
    ASSERT_TRUE(mkdtemp(tmpl));
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  static CommandRunner shell(const std::string& script,
                             std::size_t max_output = kDefaultMaxPayloadBytes,
                             milliseconds grace = milliseconds(2000)) {
    return CommandRunner({"sh", "-c", script}, max_output, grace);
  }
  static CommandOutcome run(CommandRunner& runner, std::string_view input = {},
                            std::stop_token stop = {}) {
    return runner.run(input, {{"PGJOBQ_QUEUE", "q"}}, stop);
  }
  static HandlerResult handle(CommandRunner& runner,
                              const nlohmann::json& data = nullptr) {
    JobContext job{JobId{7}, "mail", data, 2, nullptr, {}};
    return runner.handle(job);
  }
  std::string read(const std::string& name) const {
    std::ifstream in(dir_ + "/" + name);
    std::string s;
    std::getline(in, s);
    return s;
  }
  bool exists(const std::string& name) const {
    return std::filesystem::exists(dir_ + "/" + name);
  }

  std::string dir_;
};

TEST_F(CliRunnerTest, PassesStdinAndTheJobsEnvironment) {
  CommandRunner runner = shell(
      "printf '{\"in\":%s,\"id\":%s,\"queue\":\"%s\",\"attempt\":%s}' "
      "\"$(cat)\" \"$PGJOBQ_JOB_ID\" \"$PGJOBQ_QUEUE\" \"$PGJOBQ_ATTEMPT\"");
  HandlerResult r = handle(runner, {{"to", "ada"}});
  EXPECT_FALSE(r.rescheduled());
  EXPECT_EQ(r.result(), nlohmann::json({{"in", {{"to", "ada"}}},
                                        {"id", 7},
                                        {"queue", "mail"},
                                        {"attempt", 2}}));
}

TEST_F(CliRunnerTest, EmptyStdoutIsANullResult) {
  CommandRunner runner = shell("cat >/dev/null; echo");
  EXPECT_EQ(handle(runner, {1, 2}).result(), nlohmann::json());
}

TEST_F(CliRunnerTest, Exit75Reschedules) {
  CommandRunner runner = shell("echo '{}'; exit 75");
  EXPECT_TRUE(handle(runner).rescheduled());
}

TEST_F(CliRunnerTest, OtherExitCodesAreErrors) {
  CommandRunner runner = shell("echo oops >&2; exit 3");
  try {
    handle(runner);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exited with status 3"),
              std::string::npos);
  }
}

TEST_F(CliRunnerTest, ASignalIsAnError) {
  CommandRunner runner = shell("kill -KILL $$");
  try {
    handle(runner);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("killed by SIGKILL"),
              std::string::npos);
  }
}

// The keeper (the group's leader) ignores the signals a command may send
// its own group, SIGUSR2 (its parent-death signal) included, so the
// command's death is reported as it was.
TEST_F(CliRunnerTest, ASignalTheCommandSendsItsGroupIsReportedAsItIs) {
  for (int sig : {SIGUSR2, SIGUSR1, SIGTERM, SIGHUP}) {
    std::string name = sigabbrev_np(sig);
    CommandRunner runner = shell("kill -" + name + " 0; sleep 5");
    auto started = std::chrono::steady_clock::now();
    CommandOutcome out = run(runner);
    EXPECT_FALSE(out.exited) << name;
    EXPECT_EQ(out.signal, sig) << name;
    EXPECT_LT(std::chrono::steady_clock::now() - started, seconds(4)) << name;
  }
}

TEST_F(CliRunnerTest, StdoutThatIsNotJsonIsAnError) {
  CommandRunner runner = shell("echo 'all done'");
  try {
    handle(runner);
    FAIL();
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("exited 0, but its stdout is not valid JSON"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("all done"), std::string::npos) << what;
  }
  // Bytes that are not UTF-8 reach the message escaped, so it can be
  // stored in PostgreSQL.
  CommandRunner binary = shell("printf '\\377\\000'");
  try {
    handle(binary);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\\xff\\x00"), std::string::npos)
        << e.what();
  }
}

TEST_F(CliRunnerTest, AResultPostgresqlCannotStoreIsAnError) {
  CommandRunner runner = shell("echo '\"a\\u0000b\"'");
  EXPECT_THROW(handle(runner), Error);
  CommandRunner deep = shell("printf '%0300d' 0 | tr 0 '['");
  EXPECT_THROW(handle(deep), Error);
}

TEST_F(CliRunnerTest, EndlessStdoutIsCutAtTheLimitAndKilled) {
  CommandRunner runner = shell("yes", 100000);
  auto started = std::chrono::steady_clock::now();
  CommandOutcome out = run(runner);
  EXPECT_TRUE(out.output_overflow);
  EXPECT_EQ(out.output.size(), 100000u);
  EXPECT_LT(std::chrono::steady_clock::now() - started, seconds(10));
  EXPECT_THROW(handle(runner), Error);
}

TEST_F(CliRunnerTest, ACommandThatIgnoresItsInputIsFine) {
  CommandRunner runner = shell("exit 0");
  std::string input(4 * 1024 * 1024, 'x');
  CommandOutcome out = run(runner, input);
  EXPECT_TRUE(out.exited);
  EXPECT_EQ(out.exit_code, 0);
}

TEST_F(CliRunnerTest, LargeInputAndOutputDoNotDeadlock) {
  // cat writes while we still write: both pipes must be served at once.
  CommandRunner runner = shell("cat");
  std::string input = "\"" + std::string(900000, 'y') + "\"";
  CommandOutcome out = run(runner, input);
  EXPECT_TRUE(out.exited);
  EXPECT_EQ(out.output, input);
}

TEST_F(CliRunnerTest, StopKillsTheWholeProcessGroup) {
  CommandRunner runner =
      shell("sleep 60 & echo $! > " + dir_ + "/bg; sleep 60");
  std::stop_source stop;
  std::thread stopper([&] {
    while (!exists("bg") || read("bg").empty()) {
      std::this_thread::sleep_for(milliseconds(5));
    }
    stop.request_stop();
  });
  auto started = std::chrono::steady_clock::now();
  CommandOutcome out = run(runner, {}, stop.get_token());
  stopper.join();
  EXPECT_TRUE(out.stopped);
  EXPECT_FALSE(out.exited);
  EXPECT_LT(std::chrono::steady_clock::now() - started, seconds(10));
  // Signals take effect a moment after they are sent.
  pid_t background = std::stoi(read("bg"));
  EXPECT_TRUE(eventually([&] { return test::process_gone(background); }));
}

TEST_F(CliRunnerTest, StopEscalatesToSigkillForCommandsIgnoringSigterm) {
  CommandRunner runner =
      shell("trap '' TERM; echo started > " + dir_ + "/started; sleep 60",
            kDefaultMaxPayloadBytes, milliseconds(200));
  std::stop_source stop;
  std::thread stopper([&] {
    while (!exists("started")) std::this_thread::sleep_for(milliseconds(5));
    stop.request_stop();
  });
  CommandOutcome out = run(runner, {}, stop.get_token());
  stopper.join();
  EXPECT_TRUE(out.stopped);
  EXPECT_EQ(out.signal, SIGKILL);
}

TEST_F(CliRunnerTest, AStopAlreadyRequestedKillsAtOnce) {
  CommandRunner runner = shell("sleep 60");
  std::stop_source stop;
  stop.request_stop();
  CommandOutcome out = run(runner, {}, stop.get_token());
  EXPECT_TRUE(out.stopped);
}

TEST_F(CliRunnerTest, BackgroundProcessesHoldingStdoutDoNotHangTheJob) {
  // The background sleep keeps stdout open; its stderr goes to a file so
  // that it holds nothing of the test's.
  CommandRunner runner =
      shell("echo '[1]'; sleep 60 2>/dev/null & echo $! > " + dir_ + "/bg");
  auto started = std::chrono::steady_clock::now();
  CommandOutcome out = run(runner);
  EXPECT_TRUE(out.exited);
  EXPECT_TRUE(out.output_left_open);
  EXPECT_EQ(out.output, "[1]\n");
  EXPECT_LT(std::chrono::steady_clock::now() - started, seconds(10));
  // They ended with the job.
  pid_t background = std::stoi(read("bg"));
  EXPECT_TRUE(eventually([&] { return test::process_gone(background); }));
  kill(background, SIGKILL);
}

TEST_F(CliRunnerTest, ProcessesLeftBehindAreKilledWhenTheCommandExits) {
  CommandRunner runner =
      shell("sleep 60 >/dev/null 2>&1 & echo $! > " + dir_ + "/bg; exit 3");
  CommandOutcome out = run(runner);
  EXPECT_TRUE(out.exited);
  EXPECT_FALSE(out.output_left_open);
  pid_t background = std::stoi(read("bg"));
  EXPECT_TRUE(eventually([&] { return test::process_gone(background); }));
  kill(background, SIGKILL);
}

TEST_F(CliRunnerTest, TheCommandLineInErrorsShowsNoPassword) {
  CommandRunner runner(
      {"sh", "-c", "exit 3", "redis://:Redis-Pw-1@h:1", "--token=Env-Pw-22"},
      100, milliseconds(2000), {"Env-Pw-22"});
  try {
    handle(runner);
    FAIL();
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_EQ(what.find("Redis-Pw-1"), std::string::npos) << what;
    EXPECT_EQ(what.find("Env-Pw-22"), std::string::npos) << what;
    EXPECT_NE(what.find("--token=***"), std::string::npos) << what;
  }
}

// Points this process's stderr (fd 2) at `fd` (or /dev/null) until
// destroyed.
class StderrRedirect {
 public:
  explicit StderrRedirect(int fd = -1) : saved_(dup(STDERR_FILENO)) {
    std::fflush(stderr);
    if (fd >= 0) {
      dup2(fd, STDERR_FILENO);
    } else {
      int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
      dup2(null, STDERR_FILENO);
      close(null);
    }
  }
  ~StderrRedirect() {
    dup2(saved_, STDERR_FILENO);
    close(saved_);
  }
  StderrRedirect(const StderrRedirect&) = delete;
  StderrRedirect& operator=(const StderrRedirect&) = delete;

 private:
  int saved_;
};

std::string error_of(CommandRunner& runner) {
  try {
    JobContext job{JobId{7}, "mail", nullptr, 1, nullptr, {}};
    runner.handle(job);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "the command did not fail";
  return {};
}

TEST_F(CliRunnerTest, StderrGoesOnToTheWorkersAndItsEndIntoTheError) {
  std::string log = dir_ + "/worker-stderr";
  int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  CommandRunner failing =
      shell("echo 'connecting' >&2; echo 'error: disk full' >&2; exit 3");
  CommandRunner succeeding = shell("echo 'sent 1 mail' >&2; echo '[1]'");
  CommandRunner quiet = shell("exit 4");
  std::string error;
  std::string quiet_error;
  {
    StderrRedirect redirect(fd);
    error = error_of(failing);
    EXPECT_EQ(handle(succeeding).result(), nlohmann::json({1}));
    quiet_error = error_of(quiet);
  }
  close(fd);
  std::ifstream in(log);
  std::string passed_on((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(passed_on, "connecting\nerror: disk full\nsent 1 mail\n");
  // One line; the end of a short stderr is all of it.
  EXPECT_TRUE(error.ends_with(
      "exited with status 3; its stderr was: \"connecting error: disk "
      "full\""))
      << error;
  // Nothing on stderr, nothing quoted.
  EXPECT_TRUE(quiet_error.ends_with("exited with status 4")) << quiet_error;
}

TEST_F(CliRunnerTest, TheErrorQuotesOnlyTheEndOfALongStderr) {
  std::string log = dir_ + "/worker-stderr";
  int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  // 200,000 bytes of noise, then the line that matters, then a signal.
  CommandRunner runner = shell(
      "head -c 200000 /dev/zero | tr '\\0' x >&2; echo >&2; "
      "printf 'Fatal: \\303\\251chec\\n' >&2; kill -TERM $$");
  std::string error;
  {
    StderrRedirect redirect(fd);
    error = error_of(runner);
  }
  close(fd);
  EXPECT_EQ(std::filesystem::file_size(log), 200000u + 1 + 14);
  EXPECT_NE(error.find("was killed by SIGTERM; its stderr ended: \"...xxx"),
            std::string::npos)
      << error;
  // Not printable ASCII is escaped; the last line is there.
  EXPECT_TRUE(error.ends_with("xxx Fatal: \\xc3\\xa9chec\"")) << error;
  EXPECT_LT(error.size(), 1300u) << error;
}

TEST_F(CliRunnerTest, TheWorkersPasswordsAreMaskedInTheQuotedStderr) {
  const std::string secret = "Stderr-Secret-6604";
  // The first time whole; the second time cut by the start of the kept
  // tail, 5 bytes of it inside the 1,024 kept.
  CommandRunner whole({"sh", "-c", "echo \"token $0\" >&2; exit 3", secret},
                      100, milliseconds(2000), {secret});
  CommandRunner cut(
      {"sh", "-c",
       "printf '%s' \"$0\" >&2; head -c 1019 /dev/zero | tr '\\0' y >&2; "
       "exit 3",
       secret},
      100, milliseconds(2000), {secret});
  // A password shorter than its mask makes the masked text longer than
  // what was kept: its end, the part that matters, still shows.
  CommandRunner short_secret(
      {"sh", "-c", "printf 'xy %.0s' $(seq 300) >&2; echo the-end >&2; exit 3"},
      100, milliseconds(2000), {"xy"});
  std::string whole_error;
  std::string cut_error;
  std::string short_error;
  {
    StderrRedirect redirect;
    whole_error = error_of(whole);
    cut_error = error_of(cut);
    short_error = error_of(short_secret);
  }
  EXPECT_TRUE(short_error.ends_with("*** *** the-end\"")) << short_error;
  EXPECT_TRUE(whole_error.ends_with("its stderr was: \"token ***\""))
      << whole_error;
  EXPECT_NE(cut_error.find("its stderr ended: \"...yyy"), std::string::npos)
      << cut_error;
  EXPECT_EQ(cut_error.find("ecret"), std::string::npos) << cut_error;
  EXPECT_EQ(cut_error.find("6604"), std::string::npos) << cut_error;
}

// Passwords the command prints in a URL or a password= of its own (a
// failed connection's message, say) are masked in the job's error too:
// `pgjobq show` readers need not see them.
TEST_F(CliRunnerTest, OtherPasswordsInTheQuotedStderrAreMaskedToo) {
  CommandRunner prints(
      {"sh", "-c",
       "echo 'no connection to postgres://app:Url-Pass-3130@db/app' >&2; "
       "echo 'host=db password=Kv-Pass-3131 failed' >&2; exit 3"},
      100, milliseconds(2000), {});
  std::string error;
  {
    StderrRedirect redirect;
    error = error_of(prints);
  }
  EXPECT_EQ(error.find("Url-Pass-3130"), std::string::npos) << error;
  EXPECT_EQ(error.find("Kv-Pass-3131"), std::string::npos) << error;
  EXPECT_NE(error.find("postgres://app:***@db/app"), std::string::npos)
      << error;
  EXPECT_NE(error.find("password=*** failed"), std::string::npos) << error;
}

// A process left behind that holds the command's stderr does not hold up
// the job (it is killed with the group), and a worker's stderr that takes
// nothing (a pipe no one reads) does not hold up the job's stop.
TEST_F(CliRunnerTest, NeitherALeftBehindNorAStalledStderrHangsTheJob) {
  CommandRunner leaves = shell("sleep 60 >/dev/null & echo $! > " + dir_ +
                               "/bg; echo '[2]'; echo bye >&2");
  int stalled[2];
  ASSERT_EQ(pipe2(stalled, O_CLOEXEC), 0);
  CommandRunner floods = shell("head -c 10000000 /dev/zero >&2; sleep 60");
  CommandOutcome left;
  CommandOutcome flooded;
  auto started = std::chrono::steady_clock::now();
  milliseconds leaves_took{};
  {
    StderrRedirect redirect;
    left = run(leaves);
    leaves_took = std::chrono::duration_cast<milliseconds>(
        std::chrono::steady_clock::now() - started);
  }
  {
    StderrRedirect redirect(stalled[1]);
    std::stop_source stop;
    std::thread stopper([&] {
      std::this_thread::sleep_for(milliseconds(300));
      stop.request_stop();
    });
    started = std::chrono::steady_clock::now();
    flooded = run(floods, {}, stop.get_token());
    stopper.join();
  }
  auto flood_took = std::chrono::steady_clock::now() - started;
  close(stalled[0]);
  close(stalled[1]);
  EXPECT_TRUE(left.exited);
  EXPECT_EQ(left.output, "[2]\n");
  EXPECT_EQ(left.stderr_tail, "bye\n");
  EXPECT_FALSE(left.output_left_open);
  // The drain grace (1 s) is for stdout only.
  EXPECT_LT(leaves_took, milliseconds(900));
  pid_t background = std::stoi(read("bg"));
  EXPECT_TRUE(eventually([&] { return test::process_gone(background); }));
  kill(background, SIGKILL);
  EXPECT_TRUE(flooded.stopped);
  EXPECT_LT(flood_took, seconds(5));
}

TEST_F(CliRunnerTest, EveryChildIsReaped) {
  CommandRunner runner = shell("exit 1");
  for (int i = 0; i < 5; ++i) run(runner);
  CommandRunner stopped = shell("sleep 60");
  std::stop_source stop;
  stop.request_stop();
  run(stopped, {}, stop.get_token());
  EXPECT_TRUE(test::children_of(getpid()).empty());
}

TEST_F(CliRunnerTest, KillAllKillsRunningCommandsAndRefusesNewOnes) {
  CommandRunner runner = shell("echo x > " + dir_ + "/started; sleep 60");
  std::thread killer([&] {
    while (!exists("started")) std::this_thread::sleep_for(milliseconds(5));
    runner.kill_all();
  });
  CommandOutcome out = run(runner);
  killer.join();
  EXPECT_EQ(out.signal, SIGKILL);
  EXPECT_THROW(run(runner), Error);
}

TEST_F(CliRunnerTest, AMissingProgramIsReported) {
  EXPECT_FALSE(is_executable("no-such-program-pgjobq"));
  EXPECT_FALSE(is_executable("/nonexistent/x"));
  EXPECT_FALSE(is_executable("/etc/passwd"));
  EXPECT_TRUE(is_executable("sh"));
  EXPECT_TRUE(is_executable("/bin/sh"));
  CommandRunner runner({"/nonexistent/x"}, 100);
  EXPECT_THROW(run(runner), Error);
}

}  // namespace
}  // namespace pgjobq::cli
