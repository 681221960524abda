#include "withcache/api_client.hpp"

#include <httplib.h>

#include "withcache/url.hpp"
#include "withcache/version.hpp"

namespace withcache::api_client {

Api::Api(std::string server, std::string token, std::chrono::seconds timeout)
    : m_base(url::cache_base(server)), m_token(std::move(token)), m_timeout(timeout) {}

Expected<json::Value, ApiError> Api::call(const std::string& method, const std::string& path,
                                          const std::string& body) const {
  httplib::Client http(m_base);
  http.set_connection_timeout(std::chrono::seconds(5));
  http.set_read_timeout(m_timeout);
  http.enable_server_certificate_verification(true);
  httplib::Headers headers = {{"User-Agent", k_product}, {"Accept", "application/json"}};
  if (!m_token.empty()) {
    headers.emplace("Authorization", "Bearer " + m_token);
  }
  httplib::Result result = method == "GET"    ? http.Get(path, headers)
                           : method == "POST" ? http.Post(path, headers, body, "application/json")
                                              : http.Delete(path, headers);
  if (!result) {
    return unexpected(
        ApiError{ApiErrc::unreachable, "cannot reach " + m_base + ": " + httplib::to_string(result.error())});
  }
  auto value = json::parse(result->body);
  const auto* object = value ? value->as_object() : nullptr;
  std::string message = "HTTP " + std::to_string(result->status);
  if (object != nullptr && object->count("error") != 0 && object->at("error").as_string() != nullptr) {
    message = *object->at("error").as_string();
  }
  switch (result->status) {
  case 200:
  case 202:
    if (!value) {
      return unexpected(ApiError{ApiErrc::bad_response, "the server did not answer JSON: " + value.error()});
    }
    return *value;
  case 401:
  case 403:
    return unexpected(ApiError{ApiErrc::unauthorized, message + " (set --token or WITHCACHE_API_TOKEN)"});
  case 404:
    return unexpected(ApiError{ApiErrc::not_found, message});
  default:
    return unexpected(ApiError{result->status >= 500 ? ApiErrc::bad_response : ApiErrc::refused, message});
  }
}

Expected<json::Value, ApiError> Api::list(const std::string& what, std::uint64_t offset, std::uint64_t limit,
                                          const std::string& filter) const {
  return call("GET",
              "/api/v1/" + what + "?offset=" + std::to_string(offset) + "&limit=" + std::to_string(limit) +
                  "&q=" + httplib::detail::encode_query_param(filter),
              "");
}

Expected<json::Value, ApiError> Api::stats() const {
  return call("GET", "/api/v1/stats", "");
}

Expected<json::Value, ApiError>
Api::fetch(const std::string& origin, const std::vector<std::pair<std::string, std::string>>& headers) const {
  json::Writer w;
  w.begin_object().key("url").value(origin).key("headers").begin_object();
  for (const auto& [name, value] : headers) {
    w.key(name).value(value);
  }
  w.end_object().end_object();
  return call("POST", "/api/v1/downloads", w.str());
}

Expected<json::Value, ApiError> Api::remove(const std::string& key) const {
  return call("DELETE", "/api/v1/artifacts/" + key, "");
}

} // namespace withcache::api_client
