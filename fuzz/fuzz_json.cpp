// Fuzzes json::parse: whatever parses must survive a write/parse round trip of its strings.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "withcache/json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto value = withcache::json::parse(text);
  if (value && value->as_string() != nullptr) {
    const auto again = withcache::json::parse(withcache::json::quote(*value->as_string()));
    if (!again || *again->as_string() != *value->as_string()) {
      std::abort();
    }
  }
  return 0;
}
