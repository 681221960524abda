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

#include "auth/auth.hpp"
#include "http/http.hpp"
#include "json/json.hpp"
#include "server/pages.hpp"
#include "withcache/digest.hpp"
#include "withcache/fills.hpp"
#include "withcache/store.hpp"
#include "withcache/url.hpp"
#include "withcache/util/encoding.hpp"
#include "withcache/util/size.hpp"
#include "withcache/util/strings.hpp"
#include "withcache/util/time.hpp"
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
  std::unique_ptr<fills::FillPool> pool;
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

    fills::PoolOptions pool_options;
    pool_options.workers = options.workers;
    pool_options.key_options = options.key_options();
    pool_options.max_age = options.max_age;
    pool_options.fetch.policy = origin::OriginPolicy(options.allow_origins);
    pool_options.fetch.connect_timeout = options.fetch_connect_timeout;
    pool_options.fetch.read_timeout = options.fetch_read_timeout;
    pool_options.fetch.head_timeout = options.fetch_head_timeout;
    pool_options.fetch.min_rate = options.min_rate;
    pool_options.fetch.cache_html = options.cache_html;
    // Never fill from ourselves. With --port 0 the port is known only after bind().
    auto own_listeners = std::make_shared<origin::OwnListeners>();
    if (options.port != 0) {
      if (auto error = own_listeners->add(options.host, options.port)) {
        spdlog::warn("cannot tell fills to avoid this server's own address: {}", *error);
      }
    }
    pool_options.fetch.own_listeners = own_listeners;
    // on_fill_finished records the fill events until the read path records the reasons itself.
    pool_options.record_events = false;
    pool_options.on_finished = [this](const Job& job) {
      on_fill_finished(job);
    };
    pool = std::make_unique<fills::FillPool>(*store, std::move(pool_options));
    try {
      sessions = std::make_unique<auth::Sessions>(
          auth::session_secret(options.data_dir, options.session_secret.c_str()));
    } catch (const std::exception& e) {
      throw StartupError(e.what());
    }
    configure_http();
  }

  void on_fill_finished(const Job& job) {
    const std::string shown = url::redact(job.url);
    switch (job.status) {
    case JobStatus::completed:
      ++metrics.fills_completed;
      metrics.bytes_fetched += job.bytes_done;
      spdlog::info("fill completed: {} ({} bytes)", shown, job.bytes_done);
      store->record_event("fill_completed", "system", "",
                          shown + " (" + util::format_size(job.bytes_done) + ")");
      break;
    case JobStatus::cancelled:
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
      origin::Headers headers;
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
           digest::constant_time_equal(header.substr(7), options.api_token);
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
    json_response(res, status, json::dump(json::Json{{"error", message}}));
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
      const auto value = http::parse_decimal(req.get_param_value(name));
      if (!value || *value > max) {
        return false;
      }
      out = *value;
      return true;
    };
    if (!number("offset", q.offset, 1'000'000'000'000ULL) || !number("limit", q.limit, 1000)) {
      const std::string message = "offset and limit must be whole numbers (limit at most 1000)";
      api ? json_error(res, 400, message) : plain(res, 400, message + "\n");
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
  static std::optional<origin::Headers> header_lines(const httplib::Request& req) {
    origin::Headers headers;
    const auto range = req.params.equal_range("header");
    for (auto it = range.first; it != range.second; ++it) {
      auto fields = http::parse_header_lines(it->second);
      if (!fields) {
        return std::nullopt;
      }
      headers.insert(headers.end(), fields->begin(), fields->end());
    }
    return headers;
  }

  pages::Listing listing_of(const std::string& path, const store::ListQuery& q, std::uint64_t total) const {
    return pages::Listing{path, q.filter, q.offset, q.limit, total};
  }

  Expected<pages::Dashboard, std::string> dashboard() {
    WITHCACHE_TRY_ASSIGN(auto totals, store->totals());
    return pages::Dashboard{totals, pool->queue_depth(), pool->running(), metrics.bytes_served.load(),
                            options.curate};
  }

  // A section's HTML; a database failure comes back as its one-line message.
  Expected<std::string, std::string> fragment_for(const std::string& section, const store::ListQuery& q) {
    if (section == "dashboard") {
      return dashboard().transform(pages::dashboard_fragment);
    }
    if (section == "downloads") {
      return pages::downloads_fragment(pool->list());
    }
    if (section == "misses") {
      return store->list_misses(q).transform([&](const store::Page<store::Miss>& page) {
        return pages::misses_fragment(page, listing_of("/ui/misses", q, page.total), options.curate);
      });
    }
    if (section == "artifacts") {
      return store->list_artifacts(q).transform([&](const store::Page<store::Artifact>& page) {
        return pages::artifacts_fragment(page, listing_of("/ui/artifacts", q, page.total));
      });
    }
    return store->list_events(q).transform([&](const store::Page<store::Event>& page) {
      return pages::events_fragment(page, listing_of("/ui/events", q, page.total));
    });
  }

  static void unavailable(httplib::Response& res, const std::string& reason) {
    spdlog::error("{}", reason);
    plain(res, 503, "the cache database is unavailable: " + reason + "\n");
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
    const auto fragment = fragment_for(section, *q);
    if (!fragment) {
      return unavailable(res, fragment.error());
    }
    if (is_htmx(req)) {
      return html(res, 200, *fragment);
    }
    std::string self = section == "dashboard" ? "/" : "/ui/" + section;
    if (req.has_param("q") || req.has_param("offset") || req.has_param("limit")) {
      self += "?q=" + util::percent_encode(q->filter) + "&offset=" + std::to_string(q->offset) +
              "&limit=" + std::to_string(q->limit);
    }
    const std::string filter = section == "dashboard" || section == "downloads"
                                   ? ""
                                   : pages::filter_form("/ui/" + section, q->filter);
    html(res, 200,
         pages::layout(title, title, !ui_open(), filter + pages::live_section(section, self, *fragment)));
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
      const auto fragment = fragment_for(section, store::ListQuery{0, 50, ""});
      if (!fragment) {
        return unavailable(res, fragment.error());
      }
      return html(res, error.empty() ? 200 : 400, *fragment);
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
      if (!digest::constant_time_equal(req.get_param_value("password"), options.admin_password)) {
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
    // withcache 0.3's dashboard fragment, which its operator pages poll.
    http.Get("/admin/dash", [this](const httplib::Request& req, httplib::Response& res) {
      if (!page_allowed(req)) {
        return plain(res, 401, "log in first (POST /ui/login)\n");
      }
      const auto d = dashboard();
      if (!d) {
        return unavailable(res, d.error());
      }
      html(res, 200, pages::dashboard_fragment(*d));
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
        const auto dismissed = store->dismiss_miss(key);
        if (!dismissed || !*dismissed) {
          return {dismissed ? "no such miss" : dismissed.error(), "misses"};
        }
        store->record_event("dismiss", actor(req), req.remote_addr, key);
        return {"", "misses"};
      });
    });
    http.Post("/admin/delete", [this](const httplib::Request& req, httplib::Response& res) {
      form_action(req, res, [&]() -> std::pair<std::string, std::string> {
        const std::string key = req.get_param_value("key");
        const auto artifact = store->find(key);
        const auto removed = artifact ? store->remove(key) : Expected<bool, std::string>(false);
        if (!removed || !*removed) {
          return {removed ? "no such artifact" : removed.error(), "artifacts"};
        }
        store->record_event("delete", actor(req), req.remote_addr, artifact->url);
        return {"", "artifacts"};
      });
    });
    http.Post("/admin/cancel", [this](const httplib::Request& req, httplib::Response& res) {
      form_action(req, res, [&]() -> std::pair<std::string, std::string> {
        const std::string id = req.get_param_value("id");
        const auto number = http::parse_decimal(id);
        if (!number || id.size() > 18 || !pool->cancel(static_cast<std::int64_t>(*number))) {
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

  // `{"items": [...], "total": N}` of a listing, or the database's failure as 503.
  template <class T>
  static void json_page(httplib::Response& res, const Expected<store::Page<T>, std::string>& page) {
    if (!page) {
      spdlog::error("{}", page.error());
      return json_error(res, 503, "the cache database is unavailable: " + page.error());
    }
    json_response(res, 200, json::dump(json::Json{{"items", page->items}, {"total", page->total}}));
  }

  void configure_api() {
    http.Get("/api/v1/artifacts", [this](const httplib::Request& req, httplib::Response& res) {
      api(req, res, false, [&] {
        if (const auto q = list_query(req, res, true)) {
          json_page(res, store->list_artifacts(*q));
        }
      });
    });
    http.Delete(R"(/api/v1/artifacts/([0-9a-f]{64}))",
                [this](const httplib::Request& req, httplib::Response& res) {
                  api(req, res, true, [&] {
                    const std::string key = req.matches[1];
                    const auto artifact = store->find(key);
                    const auto removed = artifact ? store->remove(key) : Expected<bool, std::string>(false);
                    if (!removed) {
                      return json_error(res, 503, "the cache database is unavailable: " + removed.error());
                    }
                    if (!*removed) {
                      return json_error(res, 404, "no artifact with key " + key);
                    }
                    store->record_event("delete", actor(req), req.remote_addr, artifact->url);
                    json_response(res, 200, json::dump(json::Json{{"deleted", key}}));
                  });
                });
    http.Get("/api/v1/misses", [this](const httplib::Request& req, httplib::Response& res) {
      api(req, res, false, [&] {
        if (const auto q = list_query(req, res, true)) {
          json_page(res, store->list_misses(*q));
        }
      });
    });
    http.Delete(R"(/api/v1/misses/([0-9a-f]{64}))",
                [this](const httplib::Request& req, httplib::Response& res) {
                  api(req, res, true, [&] {
                    const std::string key = req.matches[1];
                    const auto dismissed = store->dismiss_miss(key);
                    if (!dismissed) {
                      return json_error(res, 503, "the cache database is unavailable: " + dismissed.error());
                    }
                    if (!*dismissed) {
                      return json_error(res, 404, "no miss with key " + key);
                    }
                    store->record_event("dismiss", actor(req), req.remote_addr, key);
                    json_response(res, 200, json::dump(json::Json{{"dismissed", key}}));
                  });
                });
    http.Get("/api/v1/downloads", [this](const httplib::Request& req, httplib::Response& res) {
      api(req, res, false, [&] {
        const auto q = list_query(req, res, true);
        if (!q) {
          return;
        }
        // Case-insensitive, like the other listings.
        const std::string filter = util::lower(q->filter);
        store::Page<Job> page;
        for (auto& j : pool->list()) {
          if (filter.empty() || util::lower(j.url).find(filter) != std::string::npos) {
            if (page.total >= q->offset && page.items.size() < q->limit) {
              page.items.push_back(std::move(j));
            }
            ++page.total;
          }
        }
        json_page(res, Expected<store::Page<Job>, std::string>(std::move(page)));
      });
    });
    http.Post("/api/v1/downloads", [this](const httplib::Request& req, httplib::Response& res) {
      api(req, res, true, [&] {
        const auto body = json::parse(req.body);
        if (!body || !body->is_object()) {
          return json_error(res, 400, body ? "the body must be a JSON object" : body.error());
        }
        for (const auto& [name, value] : body->items()) {
          if (name != "url" && name != "headers") {
            return json_error(res, 400, "unknown field '" + name + "' (expected url and headers)");
          }
        }
        const auto url_field = body->find("url");
        if (url_field == body->end() || !url_field->is_string()) {
          return json_error(res, 400, "'url' (a string) is required");
        }
        origin::Headers headers;
        if (const auto h = body->find("headers"); h != body->end()) {
          if (!h->is_object()) {
            return json_error(res, 400, "'headers' must be an object of strings");
          }
          for (const auto& [name, value] : h->items()) {
            if (!value.is_string()) {
              return json_error(res, 400, "header " + name + " must be a string");
            }
            headers.emplace_back(name, value.get<std::string>());
          }
        }
        auto queued = pool->enqueue(url_field->get<std::string>(), headers);
        if (!queued) {
          const int status = queued.error().code == fills::EnqueueErrc::already_cached ||
                                     queued.error().code == fills::EnqueueErrc::cache_full ||
                                     queued.error().code == fills::EnqueueErrc::shutting_down
                                 ? 409
                                 : 400;
          return json_error(res, status, queued.error().message);
        }
        store->record_event("fetch", actor(req), req.remote_addr, url::redact(queued->job.url));
        json_response(res, 202, json::dump(json::Json(queued->job)));
      });
    });
    http.Delete(
        R"(/api/v1/downloads/([0-9]{1,18}))", [this](const httplib::Request& req, httplib::Response& res) {
          api(req, res, true, [&] {
            const auto id = static_cast<std::int64_t>(http::parse_decimal(req.matches[1].str()).value_or(0));
            const auto job = pool->get(id);
            if (!job) {
              return json_error(res, 404, "no download " + std::to_string(id));
            }
            if (!pool->cancel(id)) {
              return json_error(res, 409, "download " + std::to_string(id) + " has already ended");
            }
            store->record_event("cancel", actor(req), req.remote_addr, "download " + std::to_string(id));
            json_response(res, 200, json::dump(json::Json(pool->get(id).value_or(*job))));
          });
        });
    http.Get("/api/v1/events", [this](const httplib::Request& req, httplib::Response& res) {
      api(req, res, false, [&] {
        if (const auto q = list_query(req, res, true)) {
          json_page(res, store->list_events(*q));
        }
      });
    });
    http.Get("/api/v1/stats", [this](const httplib::Request& req, httplib::Response& res) {
      api(req, res, false, [&] {
        const auto t = store->totals();
        if (!t) {
          return json_error(res, 503, "the cache database is unavailable: " + t.error());
        }
        const Stats stats{t->artifacts,
                          t->stored_bytes,
                          t->max_bytes,
                          t->hits,
                          t->misses,
                          metrics.bytes_served.load(),
                          metrics.bytes_fetched.load(),
                          static_cast<std::uint64_t>(pool->queue_depth())};
        json_response(res, 200, json::dump(json::Json(stats)));
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
