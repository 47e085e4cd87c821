#pragma once

// Runs programs as a user would, for the command-line tests: stdin given,
// stdout and stderr captured, the environment adjusted, and every wait
// bounded by a deadline.

#include <spawn.h>
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

// Starts `argv` (argv[0] a path, or a name looked up in PATH) with this
// process's environment changed by `env`, its descriptors arranged by
// `actions` and its attributes by `attr` (either may be null): 0 and the
// child in *pid, or posix_spawnp's error number.
int spawn(const std::vector<std::string>& argv, const EnvChanges& env,
          const posix_spawn_file_actions_t* actions,
          const posix_spawnattr_t* attr, pid_t* pid);

// What a waitpid() status says: the exit code, 128 + the signal that ended
// the process, or -1.
int exit_code_of(int status);

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
