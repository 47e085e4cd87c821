#pragma once

// The hiredis edge: owned contexts and replies, commands that throw, and a
// subscriber that waits on a socket. Knows nothing of jobs.
//
// A hiredis context is dead after its first error, so a Connection throws
// ConnectionError and is then replaced, never reused. Debian 12 ships
// hiredis 0.14: no redisConnectWithOptions, no RESP3.

#include <hiredis/hiredis.h>

#include <chrono>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace pgjobq::redis {

template <auto Free>
struct Deleter {
  void operator()(auto* p) const noexcept { Free(p); }
};
using ContextPtr = std::unique_ptr<redisContext, Deleter<redisFree>>;
using ReplyPtr = std::unique_ptr<redisReply, Deleter<freeReplyObject>>;

// Where a Redis server is and how to log in.
struct Address {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string unix_path;  // set for unix:// URLs; host and port are unused
  std::string user;       // Redis 6 ACL user; empty for plain AUTH
  std::string password;
  int db = 0;
  std::string redacted;  // the URL without its password, for messages
};

// Parses redis://[[user:]password@]host[:port][/db][?QUERY] or
// unix:///path[?QUERY], QUERY being db=N&password=P&user=U (any of them,
// in any order). Percent-escapes in the user and password are decoded; a
// password may also hold unencoded '@', '/' and '?' (the userinfo ends at
// the last '@' outside a key=value query). Throws InvalidInput.
Address parse_url(std::string_view url);

class Connection {
 public:
  // Connects, then sends AUTH and SELECT as the address asks. `timeout`
  // bounds the connect and every later command. Throws ConnectionError.
  static Connection open(const Address& address,
                         std::chrono::milliseconds timeout);

  // Sends one command and returns its reply. Throws ConnectionError on an
  // I/O failure or an error reply; the connection is then dead.
  ReplyPtr command(std::span<const std::string_view> args);

  // Queues a command without waiting (pipelining); replies come from
  // reply(), in order. reply() waits at most the connection's timeout for
  // the whole reply, and throws ConnectionError as command() does.
  void append(std::span<const std::string_view> args);
  ReplyPtr reply();

  // The next reply, waiting up to `timeout` for it to be whole; nullptr
  // when the time is up, or when `wake_fd` (if not -1) becomes readable.
  // Throws ConnectionError for a malformed reply, a closed connection, or a
  // reply that grows past kMaxReplyBytes: nothing pgjobq asks for is that
  // large, and a server sending a reply that never ends would otherwise
  // fill the memory.
  ReplyPtr read_reply(std::chrono::milliseconds timeout, int wake_fd = -1);
  static constexpr std::size_t kMaxReplyBytes = std::size_t{64} << 20;
  // buffered_reply() throws ConnectionError for a reply whose arrays hold
  // more elements than this, nested ones counted together, refused before
  // hiredis allocates them.
  static constexpr int kMaxReplyElements = 1024;
  // The elements of the reply being read (kBudgetedFunctions in the .cc).
  // Nothing pgjobq reads holds more than a few.
  struct ReplyBudget {
    redisReplyObjectFunctions* base = nullptr;  // hiredis's own
    long long elements = 0;
    long long refused = -1;  // the refused array's length
  };

  int fd() const noexcept { return context_->fd; }
  redisContext* get() const noexcept { return context_.get(); }
  const std::string& where() const noexcept { return where_; }

 private:
  Connection(std::unique_ptr<ReplyBudget> budget, ContextPtr context,
             std::string where, std::chrono::milliseconds timeout) noexcept
      : budget_(std::move(budget)),
        context_(std::move(context)),
        where_(std::move(where)),
        timeout_(timeout) {}
  [[noreturn]] void fail(std::string_view doing) const;
  // A reply already read from the socket, if any, else nullptr.
  ReplyPtr buffered_reply();
  // Reads what the socket holds (call when poll() says it is readable).
  void read_available();

  // The reader's privdata: outlives the context, and stays put when the
  // Connection moves.
  std::unique_ptr<ReplyBudget> budget_;
  ContextPtr context_;
  std::string where_;  // redacted URL
  std::chrono::milliseconds timeout_;
  std::size_t unfinished_bytes_ = 0;  // read of the reply not complete yet
};

// One message from a subscription.
struct Message {
  std::string channel;
  std::string payload;
};

// A connection in subscribe mode. Subscribing waits for Redis to confirm,
// so a message published after subscribe() returns is delivered.
class Subscriber {
 public:
  static Subscriber open(const Address& address,
                         std::chrono::milliseconds timeout);

  // Subscribes to `channels` and waits, at most `timeout`, for every
  // confirmation. Messages on channels subscribed earlier (and not
  // unsubscribed since) that arrive meanwhile are kept for next(); those on
  // channels unsubscribed are dropped, or a link reused for many waits
  // would pile them up. Returns false, unconfirmed, if
  // `wake_fd` (if >= 0) becomes readable first. Throws ConnectionError.
  bool subscribe(std::span<const std::string> channels,
                 std::chrono::milliseconds timeout = std::chrono::seconds(5),
                 int wake_fd = -1);

  // Sends UNSUBSCRIBE for `channels` without waiting for Redis to confirm:
  // the confirmations, and any message already on its way, come later and
  // are skipped by next() (confirmations) or by the caller (messages, which
  // name their channel). Throws ConnectionError.
  void unsubscribe(std::span<const std::string> channels);

  // The next message, waiting at most `timeout`. Returns nullopt on timeout
  // or when `wake_fd` (if >= 0) becomes readable. Throws ConnectionError.
  std::optional<Message> next(std::chrono::milliseconds timeout,
                              int wake_fd = -1);

  // Sends PING (allowed while subscribed) to prove the link is alive; its
  // answer updates last_reply().
  void ping();
  std::chrono::steady_clock::time_point last_reply() const noexcept {
    return last_reply_;
  }

 private:
  explicit Subscriber(Connection conn) noexcept : conn_(std::move(conn)) {}
  // Writes `command channels...` out, without reading any reply.
  void send(std::string_view command, std::span<const std::string> channels);
  // Connection::read_reply, noting when a reply came (last_reply()).
  ReplyPtr read_reply(std::chrono::milliseconds timeout, int wake_fd);

  Connection conn_;
  std::vector<Message> early_;      // messages seen while subscribing
  std::set<std::string> channels_;  // subscribed, not unsubscribed since
  std::chrono::steady_clock::time_point last_reply_ =
      std::chrono::steady_clock::now();
};

}  // namespace pgjobq::redis
