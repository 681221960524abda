// The open read path of SPEC §3: `GET`/`HEAD /b/<token>[/<name>]` and
// `/blob?url=`. It runs on the I/O threads, so it touches only memory (the
// store's index, the pool's queue), one stat(2) for a HEAD and one open(2)
// and fstat(2) for a GET: never SQLite.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>

#include <spdlog/spdlog.h>

#include "http/http.hpp"
#include "server/context.hpp"
#include "withcache/url.hpp"
#include "withcache/util/strings.hpp"
#include "withcache/util/time.hpp"

namespace withcache::server {
namespace {

constexpr const char* k_miss_body = "cache miss (recorded)\n";

Response bad_request(Context& ctx, const std::string& reason) {
  ++ctx.metrics.bad_requests;
  Response res = plain(400, reason + "\n");
  res.log_target = "[bad request]";
  return res;
}

// `cache miss (recorded)`, with `; <reason>` when something stops the fill (SPEC §3).
Response miss_response(std::string_view reason) {
  return plain(404, reason.empty() ? std::string(k_miss_body)
                                   : "cache miss (recorded; " + std::string(reason) + ")\n");
}

// A URL over url::k_max_origin_url: 414, before anything is recorded or queued.
Response too_long(Context& ctx, const url::UrlError& error) {
  ++ctx.metrics.bad_requests;
  Response res = plain(414, error.message + "\n");
  res.log_target = "[URL too long]";
  return res;
}

Response miss(Context& ctx, const Request& req, const std::string& key, const std::string& origin) {
  ++ctx.metrics.misses;
  if (ctx.store->record_miss(key, origin)) {
    // Through the budget: a flood of distinct URLs from anyone must not flood the log.
    if (auto line = ctx.first_miss_lines.line("first miss: " + url::shown(origin), "first misses")) {
      spdlog::info("{}", *line);
    }
    ctx.store->record_event("first_miss", "system", req.remote_address, url::shown(origin));
  }
  if (ctx.options.curate) {
    // Nothing is fetched; a refusal or failure of an operator's earlier Download still says why.
    const auto backoff = ctx.store->backoff(key, util::now());
    return miss_response(backoff ? backoff->reason : std::string());
  }
  // The reader's Authorization goes to the pool, which uses it only with --forward-auth and otherwise
  // refuses the fill ("carries credentials"), as it does for userinfo in the URL.
  origin::Headers headers;
  if (req.has_header("Authorization")) {
    headers.emplace_back("Authorization", std::string(req.header("Authorization")));
  }
  auto queued = ctx.pool->enqueue(origin, std::move(headers), /*by_operator=*/false, req.remote_address);
  if (queued) {
    if (!queued->joined) {
      ++ctx.metrics.fills_queued;
    }
    return miss_response({});
  }
  const auto& error = queued.error();
  switch (error.code) {
  case fills::EnqueueErrc::backing_off: // the message is the recorded reason, e.g. "not stored: …"
    return miss_response(error.message);
  case fills::EnqueueErrc::already_cached: // filled between our lookup and now
    return miss_response({});
  case fills::EnqueueErrc::refused_origin:
  case fills::EnqueueErrc::carries_credentials: {
    // A refusal: recorded on the miss (unless a back-off already says why), logged once per URL.
    const std::string reason = "not fetched: " + error.message;
    ++(error.code == fills::EnqueueErrc::refused_origin ? ctx.metrics.not_queued_policy
                                                        : ctx.metrics.not_queued_credentials);
    if (!ctx.store->backoff(key, util::now())) {
      ctx.store->record_fill_failure(key, origin, reason, /*back_off=*/false);
    }
    if (ctx.logged_refusals.first(key)) {
      const std::string why = util::shorten(error.message, url::k_shown_url_bytes);
      if (auto line = ctx.refusal_lines.line("not fetching " + url::shown(origin) + ": " + why, "refusals")) {
        spdlog::warn("{}", *line);
      }
    }
    return miss_response(reason);
  }
  case fills::EnqueueErrc::queue_full:
    ++ctx.metrics.not_queued_cap;
    return miss_response("not fetched: " + error.message);
  case fills::EnqueueErrc::low_disk_space:
    ++ctx.metrics.not_queued_disk;
    return miss_response("not fetched: " + error.message);
  default:
    spdlog::debug("no fill for {}: {}", url::shown(origin),
                  util::shorten(error.message, url::k_shown_url_bytes));
    return miss_response("not fetched: " + error.message);
  }
}

// The request's If-Range, nothing when it has none.
std::optional<std::string_view> if_range_of(const Request& req) {
  if (!req.has_header("If-Range")) {
    return std::nullopt;
  }
  return std::string_view(req.header("If-Range"));
}

// The headers every blob response carries (200, 206, 304, 416): validators, and what keeps a cached
// file from running as the UI's origin in a browser (nosniff, a sandboxing CSP, a download by default).
void blob_headers(Response& res, const store::Artifact& artifact) {
  res.set("ETag", "\"" + artifact.sha256 + "\"");
  res.set("X-Withcache-Sha256", artifact.sha256);
  res.set("Last-Modified", http::http_date(artifact.fetched_at));
  res.set("Accept-Ranges", "bytes");
  res.set("X-Content-Type-Options", "nosniff");
  res.set("Content-Security-Policy", "sandbox; default-src 'none'");
  const bool disposition_ok = !artifact.content_disposition.empty() &&
                              !http::check_field("Content-Disposition", artifact.content_disposition);
  res.set("Content-Disposition", disposition_ok ? artifact.content_disposition : "attachment");
  if (!artifact.content_encoding.empty() && !http::check_field("Content-Encoding", artifact.content_encoding)) {
    res.set("Content-Encoding", artifact.content_encoding);
  }
  // immutable only when it is: an artifact with a finite lifetime says how much of it is left (a year at
  // most: fills::k_changed_lifetime is decades away, and RFC 9111 caches stop counting at 2^31 s).
  constexpr UnixTime k_year = 31536000;
  res.set("Cache-Control", !fills::may_change(artifact)
                               ? std::string("public, max-age=31536000, immutable")
                               : "public, max-age=" + std::to_string(std::clamp<UnixTime>(
                                                          artifact.fresh_until - util::now(), 0, k_year)));
}

// When a Range gets a 206 from a stored artifact (http::answer_range). Immutable bytes keep RFC 9110's
// rules, so `curl -C -` and `wget -c` (a bare Range) resume from the cache. Bytes that can change or
// have (a finite lifetime, a replacement, a fill that restarted under readers) answer a Range only
// under an If-Range naming `"<sha256>"`: a bare Range may come from a client holding bytes of a
// version since replaced, and a date cannot tell two versions fetched in one second apart.
http::RangeGuard stored_range_guard(const store::Artifact& artifact, const std::string& etag) {
  const bool changes = fills::may_change(artifact);
  return http::RangeGuard{etag, changes ? std::nullopt : std::optional<std::time_t>(artifact.fetched_at),
                          !changes};
}

// 428 to a Range without If-Range that continues earlier bytes of bytes that can change: the client
// may hold another version's first bytes, and wget would splice them onto a 200 (http::RangeAnswer).
// It keeps the blob's headers (the ETag a client can resume with) and says what to do in one line.
Response needs_if_range(const Response& headers, std::string_view why) {
  Response res = plain(428, "resuming this download needs If-Range, since " + std::string(why) +
                                "; download it again from the start\n");
  for (const char* name : {"ETag", "Last-Modified", "X-Withcache-Sha256", "X-Withcache-Status",
                           "Accept-Ranges", "X-Content-Type-Options", "Content-Security-Policy"}) {
    if (const auto value = http::find_field(headers.headers, name)) {
      res.set(name, std::string(*value));
    }
  }
  res.set("Cache-Control", "no-store");
  return res;
}

// The range a request is granted under `guard` (http::answer_range): the one it asked for, none (the
// whole body), or nothing at all when the answer must be 428 (needs_if_range).
std::optional<http::ByteRange> granted_range(const Request& req, std::uint64_t total,
                                             const http::RangeGuard& guard) {
  if (!req.has_header("Range")) {
    return http::ByteRange{};
  }
  const http::ByteRange range = http::parse_range(req.header("Range"), total);
  switch (http::answer_range(range, if_range_of(req), guard)) {
  case http::RangeAnswer::range:
    return range;
  case http::RangeAnswer::whole:
    return http::ByteRange{};
  case http::RangeAnswer::needs_if_range:
    return std::nullopt;
  }
  return http::ByteRange{};
}

Response serve_blob(Context& ctx, const Request& req, const store::Artifact& artifact, FileBody file) {
  const std::string etag = "\"" + artifact.sha256 + "\"";
  Response res;
  blob_headers(res, artifact);
  if (req.has_header("If-None-Match") && http::none_match(req.header("If-None-Match"), etag)) {
    res.status = 304;
    return res;
  }
  const auto granted = granted_range(req, artifact.size, stored_range_guard(artifact, etag));
  if (!granted) {
    return needs_if_range(res, "it can change");
  }
  const http::ByteRange range = *granted;
  if (range.kind == http::ByteRange::Kind::unsatisfiable) {
    Response refused = plain(416, "range not satisfiable\n");
    refused.headers.insert(refused.headers.begin(), res.headers.begin(), res.headers.end());
    refused.set("Content-Range", "bytes */" + std::to_string(artifact.size));
    return refused;
  }
  // Checked again here: a row written before values were checked when a fill kept them.
  res.set("Content-Type", artifact.content_type.empty() || http::check_field("Content-Type", artifact.content_type)
                              ? "application/octet-stream"
                              : artifact.content_type);
  file.offset = 0;
  file.length = artifact.size;
  if (range.kind == http::ByteRange::Kind::partial) {
    file.offset = range.first;
    file.length = range.last - range.first + 1;
    res.status = 206;
    res.set("Content-Range", "bytes " + std::to_string(range.first) + "-" + std::to_string(range.last) + "/" +
                                 std::to_string(artifact.size));
  }
  if (!req.head) {
    ++ctx.metrics.hits;
    ctx.store->record_hit(artifact.key);
  }
  res.file = std::move(file);
  res.on_body_bytes = [&metrics = ctx.metrics](std::uint64_t n) { metrics.bytes_served += n; };
  return res;
}

// One client's view of a running fill: the bytes of its generation that have landed; cut when the fill
// restarts from zero (another generation) or ends without a blob.
class FillReader : public GrowingBody {
 public:
  FillReader(std::shared_ptr<fills::FillStream> stream, std::uint64_t generation)
      : m_stream(std::move(stream)), m_generation(generation) {
    m_stream->attach();
  }
  ~FillReader() override { m_stream->detach(); }
  FillReader(const FillReader&) = delete;
  FillReader& operator=(const FillReader&) = delete;

  [[nodiscard]] Now now() const override {
    const auto view = m_stream->view();
    using Phase = fills::FillStream::Phase;
    const bool same = view.generation == m_generation;
    const bool cut = !same || view.phase == Phase::failed || view.phase == Phase::waiting ||
                     view.phase == Phase::unstreamable;
    return Now{same ? view.available : 0, cut, view.version};
  }
  void wait(std::uint64_t version, std::function<void()> wake) override {
    m_stream->wait(version, std::move(wake));
  }

 private:
  std::shared_ptr<fills::FillStream> m_stream;
  std::uint64_t m_generation;
};

// Serves a fill that is running with a declared length: 200 (or 206) at once, Content-Length the total,
// X-Withcache-Status: filling, the validator of this generation's bytes (ETag) and no SHA-256 yet; the
// body follows the part file as it grows.
std::optional<Response> serve_filling(Context& ctx, const Request& req, const std::shared_ptr<fills::FillStream>& stream) {
  using Phase = fills::FillStream::Phase;
  auto [fd, view] = stream->open();
  FileBody file(fd, 0, 0);
  if ((view.phase != Phase::streaming && view.phase != Phase::done) || view.total == 0 || file.fd < 0) {
    return std::nullopt;
  }
  const auto header = [&](std::string_view name) { return std::string(http::find_field(view.headers, name).value_or("")); };
  Response res;
  res.set("X-Withcache-Status", "filling");
  res.set("Accept-Ranges", "bytes");
  // A response that may be cut short, whose validator names one attempt: nothing downstream should keep it.
  res.set("Cache-Control", "no-store");
  res.set("ETag", view.etag);
  const std::string last_modified = header("Last-Modified");
  if (!last_modified.empty() && !http::check_field("Last-Modified", last_modified)) {
    res.set("Last-Modified", last_modified); // the origin's, as a stored artifact will answer it
  }
  res.set("X-Content-Type-Options", "nosniff");
  res.set("Content-Security-Policy", "sandbox; default-src 'none'");
  const std::string disposition = header("Content-Disposition");
  res.set("Content-Disposition",
          !disposition.empty() && !http::check_field("Content-Disposition", disposition) ? disposition : "attachment");
  const std::string encoding = header("Content-Encoding");
  if (!encoding.empty() && !http::check_field("Content-Encoding", encoding)) {
    res.set("Content-Encoding", encoding);
  }
  const std::string type = header("Content-Type");
  res.set("Content-Type", type.empty() || http::check_field("Content-Type", type) ? "application/octet-stream" : type);

  // A Range is answered from this generation only for a client that proves, with If-Range, that its
  // bytes are this generation's: a bare Range (wget's retry after a cut, `curl -C -`, `wget -c`) may
  // come from a client holding bytes of the version before a restart, and gets the whole body.
  // Dates are not accepted: two versions published in one second share a Last-Modified.
  const auto granted = granted_range(req, view.total, http::RangeGuard{view.etag, std::nullopt, false});
  if (!granted) {
    return needs_if_range(res, "it is still being fetched");
  }
  const http::ByteRange range = *granted;
  if (range.kind == http::ByteRange::Kind::unsatisfiable) {
    Response refused = plain(416, "range not satisfiable\n");
    refused.headers.insert(refused.headers.begin(), res.headers.begin(), res.headers.end());
    refused.set("Content-Range", "bytes */" + std::to_string(view.total));
    return refused;
  }
  file.length = view.total;
  if (range.kind == http::ByteRange::Kind::partial) {
    file.offset = range.first;
    file.length = range.last - range.first + 1;
    res.status = 206;
    res.set("Content-Range", "bytes " + std::to_string(range.first) + "-" + std::to_string(range.last) + "/" +
                                 std::to_string(view.total));
  }
  if (req.head) {
    file = FileBody(-1, file.offset, file.length); // HEAD: the length, no descriptor, no reader
  } else {
    ++ctx.metrics.filling_served;
    file.growing = std::make_shared<FillReader>(stream, view.generation);
    res.on_body_bytes = [&metrics = ctx.metrics](std::uint64_t n) { metrics.filling_bytes_served += n; };
  }
  res.file = std::move(file);
  return res;
}

// Calls `wake` once the fill has a head (streamable or not) or has ended — not on its other updates.
void wait_for_head(const std::shared_ptr<fills::FillStream>& stream, std::function<void()> wake) {
  using Phase = fills::FillStream::Phase;
  const auto view = stream->view();
  if (view.phase != Phase::queued && view.phase != Phase::waiting) {
    wake();
    return;
  }
  stream->wait(view.version, [stream, wake = std::move(wake)]() mutable { wait_for_head(stream, std::move(wake)); });
}

// A hit: the artifact (and for a GET an open descriptor on exactly its bytes, so a replacement cannot
// slip in between the lookup and the open), or nothing for a miss. A hit is a blob that is there with
// its recorded size (a stat for HEAD, an fstat of the descriptor for GET): one that is not is dropped
// by the store and answered as a miss, which fills it again.
std::optional<std::pair<store::Artifact, FileBody>> lookup(Context& ctx, const Request& req, const std::string& key,
                                                           const std::string& origin) {
  store::Presence presence = store::Presence::not_cached;
  if (req.head) {
    if (auto artifact = ctx.store->find_present(key, &presence)) {
      return std::pair{std::move(*artifact), FileBody{}};
    }
  } else if (auto opened = ctx.store->open_blob(key, &presence)) {
    const int fd = opened->release();
    return std::pair{opened->artifact(), FileBody{fd, 0, 0}};
  }
  if (presence == store::Presence::dropped) {
    spdlog::warn("cached blob of {} is missing or of the wrong size: dropped, filling it again",
                 url::shown(origin));
    if (ctx.options.curate) {
      // A repair of what an operator approved, not a new fill: the miss below does not fill in this mode.
      // Without the reader's userinfo: a reader's credentials never ride on an operator's fill.
      (void)ctx.pool->enqueue(url::strip_userinfo(origin), {}, /*by_operator=*/true);
    }
  }
  return std::nullopt;
}

// The access log names an artifact by a short key id: a token's first characters are the same for
// every URL of a host, and the token itself carries the whole URL.
std::string log_target(const Request& req, std::string_view key) {
  const std::string shown = key.empty() ? "?" : std::string(key.substr(0, 12));
  if (!req.path.starts_with("/b/")) {
    return "/blob [" + shown + "]";
  }
  const std::string_view rest = std::string_view(req.path).substr(3);
  const std::size_t slash = rest.find('/');
  return "/b/[" + shown + "]" + (slash == std::string_view::npos ? "" : std::string(rest.substr(slash)));
}

Response logged(const Request& req, Response res, std::string_view key) {
  res.log_target = log_target(req, key);
  return res;
}

Response read(Context& ctx, const Request& req, const std::optional<std::string>& token) {
  std::string origin;
  if (token) {
    auto decoded = url::decode_token(*token);
    if (!decoded) {
      return bad_request(ctx, "bad token: " + decoded.error().message);
    }
    origin = std::move(*decoded);
  } else {
    origin = req.param("url");
  }
  if (origin.empty()) {
    return bad_request(ctx, "empty URL");
  }
  if (auto error = url::check_origin_size(origin)) {
    return too_long(ctx, *error);
  }
  const std::string scheme = url::scheme_of(origin);
  if (scheme != "http" && scheme != "https") {
    return bad_request(ctx, "only http and https URLs are cached");
  }
  auto key = ctx.pool->key_of(origin); // the pool's key options: the read path looks up what fills store
  if (!key) {
    return bad_request(ctx, key.error().message);
  }
  if (auto hit = lookup(ctx, req, *key, origin)) {
    // A stale hit is still served, and queues one conditional fill (joined by later stale hits).
    if (fills::is_stale(hit->first, util::now())) {
      (void)ctx.pool->revalidate(hit->first, origin);
    }
    return logged(req, serve_blob(ctx, req, hit->first, std::move(hit->second)), *key);
  }
  if (ctx.options.curate) {
    return logged(req, miss(ctx, req, *key, origin), *key); // nothing streams in curated mode
  }
  // Not cached yet, but a running fill may already stream it.
  if (auto stream = ctx.pool->stream(*key)) {
    if (auto filling = serve_filling(ctx, req, stream)) {
      return logged(req, std::move(*filling), *key);
    }
  }
  Response missed = miss(ctx, req, *key, origin);
  // The fill this miss started (or found starting) may answer soon: wait, holding no thread, up to
  // --miss-wait for its response head, so that even clients that all start together cost the origin
  // one transfer.
  bool can_start = false;
  auto stream = missed.status == 404 ? ctx.pool->stream(*key, &can_start) : nullptr;
  if (!stream || !can_start || ctx.options.miss_wait.count() <= 0) {
    return logged(req, std::move(missed), *key);
  }
  auto deferred = std::make_shared<Deferred>();
  deferred->timeout = ctx.options.miss_wait;
  deferred->wait = [stream](std::function<void()> wake) { wait_for_head(stream, std::move(wake)); };
  auto fallback = std::make_shared<Response>(std::move(missed));
  deferred->answer = [&ctx, req, key = *key, origin, stream, fallback](bool) {
    if (auto hit = lookup(ctx, req, key, origin)) { // a small file may have completed meanwhile
      return logged(req, serve_blob(ctx, req, hit->first, std::move(hit->second)), key);
    }
    if (auto filling = serve_filling(ctx, req, stream)) {
      return logged(req, std::move(*filling), key);
    }
    return logged(req, std::move(*fallback), key);
  };
  Response waiting;
  waiting.deferred = std::move(deferred);
  return waiting;
}

} // namespace

void add_read_path(Router& router, Context& ctx) {
  router.add_prefix("GET", "/b/", Runs::io, [&ctx](const Request& req) {
    // The token is the first segment after /b/; the name and any query after it are ignored.
    const std::string_view rest = std::string_view(req.path).substr(3);
    return read(ctx, req, std::string(rest.substr(0, rest.find('/'))));
  });
  router.add("GET", "/blob", Runs::io, [&ctx](const Request& req) { return read(ctx, req, std::nullopt); });
}

} // namespace withcache::server
