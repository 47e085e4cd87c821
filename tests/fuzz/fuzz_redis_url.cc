// Fuzzes the Redis URL parser (src/redis/url.cc): any input is either an
// Address within bounds or an InvalidInput whose message never holds the
// password; and a URL built around a user and password taken from the input
// (percent-encoded, as a user would write them) gives them back exactly.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_check.h"
#include "pgjobq/connection.h"
#include "pgjobq/errors.h"
#include "redis/connection.h"

namespace {

using pgjobq::fuzz::check;

std::string percent_encode(std::string_view raw) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (char ch : raw) {
    auto c = static_cast<unsigned char>(ch);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

void check_address(const pgjobq::redis::Address& a) {
  if (a.unix_path.empty()) {
    check(!a.host.empty(), "no host");
    check(a.port >= 1 && a.port <= 65535, "port out of range");
  } else {
    check(a.unix_path.front() == '/', "relative socket path");
  }
  check(a.db >= 0 && a.db <= (1 << 20), "db out of range");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  try {
    pgjobq::redis::Address a = pgjobq::redis::parse_url(input);
    check_address(a);
    check(a.redacted == pgjobq::redact(input), "redacted is not redact()");
    // A password written once, and nowhere else in the URL.
    std::size_t at = input.find(a.password);
    // (And no '*': the mask could write it back.)
    if (a.password.size() >= 6 && at != input.npos &&
        a.password.find('*') == std::string::npos &&
        input.find(a.password, at + 1) == input.npos) {
      check(a.redacted.find(a.password) == std::string::npos,
            "the redacted URL holds the password");
    }
  } catch (const pgjobq::InvalidInput& e) {
    check(std::string_view(e.what()).starts_with("invalid Redis URL"),
          "message does not say what was refused");
  }

  // user \x01 password \x01 rest-of-input, encoded into a URL.
  std::size_t a = input.find('\x01');
  std::size_t b = a == input.npos ? a : input.find('\x01', a + 1);
  if (b == input.npos) return 0;
  std::string user(input.substr(0, a));
  std::string password(input.substr(a + 1, b - a - 1));
  bool unix_form = size > 0 && (data[size - 1] & 1);
  std::string prefix = unix_form ? "unix:///run/redis/redis.sock?db=3&user=" +
                                       percent_encode(user) + "&password="
                                 : "redis://" + percent_encode(user) + ":";
  std::string suffix = unix_form ? "" : "@cache.example:6380/3";
  std::string encoded = percent_encode(password);
  std::string url = prefix + encoded + suffix;
  pgjobq::redis::Address parsed;
  try {
    parsed = pgjobq::redis::parse_url(url);
  } catch (const pgjobq::InvalidInput& e) {
    check(false, "a well-formed URL was refused");
  }
  check(parsed.user == user, "user not given back");
  check(parsed.password == password, "password not given back");
  check(parsed.db == 3, "db not given back");
  // (Unless a perfect redaction would hold it too: then it was in the
  // text around it all along.)
  if (encoded.size() >= 6 &&
      (prefix + "***" + suffix).find(encoded) == std::string::npos) {
    check(parsed.redacted.find(encoded) == std::string::npos,
          "the redacted URL holds the password");
  }
  return 0;
}
