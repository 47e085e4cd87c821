#include "cli/subprocess.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace pgjobq::test {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> environment_with(const EnvChanges& changes) {
  std::map<std::string, std::string> vars;
  for (char** e = environ; *e; ++e) {
    std::string entry(*e);
    std::size_t eq = entry.find('=');
    if (eq != std::string::npos)
      vars[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  for (const auto& [key, value] : changes) {
    if (value) {
      vars[key] = *value;
    } else {
      vars.erase(key);
    }
  }
  std::vector<std::string> out;
  for (const auto& [key, value] : vars) out.push_back(key + "=" + value);
  return out;
}

std::vector<char*> null_terminated(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

int spawn(const std::vector<std::string>& argv, const EnvChanges& env,
          const posix_spawn_file_actions_t* actions,
          const posix_spawnattr_t* attr, pid_t* pid) {
  std::vector<std::string> env_strings = environment_with(env);
  std::vector<char*> envp = null_terminated(env_strings);
  std::vector<std::string> args = argv;
  std::vector<char*> argp = null_terminated(args);
  return posix_spawnp(pid, argp[0], actions, attr, argp.data(), envp.data());
}

Subprocess::Subprocess(const std::vector<std::string>& argv,
                       const EnvChanges& env, std::string_view input) {
  char tmpl[] = "/tmp/pgjobq-cli-test.XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  {
    std::ofstream(dir_ + "/stdin", std::ios::binary)
        .write(input.data(), static_cast<std::streamsize>(input.size()));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  std::string in_path = dir_ + "/stdin";
  std::string out_path = dir_ + "/stdout";
  std::string err_path = dir_ + "/stderr";
  posix_spawn_file_actions_addopen(&actions, 0, in_path.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  // A process group of its own, so that the destructor can kill whatever
  // it started too.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  int rc = spawn(argv, env, &actions, &attr, &pid_);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    // No destructor runs for a constructor that throws: clean up here.
    pid_ = -1;
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
    throw std::runtime_error("cannot start " + argv[0] + ": " +
                             std::generic_category().message(rc));
  }
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !exit_code_) {
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

void Subprocess::signal(int signo) {
  if (pid_ > 0 && !exit_code_) kill(pid_, signo);
}

bool Subprocess::running() {
  if (exit_code_) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_code_ = exit_code_of(status);
    return false;
  }
  return true;
}

std::optional<int> Subprocess::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return exit_code_;
}

std::string Subprocess::out() const { return read_file(dir_ + "/stdout"); }
std::string Subprocess::err() const { return read_file(dir_ + "/stderr"); }

ProcessResult run_process(const std::vector<std::string>& argv,
                          const EnvChanges& env, std::string_view input,
                          std::chrono::milliseconds timeout) {
  Subprocess p(argv, env, input);
  std::optional<int> code = p.wait(timeout);
  ProcessResult result;
  result.out = p.out();
  result.err = p.err();
  if (!code) {
    ADD_FAILURE() << argv[0] << " still running after " << timeout.count()
                  << " ms; stderr so far: " << result.err;
    return result;
  }
  result.exit_code = *code;
  return result;
}

bool process_gone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  std::string content((std::istreambuf_iterator<char>(stat)), {});
  // pid (comm) STATE ...; comm may hold spaces and parentheses.
  std::size_t close = content.rfind(')');
  return close == std::string::npos || close + 2 >= content.size() ||
         content[close + 2] == 'Z' || content[close + 2] == 'X';
}

std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::string name = entry.path().filename();
    if (name.empty() ||
        name.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    std::ifstream stat(entry.path() / "stat");
    std::string content((std::istreambuf_iterator<char>(stat)), {});
    std::size_t close = content.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(content.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == pid) out.push_back(static_cast<pid_t>(std::stoi(name)));
  }
  return out;
}

}  // namespace pgjobq::test
