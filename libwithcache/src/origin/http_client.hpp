// One outbound HTTP/1.1 exchange at a time over a connection that bounds everything a peer can make us
// hold or wait for: the response head in bytes and in fields, every read and write by a deadline, a
// chunked body's control lines. Used by the fetcher (fills and `withcache-client get`) and by the client
// library's calls to a cache-host (its JSON API, the HEAD after a filling download).
//
// Internal to libwithcache (never installed). Not thread-safe, except interrupt().
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "withcache/origin.hpp"

namespace withcache::origin {

/**
 * What a peer may send before a body: `max_bytes` of status line and fields, `max_fields` fields (the
 * server's own request limits are 16 KiB and 100). Trailers of a chunked body count against the same
 * field budget, and a chunk-size line against the byte budget.
 */
struct HeadLimits {
  std::size_t max_bytes = 64 * 1024;
  std::size_t max_fields = 100;
};

/** The default limits, documented in README ("Fills"). */
inline constexpr HeadLimits k_head_limits{};

/** A response head as received: fields in order, names as sent. */
struct ResponseHead {
  int status = 0;
  Headers fields;

  [[nodiscard]] bool has(std::string_view name) const;
  /** The first value of `name` (case-insensitive), or empty. */
  [[nodiscard]] std::string get(std::string_view name) const;
  /** Every value of `name`, in order. */
  [[nodiscard]] std::vector<std::string> all(std::string_view name) const;
};

/**
 * Why a response's body length cannot be known for sure, in words (`conflicting Content-Length headers
 * (5 and 10)`, `both Content-Length and Transfer-Encoding`, …), or nothing. curl takes the last
 * Content-Length where other parsers take the first, so any doubt refuses the response.
 */
std::optional<std::string> framing_error(const ResponseHead& head);

/** Why an exchange stopped. */
enum class WireErrc {
  connect,   ///< no connection (refused, unreachable, reset before a response), or a proxy refused the tunnel
  timeout,   ///< connect or a read/write waited longer than its deadline
  tls,       ///< the TLS handshake or the certificate check failed
  malformed, ///< the peer broke HTTP: a head over the limits, a bad status line or framing, a bad chunk
  closed,    ///< the peer closed before the message ended
  interrupted, ///< interrupt() was called
  aborted,     ///< the body sink said stop
};

struct WireError {
  WireErrc code = WireErrc::connect;
  std::string message; ///< one line; never a header value or a credential
};

/** Where one connection goes. */
struct Endpoint {
  std::string scheme; ///< http or https
  std::string host;   ///< the URL's host, without brackets (SNI and certificate name)
  int port = 0;
  std::string address; ///< numeric address to connect to (pinned after the policy check); empty: resolve host
  std::optional<Proxy> proxy; ///< absolute-form for http, a CONNECT tunnel for https
  std::string ca_file;        ///< PEM bundle to verify against; empty: the system store
  bool verify = true;         ///< check the certificate chain and name (https)
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds io_timeout{60'000}; ///< longest wait for any one read or write
};

/**
 * One connection, used for one request/response at a time (`Connection: close` is sent, so one
 * exchange per connection). Blocking calls that wait in poll(2) on the socket and on an eventfd that
 * interrupt() signals.
 */
class HttpConnection {
 public:
  HttpConnection();
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  /** Connects (through the proxy's tunnel when there is one) and completes TLS for https. */
  std::optional<WireError> open(const Endpoint& endpoint);

  /**
   * Takes over `fd`, a connected stream socket (plain, no TLS), as if open() had connected it to
   * `endpoint`: for tests and the fuzz target, which feed a response through a socketpair.
   */
  void adopt(int fd, const Endpoint& endpoint);

  /**
   * Sends `method target HTTP/1.1` with Host, `headers` and `Connection: close`. `target` is the
   * origin-form path and query; through an http proxy the absolute form is sent. A header whose name
   * or value could split the request (CR, LF, NUL) is refused before anything is sent.
   */
  std::optional<WireError> send(std::string_view method, std::string_view target, const Headers& headers,
                                std::string_view body = {});

  /**
   * Reads a response head within `limits` (interim 1xx responses are skipped, their bytes and fields
   * counted). `no_body`: the request was HEAD, so the response has no body whatever it declares.
   */
  Expected<ResponseHead, WireError> read_head(const HeadLimits& limits = k_head_limits, bool no_body = false);

  /** Takes each piece of a body; false stops the read (WireErrc::aborted). */
  using BodySink = std::function<bool(const char*, std::size_t)>;

  /**
   * Reads the body framed as the head said (Content-Length, chunked, or until the peer closes),
   * handing each piece to `sink`. Nothing when the message ended as framed.
   */
  std::optional<WireError> read_body(const BodySink& sink);

  /** Makes the current and every later wait fail with WireErrc::interrupted. Thread-safe. */
  void interrupt() noexcept;

 private:
  struct State;
  std::unique_ptr<State> m_state;
};

/** A whole small response: for JSON API calls and probes, not for artifacts. */
struct SmallResponse {
  ResponseHead head;
  std::string body;
};

/**
 * One request to `url` (http or https, no proxy, no redirects) whose response body is kept only up to
 * `max_body` bytes (a longer one is WireErrc::malformed). `timeout` bounds the connect and each wait.
 */
Expected<SmallResponse, WireError> request_small(std::string_view method, const std::string& url,
                                                 const Headers& headers, std::string_view body,
                                                 std::chrono::milliseconds timeout, std::size_t max_body);

} // namespace withcache::origin
