#pragma once

/**
 * @file
 * withcache::api_client — the operator JSON API (docs/api.md) from C++, for
 * `withcache-client ls|misses|fetch|rm|stats`. Each call is one HTTP request
 * with `Authorization: Bearer <token>` when a token is given.
 */

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "withcache/expected.hpp"
#include "withcache/json.hpp"

namespace withcache::api_client {

/** Why an API call failed. */
enum class ApiErrc {
  unreachable,  ///< no answer from the server
  unauthorized, ///< 401/403: a token or session is needed (or wrong)
  not_found,    ///< 404
  refused,      ///< 400/409: the server said no (message says why)
  bad_response, ///< not the JSON we expect
};

struct ApiError {
  ApiErrc code;
  std::string message; ///< one line
};

class Api {
 public:
  Api(std::string server, std::string token, std::chrono::seconds timeout = std::chrono::seconds(30));

  /** GET a list route (`artifacts`, `misses`, `downloads`, `events`) with paging and a filter. */
  Expected<json::Value, ApiError> list(const std::string& what, std::uint64_t offset, std::uint64_t limit,
                                       const std::string& filter) const;
  /** GET /api/v1/stats. */
  Expected<json::Value, ApiError> stats() const;
  /** POST /api/v1/downloads; the job on success. */
  Expected<json::Value, ApiError>
  fetch(const std::string& url, const std::vector<std::pair<std::string, std::string>>& headers) const;
  /** DELETE /api/v1/artifacts/{key}. */
  Expected<json::Value, ApiError> remove(const std::string& key) const;

 private:
  Expected<json::Value, ApiError> call(const std::string& method, const std::string& path,
                                       const std::string& body) const;
  std::string m_base;
  std::string m_token;
  std::chrono::seconds m_timeout;
};

} // namespace withcache::api_client
