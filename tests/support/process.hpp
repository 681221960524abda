#pragma once

// Child processes for integration tests: started with posix_spawn, stopped by
// their PID (SIGTERM, then SIGKILL after a deadline), every wait bounded.

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <httplib.h>

#include "support/eventually.hpp"

extern char** environ;

namespace withcache::test {

/**
 * A port on 127.0.0.1 that refuses connections for as long as this object
 * lives: a socket bound to it that never listens, so no other process can
 * take the port and a connect is refused at once.
 */
class ClosedPort {
 public:
  ClosedPort() : m_fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (m_fd < 0 || ::bind(m_fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::getsockname(m_fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error("ClosedPort: cannot bind 127.0.0.1");
    }
    m_port = ntohs(address.sin_port);
  }
  ~ClosedPort() { ::close(m_fd); }
  ClosedPort(const ClosedPort&) = delete;
  ClosedPort& operator=(const ClosedPort&) = delete;

  [[nodiscard]] int port() const noexcept { return m_port; }
  /** `127.0.0.1:<port>`. */
  [[nodiscard]] std::string authority() const { return "127.0.0.1:" + std::to_string(m_port); }

 private:
  int m_fd;
  int m_port = 0;
};

inline std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/** Environment for a child: ours, with `overrides` ("NAME=value", or "NAME" to remove) applied. */
inline std::vector<std::string> child_environment(const std::vector<std::string>& overrides) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string name = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const auto& o : overrides) {
      replaced = replaced || o.substr(0, o.find('=')) == name;
    }
    if (!replaced) {
      env.push_back(entry);
    }
  }
  for (const auto& o : overrides) {
    if (o.find('=') != std::string::npos) {
      env.push_back(o);
    }
  }
  return env;
}

/** Starts argv[0] (searched on PATH) with stdin from /dev/null and stdout/stderr to the given files. */
inline pid_t spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env_overrides,
                   const std::filesystem::path& out, const std::filesystem::path& err) {
  std::vector<std::string> args = argv;
  std::vector<char*> c_argv;
  for (auto& a : args) {
    c_argv.push_back(a.data());
  }
  c_argv.push_back(nullptr);
  std::vector<std::string> env = child_environment(env_overrides);
  std::vector<char*> c_env;
  for (auto& e : env) {
    c_env.push_back(e.data());
  }
  c_env.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (err == out) {
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
  } else {
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  }
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, args[0].c_str(), &actions, nullptr, c_argv.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

/** A running child process; destroyed → stopped by PID. Output goes to `log` (or /dev/null). */
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::vector<std::string>& env_overrides = {},
          const std::filesystem::path& log = "/dev/null")
      : m_pid(spawn(argv, env_overrides, log, log)) {
    if (m_pid <= 0) {
      throw std::runtime_error("cannot start " + argv.at(0));
    }
  }
  ~Process() { stop(); }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  [[nodiscard]] pid_t pid() const noexcept { return m_pid; }

  /** Waits up to `timeout` for the process to exit; its wait status, or nothing. */
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    if (m_status) {
      return m_status;
    }
    int status = 0;
    const bool done = eventually([&] { return ::waitpid(m_pid, &status, WNOHANG) == m_pid; }, timeout);
    if (done) {
      m_status = status;
    }
    return m_status;
  }

  /** Sends `signal` and waits; SIGKILL after `grace`. Returns the wait status. */
  int stop(int signal = SIGTERM, std::chrono::milliseconds grace = std::chrono::seconds(15)) {
    if (m_status || m_pid <= 0) {
      return m_status.value_or(0);
    }
    ::kill(m_pid, signal);
    if (auto status = wait(grace)) {
      return *status;
    }
    ::kill(m_pid, SIGKILL);
    int status = 0;
    ::waitpid(m_pid, &status, 0);
    m_status = status;
    return status;
  }

 private:
  pid_t m_pid = -1;
  std::optional<int> m_status;
};

struct CommandResult {
  int exit_code = -1; ///< -1 when killed for running past the timeout
  std::string out;
  std::string err;
  std::chrono::nanoseconds elapsed{0}; ///< spawn to reap, measured by run_timed() only
};

/** Runs a command to completion (bounded by `timeout`), capturing stdout and stderr. */
inline CommandResult run(const std::vector<std::string>& argv,
                         const std::vector<std::string>& env_overrides = {},
                         std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
  char out_template[] = "/tmp/withcache-run-out-XXXXXX";
  char err_template[] = "/tmp/withcache-run-err-XXXXXX";
  const int out_fd = ::mkstemp(out_template);
  const int err_fd = ::mkstemp(err_template);
  ::close(out_fd);
  ::close(err_fd);
  CommandResult result;
  const pid_t pid = spawn(argv, env_overrides, out_template, err_template);
  if (pid > 0) {
    int status = 0;
    const bool done = eventually([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout);
    if (!done) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
    } else if (WIFEXITED(status)) {
      result.exit_code = WEXITSTATUS(status);
    }
  } else {
    result.exit_code = 127;
  }
  result.out = slurp(out_template);
  result.err = slurp(err_template);
  std::filesystem::remove(out_template);
  std::filesystem::remove(err_template);
  return result;
}

/**
 * run(), but the wait is a poll() on a pidfd, so `elapsed` (from just before
 * the spawn to the reap) is exact rather than rounded up to run()'s 5 ms
 * polling; for the few tests that assert the latency bounds.
 */
inline CommandResult run_timed(const std::vector<std::string>& argv,
                               const std::vector<std::string>& env_overrides = {},
                               std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
  char out_template[] = "/tmp/withcache-run-out-XXXXXX";
  char err_template[] = "/tmp/withcache-run-err-XXXXXX";
  ::close(::mkstemp(out_template));
  ::close(::mkstemp(err_template));
  CommandResult result;
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = spawn(argv, env_overrides, out_template, err_template);
  if (pid > 0) {
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    pollfd p{pidfd, POLLIN, 0};
    const bool done = pidfd >= 0 && ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
    int status = 0;
    if (!done) {
      ::kill(pid, SIGKILL);
    }
    ::waitpid(pid, &status, 0);
    result.elapsed = std::chrono::steady_clock::now() - start;
    if (pidfd >= 0) {
      ::close(pidfd);
    }
    if (done && WIFEXITED(status)) {
      result.exit_code = WEXITSTATUS(status);
    }
  } else {
    result.exit_code = 127;
  }
  result.out = slurp(out_template);
  result.err = slurp(err_template);
  std::filesystem::remove(out_template);
  std::filesystem::remove(err_template);
  return result;
}

/** GETs /healthz from 127.0.0.1:port until it answers 200 or the timeout passes. */
inline bool wait_until_healthy(int port, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  return eventually(
      [&] {
        httplib::Client client("127.0.0.1", port);
        client.set_connection_timeout(std::chrono::milliseconds(200));
        const auto res = client.Get("/healthz");
        return res && res->status == 200;
      },
      timeout);
}

} // namespace withcache::test
