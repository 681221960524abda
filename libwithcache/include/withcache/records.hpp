#pragma once

/**
 * @file
 * The records the cache-host keeps and the JSON API carries (docs/api.md):
 * artifacts, misses, events, fill jobs and store-wide numbers. Plain data with
 * no behaviour, shared by the server (store, fill pool, API) and the client
 * (withcache::client::Api), so both sides read and write one shape.
 */

#include <cstdint>
#include <string>
#include <string_view>

#include "withcache/util/time.hpp"

namespace withcache {

using util::UnixTime;

/** One cached artifact. */
struct Artifact {
  std::string key;          ///< key id: SHA-256 hex of `url`
  std::string url;          ///< the normalised URL (the cache key)
  std::string raw_url;      ///< the last raw URL it was fetched from, userinfo removed (not in the API)
  std::uint64_t size = 0;   ///< bytes in blobs/<key>
  std::string sha256;       ///< hex SHA-256 of those bytes
  std::string content_type; ///< the origin's Content-Type, or empty
  UnixTime fetched_at = 0;
  std::uint64_t hits = 0;   ///< GETs served
  std::uint64_t misses = 0; ///< misses counted before it was cached
  // The origin's own headers, as it sent them with the stored bytes (empty when absent).
  std::string etag{};
  std::string last_modified{};
  std::string cache_control{};
  std::string expires{};
  std::string content_encoding{};    ///< the bytes are stored as delivered: send it back with them
  std::string content_disposition{}; ///< send it back with the bytes; `attachment` when empty
  /** Revalidate with the origin once this time has passed; 0 = never (no explicit lifetime, or `immutable`). */
  UnixTime fresh_until = 0;
};

/** A URL that was asked for and is not cached. */
struct Miss {
  std::string key;
  std::string url; ///< the last raw URL asked for, userinfo removed
  std::uint64_t count = 0;
  UnixTime first_seen = 0;
  UnixTime last_seen = 0;
  /**
   * Why its last fill failed or was refused, as it reads after
   * "cache miss (recorded; " (`not stored: origin marked it no-store`,
   * `not fetched: origin answered HTTP 404`); empty when none did.
   */
  std::string last_reason{};
  std::uint32_t failures = 0; ///< failed or refused fills in a row (the back-off doubles with each)
  UnixTime retry_after = 0;   ///< no automatic fill before this time (the negative cache); 0 = none
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

/** Store-wide numbers. */
struct Totals {
  std::uint64_t artifacts = 0;
  std::uint64_t stored_bytes = 0;
  std::uint64_t max_bytes = 0; ///< 0 = unlimited
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;         ///< all misses counted, cached since or not
  std::uint64_t pending_misses = 0; ///< URLs with a miss row (not cached)
};

/** `GET /api/v1/stats`: the totals plus the serving counters. */
struct Stats {
  std::uint64_t artifacts = 0;
  std::uint64_t stored_bytes = 0;
  std::uint64_t capacity = 0; ///< 0 = unlimited
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t bytes_served = 0;
  std::uint64_t bytes_fetched = 0;
  std::uint64_t queue_depth = 0;
};

/** A fill's state: `queued → running → completed | failed | cancelled`. */
enum class JobStatus { queued, running, completed, failed, cancelled };

/** The status as a word: `queued`, `running`, `completed`, `failed`, `cancelled`. */
constexpr std::string_view to_string(JobStatus status) {
  switch (status) {
  case JobStatus::queued:
    return "queued";
  case JobStatus::running:
    return "running";
  case JobStatus::completed:
    return "completed";
  case JobStatus::failed:
    return "failed";
  case JobStatus::cancelled:
    return "cancelled";
  }
  return "failed";
}

/** The status named by `word`; `failed` for a word that names none. */
constexpr JobStatus job_status_from(std::string_view word) {
  for (const JobStatus s :
       {JobStatus::queued, JobStatus::running, JobStatus::completed, JobStatus::failed, JobStatus::cancelled}) {
    if (to_string(s) == word) {
      return s;
    }
  }
  return JobStatus::failed;
}

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
  std::string error_reason;      ///< a short word (`http_status`, `timeout`, …) when failed
  UnixTime created_at = 0;
  UnixTime started_at = 0;  ///< 0 until running
  UnixTime finished_at = 0; ///< 0 until ended
  std::uint32_t attached = 0; ///< clients being served the bytes of this running fill
  [[nodiscard]] bool ended() const noexcept {
    return status == JobStatus::completed || status == JobStatus::failed || status == JobStatus::cancelled;
  }
};

} // namespace withcache
