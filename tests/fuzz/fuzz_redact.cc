// Fuzzes the scrubbing of passwords from URLs: pgjobq::redact (every URL
// in a message or a log goes through it) and the command line's own
// url_passwords + one_line. Any input must pass without a crash or an
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
  std::string line = pgjobq::cli::one_line("error: " + std::string(input),
                                           pgjobq::url_passwords(input));
  // Masking never makes the line longer than three bytes per input byte.
  check(line.size() <= 7 + 3 * input.size(), "one_line grew the message");
  if (size < 2) return 0;

  std::string password(input.substr(1));
  // Only passwords that cannot be found in the text around them, and that
  // the mask cannot rebuild.
  if (password.size() < 6 || password.find('*') != std::string::npos) {
    return 0;
  }
  // The URL is prefix + secret + suffix, where secret is the password as
  // written there (quoted in a key=value string).
  std::string prefix, secret = password, suffix;
  switch (data[0] % 4) {
    case 0:
      prefix = "postgresql://user:";
      suffix = "@db.example:5432/app";
      break;
    case 1:
      prefix = "redis://:";
      suffix = "@127.0.0.1:6379/2";
      break;
    case 2:
      prefix = "host=db.example password=";
      secret = quote_conninfo(password);
      suffix = " dbname=app";
      break;
    case 3:
      // Delimiters of a query string end the value: such passwords would
      // have to be percent-encoded.
      if (password.find_first_of("&# \t'") != std::string::npos) return 0;
      prefix = "postgresql://db.example/app?sslmode=require&password=";
      break;
  }
  std::string url = prefix + secret + suffix;
  // What a perfect redaction gives, in the message the command line would
  // print; a password found in it was in the text around it all along, and
  // proves nothing. (The command line keeps the quotes of a quoted value.)
  const std::string before = "cannot connect to ";
  const std::string after = ": refused";
  for (const std::string& ideal :
       {prefix + "***" + suffix, prefix + "'***'" + suffix}) {
    if ((before + ideal + after).find(password) != std::string::npos) {
      return 0;
    }
  }

  check(pgjobq::redact(url).find(password) == std::string::npos,
        "redact() let a password through");
  std::string message =
      pgjobq::cli::one_line(before + url + after, pgjobq::url_passwords(url));
  check(message.find(password) == std::string::npos,
        "one_line(url_passwords()) let a password through");
  (void)redacted;
  return 0;
}
