#pragma once

/**
 * @file
 * withcache::server — the cache-host's HTTP service (SPEC §3): the open read
 * path (`/b/<token>[/<name>]`, `/blob?url=`), `/healthz` and `/metrics`, the
 * operator UI and JSON API, with the blob store and the fill pool behind it,
 * served by an event-driven core (Boost.Asio/Beast: I/O threads equal to the
 * cores, sendfile(2) for blobs, a worker pool for SQLite work).
 *
 * Lives in the library so tests and embedders can run it in-process;
 * `withcache-server` only parses options and calls it.
 */

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "withcache/expected.hpp"
#include "withcache/scrub.hpp"
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
  std::vector<std::string> allow_origins; ///< host globs; when given, only these are fetched (names only)
  /** `--allow-private CIDR|HOST`: the non-public networks fills may reach (origin::parse_allow_private). */
  std::vector<std::string> allow_private;
  bool forward_auth = false;              ///< a missed read's Authorization or userinfo goes into its fill
  std::size_t queue_max = 1000;           ///< `--queue-max`: queued fills at most (0 = no cap)
  std::size_t queue_max_per_client = 50;  ///< `--queue-max-per-client`: per client address (0 = no cap)
  /**
   * `--min-free`: fills are refused when they would leave less free space on
   * the data dir's filesystem than this many bytes and/or this percentage of
   * it; with both, the smaller. Neither: no guard.
   */
  std::optional<std::uint64_t> min_free_bytes = 10ULL << 30;
  std::optional<double> min_free_percent = 5.0;
  /**
   * How long the miss that starts (or finds starting) a fill may wait for the
   * origin's response head, to be served as "filling" at once; 0 = not at all.
   * Keep it under the shim's probe deadline (3 s).
   */
  std::chrono::milliseconds miss_wait{1000};
  unsigned io_threads = 0;                ///< I/O threads; 0 = the number of cores

  // Connection limits (every one an option of withcache-server).
  std::chrono::milliseconds head_timeout{10'000}; ///< a request head must complete within this
  std::chrono::milliseconds idle_timeout{15'000}; ///< an idle keep-alive connection closes after this
  std::chrono::milliseconds body_timeout{30'000}; ///< a request body must arrive within this
  std::chrono::milliseconds send_timeout{60'000}; ///< a client that reads nothing for this long is dropped
  std::size_t max_header_bytes = 16 * 1024;       ///< request line and header fields together
  std::size_t max_header_fields = 100;
  std::size_t max_body_bytes = 1024 * 1024;       ///< forms and API bodies
  std::size_t max_connections_per_address = 256;
  std::string tls_cert; ///< PEM certificate chain; with tls_key, serve HTTPS
  std::string tls_key;  ///< PEM private key
  /** `--tls-key-passphrase-file`: its first line decrypts tls_key (never logged); empty = no passphrase. */
  std::string tls_key_passphrase_file;
  std::string admin_password; ///< WITHCACHE_ADMIN_PASSWORD; empty = the UI and its actions are open
  std::string session_secret; ///< WITHCACHE_SESSION_SECRET; blank = <data-dir>/session-secret
  std::string api_token;      ///< WITHCACHE_API_TOKEN; empty = the API only with a session
  std::chrono::seconds fetch_connect_timeout{10};
  std::chrono::seconds fetch_read_timeout{60};
  /** `--scrub-rate`: bytes a second the background scrub re-hashes; 0 = only passes asked for. */
  std::uint64_t scrub_rate = store::k_default_scrub_rate;

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
 * `withcache-server --verify`: checks a data dir offline (store::verify_data_dir) while holding its
 * lock, so no server can start on it meanwhile.
 * @throws StartupError when the dir does not exist, or a server holds it (naming its PID).
 * @return the report, or a one-line error when cache.db cannot be read.
 */
Expected<store::VerifyReport, std::string>
verify_data_dir(const std::filesystem::path& data_dir,
                const std::function<void(const store::VerifyProgress&)>& progress = {});

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

  /**
   * Loads the TLS certificate (when configured) and binds the listening socket.
   * @throws StartupError when the address is in use or not allowed, or the certificate or key cannot be loaded.
   */
  void bind();
  /** The bound port (after bind()). */
  [[nodiscard]] int port() const noexcept;
  /** The bound address and port (`127.0.0.1:3000`, `[::]:3000`), after bind(). */
  [[nodiscard]] std::string local_endpoint() const;
  /** The origin policy in effect, in one line (origin::OriginPolicy::describe()). */
  [[nodiscard]] std::string origin_policy() const;
  /** True when serving HTTPS. */
  [[nodiscard]] bool tls() const noexcept;
  /** Serves until stop(); returns after the listener closed. */
  void run();
  /** Stops accepting and makes run() return; fills are interrupted and stay persisted. Thread-safe. */
  void stop();
  /**
   * Loads the TLS certificate and key again (SIGHUP); new connections use them.
   * @return empty on success, else a one-line reason (the previous pair stays in use). Thread-safe.
   */
  std::string reload_tls();
  /**
   * reload_tls() on a worker thread, then `done(error)` there (error empty on
   * success). Returns at once, so the thread that handles SIGHUP, which also
   * handles SIGTERM, never waits on a reload. Thread-safe.
   */
  void reload_tls_async(std::function<void(const std::string& error)> done);

 private:
  struct Impl;
  std::unique_ptr<Impl> m_impl;
};

/** What `withcache-server`'s command line asks for. */
struct CommandLine {
  enum class Action {
    serve,  ///< start the cache-host with `options`
    verify, ///< `--verify`: check `options.data_dir` offline
    print,  ///< `--help` or `--version`: print `print` and exit 0
  };
  Action action = Action::serve;
  ServerOptions
      options; ///< with WITHCACHE_ADMIN_PASSWORD, WITHCACHE_SESSION_SECRET, WITHCACHE_API_TOKEN read
  std::string print;
  std::string min_free = "5%,10G"; ///< `--min-free` as given (the start-up warning quotes it)
  std::string log_level = "info";
};

/**
 * Parses `withcache-server`'s options (`--help` lists them) and gives them meaning: sizes, durations,
 * rates, `--min-free`'s size-and-percentage, the limits each option has. The environment is read with
 * util::process_env(). Returns one line naming the option and what is wrong with it, for exit status 2.
 * Does not touch the data dir or the network.
 */
Expected<CommandLine, std::string> options_from_args(int argc, const char* const* argv);

/**
 * Does what `command` asks: prints (`--help`), verifies the data dir (`--verify`: exit 0 clean, 1
 * damaged, 2 cannot check), or serves: sets up logging at `log_level`, raises the open-files limit, takes
 * SIGINT/SIGTERM (stop, keep fills for the next start) and SIGHUP (reload the TLS pair, off the signal
 * thread) on one thread, and runs the server until stopped. Returns the exit status (2: StartupError,
 * printed as one line).
 */
int run_command_line(const CommandLine& command);

} // namespace withcache::server
