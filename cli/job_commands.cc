// enqueue, wait, show, reschedule, cancel: one job at a time.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "cli/commands.h"
#include "cli/json_input.h"
#include "pgjobq/connection.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "pgjobq/jobs.h"
#include "pgjobq/log.h"

namespace pgjobq::cli {
namespace {

using std::chrono::milliseconds;

// "Forever" for wait_for_result: ten years, which no clock overflows.
constexpr milliseconds kForever = std::chrono::hours(24 * 365 * 10);

std::string dump(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

milliseconds timeout_option(const std::string& text) {
  if (text.empty()) return kForever;
  return std::chrono::ceil<milliseconds>(parse_duration(text, "--timeout"));
}

struct EnqueueArgs {
  std::string queue;
  std::string json;
  CLI::Option* json_given = nullptr;  // an empty argument is not "none"
  std::int64_t limit = kDefaultLimit;
  bool wait = false;
  std::string timeout;
};

int enqueue_command(const Connections& c, const EnqueueArgs& a) {
  // Everything is checked before any server is touched.
  validate_queue_name(a.queue);
  milliseconds timeout = timeout_option(a.timeout);
  nlohmann::json data =
      a.json_given->count() == 0
          ? nlohmann::json()
          : json_argument(a.json, "job data", kDefaultMaxPayloadBytes);
  RedisLink redis(c.redis_url);
  PgConnPtr db = connect(c);

  std::optional<JobId> id = try_enqueue(db.get(), a.queue, data, a.limit);
  if (!id) {
    throw ExitError(kExitQueueFull,
                    "queue \"" + a.queue + "\" is full: it already holds " +
                        std::to_string(a.limit) +
                        " unfinished job(s), the limit; nothing was enqueued");
  }
  print_line(std::to_string(id->value));
  // The job is committed: a lost wake-up only delays it until the
  // worker's next poll.
  std::string why;
  if (!notify(redis, a.queue, &why)) log(LogLevel::warning, why);
  if (a.wait) print_line(dump(wait_for_result(db.get(), redis, *id, timeout)));
  return kExitOk;
}

int wait_command(const Connections& c, const std::string& id_text,
                 const std::string& timeout_text) {
  JobId id = parse_job_id(id_text);
  milliseconds timeout = timeout_option(timeout_text);
  RedisLink redis(c.redis_url);
  PgConnPtr db = connect(c);
  print_line(dump(wait_for_result(db.get(), redis, id, timeout)));
  return kExitOk;
}

nlohmann::ordered_json time_or_null(const std::optional<Clock::time_point>& t) {
  if (!t) return nullptr;
  return format_time(*t);
}

int show_command(const Connections& c, const std::string& id_text) {
  JobId id = parse_job_id(id_text);
  PgConnPtr db = connect(c);
  std::optional<Job> job = query_job(db.get(), id);
  if (!job) throw NoSuchJob(id);
  nlohmann::ordered_json out;
  out["id"] = job->id.value;
  out["queue"] = job->queue;
  out["state"] = std::string(to_string(job->state));
  out["data"] = job->data;
  out["result"] = job->result ? nlohmann::ordered_json(*job->result)
                              : nlohmann::ordered_json();
  out["error"] = job->error ? nlohmann::ordered_json(*job->error)
                            : nlohmann::ordered_json();
  out["attempts"] = job->attempts;
  out["enqueued_at"] = format_time(job->enqueued_at);
  out["started_at"] = time_or_null(job->started_at);
  out["finished_at"] = time_or_null(job->finished_at);
  print_line(out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
  return kExitOk;
}

int reschedule_command(const Connections& c, const std::string& id_text) {
  JobId id = parse_job_id(id_text);
  RedisLink redis(c.redis_url);
  PgConnPtr db = connect(c);
  reschedule(db.get(), id);
  if (std::optional<Job> job = query_job(db.get(), id)) {
    std::string why;
    if (!notify(redis, job->queue, &why)) log(LogLevel::warning, why);
  }
  return kExitOk;
}

int cancel_command(const Connections& c, const std::string& id_text) {
  JobId id = parse_job_id(id_text);
  RedisLink redis(c.redis_url);
  PgConnPtr db = connect(c);
  cancel(db.get(), id);
  // Waiters re-read PostgreSQL when woken; `null` is what a worker
  // publishes for a job that ended without a result.
  try {
    redis.publish(job_channel(id), "null");
  } catch (const Error& e) {
    log(LogLevel::warning, "waiters of job " + std::to_string(id.value) +
                               " not woken (they poll and will see the "
                               "cancellation): " +
                               e.what());
  }
  return kExitOk;
}

CLI::App* subcommand(CLI::App& app, const char* name, const char* summary,
                     const char* details) {
  CLI::App* sub = app.add_subcommand(name, summary);
  sub->footer(details);
  return sub;
}

}  // namespace

void add_job_commands(CLI::App& app, const Connections& connections,
                      Commands& commands) {
  {
    auto a = std::make_shared<EnqueueArgs>();
    CLI::App* sub = subcommand(
        app, "enqueue", "Enqueue one job and wake the queue's worker",
        "Prints the job id; with --wait, then the job's result JSON. Exit 3\n"
        "if the queue is full (nothing is enqueued), with --wait 4 on timeout\n"
        "and 5 if the job failed. If Redis is down the job is still enqueued\n"
        "(exit 0, a warning on stderr): the worker finds it by polling.\n"
        "\n"
        "Examples:\n"
        "  pgjobq enqueue mail '{\"to\": \"ada@example.com\"}'\n"
        "  echo '{\"to\": \"ada@example.com\"}' | pgjobq enqueue mail -\n"
        "  pgjobq enqueue thumbs '{\"image\": 7}' --limit 100 --wait "
        "--timeout 30s");
    sub->add_option("QUEUE", a->queue,
                    "Queue name: 1-128 letters, digits and _ - . : /")
        ->required();
    a->json_given =
        sub->add_option("JSON", a->json,
                        "The job's data as JSON, or - to read it from stdin "
                        "(default: null)");
    sub->add_option("--limit", a->limit,
                    "Refuse (exit 3) when the queue already holds this many "
                    "unfinished jobs")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    CLI::Option* wait = sub->add_flag(
        "--wait", a->wait, "Wait for the job to finish and print its result");
    sub->add_option("--timeout", a->timeout,
                    "With --wait: give up after this long (exit 4); seconds "
                    "or a duration such as 500ms, 2m (default: no limit)")
        ->needs(wait);
    commands.push_back(
        {sub, [&connections, a] { return enqueue_command(connections, *a); }});
  }
  {
    auto id = std::make_shared<std::string>();
    auto timeout = std::make_shared<std::string>();
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
    commands.push_back({sub, [&connections, id, timeout] {
                          return wait_command(connections, *id, *timeout);
                        }});
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
    commands.push_back(
        {sub, [&connections, id] { return show_command(connections, *id); }});
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
    commands.push_back({sub, [&connections, id] {
                          return reschedule_command(connections, *id);
                        }});
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
    commands.push_back(
        {sub, [&connections, id] { return cancel_command(connections, *id); }});
  }
}

}  // namespace pgjobq::cli
