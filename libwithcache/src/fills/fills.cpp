#include "withcache/fills.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "http/http.hpp"
#include "withcache/digest.hpp"
#include "withcache/util/encoding.hpp"
#include "withcache/util/size.hpp"
#include "withcache/util/strings.hpp"
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

// Failures with a local cause say nothing about the URL: they are recorded
// but do not put the key in the negative cache.
bool backs_off(origin::FetchErrc reason) {
  return reason != origin::FetchErrc::cache_full && reason != origin::FetchErrc::io &&
         reason != origin::FetchErrc::cancelled;
}

bool keeps_part(origin::FetchErrc reason) {
  return reason == origin::FetchErrc::truncated || reason == origin::FetchErrc::timeout ||
         reason == origin::FetchErrc::too_slow || reason == origin::FetchErrc::connect;
}

bool is_refusal(origin::FetchErrc reason) {
  return reason == origin::FetchErrc::not_storable || reason == origin::FetchErrc::refused_origin;
}

// What the key leaves out but the origin sees: the exact fetch URL (signing
// parameters included) and the credentials. The negative cache holds back
// only requests with the id that failed.
// `salt` is the origin policy in effect, so a refusal recorded under one policy does not hold back the
// same request under another (an operator who restarts with --allow-private need not clear each miss).
std::string attempt_id(std::string_view clean_url, const origin::Headers& headers, std::string_view salt) {
  const std::string fetched = url::fetch_url(clean_url).value_or(std::string(clean_url));
  const auto authorization = http::find_field(headers, "Authorization");
  return digest::sha256_hex(fetched + "\n" + std::string(authorization.value_or("")) + "\n" +
                            std::string(salt));
}

std::optional<DiskSpace> statvfs_space(const std::filesystem::path& dir) {
  struct statvfs info {};
  if (::statvfs(dir.c_str(), &info) != 0) {
    return std::nullopt;
  }
  const auto unit = static_cast<std::uint64_t>(info.f_frsize != 0 ? info.f_frsize : info.f_bsize);
  return DiskSpace{static_cast<std::uint64_t>(info.f_bavail) * unit,
                   static_cast<std::uint64_t>(info.f_blocks) * unit};
}

// Undeclared sizes are checked against free space each time they grow by this much.
constexpr std::uint64_t k_disk_check_step = 64ULL << 20;

// Keys remembered as "a fill ended after serving readers" (FillPool::m_cut_readers): a few hundred KiB.
constexpr std::size_t k_cut_readers_kept = 10000;

// The value of a merged header: the 304's when it sent one, else the stored one.
std::string updated(const std::string& from_304, const std::string& stored) {
  return from_304.empty() ? stored : from_304;
}

} // namespace

UnixTime fresh_until(std::string_view cache_control, std::string_view expires, std::string_view date,
                     std::string_view age, UnixTime now, std::optional<std::chrono::seconds> max_age) {
  if (max_age) {
    return now + max_age->count();
  }
  const auto directives = http::parse_cache_control(cache_control);
  if (http::find_directive(directives, "immutable") != nullptr) {
    return 0;
  }
  const auto age_seconds = static_cast<UnixTime>(http::parse_decimal(util::trim(age)).value_or(0));
  if (const auto* max = http::find_directive(directives, "max-age"); max != nullptr) {
    if (const auto seconds = http::parse_decimal(max->argument)) {
      const auto lifetime = static_cast<UnixTime>(std::min<std::uint64_t>(*seconds, 1ULL << 40));
      return now + std::max<UnixTime>(0, lifetime - age_seconds);
    }
    return now; // an invalid max-age is treated as stale (RFC 9111 §4.2.1)
  }
  if (http::find_directive(directives, "no-cache") != nullptr) {
    return now;
  }
  if (!util::trim(expires).empty()) {
    const auto at = http::parse_http_date(expires);
    if (!at) {
      return now; // `Expires: 0` and other invalid dates mean "already expired"
    }
    const auto base = http::parse_http_date(date).value_or(now);
    return now + std::max<UnixTime>(0, static_cast<UnixTime>(*at - base));
  }
  return 0;
}

std::uint64_t min_free_for(std::uint64_t total, std::optional<std::uint64_t> bytes,
                           std::optional<double> percent) {
  std::optional<std::uint64_t> floor = bytes;
  if (percent) {
    const auto share =
        static_cast<std::uint64_t>(std::llround(static_cast<double>(total) * *percent / 100.0));
    floor = floor ? std::min(*floor, share) : share;
  }
  return floor.value_or(0);
}

std::string client_group(std::string_view address) {
  const std::string text(address);
  unsigned char v6[16] = {};
  if (text.find(':') == std::string::npos || ::inet_pton(AF_INET6, text.c_str(), v6) != 1) {
    return text;
  }
  static constexpr unsigned char k_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  char buffer[INET6_ADDRSTRLEN] = {};
  if (std::equal(std::begin(k_mapped), std::end(k_mapped), v6)) {
    ::inet_ntop(AF_INET, v6 + 12, buffer, sizeof buffer);
    return buffer;
  }
  std::fill(v6 + 8, v6 + 16, 0);
  ::inet_ntop(AF_INET6, v6, buffer, sizeof buffer);
  return std::string(buffer) + "/64";
}

namespace {

// At most this much of a failure's cause is kept (a redirect's Location or an origin's words may be in it).
constexpr std::size_t k_max_failure_detail = 512;

// A failed fetch as the job, the miss row, the event and the log show it: the URL as url::shown() cuts it,
// then the cause cut to k_max_failure_detail, so an ended fill's row stays small whatever the URL.
origin::FetchError bounded(const std::string& job_url, origin::FetchError error) {
  error.detail = util::shorten(error.detail.empty() ? error.message : error.detail, k_max_failure_detail);
  error.message = url::shown(job_url) + ": " + error.detail;
  return error;
}

} // namespace

std::string miss_reason(const origin::FetchError& error) {
  const std::string& detail = error.detail.empty() ? error.message : error.detail;
  return (error.reason == origin::FetchErrc::not_storable ? "not stored: " : "not fetched: ") + detail;
}

struct FillPool::State {
  std::int64_t id = 0;
  std::string key;
  std::string url; // userinfo removed; the origin is asked for url::fetch_url(url)
  bool revalidation = false;
  origin::Validators validators; // of the artifact being revalidated
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
  std::shared_ptr<FillStream> stream; // readers served while it fills (none for a revalidation)
  bool by_operator = false;
  std::string client;                    // client_group() of an automatic fill's reader; empty otherwise
  std::atomic<std::uint64_t> claimed{0}; // bytes the free-space guard counted this fill for
  [[nodiscard]] bool ended() const noexcept {
    return status == JobStatus::completed || status == JobStatus::failed || status == JobStatus::cancelled;
  }
};

FillPool::FillPool(store::BlobStore& store, PoolOptions options)
    : m_store(store), m_options(std::move(options)) {
  auto persisted = m_store.pending_jobs();
  if (!persisted) {
    // The fills stay in cache.db; the next start picks them up.
    m_startup_error = persisted.error();
  }
  m_attempt_salt = m_options.fetch.policy.describe();
  std::vector<std::shared_ptr<State>> abandoned;
  for (auto& pending : persisted.value_or(std::vector<store::PendingJob>{})) {
    auto job = std::make_shared<State>();
    job->stream = std::make_shared<FillStream>();
    job->id = pending.id;
    job->key = std::move(pending.key);
    job->url = std::move(pending.url);
    job->headers = std::move(pending.headers);
    job->created_at = pending.created_at;
    if (m_store.find(job->key) || m_active_by_key.count(job->key) != 0) {
      // Finished just before the last stop, or an interrupted revalidation:
      // the next stale hit asks again.
      m_store.remove_pending_job(job->id);
      origin::FetchRequest leftover;
      leftover.part_path = m_store.part_path(job->key);
      leftover.resume_state_path = m_store.resume_state_path(job->key);
      if (m_active_by_key.count(job->key) == 0) {
        origin::remove_partial(leftover);
      }
      continue;
    }
    m_active_by_key[job->key] = job->id;
    m_jobs.emplace(job->id, job);
    if (pending.crashes >= k_crashes_before_abandon) {
      abandoned.push_back(std::move(job));
    } else {
      m_queue.push_back(job->id);
    }
  }
  // Ended before any worker runs: resuming it would likely kill this server too.
  for (const auto& job : abandoned) {
    const std::string reason = "not fetched: " + std::string(k_abandoned_error);
    m_store.record_fill_failure(job->key, job->url, reason, /*back_off=*/true,
                                attempt_id(job->url, job->headers, m_attempt_salt));
    if (m_options.record_events) {
      m_store.record_event("fill_abandoned", "system", "",
                           url::redact(job->url) + ": " + std::string(k_abandoned_error));
    }
    finish(job, JobStatus::failed, url::redact(job->url) + ": " + std::string(k_abandoned_error),
           "abandoned");
  }
  // A fill stores what it fetches: the origin's "do not store" is checked on the head.
  m_options.fetch.only_storable = true;
  if (!m_options.disk_space && (m_options.min_free_bytes || m_options.min_free_percent)) {
    m_options.disk_space = [dir = m_store.data_dir()] {
      return statvfs_space(dir);
    };
  }
  const unsigned workers = std::max(1U, m_options.workers);
  for (unsigned i = 0; i < workers; ++i) {
    m_workers.emplace_back([this] { worker_loop(false); });
  }
  m_workers.emplace_back([this] { worker_loop(true); });
}

FillPool::~FillPool() {
  shutdown();
}

Expected<Enqueued, EnqueueError> FillPool::enqueue(std::string_view origin_url, origin::Headers headers,
                                                   bool by_operator, std::string_view client) {
  // First: a URL over the limit is never persisted, fetched or recorded, whoever asks (SPEC §9).
  if (auto error = url::check_origin_size(origin_url)) {
    return unexpected(EnqueueError{EnqueueErrc::url_too_long, error->message});
  }
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
  const auto userinfo = url::userinfo_of(origin_url);
  // Credentials are credentials (SPEC §3): an anonymous reader's userinfo or Authorization would fetch
  // private bytes that are then served to everyone, so only --forward-auth or an operator uses them.
  if (!by_operator && !m_options.forward_auth && (userinfo || http::find_field(headers, "Authorization"))) {
    return unexpected(EnqueueError{EnqueueErrc::carries_credentials, "carries credentials"});
  }
  if (userinfo && !http::find_field(headers, "Authorization")) {
    headers.emplace_back("Authorization", "Basic " + util::base64_encode(util::percent_decode(*userinfo)));
  }
  const std::string clean_url = url::strip_userinfo(origin_url);
  const std::string group = by_operator ? std::string() : client_group(client);

  std::unique_lock lock(m_mutex);
  if (m_stopping) {
    return unexpected(EnqueueError{EnqueueErrc::shutting_down, "the server is shutting down"});
  }
  if (auto it = m_active_by_key.find(*key); it != m_active_by_key.end()) {
    const auto& joined = m_jobs.at(it->second);
    bool moved = false;
    if (by_operator && joined->status == JobStatus::queued && !joined->by_operator &&
        std::erase(m_queue, joined->id) > 0) {
      // The operator wants it: a queued automatic fill of the key moves to the operator's queue.
      left_queue(*joined);
      joined->by_operator = true;
      joined->client.clear();
      m_operator_queue.push_back(joined->id);
      moved = true;
    }
    Enqueued result{snapshot(*joined), true};
    lock.unlock();
    if (moved) {
      m_work.notify_all();
    }
    return result;
  }
  if (m_store.find(*key)) {
    return unexpected(
        EnqueueError{EnqueueErrc::already_cached,
                     url::shown(clean_url) + " is already cached (delete it to fetch it again)"});
  }
  if (by_operator) {
    m_store.clear_backoff(*key);
  } else if (auto backoff = m_store.backoff(*key, now());
             backoff && (backoff->attempt.empty() ||
                         backoff->attempt == attempt_id(clean_url, headers, m_attempt_salt))) {
    return unexpected(EnqueueError{EnqueueErrc::backing_off, backoff->reason, backoff->retry_after});
  }
  if (m_store.is_full()) {
    return unexpected(EnqueueError{EnqueueErrc::cache_full, m_store.full_reason()});
  }
  if (!by_operator) {
    const std::size_t queued = m_queue.size() + m_operator_queue.size();
    if (m_options.queue_max != 0 && queued >= m_options.queue_max) {
      return unexpected(EnqueueError{
          EnqueueErrc::queue_full, "the fill queue is full (" + std::to_string(queued) +
                                       " queued; --queue-max " + std::to_string(m_options.queue_max) + ")"});
    }
    const auto mine = group.empty() ? m_queued_by_client.end() : m_queued_by_client.find(group);
    if (m_options.queue_max_per_client != 0 && mine != m_queued_by_client.end() &&
        mine->second >= m_options.queue_max_per_client) {
      return unexpected(
          EnqueueError{EnqueueErrc::queue_full, "this client has " + std::to_string(mine->second) +
                                                    " fills queued (--queue-max-per-client " +
                                                    std::to_string(m_options.queue_max_per_client) + ")"});
    }
    if (auto low = disk_refusal(0, nullptr)) {
      return unexpected(EnqueueError{EnqueueErrc::low_disk_space, *low});
    }
  }
  auto job = std::make_shared<State>();
  job->key = *key;
  job->url = clean_url;
  job->headers = std::move(headers);
  job->created_at = now();
  job->stream = std::make_shared<FillStream>();
  job->by_operator = by_operator;
  job->client = group;
  job->id = m_store.add_pending_job(job->key, job->url, job->headers);
  m_active_by_key[job->key] = job->id;
  if (by_operator) {
    m_operator_queue.push_back(job->id);
  } else {
    m_queue.push_back(job->id);
    if (!group.empty()) {
      ++m_queued_by_client[group];
    }
  }
  m_jobs.emplace(job->id, job);
  Enqueued result{snapshot(*job), false};
  lock.unlock();
  m_work.notify_all(); // the operator lane takes only operator fills: wake every thread that could
  m_changed.notify_all();
  return result;
}

Expected<Enqueued, EnqueueError> FillPool::revalidate(const Artifact& artifact, std::string_view request_url) {
  std::string origin_url(request_url.empty() ? std::string_view(artifact.raw_url) : request_url);
  if (origin_url.empty()) {
    // An artifact from the store's index carries no URL (it is not kept in memory); callers off the
    // read path may pass one as it is: its row has the URL. The read path always passes the request's.
    const auto row = m_store.describe(artifact.key);
    origin_url = row && *row ? (*row)->raw_url : std::string();
  }
  if (auto refused = m_options.fetch.policy.check_url(origin_url)) {
    return unexpected(EnqueueError{EnqueueErrc::refused_origin, *refused});
  }
  const auto key = url::key_id(origin_url, m_options.key_options);
  if (!key || *key != artifact.key) {
    return unexpected(EnqueueError{EnqueueErrc::bad_url, "the URL does not name this artifact"});
  }
  origin::Headers headers;
  if (auto userinfo = url::userinfo_of(origin_url); userinfo && m_options.forward_auth) {
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
  if (auto it = m_revalidation_backoff.find(*key); it != m_revalidation_backoff.end() && it->second.after > now()) {
    return unexpected(EnqueueError{EnqueueErrc::backing_off, it->second.reason, it->second.after});
  }
  const auto current = m_store.find(*key); // the validators as stored now, not as the caller saw them
  if (!current) {
    return unexpected(EnqueueError{EnqueueErrc::not_cached, url::shown(clean_url) + " is not cached"});
  }
  auto job = std::make_shared<State>();
  job->key = *key;
  job->url = clean_url;
  job->headers = std::move(headers);
  job->revalidation = true;
  job->validators = {current->etag, current->last_modified};
  job->created_at = now();
  job->id = m_store.add_pending_job(job->key, job->url, job->headers);
  m_active_by_key[job->key] = job->id;
  m_queue.push_back(job->id);
  m_jobs.emplace(job->id, job);
  Enqueued result{snapshot(*job), false};
  lock.unlock();
  m_work.notify_all();
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
  if (std::erase(m_queue, id) + std::erase(m_operator_queue, id) > 0) {
    left_queue(*job);
  }
  lock.unlock();
  origin::FetchRequest leftover; // bytes a previous run left
  leftover.part_path = m_store.part_path(job->key);
  leftover.resume_state_path = m_store.resume_state_path(job->key);
  origin::remove_partial(leftover);
  finish(job, JobStatus::cancelled, {}, {});
  return true;
}

std::size_t FillPool::clear_finished() {
  std::size_t cleared = 0;
  {
    std::lock_guard lock(m_mutex);
    cleared = std::erase_if(m_jobs, [](const auto& entry) {
      const JobStatus s = entry.second->status;
      return s == JobStatus::completed || s == JobStatus::failed || s == JobStatus::cancelled;
    });
    m_ended = 0;
  }
  // Those in memory are the newest of the history: the count is the history's when it can be read.
  const auto history = m_store.clear_finished_jobs();
  return history ? std::max<std::size_t>(cleared, static_cast<std::size_t>(*history)) : cleared;
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
  return m_queue.size() + m_operator_queue.size();
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

std::shared_ptr<FillPool::State> FillPool::take_queued(bool operator_lane) {
  std::deque<std::int64_t>& from = !m_operator_queue.empty() ? m_operator_queue : m_queue;
  if (from.empty() || (operator_lane && &from != &m_operator_queue)) {
    return nullptr;
  }
  auto job = m_jobs.at(from.front());
  from.pop_front();
  left_queue(*job);
  return job;
}

void FillPool::left_queue(const State& job) {
  if (job.by_operator || job.client.empty()) {
    return;
  }
  if (const auto it = m_queued_by_client.find(job.client);
      it != m_queued_by_client.end() && --it->second == 0) {
    m_queued_by_client.erase(it);
  }
}

std::optional<std::string> FillPool::disk_refusal(std::uint64_t more, const State* except) const {
  if (!m_options.disk_space) {
    return std::nullopt;
  }
  const auto space = m_options.disk_space();
  if (!space) {
    return std::nullopt; // cannot tell: the write itself will say when the disk is full
  }
  const std::uint64_t floor =
      min_free_for(space->total, m_options.min_free_bytes, m_options.min_free_percent);
  // Bytes other running fills were counted for and have not written yet are as good as gone.
  std::uint64_t promised = 0;
  for (const auto& [id, job] : m_jobs) {
    if (job.get() != except && job->status == JobStatus::running) {
      const std::uint64_t claimed = job->claimed.load();
      const std::uint64_t done = job->done.load();
      promised += claimed > done ? claimed - done : 0;
    }
  }
  const std::uint64_t available = space->available > promised ? space->available - promised : 0;
  if (available >= floor && available - floor >= more) {
    return std::nullopt;
  }
  return "not enough free space: " + util::format_size(available) + " free on the data dir's filesystem" +
         (more > 0 ? ", " + util::format_size(more) + " needed," : "") + " and --min-free keeps " +
         util::format_size(floor);
}

void FillPool::worker_loop(bool operator_lane) {
  for (;;) {
    std::shared_ptr<State> job;
    {
      std::unique_lock lock(m_mutex);
      m_work.wait(lock, [&] { return m_stopping || (job = take_queued(operator_lane)) != nullptr; });
      if (m_stopping) {
        return;
      }
      job->status = JobStatus::running;
      job->started_at = now();
      ++m_running;
    }
    if (job->stream) {
      job->stream->started();
    }
    m_changed.notify_all();
    // Before the origin is asked: a death from here on counts against this fill at the next start.
    // When it cannot be written, a crash is not counted: no worse than before.
    (void)m_store.mark_job_running(job->id);
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
  // One parse: the origin is asked for the path the key names, with the original query.
  request.url = url::fetch_url(job->url).value_or(job->url);
  request.headers = job->headers;
  request.part_path = m_store.part_path(job->key);
  request.resume_state_path = m_store.resume_state_path(job->key);
  request.cancel = &job->stop;
  request.observer = job->stream.get();
  if (job->revalidation) {
    origin::remove_partial(request); // a conditional request starts from nothing
    request.conditional = job->validators;
  }
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
  std::string disk_refused; // why the free-space guard stopped the fill, when it did
  request.may_store = [&](std::uint64_t size) {
    if (size > job->claimed.load() && m_options.disk_space) {
      // A declared size is checked once; a growing one again each time it passes what was counted.
      const std::uint64_t on_disk = job->done.load();
      std::lock_guard lock(m_mutex);
      if (auto low = disk_refusal(size > on_disk ? size - on_disk : 0, job.get())) {
        disk_refused = *low;
        return false;
      }
      job->claimed = size + k_disk_check_step;
    }
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
  if (!result && result.error().reason == origin::FetchErrc::cache_full && !disk_refused.empty()) {
    result = unexpected(origin::FetchError{origin::FetchErrc::cache_full, 0,
                                           url::shown(job->url) + ": " + disk_refused, disk_refused});
  }
  if (!result) {
    result = unexpected(bounded(job->url, std::move(result.error())));
  }
  const UnixTime fetched_at = now();
  if (result && result->not_modified) {
    m_store.release(reserved);
    const auto stored = m_store.find(job->key);
    if (!stored) {
      finish(job, JobStatus::failed, url::shown(job->url) + ": deleted while it was revalidated", "io");
      return;
    }
    store::Freshness freshness;
    freshness.etag = updated(result->etag, stored->etag);
    freshness.last_modified = updated(result->last_modified, stored->last_modified);
    freshness.cache_control = updated(result->cache_control, stored->cache_control);
    freshness.expires = updated(result->expires, stored->expires);
    freshness.fresh_until = fresh_until(freshness.cache_control, freshness.expires, result->date, result->age,
                                        fetched_at, m_options.max_age);
    if (freshness.fresh_until == 0) {
      // It had a finite lifetime, so a client may hold bytes of a version it replaced: never immutable.
      freshness.fresh_until = k_changed_lifetime;
    }
    auto refreshed = m_store.refresh(job->key, freshness);
    if (!refreshed) {
      finish(job, JobStatus::failed, refreshed.error(), "io");
      return;
    }
    {
      std::lock_guard lock(m_mutex);
      m_revalidation_backoff.erase(job->key);
    }
    finish(job, JobStatus::completed, {}, {});
    return;
  }
  if (result) {
    store::NewArtifact artifact;
    artifact.key = job->key;
    artifact.url = url::normalize_key(job->url, m_options.key_options).value_or(job->url);
    artifact.raw_url = job->url;
    artifact.content_type = result->content_type;
    artifact.size = result->size;
    artifact.sha256 = result->sha256;
    artifact.etag = result->etag;
    artifact.last_modified = result->last_modified;
    artifact.cache_control = result->cache_control;
    artifact.expires = result->expires;
    artifact.content_encoding = result->content_encoding;
    artifact.content_disposition = result->content_disposition;
    artifact.fresh_until = fresh_until(result->cache_control, result->expires, result->date, result->age,
                                       fetched_at, m_options.max_age);
    bool cut_before = false;
    {
      std::lock_guard lock(m_mutex);
      cut_before = m_cut_readers.erase(job->key) > 0;
    }
    // Readers may hold bytes of another version than these: of an earlier generation of this fill,
    // of an earlier fill that ended without a blob (unless this one continued its part unchanged),
    // or of the artifact a revalidation replaces. Such an artifact is never immutable, so a bare
    // Range (wget's retry, `wget -c`) gets the whole body instead of a splice.
    const bool continued = result->resumed_from > 0 && job->stream && job->stream->view().generation == 0;
    if (artifact.fresh_until == 0 &&
        (job->revalidation || (job->stream && job->stream->restarted_under_readers()) ||
         (cut_before && !continued))) {
      artifact.fresh_until = k_changed_lifetime;
    }
    auto committed = m_store.commit(artifact);
    m_store.release(reserved);
    if (!committed) {
      origin::remove_partial(request);
      origin::FetchError error{origin::FetchErrc::io, 0, committed.error(), committed.error()};
      record_failure(*job, error);
      finish(job, JobStatus::failed, committed.error(), "io");
      return;
    }
    if (job->revalidation) {
      std::lock_guard lock(m_mutex);
      m_revalidation_backoff.erase(job->key);
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
    m_store.mark_job_stopped(job->id); // a clean stop: not a crash, and the count in a row starts over
    if (job->stream) {
      job->stream->finish(false); // readers are cut; the fill resumes on the next start
    }
    return; // shutdown: the pending row and the .part bytes stay for the next start
  }
  if (result.error().reason == origin::FetchErrc::cancelled) {
    origin::remove_partial(request);
    finish(job, JobStatus::cancelled, {}, {});
    return;
  }
  // A transfer that broke keeps its validator-guarded part for the next
  // attempt (SPEC §3 "At rest"): it resumes only if the origin still has the
  // same representation. Anything else has nothing worth keeping.
  const bool out_of_space = result.error().reason == origin::FetchErrc::io && m_store.disk_full(/*fresh=*/true);
  if ((!keeps_part(result.error().reason) && !out_of_space) || job->revalidation) {
    origin::remove_partial(request);
  }
  // Recorded before the job ends, so no enqueue can slip in between and skip the back-off.
  record_failure(*job, result.error());
  finish(job, JobStatus::failed, result.error().message, std::string(origin::to_string(result.error().reason)));
}

void FillPool::record_failure(const State& job, const origin::FetchError& error) {
  const std::string reason = miss_reason(error);
  if (job.revalidation) {
    // The stale artifact keeps serving; only the pool remembers not to ask again at once.
    std::lock_guard lock(m_mutex);
    Retry& retry = m_revalidation_backoff[job.key];
    retry.failures = backs_off(error.reason) ? retry.failures + 1 : retry.failures;
    retry.after = retry.failures == 0 ? 0 : now() + store::backoff_delay(retry.failures).count();
    retry.reason = reason;
  } else {
    m_store.record_fill_failure(job.key, job.url, reason, backs_off(error.reason),
                                attempt_id(job.url, job.headers, m_attempt_salt));
  }
  if (m_options.record_events) {
    const std::string what = job.revalidation ? "revalidation of " : "";
    m_store.record_event(is_refusal(error.reason) ? "fill_refused" : "fill_failed", "system", "",
                         what + url::shown(job.url) + ": " + reason);
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
    if (status != JobStatus::completed && job->stream && job->stream->served()) {
      if (m_cut_readers.size() >= k_cut_readers_kept) {
        m_cut_readers.erase(m_cut_readers.begin()); // bounded: forgetting one costs only its protection
      }
      m_cut_readers.insert(job->key);
    }
    done = snapshot(*job);
    // Into the history before anyone can see the job ended, so a listing of the pool and then of the
    // history never misses it; memory keeps only the newest ended jobs.
    m_store.record_finished_job(done);
    ++m_ended;
    for (auto it = m_jobs.begin(); m_ended > k_ended_in_memory && it != m_jobs.end();) {
      if (it->second->ended() && it->second != job) {
        it = m_jobs.erase(it);
        --m_ended;
      } else {
        ++it;
      }
    }
  }
  if (job->stream) {
    // After the commit: a reader cut now has got only bytes that are in the blob.
    job->stream->finish(status == JobStatus::completed);
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
  j.attached = job.stream ? job.stream->attached() : 0;
  return j;
}

std::shared_ptr<FillStream> FillPool::stream(const std::string& key, bool* can_start) const {
  std::lock_guard lock(m_mutex);
  const auto it = m_active_by_key.find(key);
  if (it == m_active_by_key.end()) {
    return nullptr;
  }
  const auto& job = m_jobs.at(it->second);
  if (can_start != nullptr) {
    *can_start = job->status == JobStatus::running ||
                 (job->status == JobStatus::queued && m_running + m_queue.size() <= std::max(1U, m_options.workers));
  }
  return job->stream;
}

std::uint64_t FillPool::attached() const {
  std::lock_guard lock(m_mutex);
  std::uint64_t n = 0;
  for (const auto& [key, id] : m_active_by_key) {
    const auto& job = m_jobs.at(id);
    n += job->stream ? job->stream->attached() : 0;
  }
  return n;
}

// --- FillStream -------------------------------------------------------------

FillStream::FillStream() : m_nonce(digest::random_hex(8)) {}

FillStream::~FillStream() {
  if (m_fd >= 0) {
    ::close(m_fd);
  }
}

FillStream::View FillStream::view() const {
  std::lock_guard lock(m_mutex);
  return m_view;
}

std::pair<int, FillStream::View> FillStream::open() const {
  std::lock_guard lock(m_mutex);
  const int fd = m_fd >= 0 ? ::fcntl(m_fd, F_DUPFD_CLOEXEC, 0) : -1;
  return {fd, m_view};
}

void FillStream::wait(std::uint64_t seen, std::function<void()> wake) {
  std::unique_lock lock(m_mutex);
  if (m_view.version != seen) {
    lock.unlock();
    wake();
    return;
  }
  m_wakers.push_back(std::move(wake));
}

void FillStream::changed(std::unique_lock<std::mutex>& lock) {
  ++m_view.version;
  std::vector<std::function<void()>> wakers;
  wakers.swap(m_wakers);
  lock.unlock();
  for (auto& wake : wakers) {
    wake();
  }
}

void FillStream::started() {
  std::unique_lock lock(m_mutex);
  if (m_view.phase == Phase::queued) {
    m_view.phase = Phase::waiting;
  }
  changed(lock);
}

void FillStream::finish(bool ok) {
  std::unique_lock lock(m_mutex);
  m_view.phase = ok ? Phase::done : Phase::failed;
  if (ok) {
    m_view.available = m_view.total;
  }
  // Readers hold their own descriptors; an ended job must not keep the file (or a deleted blob) open.
  if (m_fd >= 0) {
    ::close(m_fd);
    m_fd = -1;
  }
  changed(lock);
}

void FillStream::opened(int fd) {
  std::unique_lock lock(m_mutex);
  if (m_fd >= 0) {
    ::close(m_fd);
  }
  m_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

bool FillStream::restarted_under_readers() const {
  std::lock_guard lock(m_mutex);
  return m_served.load() && m_view.generation > 0;
}

void FillStream::restarting() {
  std::unique_lock lock(m_mutex);
  // The origin's ETag of the bytes dropped: if the next attempt brings the same tag, its bytes are
  // not trusted to be the same (why else restart?), so that generation gets a derived validator.
  if (const auto etag = http::find_field(m_view.headers, "ETag")) {
    m_earlier_etags.emplace_back(util::trim(*etag));
  }
  // A new generation: readers of the old one are cut before any byte of it that may differ is sent.
  ++m_view.generation;
  m_view.etag.clear();
  m_view.phase = Phase::waiting;
  m_view.total = 0;
  m_view.available = 0;
  m_view.headers.clear();
  changed(lock);
}

void FillStream::head(std::uint64_t total, const origin::Headers& kept) {
  std::unique_lock lock(m_mutex);
  m_view.total = total;
  m_view.headers = kept;
  // The validator of this generation's bytes: a resume of the same generation (a 206 the fetcher
  // checked against the first response's validator) keeps it.
  const std::string origin_etag(util::trim(http::find_field(kept, "ETag").value_or("")));
  const bool trusted =
      http::is_strong_etag(origin_etag) &&
      std::find(m_earlier_etags.begin(), m_earlier_etags.end(), origin_etag) == m_earlier_etags.end();
  m_view.etag =
      trusted ? origin_etag : "\"wc-fill-" + m_nonce + "-" + std::to_string(m_view.generation) + "\"";
  // A fill that declared no length is not streamed: a reader could not tell its end from a cut.
  m_view.phase = total > 0 ? Phase::streaming : Phase::unstreamable;
  changed(lock);
}

void FillStream::written(std::uint64_t size) {
  std::unique_lock lock(m_mutex);
  if (size == m_view.available) {
    return;
  }
  m_view.available = size;
  changed(lock);
}

} // namespace withcache::fills
