#pragma once

// A forward proxy on 127.0.0.1 for tests, like the one a lab's egress goes through: `CONNECT
// host:port` opens a tunnel, an absolute-form request (`GET http://host:port/p HTTP/1.1`) is forwarded
// in origin form. It only ever connects to 127.0.0.1 (whatever host the request names) and keeps every
// request head it received, so a test can see what the client sent to its proxy.

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/loopback.hpp"

namespace withcache::test {

class ForwardProxy {
 public:
  ForwardProxy() {
    m_fd = listen_loopback(m_port, "ForwardProxy", 16);
    m_thread = std::thread([this] { serve(); });
  }
  ~ForwardProxy() {
    m_stopping = true;
    m_thread.join();
    ::close(m_fd);
  }
  ForwardProxy(const ForwardProxy&) = delete;
  ForwardProxy& operator=(const ForwardProxy&) = delete;

  [[nodiscard]] int port() const { return m_port; }
  /** The request heads received so far. */
  [[nodiscard]] std::vector<std::string> requests() const {
    std::lock_guard lock(m_mutex);
    return m_requests;
  }

 private:
  static int connect_loopback(int port) {
    const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    if (s >= 0 && ::connect(s, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
      return s;
    }
    if (s >= 0) {
      ::close(s);
    }
    return -1;
  }

  // Copies bytes both ways until either side closes (or 10 s pass with nothing moving).
  static void relay(int a, int b) {
    char buffer[65536];
    for (;;) {
      pollfd fds[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
      if (::poll(fds, 2, 10'000) <= 0) {
        return;
      }
      for (int i = 0; i < 2; ++i) {
        if (fds[i].revents == 0) {
          continue;
        }
        const ssize_t n = ::recv(fds[i].fd, buffer, sizeof buffer, 0);
        if (n <= 0 || !send_all(fds[1 - i].fd, std::string_view(buffer, static_cast<std::size_t>(n)))) {
          return;
        }
      }
    }
  }

  // The port of `authority` (`host:port`, `[v6]:port`); 0 when it has none.
  static int port_of(std::string_view authority) {
    const std::size_t colon = authority.rfind(':');
    if (colon == std::string_view::npos || authority.find(']', colon) != std::string_view::npos) {
      return 0;
    }
    return std::atoi(std::string(authority.substr(colon + 1)).c_str());
  }

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
        m_requests.push_back(head.substr(0, head.find("\r\n\r\n") + 4));
      }
      const std::size_t first_space = head.find(' ');
      const std::size_t second_space = head.find(' ', first_space + 1);
      const std::string method = head.substr(0, first_space);
      const std::string target = head.substr(first_space + 1, second_space - first_space - 1);
      if (method == "CONNECT") {
        const int upstream = connect_loopback(port_of(target));
        if (upstream < 0) {
          send_all(client, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        } else {
          send_all(client, "HTTP/1.1 200 Connection established\r\n\r\n");
          relay(client, upstream);
          ::close(upstream);
        }
      } else if (target.starts_with("http://")) {
        const std::size_t path = target.find('/', 7);
        const std::string authority = target.substr(7, path - 7);
        const int upstream = connect_loopback(port_of(authority) == 0 ? 80 : port_of(authority));
        if (upstream >= 0) {
          std::string forwarded = head;
          forwarded.replace(first_space + 1, target.size(),
                            path == std::string::npos ? "/" : target.substr(path));
          send_all(upstream, forwarded);
          relay(client, upstream);
          ::close(upstream);
        }
      } else {
        send_all(client, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
      }
      ::close(client);
    }
  }

  int m_fd = -1;
  int m_port = 0;
  std::atomic<bool> m_stopping{false};
  std::thread m_thread;
  mutable std::mutex m_mutex;
  std::vector<std::string> m_requests;
};

} // namespace withcache::test
