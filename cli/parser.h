#pragma once

// The command line's grammar: every command, option and help text. The
// only file that includes CLI11 (its header costs seconds per file).

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cli/common.h"

namespace pgjobq::cli {

struct Parsed {
  // Parsing ended the program: help or the version printed (0), or a usage
  // error (2) whose message is in `usage_error`.
  bool finished = false;
  int exit_code = kExitOk;
  std::string usage_error;
  // --db and --redis, as given.
  std::shared_ptr<Connections> connections;
  // The command chosen, and how to run it (returns its exit code or
  // throws; see exit_code_for).
  std::string command;
  std::function<int()> run;
};

// Parses `args` (without the program name). `work_command` is what
// followed "--" (see split_command); `had_separator` whether there was one.
// Prints help or the version itself.
Parsed parse_command_line(const std::vector<std::string>& args,
                          const std::vector<std::string>& work_command,
                          bool had_separator);

}  // namespace pgjobq::cli
