// Fuzzes http::parse_header_line and http::parse_header_lines (header files and --header options):
// a parsed name is a token, a parsed value holds no CR, LF or NUL and no surrounding blanks, and the
// fields written back as `Name: Value` lines parse to the same fields.
#include <string>
#include <string_view>

#include "fuzz_target.hpp"
#include "http/http.hpp"
#include "withcache/util/strings.hpp"

namespace http = withcache::http;

namespace {

void check_field(const std::string& name, const std::string& value) {
  WITHCACHE_FUZZ_CHECK(http::is_token(name));
  WITHCACHE_FUZZ_CHECK(value.find_first_of(std::string_view("\r\n\0", 3)) == std::string::npos);
  WITHCACHE_FUZZ_CHECK(withcache::util::trim(value) == value);
  WITHCACHE_FUZZ_CHECK(!http::check_field(name, value));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = withcache::fuzz::text_of(data, size);

  if (const auto field = http::parse_header_line(text)) {
    check_field(field->first, field->second);
    WITHCACHE_FUZZ_CHECK(text.substr(0, text.find(':')) == field->first);
  }

  const auto fields = http::parse_header_lines(text);
  if (!fields) {
    return 0;
  }
  std::string written;
  for (const auto& [name, value] : *fields) {
    check_field(name, value);
    written += name + ": " + value + "\r\n";
  }
  const auto again = http::parse_header_lines(written);
  WITHCACHE_FUZZ_CHECK(again && *again == *fields);
  if (!fields->empty()) {
    // Lookup ignores case and finds the first field of a name.
    const auto found = http::find_field(*fields, withcache::util::upper(fields->front().first));
    WITHCACHE_FUZZ_CHECK(found && *found == fields->front().second);
  }
  return 0;
}
