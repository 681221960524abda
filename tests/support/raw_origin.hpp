#pragma once

// A hostile origin on 127.0.0.1 for tests: it answers every connection with
// bytes the test writes by hand (a malformed Content-Length, two of them, a
// lying status line...), which no well-behaved HTTP library would send. It
// reads the request head first, keeps the heads it received, and closes.

#include <atomic>
#include <cstdint>
#include <string_view>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace withcache::test {

class RawOrigin {
 public:
  /**
   * `response`: the exact bytes sent after each request head. With `flood_bytes`, `response` is sent up
   * to its first empty line, then `flood_bytes` of header lines `flood_line` (a header flood, stopped
   * when the client hangs up), then the rest of `response`.
   */
  explicit RawOrigin(std::string response, std::uint64_t flood_bytes = 0, std::string flood_line = "X-Flood: a\r\n")
      : m_response(std::move(response)), m_flood_bytes(flood_bytes), m_flood_line(std::move(flood_line)) {
    m_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (m_fd < 0 || ::bind(m_fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(m_fd, 64) != 0 || ::getsockname(m_fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error("RawOrigin: cannot listen on 127.0.0.1");
    }
    m_port = ntohs(address.sin_port);
    m_thread = std::thread([this] { serve(); });
  }
  ~RawOrigin() {
    m_stopping = true;
    m_thread.join();
    ::close(m_fd);
  }
  RawOrigin(const RawOrigin&) = delete;
  RawOrigin& operator=(const RawOrigin&) = delete;

  [[nodiscard]] std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(m_port) + path;
  }
  /** The request heads received so far. */
  [[nodiscard]] std::vector<std::string> requests() const {
    std::lock_guard lock(m_mutex);
    return m_requests;
  }

 private:
  void serve() {
    while (!m_stopping) {
      pollfd p{m_fd, POLLIN, 0};
      if (::poll(&p, 1, 20) != 1) {
        continue;
      }
      const int client = ::accept4(m_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) {
        continue;
      }
      std::string head;
      char buffer[4096];
      while (head.find("\r\n\r\n") == std::string::npos && head.size() < 65536) {
        pollfd c{client, POLLIN, 0};
        if (::poll(&c, 1, 5000) != 1) {
          break;
        }
        const ssize_t n = ::recv(client, buffer, sizeof buffer, 0);
        if (n <= 0) {
          break;
        }
        head.append(buffer, static_cast<std::size_t>(n));
      }
      {
        std::lock_guard lock(m_mutex);
        m_requests.push_back(head);
      }
      const std::size_t split = m_flood_bytes > 0 ? m_response.find("\r\n\r\n") + 2 : m_response.size();
      bool open = send_all(client, std::string_view(m_response).substr(0, split));
      if (open && m_flood_bytes > 0) {
        std::string block;
        while (block.size() < 64 * 1024) {
          block += m_flood_line;
        }
        for (std::uint64_t sent = 0; open && sent < m_flood_bytes && !m_stopping; sent += block.size()) {
          open = send_all(client, block);
          m_flooded += open ? block.size() : 0;
        }
      }
      if (open) {
        send_all(client, std::string_view(m_response).substr(split));
      }
      ::shutdown(client, SHUT_WR);
      ::close(client);
    }
  }

  static bool send_all(int client, std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(client, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) {
        return false;
      }
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

 public:
  /** Bytes of flood header lines the clients took before hanging up (or all of them). */
  [[nodiscard]] std::uint64_t flooded() const { return m_flooded.load(); }

 private:
  std::atomic<std::uint64_t> m_flooded{0};

  std::string m_response;
  std::uint64_t m_flood_bytes = 0;
  std::string m_flood_line;
  int m_fd = -1;
  int m_port = 0;
  std::atomic<bool> m_stopping{false};
  std::thread m_thread;
  mutable std::mutex m_mutex;
  std::vector<std::string> m_requests;
};

} // namespace withcache::test
