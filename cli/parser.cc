// The command line's grammar: every command, its options, its help.

#include "cli/parser.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <limits>

#include "cli/admin_commands.h"
#include "cli/job_commands.h"
#include "cli/work_command.h"

namespace pgjobq::cli {
namespace {

constexpr const char* kFooter =
    "Connections: --db, else DATABASE_URL, else libpq's PG* variables;\n"
    "--redis, else REDIS_URL, else redis://127.0.0.1:6379. Passwords are\n"
    "never printed.\n"
    "\n"
    "Exit codes: 0 success, 1 error (servers unreachable, bad data), 2 usage\n"
    "error, 3 queue full, 4 timeout, 5 job failed or cancelled, 6 no such "
    "job.\n"
    "\n"
    "Example:\n"
    "  export DATABASE_URL=postgresql://app@localhost/app\n"
    "  pgjobq migrate\n"
    "  pgjobq work mail -- ./send-mail.sh &\n"
    "  pgjobq enqueue mail '{\"to\": \"ada@example.com\"}' --wait\n"
    "\n"
    "Run pgjobq COMMAND --help for a command's options and examples.";

struct Command {
  CLI::App* app;
  std::function<int()> run;
};
using Commands = std::vector<Command>;
using ConnectionsPtr = std::shared_ptr<Connections>;

// A whole number from 1 to `max`, written in decimal. CLI11 alone reads
// 010 as octal and 0x10 as hex, takes a number too large for its type as
// the largest one, and words its refusal of 0 with a 300-digit bound.
CLI::Validator whole_number(std::int64_t max) {
  return CLI::Validator(
      [max](std::string& text) -> std::string {
        std::int64_t value = 0;
        const char* end = text.data() + text.size();
        auto parsed = std::from_chars(text.data(), end, value);
        if (text.empty() || parsed.ec != std::errc() || parsed.ptr != end ||
            value < 1 || value > max) {
          return "expected a whole number from 1 to " + std::to_string(max) +
                 ", got \"" + escape_bytes(text, 40) + "\"";
        }
        text = std::to_string(value);  // no leading zero left to mean octal
        return {};
      },
      "WHOLE NUMBER");
}

CLI::App* subcommand(CLI::App& app, const char* name, const char* summary,
                     const char* details) {
  CLI::App* sub = app.add_subcommand(name, summary);
  sub->footer(details);
  return sub;
}

void add_job_commands(CLI::App& app, const ConnectionsPtr& c,
                      Commands& commands) {
  {
    auto a = std::make_shared<EnqueueArgs>();
    CLI::App* sub = subcommand(
        app, "enqueue", "Enqueue one job and wake the queue's worker",
        "Prints the job id; with --wait, then the job's result JSON. Exit 3\n"
        "if the queue is full (nothing is enqueued), with --wait 4 on timeout\n"
        "and 5 if the job failed or was cancelled. --timeout counts from when\n"
        "the job data has been read (stdin is read to its end first). If\n"
        "Redis is down the job is still enqueued (exit 0, a warning on\n"
        "stderr): the worker finds it by polling.\n"
        "\n"
        "Examples:\n"
        "  pgjobq enqueue mail '{\"to\": \"ada@example.com\"}'\n"
        "  echo '{\"to\": \"ada@example.com\"}' | pgjobq enqueue mail -\n"
        "  pgjobq enqueue thumbs '{\"image\": 7}' --limit 100 --wait "
        "--timeout 30s");
    sub->add_option("QUEUE", a->queue,
                    "Queue name: 1-128 letters, digits and _ - . : /")
        ->required();
    sub->add_option("JSON", a->json,
                    "The job's data as JSON, or - to read it from stdin "
                    "(default: null)")
        ->each([a](const std::string&) { a->has_json = true; });
    sub->add_option("--limit", a->limit,
                    "Refuse (exit 3) when the queue already holds this many "
                    "unfinished jobs")
        ->transform(whole_number(std::numeric_limits<std::int64_t>::max()))
        ->capture_default_str();
    CLI::Option* wait = sub->add_flag(
        "--wait", a->wait, "Wait for the job to finish and print its result");
    sub->add_option("--timeout", a->timeout,
                    "With --wait: give up after this long (exit 4); seconds "
                    "or a duration such as 500ms, 2m (default: no limit)")
        ->needs(wait);
    commands.push_back({sub, [c, a] { return enqueue_command(*c, *a); }});
  }
  {
    auto id = std::make_shared<std::string>();
    auto timeout = std::make_shared<std::optional<std::string>>();
    CLI::App* sub = subcommand(
        app, "wait", "Wait for a job to finish and print its result JSON",
        "Exit 4 on timeout, 5 if the job failed or was cancelled, 6 if there\n"
        "is no such job.\n"
        "\n"
        "Example:\n  pgjobq wait 42 --timeout 10s");
    sub->add_option("ID", *id, "The job id")->required();
    sub->add_option("--timeout", *timeout,
                    "Give up after this long (exit 4); seconds or a duration "
                    "such as 500ms, 2m (default: no limit)");
    commands.push_back(
        {sub, [c, id, timeout] { return wait_command(*c, *id, *timeout); }});
  }
  {
    auto id = std::make_shared<std::string>();
    CLI::App* sub = subcommand(
        app, "show", "Print one job as a JSON object",
        "Keys: id queue state data result error attempts enqueued_at\n"
        "started_at finished_at (null where unset; times ISO 8601 in UTC).\n"
        "state is one of pending running completed failed cancelled.\n"
        "Exit 6 if there is no such job.\n"
        "\n"
        "Example:\n  pgjobq show 42");
    sub->add_option("ID", *id, "The job id")->required();
    commands.push_back({sub, [c, id] { return show_command(*c, *id); }});
  }
  {
    auto id = std::make_shared<std::string>();
    CLI::App* sub = subcommand(
        app, "reschedule", "Send a job to the back of its queue",
        "Applies to pending, failed and cancelled jobs: the job becomes a\n"
        "fresh pending job (attempts start again) behind every job now in\n"
        "its queue, and the queue's worker is woken. Exit 6 if there is no\n"
        "such job, 1 if it is running or completed.\n"
        "\n"
        "Example:\n  pgjobq reschedule 42");
    sub->add_option("ID", *id, "The job id")->required();
    commands.push_back({sub, [c, id] { return reschedule_command(*c, *id); }});
  }
  {
    auto id = std::make_shared<std::string>();
    CLI::App* sub = subcommand(
        app, "cancel", "Cancel a pending job: it will never run",
        "Its waiters are woken and see it cancelled (exit 5). Exit 6 if there\n"
        "is no such job, 1 if it is no longer pending.\n"
        "\n"
        "Example:\n  pgjobq cancel 42");
    sub->add_option("ID", *id, "The job id")->required();
    commands.push_back({sub, [c, id] { return cancel_command(*c, *id); }});
  }
}

void add_work_command(CLI::App& app, const ConnectionsPtr& c,
                      const std::vector<std::string>& command,
                      Commands& commands) {
  auto a = std::make_shared<WorkArgs>();
  CLI::App* sub =
      app.add_subcommand("work", "Serve queues: run a command once per job");
  sub->footer(
      "Usage: pgjobq work [OPTIONS] QUEUE... -- CMD [ARG...]\n"
      "       (a queue whose name begins with '-': --queue=-NAME)\n"
      "\n"
      "Runs each queue's jobs one at a time in FIFO order, the queues side\n"
      "by side. CMD gets the job's data JSON on stdin and PGJOBQ_JOB_ID,\n"
      "PGJOBQ_QUEUE and PGJOBQ_ATTEMPT in its environment; it runs in a\n"
      "process group of its own; its stderr goes on to the worker's, and\n"
      "the end of it into the job's error when it fails.\n"
      "  exit 0    completes the job; stdout is its result JSON (empty: null)\n"
      "  exit 75   sends the job to the back of its queue\n"
      "  other     an error (see --on-error), as is stdout that is not JSON\n"
      "            or larger than 1 MiB\n"
      "SIGTERM, SIGINT or SIGHUP (unless started under nohup) lets the\n"
      "running jobs finish, then exits 0; a second SIGTERM or SIGINT kills\n"
      "them and exits at once. Under --on-error crash the worker exits 1\n"
      "after recording the error, for its supervisor to restart it.\n"
      "\n"
      "Examples:\n"
      "  pgjobq work mail -- ./send-mail.sh\n"
      "  pgjobq work thumbs:0 thumbs:1 --job-timeout 5m --on-error retry \\\n"
      "      -- python3 make_thumbnail.py --size 128");
  sub->add_option("QUEUE", a->queues, "The queues to serve");
  // A queue name may begin with '-', which CLI11 would take for an option
  // among the QUEUE arguments; as this option's value after '=' it is not.
  auto named = std::make_shared<std::vector<std::string>>();
  sub->add_option("--queue", *named,
                  "A queue to serve, as --queue=NAME, also one whose name "
                  "begins with '-' (repeatable; adds to QUEUE...)");
  sub->parse_complete_callback([a, named] {
    a->queues.insert(a->queues.end(), named->begin(), named->end());
    if (a->queues.empty()) throw CLI::RequiredError("QUEUE");
  });
  sub->add_option("--poll-interval", a->poll_interval,
                  "Look for jobs this often when no wake-up comes over Redis "
                  "(seconds, or a duration such as 30s, 5m)")
      ->capture_default_str();
  sub->add_option("--on-error", a->on_error,
                  "crash: record the error on the job and exit non-zero (a "
                  "supervisor restarts the worker, which runs the job "
                  "again); retry: record it, back off, run the job again")
      ->check(CLI::IsMember({"crash", "retry"}))
      ->capture_default_str();
  sub->add_option("--max-attempts", a->max_attempts,
                  "A job already started this many times is marked failed "
                  "instead of run again (under either policy)")
      ->transform(whole_number(std::numeric_limits<int>::max()))
      ->capture_default_str();
  sub->add_option("--job-timeout", a->job_timeout,
                  "Kill a command running longer than this (its whole "
                  "process group) and count it as an error (seconds, or a "
                  "duration such as 90s, 10m; default: no limit)");
  sub->add_option("--retry-delay", a->retry_delay,
                  "With --on-error retry: the first back-off, doubling per "
                  "attempt up to a minute (a longer one stays as it is); "
                  "also the first wait before rescheduled jobs run again "
                  "when only rescheduled jobs (exit 75) ran since a job "
                  "last completed or failed")
      ->capture_default_str();
  sub->add_option("--dead-session-timeout", a->dead_session_timeout,
                  "A connection to PostgreSQL silent this long (TCP "
                  "keepalives, both ends; from 1s to 18h) is dead: the server "
                  "ends the session, a standby takes the queue over, and "
                  "this worker stops its command and reconnects")
      ->capture_default_str();
  commands.push_back(
      {sub, [c, command, a] { return work_command(*c, *a, command); }});
}

void add_admin_commands(CLI::App& app, const ConnectionsPtr& c,
                        Commands& commands) {
  {
    CLI::App* sub = app.add_subcommand(
        "migrate", "Create or upgrade pgjobq's schema in the database");
    sub->footer(
        "Creates the `pgjobq` schema, or applies the migrations it lacks.\n"
        "Safe to run again, and from several machines at once, and on a\n"
        "live system: a migration that needs a lock some long transaction\n"
        "holds waits at most 1 s for it (enqueues and workers wait behind\n"
        "it meanwhile), then lets them through and tries again.\n"
        "\n"
        "Example:\n  pgjobq migrate --db postgresql://app@db.internal/app");
    auto lock_wait = std::make_shared<std::string>("60s");
    sub->add_option("--lock-wait", *lock_wait,
                    "Keep trying this long when a transaction holds a lock "
                    "a migration needs, then exit 1 naming its session, "
                    "nothing changed (seconds, or a duration such as 30s, "
                    "5m)")
        ->capture_default_str();
    commands.push_back(
        {sub, [c, lock_wait] { return migrate_command(*c, *lock_wait); }});
  }
  {
    auto a = std::make_shared<StatusArgs>();
    CLI::App* sub = app.add_subcommand(
        "status",
        "Show each queue's jobs by state, its workers, its oldest pending");
    sub->footer(
        "Per queue: pending, running, completed, failed and cancelled jobs\n"
        "(finished ones until pruned), the workers serving the queue (0 or\n"
        "1: holding its lock) and standing by, and the age of the oldest\n"
        "pending job, from its enqueue (a rescheduled job keeps its age: it\n"
        "has waited that long unfinished). A table, or a JSON array with\n"
        "--json (oldest_pending_age_seconds is null when nothing is pending).\n"
        "\n"
        "Examples:\n  pgjobq status\n  pgjobq status mail --json");
    sub->add_option("QUEUE", a->queue, "Only this queue");
    sub->add_flag("--json", a->json, "Print JSON instead of a table");
    commands.push_back({sub, [c, a] { return status_command(*c, *a); }});
  }
  {
    auto older_than = std::make_shared<std::string>("7d");
    CLI::App* sub = app.add_subcommand(
        "prune", "Delete finished jobs older than a duration");
    sub->footer(
        "Deletes completed, failed and cancelled jobs that finished more\n"
        "than DURATION ago, in batches of small transactions. Prints how\n"
        "many; shows progress on stderr when it is a terminal.\n"
        "\n"
        "Examples:\n  pgjobq prune --older-than 7d\n"
        "  pgjobq prune --older-than 15m");
    sub->add_option("--older-than", *older_than,
                    "Numbers with units: us, ms, s, m, h, d or w, or spelled "
                    "out (30s, 15m, 7d, 1h30m, \"7 days\")")
        ->capture_default_str();
    commands.push_back(
        {sub, [c, older_than] { return prune_command(*c, *older_than); }});
  }
}

// The first argument that is neither an option nor an option's value, if
// it names no command: CLI11 calls an unknown command a missing one.
std::string unknown_command(const std::vector<std::string>& args,
                            const Commands& commands) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--db" || args[i] == "--redis") {
      ++i;
      continue;
    }
    if (args[i].starts_with("-")) continue;
    for (const Command& c : commands) {
      if (args[i] == c.app->get_name()) return "";
    }
    return args[i];
  }
  return "";
}

}  // namespace

Parsed parse_command_line(const std::vector<std::string>& args,
                          const std::vector<std::string>& work_command,
                          bool had_separator) {
  CLI::App app(
      "pgjobq: a job queue in PostgreSQL, woken over Redis. Jobs are JSON, "
      "enqueued in transactions, run one at a time per queue in commit "
      "order.",
      "pgjobq");
  app.fallthrough();
  app.require_subcommand(1);
  app.footer(kFooter);
  app.set_version_flag("--version", PGJOBQ_VERSION);
  Parsed out;
  out.connections = std::make_shared<Connections>();
  app.add_option("--db", out.connections->db_url,
                 "PostgreSQL URL or key=value string (default: DATABASE_URL, "
                 "else libpq's PG* variables)");
  app.add_option("--redis", out.connections->redis_url,
                 "Redis URL: redis://[:password@]host[:port][/db] or "
                 "unix:///path/redis.sock (default: REDIS_URL, else "
                 "redis://127.0.0.1:6379)");
  Commands commands;
  add_job_commands(app, out.connections, commands);
  add_work_command(app, out.connections, work_command, commands);
  add_admin_commands(app, out.connections, commands);

  auto chosen = [&]() -> const Command* {
    for (const Command& c : commands) {
      if (c.app->parsed()) return &c;
    }
    return nullptr;
  };
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());
    app.parse(reversed);  // CLI11 takes the arguments last first
    const Command* command = chosen();
    if (had_separator && (!command || command->app->get_name() != "work")) {
      throw CLI::ParseError("only `pgjobq work` takes -- CMD", kExitUsage);
    }
    out.command = command->app->get_name();
    out.run = command->run;
    return out;
  } catch (const CLI::ParseError& e) {
    out.finished = true;
    if (e.get_exit_code() == 0) {  // --help, --version
      out.exit_code = app.exit(e);
      return out;
    }
    out.exit_code = kExitUsage;
    const Command* command = chosen();
    if (!command) {
      if (std::string unknown = unknown_command(args, commands);
          !unknown.empty()) {
        out.usage_error =
            "unknown command \"" + unknown + "\" (see pgjobq --help)";
        return out;
      }
    }
    out.usage_error =
        std::string(e.what()) + " (see pgjobq " +
        (command ? command->app->get_name() + " " : std::string()) + "--help)";
    return out;
  }
}

}  // namespace pgjobq::cli
