#include <algorithm>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "percent.h"
#include "pgjobq/connection.h"

namespace pgjobq {
namespace {

constexpr std::string_view kMask = "***";
// The shortest piece of a split password that is masked on its own.
constexpr std::size_t kMinFragment = 3;

// [begin, end) of the text to mask.
using Range = std::pair<std::size_t, std::size_t>;

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}

// The password in a URI's userinfo: scheme://user:PASSWORD@host. Also a
// guess of at least `min_guess` characters for a text that may be a
// mistyped URL.
void userinfo_password(std::string_view url, std::vector<Range>& out,
                       std::size_t min_guess) {
  std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    // No URI. Without an '=' or white space it is no conninfo either
    // (libpq takes it for a database name): a mistyped URL
    // ("postgresql:/u:pw@h", "pg:u:pw@h") lands here. Its password is after
    // a ':' that does not start a path, up to the last '@'.
    std::size_t at = url.rfind('@');
    if (at == std::string_view::npos ||
        url.find('=') != std::string_view::npos ||
        std::any_of(url.begin(), url.end(), is_space)) {
      return;
    }
    for (std::size_t colon = url.find(':'); colon < at;
         colon = url.find(':', colon + 1)) {
      if (url[colon + 1] == '/') continue;
      if (at - colon - 1 >= min_guess) out.emplace_back(colon + 1, at);
      return;
    }
    return;
  }
  std::size_t authority = scheme_end + 3;
  // Passwords may hold unencoded '@', '/' or '?', so the userinfo is taken
  // to end at the last '@' anywhere. That can mask more than the password
  // (when a query also holds an '@'), never less.
  std::size_t at = url.rfind('@');
  if (at == std::string_view::npos || at < authority) return;
  std::size_t colon = url.find(':', authority);
  if (colon == std::string_view::npos || colon > at) {
    // redis://secret@host: without a ':', Redis URLs (and our parser,
    // redis/url.cc) read the userinfo as a bare password.
    std::string scheme(url.substr(0, scheme_end));
    std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](char c) {
      return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
    });
    // Schemes are case-insensitive: "Redis://secret@h" too (which the
    // parser refuses, quoting it).
    if (at > authority && (scheme == "redis" || scheme == "rediss")) {
      out.emplace_back(authority, at);
    }
    return;
  }
  out.emplace_back(colon + 1, at);
}

// A conninfo value as libpq reads it: backslash escapes removed.
std::string unescape(std::string_view value) {
  std::string out;
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (value[i] == '\\' && i + 1 < value.size()) ++i;
    out += value[i];
  }
  return out;
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

// Every `password=VALUE` in a query string or a key=value conninfo.
void password_parameters(std::string_view text, std::vector<Range>& out) {
  // In a URI's query string only '&' ends a value: the Redis URL parser
  // (redis/url.cc) and libpq take quotes, spaces and '#' literally there.
  // (A conninfo string starts with a key, never with a scheme.)
  bool uri = starts_with_scheme(text);
  // Any case: libpq refuses "PASSWORD=", and says so with the text in it.
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  });
  for (std::size_t key = lower.find("password"); key != std::string::npos;
       key = lower.find("password", key + 1)) {
    std::size_t pos = key + 8;
    // "sslpassword" (a client key's passphrase) is one too.
    std::size_t start =
        key >= 3 && lower.compare(key - 3, 3, "ssl") == 0 ? key - 3 : key;
    bool at_key_start = start == 0 || text[start - 1] == '?' ||
                        text[start - 1] == '&' || is_space(text[start - 1]);
    while (pos < text.size() && is_space(text[pos])) ++pos;
    if (!at_key_start || pos >= text.size() || text[pos] != '=') continue;
    ++pos;
    while (pos < text.size() && is_space(text[pos])) ++pos;
    std::size_t end = pos;
    if (uri) {
      while (end < text.size() && text[end] != '&') ++end;
    } else {
      // A conninfo value: up to white space outside quotes; a backslash
      // escapes ("a\ b", 'with \' escapes'). Quoted parts may be followed
      // by more ('it''s': libpq reads 'it' and then trips over the rest,
      // which its message quotes), so all of it is the password's.
      bool quoted = false;
      while (end < text.size() && (quoted || !is_space(text[end]))) {
        if (text[end] == '\\') {
          ++end;
        } else if (text[end] == '\'') {
          quoted = !quoted;
        }
        ++end;
      }
    }
    out.emplace_back(pos, std::min(end, text.size()));
  }
}

void add_once(std::vector<std::string>& out, std::string secret) {
  if (secret.empty()) return;
  if (std::find(out.begin(), out.end(), secret) == out.end()) {
    out.push_back(std::move(secret));
  }
}

}  // namespace

std::vector<std::string> url_passwords(std::string_view url) {
  std::vector<Range> ranges;
  // Guesses of fewer than kMinFragment characters are left: any text is
  // scrubbed with these (the command line's arguments, say "12:e@3"), and
  // masking every "e" would garble the message.
  userinfo_password(url, ranges, kMinFragment);
  password_parameters(url, ranges);
  std::vector<std::string> out;
  for (auto [begin, end] : ranges) {
    std::string_view raw = url.substr(begin, end - begin);
    // Quotes of the key=value form are not part of the password.
    if (raw.size() >= 2 && raw.front() == '\'' && raw.back() == '\'') {
      raw = raw.substr(1, raw.size() - 2);
    }
    add_once(out, std::string(raw));
    add_once(out, *percent_decode(raw, /*keep_bad_escapes=*/true));
    add_once(out, unescape(raw));
    // A conninfo value's quoted parts, which libpq may quote on their own
    // ('it''s' is 'it', then "'s" that it complains about).
    if (raw.find('\'') != std::string_view::npos) {
      for (std::size_t from = 0;;) {
        std::size_t quote = raw.find('\'', from);
        std::string_view piece = raw.substr(from, quote - from);
        if (piece.size() >= kMinFragment) add_once(out, std::string(piece));
        if (quote == std::string_view::npos) break;
        from = quote + 1;
      }
    }
    // libpq splits a URL at an unencoded '@' (and the host part then at
    // ':') in a password, and may quote the pieces in its message. Pieces
    // shorter than kMinFragment stay: masking "p" everywhere would garble
    // every message, for one character of the password.
    for (char separator : {'@', ':'}) {
      if (raw.find('@') == std::string_view::npos) break;
      for (std::size_t from = 0;;) {
        std::size_t at = raw.find(separator, from);
        std::string_view piece = raw.substr(from, at - from);
        if (piece.size() >= kMinFragment) add_once(out, std::string(piece));
        if (at == std::string_view::npos) break;
        from = at + 1;
      }
    }
  }
  return out;
}

std::string scrub_secrets(std::string_view message,
                          const std::vector<std::string>& secrets) {
  // One pass: masking secret by secret would scan the "***" already
  // written, and a secret made of '*' would then multiply the message.
  std::string out;
  out.reserve(message.size());
  while (!message.empty()) {
    std::size_t matched = 0;
    for (const std::string& secret : secrets) {
      if (secret.size() > matched && message.starts_with(secret)) {
        matched = secret.size();
      }
    }
    if (matched > 0) {
      out += kMask;
      message.remove_prefix(matched);
      continue;
    }
    auto c = static_cast<unsigned char>(message.front());
    out += c < 0x20 || c == 0x7f ? ' ' : message.front();
    message.remove_prefix(1);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string redact(std::string_view url) {
  // Both readings of the original text, masked together: one's mask never
  // hides from the other what it has to find (a userinfo mask that ran over
  // a later "password=" key used to leave that password in clear).
  std::vector<Range> ranges;
  userinfo_password(url, ranges, 1);
  password_parameters(url, ranges);
  std::sort(ranges.begin(), ranges.end());
  std::string out;
  std::size_t copied = 0;  // url[0, copied) is dealt with
  for (std::size_t i = 0; i < ranges.size();) {
    std::size_t begin = ranges[i].first;
    std::size_t end = ranges[i].second;
    for (++i; i < ranges.size() && ranges[i].first <= end; ++i) {
      end = std::max(end, ranges[i].second);
    }
    if (begin < copied) begin = copied;
    out.append(url.substr(copied, begin - copied));
    out.append(kMask);
    copied = std::max(copied, end);
  }
  out.append(url.substr(std::min(copied, url.size())));
  return out;
}

}  // namespace pgjobq
