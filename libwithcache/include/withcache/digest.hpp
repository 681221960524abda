#pragma once

/**
 * @file
 * withcache::digest — SHA-256, HMAC-SHA256, constant-time comparison and
 * random tokens, over OpenSSL's EVP interface (kept out of this header).
 * Free functions are thread-safe; one Sha256 is not.
 */

#include <cstddef>
#include <string>
#include <string_view>

namespace withcache::digest {

/** An incremental SHA-256 for bytes that arrive in pieces. Not thread-safe. */
class Sha256 {
 public:
  /** @throws std::bad_alloc when OpenSSL cannot allocate a context. */
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  Sha256(Sha256&& other) noexcept;
  Sha256& operator=(Sha256&& other) noexcept;

  /** Adds bytes. */
  void update(const char* data, std::size_t length);
  /** Adds bytes. */
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  /** Starts over, as if nothing had been added. */
  void reset();
  /** Lower-case hex digest of everything added so far; the hasher stays usable. */
  [[nodiscard]] std::string hex() const;

 private:
  void* m_ctx; // EVP_MD_CTX*
};

/** Lower-case hex SHA-256 of `bytes`. */
std::string sha256_hex(std::string_view bytes);

/** Lower-case hex HMAC-SHA256 of `data` under `key`. */
std::string hmac_sha256_hex(std::string_view key, std::string_view data);

/** True when `a` equals `b`, in time that does not depend on where they differ (CRYPTO_memcmp over digests). */
bool constant_time_equal(std::string_view a, std::string_view b);

/**
 * `bytes` random bytes from OpenSSL's CSPRNG, as lower-case hex.
 * @return empty when the generator fails (callers treat that as fatal).
 */
std::string random_hex(std::size_t bytes);

} // namespace withcache::digest
