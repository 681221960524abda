#pragma once

/**
 * @file
 * withcache::client, the probe (SPEC §5): the cache URL of an origin, whether
 * the cache holds it, and the URL to download from. One `HEAD` over a plain
 * socket (OpenSSL for https), so this part (target withcache_probe) links
 * only withcache::url and OpenSSL, and the shim can use it. Never throws;
 * every call is bounded by its timeout. Thread-safe.
 */

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "withcache/url.hpp"

namespace withcache::client {

using url::blob_url;
using url::cache_base;

/** Options of the probes. */
struct ProbeOptions {
  /** Overall bound of one probe: name resolution, connect, TLS, request and status line. */
  std::chrono::milliseconds timeout{3000};
  /** Extra request headers (e.g. a proxy's or an SSO gateway's). */
  std::vector<std::pair<std::string, std::string>> headers;
};

/** Why a probe got no answer. */
enum class ProbeFailure {
  none,        ///< the server answered with a well-formed status line
  bad_url,     ///< not an http/https URL that parses
  unresolved,  ///< the host name did not resolve (or not before the deadline)
  unreachable, ///< every address refused or failed to connect
  timed_out,   ///< the deadline passed during connect, TLS, request or response
  tls,         ///< the TLS handshake failed (e.g. the certificate did not verify)
  not_http,    ///< the answer did not start with a strict HTTP/1.x status line
};

/** The outcome of one HEAD. */
struct HeadResult {
  int status = 0;                            ///< the status code, or 0 when there was no answer
  ProbeFailure failure = ProbeFailure::none; ///< why there was no answer
  std::chrono::microseconds elapsed{0};      ///< from the start of the call to this outcome
};

/** `timed out`, `refused or unreachable`, ...: a few words for a ProbeFailure. */
const char* describe(ProbeFailure failure);

/**
 * One `HEAD` of each URL (http or https; certificates verified against the
 * system CA store), all concurrently under ONE deadline, `options.timeout`
 * from the call, which covers name resolution, connect, the TLS handshake,
 * the request and the status line. IP literals are used as they are; a host
 * name is resolved on a helper thread that is abandoned (left to finish on its
 * own) when the deadline passes, because getaddrinfo() cannot be interrupted.
 * A status counts only when the first line of the answer is strictly
 * `HTTP/1.0` or `HTTP/1.1`, a space, three digits and a space, ending in a
 * newline within 1 KiB; anything else is ProbeFailure::not_http.
 * At most 8 connections are open at once; URLs that could not start before
 * the deadline are timed_out. Headers named in `options.headers` are sent with
 * every request.
 * @return one HeadResult per URL, in order. Never throws for network errors.
 */
std::vector<HeadResult> head_all(const std::vector<std::string>& urls, const ProbeOptions& options = {});

/** head_all() of one URL. */
HeadResult head(const std::string& url, const ProbeOptions& options = {});

/**
 * The status of one `HEAD url` (http or https, certificates verified against
 * the system CA store), bounded as head_all().
 * @return the status, or 0 when there was no answer (refused — at once —,
 *         unresolvable, timed out, TLS failure, not a strict HTTP/1.x status
 *         line, not an http/https URL).
 */
int head_status(const std::string& url, const ProbeOptions& options = {});

/**
 * True when the cache at `server` holds `origin` (its HEAD answers 200); false
 * for a miss and for any failure. A probe also warms an auto-fetch server.
 */
bool is_cached(std::string_view server, std::string_view origin, const ProbeOptions& options = {});

/** The cache URL when the cache holds `origin`; nothing on a miss or any failure (download from the origin). */
std::optional<std::string> serve_url(std::string_view server, std::string_view origin,
                                     const ProbeOptions& options = {});

/** True when `server`'s `/healthz` answers 200; false for anything else, failures included. */
bool is_healthy(std::string_view server, const ProbeOptions& options = {});

} // namespace withcache::client
