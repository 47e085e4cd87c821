#pragma once

// main() of the test programs that run a Worker in a process of their own
// (tests/support/test_worker.cc, tests/chaos/main.cc): serve until SIGTERM
// or SIGINT asks the worker to stop.

#include <signal.h>

#include <exception>
#include <iostream>
#include <thread>

#include "pgjobq/worker.h"

namespace pgjobq::test {

// Runs `worker` until it stops; SIGTERM or SIGINT stops it the way a
// supervisor would. Returns the process's exit code: 0, or 1 (with the
// error on stderr, after `program`) if run() threw.
inline int serve_until_signal(Worker& worker, const char* program) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::thread([&worker, signals] {
    int signal = 0;
    sigwait(&signals, &signal);
    worker.stop();
  }).detach();
  try {
    worker.run();
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace pgjobq::test
