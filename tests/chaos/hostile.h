#pragma once

// What the hostile-input and security tests share: the command-line
// fixture of tests/cli, a fingerprint of everything pgjobq stores, a
// PostgreSQL server of a test's own, for what the shared one must not be
// changed for (password authentication, TLS), and a connection pooler
// (pgbouncer) of a test's own in front of the shared one.

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "cli/cli_fixture.h"
#include "support/services.h"

namespace pgjobq::test {

// A PostgreSQL port nothing listens on, and a Redis one.
extern const std::string kDeadPostgres;
extern const std::string kDeadRedis;

class HostileTest : public CliTest {
 protected:
  // Every row of pgjobq's tables, hashed: equal fingerprints mean nothing
  // stored changed.
  std::string stored() const;
  // A few jobs in several states, so that there is something to protect.
  void seed();
};

// A PostgreSQL server of the test's own, on loopback and a unix socket in
// a temporary directory: local connections trusted (the test's admin), TCP
// ones by SCRAM password, TLS on if asked (with a certificate made for it).
// Stopped and removed on destruction.
class PrivatePostgres {
 public:
  explicit PrivatePostgres(bool tls = false);
  // A hot standby of `primary` (pg_basebackup of it, streaming from it),
  // with a directory and port of its own.
  struct StandbyOf {
    const PrivatePostgres& primary;
  };
  explicit PrivatePostgres(StandbyOf of);
  ~PrivatePostgres();
  PrivatePostgres(const PrivatePostgres&) = delete;
  PrivatePostgres& operator=(const PrivatePostgres&) = delete;

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  // The CA certificate that signed the server's (when tls).
  std::string ca_file() const { return dir_ + "/ca.crt"; }
  // Runs SQL as the superuser over the unix socket, in `database`.
  std::string admin(const std::string& sql,
                    const std::string& database = "postgres") const;
  // postgresql://user:password@127.0.0.1:port/database[?extra]
  std::string url(const std::string& user, const std::string& password,
                  const std::string& database,
                  const std::string& extra = {}) const;
  // The server's log so far.
  std::string log() const;
  // A fast restart (pg_ctl -m fast restart): every session ends.
  void restart() const;
  // SIGSTOP and SIGCONT to the postmaster: a hung server, accepting TCP
  // connections (the kernel's backlog) and answering none.
  void pause() const;
  void resume() const;

 private:
  void make_dir();
  void start();  // on a free port
  void run(const std::vector<std::string>& argv, bool as_postgres) const;
  std::string dir_;
  int port_ = 0;
};

// A pgbouncer of the test's own in front of the shared test PostgreSQL
// (every database, as the connecting user, trusted), on a free loopback
// port and a unix socket in a temporary directory, with its own ini and
// auth file. Stopped (SIGTERM to its pid, then SIGKILL) and removed on
// destruction. Run as the postgres user when we are root: pgbouncer
// refuses to run as root.
class Pgbouncer {
 public:
  // The binary: $PGJOBQ_PGBOUNCER, else /usr/sbin/pgbouncer (Debian's).
  static std::string binary();
  // Whether binary() is there to run; tests skip without it.
  static bool installed();

  // Starts one with `pool_mode` ("session" or "transaction") and at most
  // `pool_size` server connections per database and user. Throws
  // std::runtime_error if it does not start.
  Pgbouncer(const std::string& pool_mode, int pool_size);
  ~Pgbouncer();
  Pgbouncer(const Pgbouncer&) = delete;
  Pgbouncer& operator=(const Pgbouncer&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  // postgresql://postgres@127.0.0.1:port/database, through the pooler.
  std::string url(const std::string& database) const;
  // The pooler's log so far.
  std::string log() const;

 private:
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace pgjobq::test
