#pragma once

#include <optional>
#include <string>

namespace pgjobq::test {

// Silently drops every packet of one loopback TCP connection, both ways,
// the way a failed switch or a firewall would (no FIN, no RST), with an
// nftables table of its own; the destructor deletes the table. Needs root
// and nft (the nftables package; scripts/install-deps.sh installs it).
class NetworkCut {
 public:
  // Why cuts cannot be made here, or nullopt if they can.
  static std::optional<std::string> unavailable();

  // Cuts the loopback connection between ports `client` and `server`.
  // Throws std::runtime_error if nft fails.
  NetworkCut(int client, int server);
  ~NetworkCut();
  NetworkCut(const NetworkCut&) = delete;
  NetworkCut& operator=(const NetworkCut&) = delete;

 private:
  std::string table_;
};

}  // namespace pgjobq::test
