#pragma once

// A budget of log lines a minute, shared by every log line a client can cause once per URL (first misses,
// failed fills, refusals): a flood of distinct URLs must not flood the log. Internal to withcache::server.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace withcache::server {

/**
 * At most `lines` lines in each window (a minute by default). A window starts with the first line
 * written after the previous one ended. What is refused is counted and handed to the next line that
 * may be written, which says how many were left out. Thread-safe.
 */
class LineBudget {
 public:
  using Clock = std::chrono::steady_clock;

  /** `lines` a `window`; 0 lines writes nothing and counts everything. */
  explicit LineBudget(std::uint32_t lines, Clock::duration window = std::chrono::minutes(1))
      : m_lines(lines), m_window(window) {}

  /**
   * Asks to write one line at `now`.
   * @return nothing when the budget of this window is spent (the line is counted as left out);
   *         otherwise how many lines were left out since the last one written (0 for none), and that
   *         count starts again from zero.
   */
  std::optional<std::uint64_t> admit(Clock::time_point now = Clock::now()) {
    std::lock_guard lock(m_mutex);
    if (!m_started || now - m_window_start >= m_window) {
      m_started = true;
      m_window_start = now;
      m_written = 0;
    }
    if (m_written >= m_lines) {
      ++m_left_out;
      return std::nullopt;
    }
    ++m_written;
    const std::uint64_t left_out = m_left_out;
    m_left_out = 0;
    return left_out;
  }

  /**
   * `text` as it is to be written now, followed by ` (N more <what> not logged)` when N lines were left
   * out since the last one written; nothing when this one is left out (see admit()).
   */
  std::optional<std::string> line(std::string text, std::string_view what,
                                  Clock::time_point now = Clock::now()) {
    const auto left_out = admit(now);
    if (!left_out) {
      return std::nullopt;
    }
    if (*left_out > 0) {
      text += " (" + std::to_string(*left_out) + " more " + std::string(what) + " not logged)";
    }
    return text;
  }

 private:
  std::mutex m_mutex;
  std::uint32_t m_lines;
  Clock::duration m_window;
  bool m_started = false;
  Clock::time_point m_window_start{};
  std::uint32_t m_written = 0;
  std::uint64_t m_left_out = 0;
};

} // namespace withcache::server
