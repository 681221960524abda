// Fuzzes the read path's header parsers other than Range (fuzz_range): If-None-Match, If-Range,
// IMF-fixdates, Content-Range and Cache-Control.
#include <string_view>

#include "fuzz_target.hpp"
#include "http/http.hpp"

namespace http = withcache::http;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = withcache::fuzz::text_of(data, size);
  (void)http::none_match(text, "\"abc\"");
  (void)http::if_range_matches(text, "\"abc\"", 784111777);
  if (const auto date = http::parse_http_date(text)) {
    // A date we accept formats as an IMF-fixdate that reads back as the same time.
    const auto again = http::parse_http_date(http::http_date(*date));
    WITHCACHE_FUZZ_CHECK(again && *again == *date);
  }
  if (const auto range = http::parse_content_range(text); range && !range->unsatisfied) {
    WITHCACHE_FUZZ_CHECK(range->first <= range->last);
  }
  for (const auto& directive : http::parse_cache_control(text)) {
    WITHCACHE_FUZZ_CHECK(!directive.name.empty() || directive.has_argument); // empty elements are skipped
  }
  return 0;
}
