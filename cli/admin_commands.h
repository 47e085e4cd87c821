#pragma once

// migrate, status, prune: the operator's commands. Each returns its exit
// code or throws (see exit_code_for).

#include <optional>
#include <string>

#include "cli/common.h"

namespace pgjobq::cli {

// `lock_wait`: --lock-wait's text (a duration).
int migrate_command(const Connections& c, const std::string& lock_wait);

struct StatusArgs {
  std::optional<std::string> queue;  // none: every queue
  bool json = false;
};

// A table per queue, or a JSON array of objects with --json.
int status_command(const Connections& c, const StatusArgs& a);

// Deletes finished jobs older than `older_than` (a duration with a unit);
// progress on stderr when it is a terminal; prints how many.
int prune_command(const Connections& c, const std::string& older_than);

}  // namespace pgjobq::cli
