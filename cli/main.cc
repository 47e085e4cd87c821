// pgjobq: parse, run one command, map what it threw to DESIGN.md's exit
// codes with one line on stderr.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <iostream>

#include "cli/parser.h"
#include "cli/work_command.h"
#include "pgjobq/connection.h"
#include "pgjobq/errors.h"

namespace {

using namespace pgjobq::cli;

// The passwords that could reach a message: from the connection options,
// the environment and any argument (a URL given in the wrong place ends up
// in a usage error). Scrubbed here again, though the library redacts, since
// no path may ever print one.
std::vector<std::string> secrets(const Connections& c,
                                 const std::vector<std::string>& args) {
  std::vector<std::string> out = connection_secrets(c);
  for (const std::string& arg : args) {
    for (std::string& s : pgjobq::url_passwords(arg))
      out.push_back(std::move(s));
  }
  return out;
}

// Standard streams started closed (`pgjobq enqueue q >&-`) get /dev/null,
// so that a connection opened later cannot take their descriptor and have
// output written into it. Returns whether stdout was closed: output meant
// for it is then lost, which fails a command that prints (not one that
// prints nothing, such as `cancel` or `work`).
bool guard_standard_streams() {
  bool stdout_closed = false;
  for (int fd : {0, 1, 2}) {
    if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    int null = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (null >= 0 && null != fd) {
      dup2(null, fd);
      close(null);
    }
    if (fd == 1) stdout_closed = true;
  }
  return stdout_closed;
}

}  // namespace

int main(int argc, char** argv) {
  // A stdout whose reader is gone (`pgjobq enqueue q | head -c0`) fails the
  // write, reported below with exit 1, rather than killing us silently
  // (141) as the job's id is printed, before its worker is woken. Commands
  // under `pgjobq work` get the default back (command_runner.cc).
  std::signal(SIGPIPE, SIG_IGN);
  bool stdout_closed = guard_standard_streams();
  std::vector<std::string> args(argv + 1, argv + argc);
  std::vector<std::string> command;
  bool had_separator = false;
  Parsed parsed = parse_command_line(
      split_command(args, command, had_separator), command, had_separator);
  if (parsed.finished) {
    if (!parsed.usage_error.empty()) {
      std::cerr << "pgjobq: usage error: "
                << one_line(parsed.usage_error,
                            secrets(*parsed.connections, args))
                << std::endl;
    }
    return parsed.exit_code;
  }
  try {
    int code = parsed.run();
    // What was printed must have arrived: a full disk or a closed stdout
    // would otherwise lose an enqueued job's id behind exit 0.
    std::cout.flush();
    if (std::cout.fail() || (stdout_closed && lines_printed() > 0)) {
      std::cerr << "pgjobq: error: could not write to standard output"
                << (code == kExitOk ? " (the command itself succeeded)" : "")
                << std::endl;
      return code == kExitOk ? kExitError : code;
    }
    return code;
  } catch (const std::exception& e) {
    int code = exit_code_for(e);
    std::cerr << "pgjobq: " << (code == kExitUsage ? "usage error" : "error")
              << ": " << one_line(e.what(), secrets(*parsed.connections, args))
              << std::endl;
    return code;
  }
}
