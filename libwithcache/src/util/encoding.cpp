#include "withcache/util/encoding.hpp"

#include <cstdint>

#include "withcache/util/strings.hpp"

namespace withcache::util {
namespace {

constexpr std::string_view k_hex_upper = "0123456789ABCDEF";
constexpr std::string_view k_hex_lower = "0123456789abcdef";
constexpr std::string_view k_base64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::string_view k_base64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string base64(std::string_view bytes, std::string_view alphabet, bool pad) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  const auto byte = [&](std::size_t i) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i]));
  };
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t n = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    for (const int shift : {18, 12, 6, 0}) {
      out += alphabet[(n >> shift) & 63];
    }
  }
  const std::size_t left = bytes.size() - i;
  if (left > 0) {
    const std::uint32_t n = (byte(i) << 16) | (left == 2 ? byte(i + 1) << 8 : 0);
    out += alphabet[(n >> 18) & 63];
    out += alphabet[(n >> 12) & 63];
    if (left == 2) {
      out += alphabet[(n >> 6) & 63];
    }
    if (pad) {
      out.append(3 - left, '=');
    }
  }
  return out;
}

} // namespace

std::string hex_lower(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out += k_hex_lower[b >> 4];
    out += k_hex_lower[b & 0xF];
  }
  return out;
}

int hex_value(char c) {
  if (is_digit(c)) {
    return c - '0';
  }
  const char l = to_lower(c);
  return (l >= 'a' && l <= 'f') ? l - 'a' + 10 : -1;
}

bool is_unreserved(char c) {
  return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

void append_percent(std::string& out, unsigned char byte) {
  out += '%';
  out += k_hex_upper[byte >> 4];
  out += k_hex_upper[byte & 0xF];
}

std::string percent_encode(std::string_view text, std::string_view keep) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    if (is_unreserved(c) || keep.find(c) != std::string_view::npos) {
      out += c;
    } else {
      append_percent(out, static_cast<unsigned char>(c));
    }
  }
  return out;
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

std::string base64_encode(std::string_view bytes) {
  return base64(bytes, k_base64, true);
}

std::string base64url_encode(std::string_view bytes) {
  return base64(bytes, k_base64url, false);
}

} // namespace withcache::util
