// Fuzzes decode_token: whatever it accepts must re-encode to the same token.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "withcache/url.hpp"

namespace url = withcache::url;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view token(reinterpret_cast<const char*>(data), size);
  const auto decoded = url::decode_token(token);
  if (!decoded) {
    return 0;
  }
  std::string_view unpadded = token;
  while (unpadded.ends_with('=')) {
    unpadded.remove_suffix(1);
  }
  if (url::encode_token(*decoded) != unpadded || !url::is_utf8(*decoded)) {
    std::abort();
  }
  (void)url::normalize_key(*decoded);
  return 0;
}
