// Fuzzes the command line's parsing of durations (--timeout, --poll-interval,
// --job-timeout, --older-than) and job ids: any input is a value within
// bounds or a usage error (exit 2) in one printable line of bounded length;
// an id of more digits than a bigint holds is "no such job" (exit 6).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "cli/common.h"
#include "fuzz/fuzz_check.h"

namespace {

using pgjobq::fuzz::check;

void check_refusal(const pgjobq::cli::ExitError& e) {
  check(e.code() == pgjobq::cli::kExitUsage, "refusal is not a usage error");
  std::string_view text = e.what();
  check(text.size() < 400, "message too long");
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    check(u >= 0x20 && u < 0x7f, "message not printable on one line");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  constexpr auto kTenYears = std::chrono::hours(24 * 365 * 10);
  for (bool bare : {true, false}) {
    try {
      std::chrono::microseconds d =
          pgjobq::cli::parse_duration(input, "--timeout", bare);
      check(d.count() >= 0, "negative duration");
      check(d <= kTenYears + std::chrono::microseconds(1),
            "more than ten years");
    } catch (const pgjobq::cli::ExitError& e) {
      check_refusal(e);
    }
  }
  try {
    pgjobq::JobId id = pgjobq::cli::parse_job_id(input);
    check(id.value > 0, "non-positive job id");
    std::string digits(input);
    digits.erase(0, digits.find_first_not_of('0'));
    check(digits == std::to_string(id.value), "id is not the text's number");
  } catch (const pgjobq::cli::ExitError& e) {
    if (e.code() == pgjobq::cli::kExitNoSuchJob) {
      // Only integers no job can have name no job: 0, negative, or too
      // many digits for a bigint.
      std::string_view digits = input;
      bool negative = digits.starts_with('-');
      if (negative) digits.remove_prefix(1);
      bool integer =
          !digits.empty() &&
          digits.find_first_not_of("0123456789") == std::string_view::npos;
      bool zero =
          integer && digits.find_first_not_of('0') == std::string_view::npos;
      check(integer && (negative || zero || digits.size() >= 19),
            "no such job for what is not an integer no job can have");
    } else {
      check_refusal(e);
    }
  }
  return 0;
}
