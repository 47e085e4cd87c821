#include "publisher.h"

#include <algorithm>

#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "pgjobq/jobs.h"
#include "pgjobq/log.h"

namespace pgjobq {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kPublishConnectTimeout{2000};
constexpr milliseconds kFirstPublishRetry{1000};
constexpr milliseconds kMaxPublishRetry{30000};

}  // namespace

void Publisher::publish(
    const std::vector<std::pair<JobId, std::string>>& results,
    const std::vector<std::string>& wakeups) {
  if (results.empty() && wakeups.empty()) return;
  std::lock_guard lock(mutex_);
  if (!conn_ && std::chrono::steady_clock::now() < retry_at_) return;
  try {
    if (!conn_)
      conn_.emplace(redis::Connection::open(address_, kPublishConnectTimeout));
    std::vector<std::string> channels;
    channels.reserve(results.size() + wakeups.size());
    for (const auto& [id, message] : results) {
      channels.push_back(job_channel(id));
      std::string_view args[] = {"PUBLISH", channels.back(), message};
      conn_->append(args);
    }
    for (const std::string& queue : wakeups) {
      channels.push_back(queue_channel(queue));
      std::string_view args[] = {"PUBLISH", channels.back(), ""};
      conn_->append(args);
    }
    for (std::size_t i = 0; i < channels.size(); ++i) conn_->reply();
    outage_ = false;
    backoff_ = milliseconds(0);
  } catch (const Error& e) {
    conn_.reset();
    // From now, not from before the attempt, which may have taken its
    // whole timeout.
    backoff_ = backoff_.count() == 0 ? kFirstPublishRetry
                                     : std::min(backoff_ * 2, kMaxPublishRetry);
    retry_at_ = std::chrono::steady_clock::now() + backoff_;
    if (!outage_) {
      log(LogLevel::warning,
          std::string("results not published (waiters and workers will "
                      "poll): ") +
              e.what());
      outage_ = true;
    }
  }
}

}  // namespace pgjobq
