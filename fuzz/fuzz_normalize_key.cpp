// Fuzzes url::normalize_key and the functions that read an origin URL, checking the invariants a
// cache key must keep.
#include <string>
#include <string_view>

#include "fuzz_target.hpp"
#include "withcache/url.hpp"

namespace url = withcache::url;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input = withcache::fuzz::text_of(data, size);
  const url::KeyOptions modes[] = {{}, {.keep_query = true}, {.drop_query = true}, {.query_drop = {"v", "x-*"}}};
  for (const auto& mode : modes) {
    const auto key = url::normalize_key(input, mode);
    if (!key) {
      continue;
    }
    // A key is a fixed point: normalising it again changes nothing.
    const auto again = url::normalize_key(*key, mode);
    WITHCACHE_FUZZ_CHECK(again && *again == *key);
    WITHCACHE_FUZZ_CHECK(key->find('#') == std::string::npos);
    WITHCACHE_FUZZ_CHECK(!mode.drop_query || key->find('?') == std::string::npos);
  }
  // One parse: the URL a fill fetches has the key of the URL it came from.
  const auto fetched = url::fetch_url(input);
  const auto key = url::normalize_key(input);
  WITHCACHE_FUZZ_CHECK(fetched.has_value() == key.has_value());
  WITHCACHE_FUZZ_CHECK(!fetched || url::normalize_key(*fetched).value_or("") == *key);
  (void)url::basename_of(input);
  (void)url::redact(input);
  (void)url::cache_base(input);
  const auto decoded = url::decode_token(url::encode_token(input));
  WITHCACHE_FUZZ_CHECK(input.empty() || !url::is_utf8(input) || (decoded && *decoded == input));
  return 0;
}
