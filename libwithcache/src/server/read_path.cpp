// The open read path of SPEC §3: `GET`/`HEAD /b/<token>[/<name>]` and
// `/blob?url=`. It runs on the I/O threads, so it touches only memory (the
// store's index, the pool's queue) and one open(2) for a GET: never SQLite.
#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "http/http.hpp"
#include "server/context.hpp"
#include "withcache/url.hpp"

namespace withcache::server {
namespace {

constexpr const char* k_miss_body = "cache miss (recorded)\n";

Response bad_request(Context& ctx, const std::string& reason) {
  ++ctx.metrics.bad_requests;
  Response res = plain(400, reason + "\n");
  res.log_target = "[bad request]";
  return res;
}

Response miss(Context& ctx, const Request& req, const std::string& key, const std::string& origin) {
  ++ctx.metrics.misses;
  if (ctx.store->record_miss(key, origin)) {
    spdlog::info("first miss: {}", url::redact(origin));
    ctx.store->record_event("first_miss", "system", req.remote_address, url::redact(origin));
  }
  if (!ctx.options.curate) {
    origin::Headers headers;
    if (ctx.options.forward_auth && req.has_header("Authorization")) {
      headers.emplace_back("Authorization", std::string(req.header("Authorization")));
    }
    auto queued = ctx.pool->enqueue(origin, std::move(headers));
    if (queued && !queued->joined) {
      ++ctx.metrics.fills_queued;
    } else if (!queued) {
      spdlog::debug("no fill for {}: {}", url::redact(origin), queued.error().message);
    }
  }
  return plain(404, k_miss_body);
}

// The artifact's bytes, or nothing when its blob vanished since the lookup (then it is a miss).
std::optional<Response> serve_blob(Context& ctx, const Request& req, const store::Artifact& artifact) {
  FileBody file;
  if (!req.head) {
    file.fd = ::open(ctx.store->blob_path(artifact.key).c_str(), O_RDONLY | O_CLOEXEC);
    if (file.fd < 0) {
      return std::nullopt;
    }
  }
  const std::string etag = "\"" + artifact.sha256 + "\"";
  Response res;
  res.set("ETag", etag);
  res.set("X-Withcache-Sha256", artifact.sha256);
  res.set("Last-Modified", http::http_date(artifact.fetched_at));
  res.set("Accept-Ranges", "bytes");
  res.set("Cache-Control", "public, max-age=31536000, immutable");

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
  auto key = url::key_id(origin, {ctx.options.keep_query});
  if (!key) {
    return bad_request(ctx, key.error().message);
  }
  if (auto artifact = ctx.store->find(*key)) {
    if (auto served = serve_blob(ctx, req, *artifact)) {
      return logged(req, std::move(*served), *key);
    }
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
