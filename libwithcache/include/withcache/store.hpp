#pragma once

/**
 * @file
 * withcache::store — the blob store: `<data-dir>/blobs/<key-id>` files, partial
 * fills in `<data-dir>/tmp/<key-id>.part`, and `<data-dir>/cache.db` (SQLite,
 * WAL) with one row per artifact, per recorded miss and per pending fill.
 *
 * Thread safety: every BlobStore member may be called from any thread. The
 * read path (find, find_present, open_blob, record_hit, record_miss, capacity
 * queries) never touches SQLite: what serving needs lives in a compact
 * in-memory index (about 90 bytes an artifact), blobs are checked with one
 * stat or fstat, and counter writes are queued and written in batches by a
 * background thread.
 *
 * At rest (SPEC §3): open() trusts cache.db and never stats every blob; a
 * blob that is missing or of another size than its row says is found when
 * it is served (and by the scrub, which also re-hashes it: scrub.hpp), then
 * dropped from the index at once and from cache.db by the background thread.
 *
 * Errors: no SQLite exception leaves this module. Startup failures throw
 * StoreError; every later database or file-system failure comes back as an
 * Expected holding a one-line message. Queued counters, events and
 * pending-fill rows whose write failed are queued again, in bounded memory
 * (counters coalesce per key; beyond the caps what is lost is counted and
 * logged as an event once writes work again: write_failure()).
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

namespace detail {
class CompactIndex;
}

using withcache::Artifact;
using withcache::Job;
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
  /**
   * Deaths in a row: how many times the server stopped without a clean shutdown while this fill ran
   * (counted by open(); a clean stop that interrupts it, mark_job_stopped(), starts over at 0).
   */
  std::uint32_t crashes = 0;
};

/** A server-side operator session as cache.db keeps it (the server's auth layer owns its meaning). */
struct SessionRow {
  std::string id_hash; ///< SHA-256 hex of the session id; the id itself is never stored
  std::string user;
  UnixTime created_at = 0;
  UnixTime expires_at = 0;
  std::string address;
};

/**
 * Paging and filtering for listings. `filter` is a case-insensitive
 * substring of the URL (artifacts: or a prefix of the SHA-256; events: of the
 * kind, actor or details). Filters of 3 characters or more use a trigram
 * index; shorter ones scan at most k_short_filter_scan rows a page.
 * A page is chosen by `after` (the page following a Page::next cursor),
 * `before` (the page preceding a Page::prev cursor) or `offset` (rows to
 * skip: still works, costs time in proportion to it); cursors are opaque.
 */
struct ListQuery {
  std::uint64_t offset = 0;
  std::uint64_t limit = 100;
  std::string filter;
  std::string after{};
  std::string before{};
};

/** Rows a filter of 1 or 2 characters scans for one page (a trigram index needs 3). */
inline constexpr std::uint64_t k_short_filter_scan = 10'000;
/** Matches a filtered listing counts at most; beyond, Page::total_exact is false. */
inline constexpr std::uint64_t k_count_cap = 10'000;

/** One page of a listing and the number of rows matching the filter. */
template <class T> struct Page {
  std::vector<T> items;
  std::uint64_t total = 0;
  /**
   * False when `total` is a lower bound: a broad filter stops counting at k_count_cap, and a filter of 1
   * or 2 characters counts the matches among the k_short_filter_scan rows its page scanned.
   */
  bool total_exact = true;
  std::string next{}; ///< the cursor of the following page (ListQuery::after); empty at the end
  std::string prev{}; ///< the cursor of the preceding page (ListQuery::before); empty at the start
};

/** What a hit's check found (see BlobStore::open_blob and BlobStore::find_present). */
enum class Presence {
  hit,        ///< indexed, and the blob is there with its recorded size
  not_cached, ///< not indexed
  dropped,    ///< indexed, but the blob was missing or of another size: dropped now (re-fill it)
};

/** Why cache.db cannot be written at the moment (see BlobStore::write_failure()). */
struct WriteFailure {
  std::string message; ///< SQLite's, e.g. "database or disk is full"
  UnixTime since = 0;
  bool disk_full = false; ///< the file system is out of space
  std::uint64_t queued = 0; ///< counters, misses, events and fill records waiting in memory
};

/** Where the background scrub stands; persisted so a pass continues after a restart. */
struct ScrubState {
  std::string cursor;            ///< the last key checked in this pass; empty = the pass starts over
  UnixTime pass_started_at = 0;  ///< 0 = no pass started yet
  UnixTime last_pass_finished_at = 0;
  std::uint64_t passes = 0;      ///< full passes completed
  bool running = false;          ///< a pass is under way (continues from `cursor`)
};

/** A startup or I/O failure that leaves the store unusable (unwritable data dir, corrupt database). */
class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/** Ended fills the history keeps at most. */
inline constexpr std::uint64_t k_max_finished_jobs = 10'000;
/** Ended fills older than this are forgotten. */
inline constexpr std::chrono::hours k_finished_job_age{30 * 24};
/** An event's details are kept to this many bytes (util::shorten()): rows stay small whatever a URL holds. */
inline constexpr std::size_t k_max_event_details = 1024;
/**
 * The trigram indexes of the URL filters (artifacts, misses) index the first
 * this many characters of each URL, so one row costs the index a bounded
 * amount; a filter matches within them.
 */
inline constexpr int k_indexed_url_chars = 512;

/** Options of a BlobStore. */
struct StoreOptions {
  std::filesystem::path data_dir = "./data";
  std::uint64_t max_bytes = 0; ///< 0 = unlimited
  /** How often queued hit/miss counters are written. */
  std::chrono::milliseconds flush_interval{500};
  /**
   * Miss rows kept at most: past it the least recently seen go (never one whose back-off is in force),
   * so misses of ever new URLs from anyone cannot grow cache.db without bound. 0 = no cap.
   */
  std::uint64_t max_miss_rows = 10'000;
};

/**
 * What open() found and repaired. open() looks only at tmp/ and at the
 * removals cache.db journals, never at every blob; the first open after an
 * upgrade from a schema before the journal also sweeps blobs/ once.
 */
struct RecoveryReport {
  std::uint64_t stray_parts_removed = 0;
  /** Rows whose blob is gone (only the one-time sweep after an upgrade finds these at open). */
  std::uint64_t rows_without_blob_dropped = 0;
  std::uint64_t blobs_without_row_removed = 0;
  /** Replacements whose row was written but whose blob was not yet renamed into place: finished. */
  std::uint64_t replacements_completed = 0;
  /** Deletes and quarantines a crash interrupted between the row and the file: finished. */
  std::uint64_t removals_finished = 0;
  /** Pending fills that were running when the server died (their PendingJob::crashes went up by one). */
  std::uint64_t fills_running_at_crash = 0;
};

class BlobStore {
 public:
  /**
   * Opens (creating if needed) the data dir and cache.db, applies schema
   * migrations, loads the index and recovers from a crash: `.part` files no
   * pending job owns are deleted, staged blobs are renamed into place or
   * removed, interrupted deletes are finished. Blobs are not stat-ed: a
   * damaged one is found when served or scrubbed.
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

  /**
   * The artifact stored under `key`, from the in-memory index: what serving
   * needs (key, size, sha256, content type, fetched_at, fresh_until, content
   * encoding and disposition; etag, last_modified, cache_control and expires
   * when it will be revalidated, i.e. fresh_until != 0). url, raw_url, hits
   * and misses are not in memory (empty, 0): describe() reads them. No I/O.
   */
  [[nodiscard]] std::optional<Artifact> find(const std::string& key) const;
  /**
   * find(), and an lstat(2) of the blob: a blob that is missing, of another
   * size, or not a regular file with one link is dropped (as open_blob()
   * does). What a HEAD answers from.
   * @param presence set to what was found, when not null.
   */
  [[nodiscard]] std::optional<Artifact> find_present(const std::string& key, Presence* presence = nullptr);
  /** Every column of `key`'s row, from cache.db (waits for SQLite: never on the read path). */
  Expected<std::optional<Artifact>, std::string> describe(const std::string& key);
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
   * Memory, one open(2) and one fstat(2): safe on the read path (the open
   * never follows a link and never waits: util::open_regular). Nothing when
   * the key is not cached, or when its blob is missing, of another size than
   * recorded, or not a regular file with one link (a FIFO, a directory, a
   * symbolic or hard link planted there): then the artifact is dropped from the index at once (the
   * row and the damaged file, moved to quarantine/, follow in the
   * background), so it is a miss from now on and can be re-filled.
   * @param presence set to what was found, when not null.
   */
  [[nodiscard]] std::optional<OpenedBlob> open_blob(const std::string& key, Presence* presence = nullptr);
  /** `<data-dir>/quarantine/`: damaged blobs are moved here, never deleted. */
  [[nodiscard]] std::filesystem::path quarantine_dir() const;
  /** Blobs found missing or of the wrong size when served (since open). */
  [[nodiscard]] std::uint64_t damaged_blobs_found() const noexcept { return m_damaged_found.load(); }
  /** Bytes the in-memory index occupies, roughly. */
  [[nodiscard]] std::uint64_t index_memory_bytes() const;

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
  /**
   * Why the last write of the queue failed (while it keeps failing), or
   * nothing when writes work. Memory only.
   */
  [[nodiscard]] std::optional<WriteFailure> write_failure() const;
  /**
   * True when the data dir's file system is out of space: the last write
   * failed with "disk full", or less than 1 MiB is free (statvfs, checked at
   * most once a second unless `fresh`). Fills are refused meanwhile (see is_full()).
   */
  [[nodiscard]] bool disk_full(bool fresh = false) const;

  /** Artifacts stored, from memory. */
  [[nodiscard]] std::uint64_t artifact_count() const;

  /** The capacity, 0 = unlimited. */
  [[nodiscard]] std::uint64_t max_bytes() const noexcept { return m_options.max_bytes; }
  /** Bytes in committed blobs. */
  [[nodiscard]] std::uint64_t stored_bytes() const noexcept { return m_stored_bytes.load(); }
  /** True when a cap is set and stored plus reserved bytes have reached it, or the disk is full. */
  [[nodiscard]] bool is_full() const noexcept;
  /** Why is_full() is true, as one line (empty when it is not). */
  [[nodiscard]] std::string full_reason() const;
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
   * Deletes an artifact: the row (and a journal entry naming its file) in
   * one transaction, then the file. On a full disk, where even that
   * transaction cannot be written, the file goes first (freeing its bytes)
   * and the row follows as soon as it can: the artifact is never served
   * again either way.
   * @return true when one was deleted, false when there is none, or a one-line database error.
   */
  Expected<bool, std::string> remove(const std::string& key);
  /**
   * Moves a blob whose bytes differ from its row to quarantine/ and forgets
   * the artifact (row, index), recording a `scrub_mismatch` event. `fd` is a
   * descriptor on the bytes that were checked: nothing is done when
   * `blobs/<key>` is no longer that file or the row no longer has
   * `expected_sha256` (it was replaced meanwhile).
   * @return true when it was quarantined, false when it had changed, or a one-line error.
   */
  Expected<bool, std::string> quarantine(const std::string& key, const std::string& expected_sha256, int fd,
                                         std::string_view details);
  /** The first key after `after` (the first of all when empty), in key order, from memory: walks every artifact. */
  [[nodiscard]] std::optional<std::string> next_key(const std::string& after) const;
  /**
   * Removes files in blobs/ that no artifact owns (left by hand, or by a crash of a version without the
   * removal journal). Lists blobs/: seconds at a million; the scrub calls it once a pass.
   * @return how many were removed.
   */
  std::uint64_t sweep_orphans();
  /** The scrub's persisted position; or a one-line database error. */
  Expected<ScrubState, std::string> scrub_state();
  /** Persists the scrub's position with the next batch. */
  void save_scrub_state(const ScrubState& state);
  /** Forgets a recorded miss and its back-off. @return true / false (none) / a one-line database error. */
  Expected<bool, std::string> dismiss_miss(const std::string& key);

  /** Artifacts, newest first; or a one-line database error. */
  Expected<Page<Artifact>, std::string> list_artifacts(const ListQuery& query);
  /** Misses, most recent first; or a one-line database error. */
  Expected<Page<Miss>, std::string> list_misses(const ListQuery& query);
  /**
   * Counts and sizes, from running totals that triggers keep exact in every
   * transaction (one row read, whatever the number of artifacts); or a
   * one-line database error.
   */
  Expected<Totals, std::string> totals();

  /**
   * Appends to the events log; queued like the counters (the newest 100 000 are kept). `details` is
   * cut to k_max_event_details bytes.
   */
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
  /**
   * Records that a persisted fill starts running, before it asks its origin: if the process dies
   * while it runs, the next open() counts one more PendingJob::crashes. Written at once (waits for
   * SQLite: workers only). @return nothing, or a one-line database error (then nothing is counted).
   */
  Expected<Ok, std::string> mark_job_running(std::int64_t id);
  /**
   * Records that a clean stop interrupted a running fill, which stays persisted: it was not running
   * at a crash, and its count of crashes in a row starts over. Queued; written before the store closes.
   */
  void mark_job_stopped(std::int64_t id);

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
  /**
   * Keeps an ended fill in the history (written with the next batch). The
   * history keeps the newest k_max_finished_jobs, none older than
   * k_finished_job_age.
   */
  void record_finished_job(const Job& job);
  /** Ended fills, newest first (the filter matches the URL); or a one-line database error. */
  Expected<Page<Job>, std::string> list_finished_jobs(const ListQuery& query);
  /** One ended fill from the history. */
  Expected<std::optional<Job>, std::string> finished_job(std::int64_t id);
  /** Forgets the whole history ("clear finished"); returns how many were forgotten. */
  Expected<std::uint64_t, std::string> clear_finished_jobs();

 private:
  struct PendingMiss {
    std::string url;
    std::uint64_t count = 0;
    UnixTime first = 0;
    UnixTime last = 0;
  };
  struct JobOp {
    enum class Kind {
      insert,  ///< a new pending fill
      remove,  ///< it ended
      stopped, ///< a clean stop interrupted it (see mark_job_stopped())
    };
    Kind kind = Kind::insert;
    PendingJob job;
  };
  struct FailureOp {
    std::string url;
    Backoff backoff;
    bool clear = false; ///< only reset failures and retry_after of an existing row
  };
  /** A damaged artifact the read path dropped from the index; its row and file follow. */
  struct Drop {
    std::string sha256;
    std::string details;
    bool quarantine = true; ///< else the file is already gone (a delete on a full disk)
  };
  /** Everything waiting to be written; guarded by m_counter_mutex. */
  struct Queue {
    std::unordered_map<std::string, std::uint64_t> hits;
    std::unordered_map<std::string, PendingMiss> misses;
    std::vector<Event> events;
    std::vector<JobOp> job_ops;
    std::unordered_map<std::string, FailureOp> failures; // newest state per key
    std::vector<Job> finished_jobs;
    std::vector<std::string> removals_done; // journal entries whose file is gone
    std::unordered_map<std::string, Drop> drops;
    std::optional<ScrubState> scrub;
    [[nodiscard]] bool empty() const noexcept;
    [[nodiscard]] std::uint64_t size() const noexcept;
  };
  /** What did not fit in the queue's bounds while writes failed; logged as one event once they work. */
  struct Lost {
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;
    std::uint64_t events = 0;
    std::uint64_t finished_jobs = 0;
    [[nodiscard]] bool any() const noexcept { return hits + misses + events + finished_jobs > 0; }
  };
  struct Statements;

  void open_database(const std::filesystem::path& db_path);
  void migrate();
  void sweep_blobs_once();
  void load_index();
  void recover_tmp();
  void finish_removals();
  void count_crashed_fills();
  Expected<Ok, std::string> flush_locked(); // m_db_mutex held; never throws
  void write_queue(Queue& queue, std::vector<std::pair<std::string, bool>>& files_to_remove,
                   std::vector<std::string>& misses_pruned);
  void insert_event(const Event& event); // m_db_mutex held, inside a transaction
  void requeue(Queue&& failed);
  void note_write_failure(const std::string& message);
  void note_disk_full();
  void flusher_loop();
  void drop_damaged(const std::string& key, const std::string& sha256, std::string details);
  bool queue_has_room_locked() const;
  void move_to_quarantine(const std::string& key, std::string_view why);
  template <class F> auto reading(std::string_view what, F&& body);

  StoreOptions m_options;
  RecoveryReport m_recovery;

  mutable std::mutex m_db_mutex;
  std::unique_ptr<SQLite::Database> m_db;
  // Listings read on their own connection (WAL: readers never wait for the writer), so a slow page
  // never holds up a fill's commit.
  mutable std::mutex m_read_mutex;
  std::unique_ptr<SQLite::Database> m_read_db;
  // Prepared once, on both connections; declared after them so it is destroyed first.
  std::unique_ptr<Statements> m_statements;
  bool m_upgraded_from_old_layout = false;

  mutable std::shared_mutex m_index_mutex;
  std::unique_ptr<detail::CompactIndex> m_index;
  std::atomic<std::uint64_t> m_stored_bytes{0};
  std::atomic<std::uint64_t> m_reserved_bytes{0};
  std::atomic<std::uint64_t> m_damaged_found{0};

  mutable std::mutex m_counter_mutex;
  Queue m_queue;
  Lost m_lost;
  std::unordered_set<std::string> m_known_misses; // keys with a miss row or a queued miss
  std::unordered_map<std::string, Backoff> m_backoffs; // keys with failures in a row
  std::optional<WriteFailure> m_write_failure;
  std::atomic<std::int64_t> m_next_job_id{1};

  mutable std::atomic<std::int64_t> m_disk_checked_at{0}; // steady-clock ms of the last statvfs
  mutable std::atomic<bool> m_disk_full{false};
  std::atomic<bool> m_writes_full{false}; // the last write of the queue failed for want of space

  std::condition_variable m_flusher_cv;
  bool m_stopping = false;
  bool m_flush_now = false;
  std::thread m_flusher;
};

} // namespace withcache::store
