#pragma once

// enqueue, wait, show, reschedule, cancel: one job at a time. Each returns
// its exit code or throws (see exit_code_for); usage errors are ExitError.

#include <cstdint>
#include <optional>
#include <string>

#include "cli/common.h"
#include "pgjobq/enqueue.h"

namespace pgjobq::cli {

struct EnqueueArgs {
  std::string queue;
  std::string json;       // the JSON argument, "-" for stdin
  bool has_json = false;  // an empty argument is not "none" (null)
  std::int64_t limit = kDefaultLimit;
  bool wait = false;
  std::optional<std::string> timeout;  // none: no limit
};

// Prints the job id and, with --wait, its result. Exit 3 if the queue is
// full. A Redis failure is a warning: the job is stored.
int enqueue_command(const Connections& c, const EnqueueArgs& a);

// Prints the job's result. Exits 4, 5, 6 through the library's errors.
int wait_command(const Connections& c, const std::string& id,
                 const std::optional<std::string>& timeout);

// Prints the job as a JSON object with every key of DESIGN.md.
int show_command(const Connections& c, const std::string& id);

// Reschedules the job, then wakes its queue's worker.
int reschedule_command(const Connections& c, const std::string& id);

// Cancels the job, then publishes `null` on its channel for its waiters.
int cancel_command(const Connections& c, const std::string& id);

}  // namespace pgjobq::cli
