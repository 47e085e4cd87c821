// Fuzzes how `pgjobq work` reads a command's stdout as the job's result
// (cli/json_input.cc parse_json, as CommandRunner::handle calls it): any
// output is either refused with InvalidInput, in a bounded, printable
// message, or accepted as a result the library then stores without
// complaint (its own check, serialize_payload, agrees) within the limit.
//
// PGJOBQ_FUZZ_KNOWN_BUGS=1 also checks for the NUL-byte truncation reported
// in docs/security.md (off by default, so a fuzzing run can go past it).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "cli/json_input.h"
#include "fuzz/fuzz_check.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "validate.h"

namespace {

using pgjobq::fuzz::check;

// Small, so the fuzzer reaches the limit; the CLI uses 1 MiB.
constexpr std::size_t kMaxOutput = 4096;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  static const bool known_bugs = [] {
    const char* env = std::getenv("PGJOBQ_FUZZ_KNOWN_BUGS");
    return env && std::string_view(env) == "1";
  }();
  std::string_view output(reinterpret_cast<const char*>(data), size);
  nlohmann::json result;
  try {
    result = pgjobq::cli::parse_json(output, "its stdout", kMaxOutput);
  } catch (const pgjobq::InvalidInput& e) {
    std::string_view text = e.what();
    check(text.size() < 1000, "message too long");
    for (char c : text) {
      auto u = static_cast<unsigned char>(c);
      check(u >= 0x20 && u < 0x7f, "message not printable on one line");
    }
    return 0;
  }
  std::string stored;
  try {
    stored = pgjobq::serialize_payload(result, kMaxOutput, "result");
  } catch (const pgjobq::InvalidInput& e) {
    check(false, "accepted output that the library refuses to store");
  }
  check(stored.size() <= kMaxOutput, "accepted output over the limit");
  check(pgjobq::cli::json_nesting_depth(stored, pgjobq::kMaxJsonDepth) <=
            pgjobq::kMaxJsonDepth,
        "accepted output nested too deep");
  if (known_bugs) {
    check(output.find('\0') == std::string_view::npos,
          "accepted output holding a NUL byte (the rest was dropped)");
  }
  return 0;
}
