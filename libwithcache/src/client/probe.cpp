// One HEAD over a plain socket (or OpenSSL for https), with an overall
// deadline. Written against POSIX sockets rather than cpp-httplib so the shim,
// which links this, loads no HTTP library at start-up.
#include "withcache/client/probe.hpp"

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "withcache/url.hpp"
#include "withcache/version.hpp"

namespace withcache::client {
namespace {

using Clock = std::chrono::steady_clock;

class Socket {
 public:
  explicit Socket(int fd) : m_fd(fd) {}
  ~Socket() {
    if (m_fd >= 0) {
      ::close(m_fd);
    }
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  [[nodiscard]] int fd() const noexcept { return m_fd; }

 private:
  int m_fd;
};

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(left);
}

// Connects to the first address that accepts before the deadline; -1 otherwise.
int connect_with_deadline(const std::string& host, int port, Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) {
    return -1;
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(found, ::freeaddrinfo);
  for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      continue;
    }
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      return fd;
    }
    if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, remaining_ms(deadline)) == 1) {
        int error = 0;
        socklen_t length = sizeof error;
        if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == 0) {
          return fd;
        }
      }
    }
    ::close(fd); // refused (at once) or timed out: try the next address
    if (remaining_ms(deadline) == 0) {
      break;
    }
  }
  return -1;
}

bool send_all(int fd, const std::string& data, Clock::time_point deadline) {
  std::size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return false;
    }
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, remaining_ms(deadline)) != 1) {
      return false;
    }
  }
  return true;
}

// "HTTP/1.1 200 OK" → true.
// "HTTP/1.1 404 Not Found" → 404; 0 for anything else.
int status_of(const std::string& head) {
  const std::size_t space = head.find(' ');
  if (!head.starts_with("HTTP/1.") || space == std::string::npos || head.size() < space + 4) {
    return 0;
  }
  int status = 0;
  for (std::size_t i = space + 1; i < space + 4; ++i) {
    if (head[i] < '0' || head[i] > '9') {
      return 0;
    }
    status = status * 10 + (head[i] - '0');
  }
  return status;
}

std::string request_for(const url::Target& target, const ProbeOptions& options) {
  const bool ipv6 = target.host.find(':') != std::string::npos;
  std::string host = ipv6 ? "[" + target.host + "]" : target.host;
  const bool default_port =
      (target.scheme == "http" && target.port == 80) || (target.scheme == "https" && target.port == 443);
  if (!default_port) {
    host += ":" + std::to_string(target.port);
  }
  std::string request = "HEAD " + target.request + " HTTP/1.1\r\nHost: " + host +
                        "\r\nUser-Agent: " + k_product + "\r\nAccept: */*\r\nConnection: close\r\n";
  for (const auto& [name, value] : options.headers) {
    if (name.find_first_of("\r\n:") == std::string::npos &&
        value.find_first_of("\r\n") == std::string::npos) {
      request += name + ": " + value + "\r\n";
    }
  }
  return request + "\r\n";
}

int plain_head(int fd, const std::string& request, Clock::time_point deadline) {
  if (!send_all(fd, request, deadline)) {
    return 0;
  }
  std::string received;
  char buffer[512];
  while (received.find('\n') == std::string::npos && received.size() < 4096) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, remaining_ms(deadline)) != 1) {
      return 0;
    }
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        continue;
      }
      break;
    }
    received.append(buffer, static_cast<std::size_t>(n));
  }
  return status_of(received);
}

int tls_head(int fd, const url::Target& target, const std::string& request, Clock::time_point deadline) {
  // Blocking I/O bounded by socket timeouts keeps the OpenSSL part simple.
  const int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  const int left = remaining_ms(deadline);
  timeval tv{left / 1000, (left % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (!ctx || SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
    return 0;
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
  if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) {
    return 0;
  }
  SSL_set_tlsext_host_name(ssl.get(), target.host.c_str());
  if (SSL_set1_host(ssl.get(), target.host.c_str()) != 1) {
    return 0;
  }
  if (SSL_connect(ssl.get()) != 1 || SSL_get_verify_result(ssl.get()) != X509_V_OK) {
    return 0;
  }
  if (SSL_write(ssl.get(), request.data(), static_cast<int>(request.size())) !=
      static_cast<int>(request.size())) {
    return 0;
  }
  std::string received;
  char buffer[512];
  while (received.find('\n') == std::string::npos && received.size() < 4096 && remaining_ms(deadline) > 0) {
    const int n = SSL_read(ssl.get(), buffer, sizeof buffer);
    if (n <= 0) {
      break;
    }
    received.append(buffer, static_cast<std::size_t>(n));
  }
  return status_of(received);
}

} // namespace

int head_status(const std::string& target_url, const ProbeOptions& options) {
  const auto target = url::parse_target(target_url);
  if (!target || (target->scheme != "http" && target->scheme != "https")) {
    return 0;
  }
  const auto deadline = Clock::now() + options.timeout;
  const int fd = connect_with_deadline(target->host, target->port, deadline);
  if (fd < 0) {
    return 0;
  }
  Socket socket(fd);
  const std::string request = request_for(*target, options);
  return target->scheme == "https" ? tls_head(fd, *target, request, deadline)
                                   : plain_head(fd, request, deadline);
}

bool is_cached(std::string_view server, std::string_view origin, const ProbeOptions& options) {
  return head_status(url::blob_url(server, origin), options) == 200;
}

std::optional<std::string> serve_url(std::string_view server, std::string_view origin,
                                     const ProbeOptions& options) {
  std::string cache_url = url::blob_url(server, origin);
  if (head_status(cache_url, options) == 200) {
    return cache_url;
  }
  return std::nullopt;
}

bool is_healthy(std::string_view server, const ProbeOptions& options) {
  return head_status(url::cache_base(server) + "/healthz", options) == 200;
}

} // namespace withcache::client
