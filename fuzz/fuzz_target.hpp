#pragma once

/**
 * @file
 * What every fuzz target includes: the libFuzzer entry points, and the small
 * helpers the targets share. Each fuzz_<name>.cpp is linked either with
 * libFuzzer (`make fuzz`) or with standalone_driver.cpp (the ctest
 * fuzz.<name>.replay), so a target must not depend on which.
 */

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

/** Runs one input; returns 0. A violated invariant aborts (WITHCACHE_FUZZ_CHECK). */
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

/** Optional one-time set-up before the first input; a target defines it only when it needs one. */
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace withcache::fuzz {

/** The input as text (any bytes, NUL included). */
inline std::string_view text_of(const std::uint8_t* data, std::size_t size) {
  return size == 0 ? std::string_view{} : std::string_view(reinterpret_cast<const char*>(data), size);
}

/** `text` cut at every `separator`: n separators give n + 1 pieces (some possibly empty). */
inline std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> pieces;
  for (;;) {
    const std::size_t at = text.find(separator);
    pieces.push_back(text.substr(0, at));
    if (at == std::string_view::npos) {
      return pieces;
    }
    text.remove_prefix(at + 1);
  }
}

/** Reports a violated invariant and aborts, which both libFuzzer and the replay driver treat as a failure. */
[[noreturn]] inline void invariant_failed(const char* condition, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: fuzz invariant violated: %s\n", file, line, condition);
  std::abort();
}

} // namespace withcache::fuzz

/** Aborts with the condition's text when an invariant does not hold (not compiled out, unlike assert). */
#define WITHCACHE_FUZZ_CHECK(condition)                                                                      \
  ((condition) ? static_cast<void>(0) : ::withcache::fuzz::invariant_failed(#condition, __FILE__, __LINE__))
