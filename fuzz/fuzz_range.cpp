// Fuzzes http::parse_range against representations of several sizes. The first 8 bytes of the input
// are one more size (little-endian, at most INT64_MAX like any file size), the rest is the Range
// header. A partial range must lie inside the representation, and its Content-Range must read back
// as the same range.
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "fuzz_target.hpp"
#include "http/http.hpp"
#include "withcache/util/strings.hpp"

namespace http = withcache::http;

namespace {

void check(std::string_view header, std::uint64_t size) {
  const http::ByteRange range = http::parse_range(header, size);
  if (range.kind != http::ByteRange::Kind::full) {
    WITHCACHE_FUZZ_CHECK(withcache::util::trim(header).starts_with("bytes="));
  }
  if (range.kind != http::ByteRange::Kind::partial) {
    return;
  }
  WITHCACHE_FUZZ_CHECK(range.first <= range.last);
  WITHCACHE_FUZZ_CHECK(range.last < size);
  // What the server sends with the 206 must parse back to the range it serves.
  const std::string content_range =
      "bytes " + std::to_string(range.first) + "-" + std::to_string(range.last) + "/" + std::to_string(size);
  const auto parsed = http::parse_content_range(content_range);
  WITHCACHE_FUZZ_CHECK(parsed && !parsed->unsatisfied);
  WITHCACHE_FUZZ_CHECK(parsed->first == range.first && parsed->last == range.last && parsed->total == size);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  constexpr auto k_largest = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::uint64_t fuzzed_size = 0;
  std::size_t used = 0;
  for (; used < size && used < 8; ++used) {
    fuzzed_size |= std::uint64_t{data[used]} << (8 * used);
  }
  fuzzed_size &= k_largest;
  const std::string_view header = withcache::fuzz::text_of(data + used, size - used);
  for (const std::uint64_t length :
       {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{10'000}, k_largest, fuzzed_size}) {
    check(header, length);
  }
  return 0;
}
