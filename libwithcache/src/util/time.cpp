#include "withcache/util/time.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

#include "withcache/util/strings.hpp"

namespace withcache::util {
namespace {

// `date` and `time` joined by `separator`, then `Z`.
std::string format(UnixTime time, char separator) {
  const std::time_t t = time;
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buffer[40];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02d%c%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, separator, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buffer;
}

// Digits at text[at, at + count) as a number; -1 when any is not a digit.
int digits(std::string_view text, std::size_t at, std::size_t count) {
  int value = 0;
  for (std::size_t i = at; i < at + count; ++i) {
    if (!is_digit(text[i])) {
      return -1;
    }
    value = value * 10 + (text[i] - '0');
  }
  return value;
}

} // namespace

UnixTime now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string format_rfc3339(UnixTime time) {
  return time <= 0 ? std::string{} : format(time, 'T');
}

std::string format_display_time(UnixTime time) {
  return time <= 0 ? std::string("\xE2\x80\x93") : format(time, ' ');
}

std::optional<UnixTime> parse_rfc3339(std::string_view text) {
  // 2026-11-22T04:49:22Z
  if (text.size() != 20 || text[4] != '-' || text[7] != '-' || to_upper(text[10]) != 'T' || text[13] != ':' ||
      text[16] != ':' || to_upper(text[19]) != 'Z') {
    return std::nullopt;
  }
  const int year = digits(text, 0, 4);
  const int month = digits(text, 5, 2);
  const int day = digits(text, 8, 2);
  const int hour = digits(text, 11, 2);
  const int minute = digits(text, 14, 2);
  const int second = digits(text, 17, 2);
  if (year < 1970 || month < 1 || month > 12 || day < 1 || day > 31 || hour < 0 || hour > 23 || minute < 0 ||
      minute > 59 || second < 0 || second > 60) {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  const std::time_t t = ::timegm(&tm);
  // timegm normalises 31 February into March: refuse dates that moved.
  std::tm check{};
  ::gmtime_r(&t, &check);
  if (check.tm_mday != day || check.tm_mon != month - 1) {
    return std::nullopt;
  }
  return static_cast<UnixTime>(t);
}

Expected<std::chrono::milliseconds, std::string> parse_duration(std::string_view text) {
  const auto bad = [&] {
    return unexpected("invalid duration '" + std::string(text) + "' (expected e.g. 500ms, 10s, 30m, 12h or 7d)");
  };
  std::size_t digits_end = 0;
  while (digits_end < text.size() && is_digit(text[digits_end])) {
    ++digits_end;
  }
  if (digits_end == 0 || digits_end > 12) {
    return bad();
  }
  std::int64_t value = 0;
  for (std::size_t i = 0; i < digits_end; ++i) {
    value = value * 10 + (text[i] - '0');
  }
  const std::string unit = lower(text.substr(digits_end));
  std::int64_t scale = 0;
  if (unit == "ms") {
    scale = 1;
  } else if (unit.empty() || unit == "s") {
    scale = 1000;
  } else if (unit == "m") {
    scale = 60'000;
  } else if (unit == "h") {
    scale = 3'600'000;
  } else if (unit == "d") {
    scale = 86'400'000;
  } else {
    return bad();
  }
  if (value > INT64_MAX / scale) {
    return bad(); // 999999999999d does not fit in milliseconds
  }
  return std::chrono::milliseconds(value * scale);
}

} // namespace withcache::util
