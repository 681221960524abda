// Fuzzes json::parse, the strict parser of request bodies: it must accept exactly what nlohmann's
// own parser accepts minus repeated keys and nesting deeper than k_max_depth (recomputed here from
// SAX events, independently of parse()'s callback); an accepted text must be UTF-8 with no byte
// left over; and whatever it accepts must dump to text that parses back to an equal value.
#include <algorithm>
#include <cstddef>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_target.hpp"
#include "withcache/url.hpp"
#include "json/json.hpp"

namespace json = withcache::json;

namespace {

// What a strict parser must refuse, observed through nlohmann's SAX interface.
class StrictnessModel {
 public:
  using number_integer_t = json::Json::number_integer_t;
  using number_unsigned_t = json::Json::number_unsigned_t;
  using number_float_t = json::Json::number_float_t;
  using string_t = json::Json::string_t;
  using binary_t = json::Json::binary_t;

  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(number_integer_t) { return true; }
  bool number_unsigned(number_unsigned_t) { return true; }
  bool number_float(number_float_t, const string_t&) { return true; }
  bool string(string_t&) { return true; }
  bool binary(binary_t&) { return true; }
  bool start_object(std::size_t) {
    m_keys.emplace_back();
    return enter();
  }
  bool key(string_t& key) {
    if (!m_keys.empty() && !m_keys.back().insert(key).second) {
      m_repeated_key = true;
    }
    return true;
  }
  bool end_object() {
    m_keys.pop_back();
    --m_depth;
    return true;
  }
  bool start_array(std::size_t) { return enter(); }
  bool end_array() {
    --m_depth;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) { return false; }

  [[nodiscard]] bool strict_ok() const { return !m_repeated_key && m_max_depth <= json::k_max_depth; }

 private:
  bool enter() {
    ++m_depth;
    m_max_depth = std::max(m_max_depth, m_depth);
    return true;
  }
  std::vector<std::set<std::string>> m_keys; // one per open object
  int m_depth = 0;
  int m_max_depth = 0;
  bool m_repeated_key = false;
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = withcache::fuzz::text_of(data, size);
  const auto value = json::parse(text);

  StrictnessModel model;
  // nlohmann's lexer stops at a NUL byte; a strict parser refuses one anywhere.
  const bool well_formed =
      text.find('\0') == std::string_view::npos && json::Json::sax_parse(text.begin(), text.end(), &model);
  WITHCACHE_FUZZ_CHECK(value.has_value() == (well_formed && model.strict_ok()));
  if (!value) {
    return 0;
  }
  // Every byte of an accepted text is part of the JSON value: nothing after it, not even past a NUL.
  WITHCACHE_FUZZ_CHECK(text.find('\0') == std::string_view::npos);
  // Outside strings JSON is ASCII, and strings must be UTF-8: an accepted text is UTF-8 throughout.
  WITHCACHE_FUZZ_CHECK(withcache::url::is_utf8(text));

  const std::string written = json::dump(*value);
  const auto again = json::parse(written);
  WITHCACHE_FUZZ_CHECK(again.has_value());
  WITHCACHE_FUZZ_CHECK(*again == *value);
  WITHCACHE_FUZZ_CHECK(json::dump(*again) == written);
  return 0;
}
