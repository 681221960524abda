#pragma once

// What every route file shares: the options, the store, the fill pool, the
// metrics and the operator sessions. Internal to withcache::server.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include "auth/auth.hpp"
#include "server/exchange.hpp"
#include "withcache/fills.hpp"
#include "withcache/scrub.hpp"
#include "withcache/server.hpp"
#include "withcache/store.hpp"

namespace withcache::server {

struct TransportStats;

/** Counters behind /metrics. */
struct Metrics {
  std::atomic<std::uint64_t> hits{0};
  std::atomic<std::uint64_t> misses{0};
  std::atomic<std::uint64_t> bad_requests{0};
  std::atomic<std::uint64_t> bytes_served{0};
  std::atomic<std::uint64_t> bytes_fetched{0};
  std::atomic<std::uint64_t> fills_completed{0};
  std::atomic<std::uint64_t> fills_failed{0};
  std::atomic<std::uint64_t> fills_cancelled{0};
  std::atomic<std::uint64_t> fills_queued{0};
};

struct Context {
  ServerOptions options;
  std::unique_ptr<store::BlobStore> store;
  std::unique_ptr<fills::FillPool> pool;
  Metrics metrics;
  std::unique_ptr<auth::Sessions> sessions;
  auth::LoginThrottle throttle;
  /** The server's own listening sockets, which fills must never fetch from. */
  std::shared_ptr<origin::OwnListeners> own_listeners;
  /** The transport's connection counters (set once serving starts). */
  std::function<TransportStats()> transport_stats;
  /** The background scrub (after the pool: stopped before it). */
  std::unique_ptr<store::Scrubber> scrubber;
};

/**
 * Downloads newest first: those queued or running (the pool's memory) merged with the history of ended
 * ones (cache.db), paged like the other listings (offset, or the after/before cursors: job ids).
 */
Expected<store::Page<Job>, std::string> list_downloads(const Context& ctx, const store::ListQuery& query);

// --- the session and auth middleware (session.cpp) ---------------------------

/** True when no WITHCACHE_ADMIN_PASSWORD is set: the UI and its actions are open. */
bool ui_open(const Context& ctx);
/** A valid session cookie. */
bool has_session(const Context& ctx, const Request& req);
/** `Authorization: Bearer <WITHCACHE_API_TOKEN>`. */
bool has_bearer(const Context& ctx, const Request& req);
/** Pages and form actions: open UI or a session. */
bool page_allowed(const Context& ctx, const Request& req);
/** The JSON API: open (no password, no token), a session or the Bearer token. */
bool api_allowed(const Context& ctx, const Request& req);
/** `admin`, `api` or `anonymous`, for the events log. */
std::string actor(const Context& ctx, const Request& req);
/** The CSRF check for a state-changing request (Origin, else Referer, against Host). */
bool csrf_ok(const Request& req);
/** `HX-Request: true`. */
bool is_htmx(const Request& req);
/**
 * `handler` with the operator surface's response headers added: a CSP of
 * `default-src 'self'; img-src 'self' data:; frame-ancestors 'none'`, `X-Frame-Options: DENY`,
 * `X-Content-Type-Options: nosniff` and `Referrer-Policy: same-origin`.
 */
Handler secured(Handler handler);

// --- route registration, one file each ------------------------------------------

void add_read_path(Router& router, Context& ctx);
void add_health_and_metrics(Router& router, Context& ctx);
void add_session_routes(Router& router, Context& ctx);
void add_ui_routes(Router& router, Context& ctx);
void add_api_routes(Router& router, Context& ctx);

} // namespace withcache::server
