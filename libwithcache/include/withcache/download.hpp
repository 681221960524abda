#pragma once

/**
 * @file
 * withcache::download — `withcache-client get`: fetch an artifact from the
 * cache when it is warm, else from its origin, into a file, safely: bytes go
 * to `<file>.part` (resumed with Range after an interruption) and are renamed
 * into place only when complete and, from the cache, when their SHA-256
 * matches `X-Withcache-Sha256`. Thread-safe (no shared state).
 */

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "withcache/expected.hpp"

namespace withcache::download {

/** Why a download failed. */
enum class DownloadErrc {
  http_status, ///< the source answered with an error status
  network,     ///< could not connect, or the connection broke
  checksum,    ///< the bytes do not match X-Withcache-Sha256 (nothing was kept)
  io,          ///< local file error
};

struct DownloadError {
  DownloadErrc code;
  std::string message; ///< one line, URL redacted
};

struct DownloadOptions {
  std::string server; ///< empty: straight from the origin
  std::chrono::milliseconds probe_timeout{3000};
  std::chrono::seconds read_timeout{60};
  /** Called as bytes arrive: (bytes done, total or 0 when unknown). */
  std::function<void(std::uint64_t, std::uint64_t)> on_progress;
};

struct DownloadResult {
  std::filesystem::path file;
  std::uint64_t size = 0;
  std::string sha256;
  bool from_cache = false;
  bool verified = false; ///< the cache's X-Withcache-Sha256 matched
  bool resumed = false;  ///< a `.part` from an earlier attempt was continued
};

/**
 * One line of a progress bar for a terminal: bar, bytes, percent, rate and
 * ETA, e.g. `[########------------]  1.2 GiB / 3.0 GiB  40%  110.5 MiB/s  ETA 17 s`.
 */
std::string progress_line(std::uint64_t done, std::uint64_t total, double seconds);

/** The file name an origin saves as: its last path segment, percent-decoded, or `download`. */
std::string file_name_for(std::string_view origin);

/** Downloads `origin` into `file` (see the file comment). */
Expected<DownloadResult, DownloadError> get(const std::string& origin, const std::filesystem::path& file,
                                            const DownloadOptions& options);

} // namespace withcache::download
