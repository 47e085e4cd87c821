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

}  // namespace pgjobq
