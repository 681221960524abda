#pragma once

/**
 * @file
 * withcache::downloads — the download pool: `--workers` threads running fills
 * off the request path, one job per key (later requests join it), with
 * cancel, "clear finished" and persistence so queued and running fills
 * survive a restart.
 *
 * Thread safety: every DownloadPool member may be called from any thread.
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
#include <vector>

#include "withcache/expected.hpp"
#include "withcache/fetch.hpp"
#include "withcache/store.hpp"
#include "withcache/url.hpp"

namespace withcache::downloads {

/** `queued → running → completed | failed | cancelled`. */
enum class JobStatus { queued, running, completed, failed, cancelled };

/** The status as a word: `queued`, `running`, `completed`, `failed`, `cancelled`. */
std::string_view to_string(JobStatus status);

/** A snapshot of one fill. */
struct Job {
  std::int64_t id = 0;
  std::string key;
  std::string url; ///< userinfo removed; never carries the request headers
  JobStatus status = JobStatus::queued;
  std::uint64_t bytes_done = 0;
  std::uint64_t bytes_total = 0; ///< 0 while unknown
  double rate = 0;               ///< bytes per second, smoothed
  std::string error;             ///< one line, URL redacted; empty unless failed
  std::string error_reason;      ///< fetch::to_string(reason) when failed
  store::UnixTime created_at = 0;
  store::UnixTime started_at = 0;  ///< 0 until running
  store::UnixTime finished_at = 0; ///< 0 until ended
  [[nodiscard]] bool ended() const noexcept {
    return status == JobStatus::completed || status == JobStatus::failed || status == JobStatus::cancelled;
  }
};

/** Why enqueue() refused. */
enum class EnqueueErrc {
  bad_url,        ///< not a URL (message says why)
  bad_header,     ///< a header name or value that cannot be sent (CR/LF, empty name, …)
  refused_origin, ///< not http/https, or refused by --allow-origin
  already_cached, ///< the key is cached; delete it to re-fetch
  cache_full,     ///< the store is at its cap
  shutting_down,  ///< the pool is stopping
};

struct EnqueueError {
  EnqueueErrc code;
  std::string message;
};

/** A job enqueue() created, or the one it joined. */
struct Enqueued {
  Job job;
  bool joined = false; ///< true when a queued or running job for the key already existed
};

/** Options of a DownloadPool. */
struct PoolOptions {
  unsigned workers = 2;
  url::KeyOptions key_options;
  fetch::FetchOptions fetch;
  /** Called (on a worker thread) when a job completes, fails or is cancelled. */
  std::function<void(const Job&)> on_finished;
};

class DownloadPool {
 public:
  /** Starts the workers and re-queues the fills `store` persisted (their `.part` bytes are resumed). */
  DownloadPool(store::BlobStore& store, PoolOptions options);
  /** shutdown() with the default grace. */
  ~DownloadPool();

  DownloadPool(const DownloadPool&) = delete;
  DownloadPool& operator=(const DownloadPool&) = delete;

  /**
   * Queues a fill of `url` and returns at once. Credentials in the URL's
   * userinfo become an `Authorization: Basic` header. A second enqueue of the
   * same key while it is queued or running joins that job.
   */
  Expected<Enqueued, EnqueueError> enqueue(std::string_view url, fetch::Headers headers = {});

  /** Cancels a queued or running job (a running one stops within one chunk, leaving no file). False if none.
   */
  bool cancel(std::int64_t id);
  /** Drops ended jobs from the listing; returns how many. */
  std::size_t clear_finished();
  /** Every job, newest first. */
  [[nodiscard]] std::vector<Job> list() const;
  /** One job. */
  [[nodiscard]] std::optional<Job> get(std::int64_t id) const;
  /** The queued or running job for a key, if any. */
  [[nodiscard]] std::optional<Job> find_active(const std::string& key) const;
  /** Jobs waiting for a worker. */
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

  void worker_loop();
  void run(const std::shared_ptr<State>& job);
  void finish(const std::shared_ptr<State>& job, JobStatus status, std::string error, std::string reason);
  Job snapshot(const State& job) const;

  store::BlobStore& m_store;
  PoolOptions m_options;

  mutable std::mutex m_mutex;
  mutable std::condition_variable m_changed;
  std::condition_variable m_work;
  std::map<std::int64_t, std::shared_ptr<State>> m_jobs;
  std::unordered_map<std::string, std::int64_t> m_active_by_key;
  std::deque<std::int64_t> m_queue;
  std::size_t m_running = 0;
  bool m_stopping = false;
  std::vector<std::thread> m_workers;
};

} // namespace withcache::downloads
