#pragma once

/**
 * @file
 * withcache::client, `Api`: the operator JSON API (docs/api.md) from C++, for
 * `withcache-client ls|misses|fetch|rm|stats`. Each call is one HTTP request,
 * with `Authorization: Bearer <token>` when a token is given, bounded by the
 * timeout. Results are the records of withcache/records.hpp; the raw JSON text
 * is kept for `--json`. Thread-safe (each call has its own connection); never throws.
 */

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "withcache/expected.hpp"
#include "withcache/records.hpp"

namespace withcache::client {

/** Why an API call failed. */
enum class ApiErrc {
  unreachable,  ///< no answer from the server within the timeout
  unauthorized, ///< 401/403: a token or session is needed (or wrong)
  not_found,    ///< 404
  refused,      ///< 400/409: the server said no (message says why)
  bad_response, ///< not the JSON we expect, or a 5xx
};

/** A failed API call: a reason and one line (the server's own `error` when it sent one). */
struct ApiError {
  ApiErrc code = ApiErrc::bad_response;
  std::string message;
};

/** One page of a listing, as the server sent it. */
template <class T> struct ApiPage {
  std::vector<T> items;
  std::uint64_t total = 0;
  std::string json; ///< the response body
};

/** A JSON object the server answered (a job, `{"deleted": key}`, the stats). */
template <class T> struct ApiReply {
  T value;
  std::string json; ///< the response body
};

/** Paging and filtering of a listing. */
struct ApiListQuery {
  std::uint64_t offset = 0;
  std::uint64_t limit = 100;
  std::string filter;
};

/**
 * Parses a request header given as `Name: Value` (as `withcache-client fetch -H` takes it).
 * @return the name and the trimmed value, or nothing when the name is not a
 *         token or the value holds CR, LF or NUL.
 */
std::optional<std::pair<std::string, std::string>> parse_header_line(std::string_view line);

class Api {
 public:
  /** `server` as cache_base() takes it; `token` empty for none; `timeout` bounds connect and every read. */
  Api(std::string server, std::string token, std::chrono::milliseconds timeout = std::chrono::seconds(30));

  /** GET /api/v1/artifacts. */
  [[nodiscard]] Expected<ApiPage<Artifact>, ApiError> artifacts(const ApiListQuery& query) const;
  /** GET /api/v1/misses. */
  [[nodiscard]] Expected<ApiPage<Miss>, ApiError> misses(const ApiListQuery& query) const;
  /** GET /api/v1/downloads. */
  [[nodiscard]] Expected<ApiPage<Job>, ApiError> downloads(const ApiListQuery& query) const;
  /** GET /api/v1/events. */
  [[nodiscard]] Expected<ApiPage<Event>, ApiError> events(const ApiListQuery& query) const;
  /** GET /api/v1/stats. */
  [[nodiscard]] Expected<ApiReply<Stats>, ApiError> stats() const;
  /** POST /api/v1/downloads: queues a fill; the job on success. */
  [[nodiscard]] Expected<ApiReply<Job>, ApiError>
  fetch(const std::string& url, const std::vector<std::pair<std::string, std::string>>& headers) const;
  /** DELETE /api/v1/artifacts/{key}; the deleted key on success. */
  [[nodiscard]] Expected<ApiReply<std::string>, ApiError> remove(const std::string& key) const;

 private:
  [[nodiscard]] Expected<std::string, ApiError> call(const std::string& method, const std::string& path,
                                                     const std::string& body) const;
  template <class T>
  [[nodiscard]] Expected<ApiPage<T>, ApiError> list(const char* what, const ApiListQuery& query) const;

  std::string m_base;
  std::string m_token;
  std::chrono::milliseconds m_timeout;
};

} // namespace withcache::client
