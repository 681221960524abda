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
  /** Overall bound of one probe: connect, TLS, request and status line. */
  std::chrono::milliseconds timeout{3000};
  /** Extra request headers (e.g. a proxy's or an SSO gateway's). */
  std::vector<std::pair<std::string, std::string>> headers;
};

/**
 * The status of one `HEAD url` (http or https, certificates verified against
 * the system CA store).
 * @return the status, or 0 when there was no answer (refused — at once —,
 *         unresolvable, timed out, TLS failure, not an http/https URL).
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
