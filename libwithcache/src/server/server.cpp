#include "withcache/server.hpp"

#include <cerrno>
#include <cstring>
#include <mutex>
#include <sstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "withcache/downloads.hpp"
#include "withcache/http.hpp"
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
    configure_http();
  }

  void on_fill_finished(const downloads::Job& job) {
    const std::string shown = url::redact(job.url);
    switch (job.status) {
    case downloads::JobStatus::completed:
      ++metrics.fills_completed;
      metrics.bytes_fetched += job.bytes_done;
      spdlog::info("fill completed: {} ({} bytes)", shown, job.bytes_done);
      break;
    case downloads::JobStatus::cancelled:
      ++metrics.fills_cancelled;
      spdlog::info("fill cancelled: {}", shown);
      break;
    default:
      ++metrics.fills_failed;
      spdlog::warn("fill failed: {}", job.error);
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
    http.Get("/", [this](const httplib::Request&, httplib::Response& res) { status_page(res); });
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

  void status_page(httplib::Response& res) {
    std::ostringstream out;
    out << k_product << "\n\n"
        << "artifacts     " << store->artifact_count() << '\n'
        << "stored        " << store::format_size(store->stored_bytes());
    if (store->max_bytes() != 0) {
      out << " of " << store::format_size(store->max_bytes()) << (store->is_full() ? " (cache full)" : "");
    }
    out << "\nfills         " << pool->running() << " running, " << pool->queue_depth() << " queued\n"
        << "mode          " << (options.curate ? "curated (misses wait for an operator)" : "auto-fetch")
        << "\n\n"
        << "Cache URL of an origin: /b/<url-safe base64 of the URL>/<file name>, or /blob?url=<URL>.\n"
        << "Metrics: /metrics   Health: /healthz\n";
    plain(res, 200, out.str());
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
