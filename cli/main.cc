// pgjobq: parse, run one command, map what it threw to DESIGN.md's exit
// codes with one line on stderr.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdlib>
#include <iostream>

#include "cli/commands.h"
#include "pgjobq/connection.h"
#include "pgjobq/errors.h"

namespace {

using namespace pgjobq::cli;

constexpr const char* kFooter =
    "Connections: --db, else DATABASE_URL, else libpq's PG* variables;\n"
    "--redis, else REDIS_URL, else redis://127.0.0.1:6379. Passwords are\n"
    "never printed.\n"
    "\n"
    "Exit codes: 0 success, 1 error (servers unreachable, bad data), 2 usage\n"
    "error, 3 queue full, 4 timeout, 5 job failed or cancelled, 6 no such "
    "job.\n"
    "\n"
    "Example:\n"
    "  export DATABASE_URL=postgresql://app@localhost/app\n"
    "  pgjobq migrate\n"
    "  pgjobq work mail -- ./send-mail.sh &\n"
    "  pgjobq enqueue mail '{\"to\": \"ada@example.com\"}' --wait\n"
    "\n"
    "Run pgjobq COMMAND --help for a command's options and examples.";

// The passwords that could reach a message: from the connection options,
// the environment and any argument (a URL given in the wrong place ends up
// in a usage error). Scrubbed here again, though the library redacts, since
// no path may ever print one.
std::vector<std::string> secrets(const Connections& c,
                                 const std::vector<std::string>& args) {
  std::vector<std::string> out;
  auto add = [&](std::string_view url) {
    for (std::string& s : secrets_in_url(url)) out.push_back(std::move(s));
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

// The first argument that is neither an option nor an option's value, if
// it names no command.
std::string unknown_command(const std::vector<std::string>& args,
                            const Commands& commands) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--db" || args[i] == "--redis") {
      ++i;
      continue;
    }
    if (args[i].starts_with("-")) continue;
    for (const Command& c : commands) {
      if (args[i] == c.app->get_name()) return "";
    }
    return args[i];
  }
  return "";
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
  std::vector<std::string> cli_args =
      split_command(args, command, had_separator);

  CLI::App app(
      "pgjobq: a job queue in PostgreSQL, woken over Redis. Jobs are JSON, "
      "enqueued in transactions, run one at a time per queue in commit "
      "order.",
      "pgjobq");
  app.fallthrough();
  app.require_subcommand(1);
  app.footer(kFooter);
  app.set_version_flag("--version", PGJOBQ_VERSION);
  Connections connections;
  app.add_option("--db", connections.db_url,
                 "PostgreSQL URL or key=value string (default: DATABASE_URL, "
                 "else libpq's PG* variables)");
  app.add_option("--redis", connections.redis_url,
                 "Redis URL: redis://[:password@]host[:port][/db] or "
                 "unix:///path/redis.sock (default: REDIS_URL, else "
                 "redis://127.0.0.1:6379)");
  Commands commands;
  add_job_commands(app, connections, commands);
  add_work_command(app, connections, command, commands);
  add_admin_commands(app, connections, commands);

  std::string command_name;
  try {
    std::reverse(cli_args.begin(), cli_args.end());  // CLI11 wants it so
    app.parse(cli_args);
    for (const Command& c : commands) {
      if (c.app->parsed()) command_name = c.app->get_name();
    }
    if (had_separator && command_name != "work") {
      throw CLI::ParseError("only `pgjobq work` takes -- CMD", 2);
    }
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    for (const Command& c : commands) {
      if (c.app->parsed()) command_name = c.app->get_name();
    }
    if (command_name.empty()) {
      // CLI11 calls an unknown command a missing one.
      if (std::string unknown = unknown_command(args, commands);
          !unknown.empty()) {
        std::cerr << "pgjobq: usage error: unknown command \""
                  << one_line(unknown, secrets(connections, args))
                  << "\" (see pgjobq --help)" << std::endl;
        return kExitUsage;
      }
    }
    std::string see = command_name.empty()
                          ? "pgjobq --help"
                          : "pgjobq " + command_name + " --help";
    std::cerr << "pgjobq: usage error: "
              << one_line(e.what(), secrets(connections, args)) << " (see "
              << see << ")" << std::endl;
    return kExitUsage;
  }

  for (const Command& c : commands) {
    if (!c.app->parsed()) continue;
    try {
      return c.run();
    } catch (const std::exception& e) {
      int code = exit_code_for(e);
      std::cerr << "pgjobq: " << (code == kExitUsage ? "usage error" : "error")
                << ": "
                << one_line(e.what() + hint(e), secrets(connections, args))
                << std::endl;
      return code;
    }
  }
  return kExitUsage;  // require_subcommand(1) makes this unreachable
}
