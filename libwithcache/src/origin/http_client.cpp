#include "origin/http_client.hpp"

#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>

#include "client/nosignal_bio.hpp"
#include "http/http.hpp"
#include "withcache/url.hpp"
#include "withcache/util/encoding.hpp"
#include "withcache/util/strings.hpp"

namespace withcache::origin {
namespace {

namespace beast_http = boost::beast::http;
using Clock = std::chrono::steady_clock;
using boost::beast::error_code;

// One read from the socket: large enough that a fast origin costs few syscalls per GiB.
constexpr std::size_t k_read_size = 256 * 1024;
constexpr const char* k_system_ca_bundle = "/etc/ssl/certs/ca-certificates.crt";

WireError wire_error(WireErrc code, std::string message) {
  return WireError{code, std::move(message)};
}

std::string bracketed(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

bool is_ip_literal(const std::string& host) {
  in6_addr v6{};
  in_addr v4{};
  return ::inet_pton(AF_INET, host.c_str(), &v4) == 1 || ::inet_pton(AF_INET6, host.c_str(), &v6) == 1;
}

// The TLS client context of a CA bundle, made once per bundle: loading the system store costs
// milliseconds that every fill attempt would otherwise pay again.
std::shared_ptr<SSL_CTX> tls_context(const std::string& ca_file, std::string& error) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<SSL_CTX>> contexts;
  std::lock_guard lock(mutex);
  if (const auto it = contexts.find(ca_file); it != contexts.end()) {
    return it->second;
  }
  std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (!ctx) {
    error = "cannot create a TLS context";
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  int loaded = 0;
  if (!ca_file.empty()) {
    loaded = SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr);
  } else if (::access(k_system_ca_bundle, R_OK) == 0) {
    loaded = SSL_CTX_load_verify_locations(ctx.get(), k_system_ca_bundle, nullptr);
  } else {
    loaded = SSL_CTX_set_default_verify_paths(ctx.get());
  }
  if (loaded != 1) {
    ERR_clear_error();
    error = "cannot load the CA certificates" + (ca_file.empty() ? std::string() : " from " + ca_file);
    return nullptr;
  }
  contexts.emplace(ca_file, ctx);
  return ctx;
}

// The last OpenSSL error as text (the queue is cleared), or `fallback`.
std::string tls_error_text(const char* fallback) {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) {
    return fallback;
  }
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

// Beast's parser with our callbacks: fields are kept (counted against the limit), body pieces go to
// the sink as they are parsed, so no body byte is copied into a second buffer.
class ResponseParser final : public beast_http::basic_parser<false> {
 public:
  explicit ResponseParser(std::size_t max_fields) : m_max_fields(max_fields) {}

  ResponseHead head;
  std::size_t fields = 0;
  bool too_many_fields = false;
  bool header_done = false;
  bool sink_stopped = false;
  const HttpConnection::BodySink* sink = nullptr;

 private:
  void on_request_impl(beast_http::verb, std::string_view, std::string_view, int, error_code& ec) override {
    ec = beast_http::error::bad_method; // a response parser never sees a request line
  }
  void on_response_impl(int code, std::string_view, int, error_code&) override { head.status = code; }
  void on_field_impl(beast_http::field, std::string_view name, std::string_view value,
                     error_code& ec) override {
    if (++fields > m_max_fields) {
      too_many_fields = true;
      ec = beast_http::error::header_limit;
      return;
    }
    if (!header_done) {
      head.fields.emplace_back(std::string(name), std::string(value));
    } // trailers are counted, not kept
  }
  void on_header_impl(error_code&) override { header_done = true; }
  void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
  std::size_t on_body_impl(std::string_view body, error_code& ec) override { return deliver(body, ec); }
  void on_chunk_header_impl(std::uint64_t, std::string_view, error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, std::string_view body, error_code& ec) override {
    return deliver(body, ec);
  }
  void on_finish_impl(error_code&) override {}

  std::size_t deliver(std::string_view body, error_code& ec) {
    if (sink == nullptr || !(*sink)(body.data(), body.size())) {
      sink_stopped = true;
      ec = beast_http::error::end_of_stream; // any error stops the parser; sink_stopped says which
    }
    return body.size();
  }

  std::size_t m_max_fields;
};

} // namespace

bool ResponseHead::has(std::string_view name) const {
  return http::find_field(fields, name).has_value();
}

std::string ResponseHead::get(std::string_view name) const {
  return std::string(http::find_field(fields, name).value_or(""));
}

std::vector<std::string> ResponseHead::all(std::string_view name) const {
  std::vector<std::string> values;
  for (const auto& [field, value] : fields) {
    if (util::iequals(field, name)) {
      values.push_back(value);
    }
  }
  return values;
}

struct HttpConnection::State {
  int fd = -1;
  int wake = -1; // eventfd: interrupt() makes it readable
  std::atomic<bool> interrupted{false};
  std::shared_ptr<SSL_CTX> tls;
  SSL* ssl = nullptr;
  Endpoint endpoint;
  // Received, not yet parsed: in[from, until). Not a vector: growing one zeroes what recv() then overwrites.
  std::unique_ptr<char[]> in;
  std::size_t capacity = 0;
  std::size_t from = 0;
  std::size_t until = 0;
  HeadLimits limits;
  std::unique_ptr<ResponseParser> parser;
  std::size_t head_bytes = 0; // of this exchange's heads so far (interim ones included)

  ~State() {
    if (ssl != nullptr) {
      SSL_free(ssl);
    }
    if (fd >= 0) {
      ::close(fd);
    }
    if (wake >= 0) {
      ::close(wake);
    }
  }

  [[nodiscard]] std::size_t buffered() const { return until - from; }

  // Waits until the socket is ready for `events`, at most `timeout`.
  std::optional<WireError> wait(short events, std::chrono::milliseconds timeout, const char* what) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      if (interrupted.load()) {
        return wire_error(WireErrc::interrupted, "interrupted");
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        return wire_error(WireErrc::timeout, std::string(what) + " timed out");
      }
      pollfd fds[2] = {{fd, events, 0}, {wake, POLLIN, 0}};
      const int rc = ::poll(fds, 2, static_cast<int>(std::min<std::int64_t>(left.count(), 1 << 30)));
      if (rc < 0 && errno != EINTR) {
        return wire_error(WireErrc::connect, std::string("poll failed: ") + std::strerror(errno));
      }
      if (interrupted.load()) {
        return wire_error(WireErrc::interrupted, "interrupted");
      }
      if (rc > 0 && fds[0].revents != 0) {
        return std::nullopt; // ready, or an error/hangup the next call reports
      }
    }
  }

  // Reads what is there (at least one byte unless the peer closed: 0).
  Expected<std::size_t, WireError> read_some(char* data, std::size_t size) {
    for (;;) {
      if (interrupted.load()) {
        return unexpected(wire_error(WireErrc::interrupted, "interrupted"));
      }
      if (ssl != nullptr) {
        const int n = SSL_read(ssl, data, static_cast<int>(std::min<std::size_t>(size, 1 << 30)));
        if (n > 0) {
          return static_cast<std::size_t>(n);
        }
        const int reason = SSL_get_error(ssl, n);
        if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE) {
          if (auto e = wait(reason == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, endpoint.io_timeout, "read")) {
            return unexpected(std::move(*e));
          }
          continue;
        }
        if (reason == SSL_ERROR_ZERO_RETURN) {
          return std::size_t{0}; // close_notify: the only end of TLS that proves nothing was cut
        }
        // A bare FIN or a reset: anyone on the path can forge one. A framed message (Content-Length,
        // chunked) is judged by its framing before we ever read past its end; an until-close body
        // ending this way is a failure, not a complete artifact (the TLS truncation attack).
        return unexpected(wire_error(WireErrc::closed, "the TLS peer closed without close_notify (" +
                                                           tls_error_text("connection reset") + ")"));
      }
      const ssize_t n = ::recv(fd, data, size, 0);
      if (n >= 0) {
        return static_cast<std::size_t>(n);
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        if (auto e = wait(POLLIN, endpoint.io_timeout, "read")) {
          return unexpected(std::move(*e));
        }
        continue;
      }
      // A reset is not an end: an until-close body cut by one is not whole.
      return unexpected(wire_error(WireErrc::closed, std::string("read failed: ") + std::strerror(errno)));
    }
  }

  std::optional<WireError> write_all(std::string_view bytes) {
    while (!bytes.empty()) {
      if (interrupted.load()) {
        return wire_error(WireErrc::interrupted, "interrupted");
      }
      if (ssl != nullptr) {
        const int n =
            SSL_write(ssl, bytes.data(), static_cast<int>(std::min<std::size_t>(bytes.size(), 1 << 30)));
        if (n > 0) {
          bytes.remove_prefix(static_cast<std::size_t>(n));
          continue;
        }
        const int reason = SSL_get_error(ssl, n);
        if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE) {
          if (auto e = wait(reason == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, endpoint.io_timeout, "write")) {
            return e;
          }
          continue;
        }
        return wire_error(WireErrc::connect, "write failed: " + tls_error_text("connection closed"));
      }
      const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n > 0) {
        bytes.remove_prefix(static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        if (auto e = wait(POLLOUT, endpoint.io_timeout, "write")) {
          return e;
        }
        continue;
      }
      return wire_error(WireErrc::connect, std::string("write failed: ") + std::strerror(errno));
    }
    return std::nullopt;
  }

  // Appends up to k_read_size received bytes to `in`; 0 when the peer closed.
  Expected<std::size_t, WireError> fill() {
    if (from == until) {
      from = until = 0;
    }
    if (capacity - until < k_read_size) {
      // Keep the unparsed bytes (a partial head or chunk line, bounded by the head budget) at the front.
      if (from > 0) {
        std::memmove(in.get(), in.get() + from, until - from);
        until -= from;
        from = 0;
      }
      if (capacity - until < k_read_size) {
        auto bigger = std::make_unique_for_overwrite<char[]>(until + k_read_size);
        if (until > 0) {
          std::memcpy(bigger.get(), in.get(), until);
        }
        in = std::move(bigger);
        capacity = until + k_read_size;
      }
    }
    auto n = read_some(in.get() + until, k_read_size);
    until += n ? *n : 0;
    return n;
  }

  std::optional<WireError> connect_tcp(const std::string& host, int port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* found = nullptr;
    const std::string service = std::to_string(port);
    if (const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
      return wire_error(WireErrc::connect, "cannot resolve " + host + ": " + ::gai_strerror(rc));
    }
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(found, ::freeaddrinfo);
    const auto deadline = Clock::now() + endpoint.connect_timeout;
    std::string last = "no address";
    for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
      const int s = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
      if (s < 0) {
        last = std::strerror(errno);
        continue;
      }
      if (::connect(s, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        last = std::strerror(errno);
        ::close(s);
        continue;
      }
      fd = s;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (auto e = wait(POLLOUT, std::max(left, std::chrono::milliseconds(1)), "connect")) {
        ::close(fd);
        fd = -1;
        return e;
      }
      int so_error = 0;
      socklen_t length = sizeof so_error;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &length);
      if (so_error == 0) {
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return std::nullopt;
      }
      last = std::strerror(so_error);
      ::close(fd);
      fd = -1;
    }
    return wire_error(WireErrc::connect,
                      "cannot connect to " + bracketed(host) + ":" + service + ": " + last);
  }

  std::optional<WireError> handshake() {
    std::string error;
    tls = tls_context(endpoint.ca_file, error);
    if (!tls) {
      return wire_error(WireErrc::tls, error);
    }
    ssl = SSL_new(tls.get());
    BIO* bio = client::nosignal_socket_bio(fd); // never SIGPIPE in a host program
    if (ssl == nullptr || bio == nullptr) {
      BIO_free(bio);
      return wire_error(WireErrc::tls, "cannot start TLS");
    }
    SSL_set_bio(ssl, bio, bio);
    const bool ip = is_ip_literal(endpoint.host);
    if (!ip) {
      SSL_set_tlsext_host_name(ssl, endpoint.host.c_str());
    }
    if (endpoint.verify) {
      SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      const int set = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, endpoint.host.c_str())
                         : X509_VERIFY_PARAM_set1_host(param, endpoint.host.c_str(), endpoint.host.size());
      if (set != 1) {
        return wire_error(WireErrc::tls, "cannot set the certificate name to check");
      }
    }
    const auto deadline = Clock::now() + endpoint.connect_timeout;
    for (;;) {
      const int rc = SSL_connect(ssl);
      if (rc == 1) {
        return std::nullopt;
      }
      const int reason = SSL_get_error(ssl, rc);
      if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (auto e = wait(reason == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
                          std::max(left, std::chrono::milliseconds(1)), "TLS handshake")) {
          return e;
        }
        continue;
      }
      const long verified = SSL_get_verify_result(ssl);
      std::string why = verified != X509_V_OK ? X509_verify_cert_error_string(verified)
                                              : tls_error_text("the peer closed the connection");
      return wire_error(WireErrc::tls, "TLS handshake with " + bracketed(endpoint.host) + " failed: " + why);
    }
  }

  // Feeds `parser` what is buffered until `done()` holds, reading more as needed. `phase` names what
  // is being read in messages.
  template <class Done> std::optional<WireError> parse_until(Done done, bool in_head) {
    for (;;) {
      if (buffered() > 0) {
        error_code ec;
        const std::size_t used = parser->put(boost::asio::const_buffer(in.get() + from, buffered()), ec);
        if (ec && ec != beast_http::error::need_more) {
          return parse_error(ec); // `from` still at what was fed: the error may quote the raw head
        }
        from += used;
        if (in_head) {
          head_bytes += used;
        }
        if (done()) {
          return std::nullopt;
        }
        if (!ec && used > 0) {
          continue; // more structure in what is buffered
        }
      }
      // What is buffered is not a whole element: a head, a chunk-size line or trailer may not grow
      // past the head budget.
      if (buffered() > limits.max_bytes || (in_head && head_bytes + buffered() > limits.max_bytes)) {
        return wire_error(WireErrc::malformed,
                          in_head ? "response head over " + std::to_string(limits.max_bytes) + " bytes"
                                  : "a chunk header or trailer over " + std::to_string(limits.max_bytes) +
                                        " bytes");
      }
      auto n = fill();
      if (!n) {
        return n.error();
      }
      if (*n == 0) {
        error_code ec;
        if (parser->got_some() || !in_head) {
          parser->put_eof(ec);
        }
        if (!ec && done()) {
          return std::nullopt;
        }
        if (in_head) {
          return wire_error(parser->got_some() ? WireErrc::malformed : WireErrc::closed,
                            parser->got_some() ? "the connection closed inside the response head"
                                               : "the connection closed before a response head");
        }
        return wire_error(WireErrc::closed, "the connection closed before the body ended");
      }
    }
  }

  WireError parse_error(const error_code& ec) {
    if (parser->sink_stopped) {
      return wire_error(WireErrc::aborted, "stopped");
    }
    if (parser->too_many_fields) {
      return wire_error(WireErrc::malformed, "response head has more than " +
                                                 std::to_string(limits.max_fields) + " header fields");
    }
    if (ec == beast_http::error::header_limit) {
      return wire_error(WireErrc::malformed,
                        "response head over " + std::to_string(limits.max_bytes) + " bytes");
    }
    if (ec == beast_http::error::bad_content_length || ec == beast_http::error::bad_transfer_encoding) {
      // Beast refuses ambiguous framing before it hands us the fields; say which, from the raw head.
      return wire_error(WireErrc::malformed, framing_problem().value_or("ambiguous message framing"));
    }
    if (ec == beast_http::error::partial_message || ec == beast_http::error::short_read) {
      return wire_error(WireErrc::closed, "the connection closed before the body ended");
    }
    return wire_error(WireErrc::malformed, "malformed response (" + ec.message() + ")");
  }

  // The framing fields of the head that is buffered, described as a person would.
  std::optional<std::string> framing_problem() const {
    const std::string_view text(in.get() + from, buffered());
    const std::size_t end = text.find("\r\n\r\n");
    const std::size_t status_end = text.find("\r\n");
    if (end == std::string_view::npos || status_end == std::string_view::npos || status_end >= end) {
      return std::nullopt;
    }
    ResponseHead raw;
    std::string_view lines = text.substr(status_end + 2, end - status_end);
    while (!lines.empty()) {
      const std::size_t eol = lines.find("\r\n");
      const std::string_view line = lines.substr(0, eol);
      lines = eol == std::string_view::npos ? std::string_view{} : lines.substr(eol + 2);
      if (const auto field = http::parse_header_line(line)) {
        raw.fields.push_back(*field);
      }
    }
    return framing_error(raw);
  }
};

std::optional<std::string> framing_error(const ResponseHead& head) {
  const auto lengths = head.all("Content-Length");
  const auto encodings = head.all("Transfer-Encoding");
  if (lengths.size() > 1) {
    return lengths[0] == lengths[1]
               ? "duplicate Content-Length headers (" + lengths[0] + ")"
               : "conflicting Content-Length headers (" + lengths[0] + " and " + lengths[1] + ")";
  }
  if (!encodings.empty()) {
    if (!lengths.empty()) {
      return std::string("both Content-Length and Transfer-Encoding");
    }
    if (encodings.size() > 1 || !util::iequals(util::trim(encodings[0]), "chunked")) {
      return "unsupported Transfer-Encoding (" + encodings[0] + ")";
    }
  }
  if (!lengths.empty() && !http::parse_decimal(util::trim(lengths[0]))) {
    return "malformed Content-Length (" + lengths[0] + ")";
  }
  return std::nullopt;
}

HttpConnection::HttpConnection() : m_state(std::make_unique<State>()) {
  m_state->wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

HttpConnection::~HttpConnection() = default;

void HttpConnection::interrupt() noexcept {
  m_state->interrupted.store(true);
  if (m_state->wake >= 0) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(m_state->wake, &one, sizeof one);
  }
}

std::optional<WireError> HttpConnection::open(const Endpoint& endpoint) {
  State& s = *m_state;
  if (s.wake < 0) {
    return wire_error(WireErrc::connect, "cannot create an eventfd");
  }
  s.endpoint = endpoint;
  if (endpoint.proxy) {
    if (auto e = s.connect_tcp(endpoint.proxy->host, endpoint.proxy->port)) {
      e->message = "proxy: " + e->message;
      return e;
    }
    if (endpoint.scheme == "https") {
      const std::string authority = bracketed(endpoint.host) + ":" + std::to_string(endpoint.port);
      std::string connect = "CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n";
      if (!endpoint.proxy->user.empty()) {
        connect += "Proxy-Authorization: Basic " +
                   util::base64_encode(endpoint.proxy->user + ":" + endpoint.proxy->password) + "\r\n";
      }
      connect += "\r\n";
      if (auto e = s.write_all(connect)) {
        return e;
      }
      auto head = read_head(k_head_limits, /*no_body=*/true);
      if (!head) {
        return wire_error(head.error().code, "proxy: " + head.error().message);
      }
      if (head->status < 200 || head->status > 299) {
        return wire_error(WireErrc::connect, "proxy refused the tunnel to " + authority + " (HTTP " +
                                                 std::to_string(head->status) + ")");
      }
      if (s.buffered() > 0) {
        return wire_error(WireErrc::malformed, "proxy sent bytes before the TLS handshake");
      }
      s.parser.reset();
    }
  } else if (auto e =
                 s.connect_tcp(endpoint.address.empty() ? endpoint.host : endpoint.address, endpoint.port)) {
    return e;
  }
  if (endpoint.scheme == "https") {
    return s.handshake();
  }
  return std::nullopt;
}

void HttpConnection::adopt(int fd, const Endpoint& endpoint) {
  State& s = *m_state;
  s.endpoint = endpoint;
  s.fd = fd;
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

std::optional<WireError> HttpConnection::send(std::string_view method, std::string_view target,
                                              const Headers& headers, std::string_view body) {
  State& s = *m_state;
  const Endpoint& e = s.endpoint;
  const bool default_port = (e.scheme == "http" && e.port == 80) || (e.scheme == "https" && e.port == 443);
  const std::string host = bracketed(e.host) + (default_port ? "" : ":" + std::to_string(e.port));
  std::string text(method);
  text += ' ';
  if (e.proxy && e.scheme == "http") {
    text += "http://" + host; // absolute form through a plain proxy
  }
  text += target;
  text += " HTTP/1.1\r\nHost: " + host + "\r\n";
  for (const auto& [name, value] : headers) {
    if (auto bad = http::check_field(name, value)) {
      return wire_error(WireErrc::malformed, *bad);
    }
    text += name + ": " + value + "\r\n";
  }
  if (e.proxy && e.scheme == "http" && !e.proxy->user.empty()) {
    text +=
        "Proxy-Authorization: Basic " + util::base64_encode(e.proxy->user + ":" + e.proxy->password) + "\r\n";
  }
  if (!body.empty() || method == "POST" || method == "PUT") {
    text += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  text += "Connection: close\r\n\r\n";
  text += body;
  return s.write_all(text);
}

Expected<ResponseHead, WireError> HttpConnection::read_head(const HeadLimits& limits, bool no_body) {
  State& s = *m_state;
  s.limits = limits;
  s.head_bytes = 0;
  std::size_t fields_before = 0;
  for (;;) {
    s.parser =
        std::make_unique<ResponseParser>(limits.max_fields - std::min(fields_before, limits.max_fields));
    // What is left of the budget: interim heads before this one spent the rest.
    const std::size_t left = limits.max_bytes - std::min(s.head_bytes, limits.max_bytes);
    s.parser->header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(left, UINT32_MAX)));
    // No limit; not boost::none, which Beast 1.74 compares as smaller than every length.
    s.parser->body_limit(std::numeric_limits<std::uint64_t>::max());
    s.parser->eager(false);
    s.parser->skip(no_body);
    if (auto e = s.parse_until([&] { return s.parser->header_done; }, /*in_head=*/true)) {
      if (e->code == WireErrc::malformed && s.parser->too_many_fields) {
        e->message = "response head has more than " + std::to_string(limits.max_fields) + " header fields";
      }
      return unexpected(std::move(*e));
    }
    const int status = s.parser->head.status;
    if (status < 100) {
      return unexpected(
          wire_error(WireErrc::malformed, "malformed response (status " + std::to_string(status) + ")"));
    }
    if (status >= 100 && status < 200 && status != 101) {
      fields_before += s.parser->fields; // an interim response: the real one follows
      if (s.head_bytes > limits.max_bytes) {
        return unexpected(wire_error(WireErrc::malformed,
                                     "response heads over " + std::to_string(limits.max_bytes) + " bytes"));
      }
      continue;
    }
    if (auto bad = framing_error(s.parser->head)) {
      return unexpected(wire_error(WireErrc::malformed, *bad));
    }
    return s.parser->head;
  }
}

std::optional<WireError> HttpConnection::read_body(const BodySink& sink) {
  State& s = *m_state;
  if (!s.parser || !s.parser->header_done) {
    return wire_error(WireErrc::malformed, "no response head was read");
  }
  if (s.parser->is_done()) {
    return std::nullopt;
  }
  s.parser->sink = &sink;
  s.parser->eager(true);
  auto result = s.parse_until([&] { return s.parser->is_done(); }, /*in_head=*/false);
  s.parser->sink = nullptr;
  return result;
}

Expected<SmallResponse, WireError> request_small(std::string_view method, const std::string& url,
                                                 const Headers& headers, std::string_view body,
                                                 std::chrono::milliseconds timeout, std::size_t max_body) {
  const auto target = url::parse_target(url);
  if (!target || (target->scheme != "http" && target->scheme != "https")) {
    return unexpected(wire_error(WireErrc::connect, "not an http or https URL"));
  }
  Endpoint endpoint;
  endpoint.scheme = target->scheme;
  endpoint.host = target->host;
  endpoint.port = target->port;
  endpoint.connect_timeout = timeout;
  endpoint.io_timeout = timeout;
  HttpConnection connection;
  if (auto e = connection.open(endpoint)) {
    return unexpected(std::move(*e));
  }
  if (auto e = connection.send(method, target->request, headers, body)) {
    return unexpected(std::move(*e));
  }
  auto head = connection.read_head(k_head_limits, method == "HEAD");
  if (!head) {
    return unexpected(head.error());
  }
  SmallResponse response{std::move(*head), {}};
  bool too_long = false;
  auto e = connection.read_body([&](const char* data, std::size_t size) {
    if (response.body.size() + size > max_body) {
      too_long = true;
      return false;
    }
    response.body.append(data, size);
    return true;
  });
  if (too_long) {
    return unexpected(
        wire_error(WireErrc::malformed, "response body over " + std::to_string(max_body) + " bytes"));
  }
  if (e) {
    return unexpected(std::move(*e));
  }
  return response;
}

} // namespace withcache::origin
