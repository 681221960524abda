#pragma once

/**
 * @file
 * withcache::server — the cache-host's HTTP service (SPEC §3): the open read
 * path (`/b/<token>[/<name>]`, `/blob?url=`), `/healthz` and `/metrics`, with
 * the blob store and the download pool behind it.
 *
 * Lives in the library so tests and embedders can run it in-process;
 * `withcache-server` only parses options and calls it.
 */

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "withcache/url.hpp"

namespace withcache::server {

/** Everything `withcache-server` can be told (SPEC §3 options). */
struct ServerOptions {
  std::string host = "0.0.0.0";
  int port = 3000; ///< 0 picks a free port (see Server::port())
  std::filesystem::path data_dir = "./data";
  unsigned workers = 2;                   ///< download pool threads
  bool curate = false;                    ///< misses are recorded, never filled automatically
  bool keep_query = false;                ///< `--keep-query`: the whole query is part of the key
  bool drop_query = false;                ///< `--drop-query`: none of it is (withcache 0.3's key)
  std::vector<std::string> query_drop;    ///< `--query-drop NAME`: more parameters left out of the key
  bool cache_html = false;                ///< `--cache-html`: fills store HTML pages too
  std::optional<std::chrono::seconds> max_age; ///< `--max-age`: every artifact's lifetime; none = the origin's
  std::uint64_t min_rate = 1024;          ///< `--min-rate`: a fill slower than this (bytes/s over 60 s) fails
  std::chrono::milliseconds fetch_head_timeout{30'000}; ///< a fill with no response head after this fails
  std::uint64_t max_bytes = 0;            ///< 0 = unlimited
  std::vector<std::string> allow_origins; ///< host globs; when given, only these are fetched
  bool forward_auth = false;              ///< a missed read's Authorization goes into its auto-fill
  unsigned http_threads = 64;             ///< concurrent connections served
  std::string admin_password; ///< WITHCACHE_ADMIN_PASSWORD; empty = the UI and its actions are open
  std::string session_secret; ///< WITHCACHE_SESSION_SECRET; blank = <data-dir>/session-secret
  std::string api_token;      ///< WITHCACHE_API_TOKEN; empty = the API only with a session
  std::chrono::seconds fetch_connect_timeout{10};
  std::chrono::seconds fetch_read_timeout{60};

  /** The cache-key options these imply: what the read path and the fills must both use. */
  [[nodiscard]] url::KeyOptions key_options() const {
    return url::KeyOptions{keep_query, drop_query, query_drop};
  }
};

/** A startup failure (data dir, database, port): one line, for the operator. */
class StartupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/**
 * The cache-host. Construct, bind(), then run() on one thread and stop() from
 * any other (e.g. a signal-waiting thread). Destruction persists queued and
 * running fills and closes the database.
 */
class Server {
 public:
  /** Opens the store (recovering from a crash) and starts the download pool. @throws StartupError */
  explicit Server(ServerOptions options);
  ~Server();

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /** Binds the listening socket. @throws StartupError when the address is in use or not allowed. */
  void bind();
  /** The bound port (after bind()). */
  [[nodiscard]] int port() const noexcept;
  /** Serves until stop(); returns after the listener closed. */
  void run();
  /** Stops accepting and makes run() return; fills are interrupted and stay persisted. Thread-safe. */
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> m_impl;
};

} // namespace withcache::server
