// Fuzzes url::decode_token: whatever it accepts must re-encode to the same token.
#include <string_view>

#include "fuzz_target.hpp"
#include "withcache/url.hpp"

namespace url = withcache::url;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view token = withcache::fuzz::text_of(data, size);
  const auto decoded = url::decode_token(token);
  if (!decoded) {
    return 0;
  }
  std::string_view unpadded = token;
  while (unpadded.ends_with('=')) {
    unpadded.remove_suffix(1);
  }
  WITHCACHE_FUZZ_CHECK(url::encode_token(*decoded) == unpadded);
  WITHCACHE_FUZZ_CHECK(url::is_utf8(*decoded));
  (void)url::normalize_key(*decoded);
  return 0;
}
