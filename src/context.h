#pragma once

#include <string>
#include <string_view>

namespace pgjobq {

// How messages name a queue: `queue "mail"`.
std::string queue_label(std::string_view queue);

// Call inside a catch block: rethrows the exception being handled with
// "<doing>: " before its message and its type (and fields) kept, so messages
// say what was being done, to what: `enqueue on queue "mail": connection to
// PostgreSQL lost`. Exceptions that are not pgjobq errors pass unchanged.
[[noreturn]] void rethrow_with_context(const std::string& doing);

}  // namespace pgjobq
