#pragma once

// A stand-in for a PostgreSQL that takes cancel requests and never
// answers them.

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

namespace pgjobq::test {

// A TCP proxy on 127.0.0.1 in front of the test PostgreSQL. Sessions pass
// through; a cancel request is taken and never answered, its connection
// kept open and silent, as by a server that an overload or a half-broken
// network leaves unable to answer a new connection. libpq's PQcancel waits
// for the server to close that connection, with no timeout of its own, so
// whoever calls it hangs.
class CancelSwallowingProxy {
 public:
  explicit CancelSwallowingProxy(int server_port);  // starts listening
  ~CancelSwallowingProxy();
  CancelSwallowingProxy(const CancelSwallowingProxy&) = delete;
  CancelSwallowingProxy& operator=(const CancelSwallowingProxy&) = delete;

  int port() const { return port_; }
  // How many cancel requests it has taken.
  int cancels() const { return cancels_.load(); }

 private:
  void accept_loop();
  void serve(int client);
  // Waits for `fd` to be readable or the proxy to stop; returns false if it
  // stopped.
  bool readable(int fd) const;

  int server_port_;
  int listener_ = -1;
  int port_ = 0;
  int stop_[2] = {-1, -1};  // a pipe: written to stop every thread
  std::atomic<int> cancels_{0};
  std::mutex mutex_;
  std::vector<std::thread> sessions_;
  std::vector<int> held_;  // cancel connections, kept open until the end
  std::thread acceptor_;
};

}  // namespace pgjobq::test
