#include "validate.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"

namespace pgjobq {
namespace {

constexpr std::size_t kMaxQueueName = 128;

bool queue_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
         c == ':' || c == '/';
}

// Shows a refused name safely: printable ASCII as is, the rest escaped, and
// at most 64 characters of it.
std::string printable(std::string_view name) {
  std::string out;
  for (std::size_t i = 0; i < name.size() && i < 64; ++i) {
    unsigned char c = static_cast<unsigned char>(name[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (name.size() > 64) out += "...";
  return out;
}

void check_string(const std::string& s, std::string_view what) {
  if (s.find('\0') != std::string::npos) {
    throw InvalidInput(std::string(what) +
                       ": JSON strings may not contain NUL (\\u0000); "
                       "PostgreSQL cannot store it");
  }
}

// Walks `data` without recursion, so hostile nesting cannot overflow the
// stack before it is refused.
void check_tree(const nlohmann::json& data, std::string_view what) {
  std::vector<std::pair<const nlohmann::json*, int>> stack{{&data, 1}};
  while (!stack.empty()) {
    auto [node, depth] = stack.back();
    stack.pop_back();
    // Levels are arrays and objects, as the command line counts brackets:
    // a scalar inside the deepest one adds none.
    if (depth > kMaxJsonDepth && (node->is_object() || node->is_array())) {
      throw InvalidInput(std::string(what) + ": JSON nested deeper than " +
                         std::to_string(kMaxJsonDepth) + " levels");
    }
    if (node->is_object()) {
      for (auto it = node->begin(); it != node->end(); ++it) {
        check_string(it.key(), what);
        stack.emplace_back(&it.value(), depth + 1);
      }
    } else if (node->is_array()) {
      for (const auto& child : *node) stack.emplace_back(&child, depth + 1);
    } else if (node->is_string()) {
      check_string(node->get_ref<const std::string&>(), what);
    } else if (node->is_number_float()) {
      if (!std::isfinite(node->get<double>())) {
        throw InvalidInput(std::string(what) +
                           ": NaN and infinity are not JSON numbers");
      }
    } else if (node->is_binary()) {
      throw InvalidInput(std::string(what) + ": binary values are not JSON");
    } else if (node->is_discarded()) {
      // What json::parse(text, nullptr, false) returns for malformed text.
      throw InvalidInput(std::string(what) +
                         ": a discarded value (malformed JSON that was "
                         "parsed without exceptions) is not JSON");
    }
  }
}

}  // namespace

void validate_queue_name(std::string_view queue) {
  if (queue.empty()) throw InvalidInput("invalid queue name: it is empty");
  for (char c : queue) {
    if (!queue_char(c)) {
      throw InvalidInput(
          "invalid queue name \"" + printable(queue) +
          "\": only ASCII letters, digits and _ - . : / are allowed");
    }
  }
  if (queue.size() > kMaxQueueName) {
    throw InvalidInput("invalid queue name \"" + printable(queue) +
                       "\": longer than 128 characters");
  }
}

std::string serialize_payload(const nlohmann::json& data, std::size_t max_bytes,
                              std::string_view what) {
  check_tree(data, what);
  std::string text;
  try {
    text = data.dump();
  } catch (const nlohmann::json::type_error& e) {
    // 316: a string is not valid UTF-8.
    throw InvalidInput(std::string(what) + ": not valid UTF-8");
  }
  if (text.size() > max_bytes) {
    throw InvalidInput(
        std::string(what) + " is " + std::to_string(text.size()) +
        " bytes of JSON, more than the limit of " + std::to_string(max_bytes));
  }
  return text;
}

std::string storable_text(std::string_view text, std::size_t max_bytes) {
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  constexpr std::string_view kTruncated = "...[truncated]";
  std::string out;
  std::size_t i = 0;
  // Sanitize until the end, or until past the limit.
  while (i < text.size() && out.size() <= max_bytes) {
    auto c = static_cast<unsigned char>(text[i]);
    std::size_t length = c < 0x80   ? 1
                         : c < 0xC2 ? 0  // continuation or overlong lead
                         : c < 0xE0 ? 2
                         : c < 0xF0 ? 3
                         : c < 0xF5 ? 4
                                    : 0;
    bool valid = length > 0 && i + length <= text.size() && c != 0;
    std::uint32_t code = length == 1 ? c : c & (0x7Fu >> length);
    for (std::size_t k = 1; valid && k < length; ++k) {
      auto next = static_cast<unsigned char>(text[i + k]);
      valid = (next & 0xC0) == 0x80;
      code = (code << 6) | (next & 0x3Fu);
    }
    // No overlong forms, surrogates or code points past U+10FFFF.
    valid = valid && !(length == 3 && code < 0x800) &&
            !(length == 4 && (code < 0x10000 || code > 0x10FFFF)) &&
            !(code >= 0xD800 && code <= 0xDFFF);
    out += valid ? text.substr(i, length) : kReplacement;
    i += valid ? length : 1;
  }
  if (out.size() <= max_bytes && i == text.size()) return out;
  // Too long: keep whole characters up to the limit, less room for the mark.
  bool marked = max_bytes > kTruncated.size();
  std::size_t cut = marked ? max_bytes - kTruncated.size() : max_bytes;
  // out[cut] is the first byte dropped; step back off continuation bytes
  // so that no character is split.
  while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) {
    --cut;
  }
  out.resize(cut);
  if (marked) out += kTruncated;
  return out;
}

}  // namespace pgjobq
