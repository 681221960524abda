#pragma once

/**
 * @file
 * withcache::http — the small HTTP parsers and formatters the read path needs
 * and cpp-httplib 0.11 gets wrong or lacks: a single-range `Range` parser,
 * entity-tag matching for `If-None-Match`/`If-Range`, and IMF-fixdate.
 * Pure functions, thread-safe.
 */

#include <cstdint>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>

namespace withcache::http {

/** What a `Range` header asks of a representation of a given size. */
struct ByteRange {
  enum class Kind {
    full,          ///< no Range, a malformed one, or several ranges: send everything (200)
    partial,       ///< one satisfiable range: send [first, last] (206)
    unsatisfiable, ///< one range outside the representation (416)
  };
  Kind kind = Kind::full;
  std::uint64_t first = 0;
  std::uint64_t last = 0; ///< inclusive
};

/**
 * Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` against `size` (RFC 9110 §14).
 * Anything else — another unit, bad syntax, or more than one range — is
 * treated as no Range at all, which RFC 9110 allows.
 */
ByteRange parse_range(std::string_view header, std::uint64_t size);

/**
 * True when an `If-None-Match` value (`*`, or a list of entity-tags, weak or
 * strong) matches `etag` (given quoted, e.g. `"abc"`) by weak comparison.
 */
bool none_match(std::string_view if_none_match, std::string_view etag);

/** A decimal number of at most 19 digits (so it fits); nothing for anything else. */
std::optional<std::uint64_t> parse_decimal(std::string_view text);

/** A parsed `Content-Range`: `bytes first-last/total`, with `*` for an unknown total or an unsatisfied range.
 */
struct ContentRange {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  std::uint64_t total = 0;  ///< 0 when `*`
  bool unsatisfied = false; ///< `bytes */total`
};

/** Parses a `Content-Range` header; nothing when it is malformed or `last < first`. */
std::optional<ContentRange> parse_content_range(std::string_view value);

/** Formats a Unix time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`). */
std::string http_date(std::time_t time);

/** Parses an IMF-fixdate; nothing for any other form. */
std::optional<std::time_t> parse_http_date(std::string_view text);

/**
 * True when an `If-Range` value lets a Range apply: it equals the strong
 * `etag`, or it is a date equal to `last_modified`. Weak tags never match.
 */
bool if_range_matches(std::string_view if_range, std::string_view etag, std::time_t last_modified);

} // namespace withcache::http
