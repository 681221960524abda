#pragma once

// withcache-server as a child process on 127.0.0.1 with a temp data dir, and
// a curl wrapper that returns status, headers and body. WITHCACHE_SERVER must
// be defined to the server binary's path.

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "support/temp_dir.hpp"
#include "withcache/url.hpp"

namespace withcache::test {

/**
 * The port a withcache-server started with `--port 0` bound, read from the
 * start-up line it logs ("listening on http://HOST:PORT"), looking only at the
 * log after `offset` bytes; 0 when none appears before the deadline.
 */
inline int bound_port(const std::filesystem::path& log, std::size_t offset = 0,
                      std::chrono::milliseconds timeout = k_deadline) {
  static constexpr std::string_view marker = "listening on http";
  int port = 0;
  eventually(
      [&] {
        const std::string text = slurp(log);
        const std::size_t at = text.size() > offset ? text.find(marker, offset) : std::string::npos;
        if (at == std::string::npos) {
          return false;
        }
        const std::size_t colon = text.find(':', text.find("://", at) + 3);
        const std::size_t end = text.find_first_not_of("0123456789", colon + 1);
        if (colon == std::string::npos || end == std::string::npos || end == colon + 1) {
          return false;
        }
        port = std::stoi(text.substr(colon + 1, end - colon - 1));
        return true;
      },
      timeout);
  return port;
}

class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> args = {}, std::vector<std::string> env = {})
      : m_args(std::move(args)), m_env(std::move(env)) {
    start();
  }

  /** Starts the server on a port the kernel picks (--port 0) and waits until it answers /healthz. */
  void start() {
    std::vector<std::string> argv = {WITHCACHE_SERVER,   "--host", "127.0.0.1", "--port", "0",
                                     "--data-dir",       (m_dir / "data").string(),
                                     "--allow-private",   "127.0.0.1"};
    // Tests of miss semantics expect a first request to be a miss: no waiting for a fill's head unless
    // the test asks for it (test_filling does).
    if (std::find(m_args.begin(), m_args.end(), "--miss-wait") == m_args.end()) {
      argv.insert(argv.end(), {"--miss-wait", "0"});
    }
    // A test machine's disk may be nearly full; tests of --min-free pass their own.
    if (std::find(m_args.begin(), m_args.end(), "--min-free") == m_args.end()) {
      argv.insert(argv.end(), {"--min-free", "0"});
    }
    argv.insert(argv.end(), m_args.begin(), m_args.end());
    const std::size_t offset = slurp(m_dir / "server.log").size();
    m_process = std::make_unique<Process>(argv, m_env, m_dir / "server.log");
    m_port = bound_port(m_dir / "server.log", offset);
    REQUIRE(m_port > 0);
    m_tls = std::find(m_args.begin(), m_args.end(), "--tls-cert") != m_args.end();
    if (m_tls) {
      REQUIRE(eventually([&] {
        httplib::SSLClient client("127.0.0.1", m_port);
        client.enable_server_certificate_verification(false);
        client.set_connection_timeout(std::chrono::milliseconds(200));
        const auto res = client.Get("/healthz");
        return res && res->status == 200;
      }));
    } else {
      REQUIRE(wait_until_healthy(m_port));
    }
  }
  int stop(int signal = SIGTERM) {
    const int status = m_process->stop(signal);
    m_process.reset();
    return status;
  }
  void restart() {
    stop();
    start();
  }
  /** Restarts with another environment (same data dir). */
  void restart(std::vector<std::string> env) {
    stop();
    m_env = std::move(env);
    start();
  }

  [[nodiscard]] std::string base() const {
    return (m_tls ? "https://127.0.0.1:" : "http://127.0.0.1:") + std::to_string(m_port);
  }
  [[nodiscard]] pid_t pid() const { return m_process ? m_process->pid() : -1; }
  [[nodiscard]] std::string blob(const std::string& origin) const { return url::blob_url(base(), origin); }
  [[nodiscard]] const std::filesystem::path& dir() const { return m_dir.path(); }
  [[nodiscard]] int port() const { return m_port; }
  [[nodiscard]] std::string log() const { return slurp(m_dir / "server.log"); }

  /** One sample from /metrics (`name` may carry labels). */
  double metric(const std::string& name) const {
    httplib::Client client("127.0.0.1", m_port);
    const auto res = client.Get("/metrics");
    REQUIRE(res);
    std::istringstream lines(res->body);
    for (std::string line; std::getline(lines, line);) {
      if (line.starts_with(name + " ")) {
        return std::stod(line.substr(name.size() + 1));
      }
    }
    FAIL("no metric " << name);
    return 0;
  }

  /** Waits until a completed fill count reaches `n`. */
  bool fills_completed(double n) const {
    return eventually([&] { return metric("withcache_fills_total{outcome=\"completed\"}") >= n; });
  }

 private:
  TempDir m_dir;
  std::vector<std::string> m_args;
  std::vector<std::string> m_env;
  int m_port = 0;
  bool m_tls = false;
  std::unique_ptr<Process> m_process;
};

struct Response {
  int exit_code = 0;
  int status = 0;
  std::map<std::string, std::string> headers; // lower-case names
  std::string body;
};

// curl -sS -D <headers> -o <body> [extra...] URL
inline Response curl(const std::string& target, std::vector<std::string> extra = {}) {
  TempDir tmp;
  std::vector<std::string> argv = {"curl", "-sS", "-D", (tmp / "h").string(), "-o", (tmp / "b").string()};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back(target);
  const auto result = run(argv);
  Response r;
  r.exit_code = result.exit_code;
  r.body = slurp(tmp / "b");
  std::istringstream lines(slurp(tmp / "h"));
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    if (line.starts_with("HTTP/")) {
      r.status = std::stoi(line.substr(line.find(' ') + 1, 3));
      r.headers.clear();
    } else if (const auto colon = line.find(':'); colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (char& c : name) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
      r.headers[name] = line.substr(colon + 2);
    }
  }
  return r;
}

} // namespace withcache::test
