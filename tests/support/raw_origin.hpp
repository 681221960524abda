#pragma once

// A hostile origin on 127.0.0.1 for tests: it answers every connection with
// bytes the test writes by hand (a malformed Content-Length, two of them, a
// lying status line...), which no well-behaved HTTP library would send. It
// reads the request head first, keeps the heads it received, and closes.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/loopback.hpp"

namespace withcache::test {

class RawOrigin {
 public:
  /**
   * `response`: the exact bytes sent after each request head. With `flood_bytes`, `response` is sent up
   * to its first empty line, then `flood_bytes` of header lines `flood_line` (a header flood, stopped
   * when the client hangs up), then the rest of `response`.
   */
  explicit RawOrigin(std::string response, std::uint64_t flood_bytes = 0,
                     std::string flood_line = "X-Flood: a\r\n")
      : m_response(std::move(response)), m_flood_bytes(flood_bytes), m_flood_line(std::move(flood_line)) {
    m_fd = listen_loopback(m_port, "RawOrigin");
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
      const std::string head = read_request_head(client);
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
