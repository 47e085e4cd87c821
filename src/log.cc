#include "pgjobq/log.h"

#include <cstdio>
#include <memory>
#include <mutex>
#include <string>

#include "validate.h"

namespace pgjobq {
namespace {

constexpr std::size_t kMaxLineBytes = 4096;

std::mutex& sink_mutex() {
  static std::mutex m;
  return m;
}

std::shared_ptr<const LogSink>& current_sink() {
  static std::shared_ptr<const LogSink> sink;
  return sink;
}

std::string_view level_name(LogLevel level) {
  switch (level) {
    case LogLevel::debug:
      return "debug";
    case LogLevel::info:
      return "info";
    case LogLevel::warning:
      return "warning";
    case LogLevel::error:
      return "error";
  }
  return "?";
}

}  // namespace

void set_log_sink(LogSink sink) {
  auto shared = sink ? std::make_shared<const LogSink>(std::move(sink))
                     : std::shared_ptr<const LogSink>();
  std::lock_guard lock(sink_mutex());
  current_sink() = std::move(shared);
}

void log(LogLevel level, std::string_view text) {
  std::shared_ptr<const LogSink> sink;
  {
    std::lock_guard lock(sink_mutex());
    sink = current_sink();
  }
  if (sink) {
    try {
      (*sink)(level, text);
    } catch (...) {
      // Called where nothing may throw
      // (LogTest.ASinkThatThrowsDoesNotThrowThroughLog).
    }
    return;
  }
  if (level == LogLevel::debug) return;
  // One event, one line: a handler's error may hold line breaks (a stack
  // trace, a command's stderr) and megabytes; the job keeps all of it.
  std::string body = storable_text(text, kMaxLineBytes);
  for (char& c : body) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = ' ';
  }
  // One write per line so lines from several threads do not interleave.
  std::string line =
      "pgjobq: " + std::string(level_name(level)) + ": " + body + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace pgjobq
