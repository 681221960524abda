#pragma once

/**
 * @file
 * withcache::origin — the origin fetcher: one HTTP(S) download into a `.part`
 * file, shared by the server's fills (SPEC §3 "Fills") and
 * `withcache-client get` (SPEC §5).
 *
 * http/https only; certificate verification against the system CA store;
 * redirects followed by hand (bounded, every hop re-checked against the
 * OriginPolicy); `http_proxy`/`https_proxy`/`no_proxy` honoured; a short body
 * is resumed with `Range` and never reported as complete.
 * fetch_to_file() is thread-safe: each call uses its own connections. No
 * exception of cpp-httplib or the standard library leaves this module.
 */

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "withcache/expected.hpp"
#include "withcache/util/env.hpp"

struct sockaddr;

namespace withcache::origin {

/** Why a fetch failed. */
enum class FetchErrc {
  http_status,    ///< the origin answered with a status other than 200/206 (FetchError::status)
  timeout,        ///< connect or read timed out
  tls,            ///< TLS handshake or certificate verification failed
  truncated,      ///< the body stayed shorter than its declared length after every resume attempt
  refused_origin, ///< scheme, host or resolved address refused by the OriginPolicy, or too many redirects
  cache_full,     ///< the declared or streamed size does not fit under the capacity
  cancelled,      ///< the caller's cancel flag was set
  io,             ///< local disk error
  malformed,      ///< a response that cannot be trusted (bad or conflicting Content-Length, more bytes than declared, a bad redirect)
  connect,        ///< the origin could not be resolved or reached
};

/** The reason as a short word (`http_status`, `timeout`, …) for logs, metrics and the API. */
std::string_view to_string(FetchErrc reason);

/** A failed fetch: a reason, the HTTP status when there was one, and a one-line message with the URL
 * redacted. */
struct FetchError {
  FetchErrc reason = FetchErrc::io;
  int status = 0;
  std::string message;
};

/** Request headers, in order. */
using Headers = std::vector<std::pair<std::string, std::string>>;

/**
 * Which origins may be fetched. With no patterns every http/https host is
 * allowed except loopback, link-local and unspecified addresses; with
 * patterns only matching hosts are, and a pattern that names a host also
 * allows it to resolve to those addresses (tests allow `127.0.0.1`).
 */
class OriginPolicy {
 public:
  /** `patterns`: host globs, `*` matching any run of characters (`*.nvidia.com`, `repo.example.org`). */
  explicit OriginPolicy(std::vector<std::string> patterns = {});

  /** Every http/https URL, whatever it resolves to: for a client fetching on its own behalf. */
  static OriginPolicy any();

  /** True when some pattern matches `host` (case-insensitive). */
  [[nodiscard]] bool names(std::string_view host) const;
  /** The scheme and host check done before any I/O; a one-line reason when refused. */
  [[nodiscard]] std::optional<std::string> check_url(std::string_view url) const;
  /** The check done on each resolved address of `host`; a one-line reason when refused. */
  [[nodiscard]] std::optional<std::string> check_address(std::string_view host,
                                                         const sockaddr* address) const;
  [[nodiscard]] const std::vector<std::string>& patterns() const noexcept { return m_patterns; }

 private:
  std::vector<std::string> m_patterns;
  bool m_any_address = false;
};

/** `*`-glob match, ASCII case-insensitive. */
bool glob_match(std::string_view pattern, std::string_view text);

/** True for loopback, link-local and unspecified IPv4/IPv6 addresses (and IPv4-mapped forms of them). */
bool is_internal_address(const sockaddr* address);

/** An HTTP proxy to send a request through. */
struct Proxy {
  std::string host;
  int port = 0;
  std::string user;
  std::string password;
};

/**
 * The proxy for a request to `scheme://host` from `https_proxy`/`HTTPS_PROXY`
 * or `http_proxy`/`HTTP_PROXY`, unless `no_proxy`/`NO_PROXY` matches the host
 * (`*`, exact names, `.suffix` or `suffix` domain matches, comma-separated).
 */
std::optional<Proxy> proxy_for(std::string_view scheme, std::string_view host, const util::Getenv& getenv);

/** Options shared by every fetch of a process. */
struct FetchOptions {
  OriginPolicy policy;
  std::chrono::seconds connect_timeout{10};
  std::chrono::seconds read_timeout{60};
  int max_redirects = 10;
  /** Attempts per fetch, counting the first; a short body is resumed with Range between them. */
  int max_attempts = 5;
  /** First pause between attempts; doubles each time. */
  std::chrono::milliseconds backoff{250};
  /** Environment lookup for proxy variables; defaults to the process environment. */
  util::Getenv getenv;
  /** Verify TLS certificates against this CA file instead of the system store (tests, private CAs). */
  std::string ca_file;
};

/** One fetch. */
struct FetchRequest {
  std::string url;
  Headers headers;
  /** Where the bytes go. Bytes already there are kept and resumed with Range. */
  std::filesystem::path part_path;
  /** Set from another thread to stop between chunks; the part file is left for the caller to remove. */
  const std::atomic<bool>* cancel = nullptr;
  /** Called as bytes arrive: (bytes done, total or 0 when unknown). */
  std::function<void(std::uint64_t, std::uint64_t)> on_progress;
  /**
   * Capacity check: called with the total size the part file will reach
   * (the declared length when known, then the growing size when not).
   * Returning false ends the fetch with FetchErrc::cache_full.
   */
  std::function<bool(std::uint64_t)> may_store;
};

/** A complete fetch: the part file holds exactly `size` bytes hashing to `sha256`, fsynced. */
struct FetchResult {
  std::uint64_t size = 0;
  std::string sha256;
  std::string content_type;
  /** The URL the bytes finally came from, after redirects. */
  std::string final_url;
  /** Bytes the part file already held when the fetch began (resumed from there, or restarted). */
  std::uint64_t resumed_from = 0;
  /** The final response's header fields, in order (from the 200, 206 or 416 that completed it). */
  Headers response_headers;
};

/**
 * Downloads `request.url` into `request.part_path`.
 * @return the result, or a FetchError whose reason says why (http_status with
 *         the status, timeout, tls, truncated, refused_origin, cache_full,
 *         cancelled, io, connect) and whose message is one line with the URL
 *         redacted. Bytes received stay in the part file for a later resume.
 */
Expected<FetchResult, FetchError> fetch_to_file(const FetchRequest& request, const FetchOptions& options);

} // namespace withcache::origin
