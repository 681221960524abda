#pragma once

/**
 * @file
 * withcache::util — byte encodings: hex, percent-encoding and base64.
 * Pure functions, thread-safe.
 */

#include <string>
#include <string_view>

namespace withcache::util {

/** Lower-case hex of `bytes` (two digits a byte). */
std::string hex_lower(std::string_view bytes);

/** The value of one hex digit (either case), or -1. */
int hex_value(char c);

/** RFC 3986 §2.3 unreserved: `A-Z a-z 0-9 - . _ ~`. */
bool is_unreserved(char c);

/** `%XX` (upper-case hex) for one byte, appended to `out`. */
void append_percent(std::string& out, unsigned char byte);

/**
 * Percent-encodes every byte that is not unreserved and not in `keep`
 * (e.g. `keep = "/"` for a path, empty for a query value). UTF-8 is encoded
 * byte by byte, as Python's `urllib.parse.quote`.
 */
std::string percent_encode(std::string_view text, std::string_view keep = {});

/** Decodes every valid `%XX` escape; anything else (a bad escape included) is kept as it is. */
std::string percent_decode(std::string_view text);

/** Standard base64 (`+/`) with `=` padding (RFC 4648 §4). */
std::string base64_encode(std::string_view bytes);

/** URL-safe base64 (`-_`) without padding (RFC 4648 §5). */
std::string base64url_encode(std::string_view bytes);

} // namespace withcache::util
