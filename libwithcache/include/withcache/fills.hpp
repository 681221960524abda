#pragma once

/**
 * @file
 * withcache::fills — the cache-host's fill pool: `--workers` threads running
 * fills (origin fetches into the store) off the request path, one job per key
 * (later requests join it), with cancel, "clear finished" and persistence so
 * queued and running fills survive a restart.
 *
 * What a fill stores (SPEC §3 "Fills"): only a 200 the origin did not mark
 * `no-store`/`private`, and no HTML unless `--cache-html`; the origin's
 * validators and caching headers go with it. A fill that fails or is
 * refused records its reason on the key's miss row, with a `fill_failed` or
 * `fill_refused` event, and puts the key in the negative cache (10 min
 * doubling to 24 h); enqueue() refuses it meanwhile unless an operator asks.
 * A transfer that broke (truncated, timed out, too slow, connection lost)
 * keeps its `.part` and resume state in tmp/ for the next attempt, which
 * resumes it only under If-Range; store recovery removes it at the next
 * start if no fill owns it.
 * An artifact with a finite lifetime is revalidated with one conditional
 * fill per key (revalidate()): a 304 extends its lifetime, a 200 replaces it
 * atomically.
 *
 * Thread safety: every FillPool member may be called from any thread.
 */

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "withcache/expected.hpp"
#include "withcache/origin.hpp"
#include "withcache/records.hpp"
#include "withcache/store.hpp"
#include "withcache/url.hpp"

namespace withcache::fills {

using withcache::Job;
using withcache::JobStatus;
using withcache::Artifact;
using withcache::UnixTime;

/** Why enqueue() refused. */
enum class EnqueueErrc {
  bad_url,        ///< not a URL (message says why)
  bad_header,     ///< a header name or value that cannot be sent (CR/LF, empty name, …)
  refused_origin, ///< not http/https, or refused by --allow-origin
  /** An automatic fill of a URL with userinfo, or with the reader's Authorization, without --forward-auth. */
  carries_credentials,
  queue_full,     ///< an automatic fill over the global or the per-client queue cap (counted, not queued)
  low_disk_space, ///< the data dir's filesystem already has less free space than --min-free
  already_cached, ///< the key is cached; delete it to re-fetch
  cache_full,     ///< the store is at its cap
  shutting_down,  ///< the pool is stopping
  backing_off,    ///< a fill of the key failed or was refused recently (the negative cache); message = the
                  ///< reason
  not_cached,     ///< revalidate(): the artifact is gone
  url_too_long,   ///< the URL is longer than url::k_max_origin_url (414 on every route); nothing recorded
};

struct EnqueueError {
  EnqueueErrc code;
  /**
   * One line. For backing_off it is the reason as it reads after
   * "cache miss (recorded; " — `not stored: origin marked it no-store`,
   * `not fetched: origin answered HTTP 404`.
   */
  std::string message;
  UnixTime retry_after = 0; ///< backing_off: when an automatic fill may run again
};

/** A job enqueue() created, or the one it joined. */
struct Enqueued {
  Job job;
  bool joined = false; ///< true when a queued or running job for the key already existed
};

/** Free space on the data dir's filesystem, as statvfs(2) reports it to an unprivileged writer. */
struct DiskSpace {
  std::uint64_t available = 0; ///< bytes a fill may still write
  std::uint64_t total = 0;     ///< the filesystem's size
};

/** Options of a FillPool. */
struct PoolOptions {
  /** Threads running fills; one more thread runs only operator-added fills (see FillPool). */
  unsigned workers = 2;
  url::KeyOptions key_options;
  /**
   * How fills fetch. The pool always sets `only_storable`; `cache_html`
   * (`--cache-html`), `min_rate` (`--min-rate`), `head_timeout` and
   * `own_listeners` (the server's sockets) come from the caller.
   */
  origin::FetchOptions fetch;
  /** `--max-age`: the lifetime of every artifact, instead of the origin's. Nothing: the origin's. */
  std::optional<std::chrono::seconds> max_age;
  /** Record `fill_failed` and `fill_refused` events (with the reason) in the store's events log. */
  bool record_events = true;
  /** Called (on a worker thread) when a job completes, fails or is cancelled. */
  std::function<void(const Job&)> on_finished;
  /**
   * `--forward-auth`: an automatic fill may use the URL's userinfo (as
   * `Authorization: Basic`) and the reader's `Authorization`. Without it such
   * a miss is refused (EnqueueErrc::carries_credentials). Operator-added
   * fills always may.
   */
  bool forward_auth = false;
  /** Queued fills at most (all of them count) before an automatic one is refused; 0 = no cap. */
  std::size_t queue_max = 1000;
  /** Queued automatic fills one client may have (IPv4 address, IPv6 /64); 0 = no cap. */
  std::size_t queue_max_per_client = 50;
  /**
   * The free-space guard (`--min-free`): a fill is refused when it would
   * leave less than this on the data dir's filesystem. With both, the
   * smaller of `min_free_bytes` and `min_free_percent` of its size; neither
   * = no guard.
   */
  std::optional<std::uint64_t> min_free_bytes;
  std::optional<double> min_free_percent;
  /** How free space is read; empty = statvfs(2) on the store's data dir. */
  std::function<std::optional<DiskSpace>()> disk_space;
};

/**
 * When a response fetched at `now` stops being fresh (SPEC §3): with
 * `max_age`, `now + max_age` for everything; else `Cache-Control: immutable`
 * → 0 (never); `max-age=N` → `now + N - Age`; `no-cache` → `now` (revalidate
 * at the next hit); `Expires` → `now + (Expires - Date)` (an invalid date is
 * already expired); no explicit lifetime → 0 (never revalidated, the model
 * for versioned artifacts).
 */
UnixTime fresh_until(std::string_view cache_control, std::string_view expires, std::string_view date,
                     std::string_view age, UnixTime now, std::optional<std::chrono::seconds> max_age);

/** True when `artifact` has a finite lifetime that has passed at `now`. Cheap: no I/O. */
constexpr bool is_stale(const Artifact& artifact, UnixTime now) noexcept {
  return artifact.fresh_until != 0 && now >= artifact.fresh_until;
}

/**
 * The lifetime (`fresh_until`) of an artifact whose bytes have changed, or
 * may have, under readers: a revalidation replaced them (or could have), or
 * its fill restarted from zero while readers were attached. It never goes
 * stale (the last second a record can hold, in 2106) but is not immutable, so
 * the read path answers a Range on it only with a matching If-Range: a client
 * resuming bytes of another version gets the whole body (see may_change()).
 */
inline constexpr UnixTime k_changed_lifetime = 4294967295;

/**
 * True when the bytes served for `artifact`'s URL can change, or have: a
 * finite lifetime (a revalidation may replace them) or k_changed_lifetime.
 * The read path then answers a Range with 206 only under a matching If-Range.
 * False: immutable, and a bare Range resumes (curl -C -, wget -c).
 */
constexpr bool may_change(const Artifact& artifact) noexcept {
  return artifact.fresh_until != 0;
}

/** The free space the guard keeps at `total` bytes of filesystem: see PoolOptions::min_free_bytes. */
std::uint64_t min_free_for(std::uint64_t total, std::optional<std::uint64_t> bytes,
                           std::optional<double> percent);

/**
 * The client a queue cap counts a miss against: an IPv4 address as is (an
 * IPv4-mapped IPv6 one as IPv4), an IPv6 address by its /64 (one host
 * usually holds a whole /64), anything else as given.
 */
std::string client_group(std::string_view address);

/**
 * A failed fetch as it reads on a miss row and after "cache miss (recorded; ":
 * `not stored: <detail>` for a response the cache must not store,
 * `not fetched: <detail>` for everything else.
 */
std::string miss_reason(const origin::FetchError& error);

/**
 * A running fill as its readers see it (SPEC §3 "filling"): the part file's
 * descriptor, how many of its bytes are written, the total the origin
 * declared, and whether the fill is still going. The fill tells it through
 * origin::PartObserver; clients of the read path attach to it and are woken
 * as bytes land. Thread-safe.
 *
 * Bytes [0, available) of one generation are final: the fetcher only appends,
 * and a restart from zero opens a new file (a new generation). A reader holds
 * a descriptor of its generation and is cut when the generation changes or
 * the fill fails, so it never sends a byte that will not be in the blob.
 *
 * Each generation has a validator (View::etag) that its responses carry and
 * that a Range's If-Range must match: the origin's strong ETag when it sent
 * one that no earlier generation of this stream had, else
 * `"wc-fill-<random>-<generation>"`, random per stream (so per fill, and
 * per server process), so a client holding bytes of another attempt or
 * version never gets a 206 that would splice them.
 */
class FillStream : public origin::PartObserver {
 public:
  enum class Phase {
    queued,    ///< waiting for a worker
    waiting,     ///< running, no response head yet
    unstreamable, ///< the head declared no length: readers cannot know where the body ends
    streaming,   ///< the head declared a total; bytes are landing
    done,      ///< every byte is in the blob
    failed,    ///< ended without a blob (failed, cancelled, interrupted)
  };

  /** What a reader sees now. */
  struct View {
    Phase phase = Phase::queued;
    std::uint64_t generation = 0;
    std::uint64_t total = 0;     ///< declared length (0 while unknown)
    std::uint64_t available = 0; ///< bytes of this generation in the file
    std::uint64_t version = 0;   ///< changes with every update (for wait())
    origin::Headers headers;     ///< the representation's kept headers (Content-Type, …)
    /** The strong entity-tag (quoted) of this generation's bytes; empty until its head arrived. */
    std::string etag;
  };

  /** A stream whose derived validators carry a fresh random part. */
  FillStream();
  ~FillStream() override;
  FillStream(const FillStream&) = delete;
  FillStream& operator=(const FillStream&) = delete;

  /** The current view. */
  [[nodiscard]] View view() const;
  /**
   * A new descriptor on the current generation's file, and that generation's
   * view; -1 when there is no file yet. The caller closes the descriptor.
   */
  [[nodiscard]] std::pair<int, View> open() const;
  /**
   * Calls `wake` once, from any thread, as soon as the view's version is no
   * longer `seen` (at once if it already is not). Wakers are dropped only by firing.
   */
  void wait(std::uint64_t seen, std::function<void()> wake);
  /** Readers attached now (for the Downloads page and /metrics). */
  [[nodiscard]] std::uint32_t attached() const noexcept { return m_attached.load(); }
  void attach() noexcept {
    ++m_attached;
    m_served = true;
  }
  void detach() noexcept { --m_attached; }
  /**
   * True when readers may hold bytes of another version than the current
   * generation's: one attached at some point, and the fill has restarted
   * from zero since it began. The pool then commits the artifact with
   * k_changed_lifetime.
   */
  [[nodiscard]] bool restarted_under_readers() const;
  /** True when a reader attached at some point (got bytes, or could have). */
  [[nodiscard]] bool served() const noexcept { return m_served.load(); }

  /** The pool's side: the job started running. */
  void started();
  /** The pool's side: the fill ended; `ok` when its bytes are the committed blob. */
  void finish(bool ok);

  // origin::PartObserver: the fetcher's side.
  void opened(int fd) override;
  void restarting() override;
  void head(std::uint64_t total, const origin::Headers& kept) override;
  void written(std::uint64_t size) override;

 private:
  void changed(std::unique_lock<std::mutex>& lock); // bumps the version and fires the wakers

  mutable std::mutex m_mutex;
  int m_fd = -1; // a dup of the fetcher's descriptor
  View m_view;
  std::vector<std::function<void()>> m_wakers;
  std::atomic<std::uint32_t> m_attached{0};
  std::atomic<bool> m_served{false};
  std::string m_nonce;                      // the random part of derived validators
  std::vector<std::string> m_earlier_etags; // the origin's ETags of generations before this one
};
/** Ended jobs the pool keeps in memory (older ones are in the store's history only). */
inline constexpr std::size_t k_ended_in_memory = 100;
/**
 * A persisted fill that was running when the server died this many times in a row
 * (store::PendingJob::crashes) is not resumed at start: it ends failed (see FillPool::FillPool).
 */
inline constexpr std::uint32_t k_crashes_before_abandon = 2;
/** The error of a fill abandoned at start (k_crashes_before_abandon). */
inline constexpr std::string_view k_abandoned_error =
    "the server died twice while this fill ran; not retried at start (an operator's Download retries it)";

class FillPool {
 public:
  /**
   * Starts the workers and re-queues the fills `store` persisted (their `.part`
   * bytes are resumed). When they cannot be read, recovery_error() says why and
   * they stay persisted for the next start.
   *
   * No crash loop: a fill that was running when the server died
   * k_crashes_before_abandon times in a row (an origin whose answer takes the
   * server's memory, say) is not re-queued. It ends failed with
   * k_abandoned_error (error_reason `abandoned`), a `fill_abandoned` event when
   * record_events, and its key enters the negative cache, so a reader's miss
   * does not start it again either; an operator's Download does.
   */
  FillPool(store::BlobStore& store, PoolOptions options);
  /** shutdown() with the default grace. */
  ~FillPool();

  FillPool(const FillPool&) = delete;
  FillPool& operator=(const FillPool&) = delete;

  /**
   * Queues a fill of `url` and returns at once. The key is url::key_id(url,
   * key_options) and the origin is asked for url::fetch_url(url): one parse,
   * so one key never stands for two origin resources. Credentials in the
   * URL's userinfo become an `Authorization: Basic` header. A second enqueue
   * of the same key while it is queued or running joins that job.
   * A key in the negative cache is refused (backing_off, with its reason),
   * unless `by_operator`: an operator's Download clears the back-off and
   * fetches.
   *
   * An automatic fill (`by_operator` false) is refused when its URL has
   * userinfo or `headers` hold an `Authorization` and forward_auth is off
   * (carries_credentials), when queue_max fills are queued or its `client`
   * (client_group()) has queue_max_per_client automatic fills queued
   * (queue_full), and when free space is already under the guard
   * (low_disk_space). Operator fills are never refused by a cap, and run
   * first: on a worker as soon as one is free, ahead of every queued
   * automatic fill, or on the operator lane, a thread of their own that
   * runs them even while every worker is busy.
   * Memory only (and one statvfs(2) with the guard on): safe on the read path.
   * @return the job, or an EnqueueError (bad_url, bad_header, refused_origin,
   *         carries_credentials, already_cached, backing_off, cache_full,
   *         queue_full, low_disk_space, shutting_down) with a one-line message.
   */
  Expected<Enqueued, EnqueueError> enqueue(std::string_view url, origin::Headers headers = {},
                                           bool by_operator = false, std::string_view client = {});

  /**
   * Queues ONE conditional fill of a cached artifact (If-None-Match with its
   * ETag, If-Modified-Since with its Last-Modified), or joins the key's
   * queued or running job. A 304 extends its freshness (BlobStore::refresh);
   * a 200 replaces it atomically (BlobStore::commit): downloads already
   * reading the old blob finish with the old bytes. A failure keeps the old
   * artifact and backs off like a failed fill (in memory), so a dead origin
   * is not asked again on every stale hit.
   * `url`: the URL the stale hit asked for (it may carry a fresh signature);
   * empty = the artifact's raw_url. It must have the artifact's key.
   * Memory only: safe on the read path.
   * @return the job, or an EnqueueError (bad_url, refused_origin,
   *         backing_off, not_cached, shutting_down).
   */
  Expected<Enqueued, EnqueueError> revalidate(const Artifact& artifact, std::string_view url = {});

  /** The key of `url` under this pool's key options (what the read path must look up). */
  [[nodiscard]] Expected<std::string, url::UrlError> key_of(std::string_view url) const {
    return url::key_id(url, m_options.key_options);
  }

  /** Cancels a queued or running job (a running one stops within one chunk, leaving no file). False if none.
   */
  bool cancel(std::int64_t id);
  /** Drops ended jobs from the listing and from the store's history; returns how many. */
  std::size_t clear_finished();
  /**
   * Jobs queued or running, and the newest k_ended_in_memory ended ones, newest first. Every ended
   * job also goes to the store's history (BlobStore::list_finished_jobs), which is paged and pruned.
   */
  [[nodiscard]] std::vector<Job> list() const;
  /** One job (an ended one only while it is among the newest k_ended_in_memory). */
  [[nodiscard]] std::optional<Job> get(std::int64_t id) const;
  /** The queued or running job for a key, if any. */
  [[nodiscard]] std::optional<Job> find_active(const std::string& key) const;
  /**
   * The stream of the key's queued or running fill (not of a revalidation:
   * the cached artifact is served then), or nullptr. `can_start`: a queued
   * job will start at once (a worker is free), so its head may come soon.
   */
  [[nodiscard]] std::shared_ptr<FillStream> stream(const std::string& key, bool* can_start = nullptr) const;
  /** Readers attached to running fills now. */
  [[nodiscard]] std::uint64_t attached() const;
  /** Why the persisted fills could not be re-queued at start; empty when they were. */
  [[nodiscard]] const std::string& recovery_error() const noexcept { return m_startup_error; }
  /** Jobs waiting for a worker (operator-added and automatic). */
  [[nodiscard]] std::size_t queue_depth() const;
  /** Jobs running now. */
  [[nodiscard]] std::size_t running() const;
  /** Waits until job `id` has ended or `timeout` passes; returns its last snapshot. */
  std::optional<Job> wait(std::int64_t id, std::chrono::milliseconds timeout) const;

  /**
   * Stops accepting, interrupts running fills (they stay persisted with
   * their `.part` bytes and resume on the next start) and joins the workers.
   * A fill blocked on a silent origin is cut off within 50 ms.
   */
  void shutdown();

 private:
  struct State;

  void worker_loop(bool operator_lane);
  std::shared_ptr<State> take_queued(bool operator_lane); // m_mutex held
  void left_queue(const State& job);                      // m_mutex held
  std::optional<std::string> disk_refusal(std::uint64_t more, const State* except) const;
  void run(const std::shared_ptr<State>& job);
  void finish(const std::shared_ptr<State>& job, JobStatus status, std::string error, std::string reason);
  void record_failure(const State& job, const origin::FetchError& error);
  Job snapshot(const State& job) const;

  store::BlobStore& m_store;
  PoolOptions m_options;

  mutable std::mutex m_mutex;
  mutable std::condition_variable m_changed;
  std::condition_variable m_work;
  std::map<std::int64_t, std::shared_ptr<State>> m_jobs;
  std::unordered_map<std::string, std::int64_t> m_active_by_key;
  std::deque<std::int64_t> m_queue;                                // automatic fills, oldest first
  std::deque<std::int64_t> m_operator_queue;                       // operator-added fills: taken first
  std::unordered_map<std::string, std::size_t> m_queued_by_client; // automatic queued fills per client_group
  std::string m_attempt_salt; // the policy in effect: a back-off recorded under another policy does not hold
  struct Retry {
    std::uint32_t failures = 0;
    UnixTime after = 0;
    std::string reason;
  };
  std::unordered_map<std::string, Retry> m_revalidation_backoff; // keys whose last revalidation failed
  // Keys whose fill ended without a blob after serving readers: their next fill's bytes may be of
  // another version than the bytes those readers hold (bounded; memory only).
  std::unordered_set<std::string> m_cut_readers;
  std::size_t m_running = 0;
  std::size_t m_ended = 0; // ended jobs in m_jobs
  bool m_stopping = false;
  std::string m_startup_error;
  std::vector<std::thread> m_workers;
};

} // namespace withcache::fills
