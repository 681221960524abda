#pragma once

// The event-driven HTTP/1.1 transport (Boost.Asio + Boost.Beast): I/O threads
// equal to the cores, an acceptor with a real backlog, per-connection deadlines
// and limits, sendfile(2) for blob bodies, TLS, and a small worker pool for
// handlers that touch SQLite. No Beast type appears in this header.
// Internal to withcache::server.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "server/exchange.hpp"

namespace withcache::server {

/** The limits and deadlines of the transport (SPEC §3 "connection limits"). */
struct TransportOptions {
  std::string host = "0.0.0.0";
  int port = 3000;
  unsigned io_threads = 0;     ///< 0 = the number of cores
  unsigned worker_threads = 0; ///< 0 = the number of cores, at least 2
  std::chrono::milliseconds head_timeout{10'000}; ///< a request head must complete within this
  std::chrono::milliseconds idle_timeout{15'000}; ///< an idle keep-alive connection closes after this
  std::chrono::milliseconds body_timeout{30'000}; ///< a request body must arrive within this
  std::chrono::milliseconds send_timeout{60'000}; ///< a client that reads nothing for this long is dropped
  std::size_t max_header_bytes = 16 * 1024;       ///< request line and fields together
  std::size_t max_header_fields = 100;
  std::size_t max_body_bytes = 1024 * 1024;
  std::size_t max_connections_per_address = 256;
  std::string tls_cert; ///< PEM certificate chain; empty = plain HTTP
  std::string tls_key;  ///< PEM private key
  /** A file whose first line is tls_key's passphrase, read at each load; empty = no passphrase. */
  std::string tls_key_passphrase_file;
  std::string server_header;
  /**
   * Writes one access-log line per answered request (may be empty); `complete`
   * is false for a response the connection closed before its last byte.
   */
  std::function<void(const Request&, const Response&, double milliseconds, bool complete)> access_log;
};

/** Counters the transport keeps, for /metrics. */
struct TransportStats {
  std::uint64_t open_connections = 0;
  std::uint64_t refused_connections = 0; ///< over the per-address cap
  std::uint64_t timed_out = 0;           ///< closed by a head, idle, body or send deadline
  std::uint64_t oversized = 0;           ///< refused for header or body limits
  std::uint64_t accept_errors = 0;       ///< accept(2) failures (out of descriptors, most likely)
  std::uint64_t open_files = 0;          ///< descriptors the process holds now
  std::uint64_t open_files_limit = 0;    ///< its RLIMIT_NOFILE
};

class Transport {
 public:
  /** `router` must outlive the transport and not change once run() is called. */
  Transport(TransportOptions options, const Router& router);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  /**
   * Loads the TLS certificate (when configured) and binds the listening socket
   * (SO_REUSEADDR only, backlog SOMAXCONN).
   * @throws std::runtime_error with one line when the address is in use or not
   *         allowed, or the certificate or key cannot be loaded.
   */
  void bind();
  /** The bound port (after bind()). */
  [[nodiscard]] int port() const noexcept;
  /** The bound address and port, as `host:port`. */
  [[nodiscard]] std::string local_endpoint() const;
  /** True when serving TLS. */
  [[nodiscard]] bool tls() const noexcept;
  /** Serves until stop(); returns after every I/O thread ended. */
  void run();
  /** Stops accepting and ends run(); connections are closed. Thread-safe, idempotent. */
  void stop();
  /**
   * Loads the certificate and key again (SIGHUP). New connections use them;
   * open ones keep theirs. @return empty on success, else a one-line reason (the old pair stays).
   */
  std::string reload_tls();
  /**
   * reload_tls() on the worker pool, then `done` with its result there: the
   * caller (the thread that also handles SIGTERM) never waits on files or
   * OpenSSL. Thread-safe.
   */
  void reload_tls_async(std::function<void(const std::string&)> done);
  [[nodiscard]] TransportStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> m_impl;
};

} // namespace withcache::server
