// The JSON API under /api/v1/ (docs/api.md). Every route reads or writes
// SQLite, so every route runs on the worker pool.
#include <spdlog/spdlog.h>

#include "http/http.hpp"
#include "json/json.hpp"
#include "server/context.hpp"
#include "withcache/url.hpp"
#include "withcache/util/strings.hpp"

namespace withcache::server {
namespace {

// What the API shows of a record: every URL redacted (SPEC §3: signing and credential parameters never
// leave the server; the stored URL still fetches).
Artifact shown(Artifact a) {
  a.url = url::redact(a.url);
  a.raw_url = url::redact(a.raw_url);
  return a;
}
Miss shown(Miss m) {
  m.url = url::redact(m.url);
  return m;
}
Job shown(Job j) {
  j.url = url::redact(j.url);
  return j;
}
Event shown(Event e) {
  return e; // details are written redacted
}

Response json_error(int status, const std::string& message) {
  return json_text(status, json::dump(json::Json{{"error", message}}));
}

Response unavailable(const std::string& reason) {
  spdlog::error("{}", reason);
  return json_error(503, "the cache database is unavailable: " + reason);
}

// `{"items": [...], "total": N}` of a listing, or the database's failure as 503.
template <class T> Response json_page(const Expected<store::Page<T>, std::string>& page) {
  if (!page) {
    return unavailable(page.error());
  }
  std::vector<T> items;
  items.reserve(page->items.size());
  for (const auto& item : page->items) {
    items.push_back(shown(item));
  }
  return json_text(200, json::dump(json::Json{{"items", items}, {"total", page->total}}));
}

Expected<store::ListQuery, std::string> list_query(const Request& req) {
  store::ListQuery q;
  q.limit = 50;
  for (const auto& [name, max, out] : {std::tuple{"offset", 1'000'000'000'000ULL, &q.offset},
                                       std::tuple{"limit", 1000ULL, &q.limit}}) {
    if (!req.has_param(name)) {
      continue;
    }
    const auto value = http::parse_decimal(req.param(name));
    if (!value || *value > max) {
      return unexpected(std::string("offset and limit must be whole numbers (limit at most 1000)"));
    }
    *out = *value;
  }
  q.filter = req.param("q");
  return q;
}

// The id at the end of `/api/v1/<what>/<id>`: 64 lower-case hex digits (a key), or 1–18 digits (a job).
std::optional<std::string> key_suffix(const Request& req, std::string_view prefix) {
  const std::string_view id = std::string_view(req.path).substr(prefix.size());
  const bool ok = id.size() == 64 && id.find_first_not_of("0123456789abcdef") == std::string_view::npos;
  return ok ? std::optional<std::string>(id) : std::nullopt;
}

// Runs `handler` for an API request that passed auth (and CSRF when it changes state).
template <class F> Response guarded(const Context& ctx, const Request& req, bool changes_state, F&& handler) {
  if (!api_allowed(ctx, req)) {
    return json_error(401, "authentication required (a session cookie or Authorization: Bearer)");
  }
  if (changes_state && !has_bearer(ctx, req) && !csrf_ok(req)) {
    return json_error(403, "cross-site request refused");
  }
  return handler();
}

template <class List>
void add_listing(Router& router, Context& ctx, const std::string& path, List list) {
  router.add("GET", path, Runs::worker, [&ctx, list](const Request& req) {
    return guarded(ctx, req, false, [&] {
      const auto q = list_query(req);
      return q ? json_page(list(ctx, *q)) : json_error(400, q.error());
    });
  });
}

Response post_download(Context& ctx, const Request& req) {
  const auto body = json::parse(req.body);
  if (!body || !body->is_object()) {
    return json_error(400, body ? "the body must be a JSON object" : body.error());
  }
  for (const auto& [name, value] : body->items()) {
    if (name != "url" && name != "key" && name != "headers") {
      return json_error(400, "unknown field '" + name + "' (expected url or key, and headers)");
    }
  }
  // `url`, or `key`: a recorded miss, fetched from its stored URL (which the API shows redacted).
  const auto url_field = body->find("url");
  const auto key_field = body->find("key");
  std::string target;
  if (url_field != body->end() && url_field->is_string() && key_field == body->end()) {
    target = url_field->get<std::string>();
  } else if (key_field != body->end() && key_field->is_string() && url_field == body->end()) {
    const auto miss = ctx.store->find_miss(key_field->get<std::string>());
    if (!miss) {
      return unavailable(miss.error());
    }
    if (!*miss) {
      return json_error(404, "no miss with key " + key_field->get<std::string>());
    }
    target = (*miss)->url;
  } else {
    return json_error(400, "'url' or 'key' (a string, not both) is required");
  }
  origin::Headers headers;
  if (const auto h = body->find("headers"); h != body->end()) {
    if (!h->is_object()) {
      return json_error(400, "'headers' must be an object of strings");
    }
    for (const auto& [name, value] : h->items()) {
      if (!value.is_string()) {
        return json_error(400, "header " + name + " must be a string");
      }
      headers.emplace_back(name, value.get<std::string>());
    }
  }
  auto queued = ctx.pool->enqueue(target, headers, /*by_operator=*/true);
  if (!queued) {
    const auto code = queued.error().code;
    const bool conflict = code == fills::EnqueueErrc::already_cached || code == fills::EnqueueErrc::cache_full ||
                          code == fills::EnqueueErrc::shutting_down;
    return json_error(conflict ? 409 : 400, queued.error().message);
  }
  ctx.store->record_event("fetch", actor(ctx, req), req.remote_address, url::redact(queued->job.url));
  return json_text(202, json::dump(json::Json(shown(queued->job))));
}

} // namespace

void add_api_routes(Router& router, Context& ctx) {
  add_listing(router, ctx, "/api/v1/artifacts",
              [](Context& c, const store::ListQuery& q) { return c.store->list_artifacts(q); });
  add_listing(router, ctx, "/api/v1/misses",
              [](Context& c, const store::ListQuery& q) { return c.store->list_misses(q); });
  add_listing(router, ctx, "/api/v1/events",
              [](Context& c, const store::ListQuery& q) { return c.store->list_events(q); });
  add_listing(router, ctx, "/api/v1/downloads", [](Context& c, const store::ListQuery& q) {
    return Expected<store::Page<Job>, std::string>(c.pool->list_page(q));
  });

  router.add_prefix("DELETE", "/api/v1/artifacts/", Runs::worker, [&ctx](const Request& req) {
    return guarded(ctx, req, true, [&] {
      const auto key = key_suffix(req, "/api/v1/artifacts/");
      if (!key) {
        return json_error(404, "no such route");
      }
      const auto artifact = ctx.store->find(*key);
      const auto removed = artifact ? ctx.store->remove(*key) : Expected<bool, std::string>(false);
      if (!removed) {
        return unavailable(removed.error());
      }
      if (!*removed) {
        return json_error(404, "no artifact with key " + *key);
      }
      ctx.store->record_event("delete", actor(ctx, req), req.remote_address, url::redact(artifact->url));
      return json_text(200, json::dump(json::Json{{"deleted", *key}}));
    });
  });
  router.add_prefix("DELETE", "/api/v1/misses/", Runs::worker, [&ctx](const Request& req) {
    return guarded(ctx, req, true, [&] {
      const auto key = key_suffix(req, "/api/v1/misses/");
      if (!key) {
        return json_error(404, "no such route");
      }
      const auto dismissed = ctx.store->dismiss_miss(*key);
      if (!dismissed) {
        return unavailable(dismissed.error());
      }
      if (!*dismissed) {
        return json_error(404, "no miss with key " + *key);
      }
      ctx.store->record_event("dismiss", actor(ctx, req), req.remote_address, *key);
      return json_text(200, json::dump(json::Json{{"dismissed", *key}}));
    });
  });
  router.add("POST", "/api/v1/downloads", Runs::worker,
             [&ctx](const Request& req) { return guarded(ctx, req, true, [&] { return post_download(ctx, req); }); });
  router.add_prefix("DELETE", "/api/v1/downloads/", Runs::worker, [&ctx](const Request& req) {
    return guarded(ctx, req, true, [&] {
      const std::string_view text = std::string_view(req.path).substr(std::string_view("/api/v1/downloads/").size());
      const auto number = text.size() <= 18 ? http::parse_decimal(text) : std::nullopt;
      if (!number) {
        return json_error(404, "no such route");
      }
      const auto id = static_cast<std::int64_t>(*number);
      const auto job = ctx.pool->get(id);
      if (!job) {
        return json_error(404, "no download " + std::to_string(id));
      }
      if (!ctx.pool->cancel(id)) {
        return json_error(409, "download " + std::to_string(id) + " has already ended");
      }
      ctx.store->record_event("cancel", actor(ctx, req), req.remote_address, "download " + std::to_string(id));
      return json_text(200, json::dump(json::Json(shown(ctx.pool->get(id).value_or(*job)))));
    });
  });
  // Every operator session ends (a cookie was copied, a laptop lost): works with the API token too.
  router.add("DELETE", "/api/v1/sessions", Runs::worker, [&ctx](const Request& req) {
    return guarded(ctx, req, true, [&] {
      const std::string who = actor(ctx, req);
      const std::size_t ended = end_every_session(ctx);
      ctx.store->record_event("logout_everywhere", who, req.remote_address,
                              std::to_string(ended) + " sessions ended");
      return json_text(200, json::dump(json::Json{{"ended", ended}}));
    });
  });
  router.add("GET", "/api/v1/stats", Runs::worker, [&ctx](const Request& req) {
    return guarded(ctx, req, false, [&] {
      const auto t = ctx.store->totals();
      if (!t) {
        return unavailable(t.error());
      }
      const Stats stats{t->artifacts,
                        t->stored_bytes,
                        t->max_bytes,
                        t->hits,
                        t->misses,
                        ctx.metrics.bytes_served.load(),
                        ctx.metrics.bytes_fetched.load(),
                        static_cast<std::uint64_t>(ctx.pool->queue_depth())};
      return json_text(200, json::dump(json::Json(stats)));
    });
  });
}

} // namespace withcache::server
