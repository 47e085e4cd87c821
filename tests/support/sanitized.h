#pragma once

namespace pgjobq::test {

// Whether this build has AddressSanitizer (and UBSan with it, in the
// suite's sanitized build): g++ defines __SANITIZE_ADDRESS__, clang++ 14
// only answers __has_feature.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

}  // namespace pgjobq::test
