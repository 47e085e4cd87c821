#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "chaos/chaos.h"

namespace pgjobq::chaos {
namespace {

int open_or_throw(const std::string& path, int flags) {
  int fd = open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw std::runtime_error("cannot open " + path + ": " +
                             std::strerror(errno));
  }
  return fd;
}

void write_all(int fd, const std::string& text) {
  // One write(): with O_APPEND the line lands whole, after every line
  // written before it.
  ssize_t n = write(fd, text.data(), text.size());
  if (n != static_cast<ssize_t>(text.size())) {
    throw std::runtime_error(std::string("journal write failed: ") +
                             std::strerror(errno));
  }
}

}  // namespace

std::string queue_name(int i) { return "chaos-" + std::to_string(i); }

std::int64_t wall_ns() {
  // The wall clock, to line journals up with scripts/chaos.sh's fault log.
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

RunJournal::RunJournal(const std::string& dir, std::string_view queue)
    : base_(dir + "/" + std::string(queue)) {
  log_fd_ = open_or_throw(base_ + ".log", O_WRONLY | O_CREAT | O_APPEND);
  lock_fd_ = open_or_throw(base_ + ".lock", O_RDWR | O_CREAT);
}

RunJournal::~RunJournal() {
  close(log_fd_);
  close(lock_fd_);
}

void RunJournal::append(char kind, std::int64_t job, int attempt,
                        const std::string& extra) {
  std::string line = std::string(1, kind) + " " + std::to_string(job) + " " +
                     std::to_string(attempt) + " " + std::to_string(getpid()) +
                     " " + std::to_string(getppid()) + " " +
                     std::to_string(wall_ns()) + extra + "\n";
  write_all(log_fd_, line);
}

namespace {

// POSIX record locks (not flock): F_GETLK names the process holding one.
bool try_lock(int fd, struct flock* holder) {
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  if (fcntl(fd, F_SETLK, &lock) == 0) return true;
  if (errno != EAGAIN && errno != EACCES) {
    throw std::runtime_error(std::string("fcntl: ") + std::strerror(errno));
  }
  *holder = {};
  holder->l_type = F_WRLCK;
  holder->l_whence = SEEK_SET;
  if (fcntl(fd, F_GETLK, holder) != 0) holder->l_type = F_UNLCK;
  return false;
}

}  // namespace

void RunJournal::start(std::int64_t job, int attempt) {
  // Say who we are before taking the lock, so that a run that finds us
  // holding it can name us even if we die at once.
  std::string me = std::to_string(job) + " " + std::to_string(attempt);
  { std::ofstream(intent_path(getpid())) << me << "\n"; }
  struct flock holder {};
  while (!try_lock(lock_fd_, &holder)) {
    if (holder.l_type == F_UNLCK) continue;  // let go meanwhile: try again
    // Another run of this queue is alive: say who, then wait for it.
    std::ifstream intent(intent_path(holder.l_pid));
    std::string job_attempt;
    std::getline(intent, job_attempt);
    if (job_attempt.empty()) job_attempt = "0 0";
    append('O', job, attempt,
           " " + job_attempt + " " + std::to_string(holder.l_pid));
    struct flock lock {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    while (fcntl(lock_fd_, F_SETLKW, &lock) != 0 && errno == EINTR) {
    }
    append('W', job, attempt,
           " " + job_attempt + " " + std::to_string(holder.l_pid));
    break;
  }
  append('S', job, attempt);
}

std::string RunJournal::intent_path(pid_t pid) const {
  return base_ + ".run-" + std::to_string(pid);
}

void RunJournal::unlock() {
  struct flock lock {};
  lock.l_type = F_UNLCK;
  lock.l_whence = SEEK_SET;
  fcntl(lock_fd_, F_SETLK, &lock);
  unlink(intent_path(getpid()).c_str());
}

void RunJournal::finish(std::int64_t job, int attempt) {
  append('F', job, attempt);
  unlock();
}

void RunJournal::error(std::int64_t job, int attempt) {
  append('E', job, attempt);
  unlock();
}

std::vector<JournalEvent> read_journal(const std::string& dir,
                                       std::string_view queue) {
  std::vector<JournalEvent> events;
  std::ifstream in(dir + "/" + std::string(queue) + ".log");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    JournalEvent e;
    fields >> e.kind >> e.job >> e.attempt >> e.pid >> e.ppid >> e.ns;
    if (e.kind == 'O' || e.kind == 'W') {
      fields >> e.holder_job >> e.holder_attempt >> e.holder_pid;
    }
    if (!fields) throw std::runtime_error("bad journal line: " + line);
    events.push_back(e);
  }
  return events;
}

nlohmann::json handle_job(RunJournal& journal, std::int64_t job, int attempt,
                          const nlohmann::json& data) {
  journal.start(job, attempt);
  std::int64_t sleep_us = data.value("sleep_us", std::int64_t{0});
  if (sleep_us > 0) {
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
  }
  if (data.value("fail_first", false) && attempt == 1) {
    journal.error(job, attempt);
    throw std::runtime_error("failing the first attempt on purpose");
  }
  journal.finish(job, attempt);
  return {{"job", job},
          {"attempt", attempt},
          {"pid", getpid()},
          {"n", data.value("n", std::int64_t{-1})}};
}

}  // namespace pgjobq::chaos
