#pragma once

// Runs programs as a user would, for the command-line tests: stdin given,
// stdout and stderr captured, the environment adjusted, and every wait
// bounded by a deadline.

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgjobq::test {

// Environment changes: a value sets the variable, nullopt removes it.
using EnvChanges =
    std::vector<std::pair<std::string, std::optional<std::string>>>;

// This process's environment with `changes` applied, as KEY=value entries.
std::vector<std::string> environment_with(const EnvChanges& changes);

// Pointers to `strings`, then a null pointer: an argv or envp for exec or
// posix_spawn (valid while `strings` is unchanged).
std::vector<char*> null_terminated(std::vector<std::string>& strings);

struct ProcessResult {
  int exit_code = -1;  // 128 + signal if a signal ended it
  std::string out;
  std::string err;
};

// A child process whose stdout and stderr go to files of its own. Killed
// (its whole process group, SIGKILL) and reaped on destruction if still
// running.
class Subprocess {
 public:
  Subprocess(const std::vector<std::string>& argv, const EnvChanges& env = {},
             std::string_view input = {});
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int signo);
  // Whether it is still running (reaps it once it has exited).
  bool running();
  // Waits up to `timeout` for it to exit; its exit code (see
  // ProcessResult), or nullopt if it is still running.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  std::string out() const;
  std::string err() const;

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::string dir_;
};

// Runs `argv` to completion with `input` on stdin. Fails the test, kills
// it and returns exit code -1 if it runs longer than `timeout`.
ProcessResult run_process(
    const std::vector<std::string>& argv, const EnvChanges& env = {},
    std::string_view input = {},
    std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Whether process `pid` is gone or a zombie.
bool process_gone(pid_t pid);

// The pids of the children of `pid` (from /proc).
std::vector<pid_t> children_of(pid_t pid);

}  // namespace pgjobq::test
