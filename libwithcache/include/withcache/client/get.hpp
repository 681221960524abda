#pragma once

/**
 * @file
 * withcache::client, `get` (SPEC §5, `withcache-client get`): fetch an
 * artifact from the cache when it is warm, else from its origin, into a file,
 * safely. Bytes go to `<file>.part` through the same origin fetcher the
 * server's fills use (withcache::origin: resumed with Range after an
 * interruption, never reported complete when short) and are renamed into
 * place only when complete and, from the cache, when their SHA-256 matches
 * `X-Withcache-Sha256`. stream() hands the bytes to a callback as they
 * arrive instead (`withcache-client get -o -`). Thread-safe (no shared
 * state); never throws.
 */

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "withcache/expected.hpp"

namespace withcache::client {

/** Why a get failed. */
enum class GetErrc {
  http_status, ///< the source answered with an error status
  network,     ///< could not connect, timed out, or the connection broke (partial bytes kept for a resume)
  malformed,   ///< the source's response could not be read (e.g. a bad Content-Length)
  checksum,    ///< the bytes do not match X-Withcache-Sha256 (nothing was kept)
  io,          ///< local file error
};

/** A failed get: a reason and one line with the URL redacted. */
struct GetError {
  GetErrc code = GetErrc::io;
  std::string message;
};

/** Options of get(). */
struct GetOptions {
  std::string server; ///< empty: straight from the origin
  std::chrono::milliseconds probe_timeout{3000};
  std::chrono::milliseconds connect_timeout{10'000};
  /** No response head within this long fails the download. */
  std::chrono::milliseconds head_timeout{30'000};
  /** No body byte for this long fails the attempt (an inactivity timeout; attempts resume with Range). */
  std::chrono::milliseconds read_timeout{60'000};
  /** After a download served while the cache was filling: how long to wait for the fill to complete and verify. */
  std::chrono::milliseconds verify_wait{10'000};
  /** Called as bytes arrive: (bytes done, total or 0 when unknown). */
  std::function<void(std::uint64_t, std::uint64_t)> on_progress;
};

/** What a get did. */
struct GetResult {
  std::filesystem::path file;
  std::uint64_t size = 0;
  std::string sha256;
  bool from_cache = false;
  bool verified = false; ///< the cache's X-Withcache-Sha256 matched
  bool filling = false;  ///< served while the cache was still filling it; not verified when the fill is still running
  bool resumed = false;  ///< a `.part` from an earlier attempt was continued
};

/**
 * One line of a progress bar for a terminal: bar, bytes, percent, rate and
 * ETA, e.g. `[########------------]  1.2 GiB / 3.0 GiB  40%  110.5 MiB/s  ETA 17 s`.
 */
std::string progress_line(std::uint64_t done, std::uint64_t total, double seconds);

/** The file name an origin saves as: its last path segment, percent-decoded, or `download`. */
std::string file_name_for(std::string_view origin);

/**
 * Downloads `origin` into `file` (see the file comment). From an artifact the
 * cache was still filling (`X-Withcache-Status: filling`, no SHA-256 yet), the
 * SHA-256 is checked once the fill has completed — waiting up to
 * `GetOptions::verify_wait` for it — and the result says "not verified" when it
 * is still running. A `.part` left by an earlier run is resumed with a bare
 * Range, and checked against the cache's SHA-256; when the cache refuses that
 * resume (428: the artifact is filling or can change, so the bytes held may be
 * another version's) the `.part` is dropped and the download starts over.
 * @return what happened, or a GetError; on failure `file` is untouched, a
 *         `.part` with bytes is kept for the next attempt, an empty one is removed.
 */
Expected<GetResult, GetError> get(const std::string& origin, const std::filesystem::path& file,
                                  const GetOptions& options);

/**
 * Like get(), but each body byte goes to `sink` as it arrives, once and in
 * order (no file, no `.part`): `withcache-client get -o -`. A broken
 * transfer is resumed with Range where it stopped; a source that would
 * restart from byte zero after bytes were handed over fails instead
 * (GetErrc::network). From the cache the SHA-256 is checked at the end:
 * on a mismatch the bytes are already out, so the caller must report
 * failure (GetErrc::checksum). `sink` returning false stops the download
 * (GetErrc::io). GetResult::file is empty.
 */
Expected<GetResult, GetError> stream(const std::string& origin,
                                     const std::function<bool(const char*, std::size_t)>& sink,
                                     const GetOptions& options);

} // namespace withcache::client
