// The open read path of SPEC §3: `GET`/`HEAD /b/<token>[/<name>]` and
// `/blob?url=`. It runs on the I/O threads, so it touches only memory (the
// store's index, the pool's queue), one stat(2) for a HEAD and one open(2)
// and fstat(2) for a GET: never SQLite.
#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "http/http.hpp"
#include "server/context.hpp"
#include "withcache/url.hpp"
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

Response miss(Context& ctx, const Request& req, const std::string& key, const std::string& origin) {
  ++ctx.metrics.misses;
  if (ctx.store->record_miss(key, origin)) {
    spdlog::info("first miss: {}", url::redact(origin));
    ctx.store->record_event("first_miss", "system", req.remote_address, url::redact(origin));
  }
  if (ctx.options.curate) {
    // Nothing is fetched; a refusal or failure of an operator's earlier Download still says why.
    const auto backoff = ctx.store->backoff(key, util::now());
    return miss_response(backoff ? backoff->reason : std::string());
  }
  origin::Headers headers;
  if (ctx.options.forward_auth && req.has_header("Authorization")) {
    headers.emplace_back("Authorization", std::string(req.header("Authorization")));
  }
  auto queued = ctx.pool->enqueue(origin, std::move(headers));
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
  default:
    spdlog::debug("no fill for {}: {}", url::redact(origin), error.message);
    return miss_response("not fetched: " + error.message);
  }
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
  // immutable only when it is: an artifact with a finite lifetime says how much of it is left.
  res.set("Cache-Control",
          artifact.fresh_until == 0
              ? std::string("public, max-age=31536000, immutable")
              : "public, max-age=" + std::to_string(std::max<UnixTime>(0, artifact.fresh_until - util::now())));
}

Response serve_blob(Context& ctx, const Request& req, const store::Artifact& artifact, FileBody file) {
  const std::string etag = "\"" + artifact.sha256 + "\"";
  Response res;
  blob_headers(res, artifact);
  if (req.has_header("If-None-Match") && http::none_match(req.header("If-None-Match"), etag)) {
    res.status = 304;
    return res;
  }
  http::ByteRange range;
  if (req.has_header("Range") &&
      (!req.has_header("If-Range") || http::if_range_matches(req.header("If-Range"), etag, artifact.fetched_at))) {
    range = http::parse_range(req.header("Range"), artifact.size);
  }
  if (range.kind == http::ByteRange::Kind::unsatisfiable) {
    Response refused = plain(416, "range not satisfiable\n");
    refused.headers.insert(refused.headers.begin(), res.headers.begin(), res.headers.end());
    refused.set("Content-Range", "bytes */" + std::to_string(artifact.size));
    return refused;
  }
  res.set("Content-Type", artifact.content_type.empty() ? "application/octet-stream" : artifact.content_type);
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
    spdlog::warn("cached blob of {} is missing or of the wrong size: dropped, filling it again", url::redact(origin));
    if (ctx.options.curate) {
      // A repair of what an operator approved, not a new fill: the miss below does not fill in this mode.
      (void)ctx.pool->enqueue(origin, {}, /*by_operator=*/true);
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
  return logged(req, miss(ctx, req, *key, origin), *key);
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
