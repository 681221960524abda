#include "withcache/digest.hpp"

#include <array>
#include <memory>
#include <new>
#include <stdexcept>
#include <vector>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "withcache/util/encoding.hpp"

namespace withcache::digest {
namespace {

std::string hex(const unsigned char* data, std::size_t length) {
  return util::hex_lower(std::string_view(reinterpret_cast<const char*>(data), length));
}

EVP_MD_CTX* ctx_of(void* p) {
  return static_cast<EVP_MD_CTX*>(p);
}

} // namespace

Sha256::Sha256() : m_ctx(EVP_MD_CTX_new()) {
  if (m_ctx == nullptr) {
    throw std::bad_alloc();
  }
  reset();
}

Sha256::~Sha256() {
  EVP_MD_CTX_free(ctx_of(m_ctx));
}

Sha256::Sha256(Sha256&& other) noexcept : m_ctx(other.m_ctx) {
  other.m_ctx = nullptr;
}

Sha256& Sha256::operator=(Sha256&& other) noexcept {
  if (this != &other) {
    EVP_MD_CTX_free(ctx_of(m_ctx));
    m_ctx = other.m_ctx;
    other.m_ctx = nullptr;
  }
  return *this;
}

void Sha256::update(const char* data, std::size_t length) {
  EVP_DigestUpdate(ctx_of(m_ctx), data, length);
}

void Sha256::reset() {
  // SHA-256 init only fails when OpenSSL itself is broken: an invariant, not an outcome.
  if (EVP_DigestInit_ex(ctx_of(m_ctx), EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("OpenSSL EVP_DigestInit_ex(SHA-256) failed");
  }
}

std::string Sha256::hex() const {
  // Finalise a copy, so that more bytes can still be added to this one.
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> copy(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (!copy || EVP_MD_CTX_copy_ex(copy.get(), ctx_of(m_ctx)) != 1 ||
      EVP_DigestFinal_ex(copy.get(), digest.data(), &length) != 1) {
    throw std::runtime_error("OpenSSL SHA-256 finalisation failed");
  }
  return digest::hex(digest.data(), length);
}

std::string sha256_hex(std::string_view bytes) {
  Sha256 sha;
  sha.update(bytes);
  return sha.hex();
}

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), digest.data(), &length);
  return hex(digest.data(), length);
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Hash both so the comparison is over equal lengths whatever was given.
  const std::string ha = sha256_hex(a);
  const std::string hb = sha256_hex(b);
  return CRYPTO_memcmp(ha.data(), hb.data(), ha.size()) == 0 && a.size() == b.size();
}

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> buffer(bytes);
  if (RAND_bytes(buffer.data(), static_cast<int>(buffer.size())) != 1) {
    return {};
  }
  return hex(buffer.data(), buffer.size());
}

} // namespace withcache::digest
