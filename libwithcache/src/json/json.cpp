#include "withcache/json.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "withcache/url.hpp"

namespace withcache::json {
namespace {

constexpr int k_max_depth = 64;

class Parser {
 public:
  explicit Parser(std::string_view text) : m_text(text) {}

  Expected<Value, std::string> run() {
    skip_space();
    auto value = parse_value(0);
    if (!value) {
      return value;
    }
    skip_space();
    if (m_pos != m_text.size()) {
      return fail("unexpected text after the JSON value");
    }
    return value;
  }

 private:
  Unexpected<std::string> fail(const std::string& what) const {
    return unexpected("invalid JSON at byte " + std::to_string(m_pos) + ": " + what);
  }

  void skip_space() {
    while (m_pos < m_text.size() && (m_text[m_pos] == ' ' || m_text[m_pos] == '\t' || m_text[m_pos] == '\n' ||
                                     m_text[m_pos] == '\r')) {
      ++m_pos;
    }
  }

  bool consume(std::string_view word) {
    if (m_text.substr(m_pos).starts_with(word)) {
      m_pos += word.size();
      return true;
    }
    return false;
  }

  Expected<Value, std::string> parse_value(int depth) {
    if (depth >= k_max_depth) {
      return fail("nested deeper than 64 levels");
    }
    if (m_pos >= m_text.size()) {
      return fail("unexpected end");
    }
    const char c = m_text[m_pos];
    if (c == '{') {
      return parse_object(depth);
    }
    if (c == '[') {
      return parse_array(depth);
    }
    if (c == '"') {
      auto s = parse_string();
      if (!s) {
        return unexpected(s.error());
      }
      return Value{std::move(*s)};
    }
    if (consume("true")) {
      return Value{true};
    }
    if (consume("false")) {
      return Value{false};
    }
    if (consume("null")) {
      return Value{nullptr};
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      return parse_number();
    }
    return fail("unexpected character");
  }

  Expected<Value, std::string> parse_number() {
    const std::size_t start = m_pos;
    auto digits = [&] {
      const std::size_t from = m_pos;
      while (m_pos < m_text.size() && m_text[m_pos] >= '0' && m_text[m_pos] <= '9') {
        ++m_pos;
      }
      return m_pos - from;
    };
    if (m_text[m_pos] == '-') {
      ++m_pos;
    }
    if (m_pos < m_text.size() && m_text[m_pos] == '0') {
      ++m_pos;
    } else if (digits() == 0) {
      return fail("bad number");
    }
    if (m_pos < m_text.size() && m_text[m_pos] == '.') {
      ++m_pos;
      if (digits() == 0) {
        return fail("bad number");
      }
    }
    if (m_pos < m_text.size() && (m_text[m_pos] == 'e' || m_text[m_pos] == 'E')) {
      ++m_pos;
      if (m_pos < m_text.size() && (m_text[m_pos] == '+' || m_text[m_pos] == '-')) {
        ++m_pos;
      }
      if (digits() == 0) {
        return fail("bad number");
      }
    }
    const std::string number(m_text.substr(start, m_pos - start));
    const double value = std::strtod(number.c_str(), nullptr);
    if (!std::isfinite(value)) {
      return fail("number out of range");
    }
    return Value{value};
  }

  static void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::optional<std::uint32_t> hex4() {
    if (m_pos + 4 > m_text.size()) {
      return std::nullopt;
    }
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = m_text[m_pos++];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<std::uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<std::uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<std::uint32_t>(c - 'A' + 10);
      } else {
        return std::nullopt;
      }
    }
    return v;
  }

  Expected<std::string, std::string> parse_string() {
    ++m_pos; // opening quote
    std::string out;
    while (m_pos < m_text.size()) {
      const char c = m_text[m_pos];
      if (c == '"') {
        ++m_pos;
        if (!url::is_utf8(out)) {
          return fail("string is not UTF-8");
        }
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) {
        return fail("control character in string");
      }
      if (c != '\\') {
        out += c;
        ++m_pos;
        continue;
      }
      if (++m_pos >= m_text.size()) {
        break;
      }
      const char e = m_text[m_pos++];
      switch (e) {
      case '"':
        out += '"';
        break;
      case '\\':
        out += '\\';
        break;
      case '/':
        out += '/';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u': {
        auto cp = hex4();
        if (!cp) {
          return fail("bad \\u escape");
        }
        if (*cp >= 0xD800 && *cp <= 0xDBFF) {
          if (!consume("\\u")) {
            return fail("unpaired surrogate");
          }
          auto low = hex4();
          if (!low || *low < 0xDC00 || *low > 0xDFFF) {
            return fail("unpaired surrogate");
          }
          *cp = 0x10000 + ((*cp - 0xD800) << 10) + (*low - 0xDC00);
        } else if (*cp >= 0xDC00 && *cp <= 0xDFFF) {
          return fail("unpaired surrogate");
        }
        append_utf8(out, *cp);
        break;
      }
      default:
        return fail("bad escape");
      }
    }
    return fail("unterminated string");
  }

  Expected<Value, std::string> parse_array(int depth) {
    ++m_pos;
    Array items;
    skip_space();
    if (m_pos < m_text.size() && m_text[m_pos] == ']') {
      ++m_pos;
      return Value{std::move(items)};
    }
    for (;;) {
      skip_space();
      auto item = parse_value(depth + 1);
      if (!item) {
        return item;
      }
      items.push_back(std::move(*item));
      skip_space();
      if (m_pos < m_text.size() && m_text[m_pos] == ',') {
        ++m_pos;
        continue;
      }
      if (m_pos < m_text.size() && m_text[m_pos] == ']') {
        ++m_pos;
        return Value{std::move(items)};
      }
      return fail("expected ',' or ']'");
    }
  }

  Expected<Value, std::string> parse_object(int depth) {
    ++m_pos;
    Object members;
    skip_space();
    if (m_pos < m_text.size() && m_text[m_pos] == '}') {
      ++m_pos;
      return Value{std::move(members)};
    }
    for (;;) {
      skip_space();
      if (m_pos >= m_text.size() || m_text[m_pos] != '"') {
        return fail("expected a member name");
      }
      auto name = parse_string();
      if (!name) {
        return unexpected(name.error());
      }
      skip_space();
      if (m_pos >= m_text.size() || m_text[m_pos] != ':') {
        return fail("expected ':'");
      }
      ++m_pos;
      skip_space();
      auto member = parse_value(depth + 1);
      if (!member) {
        return member;
      }
      if (!members.emplace(std::move(*name), std::move(*member)).second) {
        return fail("duplicate member name");
      }
      skip_space();
      if (m_pos < m_text.size() && m_text[m_pos] == ',') {
        ++m_pos;
        continue;
      }
      if (m_pos < m_text.size() && m_text[m_pos] == '}') {
        ++m_pos;
        return Value{std::move(members)};
      }
      return fail("expected ',' or '}'");
    }
  }

  std::string_view m_text;
  std::size_t m_pos = 0;
};

} // namespace

Expected<Value, std::string> parse(std::string_view text) {
  return Parser(text).run();
}

namespace {

void write_value(Writer& w, const Value& v) {
  if (v.is_null()) {
    w.null();
  } else if (const auto* b = v.as_bool()) {
    w.value(*b);
  } else if (const auto* n = v.as_number()) {
    if (std::trunc(*n) == *n && std::fabs(*n) < 9.007199254740992e15) {
      w.value(static_cast<std::int64_t>(*n));
    } else {
      w.value(*n);
    }
  } else if (const auto* s = v.as_string()) {
    w.value(*s);
  } else if (const auto* a = v.as_array()) {
    w.begin_array();
    for (const auto& item : *a) {
      write_value(w, item);
    }
    w.end_array();
  } else if (const auto* o = v.as_object()) {
    w.begin_object();
    for (const auto& [name, member] : *o) {
      w.key(name);
      write_value(w, member);
    }
    w.end_object();
  }
}

} // namespace

std::string write(const Value& value) {
  Writer w;
  write_value(w, value);
  return w.str();
}

std::string quote(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    default:
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
        char buffer[8];
        std::snprintf(buffer, sizeof buffer, "\\u%04x", static_cast<unsigned char>(c));
        out += buffer;
      } else {
        out += c;
      }
    }
  }
  out += '"';
  return out;
}

void Writer::separate() {
  if (m_after_key) {
    m_after_key = false;
    return;
  }
  if (!m_first.empty()) {
    if (!m_first.back()) {
      m_out += ',';
    }
    m_first.back() = false;
  }
}

Writer& Writer::begin_object() {
  separate();
  m_out += '{';
  m_first.push_back(true);
  return *this;
}

Writer& Writer::end_object() {
  m_out += '}';
  m_first.pop_back();
  return *this;
}

Writer& Writer::begin_array() {
  separate();
  m_out += '[';
  m_first.push_back(true);
  return *this;
}

Writer& Writer::end_array() {
  m_out += ']';
  m_first.pop_back();
  return *this;
}

Writer& Writer::key(std::string_view name) {
  separate();
  m_out += quote(name);
  m_out += ':';
  m_after_key = true;
  return *this;
}

Writer& Writer::value(std::string_view text) {
  separate();
  m_out += quote(text);
  return *this;
}

Writer& Writer::value(std::int64_t number) {
  separate();
  m_out += std::to_string(number);
  return *this;
}

Writer& Writer::value(std::uint64_t number) {
  separate();
  m_out += std::to_string(number);
  return *this;
}

Writer& Writer::value(double number) {
  separate();
  if (!std::isfinite(number)) {
    m_out += "null";
    return *this;
  }
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.17g", number);
  m_out += buffer;
  return *this;
}

Writer& Writer::value(bool flag) {
  separate();
  m_out += flag ? "true" : "false";
  return *this;
}

Writer& Writer::null() {
  separate();
  m_out += "null";
  return *this;
}

} // namespace withcache::json
