#pragma once

/**
 * @file
 * withcache::util — wall-clock time as Unix seconds, and its text forms.
 * Pure functions (now() reads the clock), thread-safe.
 */

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "withcache/expected.hpp"

namespace withcache::util {

/** Seconds since the Unix epoch, UTC. */
using UnixTime = std::int64_t;

/** The current time. */
UnixTime now();

/** `2026-11-22T04:49:22Z` (RFC 3339, UTC); empty for a time ≤ 0 (never set). */
std::string format_rfc3339(UnixTime time);

/** `2026-11-22 04:49:22Z`, for people; `–` for a time ≤ 0. */
std::string format_display_time(UnixTime time);

/**
 * Parses `YYYY-MM-DDTHH:MM:SSZ` (the form format_rfc3339 writes; `t` and `z`
 * accepted too). Nothing for any other text or an impossible date.
 */
std::optional<UnixTime> parse_rfc3339(std::string_view text);

/**
 * Parses a duration: a whole number with a unit, `ms`, `s`, `m`, `h` or `d`
 * (`500ms`, `10s`, `30m`, `12h`, `7d`); a bare number is seconds.
 * @return milliseconds, or a one-line message for anything else (negative,
 *         empty, unknown unit, overflow).
 */
Expected<std::chrono::milliseconds, std::string> parse_duration(std::string_view text);

} // namespace withcache::util
