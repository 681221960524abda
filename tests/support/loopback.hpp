#pragma once

// The socket chores of the hand-written test peers (RawOrigin, ForwardProxy, the red-team peers): a
// listener on 127.0.0.1, a request head read under a deadline, and bytes sent whole.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace withcache::test {

/** A listening socket on 127.0.0.1 and a free port; throws naming `who` when there is none. */
inline int listen_loopback(int& port, const char* who, int backlog = 64) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(fd, backlog) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    if (fd >= 0) {
      ::close(fd);
    }
    throw std::runtime_error(std::string(who) + ": cannot listen on 127.0.0.1");
  }
  port = ntohs(address.sin_port);
  return fd;
}

/** What arrives on `fd` up to the end of a request head (at most 64 KiB; 5 s for each read). */
inline std::string read_request_head(int fd) {
  std::string head;
  char buffer[4096];
  while (head.find("\r\n\r\n") == std::string::npos && head.size() < 65536) {
    pollfd c{fd, POLLIN, 0};
    if (::poll(&c, 1, 5000) != 1) {
      break;
    }
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) {
      break;
    }
    head.append(buffer, static_cast<std::size_t>(n));
  }
  return head;
}

/** Sends all of `bytes`; false once the peer is gone. */
inline bool send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) {
      return false;
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

} // namespace withcache::test
