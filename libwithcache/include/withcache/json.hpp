#pragma once

/**
 * @file
 * withcache::json — the small JSON reader and writer the JSON API needs
 * (no JSON library is among the project's dependencies). RFC 8259: the
 * reader is strict (no trailing commas, comments or NaN), refuses duplicate
 * object keys, invalid UTF-8 and nesting deeper than 64; the writer escapes
 * every control character. Thread-safe (no shared state).
 */

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "withcache/expected.hpp"

namespace withcache::json {

struct Value;
using Array = std::vector<Value>;
/** Objects keep their members sorted by key; duplicates are refused when parsing. */
using Object = std::map<std::string, Value, std::less<>>;

/** A parsed JSON value. Numbers are kept as double (the API's integers fit in 2^53). */
struct Value {
  std::variant<std::nullptr_t, bool, double, std::string, Array, Object> data;

  [[nodiscard]] bool is_null() const { return std::holds_alternative<std::nullptr_t>(data); }
  [[nodiscard]] const bool* as_bool() const { return std::get_if<bool>(&data); }
  [[nodiscard]] const double* as_number() const { return std::get_if<double>(&data); }
  [[nodiscard]] const std::string* as_string() const { return std::get_if<std::string>(&data); }
  [[nodiscard]] const Array* as_array() const { return std::get_if<Array>(&data); }
  [[nodiscard]] const Object* as_object() const { return std::get_if<Object>(&data); }
};

/** Parses one JSON text (surrounding whitespace allowed). Errors are one line with the byte offset. */
Expected<Value, std::string> parse(std::string_view text);

/** `value` as compact JSON text (numbers that are whole print without a fraction). */
std::string write(const Value& value);

/** `text` as a JSON string literal, quotes included. */
std::string quote(std::string_view text);

/**
 * Builds compact JSON text. Calls must nest correctly (begin/end pairs, a key
 * before each member value); the writer inserts the commas.
 */
class Writer {
 public:
  Writer& begin_object();
  Writer& end_object();
  Writer& begin_array();
  Writer& end_array();
  Writer& key(std::string_view name);
  Writer& value(std::string_view text);
  Writer& value(const char* text) { return value(std::string_view(text)); }
  Writer& value(std::int64_t number);
  Writer& value(std::uint64_t number);
  Writer& value(int number) { return value(static_cast<std::int64_t>(number)); }
  Writer& value(double number);
  Writer& value(bool flag);
  Writer& null();

  /** The text written so far. */
  [[nodiscard]] const std::string& str() const noexcept { return m_out; }

 private:
  void separate();
  std::string m_out;
  std::vector<bool> m_first; // per open container: no member written yet
  bool m_after_key = false;
};

} // namespace withcache::json
