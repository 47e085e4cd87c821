#include "cli/cli_fixture.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "pgjobq/connection.h"
#include "pgjobq/enqueue.h"

namespace pgjobq::test {

EnvChanges CliTest::env(const EnvChanges& extra) const {
  EnvChanges out{{"DATABASE_URL", db_url()},   {"REDIS_URL", redis_url()},
                 {"PGHOST", std::nullopt},     {"PGPORT", std::nullopt},
                 {"PGDATABASE", std::nullopt}, {"PGUSER", std::nullopt},
                 {"PGPASSWORD", std::nullopt}, {"PGSERVICE", std::nullopt}};
  out.insert(out.end(), extra.begin(), extra.end());
  return out;
}

ProcessResult CliTest::pgjobq(const std::vector<std::string>& args,
                              const std::string& input,
                              const EnvChanges& extra) const {
  std::vector<std::string> argv{PGJOBQ_CLI};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv, env(extra), input);
}

std::unique_ptr<Subprocess> CliTest::start(const std::vector<std::string>& args,
                                           const EnvChanges& extra) const {
  std::vector<std::string> argv{PGJOBQ_CLI};
  argv.insert(argv.end(), args.begin(), args.end());
  return std::make_unique<Subprocess>(argv, env(extra));
}

JobId CliTest::add_job(const std::string& queue,
                       const std::string& json) const {
  PgConnPtr conn = connect();
  return enqueue(conn.get(), queue, nlohmann::json::parse(json));
}

std::string CliTest::job_field(JobId id, const std::string& column) const {
  return query_value("SELECT " + column + " FROM pgjobq.jobs WHERE id = " +
                     std::to_string(id.value));
}

int CliTest::count_jobs(const std::string& queue) const {
  return std::stoi(
      query_value("SELECT count(*) FROM pgjobq.jobs j JOIN pgjobq.queues q ON "
                  "q.id = j.queue_id WHERE q.name = '" +
                  queue + "'"));
}

const std::string& CliTest::dir() {
  if (dir_.empty()) {
    char tmpl[] = "/tmp/pgjobq-cli-dir.XXXXXX";
    if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
  }
  return dir_;
}

std::string CliTest::script(const std::string& name, const std::string& text) {
  std::string path = dir() + "/" + name;
  {
    std::ofstream out(path);
    out << text;
    if (!out.flush()) throw std::runtime_error("cannot write " + path);
  }
  if (chmod(path.c_str(), 0755) != 0) {
    throw std::runtime_error("cannot make " + path + " executable");
  }
  return path;
}

void CliTest::TearDown() {
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  DatabaseTest::TearDown();
}

::testing::AssertionResult OneLine(const std::string& err) {
  if (err.empty()) return ::testing::AssertionFailure() << "stderr is empty";
  if (err.back() != '\n' || err.find('\n') != err.size() - 1) {
    return ::testing::AssertionFailure() << "stderr is not exactly one line:\n"
                                         << err;
  }
  return ::testing::AssertionSuccess();
}

Subscription::Subscription(const std::string& redis_url,
                           const std::string& channel) {
  // redis://HOST:PORT, as tests/run.sh exports it.
  std::string rest = redis_url.substr(redis_url.find("://") + 3);
  std::string host = rest.substr(0, rest.find(':'));
  int port = std::stoi(rest.substr(rest.find(':') + 1));
  timeval tv{5, 0};
  context_ = redisConnectWithTimeout(host.c_str(), port, tv);
  if (!context_ || context_->err) {
    throw std::runtime_error("cannot connect to Redis for a subscription");
  }
  auto* reply = static_cast<redisReply*>(
      redisCommand(context_, "SUBSCRIBE %b", channel.data(), channel.size()));
  if (!reply) throw std::runtime_error("SUBSCRIBE failed");
  freeReplyObject(reply);
}

Subscription::~Subscription() {
  if (context_) redisFree(context_);
}

std::optional<std::string> Subscription::next(
    std::chrono::milliseconds timeout) {
  if (!context_ || context_->err) return std::nullopt;
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  redisSetTimeout(context_, tv);
  void* raw = nullptr;
  if (redisGetReply(context_, &raw) != REDIS_OK || !raw) return std::nullopt;
  auto* reply = static_cast<redisReply*>(raw);
  std::optional<std::string> payload;
  if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
      reply->element[2]->type == REDIS_REPLY_STRING) {
    payload = std::string(reply->element[2]->str, reply->element[2]->len);
  }
  freeReplyObject(reply);
  return payload;
}

}  // namespace pgjobq::test
