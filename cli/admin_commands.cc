// migrate, status, prune: the operator's commands.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include "cli/commands.h"
#include "pgjobq/admin.h"
#include "pgjobq/connection.h"
#include "pgjobq/enqueue.h"

namespace pgjobq::cli {
namespace {

int migrate_command(const Connections& c) {
  PgConnPtr db = connect(c);
  int applied = migrate(db.get());
  std::string version = std::to_string(schema_version());
  if (applied == 0) {
    print_line("schema is up to date (version " + version + ")");
  } else {
    print_line("applied " + std::to_string(applied) +
               " migration(s); schema version " + version);
  }
  return kExitOk;
}

struct StatusArgs {
  std::string queue;
  bool json = false;
};

std::string pad_left(const std::string& text, std::size_t width) {
  return std::string(width > text.size() ? width - text.size() : 0, ' ') + text;
}

std::string pad_right(const std::string& text, std::size_t width) {
  return text + std::string(width > text.size() ? width - text.size() : 0, ' ');
}

void print_table(const std::vector<QueueStatus>& rows) {
  const char* headers[] = {"QUEUE",  "PENDING",   "RUNNING",       "COMPLETED",
                           "FAILED", "CANCELLED", "OLDEST PENDING"};
  std::vector<std::vector<std::string>> cells;
  for (const QueueStatus& s : rows) {
    cells.push_back(
        {s.queue, std::to_string(s.pending), std::to_string(s.running),
         std::to_string(s.completed), std::to_string(s.failed),
         std::to_string(s.cancelled),
         s.oldest_pending_age ? format_age(*s.oldest_pending_age) : "-"});
  }
  std::vector<std::size_t> widths;
  for (const char* h : headers) widths.push_back(std::string_view(h).size());
  for (const auto& row : cells) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  auto line = [&](const std::vector<std::string>& row) {
    std::string out = pad_right(row[0], widths[0]);
    // Counts right-aligned, the age left-aligned as the last column.
    for (std::size_t i = 1; i + 1 < row.size(); ++i) {
      out += "  " + pad_left(row[i], widths[i]);
    }
    out += "  " + row.back();
    print_line(out);
  };
  line(std::vector<std::string>(std::begin(headers), std::end(headers)));
  for (const auto& row : cells) line(row);
  if (cells.empty()) print_line("(no queues yet)");
}

int status_command(const Connections& c, const StatusArgs& a) {
  std::optional<std::string_view> queue;
  if (!a.queue.empty()) {
    validate_queue_name(a.queue);
    queue = a.queue;
  }
  PgConnPtr db = connect(c);
  std::vector<QueueStatus> rows = queue_status(db.get(), queue);
  if (queue && rows.empty()) {
    // A queue nobody used yet: nothing pending, nothing done.
    QueueStatus empty;
    empty.queue = a.queue;
    rows.push_back(empty);
  }
  if (!a.json) {
    print_table(rows);
    return kExitOk;
  }
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const QueueStatus& s : rows) {
    nlohmann::ordered_json row;
    row["queue"] = s.queue;
    row["pending"] = s.pending;
    row["running"] = s.running;
    row["completed"] = s.completed;
    row["failed"] = s.failed;
    row["cancelled"] = s.cancelled;
    row["oldest_pending_age_seconds"] =
        s.oldest_pending_age
            ? nlohmann::ordered_json(
                  static_cast<double>(s.oldest_pending_age->count()) / 1e6)
            : nlohmann::ordered_json();
    out.push_back(std::move(row));
  }
  print_line(out.dump(2));
  return kExitOk;
}

int prune_command(const Connections& c, const std::string& older_than_text) {
  std::chrono::microseconds older_than =
      parse_duration(older_than_text, "--older-than", /*bare_seconds=*/false);
  PgConnPtr db = connect(c);
  // Progress for people watching a long prune; nothing when stderr is a
  // file or a pipe.
  std::function<void(std::int64_t)> progress;
  bool shown = false;
  auto last = std::chrono::steady_clock::now();
  if (is_terminal(2)) {
    progress = [&](std::int64_t deleted) {
      // The first batch, then at most five lines a second.
      auto now = std::chrono::steady_clock::now();
      if (shown && now - last < std::chrono::milliseconds(200)) return;
      last = now;
      shown = true;
      std::fprintf(stderr, "\rpruning: %lld finished jobs deleted so far",
                   static_cast<long long>(deleted));
      std::fflush(stderr);
    };
  }
  std::int64_t deleted = prune(db.get(), older_than, progress);
  if (shown) {
    std::fprintf(stderr, "\rpruning: %lld finished jobs deleted, done\n",
                 static_cast<long long>(deleted));
  }
  print_line(std::to_string(deleted));
  return kExitOk;
}

}  // namespace

void add_admin_commands(CLI::App& app, const Connections& connections,
                        Commands& commands) {
  {
    CLI::App* sub = app.add_subcommand(
        "migrate", "Create or upgrade pgjobq's schema in the database");
    sub->footer(
        "Creates the `pgjobq` schema, or applies the migrations it lacks.\n"
        "Safe to run again, and from several machines at once.\n"
        "\n"
        "Example:\n  pgjobq migrate --db postgresql://app@db.internal/app");
    commands.push_back(
        {sub, [&connections] { return migrate_command(connections); }});
  }
  {
    auto a = std::make_shared<StatusArgs>();
    CLI::App* sub = app.add_subcommand(
        "status", "Show each queue's jobs by state, and its oldest pending");
    sub->footer(
        "Per queue: pending, running, completed, failed and cancelled jobs\n"
        "(finished ones until pruned) and the age of the oldest pending job.\n"
        "A table, or a JSON array with --json (oldest_pending_age_seconds is\n"
        "null when nothing is pending).\n"
        "\n"
        "Examples:\n  pgjobq status\n  pgjobq status mail --json");
    sub->add_option("QUEUE", a->queue, "Only this queue");
    sub->add_flag("--json", a->json, "Print JSON instead of a table");
    commands.push_back(
        {sub, [&connections, a] { return status_command(connections, *a); }});
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
                    "A number with a unit: us, ms, s, m, h, d or w (30s, 15m, "
                    "7d)")
        ->capture_default_str();
    commands.push_back({sub, [&connections, older_than] {
                          return prune_command(connections, *older_than);
                        }});
  }
}

}  // namespace pgjobq::cli
