#include "withcache/util/size.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <iterator>

#include "withcache/util/strings.hpp"

namespace withcache::util {

Expected<std::uint64_t, std::string> parse_size(std::string_view text) {
  const auto bad = [&] {
    return unexpected(std::string("invalid size '") + std::string(text) +
                      "' (expected a byte count like 1024, 50M, 20G or 1.5T)");
  };
  std::string_view number = text;
  while (number.ends_with(' ')) {
    number.remove_suffix(1);
  }
  std::string suffix;
  while (!number.empty() && is_alpha(number.back())) {
    suffix.insert(suffix.begin(), to_upper(number.back()));
    number.remove_suffix(1);
  }
  if (number.empty() || !is_digit(number.front())) {
    return bad();
  }
  if (suffix.ends_with("IB")) {
    suffix.resize(suffix.size() - 2);
  } else if (suffix.size() == 2 && suffix.back() == 'B') {
    suffix.resize(1);
  }
  static constexpr std::string_view units = "KMGTP";
  int shift = 0;
  if (!suffix.empty() && suffix != "B") {
    const std::size_t unit = suffix.size() == 1 ? units.find(suffix[0]) : std::string_view::npos;
    if (unit == std::string_view::npos) {
      return bad();
    }
    shift = 10 * static_cast<int>(unit + 1);
  }

  const std::size_t dot = number.find('.');
  std::uint64_t whole = 0;
  const std::string_view whole_text = number.substr(0, dot);
  auto [end, ec] = std::from_chars(whole_text.data(), whole_text.data() + whole_text.size(), whole);
  if (ec != std::errc{} || end != whole_text.data() + whole_text.size()) {
    return bad();
  }
  if (shift > 0 && whole > (std::uint64_t{1} << (63 - shift))) {
    return bad();
  }
  std::uint64_t bytes = whole << shift;
  if (dot != std::string_view::npos) {
    if (shift == 0) {
      return bad();
    }
    const std::string_view fraction = number.substr(dot + 1);
    if (fraction.empty() || fraction.size() > 9 || !std::all_of(fraction.begin(), fraction.end(), is_digit)) {
      return bad();
    }
    double value = 0;
    double scale = 0.1;
    for (const char c : fraction) {
      value += (c - '0') * scale;
      scale /= 10;
    }
    bytes += static_cast<std::uint64_t>(std::llround(value * std::ldexp(1.0, shift)));
  }
  return bytes;
}

std::string format_size(std::uint64_t bytes) {
  constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) {
    return std::to_string(bytes) + " B";
  }
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(units)) {
    value /= 1024;
    ++unit;
  }
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.1f %s", value, units[unit]);
  return buffer;
}

std::string format_rate(double bytes_per_second) {
  if (!(bytes_per_second > 0)) {
    return "\xE2\x80\x93";
  }
  return format_size(static_cast<std::uint64_t>(bytes_per_second)) + "/s";
}

} // namespace withcache::util
