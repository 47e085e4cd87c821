#pragma once

// JSON in and out. What comes from outside (command-line arguments, stdin,
// a command's stdout) is checked here, with messages that say what was
// wrong, before the library (which checks again) ever sees it; what we
// print is written here.

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgjobq::cli {

// Parses `text` as one JSON document. `what` names it in messages ("job
// data", "the command's stdout"). Refuses, with InvalidInput: malformed
// JSON (with the parser's line and column), nesting deeper than
// kMaxJsonDepth (found by a scan of the text, before parsing), strings
// holding NUL (PostgreSQL cannot store it), and documents whose compact
// form is larger than `max_bytes`. Invalid UTF-8 is malformed JSON.
nlohmann::json parse_json(std::string_view text, std::string_view what,
                          std::size_t max_bytes);

// How deeply `text` nests arrays and objects, counting brackets outside
// strings; stops counting once past `limit`.
int json_nesting_depth(std::string_view text, int limit);

// Reads all of standard input. Throws InvalidInput if it holds more than
// `max_bytes`, Error if it cannot be read.
std::string read_stdin(std::size_t max_bytes);

// Reads a JSON argument: "-" means standard input.
nlohmann::json json_argument(std::string_view argument, std::string_view what,
                             std::size_t max_bytes);

// A JSON object for people: keys in the order given (not sorted), two
// spaces per level, every line after the first indented by `indent` more.
// Invalid UTF-8 in strings is replaced, never thrown on.
std::string pretty_object(
    const std::vector<std::pair<std::string, nlohmann::json>>& fields,
    int indent = 0);

// Compact JSON on one line; invalid UTF-8 replaced.
std::string compact(const nlohmann::json& value);

}  // namespace pgjobq::cli
