#pragma once

// The command groups. Each adds its subcommands to the app and, for each,
// what to run once CLI11 has parsed the arguments.

#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

#include "cli/common.h"

namespace pgjobq::cli {

struct Command {
  CLI::App* app;
  // Runs the command; returns its exit code or throws (see exit_code_for).
  std::function<int()> run;
};
using Commands = std::vector<Command>;

// enqueue, wait, show, reschedule, cancel.
void add_job_commands(CLI::App& app, const Connections& connections,
                      Commands& commands);

// migrate, status, prune.
void add_admin_commands(CLI::App& app, const Connections& connections,
                        Commands& commands);

// work. `command` is what followed `--` on the command line (see
// split_command).
void add_work_command(CLI::App& app, const Connections& connections,
                      const std::vector<std::string>& command,
                      Commands& commands);

// Splits the arguments of `pgjobq work QUEUE... -- CMD [ARG...]` at the
// first "--": CLI11 gets what comes before it, and CMD [ARG...] is
// returned in `command`. For any other command the arguments are left
// whole (a "--" there ends the options, as usual). `args` excludes the
// program name. Sets `had_separator` when `work` was given a "--".
std::vector<std::string> split_command(const std::vector<std::string>& args,
                                       std::vector<std::string>& command,
                                       bool& had_separator);

}  // namespace pgjobq::cli
