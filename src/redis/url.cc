#include <charconv>
#include <optional>
#include <string>
#include <string_view>

#include "percent.h"
#include "pgjobq/connection.h"
#include "pgjobq/errors.h"
#include "redis/connection.h"

namespace pgjobq::redis {
namespace {

[[noreturn]] void refuse(const std::string& redacted, std::string_view why) {
  throw InvalidInput("invalid Redis URL \"" + redacted +
                     "\": " + std::string(why));
}

// `text` percent-decoded; a bad or incomplete %-escape is refused.
std::string decode(std::string_view text, const std::string& redacted) {
  std::optional<std::string> decoded =
      percent_decode(text, /*keep_bad_escapes=*/false);
  if (!decoded) refuse(redacted, "bad or incomplete %-escape");
  return *decoded;
}

int parse_number(std::string_view text, int max, const std::string& redacted,
                 std::string_view what) {
  int value = -1;
  auto [end, ec] =
      std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() ||
      value < 0 || value > max) {
    refuse(redacted, std::string(what) + " must be a number from 0 to " +
                         std::to_string(max));
  }
  return value;
}

// key=value&key=value: the query of a unix:// or redis:// URL.
void parse_query(std::string_view query, Address& address) {
  while (!query.empty()) {
    std::size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view()
                                          : query.substr(amp + 1);
    std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos) {
      refuse(address.redacted, "query parameter without '='");
    }
    std::string_view key = pair.substr(0, eq);
    std::string value = decode(pair.substr(eq + 1), address.redacted);
    if (key == "db") {
      address.db = parse_number(value, 1 << 20, address.redacted, "db");
    } else if (key == "password") {
      address.password = value;
    } else if (key == "user" || key == "username") {
      address.user = value;
    } else {
      refuse(address.redacted,
             "unknown query parameter \"" + std::string(key) + "\"");
    }
  }
}

}  // namespace

Address parse_url(std::string_view url) {
  Address address;
  address.redacted = redact(url);
  const std::string& redacted = address.redacted;
  std::string_view rest;
  if (url.starts_with("redis://")) {
    rest = url.substr(8);
  } else if (url.starts_with("unix://")) {
    rest = url.substr(7);
    std::size_t q = rest.find('?');
    address.unix_path = decode(rest.substr(0, q), redacted);
    if (address.unix_path.empty() || address.unix_path[0] != '/') {
      refuse(redacted, "a unix:// URL needs an absolute socket path");
    }
    if (q != std::string_view::npos) parse_query(rest.substr(q + 1), address);
    return address;
  } else if (url.starts_with("rediss://")) {
    refuse(redacted,
           "TLS (rediss://) is not supported by Debian 12's hiredis 0.14");
  } else {
    refuse(redacted, "expected redis://host:port[/db] or unix:///path");
  }

  // The userinfo ends at the last '@': a password may hold unencoded '@',
  // '/' and '?' (redact() masks up to the last '@' for the same reason).
  // But an '@' after a '?' that begins key=value text is the query's
  // (redis://h/0?user=ops@corp.example: it was taken for the userinfo's,
  // and corp.example for the host); the userinfo then ends before the '?'.
  std::size_t at = rest.rfind('@');
  std::size_t query = rest.find('?');
  if (at != std::string_view::npos && query < at &&
      rest.substr(query, at - query).find('=') != std::string_view::npos) {
    at = query == 0 ? std::string_view::npos : rest.rfind('@', query - 1);
  }
  if (at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    std::size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      // redis://secret@host is how several clients spell a bare password.
      address.password = decode(userinfo, redacted);
    } else {
      address.user = decode(userinfo.substr(0, colon), redacted);
      address.password = decode(userinfo.substr(colon + 1), redacted);
    }
  }
  // The host and port end at the path or at the query, whichever comes
  // first: redis://h:6379?db=4 has no path (it was read as the port
  // "6379?db=4", and redis://h?db=4 as the host "h?db=4").
  std::size_t end = rest.find_first_of("/?");
  std::string_view hostport = rest.substr(0, end);
  if (end != std::string_view::npos) {
    std::string_view path = rest.substr(end);
    std::size_t q = path.find('?');
    std::string_view db = path.substr(0, q);
    if (db.starts_with('/')) db.remove_prefix(1);
    if (!db.empty()) address.db = parse_number(db, 1 << 20, redacted, "db");
    if (q != std::string_view::npos) parse_query(path.substr(q + 1), address);
  }
  if (hostport.starts_with('[')) {
    std::size_t close = hostport.find(']');
    if (close == std::string_view::npos) refuse(redacted, "unclosed '['");
    address.host = std::string(hostport.substr(1, close - 1));
    hostport = hostport.substr(close + 1);
    if (!hostport.empty()) {
      if (hostport[0] != ':') refuse(redacted, "junk after ']'");
      address.port = parse_number(hostport.substr(1), 65535, redacted, "port");
    }
  } else {
    std::size_t colon = hostport.find(':');
    address.host = std::string(hostport.substr(0, colon));
    if (colon != std::string_view::npos) {
      address.port =
          parse_number(hostport.substr(colon + 1), 65535, redacted, "port");
    }
  }
  if (address.host.empty()) refuse(redacted, "no host");
  if (address.port == 0) refuse(redacted, "port 0");
  return address;
}

}  // namespace pgjobq::redis
