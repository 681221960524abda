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
 *
 * Errors: no SQLite exception leaves this module. Startup failures throw
 * StoreError; every later database or file-system failure comes back as an
 * Expected holding a one-line message. Queued counters, events and
 * pending-fill rows whose write failed are queued again, never dropped.
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
#include "withcache/records.hpp"

namespace SQLite {
class Database;
}

namespace withcache::store {

using withcache::Artifact;
using withcache::Event;
using withcache::Miss;
using withcache::Totals;
using withcache::UnixTime;

/** What a completed fill hands to commit(). */
struct NewArtifact {
  std::string key;
  std::string url;
  std::string raw_url;
  std::string content_type;
  std::uint64_t size = 0;
  std::string sha256;
  // The origin's headers and the freshness computed from them (see Artifact).
  std::string etag{};
  std::string last_modified{};
  std::string cache_control{};
  std::string expires{};
  std::string content_encoding{};
  std::string content_disposition{};
  UnixTime fresh_until = 0;
};

/** What a revalidation that the origin answered 304 changes on an artifact (see refresh()). */
struct Freshness {
  UnixTime fresh_until = 0; ///< 0 = never revalidate again
  std::string etag{};
  std::string last_modified{};
  std::string cache_control{};
  std::string expires{};
};

/**
 * A key's negative-cache entry: why its last fill failed or was refused, how
 * many did in a row, and until when it is not fetched automatically.
 */
struct Backoff {
  std::string reason;
  std::uint32_t failures = 0;
  UnixTime retry_after = 0;
  /**
   * Which request failed: an opaque id of what the key leaves out but the
   * origin sees (signing parameters, credentials), or empty. A request with
   * another id is not held back, so no one can block a valid presigned URL by
   * asking first with a bad signature.
   */
  std::string attempt{};
};

/** The back-off after `failures` failed or refused fills in a row: 10 min, doubling, at most 24 h. */
std::chrono::seconds backoff_delay(std::uint32_t failures);

/**
 * An artifact and a descriptor open on exactly its bytes (see
 * BlobStore::open_blob()). Move-only; closes the descriptor unless released.
 */
class OpenedBlob {
 public:
  OpenedBlob(Artifact artifact, int fd) noexcept : m_artifact(std::move(artifact)), m_fd(fd) {}
  ~OpenedBlob();
  OpenedBlob(OpenedBlob&& other) noexcept;
  OpenedBlob& operator=(OpenedBlob&& other) noexcept;
  OpenedBlob(const OpenedBlob&) = delete;
  OpenedBlob& operator=(const OpenedBlob&) = delete;

  [[nodiscard]] const Artifact& artifact() const noexcept { return m_artifact; }
  [[nodiscard]] int fd() const noexcept { return m_fd; }
  /** Hands the descriptor over: the caller closes it. */
  int release() noexcept;

 private:
  Artifact m_artifact;
  int m_fd = -1;
};

/** A fill that was queued or running and must survive a restart. */
struct PendingJob {
  std::int64_t id = 0;
  std::string key;
  std::string url; ///< raw URL, userinfo removed
  std::vector<std::pair<std::string, std::string>> headers;
  UnixTime created_at = 0;
};

/** A server-side operator session as cache.db keeps it (the server's auth layer owns its meaning). */
struct SessionRow {
  std::string id_hash; ///< SHA-256 hex of the session id; the id itself is never stored
  std::string user;
  UnixTime created_at = 0;
  UnixTime expires_at = 0;
  std::string address;
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
  /** Replacements whose row was written but whose blob was not yet renamed into place: finished. */
  std::uint64_t replacements_completed = 0;
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
  /** `<data-dir>/tmp/<key>.resume`: the validators a resumed fill checks (origin::FetchRequest::resume_state_path). */
  [[nodiscard]] std::filesystem::path resume_state_path(std::string_view key) const;

  /**
   * The artifact stored under `key` and a descriptor open on its blob, taken
   * together under the index lock, so the bytes are always those the
   * returned size and SHA-256 describe, even while a replacement commits.
   * Memory and one open(2): safe on the read path. Nothing when the key is
   * not cached or its blob cannot be opened.
   */
  [[nodiscard]] std::optional<OpenedBlob> open_blob(const std::string& key) const;

  /** Counts a served GET; queued, written within flush_interval. */
  void record_hit(const std::string& key);
  /**
   * Counts a miss for `key` (raw URL `url`; userinfo is removed here); queued.
   * @return true when this is the first miss of the key since it was last
   *         dismissed or cached (so callers can log "first miss").
   */
  bool record_miss(const std::string& key, std::string_view url);
  /**
   * Writes queued counters, events and pending-fill rows now.
   * @return nothing, or a one-line message when the database refused (everything stays queued).
   */
  Expected<Ok, std::string> flush();

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
   * Makes a finished `.part` file an artifact, first or replacing one:
   * fsyncs it, renames it to `blobs/<key>.<sha256>.staged`, fsyncs the
   * directory, writes the row in one transaction (misses counted so far move
   * onto it; hits of an earlier row survive; the key's miss row and
   * back-off are forgotten), and only then, under the index lock, renames
   * the staged file over `blobs/<key>` and switches the index. A replaced
   * blob is never half-written: readers that opened the old file keep
   * reading the old inode to its end; find()/open_blob() give the old
   * artifact until the switch and the new one after it. Crash-safe at every
   * step: open() finishes a staged rename whose row was written and removes
   * one whose row was not.
   * @return the stored artifact, or a one-line error: the part file could not
   *         be synced or moved (it is left in tmp/), or the row could not be
   *         written (the staged file is removed; an earlier artifact of the
   *         key is untouched and still served).
   */
  Expected<Artifact, std::string> commit(const NewArtifact& artifact);

  /**
   * After a revalidation answered 304: writes the new freshness and the
   * validators the 304 carried (the worker's thread waits for SQLite; the
   * read path never does), then updates the index.
   * @return the updated artifact, or a one-line error when the key is not cached or the database refused.
   */
  Expected<Artifact, std::string> refresh(const std::string& key, const Freshness& freshness);

  /**
   * Records that a fill of `key` (raw URL `url`) failed or was refused, with
   * `reason` (see Miss::last_reason). With `back_off`, the key enters the
   * negative cache: failures in a row + 1, retry_after = now +
   * backoff_delay(failures). Without it (a local cause: cache full, disk)
   * only the reason is kept. Memory at once; the miss row (created when
   * missing, with a count of 0) is written with the next batch.
   * @return the key's entry as it now stands.
   */
  Backoff record_fill_failure(const std::string& key, std::string_view url, std::string reason,
                              bool back_off = true, std::string attempt = {});
  /** The key's back-off while it is in force at `now`, from memory (safe on the read path). */
  [[nodiscard]] std::optional<Backoff> backoff(const std::string& key, UnixTime now) const;
  /**
   * Ends the key's back-off (an operator asked for it): the failure count
   * starts over; the reason stays on the miss row. Memory at once, the row
   * with the next batch. @return true when the key had one in force.
   */
  bool clear_backoff(const std::string& key);

  /**
   * Deletes an artifact (row first, then file).
   * @return true when one was deleted, false when there is none, or a one-line database error.
   */
  Expected<bool, std::string> remove(const std::string& key);
  /** Forgets a recorded miss and its back-off. @return true / false (none) / a one-line database error. */
  Expected<bool, std::string> dismiss_miss(const std::string& key);

  /** Artifacts, newest first; or a one-line database error. */
  Expected<Page<Artifact>, std::string> list_artifacts(const ListQuery& query);
  /** Misses, most recent first; or a one-line database error. */
  Expected<Page<Miss>, std::string> list_misses(const ListQuery& query);
  /** Counts and sizes; or a one-line database error. */
  Expected<Totals, std::string> totals();

  /** Appends to the events log; queued like the counters (the newest 100 000 are kept). */
  void record_event(std::string kind, std::string actor, std::string address, std::string details);
  /** Events, newest first (the filter matches kind, actor or details); or a one-line database error. */
  Expected<Page<Event>, std::string> list_events(const ListQuery& query);

  /** Persists a queued fill (written with the next batch, not before returning); returns its id (never
   * reused). */
  std::int64_t add_pending_job(const std::string& key, std::string_view url,
                               const std::vector<std::pair<std::string, std::string>>& headers);
  /** Forgets a persisted fill (it completed, failed or was cancelled). */
  void remove_pending_job(std::int64_t id);
  /** Fills that were queued or running when the store was last closed, oldest first; or a database error. */
  Expected<std::vector<PendingJob>, std::string> pending_jobs();

  // --- what the operator surface keeps (operator_records.cpp); each call waits for SQLite: workers only ---

  /** The recorded miss of `key` (its last raw URL, userinfo removed), nothing when none; or a database error.
   */
  Expected<std::optional<Miss>, std::string> find_miss(const std::string& key);
  /** Deletes expired sessions and returns the others; or a database error. */
  Expected<std::vector<SessionRow>, std::string> load_sessions(UnixTime now);
  /** Writes one session (replacing one with the same id hash). */
  Expected<Ok, std::string> save_session(const SessionRow& session);
  /** Deletes one session; true when it existed. */
  Expected<bool, std::string> delete_session(const std::string& id_hash);
  /** Deletes every session, or those expired at `expired_at` when given; returns how many. */
  Expected<std::size_t, std::string> delete_sessions(std::optional<UnixTime> expired_at = std::nullopt);
  /** A value the server keeps for itself (e.g. the operator password's fingerprint); empty when unset. */
  Expected<std::string, std::string> setting(const std::string& name);
  /** Sets such a value. */
  Expected<Ok, std::string> set_setting(const std::string& name, const std::string& value);

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
  Expected<Ok, std::string> flush_locked(); // m_db_mutex held; never throws
  struct JobOp {
    bool insert = false; ///< else delete
    PendingJob job;
  };
  void write_events(const std::vector<Event>& events);
  void write_job_ops(const std::vector<JobOp>& ops);
  void write_counters(const std::unordered_map<std::string, std::uint64_t>& hits,
                      const std::unordered_map<std::string, PendingMiss>& misses);
  struct FailureOp {
    std::string url;
    Backoff backoff;
    bool clear = false; ///< only reset failures and retry_after of an existing row
  };
  void write_failures(const std::unordered_map<std::string, FailureOp>& failures);
  void flusher_loop();

  StoreOptions m_options;
  RecoveryReport m_recovery;

  mutable std::mutex m_db_mutex;
  std::unique_ptr<SQLite::Database> m_db;

  mutable std::shared_mutex m_index_mutex;
  std::unordered_map<std::string, Artifact> m_index;
  std::atomic<std::uint64_t> m_stored_bytes{0};
  std::atomic<std::uint64_t> m_reserved_bytes{0};

  mutable std::mutex m_counter_mutex;
  std::unordered_map<std::string, std::uint64_t> m_pending_hits;
  std::unordered_map<std::string, PendingMiss> m_pending_misses;
  std::unordered_set<std::string> m_known_misses; // keys with a miss row or a queued miss
  std::vector<Event> m_pending_events;
  std::vector<JobOp> m_pending_job_ops;
  std::unordered_map<std::string, FailureOp> m_pending_failures; // newest state per key
  std::unordered_map<std::string, Backoff> m_backoffs;           // keys with failures in a row
  std::atomic<std::int64_t> m_next_job_id{1};

  std::condition_variable m_flusher_cv;
  bool m_stopping = false;
  std::thread m_flusher;
};

} // namespace withcache::store
