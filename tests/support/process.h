#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace pgjobq::test {

// A child process of the test, killed (SIGKILL) and reaped on destruction
// if still running. Its stdout and stderr go to the test's.
class Process {
 public:
  explicit Process(std::vector<std::string> argv);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // Whether it is still running (reaps it if it has exited).
  bool running();
  void signal(int signo);
  // SIGKILL, then reap.
  void kill();
  // Waits up to `timeout_ms` for it to exit. Returns its exit code, 128 +
  // signal if a signal ended it, or -1 if it is still running.
  int wait(int timeout_ms);

 private:
  pid_t pid_ = -1;
  int status_ = 0;
  bool reaped_ = false;
};

}  // namespace pgjobq::test
