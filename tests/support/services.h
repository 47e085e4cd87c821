#pragma once

// Test fixtures: the throwaway servers tests/run.sh started, a fresh
// database per test cloned from a migrated template, unique queue names,
// private redis-server processes to stop and restart, and waiting with a
// deadline.

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "pgjobq/connection.h"
#include "pgjobq/worker.h"

namespace pgjobq::test {

// An environment variable tests/run.sh exports; fails the test if unset.
std::string required_env(const char* name);

// postgresql://postgres@127.0.0.1:PORT/<database>
std::string database_url(std::string_view database);

// The shared Redis of the test run.
std::string redis_url();

// A name unique to this process and call, for queues and databases:
// "<prefix>-<pid>-<counter>-<random>".
std::string unique_name(std::string_view prefix);

// Whether `text` contains `part`.
bool contains(std::string_view text, std::string_view part);

// Runs `sql` on `conn`; a failure is the test's (EXPECT, naming the SQL).
void exec(PGconn* conn, const std::string& sql);

// Replaces the pgjobq schema of `conn`'s database with the first
// migrations, up to `version`: the schema an older pgjobq left.
void schema_at_version(PGconn* conn, int version);

// Polls `condition` every few milliseconds until it holds or `timeout`
// passes. Returns whether it held.
bool wait_until(
    const std::function<bool()>& condition,
    std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));

// A test with a fresh, migrated database of its own.
class DatabaseTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  const std::string& db_url() const { return db_url_; }
  const std::string& db_name() const { return db_name_; }
  PgConnPtr connect() const;
  // Runs SQL on a new connection; returns the first column of the first
  // row ("" if none).
  std::string query_value(const std::string& sql) const;
  // Sessions of this test's database waiting for a lock held by another.
  int lock_waiters() const;
  // Job ids of `queue` in FIFO (position) order; with `unfinished_only`,
  // only its pending and running jobs.
  std::vector<std::int64_t> fifo(const std::string& queue,
                                 bool unfinished_only = false) const;
  std::string queue(std::string_view prefix = "q") const {
    return unique_name(prefix);
  }
  // Options for a Worker on this test's database and the test Redis,
  // serving `queues`; everything else at its default.
  WorkerOptions worker_options(std::vector<std::string> queues) const;

 private:
  std::string db_name_;
  std::string db_url_;
};

// A redis-server of the test's own, on a unix socket in a temporary
// directory, that the test can stop and start again.
class RedisServer {
 public:
  RedisServer();  // starts it
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // unix:///tmp/.../redis.sock (with ?password=... if one is set)
  std::string url() const;
  std::string socket_path() const { return dir_ + "/redis.sock"; }
  void start(std::string_view password = {});
  // SIGKILL, then wait for the process to be gone.
  void stop();
  void restart() {
    stop();
    start(password_);
  }
  bool running() const { return pid_ > 0; }
  // SIGSTOP and SIGCONT: a hung server, its connections open and silent.
  void pause();
  void resume();

 private:
  std::string dir_;
  std::string password_;
  pid_t pid_ = -1;
};

}  // namespace pgjobq::test
