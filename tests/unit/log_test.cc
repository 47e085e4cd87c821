// The default log sink: one line per event on stderr.

#include "pgjobq/log.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace pgjobq {
namespace {

std::string logged(LogLevel level, const std::string& text) {
  testing::internal::CaptureStderr();
  log(level, text);
  return testing::internal::GetCapturedStderr();
}

TEST(LogTest, EachEventIsOneLine) {
  EXPECT_EQ(logged(LogLevel::error, "job 7 failed: line one\nline two\ttab"),
            "pgjobq: error: job 7 failed: line one line two tab\n");
  EXPECT_EQ(logged(LogLevel::warning, "carriage\r return"),
            "pgjobq: warning: carriage  return\n");
  EXPECT_EQ(logged(LogLevel::debug, "not shown"), "");
}

TEST(LogTest, AHugeTextIsCut) {
  std::string line = logged(LogLevel::info, std::string(100000, 'x'));
  EXPECT_LT(line.size(), 4200u);
  EXPECT_NE(line.find("[truncated]"), std::string::npos);
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);
}

TEST(LogTest, ASinkOfYourOwnGetsTheTextAsItIs) {
  std::string seen;
  set_log_sink([&](LogLevel, std::string_view text) { seen = text; });
  log(LogLevel::error, "a\nb");
  set_log_sink(nullptr);
  EXPECT_EQ(seen, "a\nb");
}

// log() runs on threads where an exception would end the process (the
// worker's watchdog and Redis subscriber): a sink's is dropped.
TEST(LogTest, ASinkThatThrowsDoesNotThrowThroughLog) {
  int calls = 0;
  set_log_sink([&](LogLevel, std::string_view) {
    ++calls;
    throw std::runtime_error("disk full");
  });
  EXPECT_NO_THROW(log(LogLevel::warning, "one"));
  EXPECT_NO_THROW(log(LogLevel::error, "two"));
  set_log_sink(nullptr);
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace pgjobq
