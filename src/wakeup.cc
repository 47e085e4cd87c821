// Redis wake-ups: the channel names, notify() and publishing for enqueuers,
// StopSignal, and Wakeups (a worker's subscriber thread, below). Redis
// carries only hints: a lost message costs latency, never correctness.

#include <string>

#include "pgjobq/connection.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "pgjobq/jobs.h"

namespace pgjobq {

std::string queue_channel(std::string_view queue) {
  return "pgjobq/" + std::string(queue) + "-notify";
}

std::string job_channel(JobId id) {
  return "pgjobq/job-" + std::to_string(id.value);
}

bool notify(RedisLink& redis, std::string_view queue, std::string* error) {
  validate_queue_name(queue);
  try {
    redis.publish(queue_channel(queue), "");
    return true;
  } catch (const Error& e) {
    if (error) {
      *error = "wake-up for queue \"" + std::string(queue) +
               "\" not sent (the worker's poll will find the job): " + e.what();
    }
    return false;
  }
}

}  // namespace pgjobq

// ------------------------------------------------------------ Wakeups

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <unordered_map>

#include "pgjobq/log.h"
#include "wakeup.h"

namespace pgjobq {

StopSignal::StopSignal() : fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (fd_ < 0) throw Error("eventfd failed");
}

StopSignal::~StopSignal() { close(fd_); }

void StopSignal::set() noexcept {
  set_ = true;
  std::uint64_t one = 1;
  // The counter stays non-zero, so the fd stays readable for every poller.
  [[maybe_unused]] auto n = write(fd_, &one, sizeof one);
}

void StopSignal::sleep_for(std::chrono::milliseconds delay) const noexcept {
  // In rounds: a signal ends poll() early (EINTR), and one poll() takes at
  // most INT_MAX ms (2^30 here), less than the longest retry delay (ten
  // years).
  if (delay <= std::chrono::milliseconds(0)) return;
  auto start = std::chrono::steady_clock::now();
  for (;;) {
    auto left = delay - std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - start);
    if (left <= std::chrono::milliseconds(0)) return;
    pollfd fd{fd_, POLLIN, 0};
    int n = poll(&fd, 1,
                 static_cast<int>(std::min<std::chrono::milliseconds::rep>(
                     left.count(), 1 << 30)));
    if (n > 0 || (n < 0 && errno != EINTR)) return;
  }
}

Wakeups::Wakeups(redis::Address address, const std::vector<std::string>& queues,
                 const StopSignal& stop)
    : address_(std::move(address)), stop_(stop) {
  for (const std::string& q : queues) {
    channels_.push_back(queue_channel(q));
    slots_.push_back(std::make_unique<Slot>());
  }
}

Wakeups::~Wakeups() {
  if (thread_.joinable()) thread_.join();
}

void Wakeups::start() {
  thread_ = std::thread([this] { subscriber_loop(); });
}

void Wakeups::join() {
  if (thread_.joinable()) thread_.join();
}

void Wakeups::clear(std::size_t queue) {
  Slot& slot = *slots_[queue];
  std::lock_guard lock(slot.mutex);
  slot.woken = false;
}

bool Wakeups::wait(std::size_t queue, std::chrono::microseconds timeout) {
  Slot& slot = *slots_[queue];
  std::unique_lock lock(slot.mutex);
  slot.cv.wait_for(lock, timeout, [&] { return slot.woken || stop_.is_set(); });
  return slot.woken;
}

void Wakeups::wake(std::size_t queue) {
  Slot& slot = *slots_[queue];
  {
    std::lock_guard lock(slot.mutex);
    slot.woken = true;
  }
  slot.cv.notify_all();
}

void Wakeups::wake_all() {
  for (std::size_t i = 0; i < slots_.size(); ++i) wake(i);
}

void Wakeups::subscriber_loop() {
  using std::chrono::milliseconds;
  // Silence is normal on a quiet link, and also what a hung Redis (its
  // connections open, nothing answering) looks like. So a link quiet for a
  // second is pinged; a ping unanswered for a second makes the runners
  // poll PostgreSQL, as without Redis, until the answer comes; one
  // unanswered for five drops the link for a new one. (With a 15 s wait
  // before the ping, an idle worker was deaf for 20 s:
  // FaultTest.AnIdleWorkerNoticesAHungRedisWithinSeconds.)
  constexpr auto kIdleBeforePing = std::chrono::seconds(1);
  constexpr auto kPingLate = std::chrono::seconds(1);
  constexpr auto kPingAnswer = std::chrono::seconds(5);
  constexpr milliseconds kFirstRetry{100};
  constexpr milliseconds kMaxRetry{5000};

  std::unordered_map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < channels_.size(); ++i) index[channels_[i]] = i;
  milliseconds retry = kFirstRetry;
  bool outage_logged = false;
  while (!stop_.is_set()) {
    try {
      auto subscriber = redis::Subscriber::open(address_, milliseconds(2000));
      // A stop does not wait for a Redis that is slow to confirm.
      if (!subscriber.subscribe(channels_, std::chrono::seconds(5),
                                stop_.fd())) {
        break;
      }
      subscribed_ = true;
      if (outage_logged) {
        log(LogLevel::info,
            "Redis at " + address_.redacted + " is back; wake-ups resumed");
      }
      outage_logged = false;
      retry = kFirstRetry;
      // Anything enqueued while we were not subscribed sent its wake-up
      // into the void: every queue looks again.
      wake_all();
      std::optional<std::chrono::steady_clock::time_point> ping_sent;
      while (!stop_.is_set()) {
        auto message = subscriber.next(milliseconds(500), stop_.fd());
        if (message) {
          if (auto it = index.find(message->channel); it != index.end()) {
            wake(it->second);
          }
        }
        auto now = std::chrono::steady_clock::now();
        if (ping_sent && subscriber.last_reply() >= *ping_sent) {
          ping_sent.reset();
          subscribed_ = true;  // if it was late: answered after all
        }
        if (ping_sent && now - *ping_sent > kPingAnswer) {
          throw ConnectionError("Redis at " + address_.redacted +
                                " stopped answering");
        }
        if (ping_sent && subscribed_ && now - *ping_sent > kPingLate) {
          subscribed_ = false;
          wake_all();  // they look now, then poll
        }
        if (!ping_sent && now - subscriber.last_reply() > kIdleBeforePing) {
          subscriber.ping();
          ping_sent = now;
        }
      }
    } catch (const Error& e) {
      subscribed_ = false;
      if (!outage_logged) {
        log(LogLevel::warning,
            std::string(e.what()) + "; polling PostgreSQL until Redis is back");
        outage_logged = true;
      }
      // Runners keep polling meanwhile; make them look now, in case the
      // link died mid-message.
      wake_all();
      stop_.sleep_for(retry);
      retry = std::min(retry * 2, kMaxRetry);
    }
  }
  subscribed_ = false;
}

}  // namespace pgjobq
