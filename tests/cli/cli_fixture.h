#pragma once

// Runs the built `pgjobq` binary against the test servers, as a user
// would: arguments, stdin, environment; exit code, stdout, stderr.

#include <hiredis/hiredis.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/subprocess.h"
#include "pgjobq/job.h"
#include "support/services.h"

namespace pgjobq::test {

class CliTest : public DatabaseTest {
 protected:
  // DATABASE_URL and REDIS_URL of the test servers, and no PG* variables
  // that could point elsewhere; then `extra`.
  EnvChanges env(const EnvChanges& extra = {}) const;

  // Runs `pgjobq ARGS...` to completion.
  ProcessResult pgjobq(const std::vector<std::string>& args,
                       const std::string& input = {},
                       const EnvChanges& extra = {}) const;

  // Starts `pgjobq ARGS...` in the background.
  std::unique_ptr<Subprocess> start(const std::vector<std::string>& args,
                                    const EnvChanges& extra = {}) const;

  // Enqueues through the library; returns the id.
  JobId add_job(const std::string& queue, const std::string& json) const;
  // One column of a job's row, as text ("" for NULL or no such job).
  std::string job_field(JobId id, const std::string& column) const;
  std::string state_of(JobId id) const { return job_field(id, "state"); }
  int count_jobs(const std::string& queue) const;

  // A temporary directory of the test's own, removed afterwards.
  const std::string& dir();
  // Writes an executable file `name` in dir() holding `text`; returns its
  // path. Throws if it cannot.
  std::string script(const std::string& name, const std::string& text);

  void TearDown() override;

 private:
  std::string dir_;
};

// Expects `err` to be one line (one error message), and returns it.
::testing::AssertionResult OneLine(const std::string& err);

// A Redis subscription for checking what the CLI publishes.
class Subscription {
 public:
  Subscription(const std::string& redis_url, const std::string& channel);
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;
  // The next message's payload, or nullopt after `timeout`.
  std::optional<std::string> next(std::chrono::milliseconds timeout);

 private:
  redisContext* context_ = nullptr;
};

}  // namespace pgjobq::test
