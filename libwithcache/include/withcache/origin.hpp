#pragma once

/**
 * @file
 * withcache::origin — the origin fetcher: one HTTP(S) download into a `.part`
 * file, shared by the server's fills (SPEC §3 "Fills") and
 * `withcache-client get` (SPEC §5).
 *
 * http/https only; certificate verification against the system CA store;
 * redirects followed by hand (bounded, every hop re-checked against the
 * OriginPolicy and the server's own listening sockets);
 * `http_proxy`/`https_proxy`/`no_proxy` honoured; a short body is resumed
 * with `Range` and `If-Range` and never reported as complete; a response
 * whose framing cannot be trusted is refused before its body is read.
 * fetch_to_file() is thread-safe: each call uses its own connections. No
 * exception of cpp-httplib or the standard library leaves this module.
 *
 * Resume integrity (SPEC §3 "Fills"). Every resume sends `If-Range` with the
 * first response's strong `ETag`, else its `Last-Modified`. A `206` whose
 * validator, total or `Content-Encoding` differs from the first response, a
 * `416` (unless it says the part already holds every byte of that same
 * representation) or a `200` restarts from byte zero. With no validator at
 * all, resumed bytes are accepted only when every `206`'s `Content-Range`
 * total equals the first declared length. Residual risk, documented: an
 * origin that sends no validator and changes a file for another of exactly
 * the same length between two attempts can still have its halves spliced;
 * the SHA-256 then describes the spliced bytes. Only origins without
 * `ETag` and `Last-Modified` are exposed, and only when a transfer breaks.
 */

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
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
  malformed,      ///< a response that cannot be trusted (bad, duplicate or conflicting Content-Length, more bytes than declared, a bad redirect)
  connect,        ///< the origin could not be resolved or reached
  not_storable,   ///< a 200 the cache must not store: `Cache-Control: no-store` or `private`, or HTML without FetchOptions::cache_html
  too_slow,       ///< the body moved less than FetchOptions::min_rate bytes/s averaged over FetchOptions::rate_window
};

/** The reason as a short word (`http_status`, `timeout`, …) for logs, metrics and the API. */
std::string_view to_string(FetchErrc reason);

/** A failed fetch: a reason, the HTTP status when there was one, and a one-line message with the URL
 * redacted. */
struct FetchError {
  FetchErrc reason = FetchErrc::io;
  int status = 0;
  /** `<redacted URL>: <detail>`. */
  std::string message;
  /**
   * The cause alone, without the URL, for a miss row or a 404 body:
   * `origin answered HTTP 404`, `origin marked it no-store`,
   * `no response head within 30 s`, … One line.
   */
  std::string detail;
};

/** Request headers, in order. */
using Headers = std::vector<std::pair<std::string, std::string>>;

/** An IP network (`10.0.0.0/8`, `10.1.2.3/32`, `fd00::/8`): what `--allow-private` opens. */
struct Network {
  int family = 0;                        ///< AF_INET or AF_INET6
  std::array<unsigned char, 16> bytes{}; ///< the network address, host bits zero (4 bytes used for IPv4)
  unsigned prefix = 0;                   ///< prefix length: 0..32 or 0..128
  /** True when `address` lies in this network; an IPv4-mapped IPv6 address counts as its IPv4 address. */
  [[nodiscard]] bool contains(const sockaddr* address) const;
  /** `10.0.0.0/8`, `fd00::5/128`. */
  [[nodiscard]] std::string text() const;
};

/**
 * What one `--allow-private` value opens: a CIDR (`10.0.0.0/8`, `fd00::/8`;
 * host bits are cleared), an address (`10.1.2.3`, `[fd00::5]`: that one
 * address), or a host name, resolved now to every address it has (each
 * opened alone; later DNS changes are not followed).
 * @return the networks, or a one-line error: a bad prefix length, or a name that does not resolve.
 */
Expected<std::vector<Network>, std::string> parse_allow_private(std::string_view text);

/**
 * Why `address` is not a public unicast address, as a short phrase for a
 * one-line refusal (`loopback`, `private (RFC 1918)`, `shared CGNAT (RFC
 * 6598)`, `link-local`, `unique local (fc00::/7)`, `multicast`,
 * `documentation`, `reserved`, …), or nothing when it is public. These are
 * the IANA special-purpose ranges a fill must not reach: IPv4 0/8, 10/8,
 * 100.64/10, 127/8, 169.254/16, 172.16/12, 192.0.0/24, 192.0.2/24,
 * 192.88.99/24, 192.168/16, 198.18/15, 198.51.100/24, 203.0.113/24,
 * 224/4, 240/4; IPv6 ::, ::1, 64:ff9b:1::/48, 100::/64, 2001::/23,
 * 2001:db8::/32, 3fff::/20, 5f00::/16, fc00::/7, fe80::/10, fec0::/10,
 * ff00::/8 and everything outside 2000::/3. IPv4-mapped (::ffff:0:0/96),
 * NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses are judged by the
 * IPv4 address they carry.
 */
std::optional<std::string> special_purpose_range(const sockaddr* address);

/**
 * Which origins may be fetched (SPEC §3 "Fills"). Two independent rules:
 *  - host names: with no patterns every http/https host may be asked for;
 *    with patterns (`--allow-origin`) only matching host names are. A
 *    pattern never exempts an address.
 *  - addresses, checked after DNS on every address a name has, at every
 *    redirect hop: only public unicast addresses (special_purpose_range()
 *    has nothing to say) that are not one of this host's own interface
 *    addresses, unless one of the `allowed_private` networks
 *    (`--allow-private`) contains the address.
 * Thread-safe (immutable after construction).
 */
class OriginPolicy {
 public:
  /**
   * `patterns`: host globs, `*` matching any run of characters (`*.nvidia.com`, `repo.example.org`).
   * `allowed_private`: the networks that may be reached although not public.
   */
  explicit OriginPolicy(std::vector<std::string> patterns = {}, std::vector<Network> allowed_private = {});

  /** Every http/https URL, whatever it resolves to: for a client fetching on its own behalf. */
  static OriginPolicy any();

  /** True when some pattern matches `host` (case-insensitive). */
  [[nodiscard]] bool names(std::string_view host) const;
  /** The scheme and host check done before any I/O; a one-line reason when refused. */
  [[nodiscard]] std::optional<std::string> check_url(std::string_view url) const;
  /**
   * The check done on each resolved address of `host` (the URL's host as
   * written); a one-line reason naming the address, why it is refused and
   * the `--allow-private` that would open it; nothing when it may be fetched.
   */
  [[nodiscard]] std::optional<std::string> check_address(std::string_view host,
                                                         const sockaddr* address) const;
  [[nodiscard]] const std::vector<std::string>& patterns() const noexcept { return m_patterns; }
  [[nodiscard]] const std::vector<Network>& allowed_private() const noexcept { return m_allowed_private; }
  /**
   * The policy in one line, for the start-up log: `public addresses only
   * (private and own addresses refused); --allow-private 10.1.2.3/32; any
   * host name` or `… host names matching *.nvidia.com`.
   */
  [[nodiscard]] std::string describe() const;

 private:
  std::vector<std::string> m_patterns;
  std::vector<Network> m_allowed_private;
  bool m_any_address = false;
};

/** `*`-glob match, ASCII case-insensitive. */
bool glob_match(std::string_view pattern, std::string_view text);

/** True for every address that is not public unicast (special_purpose_range() says why). */
bool is_internal_address(const sockaddr* address);

/** True when `address` is one of this host's interface addresses (getifaddrs, read at each call). */
bool is_own_interface_address(const sockaddr* address);

/**
 * The server's own listening sockets, which a fetch never connects to
 * (SPEC §3: a fill never fetches from the server itself). A listener on
 * `0.0.0.0` or `::` stands for every local address on its port: loopback,
 * the unspecified address and every address of the host's interfaces
 * (getifaddrs, read at each check). IPv4-mapped IPv6 addresses count as
 * their IPv4 address. Thread-safe: add() may run while fetches check.
 */
class OwnListeners {
 public:
  /**
   * Adds a listening socket: a numeric IPv4/IPv6 address (or a name, resolved
   * now to every address it has) and its port.
   * @return nothing, or a one-line error for a port outside 1..65535 or a
   *         name that does not resolve (nothing is added then).
   */
  std::optional<std::string> add(std::string_view host, int port);
  /** A one-line reason when connecting to `address`:`port` would reach one of them; nothing otherwise. */
  [[nodiscard]] std::optional<std::string> check(const sockaddr* address, int port) const;
  /** True when none was added. */
  [[nodiscard]] bool empty() const;

 private:
  struct Listener;
  mutable std::mutex m_mutex;
  std::vector<std::shared_ptr<const Listener>> m_listeners;
};

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
  std::chrono::milliseconds connect_timeout{10'000};
  /** A read that waits this long for a byte fails (the inactivity timeout). */
  std::chrono::milliseconds read_timeout{60'000};
  int max_redirects = 10;
  /** Attempts per fetch, counting the first; a short body is resumed with Range between them. */
  int max_attempts = 5;
  /** First pause between attempts; doubles each time. */
  std::chrono::milliseconds backoff{250};
  /** Environment lookup for proxy variables; defaults to the process environment. */
  util::Getenv getenv;
  /** Verify TLS certificates against this CA file instead of the system store (tests, private CAs). */
  std::string ca_file;
  /** An attempt fails (FetchErrc::timeout, not retried) when no response head arrives this long after it began. */
  std::chrono::milliseconds head_timeout{30'000};
  /**
   * An attempt fails (FetchErrc::too_slow, not retried) when its body moves
   * fewer than `min_rate` bytes per second averaged over `rate_window`
   * (curl's `--speed-limit`/`--speed-time`). 0 turns the check off.
   */
  std::uint64_t min_rate = 1024;
  std::chrono::milliseconds rate_window{60'000};
  /**
   * Refuse (FetchErrc::not_storable) a response the cache must not store:
   * `Cache-Control: no-store` or `private` (unqualified), or HTML
   * (`text/html`, `application/xhtml+xml`) unless `cache_html`. Checked on
   * the response head, before any body byte is read. Off for a client
   * downloading for itself.
   */
  bool only_storable = false;
  /** With `only_storable`: HTML is stored too (`--cache-html`). */
  bool cache_html = false;
  /** The server's listening sockets; connecting to one is refused (FetchErrc::refused_origin). */
  std::shared_ptr<const OwnListeners> own_listeners;
};

/** The validators of a stored representation, for a conditional request (revalidation). */
struct Validators {
  std::string etag;          ///< sent as If-None-Match when not empty
  std::string last_modified; ///< sent as If-Modified-Since when not empty
  [[nodiscard]] bool empty() const noexcept { return etag.empty() && last_modified.empty(); }
};

/** One fetch. */
/**
 * Watches a fetch's part file as it grows, so the bytes can be served while
 * the fill runs (SPEC §3 "filling"). Every call comes from the fetching thread.
 * The fetcher only appends to a part file: a restart from zero replaces the
 * file with a new, empty one (restarting(), then opened()), so a descriptor
 * taken before a restart keeps reading the old bytes, never rewritten ones.
 */
class PartObserver {
 public:
  virtual ~PartObserver() = default;
  /** The part file was opened or replaced; `fd` reads it (dup it to keep it; it closes later). */
  virtual void opened(int fd) = 0;
  /** The bytes held so far are dropped; an empty file follows (opened()). */
  virtual void restarting() = 0;
  /**
   * A response head was accepted: the representation's total length (0 when
   * it declared none) and the headers kept from it (k_kept_headers). Bytes
   * already in the file (a resume) continue it.
   */
  virtual void head(std::uint64_t total, const Headers& kept) = 0;
  /** Bytes [0, size) are in the file: readers may send them. */
  virtual void written(std::uint64_t size) = 0;
};

struct FetchRequest {
  std::string url;
  Headers headers;
  /** Where the bytes go. Bytes already there are kept and resumed with Range (see `resume_state_path`). */
  std::filesystem::path part_path;
  /**
   * Stream mode: when set, body bytes are handed to `sink` as they arrive
   * (in order, each byte once) instead of being written to `part_path`,
   * which is then not touched; the SHA-256 and size are computed all the
   * same. A short body is still resumed with Range (the stream continues
   * where it stopped), but a response that would restart from byte zero
   * after bytes were handed over fails (FetchErrc::truncated): a stream
   * cannot be taken back. `sink` returning false stops the fetch
   * (FetchErrc::io), e.g. when the reader of a pipe went away.
   */
  std::function<bool(const char*, std::size_t)> sink;
  /**
   * Where the first response's validators and caching headers are kept
   * (written before its first body byte, removed on success), so that a
   * later call can resume `part_path` under the same If-Range rules. With a
   * path, part bytes found without a readable state there are discarded
   * (restart from zero). Empty: part bytes found at the start are resumed
   * blindly with a bare Range, like `curl -C -`, for a caller that checks the
   * bytes another way (withcache-client against the cache's SHA-256).
   */
  std::filesystem::path resume_state_path;
  /**
   * Revalidation: when not empty and the part file is empty, the request
   * carries If-None-Match / If-Modified-Since, and a 304 ends the fetch with
   * FetchResult::not_modified (nothing written).
   */
  Validators conditional;
  /** Set from another thread to stop between chunks; the part file is left for the caller to remove. */
  const std::atomic<bool>* cancel = nullptr;
  /** Called as bytes arrive: (bytes done, total or 0 when unknown). */
  std::function<void(std::uint64_t, std::uint64_t)> on_progress;
  /**
   * Told of the part file's life (may be null). With an observer, bytes are
   * written to the file at least every 50 ms as well as every 1 MiB, so
   * readers of a growing file follow the origin closely.
   */
  PartObserver* observer = nullptr;
  /**
   * Capacity check: called with the total size the part file will reach
   * (the declared length when known, then the growing size when not).
   * Returning false ends the fetch with FetchErrc::cache_full.
   */
  std::function<bool(std::uint64_t)> may_store;
};

/**
 * A complete fetch: the part file holds exactly `size` bytes hashing to
 * `sha256`, fsynced; or, for a conditional request, `not_modified`.
 * The origin's headers below are those of the response the bytes belong to
 * (the 200, even when 206s completed it), or of the 304; empty when absent.
 */
struct FetchResult {
  std::uint64_t size = 0;
  std::string sha256;
  /** The origin answered the conditional request with 304: the part file is untouched and empty. */
  bool not_modified = false;
  std::string content_type;
  std::string etag;
  std::string last_modified;
  std::string cache_control;
  std::string expires;
  std::string date;
  std::string age;
  /** Stored as delivered: a body the origin encoded (gzip, …) despite `Accept-Encoding: identity` is kept so. */
  std::string content_encoding;
  std::string content_disposition;
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
 *         cancelled, io, malformed, connect, not_storable, too_slow) and whose
 *         message is one line with the URL redacted. Bytes received stay in
 *         the part file (with their resume state) for a later resume.
 */
Expected<FetchResult, FetchError> fetch_to_file(const FetchRequest& request, const FetchOptions& options);

/** Removes a fetch's part file and its resume state, if any. Never throws. */
void remove_partial(const FetchRequest& request);

} // namespace withcache::origin
