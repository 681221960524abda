#pragma once

/**
 * @file
 * withcache::store — the blob store: `<data-dir>/blobs/<key-id>` files, partial
 * fills in `<data-dir>/tmp/<key-id>.part`, and `<data-dir>/cache.db` (SQLite,
 * WAL) with one row per artifact, per recorded miss and per pending fill.
 *
 * Thread safety: every BlobStore member may be called from any thread. The
 * read path (find, record_hit, record_miss, capacity queries) never touches
 * the disk: artifact metadata lives in memory and counter writes are queued
 * and written in batches by a background thread.
 */

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "withcache/expected.hpp"

namespace SQLite {
class Database;
}

namespace withcache::store {

/**
 * Parses a capacity: a byte count with an optional 1024-based suffix
 * (`1024`, `50M`, `20G`, `1.5T`, `512K`, `2GiB`, `2GB`; case-insensitive).
 * @return the number of bytes, or a one-line message for anything else
 *         (negative, empty, unknown suffix, overflow).
 */
Expected<std::uint64_t, std::string> parse_size(std::string_view text);

/** Formats a byte count for people: `512 B`, `1.5 KiB`, `20.0 GiB`. */
std::string format_size(std::uint64_t bytes);

/** Seconds since the Unix epoch, UTC. */
using UnixTime = std::int64_t;

/** One cached artifact. */
struct Artifact {
  std::string key;          ///< key id: SHA-256 hex of `url`
  std::string url;          ///< the normalised URL (the cache key)
  std::string raw_url;      ///< the last raw URL it was fetched from, userinfo removed
  std::uint64_t size = 0;   ///< bytes in blobs/<key>
  std::string sha256;       ///< hex SHA-256 of those bytes
  std::string content_type; ///< the origin's Content-Type, or empty
  UnixTime fetched_at = 0;
  std::uint64_t hits = 0;   ///< GETs served
  std::uint64_t misses = 0; ///< misses counted before it was cached
};

/** A URL that was asked for and is not cached. */
struct Miss {
  std::string key;
  std::string url; ///< the last raw URL asked for, userinfo removed
  std::uint64_t count = 0;
  UnixTime first_seen = 0;
  UnixTime last_seen = 0;
};

/** One line of the operator's events log. */
struct Event {
  std::int64_t id = 0;
  UnixTime time = 0;
  std::string kind;    ///< e.g. `login`, `login_failed`, `delete`, `first_miss`, `fill_completed`
  std::string actor;   ///< `admin`, `api`, `system`, …
  std::string address; ///< the client address, or empty
  std::string details; ///< one line; never a header value or credential
};

/** What a completed fill hands to commit(). */
struct NewArtifact {
  std::string key;
  std::string url;
  std::string raw_url;
  std::string content_type;
  std::uint64_t size = 0;
  std::string sha256;
};

/** A fill that was queued or running and must survive a restart. */
struct PendingJob {
  std::int64_t id = 0;
  std::string key;
  std::string url; ///< raw URL, userinfo removed
  std::vector<std::pair<std::string, std::string>> headers;
  UnixTime created_at = 0;
};

/** Paging and filtering for listings: `filter` is a case-insensitive substring of the URL or SHA-256. */
struct ListQuery {
  std::uint64_t offset = 0;
  std::uint64_t limit = 100;
  std::string filter;
};

/** One page of a listing and the number of rows matching the filter. */
template <class T> struct Page {
  std::vector<T> items;
  std::uint64_t total = 0;
};

/** Store-wide numbers. */
struct Totals {
  std::uint64_t artifacts = 0;
  std::uint64_t stored_bytes = 0;
  std::uint64_t max_bytes = 0; ///< 0 = unlimited
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;         ///< all misses counted, cached since or not
  std::uint64_t pending_misses = 0; ///< URLs with a miss row (not cached)
};

/** A startup or I/O failure that leaves the store unusable (unwritable data dir, corrupt database). */
class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/** Options of a BlobStore. */
struct StoreOptions {
  std::filesystem::path data_dir = "./data";
  std::uint64_t max_bytes = 0; ///< 0 = unlimited
  /** How often queued hit/miss counters are written. */
  std::chrono::milliseconds flush_interval{500};
};

/** What open() found and repaired. */
struct RecoveryReport {
  std::uint64_t stray_parts_removed = 0;
  std::uint64_t rows_without_blob_dropped = 0;
  std::uint64_t blobs_without_row_removed = 0;
};

class BlobStore {
 public:
  /**
   * Opens (creating if needed) the data dir and cache.db, applies schema
   * migrations and recovers from a crash: `.part` files no pending job owns
   * are deleted, rows whose blob is missing or of the wrong size are dropped,
   * blob files with no row are deleted.
   * @throws StoreError when the data dir is not writable or the database cannot be opened.
   */
  explicit BlobStore(StoreOptions options);
  /** Writes queued counters and closes the database. */
  ~BlobStore();

  BlobStore(const BlobStore&) = delete;
  BlobStore& operator=(const BlobStore&) = delete;

  /** What the last open() repaired. */
  [[nodiscard]] const RecoveryReport& recovery() const noexcept { return m_recovery; }
  [[nodiscard]] const std::filesystem::path& data_dir() const noexcept { return m_options.data_dir; }

  /** The artifact stored under `key`, from memory (hit/miss counters as of open or commit). */
  [[nodiscard]] std::optional<Artifact> find(const std::string& key) const;
  /** `<data-dir>/blobs/<key>`. */
  [[nodiscard]] std::filesystem::path blob_path(std::string_view key) const;
  /** `<data-dir>/tmp/<key>.part`. */
  [[nodiscard]] std::filesystem::path part_path(std::string_view key) const;

  /** Counts a served GET; queued, written within flush_interval. */
  void record_hit(const std::string& key);
  /**
   * Counts a miss for `key` (raw URL `url`; userinfo is removed here); queued.
   * @return true when this is the first miss of the key since it was last
   *         dismissed or cached (so callers can log "first miss").
   */
  bool record_miss(const std::string& key, std::string_view url);
  /** Writes queued counters now. */
  void flush();

  /** Artifacts stored, from memory. */
  [[nodiscard]] std::uint64_t artifact_count() const;

  /** The capacity, 0 = unlimited. */
  [[nodiscard]] std::uint64_t max_bytes() const noexcept { return m_options.max_bytes; }
  /** Bytes in committed blobs. */
  [[nodiscard]] std::uint64_t stored_bytes() const noexcept { return m_stored_bytes.load(); }
  /** True when a cap is set and stored plus reserved bytes have reached it. */
  [[nodiscard]] bool is_full() const noexcept;
  /** True when `bytes` more fit under the cap next to what is stored and reserved. */
  [[nodiscard]] bool has_room(std::uint64_t bytes) const noexcept;
  /**
   * Reserves room for a fill in progress. Atomic against other reservations:
   * returns false (reserving nothing) when `bytes` do not fit.
   */
  bool reserve(std::uint64_t bytes) noexcept;
  /** Gives back reserved room. */
  void release(std::uint64_t bytes) noexcept;

  /**
   * Makes a finished `.part` file an artifact: fsyncs it, renames it to
   * blobs/<key>, fsyncs the directory, then writes the row in one
   * transaction (misses counted so far move onto it; hits of an earlier row
   * survive). Crash-safe at every step.
   * @return the stored artifact, or a one-line error (the part is left alone).
   */
  Expected<Artifact, std::string> commit(const NewArtifact& artifact);

  /** Deletes an artifact (row first, then file). False when there is none. */
  bool remove(const std::string& key);
  /** Forgets a recorded miss. False when there is none. */
  bool dismiss_miss(const std::string& key);

  /** Artifacts, newest first. */
  Page<Artifact> list_artifacts(const ListQuery& query);
  /** Misses, most recent first. */
  Page<Miss> list_misses(const ListQuery& query);
  /** Counts and sizes. */
  Totals totals();

  /** Appends to the events log; queued like the counters (the newest 100 000 are kept). */
  void record_event(std::string kind, std::string actor, std::string address, std::string details);
  /** Events, newest first; the filter matches kind, actor or details. */
  Page<Event> list_events(const ListQuery& query);

  /** Persists a queued fill (written with the next batch, not before returning); returns its id (never
   * reused). */
  std::int64_t add_pending_job(const std::string& key, std::string_view url,
                               const std::vector<std::pair<std::string, std::string>>& headers);
  /** Forgets a persisted fill (it completed, failed or was cancelled). */
  void remove_pending_job(std::int64_t id);
  /** Fills that were queued or running when the store was last closed, oldest first. */
  std::vector<PendingJob> pending_jobs();

 private:
  struct PendingMiss {
    std::string url;
    std::uint64_t count = 0;
    UnixTime first = 0;
    UnixTime last = 0;
  };

  void migrate();
  void recover();
  void load_artifacts();
  void flush_locked(); // m_db_mutex held
  struct JobOp {
    bool insert = false; ///< else delete
    PendingJob job;
  };
  void write_events(const std::vector<Event>& events);
  void write_job_ops(const std::vector<JobOp>& ops);
  void write_counters(const std::unordered_map<std::string, std::uint64_t>& hits,
                      const std::unordered_map<std::string, PendingMiss>& misses);
  void flusher_loop();

  StoreOptions m_options;
  RecoveryReport m_recovery;

  mutable std::mutex m_db_mutex;
  std::unique_ptr<SQLite::Database> m_db;

  mutable std::shared_mutex m_index_mutex;
  std::unordered_map<std::string, Artifact> m_index;
  std::atomic<std::uint64_t> m_stored_bytes{0};
  std::atomic<std::uint64_t> m_reserved_bytes{0};

  std::mutex m_counter_mutex;
  std::unordered_map<std::string, std::uint64_t> m_pending_hits;
  std::unordered_map<std::string, PendingMiss> m_pending_misses;
  std::unordered_set<std::string> m_known_misses; // keys with a miss row or a queued miss
  std::vector<Event> m_pending_events;
  std::vector<JobOp> m_pending_job_ops;
  std::atomic<std::int64_t> m_next_job_id{1};

  std::condition_variable m_flusher_cv;
  bool m_stopping = false;
  std::thread m_flusher;
};

} // namespace withcache::store
