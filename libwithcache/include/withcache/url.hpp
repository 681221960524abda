#pragma once

/**
 * @file
 * withcache::url — cache keys and the `/b/` cache URL (SPEC §2).
 *
 * Depends only on withcache::util and withcache::digest (for the key id), so
 * the shim can link it without the store, the fetcher or the server.
 * Every function is pure and thread-safe; none throws.
 */

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "withcache/expected.hpp"

namespace withcache::url {

/** Why a URL or token was refused. */
enum class UrlErrc {
  empty,              ///< the input is empty
  no_scheme,          ///< no `scheme://` prefix
  no_host,            ///< `scheme://` not followed by a host
  bad_host,           ///< a character not allowed in a host, or an unclosed `[`
  bad_port,           ///< a port that is not a number in 0..65535
  bad_percent_escape, ///< `%` not followed by two hex digits
  space,              ///< a space character
  control_character,  ///< a C0 control character or DEL
  bad_token,          ///< a `/b/` token that is not URL-safe base64
  not_utf8,           ///< a token that does not decode to UTF-8 text
  too_long,           ///< an origin URL longer than k_max_origin_url bytes
};

/** A refused URL or token: a code and a one-line message that never repeats the input. */
struct UrlError {
  UrlErrc code;
  std::string message;
};

/**
 * The longest origin URL the cache-host accepts, in bytes of the URL as given
 * (a `/b/` token's decoded bytes, `/blob?url=`'s decoded value, the API's and
 * the form's `url`): 8 KiB. Longer ones are answered 414 and never recorded,
 * so every row, log line and event that holds a URL is bounded.
 */
inline constexpr std::size_t k_max_origin_url = 8192;

/**
 * How much of a URL a log line or an event shows: the first 256 bytes of the
 * redacted URL (see shown()).
 */
inline constexpr std::size_t k_shown_url_bytes = 256;

/**
 * Checks the size of an origin URL against k_max_origin_url.
 * @return nothing when it is at most that long, else a UrlError
 *         (UrlErrc::too_long) whose one-line message gives both sizes and
 *         never repeats the URL.
 */
std::optional<UrlError> check_origin_size(std::string_view origin);

/**
 * Options of normalize_key() and key_id(): which query parameters are part of
 * the key (SPEC §2).
 *
 * By default the query is kept, parameter by parameter in their original
 * order, except the signing and credential parameters listed by
 * is_signing_parameter() and the names in `query_drop`; `keep_query` keeps the
 * whole query; `drop_query` drops all of it (withcache 0.3's key) and wins
 * over `keep_query`.
 */
struct KeyOptions {
  /** Keep the whole query, signing parameters included (`--keep-query`). */
  bool keep_query = false;
  /** Drop the whole query (`--drop-query`, withcache 0.3's key). */
  bool drop_query = false;
  /**
   * More parameter names to drop (`--query-drop NAME`), matched
   * case-insensitively after percent-decoding; a trailing `*` matches any
   * name with that prefix (`X-Lab-*`).
   */
  std::vector<std::string> query_drop{};
};

/**
 * True for a known signing or credential query parameter (SPEC §2), compared
 * ASCII case-insensitively: `X-Amz-*`, `X-Goog-*`, CloudFront `Expires`,
 * `Signature`, `Key-Pair-Id`, `Policy`, Azure SAS `sv ss srt sp se st spr sig
 * sr sdd skoid sktid skt ske sks skv`, Akamai `__token__`, `hdnts`, and
 * `token`, `access_token`.
 */
bool is_signing_parameter(std::string_view name);

/**
 * The cache key of an origin URL (SPEC §2): scheme and host lower-cased,
 * default port (`:80` http, `:443` https) and userinfo removed, fragment
 * removed, path normalised per RFC 3986 §6.2.2 (percent-encoding hex
 * upper-cased, unreserved characters decoded, characters that are not valid
 * in a URI percent-encoded, dot-segments removed), empty path → `/`, query
 * normalised the same way and filtered by `options` (see KeyOptions); a
 * query left empty is dropped, and so are empty `&&` parameters.
 *
 * @return the normalised URL, or a UrlError for an empty input, no scheme,
 *         no host, a bad port, a bad percent escape, a space or a control
 *         character anywhere in the input.
 */
Expected<std::string, UrlError> normalize_key(std::string_view url, const KeyOptions& options = {});

/**
 * The URL a fill fetches for `url`, derived from the same parse as its key
 * (SPEC §2 "One parse"): scheme and host lower-cased, default port dropped,
 * userinfo and fragment removed, the path normalised exactly as in
 * normalize_key(), and the ORIGINAL query, byte for byte, signing
 * parameters included. So two URLs with one key never fetch two different
 * origin paths, and the origin still sees the signature it needs.
 *
 * @return the URL, or the UrlError normalize_key() would give.
 */
Expected<std::string, UrlError> fetch_url(std::string_view url);

/** The key id of an origin: the SHA-256 hex of normalize_key(url, options). Errors as normalize_key. */
Expected<std::string, UrlError> key_id(std::string_view url, const KeyOptions& options = {});

/**
 * The base URL of a cache server: surrounding whitespace and trailing `/`
 * removed, `http://` added when no `scheme://` is given
 * (`host` → `http://host`, `http://host:3000/` → `http://host:3000`).
 */
std::string cache_base(std::string_view server);

/** The `/b/` token of an origin: URL-safe base64 (`-_`) of its exact bytes, `=` padding stripped. */
std::string encode_token(std::string_view origin);

/**
 * Decodes a `/b/` token: URL-safe base64, unpadded or padded to a multiple of
 * four. Refuses (UrlErrc::bad_token) any other character (`+`, `/`, `*`, …),
 * misplaced or partial padding, an impossible length or non-zero trailing
 * bits; refuses (UrlErrc::not_utf8) bytes that are not UTF-8; refuses an
 * empty token (UrlErrc::empty).
 */
Expected<std::string, UrlError> decode_token(std::string_view token);

/**
 * The `<name>` of an origin's cache URL: the last segment of its path (query
 * and fragment excluded, dot-segments resolved first, as curl and wget do
 * before they name a file), byte for byte — `a+b(1),v=2.tar`, `a%20b.tgz` and
 * UTF-8 stay as written — except bytes that cannot appear in a request line
 * (controls, space, DEL), which are percent-encoded; `download` when that
 * segment is empty. So `curl -O` and wget save the same name from the cache
 * as from the origin.
 */
std::string basename_of(std::string_view origin);

/**
 * The cache URL of an origin (SPEC §2):
 * `cache_base(server)/b/<encode_token(origin)>/<basename_of(origin)>`, then
 * `?<query>` when the origin has a query (repeated byte for byte, controls and
 * spaces percent-encoded), so wget's default name (`small.bin?sig=abc`) is the
 * same from the cache as from the origin. The server ignores the name and the
 * query; the token alone names the origin.
 */
std::string blob_url(std::string_view server, std::string_view origin);

/**
 * A URL safe to log or show (SPEC §3 "No secrets on display"): userinfo
 * removed, the fragment dropped, and in the query the value of every
 * signing or credential parameter (is_signing_parameter(), matched after
 * percent-decoding the name) replaced by `…`, its name kept
 * (`https://h/a.iso?X-Amz-Signature=…&file=a`). Other parameters stay, so
 * two artifacts that differ by query can be told apart. Input that does not
 * parse is treated the same way, as far as it can be read.
 */
std::string redact(std::string_view url);

/**
 * A URL for a log line or an event: redact(url), then, when that is longer
 * than k_shown_url_bytes, its first bytes (never cutting a UTF-8 character)
 * followed by `… (N bytes)` (util::shorten()). Userinfo and signing values
 * are removed before the cut, so a cut never reveals them.
 */
std::string shown(std::string_view url);

/** The parts of an absolute URL that a client needs to connect and ask for it. */
struct Target {
  std::string scheme;  ///< lower-cased
  std::string host;    ///< lower-cased; IPv6 literals without brackets
  int port = 0;        ///< explicit, or 80/443 for http/https, 0 for other schemes
  std::string request; ///< path (dot-segments resolved, `/` when empty) and query as given; no fragment
};

/** Parses an absolute URL into a Target. Errors as normalize_key (percent-encoding is left as given). */
Expected<Target, UrlError> parse_target(std::string_view url);

/** The lower-cased scheme of `url` (`HTTPS://h` → `https`), or empty when it has none. */
std::string scheme_of(std::string_view url);

/** True when `text` starts with an RFC 3986 scheme followed by `://` (`https://…`, `s3://…`). */
bool has_authority_scheme(std::string_view text);

/** `url` without its userinfo (`https://u:p@h/x` → `https://h/x`); other bytes unchanged. */
std::string strip_userinfo(std::string_view url);

/**
 * The userinfo of an absolute URL as written (`u:p%40x` of `https://u:p%40x@h/`),
 * percent-escapes kept; nothing when the URL has no `scheme://` or no `@` in its authority.
 */
std::optional<std::string> userinfo_of(std::string_view url);

/**
 * Resolves a reference (e.g. an HTTP `Location`) against an absolute base URL
 * per RFC 3986 §5.2: absolute, scheme-relative (`//h/p`), absolute-path,
 * query-only and relative references; the fragment is dropped.
 * Errors: UrlErrc::empty for an empty base, or those of parse_target(base).
 */
Expected<std::string, UrlError> resolve_reference(std::string_view base, std::string_view reference);

/** True when `bytes` is well-formed UTF-8 (no overlongs, no surrogates, ≤ U+10FFFF). */
bool is_utf8(std::string_view bytes);

} // namespace withcache::url
