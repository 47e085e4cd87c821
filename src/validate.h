#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace pgjobq {

// Serializes `data` for PostgreSQL's jsonb. Throws InvalidInput, naming
// `what`, if it is nested deeper than kMaxJsonDepth, holds a NaN or
// infinite number, a NUL character (jsonb cannot store \u0000) or invalid
// UTF-8, or serializes to more than `max_bytes`. Thread-safe.
std::string serialize_payload(const nlohmann::json& data, std::size_t max_bytes,
                              std::string_view what);

// `text` made storable as PostgreSQL text and JSON: invalid UTF-8 and NUL
// characters become U+FFFD, and it is cut (at a character boundary, marked
// "...[truncated]") to at most `max_bytes`. For error messages, which come
// from handlers and may hold anything. Thread-safe.
std::string storable_text(std::string_view text, std::size_t max_bytes);

}  // namespace pgjobq
