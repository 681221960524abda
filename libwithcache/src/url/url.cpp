#include "withcache/url.hpp"

#include <array>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>

#include <openssl/evp.h>

namespace withcache::url {
namespace {

constexpr std::string_view k_hex_upper = "0123456789ABCDEF";
constexpr std::string_view k_hex_lower = "0123456789abcdef";
constexpr std::string_view k_base64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

bool is_alpha(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_alnum(char c) {
  return is_alpha(c) || is_digit(c);
}

char to_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
char to_upper(char c) {
  return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
}

int hex_value(char c) {
  if (is_digit(c)) {
    return c - '0';
  }
  const char lower = to_lower(c);
  if (lower >= 'a' && lower <= 'f') {
    return lower - 'a' + 10;
  }
  return -1;
}

// RFC 3986 §2.3.
bool is_unreserved(char c) {
  return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

// RFC 3986 §2.2.
bool is_sub_delim(char c) {
  return c == '!' || c == '$' || c == '&' || c == '\'' || c == '(' || c == ')' || c == '*' || c == '+' ||
         c == ',' || c == ';' || c == '=';
}
bool is_gen_delim(char c) {
  return c == ':' || c == '/' || c == '?' || c == '#' || c == '[' || c == ']' || c == '@';
}

void append_pct(std::string& out, unsigned char byte) {
  out += '%';
  out += k_hex_upper[byte >> 4];
  out += k_hex_upper[byte & 0xF];
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
  std::string_view rest = url.substr(colon + 1);
  if (!rest.starts_with("//")) {
    return unexpected(error(UrlErrc::no_host, "URL has no host (expected scheme://host/path)"));
  }
  rest.remove_prefix(2);

  const std::size_t authority_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, authority_end);
  rest = authority_end == std::string_view::npos ? std::string_view{} : rest.substr(authority_end);

  if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos) {
    authority.remove_prefix(at + 1);
  }
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
        append_pct(out, static_cast<unsigned char>(decoded));
      }
      i += 2;
    } else if (is_unreserved(c) || is_sub_delim(c) || is_gen_delim(c)) {
      out += c;
    } else {
      append_pct(out, static_cast<unsigned char>(c));
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

Expected<std::string, UrlError> normalize_key(std::string_view url, const KeyOptions& options) {
  auto parts = split(url);
  if (!parts) {
    return unexpected(parts.error());
  }
  std::string scheme(parts->scheme);
  for (char& c : scheme) {
    c = to_lower(c);
  }
  auto host = normalize_host(parts->host);
  if (!host) {
    return unexpected(host.error());
  }
  auto port = normalize_port(parts->port, scheme);
  if (!port) {
    return unexpected(port.error());
  }
  auto path = normalize_encoding(parts->path, "path");
  if (!path) {
    return unexpected(path.error());
  }

  std::string key = scheme + "://" + *host;
  if (!port->empty()) {
    key += ':';
    key += *port;
  }
  const std::string clean_path = remove_dot_segments(*path);
  key += clean_path.empty() ? "/" : clean_path;
  if (options.keep_query && parts->has_query && !parts->query.empty()) {
    auto query = normalize_encoding(parts->query, "query");
    if (!query) {
      return unexpected(query.error());
    }
    key += '?';
    key += *query;
  }
  return key;
}

Expected<std::string, UrlError> key_id(std::string_view url, const KeyOptions& options) {
  auto key = normalize_key(url, options);
  if (!key) {
    return key;
  }
  return sha256_hex(*key);
}

std::string sha256_hex(std::string_view bytes) {
  Sha256 sha;
  sha.update(bytes.data(), bytes.size());
  return sha.hex();
}

Sha256::Sha256() : m_ctx(EVP_MD_CTX_new()) {
  if (m_ctx == nullptr) {
    throw std::bad_alloc();
  }
  reset();
}

Sha256::~Sha256() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(m_ctx));
}

Sha256::Sha256(Sha256&& other) noexcept : m_ctx(other.m_ctx) {
  other.m_ctx = nullptr;
}

Sha256& Sha256::operator=(Sha256&& other) noexcept {
  if (this != &other) {
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(m_ctx));
    m_ctx = other.m_ctx;
    other.m_ctx = nullptr;
  }
  return *this;
}

void Sha256::update(const char* data, std::size_t length) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(m_ctx), data, length);
}

void Sha256::reset() {
  if (EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(m_ctx), EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("OpenSSL EVP_DigestInit_ex(SHA-256) failed");
  }
}

std::string Sha256::hex() const {
  // Finalise a copy, so that more bytes can still be added to this one.
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> copy(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (!copy || EVP_MD_CTX_copy_ex(copy.get(), static_cast<EVP_MD_CTX*>(m_ctx)) != 1 ||
      EVP_DigestFinal_ex(copy.get(), digest.data(), &length) != 1) {
    throw std::runtime_error("OpenSSL SHA-256 finalisation failed");
  }
  std::string hex;
  hex.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) {
    hex += k_hex_lower[digest[i] >> 4];
    hex += k_hex_lower[digest[i] & 0xF];
  }
  return hex;
}

std::string cache_base(std::string_view server) {
  constexpr std::string_view whitespace = " \t\r\n\f\v";
  const std::size_t first = server.find_first_not_of(whitespace);
  if (first == std::string_view::npos) {
    return {};
  }
  server = server.substr(first, server.find_last_not_of(whitespace) - first + 1);
  while (server.ends_with('/')) {
    server.remove_suffix(1);
  }
  if (server.find("://") == std::string_view::npos) {
    return "http://" + std::string(server);
  }
  return std::string(server);
}

std::string encode_token(std::string_view origin) {
  std::string out;
  out.reserve((origin.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= origin.size(); i += 3) {
    const std::uint32_t n = (static_cast<std::uint32_t>(static_cast<unsigned char>(origin[i])) << 16) |
                            (static_cast<std::uint32_t>(static_cast<unsigned char>(origin[i + 1])) << 8) |
                            static_cast<std::uint32_t>(static_cast<unsigned char>(origin[i + 2]));
    out += k_base64url[(n >> 18) & 63];
    out += k_base64url[(n >> 12) & 63];
    out += k_base64url[(n >> 6) & 63];
    out += k_base64url[n & 63];
  }
  const std::size_t left = origin.size() - i;
  if (left > 0) {
    std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(origin[i])) << 16;
    if (left == 2) {
      n |= static_cast<std::uint32_t>(static_cast<unsigned char>(origin[i + 1])) << 8;
    }
    out += k_base64url[(n >> 18) & 63];
    out += k_base64url[(n >> 12) & 63];
    if (left == 2) {
      out += k_base64url[(n >> 6) & 63];
    }
  }
  return out;
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

std::string basename_of(std::string_view origin) {
  // Mirrors Python's urlsplit(origin).path.rsplit('/', 1)[-1].
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
  rest = rest.substr(0, rest.find('?'));
  const std::size_t slash = rest.rfind('/');
  const std::string_view name = slash == std::string_view::npos ? rest : rest.substr(slash + 1);
  if (name.empty()) {
    return "download";
  }
  std::string out;
  out.reserve(name.size());
  for (const char c : name) {
    if (is_unreserved(c) || c == '/') {
      out += c;
    } else {
      append_pct(out, static_cast<unsigned char>(c));
    }
  }
  return out;
}

std::string blob_url(std::string_view server, std::string_view origin) {
  return cache_base(server) + "/b/" + encode_token(origin) + "/" + basename_of(origin);
}

std::string redact(std::string_view url) {
  std::string_view rest = url;
  std::string out;
  if (const std::size_t colon = scheme_end(rest);
      colon != std::string_view::npos && rest.substr(colon + 1).starts_with("//")) {
    out.append(rest.substr(0, colon + 3));
    rest.remove_prefix(colon + 3);
    const std::size_t authority_end = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, authority_end);
    rest = authority_end == std::string_view::npos ? std::string_view{} : rest.substr(authority_end);
    if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos) {
      authority.remove_prefix(at + 1);
    }
    out.append(authority);
  }
  rest = rest.substr(0, rest.find('#'));
  const std::size_t question = rest.find('?');
  out.append(rest.substr(0, question));
  if (question != std::string_view::npos) {
    out += "?\xE2\x80\xA6"; // "?…"
  }
  return out;
}

Expected<Target, UrlError> parse_target(std::string_view url) {
  auto parts = split(url);
  if (!parts) {
    return unexpected(parts.error());
  }
  Target target;
  target.scheme = std::string(parts->scheme);
  for (char& c : target.scheme) {
    c = to_lower(c);
  }
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
    target.port = std::stoi(*port);
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

std::string percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const int hi = text[i] == '%' && i + 2 < text.size() ? hex_value(text[i + 1]) : -1;
    const int lo = hi >= 0 ? hex_value(text[i + 2]) : -1;
    if (lo >= 0) {
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

std::string scheme_of(std::string_view url) {
  const std::size_t colon = scheme_end(url);
  std::string scheme(colon == std::string_view::npos ? std::string_view{} : url.substr(0, colon));
  for (char& c : scheme) {
    c = to_lower(c);
  }
  return scheme;
}

std::string strip_userinfo(std::string_view url) {
  const std::size_t colon = scheme_end(url);
  if (colon == std::string_view::npos || !url.substr(colon + 1).starts_with("//")) {
    return std::string(url);
  }
  const std::size_t authority_start = colon + 3;
  const std::size_t authority_end = url.find_first_of("/?#", authority_start);
  const std::string_view authority = url.substr(authority_start, authority_end - authority_start);
  const std::size_t at = authority.rfind('@');
  if (at == std::string_view::npos) {
    return std::string(url);
  }
  return std::string(url.substr(0, authority_start)) + std::string(url.substr(authority_start + at + 1));
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
