#pragma once

// What every route file shares: the options, the store, the fill pool, the
// metrics and the operator sessions. Internal to withcache::server.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>

#include "auth/auth.hpp"
#include "server/exchange.hpp"
#include "server/line_budget.hpp"
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
  std::atomic<std::uint64_t> filling_served{0};      ///< responses attached to a running fill
  std::atomic<std::uint64_t> filling_bytes_served{0}; ///< body bytes sent from running fills
  // Misses whose fill was not queued, by why (SPEC §3: a miss over a cap is counted, not queued).
  std::atomic<std::uint64_t> not_queued_policy{0};      ///< the origin policy (scheme, --allow-origin)
  std::atomic<std::uint64_t> not_queued_credentials{0}; ///< carries credentials without --forward-auth
  std::atomic<std::uint64_t> not_queued_cap{0};         ///< over --queue-max or --queue-max-per-client
  std::atomic<std::uint64_t> not_queued_disk{0};        ///< under --min-free
};

/**
 * Which keys' refusals were logged, so that a refused URL is logged once, not on every miss.
 * Bounded: after 10 000 keys it starts over. Thread-safe.
 */
class OncePerKey {
 public:
  /** True the first time `key` is seen (since the last start-over). */
  bool first(const std::string& key) {
    std::lock_guard lock(m_mutex);
    if (m_seen.size() >= 10'000) {
      m_seen.clear();
    }
    return m_seen.insert(key).second;
  }

 private:
  std::mutex m_mutex;
  std::unordered_set<std::string> m_seen;
};

/** Log lines a minute of each kind a client can cause once per URL (see LineBudget). */
inline constexpr std::uint32_t k_url_log_lines_per_minute = 60;

struct Context {
  ServerOptions options;
  std::unique_ptr<store::BlobStore> store;
  std::unique_ptr<fills::FillPool> pool;
  Metrics metrics;
  std::unique_ptr<auth::Sessions> sessions;
  /** Signs and checks device cookies (same secret as sessions, another key). */
  std::unique_ptr<auth::DeviceCookies> device_cookies;
  /** The live operator sessions (memory; the store's `sessions` table persists them). */
  auth::SessionTable session_table;
  auth::LoginThrottle throttle;
  /** Refusals by the origin policy already logged. */
  OncePerKey logged_refusals;
  /** `first miss: <url>` lines. */
  LineBudget first_miss_lines{k_url_log_lines_per_minute};
  /** `fill failed: <url>: <why>` lines. */
  LineBudget fill_failure_lines{k_url_log_lines_per_minute};
  /** `not fetching <url>: <why>` lines (each URL once, and these many a minute). */
  LineBudget refusal_lines{k_url_log_lines_per_minute};
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
/** A valid session cookie whose session is live (not logged out, revoked or expired). Memory only. */
bool has_session(const Context& ctx, const Request& req);
/**
 * At start: loads the live sessions from the store, purging expired ones,
 * and revokes them all when the operator password is not the one they were
 * opened under (its fingerprint is kept, never the password).
 * @throws StartupError when cache.db refuses.
 */
void load_sessions(Context& ctx);
/** Ends every operator session, in memory and in the store; returns how many were live. */
std::size_t end_every_session(Context& ctx);
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
