#include "auth/auth.hpp"

#include <fstream>
#include <stdexcept>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http/http.hpp"
#include "withcache/digest.hpp"
#include "withcache/url.hpp"
#include "withcache/util/encoding.hpp"
#include "withcache/util/strings.hpp"

namespace withcache::auth {
namespace {

using digest::constant_time_equal;

std::string trimmed(std::string_view s) {
  return std::string(util::trim(s, util::k_whitespace));
}

// The host and port an Origin/Referer URL or a Host header names, so that
// `http://Host` and `host:80` compare equal; nothing when it does not parse.
std::optional<std::pair<std::string, int>> host_and_port(std::string_view text, std::string_view scheme) {
  const auto target = url::parse_target(url::has_authority_scheme(text) ? std::string(text)
                                                                         : std::string(scheme) + "://" +
                                                                               std::string(text));
  if (!target) {
    return std::nullopt;
  }
  return std::pair{target->host, target->port};
}

// `<base64url("<prefix><user>:<expiry>:<id>")>.<HMAC-SHA256 hex under key>`: sessions (prefix `v1:`) and
// device cookies (`d1:`, another key) share the shape, never a valid token.
std::string issue_signed(std::string_view key, std::string_view prefix, std::string_view user,
                         std::chrono::system_clock::time_point expires_at) {
  // 128 random bits: a session's id (the server keeps only its hash), or a device's.
  const std::string nonce = digest::random_hex(16);
  const auto expires =
      std::chrono::duration_cast<std::chrono::seconds>(expires_at.time_since_epoch()).count();
  // base64url, so the cookie value needs no quoting.
  const std::string payload = url::encode_token(std::string(prefix) + std::string(user) + ":" +
                                                std::to_string(expires) + ":" + nonce);
  return payload + "." + digest::hmac_sha256_hex(key, payload);
}

struct SignedFields {
  std::string user;
  std::string id;
  std::int64_t expires = 0;
};

std::optional<SignedFields> read_signed(std::string_view key, std::string_view prefix, std::string_view token,
                                        std::chrono::system_clock::time_point now) {
  const std::size_t dot = token.rfind('.');
  if (dot == std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view payload = token.substr(0, dot);
  if (!constant_time_equal(digest::hmac_sha256_hex(key, payload), token.substr(dot + 1))) {
    return std::nullopt;
  }
  const auto decoded = url::decode_token(payload);
  if (!decoded || !decoded->starts_with(prefix)) {
    return std::nullopt;
  }
  const std::string_view fields = std::string_view(*decoded).substr(prefix.size());
  const std::size_t a = fields.find(':');
  const std::size_t b = a == std::string_view::npos ? a : fields.find(':', a + 1);
  if (b == std::string_view::npos) {
    return std::nullopt;
  }
  const auto expires = http::parse_decimal(fields.substr(a + 1, b - a - 1));
  if (!expires || *expires > (1ULL << 62) ||
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count() >=
          static_cast<std::int64_t>(*expires)) {
    return std::nullopt;
  }
  return SignedFields{std::string(fields.substr(0, a)), std::string(fields.substr(b + 1)),
                      static_cast<std::int64_t>(*expires)};
}

constexpr std::string_view k_session_prefix = "v1:";
constexpr std::string_view k_device_prefix = "d1:";

} // namespace

std::string session_secret(const std::filesystem::path& data_dir, const char* env_secret) {
  if (env_secret != nullptr && !trimmed(env_secret).empty()) {
    return trimmed(env_secret);
  }
  const std::filesystem::path path = data_dir / "session-secret";
  std::ifstream existing(path);
  if (existing) {
    std::string secret;
    std::getline(existing, secret);
    secret = trimmed(secret);
    if (!secret.empty()) {
      return secret;
    }
  }
  const std::string secret = digest::random_hex(32);
  if (secret.empty()) {
    throw std::runtime_error("cannot generate a session secret (OpenSSL RAND_bytes failed)");
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, S_IRUSR | S_IWUSR);
  if (fd < 0) {
    throw std::runtime_error("cannot create " + path.string());
  }
  const std::string line = secret + "\n";
  const bool ok =
      ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
  ::fchmod(fd, S_IRUSR | S_IWUSR);
  ::close(fd);
  if (!ok) {
    throw std::runtime_error("cannot write " + path.string());
  }
  return secret;
}

Sessions::Sessions(std::string secret, std::chrono::seconds lifetime)
    : m_secret(std::move(secret)), m_lifetime(lifetime) {}

std::string Sessions::sign(std::string_view payload) const {
  return digest::hmac_sha256_hex(m_secret, payload);
}

std::string Sessions::issue(std::string_view user, std::chrono::system_clock::time_point now) const {
  return issue_signed(m_secret, k_session_prefix, user, now + m_lifetime);
}

std::optional<std::string> Sessions::verify(std::string_view token,
                                            std::chrono::system_clock::time_point now) const {
  auto parsed = claims(token, now);
  if (!parsed) {
    return std::nullopt;
  }
  return std::move(parsed->user);
}

std::string Sessions::password_fingerprint(std::string_view password) const {
  return sign("withcache operator password v1\n" + std::string(password));
}

std::optional<Claims> Sessions::claims(std::string_view token,
                                       std::chrono::system_clock::time_point now) const {
  auto fields = read_signed(m_secret, k_session_prefix, token, now);
  if (!fields) {
    return std::nullopt;
  }
  return Claims{std::move(fields->user), std::move(fields->id), fields->expires};
}

DeviceCookies::DeviceCookies(std::string_view secret, std::chrono::seconds lifetime)
    : m_key(digest::hmac_sha256_hex(secret, "withcache device cookie key v1")), m_lifetime(lifetime) {}

std::string DeviceCookies::issue(std::string_view user, std::chrono::system_clock::time_point now) const {
  return issue_signed(m_key, k_device_prefix, user, now + m_lifetime);
}

std::optional<DeviceClaims> DeviceCookies::claims(std::string_view token,
                                                  std::chrono::system_clock::time_point now) const {
  auto fields = read_signed(m_key, k_device_prefix, token, now);
  if (!fields) {
    return std::nullopt;
  }
  return DeviceClaims{std::move(fields->user), std::move(fields->id), fields->expires};
}

std::string id_hash(std::string_view id) {
  return digest::sha256_hex(id);
}

void SessionTable::load(std::vector<SessionRecord> records) {
  std::unique_lock lock(m_mutex);
  m_by_hash.clear();
  for (auto& record : records) {
    std::string key = record.id_hash;
    m_by_hash.emplace(std::move(key), std::move(record));
  }
}

void SessionTable::add(SessionRecord record) {
  std::unique_lock lock(m_mutex);
  std::string key = record.id_hash;
  m_by_hash.insert_or_assign(std::move(key), std::move(record));
}

bool SessionTable::live(const Claims& claims, std::int64_t now) const {
  if (claims.id.empty()) {
    return false;
  }
  const std::string key = id_hash(claims.id);
  std::shared_lock lock(m_mutex);
  const auto it = m_by_hash.find(key);
  return it != m_by_hash.end() && it->second.expires_at > now && it->second.user == claims.user;
}

bool SessionTable::revoke(const std::string& hash) {
  std::unique_lock lock(m_mutex);
  return m_by_hash.erase(hash) > 0;
}

std::size_t SessionTable::revoke_all() {
  std::unique_lock lock(m_mutex);
  const std::size_t n = m_by_hash.size();
  m_by_hash.clear();
  return n;
}

std::size_t SessionTable::purge_expired(std::int64_t now) {
  std::unique_lock lock(m_mutex);
  return std::erase_if(m_by_hash, [now](const auto& entry) { return entry.second.expires_at <= now; });
}

std::size_t SessionTable::size() const {
  std::shared_lock lock(m_mutex);
  return m_by_hash.size();
}

std::optional<std::string> cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    const std::size_t semicolon = header.find(';');
    const std::string pair = trimmed(header.substr(0, semicolon));
    header = semicolon == std::string_view::npos ? std::string_view{} : header.substr(semicolon + 1);
    const std::size_t eq = pair.find('=');
    if (eq != std::string::npos && pair.substr(0, eq) == name) {
      return pair.substr(eq + 1);
    }
  }
  return std::nullopt;
}

bool same_origin(std::string_view origin, std::string_view referer, std::string_view host) {
  const std::string_view claimed = !origin.empty() ? origin : referer;
  if (claimed.empty()) {
    return true;
  }
  if (claimed == "null") {
    return false;
  }
  // A browser sends an absolute http(s) URL (or "null"); anything else is not a same-origin claim.
  const std::string claimed_scheme = url::scheme_of(claimed);
  if (host.empty() || !url::has_authority_scheme(claimed) || (claimed_scheme != "http" && claimed_scheme != "https")) {
    return false;
  }
  // The Host header carries no scheme: read it with the claimed one, so default ports agree.
  const std::string scheme = url::scheme_of(claimed);
  const auto a = host_and_port(claimed, scheme);
  const auto b = host_and_port(host, scheme.empty() ? "http" : scheme);
  return a && b && *a == *b;
}

LoginThrottle::LoginThrottle(ThrottleOptions options)
    : m_options(options), m_addresses(options.max_addresses), m_devices(options.max_devices) {}

const LoginThrottle::Failures* LoginThrottle::FailureTable::find(const std::string& key) const {
  const auto it = m_entries.find(key);
  return it == m_entries.end() ? nullptr : &it->second;
}

template <class Keep> bool LoginThrottle::FailureTable::has_room(Clock::time_point now, Keep keep) const {
  if (m_entries.size() < m_capacity) {
    return true;
  }
  const auto oldest = m_recent.empty() ? m_entries.end() : m_entries.find(m_recent.back());
  return oldest != m_entries.end() && !keep(oldest->second, now);
}

template <class Keep>
void LoginThrottle::FailureTable::record(const std::string& key, Clock::time_point now, Keep keep) {
  auto it = m_entries.find(key);
  if (it == m_entries.end()) {
    if (m_entries.size() >= m_capacity) {
      // Make room with the least recently failed entry that may go; if even that one must stay, remember
      // no new key: a full table of waiting entries means far more failures than the global budget, and
      // the global pacing holds them.
      if (!has_room(now, keep)) {
        return;
      }
      m_entries.erase(m_recent.back());
      m_recent.pop_back();
    }
    m_recent.push_front(key);
    it = m_entries.emplace(key, Failures{0, now, m_recent.begin()}).first;
  } else {
    m_recent.splice(m_recent.begin(), m_recent, it->second.recency);
  }
  ++it->second.count;
  it->second.last = now;
}

void LoginThrottle::FailureTable::erase(const std::string& key) {
  if (const auto it = m_entries.find(key); it != m_entries.end()) {
    m_recent.erase(it->second.recency);
    m_entries.erase(it);
  }
}

std::chrono::milliseconds LoginThrottle::delay_after(unsigned failures) {
  if (failures < 2) {
    return std::chrono::milliseconds(0);
  }
  const unsigned shift = std::min(failures - 2, 5U);
  return std::min(std::chrono::milliseconds(250 << shift), std::chrono::milliseconds(5000));
}

bool LoginThrottle::waiting(const Failures& f, Clock::time_point now) {
  return f.last + delay_after(f.count) > now;
}

bool LoginThrottle::locked(const Failures& f, Clock::time_point now) const {
  return f.count >= m_options.device_lockout_failures && f.last + m_options.device_lockout > now;
}

unsigned LoginThrottle::failures_last_minute(Clock::time_point now) {
  const std::int64_t second = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  // Buckets older than a minute are emptied as time moves on.
  const std::int64_t elapsed = std::min<std::int64_t>(second - m_bucket_second, 60);
  for (std::int64_t s = 1; s <= elapsed; ++s) {
    m_buckets[static_cast<std::size_t>((m_bucket_second + s) % 60)] = 0;
  }
  if (elapsed > 0) {
    m_bucket_second = second;
  }
  unsigned total = 0;
  for (const unsigned n : m_buckets) {
    total += n;
  }
  return total;
}

std::chrono::milliseconds LoginThrottle::delay_for(const std::string& address) {
  std::lock_guard lock(m_mutex);
  const Failures* f = m_addresses.find(address);
  return delay_after(f == nullptr ? 0 : f->count);
}

std::chrono::milliseconds LoginThrottle::retry_after(const std::string& address, Clock::time_point now) {
  return retry_after(address, std::string(), now);
}

std::chrono::milliseconds LoginThrottle::retry_after(const std::string& address, const std::string& device,
                                                     Clock::time_point now) {
  std::lock_guard lock(m_mutex);
  Clock::time_point ready = now;
  if (const Failures* f = m_addresses.find(address)) {
    ready = std::max(ready, f->last + delay_after(f->count));
  }
  bool exempt = false;
  if (!device.empty()) {
    if (const Failures* f = m_devices.find(device)) {
      ready = std::max(ready, f->last + delay_after(f->count));
      exempt = !locked(*f, now);
    } else {
      // A device the table could not remember if it failed would escape its own lockout: not exempt then.
      exempt = m_devices.has_room(
          now, [this](const Failures& g, Clock::time_point t) { return waiting(g, t) || locked(g, t); });
    }
  }
  if (!exempt && failures_last_minute(now) > m_options.global_failures_per_minute) {
    ready = std::max(ready, m_last_failure + m_options.global_pause);
  }
  return std::chrono::ceil<std::chrono::milliseconds>(ready - now);
}

void LoginThrottle::record_failure(const std::string& address, Clock::time_point now) {
  record_failure(address, std::string(), now);
}

void LoginThrottle::record_failure(const std::string& address, const std::string& device,
                                   Clock::time_point now) {
  std::lock_guard lock(m_mutex);
  (void)failures_last_minute(now); // move the buckets to `now`
  ++m_buckets[static_cast<std::size_t>(m_bucket_second % 60)];
  m_last_failure = std::max(m_last_failure, now);
  m_addresses.record(address, now, [](const Failures& f, Clock::time_point t) { return waiting(f, t); });
  if (!device.empty()) {
    m_devices.record(device, now, [this](const Failures& f, Clock::time_point t) {
      return waiting(f, t) || locked(f, t);
    });
  }
}

void LoginThrottle::reset(const std::string& address) {
  reset(address, std::string());
}

void LoginThrottle::reset(const std::string& address, const std::string& device) {
  std::lock_guard lock(m_mutex);
  m_addresses.erase(address);
  if (!device.empty()) {
    m_devices.erase(device);
  }
}

bool LoginThrottle::device_locked_out(const std::string& device, Clock::time_point now) {
  std::lock_guard lock(m_mutex);
  const Failures* f = m_devices.find(device);
  return f != nullptr && locked(*f, now);
}

std::size_t LoginThrottle::size() {
  std::lock_guard lock(m_mutex);
  return m_addresses.size();
}

std::size_t LoginThrottle::devices() {
  std::lock_guard lock(m_mutex);
  return m_devices.size();
}

} // namespace withcache::auth
