// Fuzzes the client connection's response reading (origin::HttpConnection over Beast's parser): any
// bytes a peer sends end in a head and a body, or in one error, within the head limits; a body never
// exceeds what was sent, and a declared Content-Length is what an accepted body has.
#include <string>
#include <string_view>

#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_target.hpp"
#include "http/http.hpp"
#include "origin/http_client.hpp"
#include "withcache/util/strings.hpp"

namespace origin = withcache::origin;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 200'000) {
    return 0; // more than the socket buffer holds without a reader
  }
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return 0;
  }
  int buffer = 1 << 20;
  ::setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
  std::size_t sent = 0;
  while (sent < size) {
    const ssize_t n = ::send(fds[1], data + sent, size - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      break;
    }
    sent += static_cast<std::size_t>(n);
  }
  ::close(fds[1]);

  origin::HttpConnection connection;
  origin::Endpoint endpoint;
  endpoint.scheme = "http";
  endpoint.host = "fuzz.invalid";
  endpoint.port = 80;
  endpoint.io_timeout = std::chrono::milliseconds(1000);
  connection.adopt(fds[0], endpoint);
  const origin::HeadLimits limits{4096, 20};
  auto head = connection.read_head(limits);
  if (!head) {
    WITHCACHE_FUZZ_CHECK(!head.error().message.empty());
    return 0;
  }
  WITHCACHE_FUZZ_CHECK(head->status >= 100 && head->status <= 999);
  WITHCACHE_FUZZ_CHECK(head->fields.size() <= limits.max_fields);
  WITHCACHE_FUZZ_CHECK(!origin::framing_error(*head));
  std::string body;
  const auto error = connection.read_body([&](const char* piece, std::size_t length) {
    body.append(piece, length);
    return true;
  });
  WITHCACHE_FUZZ_CHECK(body.size() <= sent);
  if (!error && head->has("Content-Length") && head->status >= 200 && head->status != 204 &&
      head->status != 304) {
    const auto declared = withcache::http::parse_decimal(withcache::util::trim(head->get("Content-Length")));
    WITHCACHE_FUZZ_CHECK(declared && *declared == body.size());
  }
  return 0;
}
