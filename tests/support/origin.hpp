#pragma once

// An origin server on 127.0.0.1 for tests: serves generated files and can
// misbehave on purpose (require Authorization, cut a body short, redirect,
// ignore Range or If-Range, stream slowly, trickle, stall before the head,
// change the body between requests). It answers conditional requests with
// 304, counts the GETs it answers, logs every request (method, path,
// headers) and answers any other method with 200.

#include <algorithm>
#include <cctype>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

namespace withcache::test {

/** Deterministic bytes: the same (size, seed) always gives the same content. */
inline std::string make_bytes(std::size_t size, std::uint32_t seed = 1) {
  std::string out(size, '\0');
  std::uint32_t x = seed * 2654435761U + 1;
  for (std::size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out[i] = static_cast<char>(x & 0xFF);
  }
  return out;
}

struct Route {
  Route(std::string body_ = {}, std::string type = "application/octet-stream")
      : body(std::move(body_)), content_type(std::move(type)) {}
  static Route error(int status_) {
    Route r;
    r.status = status_;
    return r;
  }
  static Route redirect(std::string location) {
    Route r;
    r.redirect_to = std::move(location);
    return r;
  }

  std::string body;
  std::string content_type = "application/octet-stream";
  int status = 200;                         ///< for error routes
  std::string redirect_to;                  ///< answer 302 with this Location
  std::string require_authorization;        ///< 401 unless Authorization equals this
  std::size_t truncate_at = 0;              ///< cut the body after this many bytes (0 = never)...
  int truncate_times = 0;                   ///< ...for this many responses (-1 = always)
  bool ignore_range = false;                ///< answer Range requests with the whole body (200)
  std::chrono::milliseconds chunk_delay{0}; ///< pause between chunks
  std::size_t chunk_size = 64 * 1024;       ///< bytes per chunk (a trickle: small chunks, long delays)
  std::chrono::milliseconds head_delay{0};  ///< stall this long before sending anything
  std::vector<std::pair<std::string, std::string>> headers; ///< extra response headers
  std::string etag;          ///< sent as ETag; If-None-Match and If-Range compare against it
  std::string last_modified; ///< sent as Last-Modified; If-Modified-Since and If-Range compare against it
  bool honour_if_range = true; ///< false: apply Range even when If-Range names another version (hostile)
  bool chunked = false;        ///< send the body chunked: no Content-Length (the length is not declared)
  /**
   * What the path serves after each GET: the route becomes then[0] (which
   * keeps then[1...] as its own `then`), so a body can change between the
   * attempts of one fill. Empty: the route stays.
   */
  std::vector<Route> then;
};

/** One GET the origin answered: its target as sent (path and query) and its header fields. */
struct Received {
  std::string target;
  std::multimap<std::string, std::string> headers;
  [[nodiscard]] std::string header(const std::string& name) const {
    for (const auto& [key, value] : headers) {
      if (key.size() == name.size() && std::equal(key.begin(), key.end(), name.begin(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
          })) {
        return value;
      }
    }
    return {};
  }
};

/** One request an origin received. */
struct LoggedRequest {
  std::string method;
  std::string path;                                ///< decoded, without the query
  std::string query;                               ///< the raw query, without '?'
  std::multimap<std::string, std::string> headers; ///< names as sent
  std::string body;
};

class Origin {
 public:
  Origin() {
    m_server.Get(".*", [this](const httplib::Request& req, httplib::Response& res) { handle(req, res); });
    // POST, PUT, DELETE, PATCH, OPTIONS: logged and answered "ok", so a test can count them.
    const auto other = [this](const httplib::Request& req, httplib::Response& res) {
      ++m_requests;
      log_request(req);
      res.set_content("ok\n", "text/plain");
    };
    m_server.Post(".*", other);
    m_server.Put(".*", other);
    m_server.Delete(".*", other);
    m_server.Patch(".*", other);
    m_server.Options(".*", other);
    m_port = m_server.bind_to_any_port("127.0.0.1");
    if (m_port <= 0) {
      throw std::runtime_error("origin: cannot bind 127.0.0.1");
    }
    m_thread = std::thread([this] { m_server.listen_after_bind(); });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!m_server.is_running()) {
      if (std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error("origin: did not start");
      }
      std::this_thread::yield();
    }
  }
  ~Origin() {
    m_stopping = true; // ends slow responses, so stop() need not wait for them
    m_server.stop();
    if (m_thread.joinable()) {
      m_thread.join();
    }
  }
  Origin(const Origin&) = delete;
  Origin& operator=(const Origin&) = delete;

  void add(const std::string& path, Route route) {
    std::lock_guard lock(m_mutex);
    m_routes[path] = std::move(route);
  }
  [[nodiscard]] int port() const noexcept { return m_port; }
  [[nodiscard]] std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(m_port) + path;
  }
  /** GETs answered for `path` (HEADs are not counted). */
  int gets(const std::string& path) const {
    std::lock_guard lock(m_mutex);
    const auto it = m_gets.find(path);
    return it == m_gets.end() ? 0 : it->second;
  }
  /** The Range headers received for `path`, in order ("" when none). */
  std::vector<std::string> ranges(const std::string& path) const {
    std::lock_guard lock(m_mutex);
    const auto it = m_ranges.find(path);
    return it == m_ranges.end() ? std::vector<std::string>{} : it->second;
  }
  /** Total requests of any kind. */
  int requests() const { return m_requests.load(); }
  /** Every GET answered, in order, with its target and headers. */
  std::vector<Received> received() const {
    std::lock_guard lock(m_mutex);
    return m_received;
  }
  /** Every request received so far, in order. */
  std::vector<LoggedRequest> log() const {
    std::lock_guard lock(m_mutex);
    return m_log;
  }
  /** Requests received with `method` (any path). */
  int count(const std::string& method) const {
    std::lock_guard lock(m_mutex);
    return static_cast<int>(std::count_if(m_log.begin(), m_log.end(),
                                          [&](const LoggedRequest& r) { return r.method == method; }));
  }

 private:
  void log_request(const httplib::Request& req) {
    LoggedRequest entry{req.method, req.path, {}, {req.headers.begin(), req.headers.end()}, req.body};
    if (const auto q = req.target.find('?'); q != std::string::npos) {
      entry.query = req.target.substr(q + 1);
    }
    std::lock_guard lock(m_mutex);
    m_log.push_back(std::move(entry));
  }

  void handle(const httplib::Request& req, httplib::Response& res) {
    ++m_requests;
    log_request(req);
    Route route;
    bool cut = false;
    {
      std::lock_guard lock(m_mutex);
      // A route for the exact target (path and query) wins over one for the path.
      auto it = m_routes.find(req.target);
      if (it == m_routes.end()) {
        it = m_routes.find(req.path);
      }
      if (req.method == "GET") {
        ++m_gets[req.path];
        m_ranges[req.path].push_back(req.get_header_value("Range"));
        m_received.push_back({req.target, {req.headers.begin(), req.headers.end()}});
      }
      if (it == m_routes.end()) {
        res.status = 404;
        res.set_content("not found", "text/plain");
        return;
      }
      route = it->second;
      if (route.truncate_at > 0 && route.truncate_times != 0 && req.method == "GET") {
        cut = true;
        if (it->second.truncate_times > 0) {
          --it->second.truncate_times;
        }
      }
      if (req.method == "GET" && !route.then.empty()) {
        Route next = route.then.front();
        next.then.assign(route.then.begin() + 1, route.then.end());
        it->second = std::move(next);
      }
    }
    if (!pace(route.head_delay)) {
      return;
    }
    if (!route.redirect_to.empty()) {
      res.status = 302;
      res.set_header("Location", route.redirect_to);
      return;
    }
    if (!route.require_authorization.empty() &&
        req.get_header_value("Authorization") != route.require_authorization) {
      res.status = 401;
      res.set_content("unauthorized", "text/plain");
      return;
    }
    if (route.status != 200) {
      res.status = route.status;
      res.set_content("error", "text/plain");
      return;
    }
    if (!route.etag.empty()) {
      res.set_header("ETag", route.etag);
    }
    if (!route.last_modified.empty()) {
      res.set_header("Last-Modified", route.last_modified);
    }
    const bool validators = !route.etag.empty() || !route.last_modified.empty();
    const bool not_modified =
        req.has_header("If-None-Match")
            ? (!route.etag.empty() && req.get_header_value("If-None-Match") == route.etag)
            : (req.has_header("If-Modified-Since") && !route.last_modified.empty() &&
               req.get_header_value("If-Modified-Since") == route.last_modified);
    if (validators && not_modified) {
      for (const auto& [name, value] : route.headers) {
        res.set_header(name, value);
      }
      res.status = 304;
      return;
    }

    // Range handled here, not by cpp-httplib (its 0.11 range code is buggy).
    std::size_t offset = 0;
    const std::string range = req.get_header_value("Range");
    const std::string if_range = req.get_header_value("If-Range");
    const bool range_applies = !req.has_header("If-Range") || !route.honour_if_range ||
                               (!route.etag.empty() && if_range == route.etag) ||
                               (!route.last_modified.empty() && if_range == route.last_modified);
    if (!route.ignore_range && range_applies && range.starts_with("bytes=") && range.back() == '-') {
      offset = std::stoull(range.substr(6, range.size() - 7));
      if (offset >= route.body.size()) {
        res.status = 416;
        res.set_header("Content-Range", "bytes */" + std::to_string(route.body.size()));
        return;
      }
      res.status = 206;
      res.set_header("Content-Range", "bytes " + std::to_string(offset) + "-" +
                                          std::to_string(route.body.size() - 1) + "/" +
                                          std::to_string(route.body.size()));
    }
    const_cast<httplib::Request&>(req).ranges.clear();
    for (const auto& [name, value] : route.headers) {
      res.set_header(name, value);
    }
    const std::size_t length = route.body.size() - offset;
    const std::size_t limit = cut ? std::min(route.truncate_at, length) : length;
    auto body = std::make_shared<std::string>(route.body.substr(offset));
    const auto delay = route.chunk_delay;
    const std::size_t chunk = std::max<std::size_t>(1, route.chunk_size);
    if (route.chunked) {
      res.set_chunked_content_provider(
          route.content_type, [this, body, limit, delay, chunk](std::size_t at, httplib::DataSink& sink) {
            if (at >= limit) {
              sink.done();
              return true;
            }
            if (!pace(delay)) {
              return false;
            }
            return sink.write(body->data() + at, std::min(limit - at, chunk));
          });
      return;
    }
    res.set_content_provider(
        length, route.content_type,
        [this, body, limit, delay, chunk](std::size_t at, std::size_t want, httplib::DataSink& sink) {
          if (at >= limit) {
            return false; // drop the connection: a truncated body
          }
          if (!pace(delay)) {
            return false;
          }
          const std::size_t n = std::min({want, limit - at, chunk});
          return sink.write(body->data() + at, n);
        });
  }

  // Waits `delay` in steps, so that stopping the origin is prompt; false when it is stopping.
  bool pace(std::chrono::milliseconds delay) {
    const auto until = std::chrono::steady_clock::now() + delay;
    while (std::chrono::steady_clock::now() < until) {
      if (m_stopping) {
        return false;
      }
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
          std::chrono::milliseconds(10), until - std::chrono::steady_clock::now()));
    }
    return !m_stopping;
  }

  httplib::Server m_server;
  int m_port = 0;
  std::thread m_thread;
  mutable std::mutex m_mutex;
  std::map<std::string, Route> m_routes;
  std::map<std::string, int> m_gets;
  std::map<std::string, std::vector<std::string>> m_ranges;
  std::vector<Received> m_received;
  std::vector<LoggedRequest> m_log;
  std::atomic<int> m_requests{0};
  std::atomic<bool> m_stopping{false};
};

} // namespace withcache::test
