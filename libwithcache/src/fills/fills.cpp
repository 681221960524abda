#include "withcache/fills.hpp"

#include <algorithm>
#include <filesystem>

#include "http/http.hpp"
#include "withcache/util/encoding.hpp"
#include "withcache/util/size.hpp"
#include "withcache/util/time.hpp"

namespace withcache::fills {
namespace {

using Clock = std::chrono::steady_clock;
using util::now;

std::optional<std::string> check_headers(const origin::Headers& headers) {
  for (const auto& [name, value] : headers) {
    if (auto bad = http::check_field(name, value)) {
      return bad;
    }
  }
  return std::nullopt;
}

} // namespace

struct FillPool::State {
  std::int64_t id = 0;
  std::string key;
  std::string url;
  origin::Headers headers;
  JobStatus status = JobStatus::queued;
  std::atomic<std::uint64_t> done{0};
  std::atomic<std::uint64_t> total{0};
  std::atomic<double> rate{0};
  std::string error;
  std::string reason;
  store::UnixTime created_at = 0;
  store::UnixTime started_at = 0;
  store::UnixTime finished_at = 0;
  std::atomic<bool> stop{false}; // the fetch's cancel flag: operator cancel or shutdown
  bool cancel_requested = false;
};

FillPool::FillPool(store::BlobStore& store, PoolOptions options)
    : m_store(store), m_options(std::move(options)) {
  auto persisted = m_store.pending_jobs();
  if (!persisted) {
    // The fills stay in cache.db; the next start picks them up.
    m_startup_error = persisted.error();
  }
  for (auto& pending : persisted.value_or(std::vector<store::PendingJob>{})) {
    auto job = std::make_shared<State>();
    job->id = pending.id;
    job->key = std::move(pending.key);
    job->url = std::move(pending.url);
    job->headers = std::move(pending.headers);
    job->created_at = pending.created_at;
    if (m_store.find(job->key) || m_active_by_key.count(job->key) != 0) {
      m_store.remove_pending_job(job->id); // finished just before the last stop
      continue;
    }
    m_active_by_key[job->key] = job->id;
    m_queue.push_back(job->id);
    m_jobs.emplace(job->id, std::move(job));
  }
  const unsigned workers = std::max(1U, m_options.workers);
  for (unsigned i = 0; i < workers; ++i) {
    m_workers.emplace_back([this] { worker_loop(); });
  }
}

FillPool::~FillPool() {
  shutdown();
}

Expected<Enqueued, EnqueueError> FillPool::enqueue(std::string_view origin_url, origin::Headers headers) {
  if (auto refused = m_options.fetch.policy.check_url(origin_url)) {
    const std::string scheme = url::scheme_of(origin_url);
    const bool web = scheme.empty() || scheme == "http" || scheme == "https";
    const bool malformed = web && !url::parse_target(origin_url).has_value();
    return unexpected(EnqueueError{malformed ? EnqueueErrc::bad_url : EnqueueErrc::refused_origin, *refused});
  }
  auto key = url::key_id(origin_url, m_options.key_options);
  if (!key) {
    return unexpected(EnqueueError{EnqueueErrc::bad_url, key.error().message});
  }
  if (auto bad = check_headers(headers)) {
    return unexpected(EnqueueError{EnqueueErrc::bad_header, *bad});
  }
  if (auto userinfo = url::userinfo_of(origin_url); userinfo && !http::find_field(headers, "Authorization")) {
    headers.emplace_back("Authorization", "Basic " + util::base64_encode(util::percent_decode(*userinfo)));
  }
  const std::string clean_url = url::strip_userinfo(origin_url);

  std::unique_lock lock(m_mutex);
  if (m_stopping) {
    return unexpected(EnqueueError{EnqueueErrc::shutting_down, "the server is shutting down"});
  }
  if (auto it = m_active_by_key.find(*key); it != m_active_by_key.end()) {
    return Enqueued{snapshot(*m_jobs.at(it->second)), true};
  }
  if (m_store.find(*key)) {
    return unexpected(
        EnqueueError{EnqueueErrc::already_cached,
                     url::redact(clean_url) + " is already cached (delete it to fetch it again)"});
  }
  if (m_store.is_full()) {
    return unexpected(EnqueueError{EnqueueErrc::cache_full, "the cache is full (" +
                                                                util::format_size(m_store.max_bytes()) +
                                                                "); delete artifacts to make room"});
  }
  auto job = std::make_shared<State>();
  job->key = *key;
  job->url = clean_url;
  job->headers = std::move(headers);
  job->created_at = now();
  job->id = m_store.add_pending_job(job->key, job->url, job->headers);
  m_active_by_key[job->key] = job->id;
  m_queue.push_back(job->id);
  m_jobs.emplace(job->id, job);
  Enqueued result{snapshot(*job), false};
  lock.unlock();
  m_work.notify_one();
  m_changed.notify_all();
  return result;
}

bool FillPool::cancel(std::int64_t id) {
  std::unique_lock lock(m_mutex);
  const auto it = m_jobs.find(id);
  if (it == m_jobs.end()) {
    return false;
  }
  const auto job = it->second;
  if (job->status == JobStatus::running) {
    job->cancel_requested = true;
    job->stop = true;
    return true;
  }
  if (job->status != JobStatus::queued) {
    return false;
  }
  std::erase(m_queue, id);
  lock.unlock();
  std::error_code ec;
  std::filesystem::remove(m_store.part_path(job->key), ec); // bytes a previous run left
  finish(job, JobStatus::cancelled, {}, {});
  return true;
}

std::size_t FillPool::clear_finished() {
  std::lock_guard lock(m_mutex);
  return std::erase_if(m_jobs, [](const auto& entry) {
    const JobStatus s = entry.second->status;
    return s == JobStatus::completed || s == JobStatus::failed || s == JobStatus::cancelled;
  });
}

std::vector<Job> FillPool::list() const {
  std::lock_guard lock(m_mutex);
  std::vector<Job> jobs;
  jobs.reserve(m_jobs.size());
  for (auto it = m_jobs.rbegin(); it != m_jobs.rend(); ++it) {
    jobs.push_back(snapshot(*it->second));
  }
  return jobs;
}

std::optional<Job> FillPool::get(std::int64_t id) const {
  std::lock_guard lock(m_mutex);
  const auto it = m_jobs.find(id);
  if (it == m_jobs.end()) {
    return std::nullopt;
  }
  return snapshot(*it->second);
}

std::optional<Job> FillPool::find_active(const std::string& key) const {
  std::lock_guard lock(m_mutex);
  const auto it = m_active_by_key.find(key);
  if (it == m_active_by_key.end()) {
    return std::nullopt;
  }
  return snapshot(*m_jobs.at(it->second));
}

std::size_t FillPool::queue_depth() const {
  std::lock_guard lock(m_mutex);
  return m_queue.size();
}

std::size_t FillPool::running() const {
  std::lock_guard lock(m_mutex);
  return m_running;
}

std::optional<Job> FillPool::wait(std::int64_t id, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(m_mutex);
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const auto it = m_jobs.find(id);
    if (it == m_jobs.end()) {
      return std::nullopt;
    }
    const bool ended = it->second->status == JobStatus::completed ||
                       it->second->status == JobStatus::failed || it->second->status == JobStatus::cancelled;
    if (ended || Clock::now() >= deadline) {
      return snapshot(*it->second);
    }
    m_changed.wait_until(lock, deadline);
  }
}

void FillPool::shutdown() {
  {
    std::lock_guard lock(m_mutex);
    if (m_stopping && m_workers.empty()) {
      return;
    }
    m_stopping = true;
    for (auto& [id, job] : m_jobs) {
      if (job->status == JobStatus::running) {
        job->stop = true; // not cancel_requested: the fill stays persisted
      }
    }
  }
  m_work.notify_all();
  for (auto& worker : m_workers) {
    if (worker.joinable()) {
      worker.join();
    }
  }
  m_workers.clear();
}

void FillPool::worker_loop() {
  for (;;) {
    std::shared_ptr<State> job;
    {
      std::unique_lock lock(m_mutex);
      m_work.wait(lock, [this] { return m_stopping || !m_queue.empty(); });
      if (m_stopping) {
        return;
      }
      job = m_jobs.at(m_queue.front());
      m_queue.pop_front();
      job->status = JobStatus::running;
      job->started_at = now();
      ++m_running;
    }
    m_changed.notify_all();
    run(job);
    {
      std::lock_guard lock(m_mutex);
      --m_running;
    }
  }
}

void FillPool::run(const std::shared_ptr<State>& job) {
  std::uint64_t reserved = 0;
  auto rate_mark = Clock::now();
  std::uint64_t rate_bytes = 0;

  origin::FetchRequest request;
  request.url = job->url;
  request.headers = job->headers;
  request.part_path = m_store.part_path(job->key);
  request.cancel = &job->stop;
  request.on_progress = [&](std::uint64_t done, std::uint64_t total) {
    job->done = done;
    job->total = total;
    const auto t = Clock::now();
    const double seconds = std::chrono::duration<double>(t - rate_mark).count();
    if (seconds >= 0.5) {
      const double instant = static_cast<double>(done > rate_bytes ? done - rate_bytes : 0) / seconds;
      const double previous = job->rate.load();
      job->rate = previous == 0 ? instant : 0.6 * instant + 0.4 * previous;
      rate_mark = t;
      rate_bytes = done;
    }
  };
  request.may_store = [&](std::uint64_t size) {
    if (size <= reserved) {
      return true;
    }
    if (!m_store.reserve(size - reserved)) {
      return false;
    }
    reserved = size;
    return true;
  };

  auto result = origin::fetch_to_file(request, m_options.fetch);
  std::error_code ec;
  if (result) {
    store::NewArtifact artifact;
    artifact.key = job->key;
    artifact.url = url::normalize_key(job->url, m_options.key_options).value_or(job->url);
    artifact.raw_url = job->url;
    artifact.content_type = result->content_type;
    artifact.size = result->size;
    artifact.sha256 = result->sha256;
    auto committed = m_store.commit(artifact);
    m_store.release(reserved);
    if (!committed) {
      std::filesystem::remove(request.part_path, ec);
      finish(job, JobStatus::failed, committed.error(), "io");
      return;
    }
    job->done = result->size;
    job->total = result->size;
    finish(job, JobStatus::completed, {}, {});
    return;
  }
  m_store.release(reserved);

  bool interrupted = false;
  {
    std::lock_guard lock(m_mutex);
    interrupted = result.error().reason == origin::FetchErrc::cancelled && !job->cancel_requested;
  }
  if (interrupted) {
    return; // shutdown: the pending row and the .part bytes stay for the next start
  }
  std::filesystem::remove(request.part_path, ec);
  if (result.error().reason == origin::FetchErrc::cancelled) {
    finish(job, JobStatus::cancelled, {}, {});
  } else {
    finish(job, JobStatus::failed, result.error().message,
           std::string(origin::to_string(result.error().reason)));
  }
}

void FillPool::finish(const std::shared_ptr<State>& job, JobStatus status, std::string error,
                          std::string reason) {
  m_store.remove_pending_job(job->id);
  Job done;
  {
    std::lock_guard lock(m_mutex);
    job->status = status;
    job->error = std::move(error);
    job->reason = std::move(reason);
    job->finished_at = now();
    if (status != JobStatus::completed) {
      job->rate = 0;
    }
    if (auto it = m_active_by_key.find(job->key); it != m_active_by_key.end() && it->second == job->id) {
      m_active_by_key.erase(it);
    }
    done = snapshot(*job);
  }
  m_changed.notify_all();
  if (m_options.on_finished) {
    m_options.on_finished(done);
  }
}

Job FillPool::snapshot(const State& job) const {
  Job j;
  j.id = job.id;
  j.key = job.key;
  j.url = job.url;
  j.status = job.status;
  j.bytes_done = job.done.load();
  j.bytes_total = job.total.load();
  j.rate = job.rate.load();
  j.error = job.error;
  j.error_reason = job.reason;
  j.created_at = job.created_at;
  j.started_at = job.started_at;
  j.finished_at = job.finished_at;
  return j;
}

} // namespace withcache::fills
