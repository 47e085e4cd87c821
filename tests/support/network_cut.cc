#include "support/network_cut.h"

#include <unistd.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "support/process.h"

namespace pgjobq::test {
namespace {

constexpr const char* kNft = "/usr/sbin/nft";

// Runs `nft COMMAND`; returns its exit code.
int nft(const std::string& command) {
  Process p({kNft, command});
  return p.wait(10000);
}

std::string table_name() {
  static std::atomic<int> counter{0};
  return "pgjobq_cut_" + std::to_string(getpid()) + "_" +
         std::to_string(counter++);
}

}  // namespace

std::optional<std::string> NetworkCut::unavailable() {
  if (access(kNft, X_OK) != 0) {
    return std::string(kNft) + " is missing (Debian package nftables)";
  }
  // The very table, chain and rules a cut makes, for a connection that
  // cannot exist (port 0).
  try {
    NetworkCut probe(0, 0);
  } catch (const std::exception& e) {
    return std::string(e.what()) + " (cuts need root and nf_tables)";
  }
  return std::nullopt;
}

NetworkCut::NetworkCut(int client, int server) : table_(table_name()) {
  std::string c = std::to_string(client);
  std::string s = std::to_string(server);
  // Loopback packets pass the output hook once each way, so dropping there
  // the packets of both directions cuts the connection, and only it.
  std::vector<std::string> commands = {
      "add table inet " + table_,
      "add chain inet " + table_ +
          " out { type filter hook output priority 0 ; }",
      "add rule inet " + table_ + " out tcp sport " + c + " tcp dport " + s +
          " drop",
      "add rule inet " + table_ + " out tcp sport " + s + " tcp dport " + c +
          " drop"};
  for (const std::string& command : commands) {
    if (nft(command) != 0) {
      nft("delete table inet " + table_);
      throw std::runtime_error("nft " + command + " failed");
    }
  }
}

NetworkCut::~NetworkCut() { nft("delete table inet " + table_); }

}  // namespace pgjobq::test
