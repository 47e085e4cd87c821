#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "pg/connection.h"
#include "pgjobq/connection.h"
#include "pgjobq/errors.h"
#include "redis/connection.h"
#include "redis_link.h"

namespace pgjobq {
namespace {

// Every password libpq would use for `url`: from the URL itself and from
// PGPASSWORD. Used to scrub messages, since libpq errors may quote the
// connection string they failed to parse. What libpq cannot parse it
// quotes as written, so the passwords as written count too.
std::vector<std::string> passwords_in(const std::string& url) {
  std::vector<std::string> found = url_passwords(url);
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (error) PQfreemem(error);
  if (options) {
    for (PQconninfoOption* o = options; o->keyword; ++o) {
      if (o->val && std::string_view(o->keyword) == "password" && *o->val) {
        found.emplace_back(o->val);
      }
    }
    PQconninfoFree(options);
  }
  if (const char* env = std::getenv("PGPASSWORD"); env && *env) {
    found.emplace_back(env);
  }
  return found;
}

// Names the server for messages: the redacted URL, or what libpq settled on
// when the URL was empty.
std::string describe_target(const std::string& url, PGconn* conn) {
  if (!url.empty()) return "\"" + redact(url) + "\"";
  std::string where = "PostgreSQL";
  if (conn && PQhost(conn)) {
    where += std::string(" on ") + PQhost(conn);
    if (PQport(conn) && *PQport(conn)) where += std::string(":") + PQport(conn);
  }
  return where + " (from PG* variables)";
}

}  // namespace

PgConnPtr connect_database(std::string_view url_arg) {
  return pg::connect(url_arg, {});
}

PgConnPtr connect_database(std::string_view url,
                           std::chrono::milliseconds give_up_after) {
  long usual = 10;
  if (const char* env = std::getenv("PGCONNECT_TIMEOUT"); env && *env) {
    long parsed = std::strtol(env, nullptr, 10);
    if (parsed > 0) usual = std::max(parsed, 2L);
  }
  long wanted = static_cast<long>(
      std::chrono::ceil<std::chrono::seconds>(give_up_after).count());
  pg::Keyword extra[] = {
      {"connect_timeout", std::to_string(std::clamp(wanted, 2L, usual))}};
  return pg::connect(url, extra);
}

namespace pg {

namespace {

std::string url_or_environment(std::string_view url) {
  if (url.empty()) {
    if (const char* env = std::getenv("DATABASE_URL"); env) return env;
  }
  return std::string(url);
}

}  // namespace

void check_url(std::string_view url_arg) {
  std::string url = url_or_environment(url_arg);
  // libpq takes a dbname holding '=' or starting with a URI scheme for a
  // connection string, and anything else for a database's name.
  bool connection_string = url.find('=') != std::string::npos ||
                           url.starts_with("postgresql://") ||
                           url.starts_with("postgres://");
  if (!connection_string) return;
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (options) {
    PQconninfoFree(options);
    return;
  }
  std::string why = error ? error : "out of memory";
  if (error) PQfreemem(error);
  while (!why.empty() && why.back() == '\n') why.pop_back();
  throw InvalidInput("invalid database URL \"" + redact(url) +
                     "\": " + scrub_secrets(why, passwords_in(url)));
}

PgConnPtr connect(std::string_view url_arg, std::span<const Keyword> extra) {
  std::string url = url_or_environment(url_arg);
  // A server that never answers must not hang the caller forever; honour
  // the URL's or PGCONNECT_TIMEOUT's own setting when given (later keywords
  // win, and the expanded URL comes after ours).
  const char* timeout_env = std::getenv("PGCONNECT_TIMEOUT");
  std::vector<const char*> keys{"fallback_application_name"};
  std::vector<const char*> values{"pgjobq"};
  if (!timeout_env || !*timeout_env) {
    keys.push_back("connect_timeout");
    values.push_back("10");
  }
  for (const Keyword& k : extra) {
    keys.push_back(k.name);
    values.push_back(k.value.c_str());
  }
  keys.push_back("dbname");
  values.push_back(url.c_str());
  // After the URL, so that it wins over it (and over PGCLIENTENCODING and
  // the role's settings): pgjobq's own statements exchange UTF-8 JSON, and
  // in another encoding the server would convert it into mojibake.
  keys.push_back("client_encoding");
  values.push_back("UTF8");
  keys.push_back(nullptr);
  values.push_back(nullptr);
  PgConnPtr conn(PQconnectdbParams(keys.data(), values.data(), 1));
  if (!conn) {
    throw ConnectionError("cannot connect to PostgreSQL: out of memory");
  }
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    throw ConnectionError(
        "cannot connect to " + describe_target(url, conn.get()) + ": " +
        scrub_secrets(PQerrorMessage(conn.get()), passwords_in(url)));
  }
  return conn;
}

}  // namespace pg

std::string redis_url_or_default(std::string_view url) {
  if (!url.empty()) return std::string(url);
  if (const char* env = std::getenv("REDIS_URL"); env && *env) return env;
  return "redis://127.0.0.1:6379";
}

RedisLink::RedisLink(std::string_view url, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>(Impl{
          redis::parse_url(redis_url_or_default(url)), timeout, {}, {}})) {}

RedisLink::~RedisLink() = default;
RedisLink::RedisLink(RedisLink&&) noexcept = default;
RedisLink& RedisLink::operator=(RedisLink&&) noexcept = default;

void RedisLink::publish(std::string_view channel, std::string_view message) {
  try {
    std::string_view args[] = {"PUBLISH", channel, message};
    impl_->connection().command(args);
  } catch (const ConnectionError&) {
    impl_->conn.reset();  // a failed hiredis context is never reused
    throw;
  }
}

const std::string& RedisLink::url() const noexcept {
  return impl_->address.redacted;
}

}  // namespace pgjobq
