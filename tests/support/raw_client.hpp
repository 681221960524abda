#pragma once

// A raw TCP client for tests that speak HTTP by hand: slow senders, floods,
// pipelining, odd request forms. Every read is bounded by a deadline.

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace withcache::test {

class RawClient {
 public:
  /** Connects to 127.0.0.1:port, optionally from another loopback address (e.g. 127.0.0.2). */
  explicit RawClient(int port, const char* from = nullptr) {
    m_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (m_fd < 0) {
      throw std::runtime_error("RawClient: socket failed");
    }
    if (from != nullptr) {
      sockaddr_in local{};
      local.sin_family = AF_INET;
      ::inet_pton(AF_INET, from, &local.sin_addr);
      if (::bind(m_fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
        throw std::runtime_error("RawClient: cannot bind " + std::string(from));
      }
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    m_connected = ::connect(m_fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  }
  ~RawClient() {
    if (m_fd >= 0) {
      ::close(m_fd);
    }
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  [[nodiscard]] bool connected() const noexcept { return m_connected; }
  [[nodiscard]] int fd() const noexcept { return m_fd; }

  /** Sends all of `bytes`; false when the peer closed or reset the connection. */
  bool send(const std::string& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = ::send(m_fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) {
        return false;
      }
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }

  /**
   * Reads until `until` appears in what was received, the peer closes, or the
   * timeout passes; returns everything received so far.
   */
  std::string read_until(const std::string& until, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buffer[65536];
    while (until.empty() || m_received.find(until) == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        break;
      }
      pollfd p{m_fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) != 1) {
        break;
      }
      const ssize_t n = ::recv(m_fd, buffer, sizeof buffer, 0);
      if (n <= 0) {
        m_closed = true;
        break;
      }
      m_received.append(buffer, static_cast<std::size_t>(n));
    }
    return m_received;
  }

  /** Reads until the peer closes (true) or the timeout passes (false). */
  bool closed_within(std::chrono::milliseconds timeout) {
    read_until("", timeout);
    return m_closed;
  }

  /** Reads at most `bytes` more, then stops reading (a client that stalls mid-response). */
  std::size_t read_some(std::size_t bytes, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::size_t got = 0;
    char buffer[65536];
    while (got < bytes && std::chrono::steady_clock::now() < deadline) {
      pollfd p{m_fd, POLLIN, 0};
      if (::poll(&p, 1, 100) != 1) {
        continue;
      }
      const ssize_t n = ::recv(m_fd, buffer, std::min(sizeof buffer, bytes - got), 0);
      if (n <= 0) {
        break;
      }
      got += static_cast<std::size_t>(n);
    }
    return got;
  }

  /** Reads and discards until the peer closes (true) or the timeout passes (false). */
  bool drain(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buffer[65536];
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{m_fd, POLLIN, 0};
      if (::poll(&p, 1, 100) != 1) {
        continue;
      }
      const ssize_t n = ::recv(m_fd, buffer, sizeof buffer, 0);
      if (n <= 0) {
        m_closed = true;
        return true;
      }
    }
    return false;
  }

  [[nodiscard]] const std::string& received() const noexcept { return m_received; }
  [[nodiscard]] bool peer_closed() const noexcept { return m_closed; }

 private:
  int m_fd = -1;
  bool m_connected = false;
  bool m_closed = false;
  std::string m_received;
};

/** The resident set size of a process, in KiB (VmRSS from /proc), or 0 when unknown. */
inline long rss_kib(pid_t pid) {
  const std::string status = [&] {
    std::string text;
    if (FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/status").c_str(), "r")) {
      char line[256];
      while (std::fgets(line, sizeof line, f) != nullptr) {
        text += line;
      }
      std::fclose(f);
    }
    return text;
  }();
  const std::size_t at = status.find("VmRSS:");
  return at == std::string::npos ? 0 : std::strtol(status.c_str() + at + 6, nullptr, 10);
}

/** How many times `needle` occurs in `text`. */
inline std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

} // namespace withcache::test
