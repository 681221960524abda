#include "http/http.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>

#include "withcache/util/strings.hpp"

namespace withcache::http {
namespace {

using util::trim;

bool is_token_char(char c) {
  return util::is_alnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

constexpr std::array<const char*, 7> k_days = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr std::array<const char*, 12> k_months = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

} // namespace

bool is_token(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), is_token_char);
}

std::optional<std::pair<std::string, std::string>> parse_header_line(std::string_view line) {
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view name = line.substr(0, colon);
  const std::string_view value = trim(line.substr(colon + 1));
  if (check_field(name, value)) {
    return std::nullopt;
  }
  return std::pair{std::string(name), std::string(value)};
}

std::optional<Fields> parse_header_lines(std::string_view text) {
  Fields fields;
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    if (line.ends_with('\r')) {
      line.remove_suffix(1);
    }
    if (trim(line).empty()) {
      continue;
    }
    auto field = parse_header_line(line);
    if (!field) {
      return std::nullopt;
    }
    fields.push_back(std::move(*field));
  }
  return fields;
}

std::optional<std::string> check_field(std::string_view name, std::string_view value) {
  if (!is_token(name)) {
    return "invalid header name (letters, digits and !#$%&'*+-.^_`|~ only)";
  }
  if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) {
    return "header " + std::string(name) + " has a line break or NUL in its value";
  }
  return std::nullopt;
}

std::optional<std::string_view> find_field(const Fields& fields, std::string_view name) {
  for (const auto& [n, v] : fields) {
    if (util::iequals(n, name)) {
      return std::string_view(v);
    }
  }
  return std::nullopt;
}

std::optional<std::uint64_t> parse_decimal(std::string_view text) {
  if (text.empty() || text.size() > 19) {
    return std::nullopt;
  }
  std::uint64_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return value;
}

std::optional<ContentRange> parse_content_range(std::string_view value) {
  value = trim(value);
  if (!value.starts_with("bytes ")) {
    return std::nullopt;
  }
  value.remove_prefix(6);
  const std::size_t slash = value.find('/');
  if (slash == std::string_view::npos) {
    return std::nullopt;
  }
  ContentRange range;
  const std::string_view total = value.substr(slash + 1);
  if (total != "*") {
    const auto t = parse_decimal(total);
    if (!t) {
      return std::nullopt;
    }
    range.total = *t;
  }
  const std::string_view span = value.substr(0, slash);
  if (span == "*") {
    range.unsatisfied = true;
    return range;
  }
  const std::size_t dash = span.find('-');
  if (dash == std::string_view::npos) {
    return std::nullopt;
  }
  const auto first = parse_decimal(span.substr(0, dash));
  const auto last = parse_decimal(span.substr(dash + 1));
  if (!first || !last || *last < *first) {
    return std::nullopt;
  }
  range.first = *first;
  range.last = *last;
  return range;
}

namespace {

// A range position: digits only; a number too large for 64 bits saturates (it
// is past the end of any file), which is what RFC 9110 asks of such a position.
std::optional<std::uint64_t> position(std::string_view text) {
  if (text.empty() || !std::all_of(text.begin(), text.end(), util::is_digit)) {
    return std::nullopt;
  }
  return parse_decimal(text).value_or(UINT64_MAX);
}

} // namespace

ByteRange parse_range(std::string_view header, std::uint64_t size) {
  ByteRange full;
  header = trim(header);
  if (!header.starts_with("bytes=")) {
    return full;
  }
  const std::string_view spec = trim(header.substr(6));
  if (spec.find(',') != std::string_view::npos) {
    return full; // several ranges: we answer with the whole representation
  }
  const std::size_t dash = spec.find('-');
  if (dash == std::string_view::npos) {
    return full;
  }
  const std::string_view first_text = trim(spec.substr(0, dash));
  const std::string_view last_text = trim(spec.substr(dash + 1));
  ByteRange range;
  range.kind = ByteRange::Kind::partial;
  if (first_text.empty()) {
    // Suffix range: the last n bytes (a huge n is all of them).
    const auto n = position(last_text);
    if (!n) {
      return full;
    }
    if (*n == 0 || size == 0) {
      range.kind = ByteRange::Kind::unsatisfiable;
      return range;
    }
    range.first = *n >= size ? 0 : size - *n;
    range.last = size - 1;
    return range;
  }
  const auto first = position(first_text);
  if (!first) {
    return full;
  }
  std::uint64_t last = size == 0 ? 0 : size - 1;
  if (!last_text.empty()) {
    const auto parsed = position(last_text);
    if (!parsed || *parsed < *first) {
      return full;
    }
    last = std::min(*parsed, last);
  }
  if (*first >= size) {
    range.kind = ByteRange::Kind::unsatisfiable;
    return range;
  }
  range.first = *first;
  range.last = last;
  return range;
}

bool none_match(std::string_view if_none_match, std::string_view etag) {
  const auto opaque = [](std::string_view tag) {
    tag = trim(tag);
    if (tag.starts_with("W/")) {
      tag.remove_prefix(2);
    }
    return tag;
  };
  if (trim(if_none_match) == "*") {
    return true;
  }
  while (!if_none_match.empty()) {
    const std::size_t comma = if_none_match.find(',');
    if (opaque(if_none_match.substr(0, comma)) == opaque(etag)) {
      return true;
    }
    if_none_match = comma == std::string_view::npos ? std::string_view{} : if_none_match.substr(comma + 1);
  }
  return false;
}

std::string http_date(std::time_t time) {
  std::tm tm{};
  ::gmtime_r(&time, &tm);
  char buffer[40];
  std::snprintf(buffer, sizeof buffer, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                k_days.at(static_cast<std::size_t>(tm.tm_wday)), tm.tm_mday,
                k_months.at(static_cast<std::size_t>(tm.tm_mon)), tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buffer;
}

std::optional<std::time_t> parse_http_date(std::string_view text) {
  // "Sun, 06 Nov 1994 08:49:37 GMT"
  text = trim(text);
  if (text.size() != 29 || text.substr(3, 2) != ", " || !text.ends_with(" GMT")) {
    return std::nullopt;
  }
  std::tm tm{};
  const auto day = parse_decimal(text.substr(5, 2));
  const auto year = parse_decimal(text.substr(12, 4));
  const auto hour = parse_decimal(text.substr(17, 2));
  const auto minute = parse_decimal(text.substr(20, 2));
  const auto second = parse_decimal(text.substr(23, 2));
  if (!day || !year || !hour || !minute || !second || text[7] != ' ' || text[11] != ' ' || text[16] != ' ' ||
      text[19] != ':' || text[22] != ':') {
    return std::nullopt;
  }
  int month = -1;
  for (std::size_t i = 0; i < k_months.size(); ++i) {
    if (text.substr(8, 3) == k_months[i]) {
      month = static_cast<int>(i);
    }
  }
  // A leap second (:60) is read as :59, so that what is parsed always formats back the same.
  if (month < 0 || *day < 1 || *day > 31 || *hour > 23 || *minute > 59 || *second > 60 || *year < 1970) {
    return std::nullopt;
  }
  tm.tm_mday = static_cast<int>(*day);
  tm.tm_mon = month;
  tm.tm_year = static_cast<int>(*year) - 1900;
  tm.tm_hour = static_cast<int>(*hour);
  tm.tm_min = static_cast<int>(*minute);
  tm.tm_sec = static_cast<int>(std::min<std::uint64_t>(*second, 59));
  const std::time_t time = ::timegm(&tm);
  // Refuse what timegm had to normalise (31 Feb) and a day name that is not that date's.
  std::tm check{};
  ::gmtime_r(&time, &check);
  if (check.tm_mday != static_cast<int>(*day) || check.tm_mon != month ||
      text.substr(0, 3) != k_days.at(static_cast<std::size_t>(check.tm_wday))) {
    return std::nullopt;
  }
  return time;
}

bool if_range_matches(std::string_view if_range, std::string_view etag, std::time_t last_modified) {
  if_range = trim(if_range);
  if (if_range.starts_with('"')) {
    return if_range == etag;
  }
  if (if_range.starts_with("W/")) {
    return false;
  }
  const auto date = parse_http_date(if_range);
  return date && *date == last_modified;
}

bool is_strong_etag(std::string_view text) {
  if (text.size() < 2 || text.front() != '"' || text.back() != '"') {
    return false;
  }
  return std::all_of(text.begin() + 1, text.end() - 1, [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u == 0x21 || (u >= 0x23 && u <= 0x7E) || u >= 0x80;
  });
}

bool range_applies(std::optional<std::string_view> if_range, const RangeGuard& guard) {
  if (!if_range) {
    return guard.bare_range;
  }
  const std::string_view value = trim(*if_range);
  if (value.starts_with('"')) {
    return is_strong_etag(value) && value == guard.etag;
  }
  if (value.starts_with("W/") || !guard.last_modified) {
    return false;
  }
  const auto date = parse_http_date(value);
  return date && *date == *guard.last_modified;
}

RangeAnswer answer_range(const ByteRange& asked, std::optional<std::string_view> if_range,
                         const RangeGuard& guard) {
  if (asked.kind == ByteRange::Kind::full) {
    return RangeAnswer::whole;
  }
  if (range_applies(if_range, guard)) {
    return RangeAnswer::range;
  }
  // A client that sent If-Range restarts on a 200 (that is what If-Range means); one that did not may
  // hold bytes of another version before `first`, and some (wget) would splice them onto a 200.
  const bool from_start = asked.kind == ByteRange::Kind::partial && asked.first == 0;
  return !if_range && !from_start ? RangeAnswer::needs_if_range : RangeAnswer::whole;
}

std::vector<Directive> parse_cache_control(std::string_view value) {
  std::vector<Directive> out;
  std::size_t i = 0;
  while (i < value.size()) {
    // One element: up to the next comma outside quotes.
    std::size_t end = i;
    bool quoted = false;
    for (; end < value.size(); ++end) {
      const char c = value[end];
      if (c == '"') {
        quoted = !quoted;
      } else if (c == '\\' && quoted && end + 1 < value.size()) {
        ++end;
      } else if (c == ',' && !quoted) {
        break;
      }
    }
    const std::string_view element = trim(value.substr(i, end - i));
    i = end + 1;
    if (element.empty()) {
      continue;
    }
    Directive directive;
    const std::size_t equals = element.find('=');
    directive.name = util::lower(trim(element.substr(0, equals)));
    if (equals != std::string_view::npos) {
      directive.has_argument = true;
      std::string_view argument = trim(element.substr(equals + 1));
      if (argument.size() >= 2 && argument.front() == '"' && argument.back() == '"') {
        argument = argument.substr(1, argument.size() - 2);
        for (std::size_t k = 0; k < argument.size(); ++k) {
          if (argument[k] == '\\' && k + 1 < argument.size()) {
            ++k;
          }
          directive.argument += argument[k];
        }
      } else {
        directive.argument = std::string(argument);
      }
    }
    out.push_back(std::move(directive));
  }
  return out;
}

const Directive* find_directive(const std::vector<Directive>& directives, std::string_view name) {
  const auto it = std::find_if(directives.begin(), directives.end(),
                               [&](const Directive& d) { return d.name == name; });
  return it == directives.end() ? nullptr : &*it;
}

} // namespace withcache::http
