#include "harness.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <iostream>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "pgjobq/admin.h"

namespace pgjobq::bench {

double seconds_since(SteadyClock::time_point since) {
  return std::chrono::duration<double>(SteadyClock::now() - since).count();
}

double milliseconds_between(SteadyClock::time_point from,
                            SteadyClock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

PgResultPtr exec(PGconn* db, const char* sql,
                 std::initializer_list<std::string_view> params) {
  std::vector<std::string> owned(params.begin(), params.end());
  std::vector<const char*> values;
  values.reserve(owned.size());
  for (const std::string& p : owned) values.push_back(p.c_str());
  PgResultPtr result(PQexecParams(db, sql, static_cast<int>(values.size()),
                                  nullptr, values.data(), nullptr, nullptr, 0));
  ExecStatusType status = PQresultStatus(result.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    std::string error =
        result ? PQresultErrorMessage(result.get()) : PQerrorMessage(db);
    while (!error.empty() && error.back() == '\n') error.pop_back();
    throw std::runtime_error(std::string(sql).substr(0, 60) + "...: " + error);
  }
  return result;
}

void exec_script(PGconn* db, const std::string& sql) {
  PgResultPtr result(PQexec(db, sql.c_str()));
  ExecStatusType status = PQresultStatus(result.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    std::string error = PQerrorMessage(db);
    while (!error.empty() && error.back() == '\n') error.pop_back();
    throw std::runtime_error(sql.substr(0, 60) + ": " + error);
  }
}

std::string query_value(PGconn* db, const std::string& sql) {
  PgResultPtr result = exec(db, sql.c_str());
  if (PQntuples(result.get()) == 0) return {};
  return PQgetvalue(result.get(), 0, 0);
}

std::string with_database(std::string_view url, std::string_view database) {
  for (std::string_view scheme : {"postgresql://", "postgres://"}) {
    if (!url.starts_with(scheme)) continue;
    std::size_t path = url.find('/', scheme.size());
    std::size_t query = url.find('?', scheme.size());
    if (path != std::string_view::npos && query != std::string_view::npos &&
        query < path) {
      path = std::string_view::npos;
    }
    std::string out;
    if (path == std::string_view::npos) {
      std::size_t host_end =
          query == std::string_view::npos ? url.size() : query;
      out = std::string(url.substr(0, host_end)) + "/" + std::string(database);
      if (query != std::string_view::npos) out += url.substr(query);
    } else {
      out = std::string(url.substr(0, path + 1)) + std::string(database);
      if (query != std::string_view::npos) out += url.substr(query);
    }
    return out;
  }
  // key=value: a later dbname wins.
  return std::string(url) + " dbname=" + std::string(database);
}

double median(std::vector<double> values) { return percentile(values, 50); }

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  if (p >= 100) return values.back();
  // Nearest rank; for the median of an even count, the mean of the two.
  if (p == 50 && values.size() % 2 == 0) {
    std::size_t hi = values.size() / 2;
    return (values[hi - 1] + values[hi]) / 2;
  }
  auto rank = static_cast<std::size_t>(
      std::ceil(p / 100.0 * static_cast<double>(values.size())));
  return values[std::clamp<std::size_t>(rank, 1, values.size()) - 1];
}

const nlohmann::json& payload() {
  static const nlohmann::json kPayload = {{"to", "user-12345@example.com"},
                                          {"template", "welcome"},
                                          {"locale", "en"}};
  return kPayload;
}

const std::string& payload_text() {
  static const std::string kText = payload().dump();
  return kText;
}

std::int64_t next_reference_positions(std::int64_t count) {
  static std::atomic<std::int64_t> next{1};
  return next.fetch_add(count);
}

void prepare_database(PGconn* db) {
  migrate(db);
  // Same shape as pgjobq.jobs: the bare references insert the same row
  // into the same columns and indexes, minus the queue bookkeeping.
  exec_script(db,
              "CREATE SCHEMA IF NOT EXISTS bench;"
              "CREATE TABLE IF NOT EXISTS bench.jobs"
              " (LIKE pgjobq.jobs INCLUDING ALL) WITH (fillfactor = 80);");
}

std::vector<std::pair<std::string, std::string>> server_settings(PGconn* db) {
  PgResultPtr rows = exec(db,
                          "SELECT name, setting || coalesce(unit, '') FROM "
                          "pg_settings WHERE name = ANY($1::text[]) "
                          "ORDER BY name",
                          {"{server_version,synchronous_commit,fsync,"
                           "full_page_writes,wal_sync_method,commit_delay,"
                           "shared_buffers,wal_level,max_wal_size}"});
  std::vector<std::pair<std::string, std::string>> out;
  for (int r = 0; r < PQntuples(rows.get()); ++r) {
    out.emplace_back(PQgetvalue(rows.get(), r, 0),
                     PQgetvalue(rows.get(), r, 1));
  }
  return out;
}

double load_average() {
  std::ifstream in("/proc/loadavg");
  double load = 0;
  in >> load;
  return load;
}

void progress(const std::string& line) {
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  std::cerr << "bench: " << line << std::endl;
}

namespace {

// No NOTICE lines ("database ... does not exist, skipping") on stderr.
void quiet(PGconn* db) {
  PQsetNoticeProcessor(
      db, [](void*, const char*) {}, nullptr);
}

}  // namespace

ScratchDatabase::ScratchDatabase(std::string server_url, std::string name)
    : server_url_(std::move(server_url)),
      name_(std::move(name)),
      url_(with_database(server_url_, name_)) {
  PgConnPtr admin = connect_database(server_url_);
  quiet(admin.get());
  exec_script(admin.get(), "DROP DATABASE IF EXISTS \"" + name_ + "\"");
  exec_script(admin.get(), "CREATE DATABASE \"" + name_ + "\"");
}

PgConnPtr ScratchDatabase::connect() const {
  PgConnPtr db = connect_database(url_);
  quiet(db.get());
  return db;
}

ScratchDatabase::~ScratchDatabase() {
  try {
    PgConnPtr admin = connect_database(server_url_);
    quiet(admin.get());
    exec_script(admin.get(),
                "DROP DATABASE IF EXISTS \"" + name_ + "\" WITH (FORCE)");
  } catch (const std::exception& e) {
    progress(std::string("could not drop database ") + name_ + ": " + e.what());
  }
}

}  // namespace pgjobq::bench
