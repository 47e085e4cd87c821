#include "redis/connection.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "pgjobq/errors.h"

namespace pgjobq::redis {
namespace {

// hiredis writes with write(2), which raises SIGPIPE when Redis has closed
// the socket, and the default action kills the process. A library must not
// change the process's signal dispositions, so, like libpq, block SIGPIPE in
// this thread around each call and swallow one we caused.
class SigpipeGuard {
 public:
  SigpipeGuard() noexcept {
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, &old_mask_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        sigset_t pipe;
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        timespec zero{};
        sigtimedwait(&pipe, nullptr, &zero);
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t old_mask_{};
  bool was_pending_ = false;
};

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

struct Argv {
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  explicit Argv(std::span<const std::string_view> args) {
    ptrs.reserve(args.size());
    lens.reserve(args.size());
    for (std::string_view a : args) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
  }
  int count() const { return static_cast<int>(ptrs.size()); }
};

// hiredis's reply functions, but an array is refused, before hiredis
// allocates its elements, once the reply's arrays hold more than
// kMaxReplyElements elements in all: a reply object per element is a dozen
// times the bytes of a small one (":1\r\n"), so the bytes alone do not
// bound a reply's memory, and nested arrays passed a limit on each array
// alone (61 MiB of them grew a process to 1.1 GB). Every task carries the
// reader's privdata, the Connection's ReplyBudget.
Connection::ReplyBudget& budget_of(const redisReadTask* task) {
  return *static_cast<Connection::ReplyBudget*>(task->privdata);
}

void* create_string(const redisReadTask* task, char* str, size_t len) {
  return budget_of(task).base->createString(task, str, len);
}

void* create_array(const redisReadTask* task, int elements) {
  Connection::ReplyBudget& budget = budget_of(task);
  budget.elements += elements;
  if (budget.elements > Connection::kMaxReplyElements) {
    budget.refused = elements;
    return nullptr;  // the reader's error: "Out of memory"
  }
  return budget.base->createArray(task, elements);
}

void* create_integer(const redisReadTask* task, long long value) {
  return budget_of(task).base->createInteger(task, value);
}

void* create_nil(const redisReadTask* task) {
  return budget_of(task).base->createNil(task);
}

redisReplyObjectFunctions kBudgetedFunctions{
    create_string, create_array, create_integer, create_nil, freeReplyObject};

}  // namespace

Connection Connection::open(const Address& address,
                            std::chrono::milliseconds timeout) {
  timeval tv = to_timeval(timeout);
  ContextPtr context(
      address.unix_path.empty()
          ? redisConnectWithTimeout(address.host.c_str(), address.port, tv)
          : redisConnectUnixWithTimeout(address.unix_path.c_str(), tv));
  if (!context) {
    throw ConnectionError("cannot reach Redis at " + address.redacted +
                          ": out of memory");
  }
  if (context->err) {
    throw ConnectionError("cannot reach Redis at " + address.redacted + ": " +
                          context->errstr);
  }
  if (redisSetTimeout(context.get(), tv) != REDIS_OK) {
    throw ConnectionError("cannot set a timeout on the Redis connection to " +
                          address.redacted);
  }
  auto budget = std::make_unique<ReplyBudget>();
  budget->base = context->reader->fn;
  context->reader->fn = &kBudgetedFunctions;
  context->reader->privdata = budget.get();
  Connection conn(std::move(budget), std::move(context), address.redacted,
                  timeout);
  if (!address.password.empty()) {
    if (address.user.empty()) {
      std::string_view args[] = {"AUTH", address.password};
      conn.command(args);
    } else {
      std::string_view args[] = {"AUTH", address.user, address.password};
      conn.command(args);
    }
  }
  if (address.db != 0) {
    std::string db = std::to_string(address.db);
    std::string_view args[] = {"SELECT", db};
    conn.command(args);
  }
  return conn;
}

void Connection::fail(std::string_view doing) const {
  std::string detail = context_->err ? context_->errstr : "unknown error";
  // hiredis reports a socket timeout (SO_RCVTIMEO, SO_SNDTIMEO) as the
  // text of EAGAIN.
  if (context_->err == REDIS_ERR_IO && detail == std::strerror(EAGAIN)) {
    detail = "timed out (the server did not answer)";
  }
  throw ConnectionError("Redis at " + where_ + ": " + std::string(doing) +
                        " failed: " + detail);
}

ReplyPtr Connection::command(std::span<const std::string_view> args) {
  append(args);
  return reply();
}

void Connection::append(std::span<const std::string_view> args) {
  Argv argv(args);
  if (redisAppendCommandArgv(context_.get(), argv.count(), argv.ptrs.data(),
                             argv.lens.data()) != REDIS_OK) {
    fail(args.empty() ? "command" : args[0]);
  }
}

ReplyPtr Connection::reply() {
  SigpipeGuard guard;
  int done = 0;
  while (!done) {
    if (redisBufferWrite(context_.get(), &done) != REDIS_OK) {
      fail("sending a command");
    }
  }
  // Not redisGetReply: its socket timeout bounds each read, not the reply,
  // and it reads a reply of any size. A server trickling out a reply that
  // never ends held a publish (an enqueue's wake-up, a worker's results)
  // forever, and grew the process without bound.
  ReplyPtr reply = read_reply(timeout_);
  if (!reply) {
    throw ConnectionError("Redis at " + where_ +
                          ": reading a reply failed: timed out (the server "
                          "did not answer)");
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    // The server's error text never holds our password (it says
    // "WRONGPASS invalid username-password pair", for one).
    std::string text(reply->str, reply->len);
    throw ConnectionError("Redis at " + where_ + " refused: " + text);
  }
  return reply;
}

Subscriber Subscriber::open(const Address& address,
                            std::chrono::milliseconds timeout) {
  return Subscriber(Connection::open(address, timeout));
}

ReplyPtr Connection::buffered_reply() {
  void* raw = nullptr;
  if (redisGetReplyFromReader(context_.get(), &raw) != REDIS_OK) {
    if (budget_->refused >= 0) {
      throw ConnectionError(
          "Redis at " + where_ + ": " +
          (budget_->refused > kMaxReplyElements
               ? "an array of " + std::to_string(budget_->refused) + " elements"
               : "nested arrays of more than " +
                     std::to_string(kMaxReplyElements) + " elements in all") +
          ", more than pgjobq ever expects; dropping the connection");
    }
    throw ConnectionError("Redis at " + where_ +
                          ": unreadable reply: " + context_->errstr);
  }
  if (raw) {
    unfinished_bytes_ = 0;
    budget_->elements = 0;
    return ReplyPtr(static_cast<redisReply*>(raw));
  }
  return nullptr;
}

void Connection::read_available() {
  char buffer[16 * 1024];
  ssize_t n = read(context_->fd, buffer, sizeof buffer);
  if (n < 0) {
    if (errno == EINTR || errno == EAGAIN) return;
    throw ConnectionError("Redis at " + where_ +
                          ": connection lost: " + std::strerror(errno));
  }
  if (n == 0) {
    throw ConnectionError("Redis at " + where_ +
                          ": connection lost: Server closed the connection");
  }
  // Counted from the last whole reply, so a chunk that also holds the start
  // of the next one may count a little of it early.
  unfinished_bytes_ += static_cast<std::size_t>(n);
  if (unfinished_bytes_ > kMaxReplyBytes) {
    throw ConnectionError("Redis at " + where_ + ": a reply of more than " +
                          std::to_string(kMaxReplyBytes >> 20) +
                          " MiB, more than pgjobq ever expects; dropping "
                          "the connection");
  }
  if (redisReaderFeed(context_->reader, buffer, static_cast<std::size_t>(n)) !=
      REDIS_OK) {
    throw ConnectionError("Redis at " + where_ +
                          ": unreadable reply: " + context_->reader->errstr);
  }
}

ReplyPtr Connection::read_reply(std::chrono::milliseconds timeout,
                                int wake_fd) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (ReplyPtr reply = buffered_reply()) return reply;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) return nullptr;
    pollfd fds[2] = {{context_->fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    // Round up so a sub-millisecond remainder still waits.
    int ms = static_cast<int>(std::min<long long>(left.count() + 1, 1 << 30));
    int ready = poll(fds, wake_fd >= 0 ? 2 : 1, ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      throw ConnectionError("Redis at " + where_ +
                            ": poll failed: " + std::strerror(errno));
    }
    if (ready == 0) return nullptr;
    if (wake_fd >= 0 && fds[1].revents != 0) return nullptr;
    read_available();
  }
}

void Subscriber::ping() { send("PING", {}); }

ReplyPtr Subscriber::read_reply(std::chrono::milliseconds timeout,
                                int wake_fd) {
  ReplyPtr reply = conn_.read_reply(timeout, wake_fd);
  if (reply) last_reply_ = std::chrono::steady_clock::now();
  return reply;
}

namespace {

bool is_kind(const redisReply* reply, std::string_view kind) {
  return reply->type == REDIS_REPLY_ARRAY && reply->elements >= 3 &&
         reply->element[0]->type == REDIS_REPLY_STRING &&
         std::string_view(reply->element[0]->str, reply->element[0]->len) ==
             kind;
}

std::string element_text(const redisReply* reply, std::size_t i) {
  const redisReply* e = reply->element[i];
  if (e->type != REDIS_REPLY_STRING) return {};
  return std::string(e->str, e->len);
}

}  // namespace

void Subscriber::send(std::string_view command,
                      std::span<const std::string> channels) {
  std::vector<std::string_view> args{command};
  for (const std::string& c : channels) args.push_back(c);
  SigpipeGuard guard;
  conn_.append(args);
  int done = 0;
  while (!done) {
    if (redisBufferWrite(conn_.get(), &done) != REDIS_OK) {
      throw ConnectionError("Redis at " + conn_.where() + ": " +
                            std::string(command) +
                            " failed: " + conn_.get()->errstr);
    }
  }
}

bool Subscriber::subscribe(std::span<const std::string> channels,
                           std::chrono::milliseconds timeout, int wake_fd) {
  if (channels.empty()) return true;
  send("SUBSCRIBE", channels);
  channels_.insert(channels.begin(), channels.end());
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::size_t confirmed = 0;
  while (confirmed < channels.size()) {
    ReplyPtr reply =
        read_reply(std::chrono::duration_cast<std::chrono::milliseconds>(
                       deadline - std::chrono::steady_clock::now()),
                   wake_fd);
    if (!reply) {
      pollfd wake{wake_fd, POLLIN, 0};
      if (wake_fd >= 0 && poll(&wake, 1, 0) > 0) return false;
      throw ConnectionError("Redis at " + conn_.where() +
                            ": no answer to SUBSCRIBE");
    }
    if (reply->type == REDIS_REPLY_ERROR) {
      throw ConnectionError(
          "Redis at " + conn_.where() +
          " refused SUBSCRIBE: " + std::string(reply->str, reply->len));
    }
    if (is_kind(reply.get(), "subscribe")) {
      ++confirmed;
    } else if (is_kind(reply.get(), "message") &&
               channels_.contains(element_text(reply.get(), 1))) {
      early_.push_back(
          {element_text(reply.get(), 1), element_text(reply.get(), 2)});
    }
  }
  return true;
}

void Subscriber::unsubscribe(std::span<const std::string> channels) {
  if (channels.empty()) return;
  for (const std::string& c : channels) channels_.erase(c);
  send("UNSUBSCRIBE", channels);
}

std::optional<Message> Subscriber::next(std::chrono::milliseconds timeout,
                                        int wake_fd) {
  if (!early_.empty()) {
    Message m = std::move(early_.front());
    early_.erase(early_.begin());
    return m;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    ReplyPtr reply =
        read_reply(std::max(left, std::chrono::milliseconds(0)), wake_fd);
    if (!reply) return std::nullopt;
    if (is_kind(reply.get(), "message")) {
      return Message{element_text(reply.get(), 1),
                     element_text(reply.get(), 2)};
    }
    // Subscription confirmations and other pushes are not messages.
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
  }
}

}  // namespace pgjobq::redis
