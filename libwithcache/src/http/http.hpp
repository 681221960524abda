#pragma once

/**
 * @file
 * withcache::http (internal) — the small HTTP parsers and formatters shared by
 * the origin fetcher, the client and the server: a single-range `Range`
 * parser, `Content-Range`, entity-tag matching for `If-None-Match`/`If-Range`,
 * IMF-fixdate, decimal numbers and `Name: Value` header lines.
 * Pure functions, thread-safe; none throws.
 */

#include <cstdint>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace withcache::http {

/** Header fields in order, names as given. */
using Fields = std::vector<std::pair<std::string, std::string>>;

/** True for an RFC 9110 token (a field name or method): one or more of `A-Za-z0-9!#$%&'*+-.^_`|~`. */
bool is_token(std::string_view text);

/**
 * Parses one `Name: Value` line: the name must be a token, the value loses
 * surrounding blanks and may not hold CR, LF or NUL.
 * @return the pair, or nothing for anything else (no colon, empty or bad name, bad value).
 */
std::optional<std::pair<std::string, std::string>> parse_header_line(std::string_view line);

/**
 * Parses `Name: Value` lines separated by LF or CRLF; blank lines are skipped.
 * @return every field in order, or nothing when any line is malformed.
 */
std::optional<Fields> parse_header_lines(std::string_view text);

/**
 * Why a header cannot be sent, as one line that names the header but never
 * repeats its value (it may be a credential); nothing when it can.
 */
std::optional<std::string> check_field(std::string_view name, std::string_view value);

/** The value of the first field named `name` (ASCII case-insensitive), if any. */
std::optional<std::string_view> find_field(const Fields& fields, std::string_view name);

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

/**
 * True for a well-formed strong entity-tag (RFC 9110 §8.8.3): `"` etagc* `"`,
 * where etagc is any visible ASCII but `"`, or obs-text. `W/"…"`, a list, or
 * anything unquoted is not one.
 */
bool is_strong_etag(std::string_view text);

/**
 * What a `Range` request may be answered from with a 206 (RFC 9110 §13.1.5):
 * the validators of the bytes served, and whether the bytes behind the URL can
 * change. Views only: the strings must outlive the call.
 */
struct RangeGuard {
  /** The strong entity-tag the response carries (quoted). An If-Range entity-tag must equal it. */
  std::string_view etag;
  /** A date an If-Range may name instead (the Last-Modified sent); nothing: a date never matches. */
  std::optional<std::time_t> last_modified;
  /**
   * A Range without If-Range applies: the URL's bytes never change, so a
   * client's earlier bytes are these bytes (curl -C -, wget -c). False: a
   * client must prove with If-Range which version it holds.
   */
  bool bare_range = true;
};

/**
 * True when a request's Range may be answered with a part of the bytes
 * `guard` describes; false when it must get the whole representation (200).
 * `if_range`: the request's If-Range value, nothing when it has none. An
 * entity-tag matches only by strong comparison (a weak one never does); a
 * date only when it equals `guard.last_modified` exactly.
 */
bool range_applies(std::optional<std::string_view> if_range, const RangeGuard& guard);

/** How to answer a request's Range. */
enum class RangeAnswer {
  range, ///< the range: 206, or 416 when it is unsatisfiable
  whole, ///< 200 with the whole representation
  /**
   * 428 Precondition Required: a Range without If-Range that continues
   * earlier bytes (it starts past byte 0) of bytes that can change. Not a
   * 200: wget (1.21) takes a 200 to its `Range: bytes=N-` for the same file
   * and skips its first N bytes, which splices two versions; a 4xx makes it
   * (and `curl -C -`) fail without touching the file.
   */
  needs_if_range,
};

/**
 * The answer to `asked` (parse_range() of the request's Range; `full` when
 * there is none or it is ignored), given the request's If-Range (nothing
 * when absent) and what is served. A Range that range_applies() gets
 * `range`; otherwise a bare Range past byte 0 of bytes that can change
 * (`!guard.bare_range`) gets `needs_if_range`, and anything else `whole`.
 */
RangeAnswer answer_range(const ByteRange& asked, std::optional<std::string_view> if_range,
                         const RangeGuard& guard);

/** One `Cache-Control` directive. */
struct Directive {
  std::string name;     ///< lower-cased
  std::string argument; ///< unquoted (`max-age=60` → `60`, `private="Set-Cookie"` → `Set-Cookie`)
  bool has_argument = false;
};

/**
 * Splits a `Cache-Control` value (or several joined by commas) into its
 * directives, in order; commas inside a quoted argument do not split.
 * Empty elements are skipped. Never fails: text that is not a directive
 * becomes a directive with that name.
 */
std::vector<Directive> parse_cache_control(std::string_view value);

/** The first directive named `name` (lower-case) in `directives`, if any. */
const Directive* find_directive(const std::vector<Directive>& directives, std::string_view name);

} // namespace withcache::http
