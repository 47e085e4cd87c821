// pgjobq: parse, run one command, map what it threw to DESIGN.md's exit
// codes with one line on stderr.

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
  std::vector<std::string> out;
  auto add = [&](std::string_view url) {
    for (std::string& s : pgjobq::url_passwords(url))
      out.push_back(std::move(s));
  };
  add(c.db_url);
  add(pgjobq::redis_url_or_default(c.redis_url));
  for (const char* name : {"DATABASE_URL", "REDIS_URL"}) {
    if (const char* env = std::getenv(name)) add(env);
  }
  if (const char* env = std::getenv("PGPASSWORD"); env && *env) {
    out.emplace_back(env);
  }
  for (const std::string& arg : args) add(arg);
  return out;
}

std::string hint(const std::exception& error) {
  auto* e = dynamic_cast<const pgjobq::DatabaseError*>(&error);
  if (e && std::string_view(e->what()).find("pgjobq migrate") ==
               std::string_view::npos) {
    // Undefined table, schema or type: pgjobq's schema is missing.
    if (e->sqlstate() == "42P01" || e->sqlstate() == "3F000" ||
        e->sqlstate() == "42704") {
      return " (has `pgjobq migrate` been run on this database?)";
    }
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
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
    return parsed.run();
  } catch (const std::exception& e) {
    int code = exit_code_for(e);
    std::cerr << "pgjobq: " << (code == kExitUsage ? "usage error" : "error")
              << ": "
              << one_line(e.what() + hint(e),
                          secrets(*parsed.connections, args))
              << std::endl;
    return code;
  }
}
