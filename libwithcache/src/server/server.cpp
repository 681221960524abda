#include "withcache/server.hpp"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <functional>
#include <mutex>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "pages.hpp"
#include "withcache/auth.hpp"
#include "withcache/downloads.hpp"
#include "withcache/http.hpp"
#include "withcache/json.hpp"
#include "withcache/store.hpp"
#include "withcache/url.hpp"
#include "withcache/version.hpp"

namespace withcache::server {
namespace {

using Clock = std::chrono::steady_clock;

// Large reads keep syscalls per GiB low; the buffer is per response, so
// memory stays flat however big the blob is.
constexpr std::size_t k_stream_chunk = 256 * 1024;
constexpr const char* k_miss_body = "cache miss (recorded)\n";

thread_local Clock::time_point t_request_start;

// A blob file opened for one response; closed when cpp-httplib releases the provider.
struct OpenBlob {
  int fd = -1;
  std::vector<char> buffer;
  ~OpenBlob() {
    if (fd >= 0) {
      ::close(fd);
    }
  }
};

struct Metrics {
  std::atomic<std::uint64_t> hits{0};
  std::atomic<std::uint64_t> misses{0};
  std::atomic<std::uint64_t> bad_requests{0};
  std::atomic<std::uint64_t> bytes_served{0};
  std::atomic<std::uint64_t> bytes_fetched{0};
  std::atomic<std::uint64_t> fills_completed{0};
  std::atomic<std::uint64_t> fills_failed{0};
  std::atomic<std::uint64_t> fills_cancelled{0};
  std::atomic<std::uint64_t> fills_queued{0};
};

// "/b/aHR0cHM6Ly9...long.../x.run" → "/b/aHR0cHM6Ly9…/x.run": tokens carry whole URLs.
std::string loggable_path(const std::string& path) {
  if (!path.starts_with("/b/")) {
    return path;
  }
  const std::size_t end = path.find('/', 3);
  const std::string token = path.substr(3, end == std::string::npos ? std::string::npos : end - 3);
  std::string out = "/b/" + (token.size() > 12 ? token.substr(0, 12) + "\xE2\x80\xA6" : token);
  if (end != std::string::npos) {
    out += path.substr(end);
  }
  return out;
}

void plain(httplib::Response& res, int status, const std::string& body) {
  res.status = status;
  res.set_content(body, "text/plain; charset=utf-8");
}

} // namespace

struct Server::Impl {
  ServerOptions options;
  std::unique_ptr<store::BlobStore> store;
  std::unique_ptr<downloads::DownloadPool> pool;
  httplib::Server http;
  Metrics metrics;
  int bound_port = 0;
  std::unique_ptr<auth::Sessions> sessions;
  auth::LoginThrottle throttle;

  explicit Impl(ServerOptions opts) : options(std::move(opts)) {
    try {
      store = std::make_unique<store::BlobStore>(
          store::StoreOptions{options.data_dir, options.max_bytes, std::chrono::milliseconds(500)});
    } catch (const store::StoreError& e) {
      throw StartupError(e.what());
    }
    const auto& recovered = store->recovery();
    if (recovered.stray_parts_removed + recovered.blobs_without_row_removed +
            recovered.rows_without_blob_dropped >
        0) {
      spdlog::warn("recovered the store: removed {} stray partial files, {} blobs without a row, {} rows "
                   "without a blob",
                   recovered.stray_parts_removed, recovered.blobs_without_row_removed,
                   recovered.rows_without_blob_dropped);
    }

    downloads::PoolOptions pool_options;
    pool_options.workers = options.workers;
    pool_options.key_options.keep_query = options.keep_query;
    pool_options.fetch.policy = fetch::OriginPolicy(options.allow_origins);
    pool_options.fetch.connect_timeout = options.fetch_connect_timeout;
    pool_options.fetch.read_timeout = options.fetch_read_timeout;
    pool_options.on_finished = [this](const downloads::Job& job) {
      on_fill_finished(job);
    };
    pool = std::make_unique<downloads::DownloadPool>(*store, std::move(pool_options));
    try {
      sessions = std::make_unique<auth::Sessions>(
          auth::session_secret(options.data_dir, options.session_secret.c_str()));
    } catch (const std::exception& e) {
      throw StartupError(e.what());
    }
    configure_http();
  }

  void on_fill_finished(const downloads::Job& job) {
    const std::string shown = url::redact(job.url);
    switch (job.status) {
    case downloads::JobStatus::completed:
      ++metrics.fills_completed;
      metrics.bytes_fetched += job.bytes_done;
      spdlog::info("fill completed: {} ({} bytes)", shown, job.bytes_done);
      store->record_event("fill_completed", "system", "",
                          shown + " (" + store::format_size(job.bytes_done) + ")");
      break;
    case downloads::JobStatus::cancelled:
      ++metrics.fills_cancelled;
      spdlog::info("fill cancelled: {}", shown);
      store->record_event("fill_cancelled", "system", "", shown);
      break;
    default:
      ++metrics.fills_failed;
      spdlog::warn("fill failed: {}", job.error);
      store->record_event("fill_failed", "system", "", job.error);
      break;
    }
  }

  void configure_http() {
    http.new_task_queue = [threads = options.http_threads] {
      return new httplib::ThreadPool(threads);
    };
    http.set_keep_alive_max_count(1000);
    http.set_keep_alive_timeout(30);
    http.set_read_timeout(30);
    http.set_write_timeout(120);
    http.set_tcp_nodelay(true);
    // cpp-httplib sets SO_REUSEPORT, which lets a second server silently share
    // our port; SO_REUSEADDR alone allows a quick restart and nothing more.
    http.set_socket_options([](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    http.set_payload_max_length(1 << 20);
    http.set_default_headers({{"Server", k_product}});

    // The read path is dispatched here, before cpp-httplib tries each route's
    // std::regex in turn: it is the hot path (every shim probe is a HEAD).
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      t_request_start = Clock::now();
      if (req.method != "GET" && req.method != "HEAD") {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      if (req.path.starts_with("/b/")) {
        const std::size_t end = req.path.find('/', 3);
        read_path(req, res, req.path.substr(3, end == std::string::npos ? std::string::npos : end - 3));
        return httplib::Server::HandlerResponse::Handled;
      }
      if (req.path == "/blob") {
        read_path(req, res, std::nullopt);
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http.set_logger([](const httplib::Request& req, const httplib::Response& res) {
      if (!spdlog::should_log(spdlog::level::info)) {
        return;
      }
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t_request_start).count();
      const std::string length = res.get_header_value("Content-Length");
      // Only the path: query strings (and /blob?url=) may carry origin tokens.
      spdlog::info("{} {} {} {} {:.1f}ms {}", req.remote_addr, req.method, loggable_path(req.path),
                   res.status, ms, length.empty() ? "-" : length);
    });
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        spdlog::error("internal error: {}", e.what());
      } catch (...) {
        spdlog::error("internal error");
      }
      plain(res, 500, "internal error\n");
    });

    http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { plain(res, 200, "ok\n"); });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) { metrics_page(res); });
    configure_operator_routes();
  }

  // The read path of SPEC §3: open, never logged in.
  void read_path(const httplib::Request& req, httplib::Response& res,
                 const std::optional<std::string>& token) {
    // cpp-httplib 0.11 applies Range itself (with bugs); we do it below.
    const_cast<httplib::Request&>(req).ranges.clear();

    std::string origin;
    if (token) {
      auto decoded = url::decode_token(*token);
      if (!decoded) {
        return bad_request(res, "bad token: " + decoded.error().message);
      }
      origin = std::move(*decoded);
    } else {
      origin = req.get_param_value("url");
    }
    if (origin.empty()) {
      return bad_request(res, "empty URL");
    }
    const std::string scheme = url::scheme_of(origin);
    if (scheme != "http" && scheme != "https") {
      return bad_request(res, "only http and https URLs are cached");
    }
    auto key = url::key_id(origin, {options.keep_query});
    if (!key) {
      return bad_request(res, key.error().message);
    }

    if (auto artifact = store->find(*key); artifact && serve_blob(req, res, *artifact)) {
      return;
    }
    miss(req, res, *key, origin);
  }

  void bad_request(httplib::Response& res, const std::string& reason) {
    ++metrics.bad_requests;
    plain(res, 400, reason + "\n");
  }

  void miss(const httplib::Request& req, httplib::Response& res, const std::string& key,
            const std::string& origin) {
    ++metrics.misses;
    if (store->record_miss(key, origin)) {
      spdlog::info("first miss: {}", url::redact(origin));
      store->record_event("first_miss", "system", req.remote_addr, url::redact(origin));
    }
    if (!options.curate) {
      fetch::Headers headers;
      if (options.forward_auth && req.has_header("Authorization")) {
        headers.emplace_back("Authorization", req.get_header_value("Authorization"));
      }
      auto queued = pool->enqueue(origin, std::move(headers));
      if (queued && !queued->joined) {
        ++metrics.fills_queued;
      } else if (!queued) {
        spdlog::debug("no fill for {}: {}", url::redact(origin), queued.error().message);
      }
    }
    plain(res, 404, k_miss_body);
  }

  // Returns false when the blob vanished (deleted since the lookup): a miss.
  bool serve_blob(const httplib::Request& req, httplib::Response& res, const store::Artifact& artifact) {
    // A HEAD needs no file: the index entry is removed before a blob is unlinked.
    auto blob = std::make_shared<OpenBlob>();
    if (req.method == "GET") {
      blob->fd = ::open(store->blob_path(artifact.key).c_str(), O_RDONLY | O_CLOEXEC);
      if (blob->fd < 0) {
        return false;
      }
    }
    const std::string etag = "\"" + artifact.sha256 + "\"";
    const std::uint64_t size = artifact.size;
    res.set_header("ETag", etag);
    res.set_header("X-Withcache-Sha256", artifact.sha256);
    res.set_header("Last-Modified", http::http_date(artifact.fetched_at));
    res.set_header("Accept-Ranges", "bytes");
    res.set_header("Cache-Control", "public, max-age=31536000, immutable");
    const std::string type =
        artifact.content_type.empty() ? "application/octet-stream" : artifact.content_type;

    if (req.has_header("If-None-Match") && http::none_match(req.get_header_value("If-None-Match"), etag)) {
      res.status = 304;
      return true;
    }

    http::ByteRange range;
    if (req.has_header("Range") &&
        (!req.has_header("If-Range") ||
         http::if_range_matches(req.get_header_value("If-Range"), etag, artifact.fetched_at))) {
      range = http::parse_range(req.get_header_value("Range"), size);
    }
    if (range.kind == http::ByteRange::Kind::unsatisfiable) {
      res.set_header("Content-Range", "bytes */" + std::to_string(size));
      plain(res, 416, "range not satisfiable\n");
      return true;
    }
    std::uint64_t first = 0;
    std::uint64_t length = size;
    if (range.kind == http::ByteRange::Kind::partial) {
      first = range.first;
      length = range.last - range.first + 1;
      res.status = 206;
      res.set_header("Content-Range", "bytes " + std::to_string(range.first) + "-" +
                                          std::to_string(range.last) + "/" + std::to_string(size));
    } else {
      res.status = 200;
    }

    if (req.method == "GET") {
      ++metrics.hits;
      store->record_hit(artifact.key);
    }
    if (length == 0) {
      res.set_content("", type);
      return true;
    }
    res.set_content_provider(
        static_cast<std::size_t>(length), type,
        [this, blob, first](std::size_t offset, std::size_t want, httplib::DataSink& sink) {
          if (blob->buffer.empty()) {
            blob->buffer.resize(k_stream_chunk);
          }
          const std::size_t n = std::min(want, blob->buffer.size());
          const ssize_t got = ::pread(blob->fd, blob->buffer.data(), n, static_cast<off_t>(first + offset));
          if (got <= 0) {
            return false; // the file shrank under us: drop the connection rather than send wrong bytes
          }
          if (!sink.write(blob->buffer.data(), static_cast<std::size_t>(got))) {
            return false;
          }
          metrics.bytes_served += static_cast<std::uint64_t>(got);
          return true;
        });
    return true;
  }

  void metrics_page(httplib::Response& res) {
    std::ostringstream out;
    const auto counter = [&](const char* name, const char* help, std::uint64_t value) {
      out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " counter\n"
          << name << ' ' << value << '\n';
    };
    const auto gauge = [&](const char* name, const char* help, std::uint64_t value) {
      out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " gauge\n"
          << name << ' ' << value << '\n';
    };
    counter("withcache_hits_total", "GET requests served from the cache.", metrics.hits.load());
    counter("withcache_misses_total", "Requests for URLs that were not cached.", metrics.misses.load());
    counter("withcache_bad_requests_total", "Read-path requests refused with 400.",
            metrics.bad_requests.load());
    counter("withcache_bytes_served_total", "Body bytes sent from cached blobs.",
            metrics.bytes_served.load());
    counter("withcache_bytes_fetched_total", "Bytes of completed fills.", metrics.bytes_fetched.load());
    out << "# HELP withcache_fills_total Fills that ended, by outcome.\n# TYPE withcache_fills_total "
           "counter\n";
    out << "withcache_fills_total{outcome=\"completed\"} " << metrics.fills_completed.load() << '\n';
    out << "withcache_fills_total{outcome=\"failed\"} " << metrics.fills_failed.load() << '\n';
    out << "withcache_fills_total{outcome=\"cancelled\"} " << metrics.fills_cancelled.load() << '\n';
    gauge("withcache_queue_depth", "Fills waiting for a worker.", pool->queue_depth());
    gauge("withcache_downloads_running", "Fills running now.", pool->running());
    gauge("withcache_stored_bytes", "Bytes in cached blobs.", store->stored_bytes());
    gauge("withcache_capacity_bytes", "The --max-bytes cap (0 = unlimited).", store->max_bytes());
    gauge("withcache_artifacts", "Cached artifacts.", store->artifact_count());
    res.set_content(out.str(), "text/plain; version=0.0.4; charset=utf-8");
  }

  // --- operator surface: session, pages, form actions, JSON API -------------

  [[nodiscard]] bool ui_open() const { return options.admin_password.empty(); }

  [[nodiscard]] bool has_session(const httplib::Request& req) const {
    const auto token = auth::cookie_value(req.get_header_value("Cookie"), auth::k_cookie);
    return token && sessions->verify(*token).has_value();
  }

  [[nodiscard]] bool has_bearer(const httplib::Request& req) const {
    const std::string header = req.get_header_value("Authorization");
    return !options.api_token.empty() && header.starts_with("Bearer ") &&
           auth::constant_time_equal(header.substr(7), options.api_token);
  }

  [[nodiscard]] bool page_allowed(const httplib::Request& req) const { return ui_open() || has_session(req); }

  [[nodiscard]] bool api_allowed(const httplib::Request& req) const {
    return (ui_open() && options.api_token.empty()) || has_session(req) || has_bearer(req);
  }

  [[nodiscard]] std::string actor(const httplib::Request& req) const {
    if (has_session(req)) {
      return "admin";
    }
    return has_bearer(req) ? "api" : "anonymous";
  }

  static bool csrf_ok(const httplib::Request& req) {
    return auth::same_origin(req.get_header_value("Origin"), req.get_header_value("Referer"),
                             req.get_header_value("Host"));
  }

  static bool is_htmx(const httplib::Request& req) { return req.get_header_value("HX-Request") == "true"; }

  static void html(httplib::Response& res, int status, const std::string& body) {
    res.status = status;
    res.set_header("Cache-Control", "no-store");
    res.set_content(body, "text/html; charset=utf-8");
  }

  static void json_response(httplib::Response& res, int status, const std::string& body) {
    res.status = status;
    res.set_header("Cache-Control", "no-store");
    res.set_content(body, "application/json");
  }

  static void json_error(httplib::Response& res, int status, const std::string& message) {
    json::Writer w;
    w.begin_object().key("error").value(message).end_object();
    json_response(res, status, w.str());
  }

  static std::string rfc3339(store::UnixTime t) {
    if (t <= 0) {
      return {};
    }
    const std::time_t time = t;
    std::tm tm{};
    ::gmtime_r(&time, &tm);
    char buffer[32];
    std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buffer;
  }

  // offset, limit and q of a listing; nothing (and a 400 written) when malformed.
  static std::optional<store::ListQuery> list_query(const httplib::Request& req, httplib::Response& res,
                                                    bool api) {
    store::ListQuery q;
    q.limit = 50;
    const auto number = [&](const char* name, std::uint64_t& out, std::uint64_t max) {
      if (!req.has_param(name)) {
        return true;
      }
      const std::string text = req.get_param_value(name);
      if (text.empty() || text.size() > 12 || text.find_first_not_of("0123456789") != std::string::npos ||
          std::stoull(text) > max) {
        return false;
      }
      out = std::stoull(text);
      return true;
    };
    if (!number("offset", q.offset, 1'000'000'000'000ULL) || !number("limit", q.limit, 1000)) {
      if (api) {
        json_error(res, 400, "offset and limit must be whole numbers (limit at most 1000)");
      } else {
        plain(res, 400, "offset and limit must be whole numbers (limit at most 1000)\n");
      }
      return std::nullopt;
    }
    q.filter = req.get_param_value("q");
    return q;
  }

  // Refuses a form that repeats a field (other than `header`): which one would win is ambiguous.
  static bool duplicate_fields(const httplib::Request& req) {
    std::string previous;
    for (const auto& [name, value] : req.params) {
      if (name == previous && name != "header") {
        return true;
      }
      previous = name;
    }
    return false;
  }

  // `Name: Value` lines (one textarea, or repeated `header` fields).
  static std::optional<fetch::Headers> header_lines(const httplib::Request& req) {
    fetch::Headers headers;
    const auto range = req.params.equal_range("header");
    for (auto it = range.first; it != range.second; ++it) {
      std::string_view text = it->second;
      while (!text.empty()) {
        const std::size_t end = text.find('\n');
        std::string line(text.substr(0, end));
        text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
        if (!line.empty() && line.back() == '\r') {
          line.pop_back();
        }
        if (line.find_first_not_of(" \t") == std::string::npos) {
          continue;
        }
        const std::size_t colon = line.find(':');
        if (colon == std::string::npos || colon == 0) {
          return std::nullopt;
        }
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(" \t"));
        headers.emplace_back(line.substr(0, colon), value);
      }
    }
    return headers;
  }

  pages::Listing listing_of(const std::string& path, const store::ListQuery& q, std::uint64_t total) const {
    return pages::Listing{path, q.filter, q.offset, q.limit, total};
  }

  std::string fragment_for(const std::string& section, const store::ListQuery& q) {
    if (section == "dashboard") {
      pages::Dashboard d{store->totals(), pool->queue_depth(), pool->running(), metrics.bytes_served.load(),
                         options.curate};
      return pages::dashboard_fragment(d);
    }
    if (section == "downloads") {
      return pages::downloads_fragment(pool->list());
    }
    if (section == "misses") {
      const auto page = store->list_misses(q);
      return pages::misses_fragment(page, listing_of("/ui/misses", q, page.total), options.curate);
    }
    if (section == "artifacts") {
      const auto page = store->list_artifacts(q);
      return pages::artifacts_fragment(page, listing_of("/ui/artifacts", q, page.total));
    }
    const auto page = store->list_events(q);
    return pages::events_fragment(page, listing_of("/ui/events", q, page.total));
  }

  void ui_page(const httplib::Request& req, httplib::Response& res, const std::string& section,
               const std::string& title) {
    if (!page_allowed(req)) {
      res.status = 303;
      res.set_header("Location", "/ui/login");
      return;
    }
    const auto q = list_query(req, res, false);
    if (!q) {
      return;
    }
    const std::string fragment = fragment_for(section, *q);
    if (is_htmx(req)) {
      return html(res, 200, fragment);
    }
    std::string self = section == "dashboard" ? "/" : "/ui/" + section;
    if (req.has_param("q") || req.has_param("offset") || req.has_param("limit")) {
      self += "?q=" + httplib::detail::encode_query_param(q->filter) +
              "&offset=" + std::to_string(q->offset) + "&limit=" + std::to_string(q->limit);
    }
    const std::string filter = section == "dashboard" || section == "downloads"
                                   ? ""
                                   : pages::filter_form("/ui/" + section, q->filter);
    html(res, 200,
         pages::layout(title, title, !ui_open(), filter + pages::live_section(section, self, fragment)));
  }

  // A state-changing form action: session, CSRF, then `act`, which returns an
  // error message (empty when it worked) and the section to refresh.
  void form_action(const httplib::Request& req, httplib::Response& res,
                   const std::function<std::pair<std::string, std::string>()>& act) {
    if (!page_allowed(req)) {
      return plain(res, 401, "log in first (POST /ui/login)\n");
    }
    if (!csrf_ok(req)) {
      return plain(res, 403, "cross-site request refused (Origin does not match this server)\n");
    }
    if (duplicate_fields(req)) {
      return plain(res, 400, "a form field is repeated\n");
    }
    const auto [error, section] = act();
    if (is_htmx(req)) {
      if (section == "add") {
        return html(res, 200, pages::add_form(error.empty() ? "Queued." : error, error.empty()));
      }
      return html(res, error.empty() ? 200 : 400, fragment_for(section, store::ListQuery{0, 50, ""}));
    }
    if (!error.empty()) {
      return html(
          res, 400,
          pages::layout("Not done", "", !ui_open(),
                        "<p role=\"alert\">" + pages::escape(error) + "</p><p><a href=\"/\">Back</a></p>"));
    }
    res.status = 303;
    res.set_header("Location", "/");
  }

  std::string enqueue_error(const downloads::EnqueueError& e) const { return e.message; }

  void configure_operator_routes() {
    http.Get(R"(/static/([a-z0-9.\-]+))", [](const httplib::Request& req, httplib::Response& res) {
      const std::string name = req.matches[1];
      const std::string_view asset = embedded_asset(name);
      if (asset.empty()) {
        return plain(res, 404, "not found\n");
      }
      res.set_header("Cache-Control", "public, max-age=86400");
      res.set_content(std::string(asset), name.ends_with(".css") ? "text/css" : "text/javascript");
    });

    http.Get("/ui/login", [this](const httplib::Request&, httplib::Response& res) {
      if (ui_open()) {
        res.status = 303;
        res.set_header("Location", "/");
        return;
      }
      html(res, 200, pages::login(false, {}));
    });
    http.Post("/ui/login", [this](const httplib::Request& req, httplib::Response& res) {
      if (ui_open()) {
        res.status = 303;
        res.set_header("Location", "/");
        return;
      }
      if (!csrf_ok(req)) {
        return plain(res, 403, "cross-site request refused\n");
      }
      const std::string address = req.remote_addr;
      if (const auto wait = throttle.retry_after(address); wait.count() > 0) {
        const auto seconds = std::to_string((wait.count() + 999) / 1000);
        res.set_header("Retry-After", seconds);
        return html(res, 429,
                    pages::login(false, "Too many wrong passwords: try again in " + seconds + " s."));
      }
      if (!auth::constant_time_equal(req.get_param_value("password"), options.admin_password)) {
        throttle.record_failure(address);
        spdlog::warn("failed operator login from {}", address);
        store->record_event("login_failed", "anonymous", address, "");
        return html(res, 401, pages::login(true, {}));
      }
      throttle.reset(address);
      store->record_event("login", "admin", address, "");
      res.status = 303;
      res.set_header("Location", "/");
      res.set_header("Set-Cookie", std::string(auth::k_cookie) + "=" + sessions->issue("admin") +
                                       "; HttpOnly; SameSite=Lax; Path=/; Max-Age=" +
                                       std::to_string(sessions->lifetime().count()));
    });
    http.Post("/ui/logout", [this](const httplib::Request& req, httplib::Response& res) {
      if (!csrf_ok(req)) {
        return plain(res, 403, "cross-site request refused\n");
      }
      if (has_session(req)) {
        store->record_event("logout", "admin", req.remote_addr, "");
      }
      res.status = 303;
      res.set_header("Location", ui_open() ? "/" : "/ui/login");
      res.set_header("Set-Cookie",
                     std::string(auth::k_cookie) + "=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0");
    });

    http.Get("/", [this](const httplib::Request& req, httplib::Response& res) {
      ui_page(req, res, "dashboard", "Dashboard");
    });
    http.Get("/ui/downloads", [this](const httplib::Request& req, httplib::Response& res) {
      ui_page(req, res, "downloads", "Downloads");
    });
    http.Get("/ui/misses", [this](const httplib::Request& req, httplib::Response& res) {
      ui_page(req, res, "misses", "Misses");
    });
    http.Get("/ui/artifacts", [this](const httplib::Request& req, httplib::Response& res) {
      ui_page(req, res, "artifacts", "Cached");
    });
    http.Get("/ui/events", [this](const httplib::Request& req, httplib::Response& res) {
      ui_page(req, res, "events", "Events");
    });
    http.Get("/ui/add", [this](const httplib::Request& req, httplib::Response& res) {
      if (!page_allowed(req)) {
        res.status = 303;
        res.set_header("Location", "/ui/login");
        return;
      }
      html(res, 200,
           pages::layout("Add from URI", "Add from URI", !ui_open(),
                         "<section id=\"add\">" + pages::add_form("", true) + "</section>"));
    });

    http.Post("/admin/fetch", [this](const httplib::Request& req, httplib::Response& res) {
      form_action(req, res, [&]() -> std::pair<std::string, std::string> {
        const std::string section = req.get_header_value("HX-Target") == "misses" ? "misses" : "add";
        const auto headers = header_lines(req);
        if (!headers) {
          return {"header lines must look like 'Name: Value'", section};
        }
        auto queued = pool->enqueue(req.get_param_value("url"), *headers);
        if (!queued) {
          return {queued.error().message, section};
        }
        // Header names, never values, go to the log.
        std::string names;
        for (const auto& h : *headers) {
          names += (names.empty() ? " with headers " : ", ") + h.first;
        }
        store->record_event("fetch", actor(req), req.remote_addr, url::redact(queued->job.url) + names);
        return {"", section};
      });
    });
    http.Post("/admin/dismiss", [this](const httplib::Request& req, httplib::Response& res) {
      form_action(req, res, [&]() -> std::pair<std::string, std::string> {
        const std::string key = req.get_param_value("key");
        if (!store->dismiss_miss(key)) {
          return {"no such miss", "misses"};
        }
        store->record_event("dismiss", actor(req), req.remote_addr, key);
        return {"", "misses"};
      });
    });
    http.Post("/admin/delete", [this](const httplib::Request& req, httplib::Response& res) {
      form_action(req, res, [&]() -> std::pair<std::string, std::string> {
        const std::string key = req.get_param_value("key");
        const auto artifact = store->find(key);
        if (!artifact || !store->remove(key)) {
          return {"no such artifact", "artifacts"};
        }
        store->record_event("delete", actor(req), req.remote_addr, artifact->url);
        return {"", "artifacts"};
      });
    });
    http.Post("/admin/cancel", [this](const httplib::Request& req, httplib::Response& res) {
      form_action(req, res, [&]() -> std::pair<std::string, std::string> {
        const std::string id = req.get_param_value("id");
        if (id.empty() || id.size() > 18 || id.find_first_not_of("0123456789") != std::string::npos ||
            !pool->cancel(std::stoll(id))) {
          return {"no such running or queued download", "downloads"};
        }
        store->record_event("cancel", actor(req), req.remote_addr, "download " + id);
        return {"", "downloads"};
      });
    });
    http.Post("/admin/clear", [this](const httplib::Request& req, httplib::Response& res) {
      form_action(req, res, [&]() -> std::pair<std::string, std::string> {
        const std::size_t cleared = pool->clear_finished();
        store->record_event("clear", actor(req), req.remote_addr,
                            std::to_string(cleared) + " finished downloads");
        return {"", "downloads"};
      });
    });

    configure_api();
  }

  void write_job(json::Writer& w, const downloads::Job& j) const {
    w.begin_object()
        .key("id")
        .value(j.id)
        .key("url")
        .value(j.url)
        .key("status")
        .value(downloads::to_string(j.status))
        .key("bytes_done")
        .value(j.bytes_done)
        .key("bytes_total")
        .value(j.bytes_total)
        .key("rate")
        .value(j.rate)
        .key("error")
        .value(j.error)
        .key("started_at");
    j.started_at > 0 ? w.value(rfc3339(j.started_at)) : w.null();
    w.key("finished_at");
    j.finished_at > 0 ? w.value(rfc3339(j.finished_at)) : w.null();
    w.end_object();
  }

  // Runs `handler` for an API request that passed auth (and CSRF when it changes state).
  void api(const httplib::Request& req, httplib::Response& res, bool changes_state,
           const std::function<void()>& handler) {
    if (!api_allowed(req)) {
      return json_error(res, 401, "authentication required (a session cookie or Authorization: Bearer)");
    }
    if (changes_state && !has_bearer(req) && !csrf_ok(req)) {
      return json_error(res, 403, "cross-site request refused");
    }
    handler();
  }

  void configure_api() {
    http.Get("/api/v1/artifacts", [this](const httplib::Request& req, httplib::Response& res) {
      api(req, res, false, [&] {
        const auto q = list_query(req, res, true);
        if (!q) {
          return;
        }
        const auto page = store->list_artifacts(*q);
        json::Writer w;
        w.begin_object().key("items").begin_array();
        for (const auto& a : page.items) {
          w.begin_object()
              .key("key")
              .value(a.key)
              .key("url")
              .value(a.url)
              .key("size")
              .value(a.size)
              .key("sha256")
              .value(a.sha256)
              .key("content_type")
              .value(a.content_type)
              .key("fetched_at")
              .value(rfc3339(a.fetched_at))
              .key("hits")
              .value(a.hits)
              .key("misses")
              .value(a.misses)
              .end_object();
        }
        w.end_array().key("total").value(page.total).end_object();
        json_response(res, 200, w.str());
      });
    });
    http.Delete(R"(/api/v1/artifacts/([0-9a-f]{64}))",
                [this](const httplib::Request& req, httplib::Response& res) {
                  api(req, res, true, [&] {
                    const std::string key = req.matches[1];
                    const auto artifact = store->find(key);
                    if (!artifact || !store->remove(key)) {
                      return json_error(res, 404, "no artifact with key " + key);
                    }
                    store->record_event("delete", actor(req), req.remote_addr, artifact->url);
                    json::Writer w;
                    w.begin_object().key("deleted").value(key).end_object();
                    json_response(res, 200, w.str());
                  });
                });
    http.Get("/api/v1/misses", [this](const httplib::Request& req, httplib::Response& res) {
      api(req, res, false, [&] {
        const auto q = list_query(req, res, true);
        if (!q) {
          return;
        }
        const auto page = store->list_misses(*q);
        json::Writer w;
        w.begin_object().key("items").begin_array();
        for (const auto& m : page.items) {
          w.begin_object()
              .key("key")
              .value(m.key)
              .key("url")
              .value(m.url)
              .key("count")
              .value(m.count)
              .key("first_seen")
              .value(rfc3339(m.first_seen))
              .key("last_seen")
              .value(rfc3339(m.last_seen))
              .end_object();
        }
        w.end_array().key("total").value(page.total).end_object();
        json_response(res, 200, w.str());
      });
    });
    http.Delete(R"(/api/v1/misses/([0-9a-f]{64}))",
                [this](const httplib::Request& req, httplib::Response& res) {
                  api(req, res, true, [&] {
                    const std::string key = req.matches[1];
                    if (!store->dismiss_miss(key)) {
                      return json_error(res, 404, "no miss with key " + key);
                    }
                    store->record_event("dismiss", actor(req), req.remote_addr, key);
                    json::Writer w;
                    w.begin_object().key("dismissed").value(key).end_object();
                    json_response(res, 200, w.str());
                  });
                });
    http.Get("/api/v1/downloads", [this](const httplib::Request& req, httplib::Response& res) {
      api(req, res, false, [&] {
        const auto q = list_query(req, res, true);
        if (!q) {
          return;
        }
        std::vector<downloads::Job> jobs;
        for (auto& j : pool->list()) {
          if (q->filter.empty() || j.url.find(q->filter) != std::string::npos) {
            jobs.push_back(std::move(j));
          }
        }
        json::Writer w;
        w.begin_object().key("items").begin_array();
        for (std::size_t i = q->offset; i < jobs.size() && i < q->offset + q->limit; ++i) {
          write_job(w, jobs[i]);
        }
        w.end_array().key("total").value(static_cast<std::uint64_t>(jobs.size())).end_object();
        json_response(res, 200, w.str());
      });
    });
    http.Post("/api/v1/downloads", [this](const httplib::Request& req, httplib::Response& res) {
      api(req, res, true, [&] {
        const auto body = json::parse(req.body);
        if (!body || body->as_object() == nullptr) {
          return json_error(res, 400, body ? "the body must be a JSON object" : body.error());
        }
        const auto& fields = *body->as_object();
        for (const auto& [name, value] : fields) {
          if (name != "url" && name != "headers") {
            return json_error(res, 400, "unknown field '" + name + "' (expected url and headers)");
          }
        }
        const auto url_field = fields.find("url");
        if (url_field == fields.end() || url_field->second.as_string() == nullptr) {
          return json_error(res, 400, "'url' (a string) is required");
        }
        fetch::Headers headers;
        if (const auto h = fields.find("headers"); h != fields.end()) {
          if (h->second.as_object() == nullptr) {
            return json_error(res, 400, "'headers' must be an object of strings");
          }
          for (const auto& [name, value] : *h->second.as_object()) {
            if (value.as_string() == nullptr) {
              return json_error(res, 400, "header " + name + " must be a string");
            }
            headers.emplace_back(name, *value.as_string());
          }
        }
        auto queued = pool->enqueue(*url_field->second.as_string(), headers);
        if (!queued) {
          const int status = queued.error().code == downloads::EnqueueErrc::already_cached ||
                                     queued.error().code == downloads::EnqueueErrc::cache_full ||
                                     queued.error().code == downloads::EnqueueErrc::shutting_down
                                 ? 409
                                 : 400;
          return json_error(res, status, queued.error().message);
        }
        store->record_event("fetch", actor(req), req.remote_addr, url::redact(queued->job.url));
        json::Writer w;
        write_job(w, queued->job);
        json_response(res, 202, w.str());
      });
    });
    http.Delete(
        R"(/api/v1/downloads/([0-9]{1,18}))", [this](const httplib::Request& req, httplib::Response& res) {
          api(req, res, true, [&] {
            const std::int64_t id = std::stoll(req.matches[1]);
            const auto job = pool->get(id);
            if (!job) {
              return json_error(res, 404, "no download " + std::to_string(id));
            }
            if (!pool->cancel(id)) {
              return json_error(res, 409, "download " + std::to_string(id) + " has already ended");
            }
            store->record_event("cancel", actor(req), req.remote_addr, "download " + std::to_string(id));
            json::Writer w;
            write_job(w, pool->get(id).value_or(*job));
            json_response(res, 200, w.str());
          });
        });
    http.Get("/api/v1/events", [this](const httplib::Request& req, httplib::Response& res) {
      api(req, res, false, [&] {
        const auto q = list_query(req, res, true);
        if (!q) {
          return;
        }
        const auto page = store->list_events(*q);
        json::Writer w;
        w.begin_object().key("items").begin_array();
        for (const auto& e : page.items) {
          w.begin_object()
              .key("id")
              .value(e.id)
              .key("time")
              .value(rfc3339(e.time))
              .key("kind")
              .value(e.kind)
              .key("actor")
              .value(e.actor)
              .key("address")
              .value(e.address)
              .key("details")
              .value(e.details)
              .end_object();
        }
        w.end_array().key("total").value(page.total).end_object();
        json_response(res, 200, w.str());
      });
    });
    http.Get("/api/v1/stats", [this](const httplib::Request& req, httplib::Response& res) {
      api(req, res, false, [&] {
        const auto t = store->totals();
        json::Writer w;
        w.begin_object()
            .key("artifacts")
            .value(t.artifacts)
            .key("stored_bytes")
            .value(t.stored_bytes)
            .key("capacity")
            .value(t.max_bytes)
            .key("hits")
            .value(t.hits)
            .key("misses")
            .value(t.misses)
            .key("bytes_served")
            .value(metrics.bytes_served.load())
            .key("bytes_fetched")
            .value(metrics.bytes_fetched.load())
            .key("queue_depth")
            .value(static_cast<std::uint64_t>(pool->queue_depth()))
            .end_object();
        json_response(res, 200, w.str());
      });
    });
    // Anything else under /api/ is a JSON 404, not cpp-httplib's empty page.
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (req.path.starts_with("/api/") && res.body.empty()) {
        json_error(res, res.status, res.status == 404 ? "no such route" : "request refused");
      }
    });
  }
};

Server::Server(ServerOptions options) : m_impl(std::make_unique<Impl>(std::move(options))) {}

Server::~Server() {
  m_impl->http.stop();
  m_impl->pool->shutdown();
}

void Server::bind() {
  const auto& o = m_impl->options;
  errno = 0;
  if (o.port == 0) {
    m_impl->bound_port = m_impl->http.bind_to_any_port(o.host);
    if (m_impl->bound_port <= 0) {
      throw StartupError("cannot listen on " + o.host + ": " + std::strerror(errno));
    }
    return;
  }
  if (!m_impl->http.bind_to_port(o.host, o.port)) {
    const int err = errno;
    throw StartupError("cannot listen on " + o.host + ":" + std::to_string(o.port) + ": " +
                       (err != 0 ? std::strerror(err) : "address in use or not available"));
  }
  m_impl->bound_port = o.port;
}

int Server::port() const noexcept {
  return m_impl->bound_port;
}

void Server::run() {
  m_impl->http.listen_after_bind();
}

void Server::stop() {
  m_impl->http.stop();
}

} // namespace withcache::server
