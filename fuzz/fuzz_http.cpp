// Fuzzes the header parsers: Range, If-None-Match, If-Range, dates, Content-Range, Cache-Control.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "http/http.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const std::uint64_t length : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{10'000}}) {
    const auto range = withcache::http::parse_range(text, length);
    if (range.kind == withcache::http::ByteRange::Kind::partial &&
        (range.first > range.last || range.last >= length)) {
      std::abort(); // a partial range must lie inside the representation
    }
  }
  (void)withcache::http::none_match(text, "\"abc\"");
  (void)withcache::http::if_range_matches(text, "\"abc\"", 784111777);
  if (const auto date = withcache::http::parse_http_date(text)) {
    (void)withcache::http::http_date(*date);
  }
  if (const auto cr = withcache::http::parse_content_range(text);
      cr && !cr->unsatisfied && cr->last < cr->first) {
    std::abort();
  }
  for (const auto& directive : withcache::http::parse_cache_control(text)) {
    if (directive.name.empty() && !directive.has_argument) {
      std::abort(); // empty elements are skipped
    }
  }
  return 0;
}
