#include "validate.h"

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
    if (depth > kMaxJsonDepth) {
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
    }
  }
}

}  // namespace

void validate_queue_name(std::string_view queue) {
  if (queue.empty()) throw InvalidInput("invalid queue name: it is empty");
  if (queue.size() > kMaxQueueName) {
    throw InvalidInput("invalid queue name \"" + printable(queue) +
                       "\": longer than 128 characters");
  }
  for (char c : queue) {
    if (!queue_char(c)) {
      throw InvalidInput("invalid queue name \"" + printable(queue) +
                         "\": only letters, digits and _ - . : / are allowed");
    }
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

}  // namespace pgjobq
