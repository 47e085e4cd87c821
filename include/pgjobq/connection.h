#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace pgjobq {

// Owns a PGconn: PQfinish on destruction.
struct PgConnDeleter {
  void operator()(PGconn* conn) const noexcept { PQfinish(conn); }
};
using PgConnPtr = std::unique_ptr<PGconn, PgConnDeleter>;

// Opens a PostgreSQL connection. `url` is a libpq URI or key=value string;
// empty means DATABASE_URL if set, else libpq's own PG* variables. Its
// client_encoding is UTF8, whatever the URL, PGCLIENTENCODING or the
// role's settings say (pgjobq's JSON is UTF-8; enqueue and the reads of
// jobs work in a session set to another encoding afterwards, too). Throws
// ConnectionError (the message names the server, never the password).
// Thread-safe.
PgConnPtr connect_database(std::string_view url = {});

// The same, giving up on a server that does not answer after
// `give_up_after` if that is sooner than usual (libpq's connect_timeout:
// PGCONNECT_TIMEOUT, else 10 s), and never sooner than 2 s (libpq counts
// whole seconds, and treats 1 as 2). A connect_timeout in the URL wins.
PgConnPtr connect_database(std::string_view url,
                           std::chrono::milliseconds give_up_after);

// `url` with any password replaced by "***", for messages and logs. Works on
// postgres:// and redis:// URIs and on libpq key=value strings. Thread-safe.
std::string redact(std::string_view url);

// Every password written in `url`, the same places redact() masks, for
// scrubbing messages that may quote them: each as written, percent-decoded,
// with conninfo backslash escapes removed, and, for one holding an
// unencoded '@', each part of at least three characters between its '@'s
// and ':'s (libpq ends the password at the first '@', and puts the rest
// into the host and port it complains about). Keys match in any case.
// Thread-safe.
std::vector<std::string> url_passwords(std::string_view url);

// `message` made into one printable line: every secret in it replaced by
// "***" (the longest first, in one pass over the original text), line
// breaks and other control characters by spaces, trailing spaces dropped.
std::string scrub_secrets(std::string_view message,
                          const std::vector<std::string>& secrets);

// The Redis URL to use: `url` if not empty, else REDIS_URL, else
// redis://127.0.0.1:6379.
std::string redis_url_or_default(std::string_view url = {});

// A link to Redis for publishing wake-ups and waiting for results.
//
// URLs: redis://[[user]:password@]host[:port][/db][?db=N&password=P] and
// unix:///path/to/redis.sock[?db=N&password=P]; a userinfo without a ':'
// (redis://secret@host) is a password, as several clients spell one.
// AUTH and SELECT are sent on every (re)connect. The link connects on first use
// and reconnects after a failure, so one link survives a Redis restart. Redis
// holds nothing that matters to pgjobq: callers treat its failures as lost
// wake-ups.
//
// It holds up to two connections: one for PUBLISH, opened by the first
// publish, and one in subscribe mode, opened by the first
// wait_for_result() and kept for the next waits (each subscribes to its
// job's channel and unsubscribes when it ends). Keep a link for as long as
// the thread publishes or waits: one per wait would cost a connect and a
// login each.
//
// Not thread-safe: use one link per thread.
class RedisLink {
 public:
  // Parses `url` (see redis_url_or_default). Throws InvalidInput for a URL
  // it cannot use. Does not connect.
  explicit RedisLink(
      std::string_view url = {},
      std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));
  ~RedisLink();
  RedisLink(RedisLink&&) noexcept;
  RedisLink& operator=(RedisLink&&) noexcept;
  RedisLink(const RedisLink&) = delete;
  RedisLink& operator=(const RedisLink&) = delete;

  // PUBLISH `message` on `channel`. Throws ConnectionError if Redis cannot
  // be reached or answers with an error; the link reconnects on next use.
  void publish(std::string_view channel, std::string_view message);

  // The URL with its password redacted.
  const std::string& url() const noexcept;

 private:
  struct Impl;
  friend struct RedisLinkAccess;  // wait_for_result's subscriber (src/)
  std::unique_ptr<Impl> impl_;
};

}  // namespace pgjobq
