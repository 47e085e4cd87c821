#include "support/cancel_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace pgjobq::test {
namespace {

// The protocol's CancelRequest code (1234 << 16 | 5678), after the
// message's length, both as big-endian 32-bit integers.
constexpr std::uint32_t kCancelRequestCode = 80877102;

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

CancelSwallowingProxy::CancelSwallowingProxy(int server_port)
    : server_port_(server_port) {
  if (pipe2(stop_, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
  listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = loopback(0);
  socklen_t size = sizeof a;
  if (listener_ < 0 ||
      bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      listen(listener_, 64) != 0 ||
      getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &size) != 0) {
    throw std::runtime_error(std::string("proxy: ") + std::strerror(errno));
  }
  port_ = ntohs(a.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

CancelSwallowingProxy::~CancelSwallowingProxy() {
  char c = 0;
  (void)!write(stop_[1], &c, 1);
  acceptor_.join();
  for (std::thread& t : sessions_) t.join();
  for (int fd : held_) close(fd);
  close(listener_);
  close(stop_[0]);
  close(stop_[1]);
}

bool CancelSwallowingProxy::readable(int fd) const {
  pollfd fds[] = {{fd, POLLIN, 0}, {stop_[0], POLLIN, 0}};
  while (poll(fds, 2, -1) < 0) {
  }
  return fds[1].revents == 0;
}

void CancelSwallowingProxy::accept_loop() {
  while (readable(listener_)) {
    int client = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    std::lock_guard lock(mutex_);
    sessions_.emplace_back([this, client] { serve(client); });
  }
}

void CancelSwallowingProxy::serve(int client) {
  // The first message's length and code: a cancel request, or the start
  // of a session (an SSLRequest or a StartupMessage).
  std::array<char, 8> head{};
  std::size_t got = 0;
  while (got < head.size()) {
    if (!readable(client)) break;
    ssize_t n = recv(client, head.data() + got, head.size() - got, 0);
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  std::uint32_t code = 0;
  std::memcpy(&code, head.data() + 4, 4);
  if (got == head.size() && ntohl(code) == kCancelRequestCode) {
    ++cancels_;
    std::lock_guard lock(mutex_);
    held_.push_back(client);
    return;
  }
  int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = loopback(server_port_);
  if (got == head.size() && server >= 0 &&
      connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      write_all(server, head.data(), head.size())) {
    // Relay both ways until either side closes or the proxy stops.
    std::array<char, 65536> buffer{};
    while (true) {
      pollfd fds[] = {
          {client, POLLIN, 0}, {server, POLLIN, 0}, {stop_[0], POLLIN, 0}};
      if (poll(fds, 3, -1) < 0) continue;
      if (fds[2].revents != 0) break;
      int from = fds[0].revents != 0 ? client : server;
      int to = from == client ? server : client;
      ssize_t n = recv(from, buffer.data(), buffer.size(), 0);
      if (n <= 0 || !write_all(to, buffer.data(), static_cast<std::size_t>(n)))
        break;
    }
  }
  if (server >= 0) close(server);
  close(client);
}

}  // namespace pgjobq::test
