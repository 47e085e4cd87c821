// Fuzzes the scrubbing of passwords from URLs: pgjobq::redact (every URL
// in a message or a log goes through it) and the command line's own
// secrets_in_url + one_line. Any input must pass without a crash or an
// exception; and for URLs built around a password taken from the input, in
// each form pgjobq accepts, the password must never come out.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "cli/common.h"
#include "fuzz/fuzz_check.h"
#include "pgjobq/connection.h"

namespace {

using pgjobq::fuzz::check;

// libpq's quoting for a key=value value.
std::string quote_conninfo(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string redacted = pgjobq::redact(input);
  pgjobq::cli::one_line("error: " + std::string(input),
                        pgjobq::cli::secrets_in_url(input));
  if (size < 2) return 0;

  std::string password(input.substr(1));
  // Only passwords that cannot be found in the text around them, and that
  // the mask cannot rebuild.
  if (password.size() < 6 || password.find('*') != std::string::npos) {
    return 0;
  }
  std::string url;
  switch (data[0] % 4) {
    case 0:
      url = "postgresql://user:" + password + "@db.example:5432/app";
      break;
    case 1:
      url = "redis://:" + password + "@127.0.0.1:6379/2";
      break;
    case 2:
      url = "host=db.example password=" + quote_conninfo(password) +
            " dbname=app";
      break;
    case 3:
      // Delimiters of a query string end the value: such passwords would
      // have to be percent-encoded.
      if (password.find_first_of("&# \t'") != std::string::npos) return 0;
      url = "postgresql://db.example/app?sslmode=require&password=" + password;
      break;
  }
  // The text around it must not hold it already.
  std::size_t at = url.find(password);
  if (at == std::string::npos) return 0;  // quoted: not there as such
  std::string without = url;
  without.replace(at, password.size(), "");
  if (without.find(password) != std::string::npos) return 0;

  check(pgjobq::redact(url).find(password) == std::string::npos,
        "redact() let a password through");
  std::string message =
      pgjobq::cli::one_line("cannot connect to " + url + ": refused",
                            pgjobq::cli::secrets_in_url(url));
  check(message.find(password) == std::string::npos,
        "one_line(secrets_in_url()) let a password through");
  (void)redacted;
  return 0;
}
