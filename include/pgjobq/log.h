#pragma once

#include <functional>
#include <string_view>

namespace pgjobq {

enum class LogLevel { debug, info, warning, error };

// Where pgjobq's log lines go. The default writes "pgjobq: <level>: <text>"
// to stderr for info and above, one line each: control characters (the
// line breaks of a handler's error) become spaces, and a text is cut at
// 4 KiB. A sink of your own gets the text as it is. Lines never contain
// passwords.
using LogSink = std::function<void(LogLevel level, std::string_view text)>;

// Replaces the sink for the whole process. Thread-safe; the sink itself is
// called from worker threads and must be thread-safe too. What it throws is
// dropped (a worker's watchdog and subscriber threads log, and an exception
// there would end the process), and so is that line.
void set_log_sink(LogSink sink);

// Sends one line to the sink. Thread-safe; never throws.
void log(LogLevel level, std::string_view text);

}  // namespace pgjobq
