#pragma once

// Percent-decoding (%XX) of URL parts, shared by the Redis URL parser
// (redis/url.cc), which refuses a bad escape, and by redaction
// (redact.cc), which must find a password however it was written.

#include <optional>
#include <string>
#include <string_view>

namespace pgjobq {

inline int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// `text` with every %XX decoded. A '%' not followed by two hex digits is
// kept as it is when `keep_bad_escapes`; otherwise it makes the whole
// result std::nullopt.
inline std::optional<std::string> percent_decode(std::string_view text,
                                                 bool keep_bad_escapes) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    int hi = i + 2 < text.size() ? hex_value(text[i + 1]) : -1;
    int lo = i + 2 < text.size() ? hex_value(text[i + 2]) : -1;
    if (text[i] != '%') {
      out += text[i];
    } else if (hi >= 0 && lo >= 0) {
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (keep_bad_escapes) {
      out += '%';
    } else {
      return std::nullopt;
    }
  }
  return out;
}

}  // namespace pgjobq
