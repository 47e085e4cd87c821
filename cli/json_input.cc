#include "cli/json_input.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "cli/common.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"

namespace pgjobq::cli {
namespace {

// The parser's message without its "[json.exception.parse_error.101] "
// prefix, escaped: it quotes the input, which may hold any byte.
std::string parser_message(const nlohmann::json::exception& e) {
  std::string_view text = e.what();
  if (!text.empty() && text.front() == '[') {
    std::size_t end = text.find("] ");
    if (end != std::string_view::npos) text.remove_prefix(end + 2);
  }
  return escape_bytes(text, 300);
}

// Refuses NUL characters in strings and keys. Iterative: the depth was
// checked, but the walk needs no recursion anyway.
void check_strings(const nlohmann::json& data, std::string_view what) {
  std::vector<const nlohmann::json*> stack{&data};
  auto check = [&](const std::string& s) {
    if (s.find('\0') != std::string::npos) {
      throw InvalidInput(std::string(what) +
                         ": JSON strings may not contain NUL (\\u0000); "
                         "PostgreSQL cannot store it");
    }
  };
  while (!stack.empty()) {
    const nlohmann::json* node = stack.back();
    stack.pop_back();
    if (node->is_object()) {
      for (auto it = node->begin(); it != node->end(); ++it) {
        check(it.key());
        stack.push_back(&it.value());
      }
    } else if (node->is_array()) {
      for (const auto& child : *node) stack.push_back(&child);
    } else if (node->is_string()) {
      check(node->get_ref<const std::string&>());
    }
  }
}

}  // namespace

int json_nesting_depth(std::string_view text, int limit) {
  int depth = 0;
  int deepest = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

nlohmann::json parse_json(std::string_view text, std::string_view what,
                          std::size_t max_bytes) {
  // JSON text never holds a raw NUL byte (in a string it must be written
  // \u0000), and the parser takes one for the end of the input: without
  // this check `{"a": 1}<NUL>anything` would read as {"a": 1}.
  if (std::size_t nul = text.find('\0'); nul != std::string_view::npos) {
    throw InvalidInput(std::string(what) +
                       " is not valid JSON: a NUL byte at offset " +
                       std::to_string(nul));
  }
  if (json_nesting_depth(text, kMaxJsonDepth) > kMaxJsonDepth) {
    throw InvalidInput(std::string(what) + ": JSON nested deeper than " +
                       std::to_string(kMaxJsonDepth) + " levels");
  }
  nlohmann::json data;
  try {
    data = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    // parse_error, and out_of_range for a number too large for a double.
    throw InvalidInput(std::string(what) +
                       " is not valid JSON: " + parser_message(e));
  }
  check_strings(data, what);
  std::size_t size = 0;
  try {
    size = data.dump().size();
  } catch (const nlohmann::json::exception&) {
    throw InvalidInput(std::string(what) + ": not valid UTF-8");
  }
  if (size > max_bytes) {
    throw InvalidInput(std::string(what) + " is " + std::to_string(size) +
                       " bytes of JSON, more than the limit of " +
                       std::to_string(max_bytes));
  }
  return data;
}

std::string read_stdin(std::size_t max_bytes) {
  std::string data;
  char buf[65536];
  while (true) {
    ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(std::string("cannot read standard input: ") +
                  std::strerror(errno));
    }
    if (n == 0) return data;
    data.append(buf, static_cast<std::size_t>(n));
    if (data.size() > max_bytes) {
      throw InvalidInput("standard input holds more than " +
                         std::to_string(max_bytes) + " bytes");
    }
  }
}

nlohmann::json json_argument(std::string_view argument, std::string_view what,
                             std::size_t max_bytes) {
  if (argument == "-") {
    // Whitespace may make the text larger than its compact form; allow
    // some, but never read without bound.
    std::string text = read_stdin(4 * max_bytes + 4096);
    return parse_json(text, std::string(what) + " (from stdin)", max_bytes);
  }
  return parse_json(argument, what, max_bytes);
}

std::string pretty_object(
    const std::vector<std::pair<std::string, nlohmann::json>>& fields,
    int indent) {
  if (fields.empty()) return "{}";
  std::string inner(static_cast<std::size_t>(indent) + 2, ' ');
  std::string out = "{";
  for (std::size_t i = 0; i < fields.size(); ++i) {
    std::string value = fields[i].second.dump(
        2, ' ', false, nlohmann::json::error_handler_t::replace);
    // Nested lines move right with the key.
    for (std::size_t at = value.find('\n'); at != std::string::npos;
         at = value.find('\n', at + 1)) {
      value.insert(at + 1, inner);
    }
    out += i == 0 ? "\n" : ",\n";
    out += inner + compact(fields[i].first) + ": " + value;
  }
  return out + "\n" + std::string(static_cast<std::size_t>(indent), ' ') + "}";
}

std::string compact(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace pgjobq::cli
