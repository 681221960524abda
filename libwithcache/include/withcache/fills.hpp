#pragma once

/**
 * @file
 * withcache::fills — the cache-host's fill pool: `--workers` threads running
 * fills (origin fetches into the store) off the request path, one job per key
 * (later requests join it), with cancel, "clear finished" and persistence so
 * queued and running fills survive a restart.
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
#include <vector>

#include "withcache/expected.hpp"
#include "withcache/origin.hpp"
#include "withcache/records.hpp"
#include "withcache/store.hpp"
#include "withcache/url.hpp"

namespace withcache::fills {

using withcache::Job;
using withcache::JobStatus;

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

/** Options of a FillPool. */
struct PoolOptions {
  unsigned workers = 2;
  url::KeyOptions key_options;
  origin::FetchOptions fetch;
  /** Called (on a worker thread) when a job completes, fails or is cancelled. */
  std::function<void(const Job&)> on_finished;
};

class FillPool {
 public:
  /**
   * Starts the workers and re-queues the fills `store` persisted (their `.part`
   * bytes are resumed). When they cannot be read, recovery_error() says why and
   * they stay persisted for the next start.
   */
  FillPool(store::BlobStore& store, PoolOptions options);
  /** shutdown() with the default grace. */
  ~FillPool();

  FillPool(const FillPool&) = delete;
  FillPool& operator=(const FillPool&) = delete;

  /**
   * Queues a fill of `url` and returns at once. Credentials in the URL's
   * userinfo become an `Authorization: Basic` header. A second enqueue of the
   * same key while it is queued or running joins that job.
   * @return the job, or an EnqueueError (bad_url, bad_header, refused_origin,
   *         already_cached, cache_full, shutting_down) with a one-line message.
   */
  Expected<Enqueued, EnqueueError> enqueue(std::string_view url, origin::Headers headers = {});

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
  /** Why the persisted fills could not be re-queued at start; empty when they were. */
  [[nodiscard]] const std::string& recovery_error() const noexcept { return m_startup_error; }
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
  std::string m_startup_error;
  std::vector<std::thread> m_workers;
};

} // namespace withcache::fills
