// withcache::server: opens the store and the fill pool, registers every
// route file on one router, and serves it on the event-driven transport.
#include "withcache/server.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "json/json.hpp"
#include "server/context.hpp"
#include "server/transport.hpp"
#include "withcache/url.hpp"
#include "withcache/util/size.hpp"
#include "withcache/util/strings.hpp"
#include "withcache/version.hpp"

namespace withcache::server {
namespace {

// "/b/aHR0cHM6Ly9...long.../x.run" → "/b/aHR0cHM6Ly9…/x.run": tokens carry whole URLs. Control
// characters are escaped so a path cannot forge a log line.
std::string loggable_path(const std::string& path) {
  std::string shown = path;
  if (path.starts_with("/b/")) {
    const std::size_t end = path.find('/', 3);
    const std::string token = path.substr(3, end == std::string::npos ? std::string::npos : end - 3);
    shown = "/b/" + (token.size() > 12 ? token.substr(0, 12) + "\xE2\x80\xA6" : token);
    if (end != std::string::npos) {
      shown += path.substr(end);
    }
  }
  return util::escape_control(shown);
}

// One server per data dir: an exclusive flock(2) on <data-dir>/lock for the server's lifetime, holding its
// PID, so a second server (or two resuming the same .part) refuses to start and names the holder.
class DataDirLock {
 public:
  explicit DataDirLock(const std::filesystem::path& data_dir) {
    std::error_code ec;
    std::filesystem::create_directories(data_dir, ec);
    if (ec) {
      throw StartupError("cannot create " + data_dir.string() + ": " + ec.message());
    }
    const std::filesystem::path path = data_dir / "lock";
    m_fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (m_fd < 0) {
      throw StartupError("cannot open " + path.string() + ": " + std::strerror(errno));
    }
    if (::flock(m_fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      char holder[32] = {};
      const ssize_t n = ::pread(m_fd, holder, sizeof holder - 1, 0);
      ::close(m_fd);
      if (err == EWOULDBLOCK) {
        const std::string pid = n > 0 ? std::string(util::trim(std::string_view(holder, static_cast<std::size_t>(n)),
                                                               util::k_whitespace))
                                      : "unknown";
        throw StartupError("data dir " + data_dir.string() + " is in use by another withcache-server (pid " + pid +
                           "); one server per data dir");
      }
      throw StartupError("cannot lock " + path.string() + ": " + std::strerror(err));
    }
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(m_fd, 0) != 0 || ::pwrite(m_fd, pid.data(), pid.size(), 0) < 0) {
      spdlog::warn("cannot write the PID into {}: {}", path.string(), std::strerror(errno));
    }
  }
  ~DataDirLock() {
    ::close(m_fd); // releases the lock; the file stays (its PID is stale, the lock is what counts)
  }
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

 private:
  int m_fd = -1;
};

TransportOptions transport_options(const ServerOptions& o) {
  TransportOptions t;
  t.host = o.host;
  t.port = o.port;
  t.io_threads = o.io_threads;
  t.head_timeout = o.head_timeout;
  t.idle_timeout = o.idle_timeout;
  t.body_timeout = o.body_timeout;
  t.send_timeout = o.send_timeout;
  t.max_header_bytes = o.max_header_bytes;
  t.max_header_fields = o.max_header_fields;
  t.max_body_bytes = o.max_body_bytes;
  t.max_connections_per_address = o.max_connections_per_address;
  t.tls_cert = o.tls_cert;
  t.tls_key = o.tls_key;
  t.tls_key_passphrase_file = o.tls_key_passphrase_file;
  t.server_header = k_product;
  t.access_log = [](const Request& req, const Response& res, double ms, bool complete) {
    if (!spdlog::should_log(spdlog::level::info)) {
      return;
    }
    // Only the path: query strings (and /blob?url=) may carry origin tokens. Cut like a URL: a path (a
    // `/b/` name) is as long as the client wants, within the head limit.
    const std::string target =
        res.log_target.empty() ? loggable_path(req.path) : util::escape_control(res.log_target);
    spdlog::info("{} {} {} {} {:.1f}ms {}{}", req.remote_address,
                 util::shorten(util::escape_control(req.method), url::k_shown_url_bytes),
                 util::shorten(target, url::k_shown_url_bytes), res.status, ms, res.content_length(),
                 complete ? "" : " (cut)");
  };
  return t;
}

} // namespace

struct Server::Impl {
  std::unique_ptr<DataDirLock> lock; // first: taken before the store opens, released last
  Context ctx;
  Router router;
  std::unique_ptr<Transport> transport; // last: destroyed (and its workers joined) before ctx
  std::string policy_text;

  explicit Impl(ServerOptions opts) {
    ctx.options = std::move(opts);
    const auto& options = ctx.options;
    lock = std::make_unique<DataDirLock>(options.data_dir);
    try {
      ctx.store = std::make_unique<store::BlobStore>(
          store::StoreOptions{options.data_dir, options.max_bytes, std::chrono::milliseconds(500)});
    } catch (const store::StoreError& e) {
      throw StartupError(e.what());
    }
    const auto& recovered = ctx.store->recovery();
    if (recovered.stray_parts_removed + recovered.blobs_without_row_removed + recovered.rows_without_blob_dropped +
            recovered.replacements_completed + recovered.removals_finished >
        0) {
      spdlog::warn("recovered the store: removed {} stray partial files, {} blobs without a row, {} rows "
                   "without a blob; finished {} replacements and {} deletes",
                   recovered.stray_parts_removed, recovered.blobs_without_row_removed,
                   recovered.rows_without_blob_dropped, recovered.replacements_completed,
                   recovered.removals_finished);
    }

    fills::PoolOptions pool_options;
    pool_options.workers = options.workers;
    pool_options.key_options = options.key_options();
    pool_options.max_age = options.max_age;
    std::vector<origin::Network> allowed_private;
    for (const auto& text : options.allow_private) {
      auto networks = origin::parse_allow_private(text);
      if (!networks) {
        throw StartupError(networks.error());
      }
      allowed_private.insert(allowed_private.end(), networks->begin(), networks->end());
    }
    pool_options.fetch.policy = origin::OriginPolicy(options.allow_origins, std::move(allowed_private));
    pool_options.forward_auth = options.forward_auth;
    pool_options.queue_max = options.queue_max;
    pool_options.queue_max_per_client = options.queue_max_per_client;
    pool_options.min_free_bytes = options.min_free_bytes;
    pool_options.min_free_percent = options.min_free_percent;
    policy_text = pool_options.fetch.policy.describe();
    pool_options.fetch.connect_timeout = options.fetch_connect_timeout;
    pool_options.fetch.read_timeout = options.fetch_read_timeout;
    pool_options.fetch.head_timeout = options.fetch_head_timeout;
    pool_options.fetch.min_rate = options.min_rate;
    pool_options.fetch.cache_html = options.cache_html;
    // Never fill from ourselves. With --port 0 the port is known only after bind(), which adds it.
    ctx.own_listeners = std::make_shared<origin::OwnListeners>();
    if (options.port != 0) {
      if (auto error = ctx.own_listeners->add(options.host, options.port)) {
        spdlog::warn("cannot tell fills to avoid this server's own address: {}", *error);
      }
    }
    pool_options.fetch.own_listeners = ctx.own_listeners;
    // The pool records fill_failed / fill_refused events with their reasons; we record completions.
    pool_options.record_events = true;
    pool_options.on_finished = [this](const Job& job) { on_fill_finished(job); };
    ctx.pool = std::make_unique<fills::FillPool>(*ctx.store, std::move(pool_options));
    if (!ctx.pool->recovery_error().empty()) {
      spdlog::error("queued fills were not resumed ({}); they stay in cache.db for the next start",
                    ctx.pool->recovery_error());
    }
    ctx.scrubber = std::make_unique<store::Scrubber>(*ctx.store, scrub_options());
    try {
      const std::string secret = auth::session_secret(options.data_dir, options.session_secret.c_str());
      ctx.sessions = std::make_unique<auth::Sessions>(secret);
      ctx.device_cookies = std::make_unique<auth::DeviceCookies>(secret);
    } catch (const std::exception& e) {
      throw StartupError(e.what());
    }
    load_sessions(ctx);

    add_read_path(router, ctx);
    add_health_and_metrics(router, ctx);
    add_session_routes(router, ctx);
    add_ui_routes(router, ctx);
    add_api_routes(router, ctx);
    // The operator surface (pages, actions, API, its assets) carries the CSP and framing headers.
    const auto operator_surface = [](std::string_view path) {
      return path == "/" || path.starts_with("/ui/") || path.starts_with("/admin/") || path.starts_with("/api/") ||
             path.starts_with("/static/");
    };
    router.wrap([&](const Router::Route& route) { return operator_surface(route.path); }, secured);
    router.set_not_found(secured([](const Request& req) {
      // Anything else under /api/ is a JSON 404.
      return req.path.starts_with("/api/") ? json_text(404, json::dump(json::Json{{"error", "no such route"}}))
                                           : plain(404, "not found\n");
    }));
    transport = std::make_unique<Transport>(transport_options(options), router);
    ctx.transport_stats = [t = transport.get()] { return t->stats(); };
  }

  // The scrub reads at --scrub-rate, and not at all while fills run or blobs are being sent fast: its
  // disk reads would compete with them. What it finds damaged is filled again from its origin.
  store::ScrubOptions scrub_options() {
    store::ScrubOptions scrub;
    scrub.rate = ctx.options.scrub_rate;
    scrub.busy = [this, last_bytes = std::uint64_t{0}, last_at = std::chrono::steady_clock::now()]() mutable {
      constexpr double k_busy_serving = 64.0 * 1024 * 1024; // bytes a second served
      const auto t = std::chrono::steady_clock::now();
      const std::uint64_t bytes = ctx.metrics.bytes_served.load();
      const double seconds = std::chrono::duration<double>(t - last_at).count();
      const double rate = seconds > 0 ? static_cast<double>(bytes - std::min(bytes, last_bytes)) / seconds : 0;
      last_bytes = bytes;
      last_at = t;
      return ctx.pool->running() > 0 || rate > k_busy_serving;
    };
    scrub.on_damaged = [this](const Artifact& artifact, const std::string& found) {
      const std::string shown = url::shown(artifact.url);
      if (found.empty()) {
        spdlog::warn("scrub: the blob of {} is missing or of the wrong size: dropped, filling it again", shown);
      } else {
        spdlog::warn("scrub: the blob of {} hashes to {}, not {}: moved to quarantine/, filling it again", shown,
                     found, artifact.sha256);
      }
      const auto queued =
          ctx.pool->enqueue(artifact.raw_url.empty() ? artifact.url : artifact.raw_url, {}, /*by_operator=*/true);
      if (!queued) {
        spdlog::warn("scrub: cannot fill {} again: {}", shown, queued.error().message);
      }
    };
    return scrub;
  }

  void on_fill_finished(const Job& job) {
    const std::string shown = url::shown(job.url);
    switch (job.status) {
    case JobStatus::completed:
      ++ctx.metrics.fills_completed;
      ctx.metrics.bytes_fetched += job.bytes_done;
      spdlog::info("fill completed: {} ({} bytes)", shown, job.bytes_done);
      ctx.store->record_event("fill_completed", "system", "", shown + " (" + util::format_size(job.bytes_done) + ")");
      break;
    case JobStatus::cancelled:
      ++ctx.metrics.fills_cancelled;
      spdlog::info("fill cancelled: {}", shown);
      ctx.store->record_event("fill_cancelled", "system", "", shown);
      break;
    default:
      ++ctx.metrics.fills_failed;
      // The pool records the event, with its reason. A refusal is logged once per URL, and any fill
      // failure within the line budget: anyone can make fills of distinct URLs fail.
      if (job.error_reason != "refused_origin" || ctx.logged_refusals.first(job.key)) {
        if (auto line = ctx.fill_failure_lines.line("fill failed: " + job.error, "failed fills")) {
          spdlog::warn("{}", *line);
        }
      }
      break;
    }
  }
};

Server::Server(ServerOptions options) : m_impl(std::make_unique<Impl>(std::move(options))) {}

Server::~Server() {
  m_impl->transport->stop();
  m_impl->ctx.scrubber->stop();
  m_impl->ctx.pool->shutdown();
}

Expected<store::VerifyReport, std::string>
verify_data_dir(const std::filesystem::path& data_dir, const std::function<void(const store::VerifyProgress&)>& progress) {
  std::error_code ec;
  if (!std::filesystem::is_directory(data_dir, ec)) {
    throw StartupError("data dir " + data_dir.string() + " does not exist");
  }
  const DataDirLock lock(data_dir); // a running server holds it: verifying under it would race its writes
  return store::verify_data_dir(data_dir, progress);
}

void Server::bind() {
  try {
    m_impl->transport->bind();
  } catch (const std::exception& e) {
    throw StartupError(e.what());
  }
  if (m_impl->ctx.options.port == 0) {
    if (auto error = m_impl->ctx.own_listeners->add(m_impl->ctx.options.host, m_impl->transport->port())) {
      spdlog::warn("cannot tell fills to avoid this server's own address: {}", *error);
    }
  }
}

int Server::port() const noexcept {
  return m_impl->transport->port();
}

std::string Server::local_endpoint() const {
  return m_impl->transport->local_endpoint();
}

std::string Server::origin_policy() const {
  return m_impl->policy_text;
}

bool Server::tls() const noexcept {
  return m_impl->transport->tls();
}

void Server::run() {
  m_impl->transport->run();
}

void Server::stop() {
  m_impl->transport->stop();
}

std::string Server::reload_tls() {
  return m_impl->transport->reload_tls();
}

void Server::reload_tls_async(std::function<void(const std::string& error)> done) {
  m_impl->transport->reload_tls_async(std::move(done));
}

} // namespace withcache::server
