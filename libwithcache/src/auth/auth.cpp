#include "withcache/auth.hpp"

#include <array>
#include <fstream>
#include <stdexcept>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "withcache/url.hpp"

namespace withcache::auth {
namespace {

std::string hex(const unsigned char* data, std::size_t length) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(length * 2);
  for (std::size_t i = 0; i < length; ++i) {
    out += digits[data[i] >> 4];
    out += digits[data[i] & 0xF];
  }
  return out;
}

std::string trim(std::string_view s) {
  const std::size_t first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) {
    return {};
  }
  return std::string(s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1));
}

// "https://Host:3000/path" → "host:3000"; "host:3000" stays.
std::string authority_of(std::string_view url) {
  const std::size_t scheme = url.find("://");
  std::string_view rest = scheme == std::string_view::npos ? url : url.substr(scheme + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  std::string out(rest);
  for (char& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  // Default ports are often left out of Host but written in Origin, or the reverse.
  for (const char* suffix : {":80", ":443"}) {
    if (out.ends_with(suffix)) {
      out.resize(out.size() - std::string_view(suffix).size());
    }
  }
  return out;
}

} // namespace

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Hash both so the comparison is over equal lengths whatever was given.
  const std::string ha = url::sha256_hex(a);
  const std::string hb = url::sha256_hex(b);
  return CRYPTO_memcmp(ha.data(), hb.data(), ha.size()) == 0 && a.size() == b.size();
}

std::string session_secret(const std::filesystem::path& data_dir, const char* env_secret) {
  if (env_secret != nullptr && !trim(env_secret).empty()) {
    return trim(env_secret);
  }
  const std::filesystem::path path = data_dir / "session-secret";
  std::ifstream existing(path);
  if (existing) {
    std::string secret;
    std::getline(existing, secret);
    secret = trim(secret);
    if (!secret.empty()) {
      return secret;
    }
  }
  std::array<unsigned char, 32> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    throw std::runtime_error("cannot generate a session secret (OpenSSL RAND_bytes failed)");
  }
  const std::string secret = hex(bytes.data(), bytes.size());
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
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), m_secret.data(), static_cast<int>(m_secret.size()),
       reinterpret_cast<const unsigned char*>(payload.data()), payload.size(), digest, &length);
  return hex(digest, length);
}

std::string Sessions::issue(std::string_view user, std::chrono::system_clock::time_point now) const {
  std::array<unsigned char, 12> nonce{};
  RAND_bytes(nonce.data(), static_cast<int>(nonce.size()));
  const auto expires =
      std::chrono::duration_cast<std::chrono::seconds>((now + m_lifetime).time_since_epoch()).count();
  // v1:<user>:<expiry>:<nonce>, base64url so the cookie value needs no quoting.
  const std::string payload = url::encode_token("v1:" + std::string(user) + ":" + std::to_string(expires) +
                                                ":" + hex(nonce.data(), nonce.size()));
  return payload + "." + sign(payload);
}

std::optional<std::string> Sessions::verify(std::string_view token,
                                            std::chrono::system_clock::time_point now) const {
  const std::size_t dot = token.rfind('.');
  if (dot == std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view payload = token.substr(0, dot);
  if (!constant_time_equal(sign(payload), token.substr(dot + 1))) {
    return std::nullopt;
  }
  const auto decoded = url::decode_token(payload);
  if (!decoded || !decoded->starts_with("v1:")) {
    return std::nullopt;
  }
  const std::string_view fields = std::string_view(*decoded).substr(3);
  const std::size_t a = fields.find(':');
  const std::size_t b = a == std::string_view::npos ? a : fields.find(':', a + 1);
  if (b == std::string_view::npos) {
    return std::nullopt;
  }
  long long expires = 0;
  try {
    expires = std::stoll(std::string(fields.substr(a + 1, b - a - 1)));
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count() >= expires) {
    return std::nullopt;
  }
  return std::string(fields.substr(0, a));
}

std::optional<std::string> cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    const std::size_t semicolon = header.find(';');
    const std::string pair = trim(header.substr(0, semicolon));
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
  return !host.empty() && authority_of(claimed) == authority_of(host);
}

std::chrono::milliseconds LoginThrottle::delay_after(unsigned failures) {
  if (failures < 2) {
    return std::chrono::milliseconds(0);
  }
  const unsigned shift = std::min(failures - 2, 5U);
  return std::min(std::chrono::milliseconds(250 << shift), std::chrono::milliseconds(5000));
}

std::chrono::milliseconds LoginThrottle::delay_for(const std::string& address) {
  std::lock_guard lock(m_mutex);
  const auto it = m_failures.find(address);
  return delay_after(it == m_failures.end() ? 0 : it->second.count);
}

std::chrono::milliseconds LoginThrottle::retry_after(const std::string& address, Clock::time_point now) {
  std::lock_guard lock(m_mutex);
  const auto it = m_failures.find(address);
  if (it == m_failures.end()) {
    return std::chrono::milliseconds(0);
  }
  const auto ready = it->second.last + delay_after(it->second.count);
  return ready <= now ? std::chrono::milliseconds(0)
                      : std::chrono::ceil<std::chrono::milliseconds>(ready - now);
}

void LoginThrottle::record_failure(const std::string& address, Clock::time_point now) {
  std::lock_guard lock(m_mutex);
  if (m_failures.size() > 10'000) {
    m_failures.clear(); // bounded memory under a spray of addresses
  }
  auto& f = m_failures[address];
  ++f.count;
  f.last = now;
}

void LoginThrottle::reset(const std::string& address) {
  std::lock_guard lock(m_mutex);
  m_failures.erase(address);
}

} // namespace withcache::auth
