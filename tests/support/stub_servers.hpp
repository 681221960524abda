#pragma once

// Misbehaving servers on 127.0.0.1 for probe tests, each on its own thread,
// stopped by their destructor (every poll() has a short timeout, so stopping
// is prompt):
//  - HungServer accepts connections and never answers a byte;
//  - TrickleServer answers each connection with `payload`, one byte every
//    `interval`, for as long as the connection stays open (a TLS handshake
//    that never completes, or a status line that never ends).

#include <atomic>
#include <chrono>
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

class StubServer {
 public:
  StubServer() {
    m_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (m_fd < 0 || ::bind(m_fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(m_fd, 128) != 0 ||
        ::getsockname(m_fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error("StubServer: cannot listen on 127.0.0.1");
    }
    m_port = ntohs(address.sin_port);
  }
  virtual ~StubServer() = default;
  StubServer(const StubServer&) = delete;
  StubServer& operator=(const StubServer&) = delete;

  [[nodiscard]] int port() const noexcept { return m_port; }
  [[nodiscard]] std::string authority() const { return "127.0.0.1:" + std::to_string(m_port); }
  /** Connections accepted so far. */
  [[nodiscard]] int connections() const { return m_connections.load(); }

 protected:
  // Call from the derived constructor: serves until the object is destroyed.
  void start(std::chrono::milliseconds interval, std::string payload) {
    m_thread = std::thread([this, interval, payload = std::move(payload)] { serve(interval, payload); });
  }
  // Call first thing in the derived destructor.
  void stop() {
    m_stopping = true;
    if (m_thread.joinable()) {
      m_thread.join();
    }
    for (const int client : m_clients) {
      ::close(client);
    }
    ::close(m_fd);
  }

 private:
  void serve(std::chrono::milliseconds interval, const std::string& payload) {
    std::vector<std::size_t> sent;
    auto next = std::chrono::steady_clock::now() + interval;
    while (!m_stopping) {
      pollfd p{m_fd, POLLIN, 0};
      if (::poll(&p, 1, 5) == 1) {
        const int client = ::accept4(m_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (client >= 0) {
          m_clients.push_back(client);
          sent.push_back(0);
          ++m_connections;
        }
      }
      if (payload.empty() || std::chrono::steady_clock::now() < next) {
        continue;
      }
      next += interval;
      for (std::size_t i = 0; i < m_clients.size(); ++i) {
        if (m_clients[i] >= 0 && sent[i] < payload.size() &&
            ::send(m_clients[i], payload.data() + sent[i], 1, MSG_NOSIGNAL) == 1) {
          ++sent[i];
        }
      }
    }
  }

  int m_fd = -1;
  int m_port = 0;
  std::atomic<bool> m_stopping{false};
  std::atomic<int> m_connections{0};
  std::vector<int> m_clients;
  std::thread m_thread;
};

/** Accepts and never answers. */
class HungServer : public StubServer {
 public:
  HungServer() { start(std::chrono::milliseconds(5), {}); }
  ~HungServer() override { stop(); }
};

/** Sends `payload` to each connection, one byte per `interval`. */
class TrickleServer : public StubServer {
 public:
  TrickleServer(std::string payload, std::chrono::milliseconds interval) {
    start(interval, std::move(payload));
  }
  ~TrickleServer() override { stop(); }
};

} // namespace withcache::test
