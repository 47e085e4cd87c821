#include <string>
#include <string_view>

#include "pgjobq/connection.h"

namespace pgjobq {
namespace {

constexpr std::string_view kMask = "***";

// Masks the password in a URI's userinfo: scheme://user:PASSWORD@host.
std::string redact_userinfo(std::string url) {
  std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return url;
  std::size_t authority = scheme_end + 3;
  // Passwords may hold unencoded '@', '/' or '?', so the userinfo is taken
  // to end at the last '@' anywhere. That can mask more than the password
  // (when a query also holds an '@'), never less.
  std::size_t at = url.rfind('@');
  if (at == std::string::npos || at < authority) return url;
  std::size_t colon = url.find(':', authority);
  if (colon == std::string::npos || colon > at) {
    // redis://secret@host: without a ':', Redis URLs (and our parser,
    // redis/url.cc) read the userinfo as a bare password.
    if (at > authority &&
        (url.starts_with("redis://") || url.starts_with("rediss://"))) {
      return url.replace(authority, at - authority, kMask);
    }
    return url;
  }
  return url.replace(colon + 1, at - colon - 1, kMask);
}

// Whether `text` starts with "scheme://".
bool starts_with_scheme(std::string_view text) {
  std::size_t end = text.find("://");
  if (end == std::string_view::npos || end == 0) return false;
  for (char c : text.substr(0, end)) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// Masks `password=VALUE` in a query string or a key=value conninfo.
std::string redact_password_params(std::string text) {
  // In a URI's query string only '&' ends a value: the Redis URL parser
  // (redis/url.cc) and libpq take quotes, spaces and '#' literally there.
  // (A conninfo string starts with a key, never with a scheme.)
  bool uri = starts_with_scheme(text);
  std::size_t from = 0;
  while (true) {
    std::size_t key = text.find("password", from);
    if (key == std::string::npos) return text;
    std::size_t pos = key + 8;
    bool at_key_start = key == 0 || text[key - 1] == '?' ||
                        text[key - 1] == '&' || text[key - 1] == ' ' ||
                        text[key - 1] == '\t';
    while (pos < text.size() && text[pos] == ' ') ++pos;
    if (!at_key_start || pos >= text.size() || text[pos] != '=') {
      from = key + 1;
      continue;
    }
    ++pos;
    while (pos < text.size() && text[pos] == ' ') ++pos;
    std::size_t end = pos;
    if (uri) {
      while (end < text.size() && text[end] != '&') ++end;
    } else if (end < text.size() && text[end] == '\'') {
      // conninfo quoting: 'it''s' or 'with \' escapes'
      ++end;
      while (end < text.size() && text[end] != '\'') {
        if (text[end] == '\\') ++end;
        ++end;
      }
      if (end < text.size()) ++end;
    } else {
      while (end < text.size() && text[end] != '&' && text[end] != ' ' &&
             text[end] != '#') {
        ++end;
      }
    }
    text.replace(pos, end - pos, kMask);
    from = pos + kMask.size();
  }
}

}  // namespace

std::string redact(std::string_view url) {
  return redact_password_params(redact_userinfo(std::string(url)));
}

}  // namespace pgjobq
