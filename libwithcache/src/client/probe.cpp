// HEADs over plain non-blocking sockets (OpenSSL for https), several at once
// in one poll() loop under one deadline. Written against POSIX sockets rather
// than cpp-httplib so the shim, which links this, loads no HTTP library at
// start-up, and so that nothing here ever blocks past the deadline: connect,
// the TLS handshake, the request and the response are all driven by poll().
#include "withcache/client/probe.hpp"

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "client/nosignal_bio.hpp"
#include "withcache/url.hpp"
#include "withcache/version.hpp"

namespace withcache::client {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t k_max_parallel = 8;
constexpr std::size_t k_max_status_line = 1024;

int remaining_ms(Clock::time_point deadline) {
  const auto left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) {
    return 0;
  }
  // Round up, so that poll() does not wake 1 ms early and spin.
  return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
}

struct Address {
  sockaddr_storage storage{};
  socklen_t length = 0;
};

// An IP literal as an address, without getaddrinfo (no NSS, no thread).
std::optional<Address> numeric_address(const std::string& host, int port) {
  Address address;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&address.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&address.storage);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<std::uint16_t>(port));
    address.length = sizeof(sockaddr_in);
    return address;
  }
  if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<std::uint16_t>(port));
    address.length = sizeof(sockaddr_in6);
    return address;
  }
  return std::nullopt;
}

// getaddrinfo() on a helper thread. poll() cannot bound it, so the caller
// waits on a condition variable until the deadline and then abandons the
// thread: the thread owns a share of this state and frees it when the lookup
// returns on its own (in the shim, execv ends it at once).
struct Lookup {
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  std::vector<Address> addresses;
};

std::shared_ptr<Lookup> start_lookup(const std::string& host, int port) {
  auto lookup = std::make_shared<Lookup>();
  try {
    std::thread([lookup, host, port] {
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* found = nullptr;
      std::vector<Address> addresses;
      if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) == 0) {
        for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
          if (ai->ai_addrlen <= sizeof(sockaddr_storage)) {
            Address a;
            std::memcpy(&a.storage, ai->ai_addr, ai->ai_addrlen);
            a.length = ai->ai_addrlen;
            addresses.push_back(a);
          }
        }
        ::freeaddrinfo(found);
      }
      std::lock_guard lock(lookup->mutex);
      lookup->addresses = std::move(addresses);
      lookup->done = true;
      lookup->done_cv.notify_all();
    }).detach();
  } catch (const std::system_error&) {
    std::lock_guard lock(lookup->mutex);
    lookup->done = true; // no thread: unresolved
  }
  return lookup;
}

// "HTTP/1.1 200 OK" → 200. Strict: HTTP/1.0 or HTTP/1.1, one space, exactly
// three digits, one space; anything else (HTTP/1.10, 2000, HTTP/2, a missing
// reason separator, leading bytes) is not an answer: -1.
int strict_status(std::string_view line) {
  if (!line.empty() && line.back() == '\r') {
    line.remove_suffix(1);
  }
  if (line.size() < 13 || !(line.starts_with("HTTP/1.0 ") || line.starts_with("HTTP/1.1 ")) ||
      line[12] != ' ') {
    return -1;
  }
  int status = 0;
  for (std::size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') {
      return -1;
    }
    status = status * 10 + (line[i] - '0');
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
  // Bytes outside ASCII are percent-encoded on the wire, as curl and wget send them: a strict
  // server refuses a raw one in the request line.
  std::string path;
  for (const char c : target.request) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      char escaped[4];
      std::snprintf(escaped, sizeof escaped, "%%%02X", static_cast<unsigned char>(c));
      path += escaped;
    } else {
      path += c;
    }
  }
  std::string request = "HEAD " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: " + k_product +
                        "\r\nAccept: */*\r\nConnection: close\r\n";
  for (const auto& [name, value] : options.headers) {
    if (name.find_first_of("\r\n:") == std::string::npos &&
        value.find_first_of("\r\n") == std::string::npos) {
      request += name + ": " + value + "\r\n";
    }
  }
  return request + "\r\n";
}

// One HEAD in flight: a small state machine stepped whenever poll() says its socket is ready.
class Attempt {
 public:
  enum class State { waiting, connecting, handshaking, sending, receiving, done };

  Attempt(url::Target target, std::string request, std::vector<Address> addresses, Clock::time_point start)
      : m_target(std::move(target)), m_request(std::move(request)), m_addresses(std::move(addresses)),
        m_start(start) {}
  ~Attempt() { close(); }
  Attempt(const Attempt&) = delete;
  Attempt& operator=(const Attempt&) = delete;

  [[nodiscard]] State state() const { return m_state; }
  [[nodiscard]] int fd() const { return m_fd; }
  [[nodiscard]] short events() const { return m_events; }
  [[nodiscard]] const HeadResult& result() const { return m_result; }

  /** Opens the first connection; may finish at once (nothing to connect to). */
  void start(SSL_CTX* tls) {
    m_tls = tls;
    connect_next(ProbeFailure::unreachable);
  }

  /** Advances after poll() reported `revents`. */
  void step(short revents) {
    switch (m_state) {
    case State::connecting: {
      int error = 0;
      socklen_t length = sizeof error;
      if (::getsockopt(m_fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0 || error != 0) {
        connect_next(ProbeFailure::unreachable); // refused or unreachable: the next address
        return;
      }
      if (m_target.scheme == "https") {
        begin_tls();
      } else {
        m_state = State::sending;
        send_request();
      }
      return;
    }
    case State::handshaking:
      handshake();
      return;
    case State::sending:
      send_request();
      return;
    case State::receiving:
      receive(revents);
      return;
    case State::waiting:
    case State::done:
      return;
    }
  }

  /** The deadline passed: whatever is unfinished failed by timing out. */
  void time_out() {
    if (m_state != State::done) {
      finish(0, ProbeFailure::timed_out);
    }
  }

  void finish(int status, ProbeFailure failure) {
    m_result.status = status;
    m_result.failure = failure;
    m_result.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - m_start);
    m_state = State::done;
    close();
  }

 private:
  void close() {
    if (m_ssl != nullptr) {
      SSL_free(m_ssl); // frees the BIO too
      m_ssl = nullptr;
    }
    if (m_fd >= 0) {
      ::close(m_fd);
      m_fd = -1;
    }
  }

  void connect_next(ProbeFailure failure_if_none) {
    close();
    while (m_next < m_addresses.size()) {
      const Address& address = m_addresses[m_next++];
      m_fd = ::socket(address.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (m_fd < 0) {
        continue;
      }
      if (::connect(m_fd, reinterpret_cast<const sockaddr*>(&address.storage), address.length) == 0 ||
          errno == EINPROGRESS) {
        m_state = State::connecting;
        m_events = POLLOUT;
        return;
      }
      close(); // refused at once: the next address
    }
    finish(0, failure_if_none);
  }

  void begin_tls() {
    BIO* bio = nosignal_socket_bio(m_fd);
    m_ssl = m_tls != nullptr ? SSL_new(m_tls) : nullptr;
    if (bio == nullptr || m_ssl == nullptr) {
      BIO_free(bio);
      finish(0, ProbeFailure::tls);
      return;
    }
    SSL_set_bio(m_ssl, bio, bio);
    // SNI only for names (RFC 6066 forbids IP literals); the certificate is checked against either.
    const bool literal = numeric_address(m_target.host, m_target.port).has_value();
    if ((!literal && SSL_set_tlsext_host_name(m_ssl, m_target.host.c_str()) != 1) ||
        SSL_set1_host(m_ssl, m_target.host.c_str()) != 1) {
      finish(0, ProbeFailure::tls);
      return;
    }
    SSL_set_mode(m_ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    m_state = State::handshaking;
    handshake();
  }

  // Maps an OpenSSL result to a wait; false when the connection failed.
  bool want(int rc) {
    switch (SSL_get_error(m_ssl, rc)) {
    case SSL_ERROR_WANT_READ:
      m_events = POLLIN;
      return true;
    case SSL_ERROR_WANT_WRITE:
      m_events = POLLOUT;
      return true;
    default:
      ERR_clear_error();
      return false;
    }
  }

  void handshake() {
    const int rc = SSL_connect(m_ssl);
    if (rc == 1) {
      if (SSL_get_verify_result(m_ssl) != X509_V_OK) {
        finish(0, ProbeFailure::tls);
        return;
      }
      m_state = State::sending;
      send_request();
      return;
    }
    if (!want(rc)) {
      finish(0, ProbeFailure::tls);
    }
  }

  void send_request() {
    while (m_sent < m_request.size()) {
      const char* data = m_request.data() + m_sent;
      const std::size_t left = m_request.size() - m_sent;
      if (m_ssl != nullptr) {
        const int n = SSL_write(m_ssl, data, static_cast<int>(left));
        if (n > 0) {
          m_sent += static_cast<std::size_t>(n);
          continue;
        }
        if (!want(n)) {
          finish(0, ProbeFailure::unreachable);
        }
        return;
      }
      const ssize_t n = ::send(m_fd, data, left, MSG_NOSIGNAL);
      if (n > 0) {
        m_sent += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        m_events = POLLOUT;
        return;
      }
      finish(0, ProbeFailure::unreachable);
      return;
    }
    m_state = State::receiving;
    m_events = POLLIN;
    if (m_ssl != nullptr && SSL_pending(m_ssl) > 0) {
      receive(POLLIN);
    }
  }

  void receive(short revents) {
    char buffer[512];
    for (;;) {
      int n = 0;
      if (m_ssl != nullptr) {
        n = SSL_read(m_ssl, buffer, sizeof buffer);
        if (n <= 0) {
          if (want(n)) {
            return;
          }
          break; // closed or failed
        }
      } else {
        const ssize_t got = ::recv(m_fd, buffer, sizeof buffer, 0);
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
          m_events = POLLIN;
          if ((revents & (POLLERR | POLLHUP)) != 0 && (revents & POLLIN) == 0) {
            break;
          }
          return;
        }
        if (got <= 0) {
          break;
        }
        n = static_cast<int>(got);
      }
      m_received.append(buffer, static_cast<std::size_t>(n));
      const std::size_t newline = m_received.find('\n');
      if (newline != std::string::npos) {
        const int status =
            newline < k_max_status_line ? strict_status(std::string_view(m_received).substr(0, newline)) : -1;
        finish(status < 0 ? 0 : status, status < 0 ? ProbeFailure::not_http : ProbeFailure::none);
        return;
      }
      if (m_received.size() >= k_max_status_line) {
        finish(0, ProbeFailure::not_http); // a first line longer than any status line
        return;
      }
    }
    // The connection ended before a whole status line arrived.
    finish(0, m_received.empty() ? ProbeFailure::unreachable : ProbeFailure::not_http);
  }

  url::Target m_target;
  std::string m_request;
  std::vector<Address> m_addresses;
  Clock::time_point m_start;
  SSL_CTX* m_tls = nullptr;
  std::size_t m_next = 0;
  int m_fd = -1;
  SSL* m_ssl = nullptr;
  State m_state = State::waiting;
  short m_events = 0;
  std::size_t m_sent = 0;
  std::string m_received;
  HeadResult m_result;
};

using SslCtx = std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>;

SslCtx make_tls_context() {
  SslCtx ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (ctx && SSL_CTX_set_default_verify_paths(ctx.get()) == 1) {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    return ctx;
  }
  return SslCtx(nullptr, SSL_CTX_free);
}

} // namespace

const char* describe(ProbeFailure failure) {
  switch (failure) {
  case ProbeFailure::none:
    return "answered";
  case ProbeFailure::bad_url:
    return "not an http or https URL";
  case ProbeFailure::unresolved:
    return "host name did not resolve";
  case ProbeFailure::unreachable:
    return "connection refused or unreachable";
  case ProbeFailure::timed_out:
    return "timed out";
  case ProbeFailure::tls:
    return "TLS handshake or certificate check failed";
  case ProbeFailure::not_http:
    return "answer is not an HTTP/1.x status line";
  }
  return "failed";
}

std::vector<HeadResult> head_all(const std::vector<std::string>& urls, const ProbeOptions& options) {
  const auto start = Clock::now();
  const auto deadline = start + options.timeout;
  std::vector<HeadResult> results(urls.size());
  std::vector<std::unique_ptr<Attempt>> attempts(urls.size());

  // Addresses: IP literals at once; each distinct host name looked up once, all concurrently.
  std::map<std::pair<std::string, int>, std::shared_ptr<Lookup>> lookups;
  std::vector<std::optional<url::Target>> targets(urls.size());
  bool any_tls = false;
  for (std::size_t i = 0; i < urls.size(); ++i) {
    auto target = url::parse_target(urls[i]);
    if (!target || (target->scheme != "http" && target->scheme != "https") || target->host.empty()) {
      results[i].failure = ProbeFailure::bad_url;
      continue;
    }
    any_tls = any_tls || target->scheme == "https";
    const auto key = std::make_pair(target->host, target->port);
    if (!numeric_address(target->host, target->port) && lookups.find(key) == lookups.end()) {
      lookups.emplace(key, start_lookup(target->host, target->port));
    }
    targets[i] = std::move(*target);
  }
  for (auto& [key, lookup] : lookups) {
    std::unique_lock lock(lookup->mutex);
    lookup->done_cv.wait_until(lock, deadline, [&] { return lookup->done; });
  }

  const SslCtx tls = any_tls ? make_tls_context() : SslCtx(nullptr, SSL_CTX_free);
  std::vector<std::size_t> pending;
  for (std::size_t i = 0; i < urls.size(); ++i) {
    if (!targets[i]) {
      continue;
    }
    std::vector<Address> addresses;
    if (auto literal = numeric_address(targets[i]->host, targets[i]->port)) {
      addresses.push_back(*literal);
    } else {
      const auto& lookup = lookups.at({targets[i]->host, targets[i]->port});
      std::lock_guard lock(lookup->mutex);
      if (!lookup->done) {
        results[i].failure = ProbeFailure::timed_out;
        results[i].elapsed = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
        continue;
      }
      addresses = lookup->addresses;
      if (addresses.empty()) {
        results[i].failure = ProbeFailure::unresolved;
        results[i].elapsed = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
        continue;
      }
    }
    std::string request = request_for(*targets[i], options);
    attempts[i] =
        std::make_unique<Attempt>(std::move(*targets[i]), std::move(request), std::move(addresses), start);
    pending.push_back(i);
  }

  std::size_t next_pending = 0;
  std::vector<std::size_t> active;
  std::vector<pollfd> fds;
  for (;;) {
    // Fill the free slots; an attempt that cannot even start finishes here.
    while (active.size() < k_max_parallel && next_pending < pending.size() && remaining_ms(deadline) > 0) {
      const std::size_t i = pending[next_pending++];
      attempts[i]->start(tls.get());
      if (attempts[i]->state() != Attempt::State::done) {
        active.push_back(i);
      }
    }
    if (active.empty()) {
      break;
    }
    const int wait = remaining_ms(deadline);
    if (wait == 0) {
      for (const std::size_t i : active) {
        attempts[i]->time_out();
      }
      break;
    }
    fds.clear();
    for (const std::size_t i : active) {
      fds.push_back(pollfd{attempts[i]->fd(), attempts[i]->events(), 0});
    }
    const int ready = ::poll(fds.data(), fds.size(), wait);
    if (ready < 0 && errno != EINTR) {
      for (const std::size_t i : active) {
        attempts[i]->finish(0, ProbeFailure::unreachable);
      }
      break;
    }
    for (std::size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents != 0) {
        attempts[active[k]]->step(fds[k].revents);
      }
    }
    std::erase_if(active, [&](std::size_t i) { return attempts[i]->state() == Attempt::State::done; });
  }
  for (std::size_t i = 0; i < urls.size(); ++i) {
    if (attempts[i]) {
      attempts[i]->time_out(); // never started before the deadline
      results[i] = attempts[i]->result();
    }
  }
  return results;
}

HeadResult head(const std::string& url, const ProbeOptions& options) {
  return head_all({url}, options).front();
}

int head_status(const std::string& target_url, const ProbeOptions& options) {
  return head(target_url, options).status;
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
