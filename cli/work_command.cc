// `pgjobq work QUEUE... -- CMD [ARG...]`: a Worker whose handler runs a
// command per job, and the signal handling a supervised process needs.

#include "cli/work_command.h"

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <optional>
#include <thread>

#include "cli/command_runner.h"
#include "pgjobq/enqueue.h"
#include "pgjobq/log.h"
#include "pgjobq/worker.h"

namespace pgjobq::cli {
namespace {

using std::chrono::milliseconds;

// Whether SIGHUP stops the worker gracefully: yes, unless the worker was
// started to ignore it (`nohup`), which it keeps doing. Read once, before
// it is blocked: a blocked signal is queued even when ignored, and sigwait
// would take it.
bool hangup_stops() {
  static const bool stops = [] {
    struct sigaction old {};
    return sigaction(SIGHUP, nullptr, &old) == 0 && old.sa_handler != SIG_IGN;
  }();
  return stops;
}

// SIGTERM and SIGINT (and SIGHUP: a closed terminal) are blocked in every
// thread and taken by one thread with sigwait, where it is safe to call
// Worker::stop(). SIGUSR1 (from ourselves, with `done_` set) ends that
// thread.
sigset_t handled_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  if (hangup_stops()) sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR1);
  return set;
}

std::string signal_label(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

class SignalThread {
 public:
  // Call before any other thread exists: threads inherit the mask.
  static void block() {
    sigset_t set = handled_signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
  }

  SignalThread(Worker& worker, CommandRunner& runner)
      : worker_(worker), runner_(runner), thread_([this] { loop(); }) {}
  ~SignalThread() {
    done_ = true;
    pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
  }
  SignalThread(const SignalThread&) = delete;
  SignalThread& operator=(const SignalThread&) = delete;

 private:
  void loop() {
    sigset_t set = handled_signals();
    int received = 0;
    while (true) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (sig == SIGUSR1) {
        if (done_) return;
        continue;
      }
      // A closed terminal can send SIGHUP twice (the shell, then the
      // kernel to the foreground group): only SIGTERM or SIGINT after the
      // first signal stops at once.
      if (received > 0 && sig == SIGHUP) continue;
      if (++received == 1) {
        log(LogLevel::info,
            signal_label(sig) +
                ": finishing the running job(s), then exiting; send " +
                (sig == SIGHUP ? std::string("SIGTERM") : "it again") +
                " to stop at once");
        worker_.stop();
        continue;
      }
      log(LogLevel::warning,
          signal_label(sig) +
              " again: killing the running command(s) and exiting now; "
              "their jobs run again when a worker next serves the queue");
      runner_.kill_all();
      std::_Exit(128 + sig);
    }
  }

  Worker& worker_;
  CommandRunner& runner_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// A duration option that must be more than 0, in whole milliseconds
// (rounded up).
milliseconds positive_duration(const std::string& text, const char* option) {
  auto d = std::chrono::ceil<milliseconds>(parse_duration(text, option));
  if (d <= milliseconds(0)) {
    throw usage_error(std::string(option) + ": must be more than 0");
  }
  return d;
}

// Logs how each command ended: an operator reading the worker's log sees
// what ran, how long it took, and its exit (errors the library logs). The
// outcome commits after this line, maybe with the next jobs' outcomes;
// the library logs outcomes a lost session took with it.
class LoggingHandler {
 public:
  explicit LoggingHandler(CommandRunner& runner) : runner_(runner) {}
  HandlerResult operator()(const JobContext& job) const {
    auto started = std::chrono::steady_clock::now();
    HandlerResult result = runner_.handle(job);
    auto ms = std::chrono::duration_cast<milliseconds>(
                  std::chrono::steady_clock::now() - started)
                  .count();
    log(LogLevel::info, "queue \"" + std::string(job.queue) + "\": job " +
                            std::to_string(job.id.value) + " (attempt " +
                            std::to_string(job.attempt) + "): command exited " +
                            (result.rescheduled() ? "75 (reschedule)" : "0") +
                            " after " + std::to_string(ms) + " ms");
    return result;
  }

 private:
  CommandRunner& runner_;
};

// A worker holds a descriptor per queue (its PostgreSQL session), a few
// for Redis, and each running command about five more (pipes, a pidfd):
// 250 busy queues need some 1,500, past the soft limit of 1,024
// that most systems start processes with (systemd, login shells), and
// commands then failed to start ("cannot create a pipe: Too many open
// files"). So the soft limit is raised to the hard one, as systemd advises
// for programs that need many descriptors and use no select(); the
// commands get the limit the worker was started with. Returns that limit.
// Warns if even the hard limit is short of what `queues` may need.
std::optional<rlimit> raise_open_file_limit(std::size_t queues) {
  rlimit original{};
  if (getrlimit(RLIMIT_NOFILE, &original) != 0) return std::nullopt;
  rlimit raised = original;
  if (raised.rlim_cur != raised.rlim_max) {
    raised.rlim_cur = raised.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) != 0) raised = original;
  }
  rlim_t wanted = 32 + 6 * static_cast<rlim_t>(queues);
  if (raised.rlim_cur != RLIM_INFINITY && raised.rlim_cur < wanted) {
    log(LogLevel::warning,
        "work: " + std::to_string(queues) + " queue(s) may need up to " +
            std::to_string(wanted) +
            " open files (one per queue, and "
            "about five per running command), but the limit (ulimit -n) "
            "is " +
            std::to_string(raised.rlim_cur) +
            "; commands will wait for descriptors to free up");
  }
  return original;
}

// As PID 1 (the entrypoint of a container without an init), the worker is
// the parent of every orphan in its PID namespace, and the processes a
// command leaves behind (killed as it exits) are orphans: unreaped, each
// stayed a zombie, until the container's pids ran out. So PID 1 stays a
// small init: it forks the worker, passes on to it the signals that stop
// it, reaps every process that ends, and exits as the worker did. Returns
// that exit code in PID 1, and nullopt in the worker (or when not PID 1).
// Call before any thread exists, with SIGCHLD not ignored.
std::optional<int> serve_as_init() {
  if (getpid() != 1) return std::nullopt;
  sigset_t stops;
  sigemptyset(&stops);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&stops, sig);
  sigset_t taken = stops;
  sigaddset(&taken, SIGCHLD);
  sigset_t old;
  pthread_sigmask(SIG_BLOCK, &taken, &old);
  pid_t worker = fork();
  if (worker <= 0) {
    // The worker; or no fork to be had, and PID 1 serves after all. In a
    // process group of its own, a signal to PID 1's group (a terminal's
    // Ctrl-C) reaches it once, passed on, not twice, which would be the
    // second signal that stops it at once.
    if (worker == 0) setpgid(0, 0);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return std::nullopt;
  }
  setpgid(worker, worker);
  while (true) {
    int sig = 0;
    if (sigwait(&taken, &sig) != 0) continue;
    if (sigismember(&stops, sig)) {
      kill(worker, sig);
      continue;
    }
    // One SIGCHLD may stand for several ended children: reap them all.
    int status = 0;
    for (pid_t ended; (ended = waitpid(-1, &status, WNOHANG)) > 0;) {
      if (ended != worker) continue;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
  }
}

}  // namespace

int work_command(const Connections& c, const WorkArgs& a,
                 const std::vector<std::string>& command) {
  if (command.empty()) {
    throw usage_error(
        "work: give the command to run after --, such as: pgjobq work mail "
        "-- ./send-mail.sh");
  }
  for (std::size_t i = 0; i < a.queues.size(); ++i) {
    validate_queue_name(a.queues[i]);
    if (std::find(a.queues.begin(), a.queues.begin() + static_cast<long>(i),
                  a.queues[i]) != a.queues.begin() + static_cast<long>(i)) {
      throw usage_error("work: queue \"" + a.queues[i] + "\" given twice");
    }
  }
  WorkerOptions o;
  o.db_url = c.db_url;
  o.redis_url = c.redis_url;
  o.queues = a.queues;
  o.poll_interval = positive_duration(a.poll_interval, "--poll-interval");
  o.on_error = a.on_error == "retry" ? ErrorPolicy::retry : ErrorPolicy::crash;
  o.max_attempts = a.max_attempts;
  if (!a.job_timeout.empty()) {
    o.job_timeout = positive_duration(a.job_timeout, "--job-timeout");
  }
  o.retry_delay = std::chrono::ceil<milliseconds>(
      parse_duration(a.retry_delay, "--retry-delay"));
  o.max_retry_delay = std::max(o.max_retry_delay, o.retry_delay);
  o.dead_session_timeout =
      positive_duration(a.dead_session_timeout, "--dead-session-timeout");
  // The Worker refuses it too, but as bad input (exit 1): here it is a
  // usage error.
  if (o.dead_session_timeout < WorkerOptions::kShortestDeadSession ||
      o.dead_session_timeout > WorkerOptions::kLongestDeadSession) {
    throw usage_error("--dead-session-timeout: must be from 1s to 18h");
  }
  // A command costs a process start: batching saves little, and one job
  // at a time means each result is committed as soon as its command exits.
  o.max_batch = 1;
  if (!is_executable(command.front())) {
    throw usage_error("work: command \"" + escape_bytes(command.front(), 80) +
                      "\" not found or not executable");
  }

  // An ignored SIGCHLD survives exec (a parent that ignores it passes it
  // on), and with it the kernel reaps our children itself: the runner
  // never saw its command exit (nor PID 1 its worker), and spun with the
  // job running forever.
  signal(SIGCHLD, SIG_DFL);
  if (std::optional<int> code = serve_as_init()) return *code;
  // (main() gave closed standard descriptors /dev/null.) Writing a job to a
  // command that exits without reading it must not kill the worker.
  signal(SIGPIPE, SIG_IGN);
  SignalThread::block();
  CommandRunner runner(command, kDefaultMaxPayloadBytes,
                       std::chrono::milliseconds(2000), connection_secrets(c));
  if (std::optional<rlimit> limit = raise_open_file_limit(a.queues.size())) {
    runner.set_command_open_file_limit(*limit);
  }
  Worker worker(std::move(o), LoggingHandler(runner));
  SignalThread signals(worker, runner);
  try {
    worker.run();
  } catch (const HandlerFailed& e) {
    // One line for the failure and the exit (DESIGN.md: every error is one
    // clear line); the job holds its whole error.
    throw ExitError(kExitError,
                    std::string(e.what()) +
                        "; stopping (--on-error crash): the error is "
                        "recorded on the job, and a restarted worker runs "
                        "it again (or marks it failed after --max-attempts "
                        "attempts)");
  }
  return kExitOk;
}

std::vector<std::string> split_command(const std::vector<std::string>& args,
                                       std::vector<std::string>& command,
                                       bool& had_separator) {
  had_separator = false;
  command.clear();
  // The first argument that is neither an option nor an option's value
  // names the command.
  bool is_work = false;
  std::size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") break;
    if (arg == "--db" || arg == "--redis") {
      ++i;
      continue;
    }
    if (arg.starts_with("-")) continue;
    is_work = arg == "work";
    break;
  }
  if (!is_work) return args;
  auto separator = std::find(args.begin() + static_cast<std::ptrdiff_t>(i),
                             args.end(), std::string("--"));
  if (separator == args.end()) return args;
  had_separator = true;
  command.assign(separator + 1, args.end());
  return std::vector<std::string>(args.begin(), separator);
}

}  // namespace pgjobq::cli
