#pragma once

/**
 * @file
 * withcache::store — integrity at rest (SPEC §3 "At rest"): the background
 * scrub, which re-hashes every blob at a bounded rate and quarantines those
 * whose bytes no longer match their SHA-256, and the offline check behind
 * `withcache-server --verify`.
 *
 * Thread safety: every Scrubber member may be called from any thread.
 * verify_data_dir() is a plain function; it reads cache.db read-only.
 */

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "withcache/expected.hpp"
#include "withcache/records.hpp"
#include "withcache/store.hpp"

namespace withcache::store {

/** The default of `--scrub-rate`: 20 MiB/s re-reads 10 TiB in about six days. */
inline constexpr std::uint64_t k_default_scrub_rate = 20ULL * 1024 * 1024;

/** Options of a Scrubber. */
struct ScrubOptions {
  /** Bytes a second a pass reads at most. 0 = no background passes (start_pass() runs one at the default). */
  std::uint64_t rate = k_default_scrub_rate;
  /** A background pass starts at most this long after the previous one started. */
  std::chrono::seconds pass_interval{24 * 60 * 60};
  /** While this answers true (fills running, bytes being served fast) the scrub waits. Optional. */
  std::function<bool()> busy;
  /**
   * Called (on the scrub's thread) after a damaged artifact was forgotten: quarantined because its
   * bytes differ (`found_sha256` is what they hash to), or dropped because its blob is missing or of
   * another size (`found_sha256` empty). `artifact` is its row as it was (url, raw_url included), so
   * the caller can fill it again.
   */
  std::function<void(const Artifact& artifact, const std::string& found_sha256)> on_damaged;
  /** How often a paused or waiting scrub looks again. */
  std::chrono::milliseconds poll{250};
};

/** Where the scrub stands. */
struct ScrubStatus {
  bool running = false; ///< a pass is under way (possibly paused)
  bool paused = false;  ///< waiting for the server to be less busy
  UnixTime pass_started_at = 0;
  UnixTime last_pass_finished_at = 0;
  std::uint64_t passes = 0;            ///< full passes completed (persisted)
  std::uint64_t pass_blobs = 0;        ///< blobs checked in this pass (since this process started it or resumed it)
  std::uint64_t pass_bytes = 0;
  std::uint64_t blobs_checked = 0;     ///< since the process started
  std::uint64_t bytes_checked = 0;
  std::uint64_t mismatches = 0;        ///< quarantined since the process started
  std::uint64_t missing = 0;           ///< blobs missing or of another size, dropped since the process started
  std::uint64_t orphans_removed = 0;   ///< files in blobs/ no artifact owned
  std::string last_key;                ///< the last key checked
  std::uint64_t rate = 0;              ///< bytes a second
};

/**
 * The background scrub: one thread walking every artifact in key order,
 * re-hashing its blob at `rate`, pausing while `busy()`. Its position is
 * persisted (BlobStore::save_scrub_state), so a pass that takes days
 * survives restarts. A mismatch is moved to quarantine/ and forgotten
 * (BlobStore::quarantine) and reported to `on_damaged`; a missing or short
 * blob, or one that is not a regular file of one name (a FIFO, a link; never
 * opened through nor waited on), is dropped as the read path drops it. At the end of a pass, files in
 * blobs/ that no artifact owns are removed (BlobStore::sweep_orphans).
 */
class Scrubber {
 public:
  Scrubber(BlobStore& store, ScrubOptions options);
  /** Stops the thread (within one chunk of reading). */
  ~Scrubber();
  Scrubber(const Scrubber&) = delete;
  Scrubber& operator=(const Scrubber&) = delete;

  /** Starts a full pass now, from the first key (a pass under way starts over). */
  void start_pass();
  [[nodiscard]] ScrubStatus status() const;
  /** Stops the thread; idempotent. */
  void stop();

 private:
  void run();
  bool wait(std::chrono::steady_clock::duration how_long); // false once stopping
  void check(const std::string& key);
  bool throttle(std::uint64_t bytes); // false once stopping
  void save(bool now);

  BlobStore& m_store;
  ScrubOptions m_options;
  mutable std::mutex m_mutex;
  std::condition_variable m_wake;
  bool m_stopping = false;
  bool m_start_requested = false;
  ScrubState m_state;
  ScrubStatus m_status;
  std::chrono::steady_clock::time_point m_bucket_start{};
  std::uint64_t m_bucket_bytes = 0;
  std::chrono::steady_clock::time_point m_saved_at{};
  std::thread m_thread;
};

/** One damaged artifact found by verify_data_dir(). */
struct VerifyProblem {
  std::string key;
  std::string url;
  /**
   * `missing`, `size 10 instead of 12`, `sha256 <hex> instead of <hex>`, or what stands where the blob
   * should be (`a symbolic link`, `not a regular file (a FIFO)`, `a hard link (2 names for one file)`),
   * which is never opened through, waited on or hashed.
   */
  std::string problem;
};

/** How far verify_data_dir() has come. */
struct VerifyProgress {
  std::uint64_t artifacts_done = 0;
  std::uint64_t artifacts_total = 0;
  std::uint64_t bytes_done = 0;
  std::uint64_t bytes_total = 0;
};

/** What verify_data_dir() found. */
struct VerifyReport {
  std::uint64_t artifacts = 0;
  std::uint64_t bytes = 0;
  std::vector<VerifyProblem> problems;
  std::uint64_t orphans = 0; ///< files in blobs/ without a row (harmless; the server removes them)
};

/**
 * Checks a data dir offline: every row's blob exists, has its size and
 * hashes to its SHA-256. Reads cache.db read-only and changes nothing; the
 * caller makes sure no server uses the dir (withcache::server::verify takes
 * its lock). `progress` (optional) is called about 5 times a second.
 * @return the report, or a one-line error when cache.db cannot be read.
 */
Expected<VerifyReport, std::string> verify_data_dir(const std::filesystem::path& data_dir,
                                                    const std::function<void(const VerifyProgress&)>& progress = {});

} // namespace withcache::store
