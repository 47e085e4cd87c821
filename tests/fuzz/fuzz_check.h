#pragma once

// A property a fuzz target checks: on failure, say what and abort, so
// libFuzzer saves the input (and the corpus runner fails).

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace pgjobq::fuzz {

inline void check(bool holds, std::string_view what) {
  if (holds) return;
  std::fprintf(stderr, "fuzz property violated: %.*s\n",
               static_cast<int>(what.size()), what.data());
  std::abort();
}

}  // namespace pgjobq::fuzz
