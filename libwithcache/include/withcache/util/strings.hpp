#pragma once

/**
 * @file
 * withcache::util — ASCII string helpers shared by every module. Depends on
 * nothing. Pure functions, thread-safe; no locale is consulted.
 */

#include <string>
#include <string_view>

namespace withcache::util {

/** Spaces and horizontal tabs (HTTP's OWS). */
inline constexpr std::string_view k_blank = " \t";
/** Spaces, tabs, CR, LF, FF and VT. */
inline constexpr std::string_view k_whitespace = " \t\r\n\f\v";

/** `text` without leading and trailing characters from `chars` (default: spaces and tabs). */
std::string_view trim(std::string_view text, std::string_view chars = k_blank);

/** ASCII lower case of one character; other bytes unchanged. */
constexpr char to_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
/** ASCII upper case of one character; other bytes unchanged. */
constexpr char to_upper(char c) {
  return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
}

/** ASCII lower case of a string. */
std::string lower(std::string_view text);
/** ASCII upper case of a string. */
std::string upper(std::string_view text);

/** ASCII case-insensitive equality. */
bool iequals(std::string_view a, std::string_view b);
/** ASCII case-insensitive prefix test. */
bool istarts_with(std::string_view text, std::string_view prefix);

/** True for A–Z, a–z. */
constexpr bool is_alpha(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}
/** True for 0–9. */
constexpr bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
/** True for A–Z, a–z, 0–9. */
constexpr bool is_alnum(char c) {
  return is_alpha(c) || is_digit(c);
}

/** True when `text` holds a C0 control character (other than tab when `allow_tab`), DEL, or nothing else. */
bool has_control(std::string_view text, bool allow_tab = false);

/**
 * `text` safe for a one-line log: control characters, DEL and backslash are
 * written as `\xHH`; other bytes (UTF-8 included) are kept.
 */
std::string escape_control(std::string_view text);

/**
 * `text` cut for display: unchanged when it has at most `max_bytes` bytes;
 * otherwise its first bytes, at most `max_bytes` of them and never ending
 * inside a UTF-8 sequence, then `…` and ` (N bytes)` with N the size of the
 * whole text (`https://h/aaaa… (9000 bytes)`). So a log line or a stored
 * event stays bounded whatever the caller was given.
 */
std::string shorten(std::string_view text, std::size_t max_bytes);

} // namespace withcache::util
