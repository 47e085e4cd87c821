#pragma once

// A stand-in for a server that has stopped answering.

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>

#include "support/services.h"

namespace pgjobq::test {

// A unix socket that takes connections and never answers: a Redis that is
// stopped (SIGSTOP), hung or hopelessly overloaded.
class SilentSocket {
 public:
  SilentSocket() : path_("/tmp/pgjobq-silent-" + unique_name("s")) {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    path_.copy(address.sun_path, sizeof address.sun_path - 1);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address),
              0);
    EXPECT_EQ(listen(fd_, 64), 0);
  }
  ~SilentSocket() {
    close(fd_);
    unlink(path_.c_str());
  }
  SilentSocket(const SilentSocket&) = delete;
  SilentSocket& operator=(const SilentSocket&) = delete;
  std::string url() const { return "unix://" + path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace pgjobq::test
