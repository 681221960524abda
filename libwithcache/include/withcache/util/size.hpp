#pragma once

/**
 * @file
 * withcache::util — byte counts as people write and read them (1024-based).
 * Pure functions, thread-safe.
 */

#include <cstdint>
#include <string>
#include <string_view>

#include "withcache/expected.hpp"

namespace withcache::util {

/**
 * Parses a capacity: a byte count with an optional 1024-based suffix
 * (`1024`, `50M`, `20G`, `1.5T`, `512K`, `2GiB`, `2GB`; case-insensitive).
 * @return the number of bytes, or a one-line message for anything else
 *         (negative, empty, unknown suffix, overflow).
 */
Expected<std::uint64_t, std::string> parse_size(std::string_view text);

/** Formats a byte count for people: `512 B`, `1.5 KiB`, `20.0 GiB`. */
std::string format_size(std::uint64_t bytes);

/** A byte rate for people: `format_size(rate) + "/s"`; `–` when not positive. */
std::string format_rate(double bytes_per_second);

} // namespace withcache::util
