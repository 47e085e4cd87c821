#include "cli/common.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <limits>

#include "pgjobq/errors.h"

namespace pgjobq::cli {
namespace {

// Ten years: long enough for any timeout, short enough that adding it to a
// clock never overflows.
constexpr double kMaxDurationSeconds = 10.0 * 365 * 24 * 3600;

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// The units a duration may carry, short and spelled out.
struct Unit {
  std::string_view name;
  double seconds;
};
constexpr Unit kUnits[] = {
    {"us", 1e-6},
    {"ms", 1e-3},
    {"s", 1},
    {"sec", 1},
    {"secs", 1},
    {"second", 1},
    {"seconds", 1},
    {"m", 60},
    {"min", 60},
    {"mins", 60},
    {"minute", 60},
    {"minutes", 60},
    {"h", 3600},
    {"hr", 3600},
    {"hrs", 3600},
    {"hour", 3600},
    {"hours", 3600},
    {"d", 86400},
    {"day", 86400},
    {"days", 86400},
    {"w", 7 * 86400},
    {"week", 7 * 86400},
    {"weeks", 7 * 86400},
};

// Warnings only; a session's goodbye ("terminating connection due to
// immediate shutdown command") is left to the connection error that
// follows it, so that the error stays the one line.
void on_notice(void*, const PGresult* notice) {
  const char* severity =
      PQresultErrorField(notice, PG_DIAG_SEVERITY_NONLOCALIZED);
  std::string_view s = severity ? severity : "";
  if (s == "NOTICE" || s == "DEBUG" || s == "INFO" || s == "LOG") return;
  const char* state = PQresultErrorField(notice, PG_DIAG_SQLSTATE);
  if (state && std::string_view(state).starts_with("57P")) return;
  try {  // nothing may unwind through libpq's C frames
    std::cerr << "pgjobq: postgres: " << one_line(PQresultErrorMessage(notice))
              << std::endl;
  } catch (...) {
  }
}

}  // namespace

std::vector<std::string> connection_secrets(const Connections& connections) {
  std::vector<std::string> out;
  auto add = [&](std::string_view url) {
    for (std::string& s : url_passwords(url)) out.push_back(std::move(s));
  };
  add(connections.db_url);
  add(redis_url_or_default(connections.redis_url));
  for (const char* name : {"DATABASE_URL", "REDIS_URL"}) {
    if (const char* env = std::getenv(name)) add(env);
  }
  if (const char* env = std::getenv("PGPASSWORD"); env && *env) {
    out.emplace_back(env);
  }
  return out;
}

PgConnPtr connect(const Connections& connections) {
  PgConnPtr conn = connect_database(connections.db_url);
  PQsetNoticeReceiver(conn.get(), on_notice, nullptr);
  return conn;
}

PgConnPtr connect(const Connections& connections,
                  std::chrono::milliseconds within) {
  PgConnPtr conn = connect_database(connections.db_url, within);
  PQsetNoticeReceiver(conn.get(), on_notice, nullptr);
  return conn;
}

namespace {

// The SQLSTATE a server refused a connection with, from an error message
// libpq built with PQERRORS_SQLSTATE: its last line is "SEVERITY:  XXXXX"
// (the severity maybe translated). Empty when the server said nothing
// (no answer, or libpq's own error).
std::string_view refusal_sqlstate(std::string_view message) {
  while (message.ends_with('\n')) message.remove_suffix(1);
  if (message.size() < 8) return {};
  std::string_view code = message.substr(message.size() - 5);
  bool well_formed = std::all_of(code.begin(), code.end(), [](char c) {
    return is_digit(c) || (c >= 'A' && c <= 'Z');
  });
  if (!well_formed || !message.substr(0, message.size() - 5).ends_with(":  ")) {
    return {};
  }
  return code;
}

}  // namespace

bool worth_reconnecting(const Connections& connections) {
  // The URL connect_database would use; empty means the PG* variables.
  std::string url = connections.db_url;
  if (url.empty()) {
    if (const char* env = std::getenv("DATABASE_URL"); env) url = env;
  }
  // A connection of our own, started by hand to ask for errors as SQLSTATE
  // codes, which are never translated. (PQping says only whether the
  // server answered: a refusal for too many connections, which passes,
  // reads the same to it as a wrong password, which does not.)
  const char* keys[] = {"dbname", nullptr};
  const char* values[] = {url.c_str(), nullptr};
  PgConnPtr probe(PQconnectStartParams(keys, values, 1));
  if (!probe || PQstatus(probe.get()) == CONNECTION_BAD) {
    return !probe || refusal_sqlstate(PQerrorMessage(probe.get())).empty();
  }
  PQsetErrorVerbosity(probe.get(), PQERRORS_SQLSTATE);
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  PostgresPollingStatusType state = PGRES_POLLING_WRITING;
  while (state != PGRES_POLLING_OK && state != PGRES_POLLING_FAILED) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(
        give_up - std::chrono::steady_clock::now());
    // No answer in time: a server that is not answering may yet.
    if (left.count() <= 0) return true;
    pollfd p{
        PQsocket(probe.get()),
        static_cast<short>(state == PGRES_POLLING_READING ? POLLIN : POLLOUT),
        0};
    if (poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) {
      return true;
    }
    if (p.revents != 0) state = PQconnectPoll(probe.get());
  }
  if (state == PGRES_POLLING_OK) return true;
  // libpq refused to go on without a password it was not given.
  if (PQconnectionNeedsPassword(probe.get())) return false;
  std::string_view code = refusal_sqlstate(PQerrorMessage(probe.get()));
  // Refusals that pass: out of connections, memory or disk (class 53),
  // starting up or shutting down (57P01-57P03). Any other (a password, a
  // role, a database gone or closed to connections, pg_hba) will come
  // again.
  return code.empty() || code.starts_with("53") || code == "57P01" ||
         code == "57P02" || code == "57P03";
}

int exit_code_for(const std::exception& error) noexcept {
  if (auto* e = dynamic_cast<const ExitError*>(&error)) return e->code();
  if (dynamic_cast<const Timeout*>(&error)) return kExitTimeout;
  if (dynamic_cast<const JobFailed*>(&error)) return kExitJobFailed;
  if (dynamic_cast<const NoSuchJob*>(&error)) return kExitNoSuchJob;
  return kExitError;
}

std::chrono::microseconds parse_duration(std::string_view text,
                                         std::string_view option,
                                         bool bare_seconds) {
  auto refuse = [&](const std::string& why) {
    return usage_error(std::string(option) + ": invalid duration \"" +
                       escape_bytes(redact(text), 40) + "\": " + why);
  };
  const std::string kUnitList = "us, ms, s, m, h, d or w";
  const std::string kExpected =
      "expected a non-negative number with a unit, such as 30s, 15m, 7d or "
      "1h30m";
  if (text.empty() || text.front() == ' ' || text.back() == ' ') {
    throw refuse(kExpected);
  }
  auto skip_spaces = [&](std::size_t at) {
    while (at < text.size() && text[at] == ' ') ++at;
    return at;
  };
  double seconds = 0;
  // Terms, each a number and its unit: "90s", "1.5h", "7 days", "1h 30m".
  for (std::size_t at = 0, terms = 0; at < text.size(); ++terms) {
    at = skip_spaces(at);
    std::size_t number_begin = at;
    while (at < text.size() && (is_digit(text[at]) || text[at] == '.')) ++at;
    std::string_view number = text.substr(number_begin, at - number_begin);
    if (number.empty() || number.front() == '.' || number.back() == '.' ||
        number.find('.') != number.rfind('.')) {
      throw refuse(kExpected);
    }
    double value = 0;
    // std::from_chars for double is in g++ 12's library.
    auto [end, ec] =
        std::from_chars(number.data(), number.data() + number.size(), value);
    if (ec != std::errc() || end != number.data() + number.size()) {
      throw refuse("not a number");
    }
    at = skip_spaces(at);
    std::size_t unit_begin = at;
    while (at < text.size() && is_letter(text[at])) ++at;
    std::string_view unit = text.substr(unit_begin, at - unit_begin);
    double per_unit = 1;
    if (unit.empty()) {
      // A bare number means seconds only as the whole duration.
      if (!bare_seconds || terms > 0 || at < text.size()) {
        throw refuse("give a unit: " + kUnitList + " (such as 7d)");
      }
    } else {
      auto known = std::find_if(std::begin(kUnits), std::end(kUnits),
                                [&](const Unit& u) { return u.name == unit; });
      if (known == std::end(kUnits)) {
        throw refuse("unknown unit \"" + escape_bytes(unit, 10) + "\"; use " +
                     kUnitList);
      }
      per_unit = known->seconds;
    }
    seconds += value * per_unit;
    if (!std::isfinite(seconds) || seconds > kMaxDurationSeconds) {
      throw refuse("longer than ten years");
    }
  }
  return std::chrono::microseconds(
      static_cast<std::int64_t>(std::llround(seconds * 1e6)));
}

JobId parse_job_id(std::string_view text) {
  // A decimal integer, maybe negative, is a well-formed id: one that no
  // job can have (0, negative, beyond a bigint) is "no such job", like an
  // id that is free, not a usage error.
  std::string_view digits = text.starts_with('-') ? text.substr(1) : text;
  bool integer =
      !digits.empty() && std::all_of(digits.begin(), digits.end(), is_digit);
  if (!integer) {
    throw usage_error("invalid job id \"" + escape_bytes(redact(text), 40) +
                      "\": expected a positive integer");
  }
  std::int64_t value = 0;
  auto [end, ec] =
      std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value <= 0) {
    throw ExitError(kExitNoSuchJob,
                    "no job with id " + escape_bytes(text, 40) +
                        " (job ids run from 1 to 9223372036854775807)");
  }
  return JobId{value};
}

std::string format_age(std::chrono::microseconds age) {
  std::int64_t us = std::max<std::int64_t>(age.count(), 0);
  char buf[64];
  if (us < 1'000'000) {
    std::snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(us / 1000));
  } else if (us < 60'000'000) {
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(us) / 1e6);
  } else {
    long long s = static_cast<long long>(us / 1'000'000);
    if (s < 3600) {
      std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
    } else if (s < 86400) {
      std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, s % 3600 / 60);
    } else {
      std::snprintf(buf, sizeof buf, "%lldd%02lldh", s / 86400,
                    s % 86400 / 3600);
    }
  }
  return buf;
}

std::string one_line(std::string message,
                     const std::vector<std::string>& secrets) {
  return scrub_secrets(message, secrets);
}

std::string escape_bytes(std::string_view bytes, std::size_t max) {
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i >= max) {
      out += "...";
      break;
    }
    auto c = static_cast<unsigned char>(bytes[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

bool is_terminal(int fd) noexcept { return isatty(fd) == 1; }

namespace {
std::size_t printed = 0;
}  // namespace

void print_line(std::string_view line) {
  ++printed;
  std::cout << line << '\n' << std::flush;
}

std::size_t lines_printed() noexcept { return printed; }

}  // namespace pgjobq::cli
