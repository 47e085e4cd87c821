#include "chaos/hostile.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "pgjobq/enqueue.h"
#include "pgjobq/jobs.h"

namespace pgjobq::test {

const std::string kDeadPostgres = "postgresql://nobody@127.0.0.1:1/nothing";
const std::string kDeadRedis = "redis://127.0.0.1:1";

std::string HostileTest::stored() const {
  return query_value(R"sql(
SELECT md5(coalesce(string_agg(t, '|' ORDER BY t), '')) FROM (
  SELECT 'j' || j::text AS t FROM pgjobq.jobs j
  UNION ALL SELECT 'q' || q::text FROM pgjobq.queues q
  UNION ALL SELECT 'p' || p::text FROM pgjobq.queue_progress p) s
)sql");
}

void HostileTest::seed() {
  PgConnPtr conn = connect();
  std::string q = queue("seeded");
  enqueue(conn.get(), q, nlohmann::json{{"keep", "me"}});
  JobId cancelled = enqueue(conn.get(), q, nlohmann::json::array({1, 2}));
  cancel(conn.get(), cancelled);
  enqueue(conn.get(), queue("seeded"), "another queue");
}

namespace {

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("no free port");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

bool running_as_root() { return geteuid() == 0; }

std::string pg_bin() {
  const char* bin = std::getenv("PGJOBQ_PG_BIN");
  return bin && *bin ? bin : "/usr/lib/postgresql/15/bin";
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace

void PrivatePostgres::run(const std::vector<std::string>& argv,
                          bool as_postgres) const {
  std::vector<std::string> full;
  if (as_postgres && running_as_root()) {
    full = {"runuser", "-u", "postgres", "--"};
  }
  full.insert(full.end(), argv.begin(), argv.end());
  ProcessResult r = run_process(full, {}, {}, std::chrono::seconds(120));
  if (r.exit_code != 0) {
    throw std::runtime_error(argv[0] + " failed: " + r.err + r.out);
  }
}

void PrivatePostgres::make_dir() {
  char tmpl[] = "/tmp/pgjobq-private-pg.XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  std::filesystem::permissions(dir_, std::filesystem::perms(0755));
  if (running_as_root()) {
    passwd* pg = getpwnam("postgres");
    if (!pg || chown(dir_.c_str(), pg->pw_uid, pg->pw_gid) != 0) {
      throw std::runtime_error("cannot hand " + dir_ + " to postgres");
    }
  }
}

void PrivatePostgres::start() {
  std::string data = dir_ + "/data";
  for (int tries = 0;; ++tries) {
    port_ = free_port();
    try {
      run({pg_bin() + "/pg_ctl", "-D", data, "-w", "-t", "60", "-o",
           "-p " + std::to_string(port_), "-l", dir_ + "/postgres.log",
           "start"},
          true);
      break;
    } catch (const std::exception&) {
      if (tries == 3) throw;
    }
  }
}

PrivatePostgres::PrivatePostgres(bool tls) {
  make_dir();
  std::string data = dir_ + "/data";
  run({pg_bin() + "/initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E",
       "UTF8", "--no-sync", "--no-instructions"},
      true);
  std::string conf =
      "listen_addresses = '127.0.0.1'\n"
      "unix_socket_directories = '" +
      dir_ +
      "'\n"
      "fsync = off\n"
      "password_encryption = 'scram-sha-256'\n";
  // Local replication, for a standby (StandbyOf): pg_basebackup, streaming.
  std::string hba = "local all all trust\nlocal replication all trust\n";
  if (tls) {
    // A CA of the test's own signs the server's certificate, for
    // 127.0.0.1 and localhost.
    std::string ext = dir_ + "/san.ext";
    write_file(ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    run({"openssl", "req", "-new", "-x509", "-days", "2", "-nodes", "-subj",
         "/CN=pgjobq test CA", "-keyout", dir_ + "/ca.key", "-out",
         dir_ + "/ca.crt"},
        true);
    run({"openssl", "req", "-new", "-nodes", "-subj", "/CN=localhost",
         "-keyout", data + "/server.key", "-out", dir_ + "/server.csr"},
        true);
    run({"openssl", "x509", "-req", "-in", dir_ + "/server.csr", "-days", "2",
         "-CA", dir_ + "/ca.crt", "-CAkey", dir_ + "/ca.key", "-CAcreateserial",
         "-out", data + "/server.crt", "-extfile", ext},
        true);
    run({"chmod", "600", data + "/server.key"}, true);
    conf +=
        "ssl = on\nssl_cert_file = 'server.crt'\n"
        "ssl_key_file = 'server.key'\n";
    hba +=
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        "hostnossl all all 127.0.0.1/32 reject\n";
  } else {
    hba += "host all all 127.0.0.1/32 scram-sha-256\n";
  }
  // Written as root when we are root: make them the server's.
  write_file(data + "/pg_hba.conf", hba);
  {
    std::ofstream out(data + "/postgresql.conf", std::ios::app);
    out << conf;
  }
  if (running_as_root()) {
    run({"chown", "postgres:", data + "/pg_hba.conf",
         data + "/postgresql.conf"},
        false);
  }
  start();
}

PrivatePostgres::PrivatePostgres(StandbyOf of) {
  make_dir();
  std::string data = dir_ + "/data";
  run({pg_bin() + "/pg_basebackup", "-h", of.primary.dir(), "-p",
       std::to_string(of.primary.port()), "-U", "postgres", "-D", data,
       "--write-recovery-conf", "--wal-method=stream", "--checkpoint=fast",
       "--no-sync"},
      true);
  {
    std::ofstream out(data + "/postgresql.conf", std::ios::app);
    out << "unix_socket_directories = '" << dir_ << "'\n";
  }
  if (running_as_root()) {
    run({"chown", "postgres:", data + "/postgresql.conf"}, false);
  }
  start();
}

PrivatePostgres::~PrivatePostgres() {
  try {
    resume();  // a paused server would not hear pg_ctl
    run({pg_bin() + "/pg_ctl", "-D", dir_ + "/data", "-m", "immediate", "-w",
         "stop"},
        true);
  } catch (const std::exception&) {
    // Gone already.
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

void PrivatePostgres::restart() const {
  run({pg_bin() + "/pg_ctl", "-D", dir_ + "/data", "-m", "fast", "-w", "-t",
       "60", "-o", "-p " + std::to_string(port_), "-l", dir_ + "/postgres.log",
       "restart"},
      true);
}

namespace {
pid_t postmaster_pid(const std::string& data) {
  std::ifstream in(data + "/postmaster.pid");
  long pid = 0;
  in >> pid;
  if (pid <= 0) throw std::runtime_error("no postmaster.pid in " + data);
  return static_cast<pid_t>(pid);
}
}  // namespace

void PrivatePostgres::pause() const {
  kill(postmaster_pid(dir_ + "/data"), SIGSTOP);
}

void PrivatePostgres::resume() const {
  kill(postmaster_pid(dir_ + "/data"), SIGCONT);
}

std::string PrivatePostgres::admin(const std::string& sql,
                                   const std::string& database) const {
  PgConnPtr conn =
      connect_database("host=" + dir_ + " port=" + std::to_string(port_) +
                       " user=postgres dbname=" + database);
  PGresult* r = PQexec(conn.get(), sql.c_str());
  auto status = PQresultStatus(r);
  std::string value =
      status == PGRES_TUPLES_OK && PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "";
  std::string error = PQresultErrorMessage(r);
  PQclear(r);
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    throw std::runtime_error(sql + ": " + error);
  }
  return value;
}

std::string PrivatePostgres::url(const std::string& user,
                                 const std::string& password,
                                 const std::string& database,
                                 const std::string& extra) const {
  return "postgresql://" + user + ":" + password +
         "@127.0.0.1:" + std::to_string(port_) + "/" + database +
         (extra.empty() ? "" : "?" + extra);
}

std::string PrivatePostgres::log() const {
  std::ifstream in(dir_ + "/postgres.log");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Pgbouncer::binary() {
  const char* bin = std::getenv("PGJOBQ_PGBOUNCER");
  return bin && *bin ? bin : "/usr/sbin/pgbouncer";
}

bool Pgbouncer::installed() { return access(binary().c_str(), X_OK) == 0; }

namespace {

// Whether something accepts TCP connections on 127.0.0.1:`port`.
bool accepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

// pgbouncer's pid from its pidfile, or -1.
pid_t read_pid(const std::string& path) {
  std::ifstream in(path);
  long pid = -1;
  in >> pid;
  return in ? static_cast<pid_t>(pid) : -1;
}

}  // namespace

Pgbouncer::Pgbouncer(const std::string& pool_mode, int pool_size) {
  char tmpl[] = "/tmp/pgjobq-pgbouncer.XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  std::filesystem::permissions(dir_, std::filesystem::perms(0755));
  std::string pg_port = required_env("PGJOBQ_PG_PORT");
  // auth_type trust still wants the user in the auth file.
  write_file(dir_ + "/users.txt", "\"postgres\" \"\"\n");
  std::vector<std::string> prefix;
  if (running_as_root()) {
    passwd* pg = getpwnam("postgres");
    if (!pg || chown(dir_.c_str(), pg->pw_uid, pg->pw_gid) != 0) {
      throw std::runtime_error("cannot hand " + dir_ + " to postgres");
    }
    prefix = {"runuser", "-u", "postgres", "--"};
  }
  std::string ini = dir_ + "/pgbouncer.ini";
  for (int tries = 0;; ++tries) {
    port_ = free_port();
    std::ostringstream text;
    text << "[databases]\n"
         << "* = host=127.0.0.1 port=" << pg_port << "\n"
         << "[pgbouncer]\n"
         << "listen_addr = 127.0.0.1\n"
         << "listen_port = " << port_ << "\n"
         << "unix_socket_dir = " << dir_ << "\n"
         << "auth_type = trust\n"
         << "auth_file = " << dir_ << "/users.txt\n"
         << "pool_mode = " << pool_mode << "\n"
         << "default_pool_size = " << pool_size << "\n"
         << "max_client_conn = 100\n"
         << "pidfile = " << dir_ << "/pgbouncer.pid\n"
         << "logfile = " << dir_ << "/pgbouncer.log\n";
    write_file(ini, text.str());
    std::vector<std::string> argv = prefix;
    argv.insert(argv.end(), {binary(), "-d", ini});
    ProcessResult r = run_process(argv, {}, {}, std::chrono::seconds(30));
    // -d: the process that answers is the daemon, named by the pidfile;
    // its log says it listens on the port, not another program.
    std::string listening = "listening on 127.0.0.1:" + std::to_string(port_);
    bool up = r.exit_code == 0 && wait_until([&] {
                pid_ = read_pid(dir_ + "/pgbouncer.pid");
                return pid_ > 0 && contains(log(), listening) && accepts(port_);
              });
    if (up) return;
    if (pid_ > 0) kill(pid_, SIGKILL);
    pid_ = -1;
    std::error_code ignored;
    std::filesystem::remove(dir_ + "/pgbouncer.pid", ignored);
    if (tries == 3) {
      std::string why = r.err + r.out + log();
      std::filesystem::remove_all(dir_, ignored);
      throw std::runtime_error("pgbouncer did not start: " + why);
    }
  }
}

Pgbouncer::~Pgbouncer() {
  if (pid_ > 0) {
    // SIGTERM: an immediate shutdown, every connection closed.
    kill(pid_, SIGTERM);
    if (!wait_until([&] { return process_gone(pid_); })) {
      kill(pid_, SIGKILL);
      wait_until([&] { return process_gone(pid_); });
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string Pgbouncer::url(const std::string& database) const {
  return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/" +
         database;
}

std::string Pgbouncer::log() const {
  std::ifstream in(dir_ + "/pgbouncer.log");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace pgjobq::test
