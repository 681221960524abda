#include "withcache/client/api.hpp"

#include "http/http.hpp"
#include "origin/http_client.hpp"
#include "withcache/url.hpp"
#include "withcache/util/encoding.hpp"
#include "withcache/version.hpp"
#include "json/json.hpp"

namespace withcache::client {
namespace {

// The largest API answer kept: a page of 1 000 rows of 8 KiB URLs, with room to spare. A server that
// sends more is not a withcache.
constexpr std::size_t k_max_api_response = 32 << 20;

ApiError error(ApiErrc code, std::string message) {
  return ApiError{code, std::move(message)};
}

std::string query_string(const ApiListQuery& query) {
  return "?offset=" + std::to_string(query.offset) + "&limit=" + std::to_string(query.limit) +
         "&q=" + util::percent_encode(query.filter);
}

Expected<json::Json, ApiError> object_of(const std::string& body) {
  auto value = json::parse(body);
  if (!value || !value->is_object()) {
    return unexpected(error(ApiErrc::bad_response, "the server did not answer a JSON object"));
  }
  return std::move(*value);
}

} // namespace

std::optional<std::pair<std::string, std::string>> parse_header_line(std::string_view line) {
  return http::parse_header_line(line);
}

Api::Api(std::string server, std::string token, std::chrono::milliseconds timeout)
    : m_base(url::cache_base(server)), m_token(std::move(token)), m_timeout(timeout) {}

Expected<std::string, ApiError> Api::call(const std::string& method, const std::string& path,
                                          const std::string& body) const {
  try {
    origin::Headers headers = {{"User-Agent", k_product}, {"Accept", "application/json"}};
    if (!m_token.empty()) {
      headers.emplace_back("Authorization", "Bearer " + m_token);
    }
    if (method == "POST") {
      headers.emplace_back("Content-Type", "application/json");
    }
    auto result = origin::request_small(method, m_base + path, headers, body, m_timeout, k_max_api_response);
    if (!result) {
      return unexpected(error(result.error().code == origin::WireErrc::malformed ? ApiErrc::bad_response
                                                                                 : ApiErrc::unreachable,
                              "cannot reach " + m_base + ": " + result.error().message));
    }
    const int status = result->head.status;
    std::string message = "HTTP " + std::to_string(status);
    if (auto value = json::parse(result->body); value && value->is_object()) {
      if (const auto it = value->find("error"); it != value->end() && it->is_string()) {
        message = it->get<std::string>();
      }
    }
    switch (status) {
    case 200:
    case 202:
      return std::move(result->body);
    case 401:
    case 403:
      return unexpected(error(ApiErrc::unauthorized, message + " (set --token or WITHCACHE_API_TOKEN)"));
    case 404:
      return unexpected(error(ApiErrc::not_found, message));
    default:
      return unexpected(error(status >= 500 ? ApiErrc::bad_response : ApiErrc::refused, message));
    }
  } catch (const std::exception& e) {
    return unexpected(error(ApiErrc::unreachable, "cannot reach " + m_base + ": " + e.what()));
  }
}

template <class T>
Expected<ApiPage<T>, ApiError> Api::list(const char* what, const ApiListQuery& query) const {
  WITHCACHE_TRY_ASSIGN(std::string body, call("GET", std::string("/api/v1/") + what + query_string(query), ""));
  WITHCACHE_TRY_ASSIGN(const json::Json object, object_of(body));
  const auto items = object.find("items");
  const auto total = object.find("total");
  if (items == object.end() || !items->is_array() || total == object.end() || !total->is_number_unsigned()) {
    return unexpected(error(ApiErrc::bad_response, "the server's listing has no items and total"));
  }
  ApiPage<T> page;
  for (const auto& item : *items) {
    T record;
    from_json(item, record);
    page.items.push_back(std::move(record));
  }
  page.total = total->get<std::uint64_t>();
  page.json = std::move(body);
  return page;
}

Expected<ApiPage<Artifact>, ApiError> Api::artifacts(const ApiListQuery& query) const {
  return list<Artifact>("artifacts", query);
}

Expected<ApiPage<Miss>, ApiError> Api::misses(const ApiListQuery& query) const {
  return list<Miss>("misses", query);
}

Expected<ApiPage<Job>, ApiError> Api::downloads(const ApiListQuery& query) const {
  return list<Job>("downloads", query);
}

Expected<ApiPage<Event>, ApiError> Api::events(const ApiListQuery& query) const {
  return list<Event>("events", query);
}

Expected<ApiReply<Stats>, ApiError> Api::stats() const {
  WITHCACHE_TRY_ASSIGN(std::string body, call("GET", "/api/v1/stats", ""));
  WITHCACHE_TRY_ASSIGN(const json::Json object, object_of(body));
  ApiReply<Stats> reply;
  from_json(object, reply.value);
  reply.json = std::move(body);
  return reply;
}

Expected<ApiReply<Job>, ApiError>
Api::fetch(const std::string& origin_url, const std::vector<std::pair<std::string, std::string>>& headers) const {
  json::Json request = {{"url", origin_url}, {"headers", json::Json::object()}};
  for (const auto& [name, value] : headers) {
    request["headers"][name] = value;
  }
  WITHCACHE_TRY_ASSIGN(std::string body, call("POST", "/api/v1/downloads",
                                                json::dump(request)));
  WITHCACHE_TRY_ASSIGN(const json::Json object, object_of(body));
  ApiReply<Job> reply;
  from_json(object, reply.value);
  reply.json = std::move(body);
  return reply;
}

Expected<ApiReply<std::string>, ApiError> Api::remove(const std::string& key) const {
  WITHCACHE_TRY_ASSIGN(std::string body, call("DELETE", "/api/v1/artifacts/" + key, ""));
  ApiReply<std::string> reply{key, std::move(body)};
  return reply;
}

} // namespace withcache::client
