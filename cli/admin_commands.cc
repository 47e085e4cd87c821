// migrate, status, prune: the operator's commands.

#include "cli/admin_commands.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>

#include "cli/json_input.h"
#include "pgjobq/admin.h"
#include "pgjobq/connection.h"
#include "pgjobq/enqueue.h"

namespace pgjobq::cli {

int migrate_command(const Connections& c, const std::string& lock_wait) {
  auto wait = std::chrono::ceil<std::chrono::milliseconds>(
      parse_duration(lock_wait, "--lock-wait"));
  PgConnPtr db = connect(c);
  int applied = migrate(db.get(), wait);
  std::string version = std::to_string(schema_version());
  if (applied == 0) {
    print_line("schema is up to date (version " + version + ")");
  } else {
    print_line("applied " + std::to_string(applied) +
               " migration(s); schema version " + version);
  }
  return kExitOk;
}

namespace {

std::string pad_left(const std::string& text, std::size_t width) {
  return std::string(width > text.size() ? width - text.size() : 0, ' ') + text;
}

std::string pad_right(const std::string& text, std::size_t width) {
  return text + std::string(width > text.size() ? width - text.size() : 0, ' ');
}

void print_table(const std::vector<QueueStatus>& rows) {
  const char* headers[] = {"QUEUE",     "PENDING",  "RUNNING",
                           "COMPLETED", "FAILED",   "CANCELLED",
                           "WORKERS",   "STANDBYS", "OLDEST PENDING"};
  std::vector<std::vector<std::string>> cells;
  for (const QueueStatus& s : rows) {
    cells.push_back(
        {s.queue, std::to_string(s.pending), std::to_string(s.running),
         std::to_string(s.completed), std::to_string(s.failed),
         std::to_string(s.cancelled), std::to_string(s.workers),
         std::to_string(s.standbys),
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

}  // namespace

int status_command(const Connections& c, const StatusArgs& a) {
  // `status ""` names no queue: refused like any invalid name.
  std::optional<std::string_view> queue;
  if (a.queue) {
    validate_queue_name(*a.queue);
    queue = *a.queue;
  }
  PgConnPtr db = connect(c);
  std::vector<QueueStatus> rows = queue_status(db.get(), queue);
  if (queue && rows.empty()) {
    // A queue nobody used yet: nothing pending, nothing done.
    QueueStatus empty;
    empty.queue = *a.queue;
    rows.push_back(empty);
  }
  if (!a.json) {
    print_table(rows);
    return kExitOk;
  }
  std::string out = "[";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const QueueStatus& q = rows[i];
    nlohmann::json age;
    if (q.oldest_pending_age) {
      age = static_cast<double>(q.oldest_pending_age->count()) / 1e6;
    }
    out += i == 0 ? "\n  " : ",\n  ";
    out += pretty_object({{"queue", q.queue},
                          {"pending", q.pending},
                          {"running", q.running},
                          {"completed", q.completed},
                          {"failed", q.failed},
                          {"cancelled", q.cancelled},
                          {"workers", q.workers},
                          {"standbys", q.standbys},
                          {"oldest_pending_age_seconds", age}},
                         2);
  }
  print_line(out + (rows.empty() ? "]" : "\n]"));
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
  std::int64_t deleted = 0;
  try {
    deleted = prune(db.get(), older_than, progress);
  } catch (...) {
    // The error's line of its own, after the progress line.
    if (shown) std::fputs("\n", stderr);
    throw;
  }
  if (shown) {
    std::fprintf(stderr, "\rpruning: %lld finished jobs deleted, done\n",
                 static_cast<long long>(deleted));
  }
  print_line(std::to_string(deleted));
  return kExitOk;
}

}  // namespace pgjobq::cli
