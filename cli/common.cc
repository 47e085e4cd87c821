#include "cli/common.h"

#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>

#include "pgjobq/errors.h"

namespace pgjobq::cli {
namespace {

// Ten years: long enough for any timeout, short enough that adding it to a
// clock never overflows.
constexpr double kMaxDurationSeconds = 10.0 * 365 * 24 * 3600;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

void on_notice(void*, const char* message) {
  std::string_view text(message);
  if (text.starts_with("NOTICE:") || text.starts_with("DEBUG:") ||
      text.starts_with("INFO:") || text.starts_with("LOG:")) {
    return;
  }
  std::cerr << "pgjobq: postgres: " << one_line(std::string(text)) << std::endl;
}

}  // namespace

PgConnPtr connect(const Connections& connections) {
  PgConnPtr conn = connect_database(connections.db_url);
  PQsetNoticeProcessor(conn.get(), on_notice, nullptr);
  return conn;
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
  std::size_t number_end = 0;
  while (number_end < text.size() &&
         (is_digit(text[number_end]) || text[number_end] == '.')) {
    ++number_end;
  }
  std::string_view number = text.substr(0, number_end);
  std::string_view unit = text.substr(number_end);
  if (number.empty() || number.front() == '.' || number.back() == '.' ||
      number.find('.') != number.rfind('.')) {
    throw refuse(
        "expected a non-negative number with a unit, such as 30s, 15m or 7d");
  }
  double value = 0;
  // std::from_chars for double is in g++ 12's library.
  auto [end, ec] =
      std::from_chars(number.data(), number.data() + number.size(), value);
  if (ec != std::errc() || end != number.data() + number.size()) {
    throw refuse("not a number");
  }
  double seconds_per_unit = 0;
  if (unit.empty()) {
    if (!bare_seconds) {
      throw refuse("give a unit: us, ms, s, m, h, d or w (such as 7d)");
    }
    seconds_per_unit = 1;
  } else if (unit == "us") {
    seconds_per_unit = 1e-6;
  } else if (unit == "ms") {
    seconds_per_unit = 1e-3;
  } else if (unit == "s") {
    seconds_per_unit = 1;
  } else if (unit == "m") {
    seconds_per_unit = 60;
  } else if (unit == "h") {
    seconds_per_unit = 3600;
  } else if (unit == "d") {
    seconds_per_unit = 86400;
  } else if (unit == "w") {
    seconds_per_unit = 7 * 86400;
  } else {
    throw refuse("unknown unit \"" + escape_bytes(unit, 10) +
                 "\"; use us, ms, s, m, h, d or w");
  }
  double seconds = value * seconds_per_unit;
  if (!std::isfinite(seconds) || seconds > kMaxDurationSeconds) {
    throw refuse("longer than ten years");
  }
  return std::chrono::microseconds(
      static_cast<std::int64_t>(std::llround(seconds * 1e6)));
}

JobId parse_job_id(std::string_view text) {
  std::int64_t value = 0;
  auto [end, ec] =
      std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || !is_digit(text.front()) || ec != std::errc() ||
      end != text.data() + text.size() || value <= 0) {
    throw usage_error("invalid job id \"" + escape_bytes(redact(text), 40) +
                      "\": expected a positive integer");
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

void print_line(std::string_view line) {
  std::cout << line << '\n' << std::flush;
}

}  // namespace pgjobq::cli
