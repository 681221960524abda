// Fuzzes normalize_key and the functions that read an origin URL, checking
// the invariants a cache key must keep.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "withcache/url.hpp"

namespace url = withcache::url;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  for (const bool keep_query : {false, true}) {
    const auto key = url::normalize_key(input, {.keep_query = keep_query});
    if (!key) {
      continue;
    }
    // A key is a fixed point: normalising it again changes nothing.
    const auto again = url::normalize_key(*key, {.keep_query = keep_query});
    if (!again || *again != *key) {
      std::abort();
    }
    if (key->find('#') != std::string::npos || (!keep_query && key->find('?') != std::string::npos)) {
      std::abort();
    }
  }
  (void)url::basename_of(input);
  (void)url::redact(input);
  (void)url::cache_base(input);
  const auto token = url::encode_token(input);
  const auto decoded = url::decode_token(token);
  if (!input.empty() && url::is_utf8(input) && (!decoded || *decoded != input)) {
    std::abort();
  }
  return 0;
}
