#pragma once

// Runs a job's command: `pgjobq work QUEUE... -- CMD [ARG...]`.

#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <mutex>
#include <set>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pgjobq/worker.h"

namespace pgjobq::cli {

// How one run of the command ended.
struct CommandOutcome {
  // Set when the command exited; otherwise `signal` killed it.
  bool exited = false;
  int exit_code = 0;
  int signal = 0;
  // Everything it wrote to stdout (up to the limit).
  std::string output;
  // It wrote more than the limit to stdout and was killed.
  bool output_overflow = false;
  // The stop token was requested and the command was killed.
  bool stopped = false;
  // It exited, but processes it left behind still held its stdout open
  // after a grace period; they were killed, unread.
  bool output_left_open = false;
  // The last bytes it wrote to stderr (all of which went on to the
  // worker's stderr), and whether earlier ones were dropped from here.
  std::string stderr_tail;
  bool stderr_cut = false;
};

// Runs CMD [ARG...] once per job, as the Worker's handler:
//
//  - the job's data JSON on its stdin; PGJOBQ_JOB_ID, PGJOBQ_QUEUE and
//    PGJOBQ_ATTEMPT added to the worker's environment; its stderr passed
//    on to the worker's as it comes, and the end of it quoted in the
//    error when the command fails (the worker's passwords masked);
//  - in a process group of its own, so a terminal's Ctrl-C reaches the
//    worker only (which lets the job finish), and a timeout kills every
//    process the command started; that group dies with the worker, even
//    when the worker is killed with SIGKILL (see "keeper" in the .cc), and
//    when the command exits, whatever it left running in it is killed;
//  - exit 0 completes the job with its stdout parsed as the result JSON
//    (empty stdout is a null result); exit 75 (EX_TEMPFAIL) reschedules
//    it; anything else, stdout that is not JSON or larger than the payload
//    limit, or a requested stop, is a handler error (thrown).
//
// The process must ignore SIGPIPE (`pgjobq work` does): a command that
// exits without reading all its input makes our write fail with EPIPE.
// And it must not ignore SIGCHLD (`pgjobq work` resets it): the kernel
// would then reap the commands before run() could see them exit.
//
// Thread-safe: the Worker calls handle() from one thread per queue.
class CommandRunner {
 public:
  // How long handle() waits for the worker's file descriptors or processes
  // to free up when the command cannot be started for want of them (a
  // worker serving many queues at its RLIMIT_NOFILE or RLIMIT_NPROC)
  // before that is the job's error. The job has not run meanwhile.
  static constexpr std::chrono::milliseconds kStartPatience{30000};

  // Exit code that reschedules the job (EX_TEMPFAIL of sysexits.h).
  static constexpr int kRescheduleExitCode = 75;

  // `argv` is CMD [ARG...]. `max_output` bounds stdout. `kill_grace` is how
  // long a stopped command's process group has between SIGTERM and SIGKILL.
  // `secrets` (the connections' passwords) are masked, as are the passwords
  // of URLs, where messages quote the command line.
  explicit CommandRunner(
      std::vector<std::string> argv, std::size_t max_output,
      std::chrono::milliseconds kill_grace = std::chrono::milliseconds(2000),
      std::vector<std::string> secrets = {});

  // The Worker's handler.
  HandlerResult handle(const JobContext& job);

  // Runs the command once with `input` on stdin and `env` added to the
  // environment. When `stop` is requested, sends SIGTERM to its process
  // group and, after the grace, SIGKILL. Always reaps the child. Throws
  // Error if it cannot be started.
  CommandOutcome run(
      std::string_view input,
      const std::vector<std::pair<std::string, std::string>>& env,
      std::stop_token stop);

  // The RLIMIT_NOFILE commands start with: `pgjobq work` raises its own
  // soft limit, and gives the commands the one it was started with.
  void set_command_open_file_limit(const struct rlimit& limit) noexcept {
    command_nofile_ = limit;
    restore_nofile_ = true;
  }

  // SIGKILLs the process group of every running command, and refuses to
  // start more. For the second SIGTERM: the process exits right after, and
  // handle() never returns from then on.
  void kill_all() noexcept;

 private:
  std::vector<std::string> argv_;
  std::vector<std::string> base_env_;
  std::size_t max_output_;
  std::chrono::milliseconds kill_grace_;
  std::string description_;
  std::vector<std::string> secrets_;
  struct rlimit command_nofile_ {};
  bool restore_nofile_ = false;

  // `what` went wrong, with the end of the command's stderr, if any.
  std::string failure(const std::string& what, const CommandOutcome& out) const;

  // After kill_all(): blocks until the process exits.
  void wait_for_exit_if_killed();

  std::mutex mutex_;
  std::set<pid_t> running_;  // process groups (= leader pids), not reaped
  bool killed_ = false;
};

// Whether `program` names an executable file: a path with a '/', or a
// name found on PATH, as posix_spawnp would look it up.
bool is_executable(const std::string& program);

}  // namespace pgjobq::cli
