#include "server/exchange.hpp"

#include <unistd.h>

#include "withcache/util/encoding.hpp"
#include "withcache/util/strings.hpp"

namespace withcache::server {
namespace {

// `a=1&b=x+y` → {{"a", "1"}, {"b", "x y"}} (application/x-www-form-urlencoded).
void parse_form(std::string_view text, Fields& out) {
  while (!text.empty()) {
    const std::size_t amp = text.find('&');
    const std::string_view pair = text.substr(0, amp);
    text = amp == std::string_view::npos ? std::string_view{} : text.substr(amp + 1);
    if (pair.empty()) {
      continue;
    }
    const std::size_t eq = pair.find('=');
    const auto decode = [](std::string_view part) {
      std::string plus(part);
      for (char& c : plus) {
        c = c == '+' ? ' ' : c;
      }
      return util::percent_decode(plus);
    };
    out.emplace_back(decode(pair.substr(0, eq)),
                     eq == std::string_view::npos ? std::string{} : decode(pair.substr(eq + 1)));
  }
}

} // namespace

std::string_view Request::header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (util::iequals(n, name)) {
      return v;
    }
  }
  return {};
}

bool Request::has_header(std::string_view name) const {
  for (const auto& field : headers) {
    if (util::iequals(field.first, name)) {
      return true;
    }
  }
  return false;
}

const Fields& Request::params() const {
  if (!m_params) {
    m_params.emplace();
    parse_form(query, *m_params);
    if (util::istarts_with(header("Content-Type"), "application/x-www-form-urlencoded")) {
      parse_form(body, *m_params);
    }
  }
  return *m_params;
}

std::string Request::param(std::string_view name) const {
  for (const auto& [n, v] : params()) {
    if (n == name) {
      return v;
    }
  }
  return {};
}

bool Request::has_param(std::string_view name) const {
  for (const auto& field : params()) {
    if (field.first == name) {
      return true;
    }
  }
  return false;
}

FileBody::~FileBody() {
  if (fd >= 0) {
    ::close(fd);
  }
}

FileBody::FileBody(FileBody&& other) noexcept
    : fd(other.fd), offset(other.offset), length(other.length), growing(std::move(other.growing)) {
  other.fd = -1;
}

FileBody& FileBody::operator=(FileBody&& other) noexcept {
  if (this != &other) {
    if (fd >= 0) {
      ::close(fd);
    }
    fd = other.fd;
    offset = other.offset;
    length = other.length;
    growing = std::move(other.growing);
    other.fd = -1;
  }
  return *this;
}

Response& Response::set(std::string name, std::string value) {
  for (auto& [n, v] : headers) {
    if (util::iequals(n, name)) {
      v = std::move(value);
      return *this;
    }
  }
  headers.emplace_back(std::move(name), std::move(value));
  return *this;
}

Response& Response::add(std::string name, std::string value) {
  headers.emplace_back(std::move(name), std::move(value));
  return *this;
}

std::string_view Response::header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (util::iequals(n, name)) {
      return v;
    }
  }
  return {};
}

std::uint64_t Response::content_length() const {
  return file ? file->length : body.size();
}

Response plain(int status, std::string text) {
  Response r;
  r.status = status;
  r.body = std::move(text);
  r.set("Content-Type", "text/plain; charset=utf-8");
  return r;
}

Response html(int status, std::string html) {
  Response r;
  r.status = status;
  r.body = std::move(html);
  r.set("Content-Type", "text/html; charset=utf-8");
  r.set("Cache-Control", "no-store");
  return r;
}

Response json_text(int status, std::string json) {
  Response r;
  r.status = status;
  r.body = std::move(json);
  r.set("Content-Type", "application/json");
  r.set("Cache-Control", "no-store");
  return r;
}

Response redirect(std::string location, int status) {
  Response r;
  r.status = status;
  r.set("Location", std::move(location));
  return r;
}

void Router::add(std::string method, std::string path, Runs runs, Handler handler) {
  m_routes.push_back(Route{std::move(method), std::move(path), false, runs, std::move(handler)});
}

void Router::add_prefix(std::string method, std::string prefix, Runs runs, Handler handler) {
  m_routes.push_back(Route{std::move(method), std::move(prefix), true, runs, std::move(handler)});
}

void Router::wrap(const std::function<bool(const Route&)>& which, const std::function<Handler(Handler)>& wrap) {
  for (auto& route : m_routes) {
    if (which(route)) {
      route.handler = wrap(std::move(route.handler));
    }
  }
}

void Router::set_not_found(Handler handler) {
  m_not_found = std::move(handler);
}

const Router::Route* Router::find(std::string_view method, std::string_view path) const {
  const std::string_view as = method == "HEAD" ? std::string_view("GET") : method;
  for (const auto& route : m_routes) {
    const bool matches = route.prefix ? path.starts_with(route.path) : path == route.path;
    if (matches && route.method == as) {
      return &route;
    }
  }
  return nullptr;
}

bool Router::path_known(std::string_view path) const {
  for (const auto& route : m_routes) {
    if (route.prefix ? path.starts_with(route.path) : path == route.path) {
      return true;
    }
  }
  return false;
}

} // namespace withcache::server
