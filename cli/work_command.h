#pragma once

// `pgjobq work QUEUE... -- CMD [ARG...]`.

#include <string>
#include <vector>

#include "cli/common.h"

namespace pgjobq::cli {

struct WorkArgs {
  std::vector<std::string> queues;
  std::string poll_interval = "120";
  std::string on_error = "crash";
  int max_attempts = 25;
  std::string job_timeout;  // empty: no limit
  std::string retry_delay = "1";
  std::string dead_session_timeout = "20";
};

// Serves the queues, running `command` once per job (CommandRunner), until
// SIGTERM or SIGINT (returns 0 once the running jobs finish; a second
// signal exits at once) or, under the crash policy, a handler error
// (HandlerFailed propagates: exit 1). As PID 1 it forks, and PID 1 only
// passes on stop signals and reaps orphans, then returns the worker's exit
// code.
int work_command(const Connections& c, const WorkArgs& a,
                 const std::vector<std::string>& command);

// Splits the arguments of `pgjobq work QUEUE... -- CMD [ARG...]` at the
// first "--": CLI11 gets what comes before it, and CMD [ARG...] is
// returned in `command`. For any other command the arguments are left
// whole (a "--" there ends the options, as usual). `args` excludes the
// program name. Sets `had_separator` when `work` was given a "--".
std::vector<std::string> split_command(const std::vector<std::string>& args,
                                       std::vector<std::string>& command,
                                       bool& had_separator);

}  // namespace pgjobq::cli
