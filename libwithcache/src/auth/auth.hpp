#pragma once

/**
 * @file
 * withcache::auth (internal to the server) — the operator surface's sessions
 * (SPEC §3 "Operator surface"): HMAC-SHA256-signed cookies, the
 * server-side table of live sessions, the session secret, the CSRF origin
 * check and slowing down wrong passwords.
 * Sessions, SessionTable and LoginThrottle are thread-safe. Nothing here
 * throws except session_secret(), at start-up.
 */

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <list>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace withcache::auth {

/** The session cookie's name. */
inline constexpr const char* k_cookie = "withcache-token";
/** The device cookie's name (see DeviceCookies). */
inline constexpr const char* k_device_cookie = "withcache-device";

/**
 * The key that signs sessions: `env_secret` when it is not blank, else the
 * contents of `<data_dir>/session-secret`, created (32 random bytes, hex, mode
 * 0600) on first use so cookies survive restarts.
 * @throws std::runtime_error when the file cannot be read or created.
 */
std::string session_secret(const std::filesystem::path& data_dir, const char* env_secret);

/** What a valid token says: its user, its session's random id and when it expires. */
struct Claims {
  std::string user;
  std::string id;           ///< the session's random id (32 hex digits); the server keeps only id_hash()
  std::int64_t expires = 0; ///< Unix seconds
};

/**
 * Issues and verifies `<payload>.<HMAC-SHA256 hex>` session tokens, where the
 * payload is base64url(`v1:<user>:<expiry>:<random id>`). The signature and
 * the expiry are all it checks: whether the session is still live is the
 * SessionTable's business.
 */
class Sessions {
 public:
  explicit Sessions(std::string secret, std::chrono::seconds lifetime = std::chrono::hours(24 * 7));

  /** A new token for `user`, valid for the lifetime from `now`. */
  [[nodiscard]] std::string
  issue(std::string_view user,
        std::chrono::system_clock::time_point now = std::chrono::system_clock::now()) const;
  /** The user of a valid, unexpired token signed with this secret; nothing otherwise. */
  [[nodiscard]] std::optional<std::string>
  verify(std::string_view token,
         std::chrono::system_clock::time_point now = std::chrono::system_clock::now()) const;
  /** What a valid, unexpired token signed with this secret says; nothing otherwise. */
  [[nodiscard]] std::optional<Claims>
  claims(std::string_view token,
         std::chrono::system_clock::time_point now = std::chrono::system_clock::now()) const;
  [[nodiscard]] std::chrono::seconds lifetime() const noexcept { return m_lifetime; }
  /**
   * A fingerprint of the operator password under this secret (HMAC-SHA256),
   * so the server can tell at start that the password changed without ever
   * storing it.
   */
  [[nodiscard]] std::string password_fingerprint(std::string_view password) const;

 private:
  [[nodiscard]] std::string sign(std::string_view payload) const;
  std::string m_secret;
  std::chrono::seconds m_lifetime;
};

/** What a valid device cookie says: the user who logged in on that browser, its random id and expiry. */
struct DeviceClaims {
  std::string user;
  std::string id;           ///< 32 hex digits; the key of the device's own failure count
  std::int64_t expires = 0; ///< Unix seconds
};

/**
 * Device cookies (OWASP "Slow Down Online Guessing Attacks with Device
 * Cookies"): a browser that once logged in successfully gets
 * `<payload>.<HMAC-SHA256 hex>`, payload base64url(`d1:<user>:<expiry>:<random
 * id>`), signed with a key derived from the session secret, so a device
 * cookie is never a valid session token nor the reverse. It opens no
 * session and grants nothing but an exemption from the login throttle's
 * global pause (see LoginThrottle). Stateless: nothing is stored per cookie.
 * Thread-safe (immutable after construction).
 */
class DeviceCookies {
 public:
  explicit DeviceCookies(std::string_view secret,
                         std::chrono::seconds lifetime = std::chrono::hours(24 * 365));

  /** A new device cookie value for `user`, valid for the lifetime from `now`. */
  [[nodiscard]] std::string
  issue(std::string_view user,
        std::chrono::system_clock::time_point now = std::chrono::system_clock::now()) const;
  /** What a valid, unexpired device cookie signed with this secret says; nothing otherwise. */
  [[nodiscard]] std::optional<DeviceClaims>
  claims(std::string_view token,
         std::chrono::system_clock::time_point now = std::chrono::system_clock::now()) const;
  [[nodiscard]] std::chrono::seconds lifetime() const noexcept { return m_lifetime; }

 private:
  std::string m_key; // HMAC(secret, a fixed label): device cookies and sessions never share a key
  std::chrono::seconds m_lifetime;
};

/** What the server keeps of a session (SPEC §3: server-side records); never the id itself. */
struct SessionRecord {
  std::string id_hash; ///< SHA-256 hex of the session's random id
  std::string user;
  std::int64_t created_at = 0; ///< Unix seconds
  std::int64_t expires_at = 0; ///< Unix seconds
  std::string address;         ///< the client address it logged in from
};

/** SHA-256 hex of a session id: the key under which the server keeps it. */
std::string id_hash(std::string_view id);

/**
 * The live sessions, in memory, so that checking a cookie costs an HMAC, a
 * hash and a lookup (it runs on the I/O threads). The caller persists every
 * change (the store's `sessions` table) and loads them back at start.
 * Thread-safe: lookups share a lock, changes take it alone.
 */
class SessionTable {
 public:
  /** Replaces the table with `records` (at start). */
  void load(std::vector<SessionRecord> records);
  /** Adds a session. */
  void add(SessionRecord record);
  /** True when the session of `claims` is live at `now` (known and not expired). */
  [[nodiscard]] bool live(const Claims& claims, std::int64_t now) const;
  /** Ends one session; true when it was live. */
  bool revoke(const std::string& id_hash);
  /** Ends every session; returns how many there were. */
  std::size_t revoke_all();
  /** Forgets expired sessions; returns how many. */
  std::size_t purge_expired(std::int64_t now);
  /** Sessions held now. */
  [[nodiscard]] std::size_t size() const;

 private:
  mutable std::shared_mutex m_mutex;
  std::unordered_map<std::string, SessionRecord> m_by_hash;
};

/** The value of cookie `name` in a `Cookie` header, if present. */
std::optional<std::string> cookie_value(std::string_view cookie_header, std::string_view name);

/**
 * CSRF check for a state-changing request: true when `origin` (or, lacking
 * it, `referer`) names the same host[:port] as `host` (the Host header), or
 * when both are empty (scripts and curl send neither).
 */
bool same_origin(std::string_view origin, std::string_view referer, std::string_view host);

/** Limits of a LoginThrottle. */
struct ThrottleOptions {
  /** Addresses remembered at most; a full table never drops an address that is still waiting. */
  std::size_t max_addresses = 10'000;
  /** Above this many wrong passwords in a minute, from all addresses together, the global pacing applies. */
  unsigned global_failures_per_minute = 60;
  /** The global pacing: every attempt, from any address, waits this long after the last wrong one. */
  std::chrono::milliseconds global_pause{1000};
  /** Device cookies remembered at most (only those with wrong passwords); the same rule as addresses. */
  std::size_t max_devices = 10'000;
  /** Wrong passwords with one device cookie after which it no longer exempts from the global pause. */
  unsigned device_lockout_failures = 10;
  /** How long such a device stays locked out after its last wrong password. */
  std::chrono::milliseconds device_lockout{15 * 60 * 1000};
};

/**
 * Slows down wrong passwords. Per address: after each failure the next
 * attempt must wait 0, 0, 0.25 s, 0.5 s, 1 s, … up to 5 s. Globally: above
 * `global_failures_per_minute` failures across all addresses, every attempt
 * waits `global_pause` after the last failure, so a spray from many addresses
 * gains nothing from being many.
 *
 * A browser holding a valid device cookie (DeviceCookies; the caller verifies
 * it and passes its id) is exempt from the global pause, so the operator gets
 * in during a spray — never from its own limits: its address's wait applies,
 * the device has the same per-failure wait as an address, and a device with
 * `device_lockout_failures` wrong passwords loses the exemption until
 * `device_lockout` after its last one (a right password forgets its failures).
 *
 * Attempts inside a wait are refused (429) rather than held, so a flood of
 * them cannot tie up the server. Memory is bounded: when a table is full the
 * least recently failed entry whose wait (or lockout) is over makes room; a
 * waiting address or a locked-out device is never forgotten early, and while
 * the device table cannot make room no unknown device is exempt.
 * Thread-safe.
 */
class LoginThrottle {
 public:
  using Clock = std::chrono::steady_clock;

  explicit LoginThrottle(ThrottleOptions options = {});

  /** The pause this address's failures so far call for after the last one. */
  std::chrono::milliseconds delay_for(const std::string& address);
  /** How much longer this address must wait before its next attempt counts (0 = now): its own wait or the global one. */
  std::chrono::milliseconds retry_after(const std::string& address, Clock::time_point now = Clock::now());
  /**
   * The same for an attempt that carries a valid device cookie with id `device`
   * (empty = none): its address's wait, the device's own wait, and the global
   * pause only when the device is not exempt (locked out, or not rememberable).
   */
  std::chrono::milliseconds retry_after(const std::string& address, const std::string& device,
                                        Clock::time_point now = Clock::now());
  /** Counts a wrong password from `address`. */
  void record_failure(const std::string& address, Clock::time_point now = Clock::now());
  /** Counts a wrong password from `address` with device cookie `device` (empty = none). */
  void record_failure(const std::string& address, const std::string& device,
                      Clock::time_point now = Clock::now());
  /** Forgets `address` (its password was right). */
  void reset(const std::string& address);
  /** Forgets `address` and `device` (the password was right). */
  void reset(const std::string& address, const std::string& device);
  /** True when `device` has lost its exemption from the global pause at `now`. */
  [[nodiscard]] bool device_locked_out(const std::string& device, Clock::time_point now = Clock::now());
  /** Addresses remembered now. */
  [[nodiscard]] std::size_t size();
  /** Device cookies remembered now. */
  [[nodiscard]] std::size_t devices();

 private:
  struct Failures {
    unsigned count = 0;
    Clock::time_point last;
    std::list<std::string>::iterator recency; // position in FailureTable::m_recent
  };
  /** Failures by key (an address, a device id), bounded, least recently failed last. */
  class FailureTable {
   public:
    explicit FailureTable(std::size_t capacity) : m_capacity(capacity) {}
    [[nodiscard]] const Failures* find(const std::string& key) const;
    /** True when a new key could be remembered now: there is room, or `keep` lets the oldest entry go. */
    template <class Keep> [[nodiscard]] bool has_room(Clock::time_point now, Keep keep) const;
    /** Counts one failure of `key`; a new key that finds no room (see has_room) is not remembered. */
    template <class Keep> void record(const std::string& key, Clock::time_point now, Keep keep);
    void erase(const std::string& key);
    [[nodiscard]] std::size_t size() const noexcept { return m_entries.size(); }

   private:
    std::size_t m_capacity;
    std::unordered_map<std::string, Failures> m_entries;
    std::list<std::string> m_recent; // most recently failed first
  };

  static std::chrono::milliseconds delay_after(unsigned failures);
  [[nodiscard]] static bool waiting(const Failures& f, Clock::time_point now);
  [[nodiscard]] bool locked(const Failures& f, Clock::time_point now) const;
  [[nodiscard]] unsigned failures_last_minute(Clock::time_point now);

  ThrottleOptions m_options;
  std::mutex m_mutex;
  FailureTable m_addresses;
  FailureTable m_devices;
  // Failures per second over the last minute, for the global budget.
  std::array<unsigned, 60> m_buckets{};
  std::int64_t m_bucket_second = 0;
  Clock::time_point m_last_failure{};
};

} // namespace withcache::auth
