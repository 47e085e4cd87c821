#include "cli/command_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <system_error>
#include <thread>

#include "cli/common.h"
#include "cli/json_input.h"
#include "pgjobq/connection.h"
#include "pgjobq/errors.h"
#include "pgjobq/log.h"

extern char** environ;

namespace pgjobq::cli {
namespace {

using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// After the command exits, how long processes it left behind may keep its
// stdout open before we stop reading.
constexpr milliseconds kDrainGrace{1000};
// Without a pidfd, how often to look whether the command has exited.
constexpr milliseconds kExitPoll{20};
// How much of the end of the command's stderr its job's error quotes.
constexpr std::size_t kStderrTail = 1024;

// Owns a file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  void reset() noexcept {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

std::string error_text(int error) {
  return std::generic_category().message(error);
}

// Whether `error` means the worker is short of descriptors, processes or
// memory for now: the command did not start, and may once others end.
bool is_shortage(int error) {
  return error == EMFILE || error == ENFILE || error == EAGAIN ||
         error == ENOMEM;
}

// The command could not be started for want of the worker's resources
// (is_shortage): nothing ran, and handle() tries again.
class NotStarted : public Error {
 public:
  using Error::Error;
};

[[noreturn]] void throw_start_failure(const std::string& what, int error) {
  std::string message = what + ": " + error_text(error);
  if (is_shortage(error)) throw NotStarted(message);
  throw Error(message);
}

void set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : std::to_string(sig);
}

// The command is started through a "keeper": a forked copy of the worker
// that leads the command's process group, starts the command, waits for
// it, and exits as it did. The keeper exists for one reason: when the
// worker dies, even by SIGKILL, the kernel sends the keeper its parent-death
// signal and the keeper kills the whole group, so no command outlives its
// worker to run beside the job's next attempt on a standby. (The command's
// own parent-death signal would reach only the command, not what it
// started.)
//
// Between fork and exec only async-signal-safe calls are allowed (the
// worker has other threads), so the keeper uses nothing else.
//
// Parent death means the death of the thread that forked: the worker's
// runner thread, which waits in run() until the keeper has exited.
constexpr int kKeeperDeathSignal = SIGUSR2;
constexpr int kCommandSignals[] = {SIGPIPE, SIGINT,  SIGTERM, SIGHUP,
                                   SIGQUIT, SIGUSR1, SIGUSR2};

// What the child needs, built before the fork.
struct Launch {
  char* const* argv;
  char* const* envp;
  pid_t worker;
  int stdin_fd;
  int stdout_fd;
  int stderr_fd;
  // Write end of a close-on-exec pipe: an errno written here means the
  // command could not be started.
  int error_fd;
  // The open-file limit the command gets, if restore_nofile.
  struct rlimit nofile;
  bool restore_nofile;
};

[[noreturn]] void write_errno_and_exit(int error_fd, int error) {
  [[maybe_unused]] ssize_t n = write(error_fd, &error, sizeof error);
  _exit(127);
}

// The worker, as the keeper knows it (set in the keeper, after the fork).
pid_t keeper_worker = 0;

// The keeper's parent-death signal: from the kernel, on behalf of the
// worker's dying thread, or the worker gone already. The same signal sent
// by anyone else (a command doing `kill -USR2 0`) is the command's to act
// on, and the keeper reports what it did.
void on_keeper_signal(int, siginfo_t* info, void*) {
  if (info->si_pid == keeper_worker || getppid() != keeper_worker) {
    kill(0, SIGKILL);
  }
}

void set_disposition(int sig, void (*handler)(int)) {
  struct sigaction action {};
  action.sa_handler = handler;
  sigemptyset(&action.sa_mask);
  sigaction(sig, &action, nullptr);
}

[[noreturn]] void exec_command(const Launch& l) {
  for (int sig : kCommandSignals) set_disposition(sig, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  // dup2 onto itself would leave close-on-exec set.
  if (l.stdin_fd == STDIN_FILENO) {
    fcntl(l.stdin_fd, F_SETFD, 0);
  } else if (dup2(l.stdin_fd, STDIN_FILENO) < 0) {
    write_errno_and_exit(l.error_fd, errno);
  }
  if (l.stdout_fd == STDOUT_FILENO) {
    fcntl(l.stdout_fd, F_SETFD, 0);
  } else if (dup2(l.stdout_fd, STDOUT_FILENO) < 0) {
    write_errno_and_exit(l.error_fd, errno);
  }
  if (l.stderr_fd == STDERR_FILENO) {
    fcntl(l.stderr_fd, F_SETFD, 0);
  } else if (dup2(l.stderr_fd, STDERR_FILENO) < 0) {
    write_errno_and_exit(l.error_fd, errno);
  }
  // Whatever the worker's libraries opened without O_CLOEXEC (a Redis
  // socket, say) is not the command's business; the error pipe is
  // close-on-exec and stays open until exec.
  for (int fd = 3; fd < l.error_fd; ++fd) close(fd);
  close_range(static_cast<unsigned>(l.error_fd) + 1, ~0U, 0);
  if (l.restore_nofile) setrlimit(RLIMIT_NOFILE, &l.nofile);
  execvpe(l.argv[0], l.argv, l.envp);
  write_errno_and_exit(l.error_fd, errno);
}

[[noreturn]] void run_keeper(const Launch& l) {
  // The group's leader. The stop signals the worker sends to the group are
  // for the command; the keeper waits for it to act on them.
  setpgid(0, 0);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1}) {
    set_disposition(sig, SIG_IGN);
  }
  set_disposition(SIGCHLD, SIG_DFL);
  keeper_worker = l.worker;
  struct sigaction on_death {};
  on_death.sa_sigaction = on_keeper_signal;
  on_death.sa_flags = SA_SIGINFO;
  sigemptyset(&on_death.sa_mask);
  sigaction(kKeeperDeathSignal, &on_death, nullptr);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, kKeeperDeathSignal);
  sigprocmask(SIG_UNBLOCK, &mask, nullptr);
  prctl(PR_SET_PDEATHSIG, kKeeperDeathSignal);
  // The worker may have died before the line above.
  if (getppid() != l.worker) kill(0, SIGKILL);

  pid_t command = fork();
  if (command < 0) write_errno_and_exit(l.error_fd, errno);
  if (command == 0) exec_command(l);
  // The pipes, and whatever else the worker had open, are not the keeper's
  // to hold.
  close(l.stdin_fd);
  close(l.stdout_fd);
  close(l.stderr_fd);
  close_range(3, ~0U, 0);
  int status = 0;
  while (waitpid(command, &status, 0) < 0) {
    if (errno != EINTR) _exit(127);
  }
  if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
  // Die as the command died, without a core of our own.
  int sig = WTERMSIG(status);
  struct rlimit no_core {};
  setrlimit(RLIMIT_CORE, &no_core);
  set_disposition(sig, SIG_DFL);
  sigemptyset(&mask);
  sigaddset(&mask, sig);
  sigprocmask(SIG_UNBLOCK, &mask, nullptr);
  kill(getpid(), sig);
  _exit(128 + sig);
}

// The command's stderr: passed on to the worker's own as it arrives (the
// command waits while the worker's stderr does, as it would writing there
// itself), its last bytes kept for the job's error. The worker's stderr is
// written only when poll says it can take more, at most PIPE_BUF bytes at
// once, so when it is a pipe whose reader stalls, that stalls the
// command's stderr, not the job's timeout or the worker's shutdown.
class StderrTee {
 public:
  // `keep`: how many of the last bytes to keep.
  StderrTee(int read_end, std::size_t keep) : from_(read_end), keep_(keep) {
    set_nonblocking(from_.get());
  }

  // Adds what it waits for to the next poll.
  void add_to(pollfd* fds, nfds_t& count) {
    read_index_ = write_index_ = -1;
    if (!pending_.empty()) {
      write_index_ = static_cast<int>(count);
      fds[count++] = {STDERR_FILENO, POLLOUT, 0};
    } else if (from_.valid()) {
      read_index_ = static_cast<int>(count);
      fds[count++] = {from_.get(), POLLIN, 0};
    }
  }

  // After the poll.
  void on_poll(const pollfd* fds) {
    if (write_index_ >= 0 && fds[write_index_].revents != 0) pass_on();
    if (read_index_ >= 0 && fds[read_index_].revents != 0) take();
  }

  // Once the command has exited: whether what it wrote is all passed on.
  // Reads what is left without waiting; processes it left behind that
  // still hold its stderr are killed soon after, so no end of file is
  // waited for.
  bool caught_up() {
    if (!pending_.empty()) return false;
    return !take();
  }

  // The last bytes, and whether earlier ones were dropped.
  const std::string& tail() const noexcept { return tail_; }
  bool cut() const noexcept { return cut_; }

 private:
  // Reads once; whether it got anything.
  bool take() {
    if (!from_.valid()) return false;
    char buffer[PIPE_BUF];
    ssize_t n = read(from_.get(), buffer, sizeof buffer);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      from_.reset();
      return false;
    }
    if (n < 0) return false;
    std::string_view got(buffer, static_cast<std::size_t>(n));
    if (passing_on_) pending_.append(got);
    tail_ += got;
    if (tail_.size() > keep_) {
      tail_.erase(0, tail_.size() - keep_);
      cut_ = true;
    }
    return true;
  }

  void pass_on() {
    ssize_t n = write(STDERR_FILENO, pending_.data(), pending_.size());
    if (n > 0) {
      pending_.erase(0, static_cast<std::size_t>(n));
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
      // Closed or broken: the tail is still kept.
      passing_on_ = false;
      pending_.clear();
    }
  }

  Fd from_;
  std::size_t keep_;
  std::string pending_;  // read, not yet passed on (at most PIPE_BUF)
  std::string tail_;
  bool cut_ = false;
  bool passing_on_ = true;
  int read_index_ = -1;
  int write_index_ = -1;
};

bool only_whitespace(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
  });
}

}  // namespace

CommandRunner::CommandRunner(std::vector<std::string> argv,
                             std::size_t max_output,
                             std::chrono::milliseconds kill_grace,
                             std::vector<std::string> secrets)
    : argv_(std::move(argv)), max_output_(max_output), kill_grace_(kill_grace) {
  if (argv_.empty()) throw InvalidInput("work: no command given");
  for (char** e = environ; e && *e; ++e) {
    std::string_view entry(*e);
    if (entry.starts_with("PGJOBQ_JOB_ID=") ||
        entry.starts_with("PGJOBQ_QUEUE=") ||
        entry.starts_with("PGJOBQ_ATTEMPT=")) {
      continue;
    }
    base_env_.emplace_back(entry);
  }
  // The command line is quoted in the job's error and in the log: with
  // the password of every URL in it and the worker's own passwords (a URL
  // or PGPASSWORD handed to the command) masked before it is cut short,
  // so that no part of one shows.
  std::string joined;
  for (const std::string& a : argv_) {
    if (!joined.empty()) joined += ' ';
    joined += redact(a);
  }
  description_ =
      "command \"" + escape_bytes(scrub_secrets(joined, secrets), 60) + "\"";
  secrets_ = std::move(secrets);
}

CommandOutcome CommandRunner::run(
    std::string_view input,
    const std::vector<std::pair<std::string, std::string>>& env,
    std::stop_token stop) {
  // Everything the child needs is built before it exists.
  std::vector<std::string> args = argv_;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings = base_env_;
  for (const auto& [key, value] : env) env_strings.push_back(key + "=" + value);
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  int in[2];
  int out[2];
  if (pipe2(in, O_CLOEXEC) != 0) {
    throw_start_failure("cannot create a pipe", errno);
  }
  Fd in_read(in[0]);
  Fd in_write(in[1]);
  if (pipe2(out, O_CLOEXEC) != 0) {
    throw_start_failure("cannot create a pipe", errno);
  }
  Fd out_read(out[0]);
  Fd out_write(out[1]);

  int err[2];
  if (pipe2(err, O_CLOEXEC) != 0) {
    throw_start_failure("cannot create a pipe", errno);
  }
  Fd err_write(err[1]);
  StderrTee err_tee(err[0], kStderrTail);

  int errors[2];
  if (pipe2(errors, O_CLOEXEC) != 0) {
    throw_start_failure("cannot create a pipe", errno);
  }
  Fd error_read(errors[0]);
  Fd error_write(errors[1]);

  pid_t pid = -1;
  {
    Launch launch{argv.data(),       envp.data(),     getpid(),
                  in_read.get(),     out_write.get(), err_write.get(),
                  error_write.get(), command_nofile_, restore_nofile_};
    // Starting and registering under one lock: kill_all() sees every
    // child, and none starts after it.
    std::lock_guard lock(mutex_);
    if (killed_) throw Error("the worker is exiting");
    pid = fork();
    if (pid < 0) throw_start_failure("cannot run " + description_, errno);
    if (pid == 0) run_keeper(launch);
    // Also here: kill(-pid) must find the group however soon it is sent.
    setpgid(pid, pid);
    running_.insert(pid);
  }
  error_write.reset();
  int start_error = 0;
  ssize_t got = 0;
  do {
    got = read(error_read.get(), &start_error, sizeof start_error);
  } while (got < 0 && errno == EINTR);
  if (got == sizeof start_error) {
    {
      std::lock_guard lock(mutex_);
      running_.erase(pid);
    }
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    throw_start_failure("cannot run " + description_, start_error);
  }
  in_read.reset();
  out_write.reset();
  err_write.reset();
  set_nonblocking(in_write.get());
  set_nonblocking(out_read.get());
  if (input.empty()) in_write.reset();

    // Readable when the child exits (Linux 5.3+); without it we look often.
#ifdef SYS_pidfd_open
  Fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
#else
  Fd pidfd;
#endif
  Fd wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  std::stop_callback on_stop(stop, [fd = wake.get()] {
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = write(fd, &one, sizeof one);
  });

  CommandOutcome outcome;
  std::size_t written = 0;
  bool exited = false;
  siginfo_t exit_info{};
  bool killed_hard = false;
  SteadyClock::time_point drain_deadline;
  SteadyClock::time_point kill_deadline;
  char buffer[65536];

  while (true) {
    auto now = SteadyClock::now();
    if (!exited) {
      // WNOWAIT: the child stays a zombie, so its pid, which is also its
      // process group's id, cannot be reused while we may still signal it.
      siginfo_t info{};
      if (waitid(P_PID, static_cast<id_t>(pid), &info,
                 WEXITED | WNOHANG | WNOWAIT) == 0 &&
          info.si_pid == pid) {
        exited = true;
        exit_info = info;
        drain_deadline = now + kDrainGrace;
        pidfd.reset();
      }
    }
    if (exited && !out_read.valid() && err_tee.caught_up()) break;
    if (exited && now >= drain_deadline) {
      outcome.output_left_open = out_read.valid();
      break;
    }
    if (outcome.stopped && !killed_hard && now >= kill_deadline) {
      kill(-pid, SIGKILL);
      killed_hard = true;
    }

    pollfd fds[5];
    nfds_t count = 0;
    int in_index = -1, out_index = -1, wake_index = -1;
    if (in_write.valid()) {
      in_index = static_cast<int>(count);
      fds[count++] = {in_write.get(), POLLOUT, 0};
    }
    if (out_read.valid()) {
      out_index = static_cast<int>(count);
      fds[count++] = {out_read.get(), POLLIN, 0};
    }
    if (wake.valid() && !outcome.stopped) {
      wake_index = static_cast<int>(count);
      fds[count++] = {wake.get(), POLLIN, 0};
    }
    if (pidfd.valid()) fds[count++] = {pidfd.get(), POLLIN, 0};
    err_tee.add_to(fds, count);

    milliseconds timeout = milliseconds::max();
    if (!exited && !pidfd.valid()) timeout = kExitPoll;
    if (exited) {
      timeout = std::min(timeout,
                         std::chrono::ceil<milliseconds>(drain_deadline - now));
    }
    if (outcome.stopped && !killed_hard) {
      timeout = std::min(timeout,
                         std::chrono::ceil<milliseconds>(kill_deadline - now));
    }
    int poll_timeout =
        timeout == milliseconds::max()
            ? -1
            : static_cast<int>(std::max<milliseconds::rep>(timeout.count(), 0));
    if (poll(fds, count, poll_timeout) < 0 && errno != EINTR) {
      kill(-pid, SIGKILL);
      killed_hard = true;
      outcome.stopped = true;
      continue;
    }

    err_tee.on_poll(fds);
    if (wake_index >= 0 && (fds[wake_index].revents & POLLIN)) {
      // The job's stop token: ask the whole group to stop, insist later.
      outcome.stopped = true;
      kill(-pid, SIGTERM);
      kill_deadline = SteadyClock::now() + kill_grace_;
      in_write.reset();
      continue;
    }
    if (in_index >= 0 && fds[in_index].revents != 0) {
      ssize_t n =
          write(in_write.get(), input.data() + written, input.size() - written);
      if (n > 0) {
        written += static_cast<std::size_t>(n);
        if (written == input.size()) in_write.reset();
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        // EPIPE: the command did not read all of its input; its choice.
        in_write.reset();
      }
    }
    if (out_index >= 0 && fds[out_index].revents != 0) {
      ssize_t n = read(out_read.get(), buffer, sizeof buffer);
      if (n == 0) {
        out_read.reset();
      } else if (n > 0) {
        outcome.output.append(buffer, static_cast<std::size_t>(n));
        if (outcome.output.size() > max_output_) {
          outcome.output_overflow = true;
          outcome.output.resize(max_output_);
          out_read.reset();
          in_write.reset();
          kill(-pid, SIGKILL);
          killed_hard = true;
        }
      } else if (errno != EAGAIN && errno != EINTR) {
        out_read.reset();
      }
    }
  }

  // Processes the command left behind in its group end with its job, as
  // they would with the worker: otherwise a failed attempt's processes run
  // on beside the job's next attempt (or the queue's next job), and past
  // the worker's exit, when no keeper is left to kill them. The zombie
  // leader still holds the group id.
  kill(-pid, SIGKILL);
  {
    std::lock_guard lock(mutex_);
    running_.erase(pid);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  outcome.stderr_tail = err_tee.tail();
  outcome.stderr_cut = err_tee.cut();
  if (exit_info.si_code == CLD_EXITED) {
    outcome.exited = true;
    outcome.exit_code = exit_info.si_status;
  } else {
    outcome.signal = exit_info.si_status;
  }
  return outcome;
}

HandlerResult CommandRunner::handle(const JobContext& job) {
  std::string input =
      job.data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::vector<std::pair<std::string, std::string>> env{
      {"PGJOBQ_JOB_ID", std::to_string(job.id.value)},
      {"PGJOBQ_QUEUE", std::string(job.queue)},
      {"PGJOBQ_ATTEMPT", std::to_string(job.attempt)}};
  CommandOutcome out;
  // A worker serving many queues can run out of descriptors or processes
  // while other queues' commands run: this job has not started, so it
  // waits for them to end rather than fail an attempt it never made.
  // (Before: "cannot create a pipe: Too many open files" was the job's
  // error; under --on-error retry, with a small --max-attempts, the job
  // ended failed without ever running:
  // CliWorkTest.CommandsWaitForDescriptorsRatherThanFailTheirJobs.)
  auto patience_ends = SteadyClock::now() + kStartPatience;
  milliseconds pause{10};
  bool warned = false;
  while (true) {
    try {
      out = run(input, env, job.stop);
      break;
    } catch (const NotStarted& e) {
      wait_for_exit_if_killed();
      if (job.stop.stop_requested() || SteadyClock::now() >= patience_ends) {
        throw Error(std::string(e.what()) +
                    (job.stop.stop_requested()
                         ? " (stopped while waiting to start it)"
                         : " (for " +
                               std::to_string(kStartPatience.count() / 1000) +
                               " s)"));
      }
      if (!warned) {
        log(LogLevel::warning,
            "queue \"" + std::string(job.queue) + "\": job " +
                std::to_string(job.id.value) + ": " + e.what() +
                "; waiting for other commands to end (the job has not "
                "started)");
        warned = true;
      }
      for (auto until = SteadyClock::now() + pause;
           SteadyClock::now() < until && !job.stop.stop_requested();) {
        std::this_thread::sleep_for(milliseconds(5));
      }
      pause = std::min(pause * 2, milliseconds(500));
    } catch (...) {
      wait_for_exit_if_killed();
      throw;
    }
  }
  // A command killed by kill_all() did not fail: the process is exiting,
  // and the job must stay as it is, to run again. Returning would let the
  // worker record the kill as the job's error first.
  wait_for_exit_if_killed();
  std::string job_label = "job " + std::to_string(job.id.value);
  if (out.output_left_open) {
    log(LogLevel::warning,
        job_label + ": " + description_ +
            " exited but processes it started still held its stdout; "
            "killed them, not reading further");
  }
  if (out.stopped) {
    throw Error(failure(
        " was stopped (job timeout or lost session): its process group was "
        "killed",
        out));
  }
  if (out.output_overflow) {
    throw Error(failure(" wrote more than " + std::to_string(max_output_) +
                            " bytes to stdout (the result limit): its "
                            "process group was killed",
                        out));
  }
  if (!out.exited) {
    throw Error(failure(" was killed by " + signal_name(out.signal), out));
  }
  if (out.exit_code == kRescheduleExitCode) return HandlerResult::reschedule();
  if (out.exit_code != 0) {
    throw Error(
        failure(" exited with status " + std::to_string(out.exit_code), out));
  }
  if (only_whitespace(out.output)) return HandlerResult::complete(nullptr);
  try {
    return HandlerResult::complete(
        parse_json(out.output, "its stdout", max_output_));
  } catch (const InvalidInput& e) {
    throw Error(failure(std::string(" exited 0, but ") + e.what() +
                            " (stdout began \"" + escape_bytes(out.output, 60) +
                            "\")",
                        out));
  }
}

std::string CommandRunner::failure(const std::string& what,
                                   const CommandOutcome& out) const {
  std::string message = description_ + what;
  std::string_view tail = out.stderr_tail;
  if (out.stderr_cut) {
    // A secret cut at the front would be masked nowhere: drop as many
    // bytes as the longest is long, so that what is left holds only whole
    // ones.
    std::size_t longest = 0;
    for (const std::string& secret : secrets_) {
      longest = std::max(longest, secret.size());
    }
    tail.remove_prefix(std::min(longest, tail.size()));
  }
  // One line (line breaks become spaces), passwords masked (the worker's
  // own wherever they are, any other in a URL or a password= the way
  // redact() finds them), bytes that are not printable ASCII escaped.
  std::string text =
      escape_bytes(redact(scrub_secrets(tail, secrets_)), std::string::npos);
  if (text.empty()) return message;
  return message + "; its stderr " + (out.stderr_cut ? "ended" : "was") +
         ": \"" + (out.stderr_cut ? "..." : "") + text + "\"";
}

void CommandRunner::wait_for_exit_if_killed() {
  {
    std::lock_guard lock(mutex_);
    if (!killed_) return;
  }
  while (true) std::this_thread::sleep_for(std::chrono::hours(1));
}

void CommandRunner::kill_all() noexcept {
  std::lock_guard lock(mutex_);
  killed_ = true;
  for (pid_t group : running_) kill(-group, SIGKILL);
}

bool is_executable(const std::string& program) {
  auto executable = [](const std::string& path) {
    struct stat st {};
    return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
           access(path.c_str(), X_OK) == 0;
  };
  if (program.empty()) return false;
  if (program.find('/') != std::string::npos) return executable(program);
  const char* path_env = std::getenv("PATH");
  std::string_view path = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
  while (true) {
    std::size_t colon = path.find(':');
    std::string dir(path.substr(0, colon));
    if (dir.empty()) dir = ".";
    if (executable(dir + "/" + program)) return true;
    if (colon == std::string_view::npos) return false;
    path.remove_prefix(colon + 1);
  }
}

}  // namespace pgjobq::cli
