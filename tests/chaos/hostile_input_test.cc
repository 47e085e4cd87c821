// Hostile input, through the command line (as users send it) and through
// the library: each gets one clear line or a documented safe behaviour, and
// nothing stored changes. docs/reliability.md has the table these back.

#include <signal.h>

#include <iostream>
#include <limits>
#include <thread>

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

// Asserts a refusal through the command line: `code`, one line naming
// `expect`, nothing on stdout.
#define EXPECT_REFUSED(r, code, expect, label)                            \
  do {                                                                    \
    EXPECT_EQ((r).exit_code, code) << (label) << "\n" << (r).err;         \
    EXPECT_TRUE(OneLine((r).err)) << (label);                             \
    EXPECT_TRUE(contains((r).err, expect)) << (label) << "\n" << (r).err; \
    EXPECT_LT((r).err.size(), 1000u) << (label);                          \
    EXPECT_EQ((r).out, "") << (label);                                    \
  } while (false)

std::string printable(const std::string& s) {
  std::string out;
  for (char c : s.substr(0, 40)) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out += c;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    }
  }
  return out;
}

TEST_F(HostileTest, MalformedJsonIsRefusedWithOneLineAndNothingStored) {
  seed();
  std::string before = stored();
  std::string q = queue();
  const std::vector<std::string> documents{
      "{",
      "}",
      "{\"a\":}",
      "[1, 2",
      "[1, 2,]",
      "{\"a\": 1,}",
      "nul",
      "tru",
      "{'a': 1}",
      "{a: 1}",
      "{} {}",
      "[] trailing",
      "NaN",
      "-Infinity",
      "0x10",
      "01",
      "1.",
      ".5",
      "1e999999",
      "-",
      "\"unterminated",
      "\"tab\there\"",
      "\"\\x41\"",
      "\"\\u12\"",
      "/* comment */ {}",
      "{\"a\" 1}",
      "{\"a\": 1 \"b\": 2}",
      std::string(1, '\x01'),
  };
  for (const std::string& doc : documents) {
    // As an argument, and on stdin.
    if (doc.starts_with("-")) {
      // An argument that starts with '-' may read as an option: a usage
      // error is as clear a refusal.
      ProcessResult r = pgjobq({"enqueue", q, doc});
      EXPECT_REFUSED(r, r.exit_code == 2 ? 2 : 1,
                     r.exit_code == 2 ? "usage error" : "not valid JSON",
                     printable(doc));
    } else {
      ProcessResult r = pgjobq({"enqueue", q, doc});
      EXPECT_REFUSED(r, 1, "not valid JSON", printable(doc));
    }
    ProcessResult r = pgjobq({"enqueue", q, "-"}, doc);
    EXPECT_REFUSED(r, 1, "not valid JSON", printable(doc));
  }
  EXPECT_EQ(stored(), before);
}

TEST_F(HostileTest, DeeplyNestedJsonIsRefusedBeforeParsing) {
  seed();
  std::string before = stored();
  std::string q = queue();
  // A million brackets on stdin, nested objects as an argument.
  ProcessResult arrays = pgjobq({"enqueue", q, "-"}, std::string(1000000, '['));
  EXPECT_REFUSED(arrays, 1, "nested deeper than 256", "arrays");
  std::string objects;
  for (int i = 0; i < 20000; ++i) objects += "{\"a\":";
  objects += "1";
  objects += std::string(20000, '}');
  ProcessResult nested = pgjobq({"enqueue", q, objects});
  EXPECT_REFUSED(nested, 1, "nested deeper than 256", "objects");
  // Just under the limit is fine; just over is not.
  std::string ok = std::string(256, '[') + std::string(256, ']');
  EXPECT_EQ(pgjobq({"enqueue", q, ok}).exit_code, 0);
  std::string over = std::string(257, '[') + std::string(257, ']');
  EXPECT_REFUSED(pgjobq({"enqueue", q, over}), 1, "nested", "257");
  EXPECT_EQ(count_jobs(q), 1);
  // The library refuses a deep document built in memory, without
  // recursing (100,000 levels would overflow a recursive walk).
  json deep = json::array();
  for (int i = 0; i < 100000; ++i) deep = json::array({std::move(deep)});
  PgConnPtr conn = connect();
  EXPECT_THROW(try_enqueue(conn.get(), q, deep), InvalidInput);
  EXPECT_EQ(count_jobs(q), 1);
  PQclear(PQexec(conn.get(), "SELECT 1"));  // the connection is untouched
  EXPECT_EQ(PQtransactionStatus(conn.get()), PQTRANS_IDLE);
  (void)before;
}

TEST_F(HostileTest, A20MiBPayloadIsRefusedUnlessTheLimitIsRaised) {
  seed();
  std::string before = stored();
  std::string q = queue();
  std::string big = "\"" + std::string(20 * 1024 * 1024, 'x') + "\"";
  auto started = std::chrono::steady_clock::now();
  ProcessResult r = pgjobq({"enqueue", q, "-"}, big);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_TRUE(contains(r.err, "more than")) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - started,
            std::chrono::seconds(10))
      << "refused without reading it all first";
  PgConnPtr conn = connect();
  json payload = std::string(20 * 1024 * 1024, 'x');
  try {
    try_enqueue(conn.get(), q, payload);
    ADD_FAILURE() << "20 MiB accepted under the 1 MiB default";
  } catch (const InvalidInput& e) {
    EXPECT_TRUE(contains(e.what(), "more than the limit of 1048576"))
        << e.what();
  }
  EXPECT_EQ(stored(), before);
  // A caller that raises the limit can store more, and reads it back whole
  // (3 MiB: storing 20 took this test over a minute under the sanitizers).
  EnqueueOptions roomy;
  roomy.max_payload_bytes = 32 * 1024 * 1024;
  json large = std::string(3 * 1024 * 1024, 'y');
  auto id = try_enqueue(conn.get(), q, large, roomy);
  ASSERT_TRUE(id);
  EXPECT_EQ(query_job(conn.get(), *id)->data, large);
}

TEST_F(HostileTest, NulBytesAndInvalidUtf8AreRefused) {
  seed();
  std::string before = stored();
  std::string q = queue();
  struct Case {
    std::string text;
    std::string expect;
  };
  const std::vector<Case> cases{
      {std::string("\"a\0b\"", 5), "not valid JSON"},  // raw NUL in a string
      {"\"\\u0000\"", "NUL"},                          // escaped NUL
      {"{\"\\u0000\": 1}", "NUL"},                     // in a key
      {"\"\xff\"", "not valid JSON"},
      {"\"\xc0\xaf\"", "not valid JSON"},              // overlong '/'
      {"\"\xed\xa0\x80\"", "not valid JSON"},          // an encoded surrogate
      {"\"\xe2\x82\"", "not valid JSON"},              // truncated
      {"\"\xf8\x88\x80\x80\x80\"", "not valid JSON"},  // five bytes
      {"\"\\ud800\"", "not valid JSON"},               // lone surrogate
      {"\"\\udc00\\ud800\"", "not valid JSON"},        // reversed pair
  };
  for (const Case& c : cases) {
    ProcessResult r = pgjobq({"enqueue", q, "-"}, c.text);
    EXPECT_REFUSED(r, 1, c.expect, printable(c.text));
  }
  // The library, given strings no JSON text could hold.
  PgConnPtr conn = connect();
  for (const json& data :
       {json(std::string("a\0b", 3)), json({{std::string("k\0", 2), 1}}),
        json("\xff\xfe"), json::array({"ok", "\xc3"}),
        json({{"\xed\xa0\x80", true}})}) {
    EXPECT_THROW(try_enqueue(conn.get(), q, data), InvalidInput);
  }
  EXPECT_EQ(stored(), before);
  // A proper surrogate pair and non-ASCII text are fine.
  ProcessResult ok =
      pgjobq({"enqueue", q, "-"}, "[\"\\ud83d\\ude00\", \"ñ€😀\"]");
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(json::parse(job_field(JobId{std::stoll(ok.out)}, "data")),
            json::parse("[\"😀\", \"ñ€😀\"]"));
}

// The JSON parser takes a NUL byte for the end of its input; parse_json
// refuses any NUL, so nothing after one is silently dropped.
TEST_F(HostileTest, NulByteAfterTheDocumentIsRefused) {
  std::string before = stored();
  ProcessResult r = pgjobq({"enqueue", queue(), "-"},
                           std::string("{\"a\": 1}\0{\"b\": 2}", 17));
  EXPECT_REFUSED(r, 1, "not valid JSON", "NUL after the document");
  EXPECT_EQ(stored(), before);
}

// Found by the `redact` fuzz target: one_line() used to mask secret by
// secret, scanning the "***" it had written, so every secret made of '*'
// tripled the line (14 of them ran for over 30 s).
TEST_F(HostileTest, ManyStarPasswordsKeepTheErrorLineShort) {
  std::string url = "host=127.0.0.1 port=1";
  for (int i = 0; i < 14; ++i) url += " password=*";
  auto started = std::chrono::steady_clock::now();
  ProcessResult r = pgjobq({"--db", url, "status"});
  EXPECT_LT(std::chrono::steady_clock::now() - started,
            std::chrono::seconds(5));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(OneLine(r.err));
  EXPECT_LT(r.err.size(), 1000u);
}

TEST_F(HostileTest, EveryKindOfInvalidQueueNameIsRefusedBeforeTouchingAServer) {
  seed();
  std::string before = stored();
  const std::vector<std::string> names{
      "",
      std::string(129, 'q'),
      std::string(100000, 'q'),
      " ",
      "has space",
      " leading",
      "trailing ",
      "tab\there",
      "new\nline",
      "carriage\rreturn",
      "quote\"d",
      "apos'trophe",
      "back`tick",
      "x'; DROP TABLE pgjobq.jobs; --",
      "x\"; DROP SCHEMA pgjobq CASCADE; --",
      "q) OR (1=1",
      "q%",
      "q_%",
      "$1",
      "*",
      "q*",
      "q?",
      "q[ab]",
      "q{a,b}",
      "pgjobq/*-notify",
      "back\\slash",
      "semi;colon",
      "pipe|d",
      "amp&",
      "ünïcode",
      "emoji😀",
      "\xff",
      "nul",  // replaced by a real NUL below
  };
  std::vector<std::string> all = names;
  all.back() = std::string("n\0l", 3);
  for (const std::string& name : all) {
    std::string label = printable(name);
    // The servers are unreachable: only a check made first can answer.
    if (name.find('\0') == std::string::npos && name.size() < 100000) {
      std::vector<std::vector<std::string>> commands{
          {"enqueue", name, "{}"},
          {"work", name, "--", "true"},
          {"status", name}};
      for (const std::vector<std::string>& args : commands) {
        std::vector<std::string> argv{"--db", kDeadPostgres, "--redis",
                                      kDeadRedis};
        argv.insert(argv.end(), args.begin(), args.end());
        ProcessResult r = pgjobq(argv);
        EXPECT_NE(r.exit_code, 0) << label;
        EXPECT_TRUE(OneLine(r.err)) << label;
        EXPECT_TRUE(contains(r.err, "invalid queue name") ||
                    contains(r.err, "usage error"))
            << label << "\n"
            << r.err;
        EXPECT_FALSE(contains(r.err, "connect")) << label << "\n" << r.err;
      }
    }
    // The library, with live servers: refused before a statement is sent.
    PgConnPtr conn = connect();
    EXPECT_THROW(try_enqueue(conn.get(), name, json(1)), InvalidInput) << label;
    EXPECT_THROW(enqueue_many(conn.get(), name, {json(1)}), InvalidInput)
        << label;
    EXPECT_THROW(queue_status(conn.get(), std::string_view(name)), InvalidInput)
        << label;
    RedisLink redis(redis_url());
    EXPECT_THROW(notify(redis, name), InvalidInput) << label;
    WorkerOptions o = worker_options({name});
    EXPECT_THROW(
        Worker(o, [](const JobContext&) { return HandlerResult::complete(); }),
        InvalidInput)
        << label;
    EXPECT_EQ(PQtransactionStatus(conn.get()), PQTRANS_IDLE) << label;
  }
  // Valid names that look odd are queues like any other.
  PgConnPtr conn = connect();
  for (std::string odd : {"../..", "a:b/c.d-e_f", "-", "..."}) {
    EXPECT_TRUE(try_enqueue(conn.get(), odd, json(1))) << odd;
  }
  EXPECT_EQ(query_value("SELECT count(*) FROM pgjobq.queues"), "6");
  (void)before;
}

TEST_F(HostileTest, UnknownNegativeAndMalformedJobIdsAreClear) {
  seed();
  std::string before = stored();
  for (std::string command : {"show", "wait", "cancel", "reschedule"}) {
    for (std::string id : {"1e3", "0x10", "+5", " 7", "7 ", "-", "abc", "",
                           "12abc", "1.0", "\xff"}) {
      ProcessResult r = pgjobq({command, id});
      std::string label = command + " " + printable(id);
      EXPECT_EQ(r.exit_code, 2) << label << "\n" << r.err;
      EXPECT_TRUE(OneLine(r.err)) << label;
      EXPECT_EQ(r.out, "") << label;
    }
    // 0, negative ids and ids past a bigint are integers too, and name no
    // job either.
    for (std::string id :
         {"424242", "9223372036854775807", "9223372036854775808",
          "99999999999999999999", "0", "-1", "-9223372036854775808"}) {
      std::vector<std::string> args{command, id};
      if (command == "wait") args.insert(args.end(), {"--timeout", "1"});
      ProcessResult r = pgjobq(args);
      std::string label = command + " " + id;
      EXPECT_EQ(r.exit_code, 6) << label << "\n" << r.err;
      EXPECT_TRUE(OneLine(r.err)) << label;
      EXPECT_TRUE(contains(r.err, "no job with id " + id)) << r.err;
    }
  }
  PgConnPtr conn = connect();
  RedisLink redis(redis_url());
  for (std::int64_t id : {std::int64_t{0}, std::int64_t{-1},
                          std::numeric_limits<std::int64_t>::min(),
                          std::numeric_limits<std::int64_t>::max()}) {
    EXPECT_FALSE(query_job(conn.get(), JobId{id}));
    EXPECT_THROW(
        wait_for_result(conn.get(), redis, JobId{id}, milliseconds(50)),
        NoSuchJob);
    EXPECT_THROW(cancel(conn.get(), JobId{id}), NoSuchJob);
    EXPECT_THROW(reschedule(conn.get(), JobId{id}), NoSuchJob);
  }
  EXPECT_EQ(stored(), before);
}

// Publishing on a job's channel wakes its waiters, who read PostgreSQL
// again and find the truth; nothing published changes what is stored.
TEST_F(HostileTest, ForgedResultsOnAJobsChannelChangeNothing) {
  seed();
  std::string q = queue();
  JobId id = add_job(q, "{\"real\": true}");
  std::string before = stored();
  RedisLink attacker(redis_url());
  auto waiter = start({"wait", std::to_string(id.value), "--timeout", "3"});
  std::this_thread::sleep_for(milliseconds(300));  // let it subscribe
  const std::vector<std::string> forgeries{"{\"forged\": true}",
                                           "not json at all",
                                           "",
                                           "null",
                                           std::string("\0\xff", 2),
                                           std::string(8 * 1024 * 1024, '{'),
                                           "{\"state\": \"completed\"}"};
  for (int round = 0; round < 5; ++round) {
    for (const std::string& f : forgeries) {
      attacker.publish(job_channel(id), f);
    }
  }
  // Channels of jobs that do not exist, and odd ones.
  attacker.publish("pgjobq/job-999999999", "{}");
  attacker.publish("pgjobq/job--1", "{}");
  attacker.publish("pgjobq/job-*", "{}");
  std::optional<int> code = waiter->wait(milliseconds(10000));
  ASSERT_TRUE(code);
  EXPECT_EQ(*code, 4) << "the wait timed out, as the job never ran\n"
                      << waiter->out() << waiter->err();
  EXPECT_EQ(waiter->out(), "");
  EXPECT_EQ(stored(), before);
  // Now it really completes; forgeries after that change nothing either.
  BackgroundWorker worker(worker_options({q}), [](const JobContext& job) {
    return HandlerResult::complete(job.data);
  });
  ProcessResult r = pgjobq({"wait", std::to_string(id.value)});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out), json({{"real", true}}));
  worker.join();
  std::string after_completion = stored();
  for (const std::string& f : forgeries) attacker.publish(job_channel(id), f);
  r = pgjobq({"show", std::to_string(id.value)});
  EXPECT_EQ(json::parse(r.out)["result"], json({{"real", true}}));
  EXPECT_EQ(stored(), after_completion);
}

// Wake-ups carry nothing: a flood of them, junk or huge, makes the worker
// look at PostgreSQL a few more times and run nothing that is not there.
TEST_F(HostileTest, ForgedWakeUpsOnlyMakeTheWorkerLook) {
  seed();
  std::string q = queue();
  std::atomic<int> runs{0};
  WorkerOptions o = worker_options({q});
  o.poll_interval = std::chrono::seconds(30);
  BackgroundWorker worker(o, [&](const JobContext& job) {
    ++runs;
    return HandlerResult::complete(job.data);
  });
  ASSERT_TRUE(wait_until([&] { return worker.worker().active_queues() == 1; }));
  std::string before = stored();
  auto transactions = [&] {
    return std::stoll(
        query_value("SELECT xact_commit FROM pg_stat_database WHERE datname = "
                    "current_database()"));
  };
  std::int64_t xacts_before = transactions();
  RedisLink attacker(redis_url());
  for (int i = 0; i < 5000; ++i) {
    attacker.publish(queue_channel(q), i % 100 == 0
                                           ? std::string(64 * 1024, 'x')
                                           : std::to_string(i));
  }
  attacker.publish(queue_channel(q), std::string("\0\xff", 2));
  attacker.publish("pgjobq/*-notify", "");
  attacker.publish("pgjobq/" + q + "-notify-extra", "");
  std::this_thread::sleep_for(milliseconds(500));
  // Statistics lag by up to half a second; give them time to land.
  std::this_thread::sleep_for(milliseconds(600));
  std::int64_t looked = transactions() - xacts_before;
  EXPECT_EQ(runs.load(), 0);
  EXPECT_FALSE(worker.finished()) << "the worker is still serving";
  EXPECT_EQ(stored(), before);
  RecordProperty("claims_for_5000_forged_wakeups", std::to_string(looked));
  std::cout << "5000 forged wake-ups cost " << looked
            << " transactions in the worker's database\n";
  // And a real job still runs at once.
  PgConnPtr conn = connect();
  JobId id = enqueue(conn.get(), q, json("real"));
  RedisLink redis(redis_url());
  ASSERT_TRUE(notify(redis, q));
  EXPECT_EQ(wait_for_result(conn.get(), redis, id, milliseconds(5000)),
            json("real"));
  EXPECT_EQ(runs.load(), 1);
}

// What a handler hands back is checked like what an enqueuer sends: a
// result PostgreSQL cannot store is the handler's error, recorded on its
// job, and the worker carries on.
TEST_F(HostileTest, CommandOutputThatIsNotAResultFailsOnlyItsJob) {
  std::string q = queue();
  std::string command =
      script("handler.sh",
             "#!/bin/sh\n"
             "case \"$(cat)\" in\n"
             "  '\"text\"') printf 'not json' ;;\n"
             "  '\"binary\"') printf '\\377\\376\\001' ;;\n"
             "  '\"nul\"') printf '\"a\\\\u0000b\"' ;;\n"
             "  '\"two\"') printf '{} {}' ;;\n"
             "  '\"deep\"') head -c 300000 /dev/zero | tr '\\0' '[' ;;\n"
             "  '\"huge\"') head -c 3000000 /dev/zero | tr '\\0' '1' ;;\n"
             "  '\"endless\"') yes '[1,2,3]' ;;\n"
             "  '\"fine\"') printf '{\"ok\": true}' ;;\n"
             "esac\n");
  std::vector<std::pair<std::string, std::string>> cases{
      {"text", "not valid JSON"},
      {"binary", "not valid JSON"},
      {"nul", "NUL"},
      {"two", "not valid JSON"},
      {"deep", "nested deeper"},
      {"huge", "more than"},
      {"endless", "more than"},
  };
  std::vector<JobId> ids;
  for (const auto& [mode, expect] : cases) {
    ids.push_back(add_job(q, json(mode).dump()));
  }
  JobId fine = add_job(q, "\"fine\"");
  auto worker = start({"work", q, "--on-error", "retry", "--max-attempts", "1",
                       "--retry-delay", "0.01", "--", command});
  ASSERT_TRUE(wait_until([&] { return state_of(fine) == "completed"; },
                         milliseconds(30000)))
      << worker->err();
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& [mode, expect] = cases[i];
    EXPECT_EQ(state_of(ids[i]), "failed") << mode;
    EXPECT_EQ(job_field(ids[i], "result"), "") << mode;
    std::string error = job_field(ids[i], "error");
    EXPECT_TRUE(contains(error, expect)) << mode << ": " << error;
    EXPECT_LT(error.size(), 1000u) << mode;
    EXPECT_EQ(error.find('\n'), std::string::npos) << mode;
  }
  EXPECT_EQ(json::parse(job_field(fine, "result")), json({{"ok", true}}));
  EXPECT_TRUE(worker->running()) << "one bad command does not stop the worker";
  worker->signal(SIGTERM);
  EXPECT_EQ(worker->wait(milliseconds(10000)), 0);
}

// The same for C++ handlers: results PostgreSQL cannot store (NUL, invalid
// UTF-8, NaN, absurd nesting) are handler errors, recorded on the job; the
// worker neither dies nor stores anything.
TEST_F(HostileTest, HandlerResultsPostgresqlCannotStoreAreHandlerErrors) {
  std::string q = queue();
  PgConnPtr conn = connect();
  json deep = json::array();
  // Deep enough to pass the limit, shallow enough that copying it (which
  // the JSON library does recursively) fits a sanitized thread's stack.
  for (int i = 0; i < 2 * kMaxJsonDepth; ++i) {
    deep = json::array({std::move(deep)});
  }
  std::vector<std::pair<json, std::string>> results{
      {json(std::string("a\0b", 3)), "NUL"},
      {json({{"k", "\xff"}}), "UTF-8"},
      {json(std::numeric_limits<double>::quiet_NaN()), "NaN"},
      {json::array({std::numeric_limits<double>::infinity()}), "NaN"},
      {deep, "nested deeper"},
      // What json::parse(text, nullptr, false) gives for malformed text.
      {json::parse("{oops", nullptr, false), "discarded"},
      {json::array({json(json::value_t::discarded)}), "discarded"},
  };
  std::vector<JobId> ids;
  for (std::size_t i = 0; i < results.size(); ++i) {
    ids.push_back(enqueue(conn.get(), q, json(i)));
  }
  JobId fine = enqueue(conn.get(), q, json("fine"));
  WorkerOptions o = worker_options({q});
  o.on_error = ErrorPolicy::retry;
  o.max_attempts = 1;
  o.retry_delay = milliseconds(1);
  BackgroundWorker worker(o, [&](const JobContext& job) {
    if (job.data.is_number()) {
      return HandlerResult::complete(
          results[job.data.get<std::size_t>()].first);
    }
    return HandlerResult::complete(job.data);
  });
  ASSERT_TRUE(wait_until(
      [&] { return query_job(conn.get(), fine)->state == JobState::completed; },
      milliseconds(20000)));
  for (std::size_t i = 0; i < results.size(); ++i) {
    std::optional<Job> job = query_job(conn.get(), ids[i]);
    EXPECT_EQ(job->state, JobState::failed) << i;
    EXPECT_FALSE(job->result) << i;
    EXPECT_TRUE(job->error && contains(*job->error, results[i].second))
        << i << ": " << job->error.value_or("(no error)");
  }
  EXPECT_FALSE(worker.finished());
}

// A string whose JSON text is just over `mib` MiB: control characters,
// six bytes of JSON each ("\u0001"), make it from a sixth of that in
// memory, which is cheaper to build and serialize under the sanitizers.
json json_of_more_than_mib(std::size_t mib) {
  return json(std::string(((mib << 20) / 6) + 1, '\x01'));
}

// A result over 32 MiB of JSON is its handler's error. (256 MiB, over
// jsonb's own limit, stopped the worker at its commit with the job left
// running and no error.)
TEST_F(HostileTest, AHandlerResultOver32MiBIsTheHandlersError) {
  std::string q = queue();
  PgConnPtr conn = connect();
  JobId big = enqueue(conn.get(), q, json("big"));
  JobId fine = enqueue(conn.get(), q, json("fine"));
  WorkerOptions o = worker_options({q});
  o.on_error = ErrorPolicy::retry;
  o.max_attempts = 1;
  BackgroundWorker worker(o, [&](const JobContext& job) {
    if (job.data == "big") {
      return HandlerResult::complete(json_of_more_than_mib(32));
    }
    return HandlerResult::complete(job.data);
  });
  ASSERT_TRUE(wait_until(
      [&] { return query_job(conn.get(), fine)->state == JobState::completed; },
      milliseconds(60000)));
  std::optional<Job> job = query_job(conn.get(), big);
  EXPECT_EQ(job->state, JobState::failed);
  EXPECT_FALSE(job->result);
  EXPECT_TRUE(job->error &&
              contains(*job->error, "more than the limit of 33554432"))
      << job->error.value_or("(no error)");
  EXPECT_FALSE(worker.finished());
}

// The results one commit carries stay within the same 32 MiB: they travel
// in one jsonb parameter, and two results each under the limit could take
// it past jsonb's own. Two 17 MiB results, which one commit would carry
// otherwise (the commit delay is long), commit apart: their rows' xmin
// differ.
TEST_F(HostileTest, ResultsOverflowingOneCommitAreCommittedApart) {
  std::string q = queue();
  PgConnPtr conn = connect();
  JobId a = enqueue(conn.get(), q, json("a"));
  JobId b = enqueue(conn.get(), q, json("b"));
  WorkerOptions o = worker_options({q});
  o.max_commit_delay = milliseconds(3000);
  BackgroundWorker worker(o, [&](const JobContext&) {
    return HandlerResult::complete(json_of_more_than_mib(17));
  });
  ASSERT_TRUE(wait_until(
      [&] {
        return query_job(conn.get(), a)->state == JobState::completed &&
               query_job(conn.get(), b)->state == JobState::completed;
      },
      milliseconds(60000)));
  EXPECT_EQ(query_value("SELECT count(DISTINCT xmin::text) FROM pgjobq.jobs "
                        "WHERE id IN (" +
                        std::to_string(a.value) + ", " +
                        std::to_string(b.value) + ")"),
            "2");
  EXPECT_FALSE(worker.finished());
}

}  // namespace
}  // namespace pgjobq::test
