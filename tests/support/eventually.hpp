#pragma once

// The one way tests wait: poll a condition until it holds or a deadline passes.

#include <chrono>
#include <thread>

namespace withcache::test {

/** The default deadline of a wait. */
inline constexpr std::chrono::milliseconds k_deadline{60'000};

/** Polls `done` every 5 ms until it is true; false when `timeout` passes first. */
template <class Predicate> bool eventually(Predicate done, std::chrono::milliseconds timeout = k_deadline) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

} // namespace withcache::test
