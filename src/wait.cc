// Waiting for a job's result: subscribe, then read, then wait. Redis only
// says "look again"; the answer always comes from PostgreSQL.

#include <algorithm>
#include <thread>

#include "context.h"
#include "pg/connection.h"
#include "pgjobq/errors.h"
#include "pgjobq/jobs.h"
#include "pgjobq/log.h"
#include "redis_link.h"
#include "sql/statements.h"

namespace pgjobq {
namespace {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// While subscribed, PostgreSQL is still re-read now and then: a worker that
// died between committing and publishing leaves no message behind.
constexpr milliseconds kSubscribedFirstCheck{250};
constexpr milliseconds kSubscribedMaxCheck{1000};
// Without Redis, polling is all there is: start fast, back off to a bound.
constexpr milliseconds kPollingFirstCheck{5};
constexpr milliseconds kPollingMaxCheck{200};

// The job's outcome if it has one; throws NoSuchJob or JobFailed.
std::optional<nlohmann::json> read_outcome(PGconn* db, JobId id) {
  pg::Param params[] = {pg::param(id.value)};
  bool utf8 = pg::utf8_session(db);
  pg::Result row = pg::exec(
      db, utf8 ? sql::kSelectOutcome : sql::kSelectOutcomeAsUtf8, params);
  if (row.rows() == 0) throw NoSuchJob(id);
  auto text = [&](int col) {
    if (row.is_null(0, col)) return std::string();
    return utf8 ? std::string(row.text(0, col)) : row.bytes(0, col);
  };
  auto state = parse_job_state(row.text(0, 0));
  if (state == JobState::completed) {
    if (row.is_null(0, 1)) return nlohmann::json();
    return nlohmann::json::parse(text(1));
  }
  if (state == JobState::failed || state == JobState::cancelled) {
    std::string error = text(2);
    std::string message = "job " + std::to_string(id.value) + " " +
                          std::string(to_string(*state));
    if (!error.empty()) message += ": " + error;
    throw JobFailed(message, *state, error);
  }
  return std::nullopt;
}

// Subscribes the link's kept subscriber to `channel`, opening one if there
// is none. A kept connection may have died since the last wait (Redis
// restarted): then one try on a fresh one. Returns nullptr when Redis
// cannot be reached: the caller polls. Waits for Redis no longer than the
// wait's own `timeout`, so that a Redis that never answers cannot make the
// wait overrun it.
redis::Subscriber* subscribe(RedisLinkAccess::Impl& link,
                             const std::string& channel, milliseconds timeout) {
  std::string channels[] = {channel};
  milliseconds patience = std::clamp(timeout, milliseconds(1), link.timeout);
  // Both tries together: a kept connection to a hung Redis takes all of it,
  // and leaves the fresh one none.
  auto deadline = SteadyClock::now() + patience;
  while (true) {
    bool kept = link.subscriber.has_value();
    try {
      if (!kept) {
        link.subscriber.emplace(
            redis::Subscriber::open(link.address, patience));
      }
      link.subscriber->subscribe(channels, patience);
      return &*link.subscriber;
    } catch (const ConnectionError& e) {
      link.subscriber.reset();
      patience = std::chrono::ceil<milliseconds>(deadline - SteadyClock::now());
      if (kept && patience.count() > 0) continue;
      log(LogLevel::debug, std::string("waiting by polling: ") + e.what());
      return nullptr;
    }
  }
}

// Waits up to `timeout` for a message on `channel`. Messages on other
// channels, left over from earlier waits on the same link, are skipped.
void await_message(redis::Subscriber& subscriber, const std::string& channel,
                   milliseconds timeout) {
  auto deadline = SteadyClock::now() + timeout;
  while (true) {
    auto left = std::chrono::ceil<milliseconds>(deadline - SteadyClock::now());
    if (left.count() <= 0) return;
    auto message = subscriber.next(left);
    if (!message || message->channel == channel) return;
  }
}

// Refuses a wait in a transaction that could never see the job finish,
// and would only time out: one whose snapshot is fixed (REPEATABLE READ,
// SERIALIZABLE), or one that enqueued (or rescheduled) the job itself and
// has not committed, so that no worker can see the job. The latter also
// held the queue's row all the while, stalling every other enqueuer of the
// queue until the timeout.
void refuse_hopeless_wait(PGconn* db, JobId id) {
  PGTransactionStatusType status = PQtransactionStatus(db);
  if (status != PQTRANS_INTRANS && status != PQTRANS_INERROR) return;
  pg::Param params[] = {pg::param(id.value)};
  pg::Result row = pg::exec(db, sql::kWaitInTransaction, params);
  std::string isolation(row.text(0, 0));
  if (isolation != "read committed" && isolation != "read uncommitted") {
    throw InvalidInput("wait_for_result in a " + isolation +
                       " transaction would never see the job finish; wait "
                       "outside the transaction or in a READ COMMITTED one");
  }
  if (row.boolean(0, 1)) {
    throw InvalidInput(
        "wait for job " + std::to_string(id.value) +
        ": it was enqueued (or rescheduled) in this transaction, which has "
        "not committed, and no worker can see it before it does; commit "
        "first, then wait");
  }
}

}  // namespace

nlohmann::json wait_for_result(PGconn* db, RedisLink& redis, JobId id,
                               milliseconds timeout) {
  try {
    refuse_hopeless_wait(db, id);
  } catch (const InvalidInput&) {
    throw;
  } catch (...) {
    rethrow_with_context("wait for job " + std::to_string(id.value));
  }
  // A century is forever; milliseconds::max() must not overflow the clock.
  constexpr milliseconds kForever = std::chrono::hours(24 * 365 * 100);
  auto deadline =
      SteadyClock::now() + std::clamp(timeout, milliseconds(0), kForever);
  RedisLinkAccess::Impl& link = RedisLinkAccess::of(redis);
  std::string channel = job_channel(id);
  // Subscribe before the first read: a result published after this point
  // wakes us; one committed before it is seen by the read.
  redis::Subscriber* subscriber = subscribe(link, channel, timeout);
  // However the wait ends, the link stays subscribed to nothing of it.
  struct Unsubscribe {
    RedisLinkAccess::Impl& link;
    redis::Subscriber*& subscriber;
    const std::string& channel;
    ~Unsubscribe() {
      if (!subscriber) return;
      try {
        std::string channels[] = {channel};
        subscriber->unsubscribe(channels);
      } catch (const ConnectionError&) {
        link.subscriber.reset();
      }
    }
  } unsubscribe{link, subscriber, channel};
  milliseconds check = subscriber ? kSubscribedFirstCheck : kPollingFirstCheck;
  try {
    while (true) {
      if (auto result = read_outcome(db, id)) return *result;
      auto now = SteadyClock::now();
      if (now >= deadline) {
        throw Timeout("job " + std::to_string(id.value) +
                      " did not finish within " +
                      std::to_string(timeout.count()) + " ms");
      }
      auto wait = std::min<milliseconds>(
          check, std::chrono::ceil<milliseconds>(deadline - now));
      if (subscriber) {
        try {
          // A message or a timeout: either way, look again.
          await_message(*subscriber, channel, wait);
        } catch (const ConnectionError& e) {
          log(LogLevel::debug,
              std::string("Redis lost while waiting; polling: ") + e.what());
          link.subscriber.reset();
          subscriber = nullptr;
          check = kPollingFirstCheck;
          continue;
        }
        check = std::min(check * 2, kSubscribedMaxCheck);
      } else {
        std::this_thread::sleep_for(wait);
        check = std::min(check * 2, kPollingMaxCheck);
      }
    }
  } catch (const NoSuchJob&) {
    throw;  // these already name the job
  } catch (const Timeout&) {
    throw;
  } catch (const JobFailed&) {
    throw;
  } catch (...) {
    rethrow_with_context("wait for job " + std::to_string(id.value));
  }
}

}  // namespace pgjobq
