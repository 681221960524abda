#include "withcache/url.hpp"

#include <algorithm>
#include <array>
#include <cstdint>

#include "withcache/digest.hpp"
#include "withcache/util/encoding.hpp"
#include "withcache/util/strings.hpp"

namespace withcache::url {
namespace {

using util::append_percent;
using util::hex_value;
using util::is_alnum;
using util::is_alpha;
using util::is_digit;
using util::is_unreserved;
using util::to_lower;
using util::to_upper;

constexpr std::string_view k_base64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// RFC 3986 §2.2.
bool is_sub_delim(char c) {
  return c == '!' || c == '$' || c == '&' || c == '\'' || c == '(' || c == ')' || c == '*' || c == '+' ||
         c == ',' || c == ';' || c == '=';
}
bool is_gen_delim(char c) {
  return c == ':' || c == '/' || c == '?' || c == '#' || c == '[' || c == ']' || c == '@';
}

UrlError error(UrlErrc code, std::string message) {
  return UrlError{code, std::move(message)};
}

// The pieces of `scheme://[userinfo@]host[:port]path[?query][#fragment]`,
// as views into the input. Only the structure is checked here.
struct Parts {
  std::string_view scheme;
  std::string_view host;
  std::string_view port;
  std::string_view path;
  std::string_view query;
  bool has_query = false;
};

// Splits off a valid RFC 3986 scheme followed by ':'; npos when there is none.
std::size_t scheme_end(std::string_view url) {
  if (url.empty() || !is_alpha(url[0])) {
    return std::string_view::npos;
  }
  for (std::size_t i = 1; i < url.size(); ++i) {
    const char c = url[i];
    if (c == ':') {
      return i;
    }
    if (!is_alnum(c) && c != '+' && c != '-' && c != '.') {
      return std::string_view::npos;
    }
  }
  return std::string_view::npos;
}

// `scheme://[userinfo@]authority…`: where the authority starts and ends and where its `@` is, for a URL
// with a valid scheme followed by `//`; nothing otherwise.
struct AuthoritySpan {
  std::size_t start = 0; // first byte after "//"
  std::size_t end = 0;   // first of "/?#" after it, or the size
  std::size_t at = std::string_view::npos; // index of the last '@' inside, or npos
};

std::optional<AuthoritySpan> authority_span(std::string_view url) {
  const std::size_t colon = scheme_end(url);
  if (colon == std::string_view::npos || !url.substr(colon + 1).starts_with("//")) {
    return std::nullopt;
  }
  AuthoritySpan span;
  span.start = colon + 3;
  span.end = std::min(url.find_first_of("/?#", span.start), url.size());
  const std::size_t at = url.substr(span.start, span.end - span.start).rfind('@');
  span.at = at == std::string_view::npos ? at : span.start + at;
  return span;
}

Expected<Parts, UrlError> split(std::string_view url) {
  if (url.empty()) {
    return unexpected(error(UrlErrc::empty, "empty URL"));
  }
  for (const char c : url) {
    if (c == ' ') {
      return unexpected(error(UrlErrc::space, "URL contains a space (percent-encode it as %20)"));
    }
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7F) {
      return unexpected(error(UrlErrc::control_character, "URL contains a control character"));
    }
  }

  Parts parts;
  const std::size_t colon = scheme_end(url);
  if (colon == std::string_view::npos) {
    return unexpected(error(UrlErrc::no_scheme, "URL has no scheme (expected e.g. https://host/path)"));
  }
  parts.scheme = url.substr(0, colon);
  const auto span = authority_span(url);
  if (!span) {
    return unexpected(error(UrlErrc::no_host, "URL has no host (expected scheme://host/path)"));
  }
  const std::size_t host_start = span->at == std::string_view::npos ? span->start : span->at + 1;
  std::string_view authority = url.substr(host_start, span->end - host_start);
  std::string_view rest = url.substr(span->end);

  if (authority.starts_with('[')) {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return unexpected(error(UrlErrc::bad_host, "URL host has an unclosed '[' (IPv6 literal)"));
    }
    parts.host = authority.substr(0, close + 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after[0] != ':') {
      return unexpected(error(UrlErrc::bad_host, "URL has characters after an IPv6 literal"));
    }
    parts.port = after.empty() ? after : after.substr(1);
  } else {
    const std::size_t port_colon = authority.find(':');
    parts.host = authority.substr(0, port_colon);
    parts.port = port_colon == std::string_view::npos ? std::string_view{} : authority.substr(port_colon + 1);
  }
  if (parts.host.empty() || parts.host == "[]") {
    return unexpected(error(UrlErrc::no_host, "URL has an empty host"));
  }

  const std::size_t fragment = rest.find('#');
  if (fragment != std::string_view::npos) {
    rest = rest.substr(0, fragment);
  }
  const std::size_t question = rest.find('?');
  parts.path = rest.substr(0, question);
  if (question != std::string_view::npos) {
    parts.has_query = true;
    parts.query = rest.substr(question + 1);
  }
  return parts;
}

Expected<std::string, UrlError> normalize_host(std::string_view host) {
  std::string out;
  out.reserve(host.size());
  const bool ip_literal = host.front() == '[';
  for (std::size_t i = 0; i < host.size(); ++i) {
    const char c = host[i];
    if (c == '%') {
      if (i + 2 >= host.size() || hex_value(host[i + 1]) < 0 || hex_value(host[i + 2]) < 0) {
        return unexpected(error(UrlErrc::bad_percent_escape, "URL host has a bad percent escape"));
      }
      out += '%';
      out += to_upper(host[i + 1]);
      out += to_upper(host[i + 2]);
      i += 2;
      continue;
    }
    const auto byte = static_cast<unsigned char>(c);
    const bool allowed = ip_literal ? (is_alnum(c) || c == ':' || c == '.' || c == '[' || c == ']' ||
                                       c == '-' || c == '_' || c == '~')
                                    : (is_unreserved(c) || is_sub_delim(c) || byte >= 0x80);
    if (!allowed) {
      return unexpected(error(UrlErrc::bad_host, "URL host contains a character not allowed in a host"));
    }
    out += to_lower(c);
  }
  return out;
}

// Returns the port to print ("" for none or the scheme's default).
Expected<std::string, UrlError> normalize_port(std::string_view port, std::string_view scheme) {
  if (port.empty()) {
    return std::string{};
  }
  std::uint32_t value = 0;
  for (const char c : port) {
    if (!is_digit(c)) {
      return unexpected(error(UrlErrc::bad_port, "URL port is not a number"));
    }
    value = value * 10 + static_cast<std::uint32_t>(c - '0');
    if (value > 65535) {
      return unexpected(error(UrlErrc::bad_port, "URL port is larger than 65535"));
    }
  }
  if ((scheme == "http" && value == 80) || (scheme == "https" && value == 443)) {
    return std::string{};
  }
  return std::to_string(value);
}

// RFC 3986 §6.2.2.1-2: upper-case escapes, decode unreserved characters, and
// percent-encode bytes that may not appear in a URI at all (space and
// controls are refused earlier), so that `{` and `%7B` name the same key.
Expected<std::string, UrlError> normalize_encoding(std::string_view in, std::string_view what) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '%') {
      const int hi = i + 1 < in.size() ? hex_value(in[i + 1]) : -1;
      const int lo = i + 2 < in.size() ? hex_value(in[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        return unexpected(
            error(UrlErrc::bad_percent_escape, "URL " + std::string(what) + " has a bad percent escape"));
      }
      const auto decoded = static_cast<char>(hi * 16 + lo);
      if (is_unreserved(decoded)) {
        out += decoded;
      } else {
        append_percent(out, static_cast<unsigned char>(decoded));
      }
      i += 2;
    } else if (is_unreserved(c) || is_sub_delim(c) || is_gen_delim(c)) {
      out += c;
    } else {
      append_percent(out, static_cast<unsigned char>(c));
    }
  }
  return out;
}

// RFC 3986 §5.2.4.
std::string remove_dot_segments(std::string_view input) {
  std::string out;
  out.reserve(input.size());
  auto pop_last_segment = [&out] {
    const std::size_t slash = out.rfind('/');
    out.erase(slash == std::string::npos ? 0 : slash);
  };
  while (!input.empty()) {
    if (input.starts_with("../")) {
      input.remove_prefix(3);
    } else if (input.starts_with("./")) {
      input.remove_prefix(2);
    } else if (input.starts_with("/./")) {
      input.remove_prefix(2);
    } else if (input == "/.") {
      input = "/";
    } else if (input.starts_with("/../")) {
      input.remove_prefix(3);
      pop_last_segment();
    } else if (input == "/..") {
      input = "/";
      pop_last_segment();
    } else if (input == "." || input == "..") {
      input = {};
    } else {
      const std::size_t next = input.find('/', input.starts_with('/') ? 1 : 0);
      const std::size_t length = next == std::string_view::npos ? input.size() : next;
      out.append(input.substr(0, length));
      input.remove_prefix(length);
    }
  }
  return out;
}

} // namespace

namespace {

// `scheme://host[:port]/path` of a parsed URL, normalised for the key: the
// part normalize_key() and fetch_url() share, so they can never disagree.
Expected<std::string, UrlError> normalized_prefix(const Parts& parts) {
  const std::string scheme = util::lower(parts.scheme);
  auto host = normalize_host(parts.host);
  if (!host) {
    return unexpected(host.error());
  }
  auto port = normalize_port(parts.port, scheme);
  if (!port) {
    return unexpected(port.error());
  }
  auto path = normalize_encoding(parts.path, "path");
  if (!path) {
    return unexpected(path.error());
  }
  std::string out = scheme + "://" + *host;
  if (!port->empty()) {
    out += ':';
    out += *port;
  }
  const std::string clean_path = remove_dot_segments(*path);
  out += clean_path.empty() ? "/" : clean_path;
  return out;
}

// The name of a normalised `name=value` parameter, percent-decoded (so
// `X%2DAmz-Signature` is still recognised).
std::string parameter_name(std::string_view parameter) {
  return util::percent_decode(parameter.substr(0, parameter.find('=')));
}

bool matches_drop_name(std::string_view name, std::string_view pattern) {
  if (pattern.ends_with('*')) {
    return util::istarts_with(name, pattern.substr(0, pattern.size() - 1));
  }
  return util::iequals(name, pattern);
}

bool dropped(std::string_view name, const KeyOptions& options) {
  if (is_signing_parameter(name)) {
    return true;
  }
  return std::any_of(options.query_drop.begin(), options.query_drop.end(),
                     [&](const std::string& pattern) { return matches_drop_name(name, pattern); });
}

// The query of the key: normalised, then filtered parameter by parameter
// (kept ones in their original order).
std::string filtered_query(std::string_view query, const KeyOptions& options) {
  if (options.keep_query) {
    return std::string(query);
  }
  std::string out;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view parameter = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (parameter.empty() || dropped(parameter_name(parameter), options)) {
      continue;
    }
    if (!out.empty()) {
      out += '&';
    }
    out += parameter;
  }
  return out;
}

} // namespace

bool is_signing_parameter(std::string_view name) {
  static constexpr std::string_view k_prefixes[] = {"x-amz-", "x-goog-"};
  static constexpr std::string_view k_names[] = {
      // CloudFront (also the lower-case `expires`, `signature` of other CDNs)
      "expires", "signature", "key-pair-id", "policy",
      // Azure SAS
      "sv", "ss", "srt", "sp", "se", "st", "spr", "sig", "sr", "sdd", "skoid", "sktid", "skt", "ske", "sks",
      "skv",
      // Akamai
      "__token__", "hdnts",
      // generic
      "token", "access_token"};
  for (const auto prefix : k_prefixes) {
    if (util::istarts_with(name, prefix)) {
      return true;
    }
  }
  return std::any_of(std::begin(k_names), std::end(k_names),
                     [&](std::string_view known) { return util::iequals(name, known); });
}

Expected<std::string, UrlError> normalize_key(std::string_view url, const KeyOptions& options) {
  auto parts = split(url);
  if (!parts) {
    return unexpected(parts.error());
  }
  auto key = normalized_prefix(*parts);
  if (!key) {
    return key;
  }
  if (options.drop_query || !parts->has_query || parts->query.empty()) {
    return key;
  }
  auto query = normalize_encoding(parts->query, "query");
  if (!query) {
    return unexpected(query.error());
  }
  const std::string kept = filtered_query(*query, options);
  if (!kept.empty()) {
    *key += '?';
    *key += kept;
  }
  return key;
}

Expected<std::string, UrlError> fetch_url(std::string_view url) {
  auto parts = split(url);
  if (!parts) {
    return unexpected(parts.error());
  }
  auto fetched = normalized_prefix(*parts);
  if (!fetched) {
    return fetched;
  }
  if (parts->has_query) {
    // Checked like the key's query, so a URL has a fetch URL exactly when it has a key.
    if (auto query = normalize_encoding(parts->query, "query"); !query) {
      return unexpected(query.error());
    }
    if (!parts->query.empty()) {
      *fetched += '?';
      *fetched += parts->query;
    }
  }
  return fetched;
}

Expected<std::string, UrlError> key_id(std::string_view url, const KeyOptions& options) {
  auto key = normalize_key(url, options);
  if (!key) {
    return key;
  }
  return digest::sha256_hex(*key);
}

std::string cache_base(std::string_view server) {
  server = util::trim(server, util::k_whitespace);
  if (server.empty()) {
    return {};
  }
  while (server.ends_with('/')) {
    server.remove_suffix(1);
  }
  if (server.find("://") == std::string_view::npos) {
    return "http://" + std::string(server);
  }
  return std::string(server);
}

std::string encode_token(std::string_view origin) {
  return util::base64url_encode(origin);
}

Expected<std::string, UrlError> decode_token(std::string_view token) {
  if (token.empty()) {
    return unexpected(error(UrlErrc::empty, "empty token"));
  }
  const auto bad = [](std::string message) {
    return unexpected(error(UrlErrc::bad_token, std::move(message)));
  };

  std::string_view body = token;
  std::size_t padding = 0;
  while (body.ends_with('=')) {
    body.remove_suffix(1);
    ++padding;
  }
  const std::size_t remainder = body.size() % 4;
  if (remainder == 1) {
    return bad("token has an impossible base64 length");
  }
  if (padding != 0) {
    const std::size_t expected_padding = remainder == 0 ? 0 : 4 - remainder;
    if (padding != expected_padding) {
      return bad("token has wrong '=' padding");
    }
  }

  std::array<int, 256> value{};
  value.fill(-1);
  for (std::size_t i = 0; i < k_base64url.size(); ++i) {
    value[static_cast<unsigned char>(k_base64url[i])] = static_cast<int>(i);
  }

  std::string out;
  out.reserve(body.size() * 3 / 4);
  std::uint32_t buffer = 0;
  int bits = 0;
  for (const char c : body) {
    const int v = value[static_cast<unsigned char>(c)];
    if (v < 0) {
      return bad("token is not URL-safe base64 (only A-Z a-z 0-9 - _ and trailing = are allowed)");
    }
    buffer = (buffer << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buffer >> bits) & 0xFF);
    }
  }
  if (bits > 0 && (buffer & ((1U << bits) - 1)) != 0) {
    return bad("token is not canonical base64 (non-zero trailing bits)");
  }
  if (!is_utf8(out)) {
    return unexpected(error(UrlErrc::not_utf8, "token does not decode to UTF-8 text"));
  }
  return out;
}

namespace {

// Path and query of a URL as written (after `scheme://authority`, fragment cut); `has_query` says
// whether a `?` was there.
struct PathAndQuery {
  std::string_view path;
  std::string_view query;
  bool has_query = false;
};

PathAndQuery path_and_query(std::string_view origin) {
  std::string_view rest = origin;
  if (const std::size_t colon = scheme_end(rest); colon != std::string_view::npos) {
    rest.remove_prefix(colon + 1);
  }
  if (rest.starts_with("//")) {
    rest.remove_prefix(2);
    const std::size_t authority_end = rest.find_first_of("/?#");
    rest = authority_end == std::string_view::npos ? std::string_view{} : rest.substr(authority_end);
  }
  rest = rest.substr(0, rest.find('#'));
  PathAndQuery out;
  const std::size_t question = rest.find('?');
  out.path = rest.substr(0, question);
  if (question != std::string_view::npos) {
    out.has_query = true;
    out.query = rest.substr(question + 1);
  }
  return out;
}

// Bytes kept as written, except those no request line may carry.
std::string escape_unsendable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte == 0x7F || c == '#') {
      append_percent(out, byte);
    } else {
      out += c;
    }
  }
  return out;
}

} // namespace

std::string basename_of(std::string_view origin) {
  const std::string path = remove_dot_segments(path_and_query(origin).path);
  const std::size_t slash = path.rfind('/');
  const std::string_view name =
      slash == std::string::npos ? std::string_view(path) : std::string_view(path).substr(slash + 1);
  if (name.empty()) {
    return "download";
  }
  return escape_unsendable(name);
}

std::string blob_url(std::string_view server, std::string_view origin) {
  std::string out = cache_base(server) + "/b/" + encode_token(origin) + "/" + basename_of(origin);
  if (const auto parts = path_and_query(origin); parts.has_query) {
    out += '?';
    out += escape_unsendable(parts.query);
  }
  return out;
}

std::string redact(std::string_view url) {
  std::string_view rest = url;
  std::string out;
  if (const auto span = authority_span(url)) {
    const std::size_t host_start = span->at == std::string_view::npos ? span->start : span->at + 1;
    out.append(url.substr(0, span->start));
    out.append(url.substr(host_start, span->end - host_start));
    rest = url.substr(span->end);
  } else if (const std::size_t at = rest.substr(0, rest.find_first_of("/?#")).rfind('@');
             at != std::string_view::npos) {
    rest.remove_prefix(at + 1); // `user:pw@host/…` without a scheme: still no userinfo
  }
  rest = rest.substr(0, rest.find('#'));
  const std::size_t question = rest.find('?');
  out.append(rest.substr(0, question));
  if (question == std::string_view::npos) {
    return out;
  }
  // The query stays readable (`?file=a` and `?file=b` are two artifacts); the value of every signing or
  // credential parameter (the list the key leaves out) is replaced, its name kept.
  out += '?';
  std::string_view query = rest.substr(question + 1);
  bool first = true;
  while (true) {
    const std::size_t amp = query.find('&');
    const std::string_view parameter = query.substr(0, amp);
    if (!first) {
      out += '&';
    }
    first = false;
    const std::size_t eq = parameter.find('=');
    if (eq != std::string_view::npos && is_signing_parameter(parameter_name(parameter))) {
      out.append(parameter.substr(0, eq + 1));
      out += "\xE2\x80\xA6"; // "…"
    } else {
      out.append(parameter);
    }
    if (amp == std::string_view::npos) {
      break;
    }
    query.remove_prefix(amp + 1);
  }
  return out;
}

std::string shown(std::string_view url) {
  return util::shorten(redact(url), k_shown_url_bytes);
}

std::optional<UrlError> check_origin_size(std::string_view origin) {
  if (origin.size() <= k_max_origin_url) {
    return std::nullopt;
  }
  return UrlError{UrlErrc::too_long, "URL too long: " + std::to_string(origin.size()) + " bytes, at most " +
                                         std::to_string(k_max_origin_url) + " are accepted"};
}

Expected<Target, UrlError> parse_target(std::string_view url) {
  auto parts = split(url);
  if (!parts) {
    return unexpected(parts.error());
  }
  Target target;
  target.scheme = util::lower(parts->scheme);
  auto host = normalize_host(parts->host);
  if (!host) {
    return unexpected(host.error());
  }
  target.host = *host;
  if (target.host.starts_with('[') && target.host.ends_with(']')) {
    target.host = target.host.substr(1, target.host.size() - 2);
  }
  auto port = normalize_port(parts->port, target.scheme);
  if (!port) {
    return unexpected(port.error());
  }
  if (!port->empty()) {
    target.port = 0;
    for (const char c : *port) {
      target.port = target.port * 10 + (c - '0'); // normalize_port checked: at most 65535
    }
  } else if (target.scheme == "http") {
    target.port = 80;
  } else if (target.scheme == "https") {
    target.port = 443;
  }
  // Like curl (without --path-as-is), dot-segments are resolved before sending.
  target.request = remove_dot_segments(parts->path);
  if (target.request.empty()) {
    target.request = "/";
  }
  if (parts->has_query) {
    target.request += '?';
    target.request += parts->query;
  }
  return target;
}

std::string scheme_of(std::string_view url) {
  const std::size_t colon = scheme_end(url);
  return util::lower(colon == std::string_view::npos ? std::string_view{} : url.substr(0, colon));
}

bool has_authority_scheme(std::string_view text) {
  const std::size_t colon = scheme_end(text);
  return colon != std::string_view::npos && text.substr(colon + 1).starts_with("//");
}

std::string strip_userinfo(std::string_view url) {
  const auto span = authority_span(url);
  if (!span || span->at == std::string_view::npos) {
    return std::string(url);
  }
  return std::string(url.substr(0, span->start)) + std::string(url.substr(span->at + 1));
}

std::optional<std::string> userinfo_of(std::string_view url) {
  const auto span = authority_span(url);
  if (!span || span->at == std::string_view::npos) {
    return std::nullopt;
  }
  return std::string(url.substr(span->start, span->at - span->start));
}

Expected<std::string, UrlError> resolve_reference(std::string_view base, std::string_view reference) {
  auto parts = split(base);
  if (!parts) {
    return unexpected(parts.error());
  }
  reference = reference.substr(0, reference.find('#'));
  if (scheme_end(reference) != std::string_view::npos) {
    return std::string(reference);
  }
  // scheme "://" authority, as written in the base (split() checked it is there).
  const std::string_view scheme_and_authority =
      base.substr(0, base.find_first_of("/?#", parts->scheme.size() + 3));
  if (reference.starts_with("//")) {
    return std::string(parts->scheme) + ":" + std::string(reference);
  }
  if (reference.empty()) {
    std::string out(scheme_and_authority);
    out += parts->path;
    if (parts->has_query) {
      out += '?';
      out += parts->query;
    }
    return out;
  }
  if (reference.starts_with('?')) {
    return std::string(scheme_and_authority) + std::string(parts->path) + std::string(reference);
  }
  const std::size_t query = reference.find('?');
  const std::string_view ref_path = reference.substr(0, query);
  const std::string_view ref_query =
      query == std::string_view::npos ? std::string_view{} : reference.substr(query);
  std::string merged;
  if (ref_path.starts_with('/')) {
    merged = std::string(ref_path);
  } else {
    const std::string_view base_path = parts->path.empty() ? std::string_view("/") : parts->path;
    merged = std::string(base_path.substr(0, base_path.rfind('/') + 1)) + std::string(ref_path);
  }
  return std::string(scheme_and_authority) + remove_dot_segments(merged) + std::string(ref_query);
}

bool is_utf8(std::string_view bytes) {
  std::size_t i = 0;
  while (i < bytes.size()) {
    const auto lead = static_cast<unsigned char>(bytes[i]);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    std::size_t length = 0;
    std::uint32_t code = 0;
    std::uint32_t minimum = 0;
    if ((lead & 0xE0) == 0xC0) {
      length = 2;
      code = lead & 0x1F;
      minimum = 0x80;
    } else if ((lead & 0xF0) == 0xE0) {
      length = 3;
      code = lead & 0x0F;
      minimum = 0x800;
    } else if ((lead & 0xF8) == 0xF0) {
      length = 4;
      code = lead & 0x07;
      minimum = 0x10000;
    } else {
      return false;
    }
    if (i + length > bytes.size()) {
      return false;
    }
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(bytes[i + k]);
      if ((next & 0xC0) != 0x80) {
        return false;
      }
      code = (code << 6) | (next & 0x3F);
    }
    if (code < minimum || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) {
      return false;
    }
    i += length;
  }
  return true;
}

} // namespace withcache::url
