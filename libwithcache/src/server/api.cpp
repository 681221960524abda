// The JSON API under /api/v1/ (docs/api.md). Every route reads or writes
// SQLite, so every route runs on the worker pool.
#include <algorithm>
#include <iterator>

#include <spdlog/spdlog.h>

#include "http/http.hpp"
#include "json/json.hpp"
#include "server/context.hpp"
#include "withcache/url.hpp"
#include "withcache/util/strings.hpp"
#include "withcache/util/time.hpp"

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

// `{"items": [...], "total": N, "total_exact": bool, "next": cursor|null, "prev": cursor|null}` of a
// listing, or the database's failure as 503.
template <class T> Response json_page(const Expected<store::Page<T>, std::string>& page) {
  if (!page) {
    return unavailable(page.error());
  }
  std::vector<T> items;
  items.reserve(page->items.size());
  for (const auto& item : page->items) {
    items.push_back(shown(item));
  }
  const auto cursor = [](const std::string& c) { return c.empty() ? json::Json(nullptr) : json::Json(c); };
  return json_text(200, json::dump(json::Json{{"items", items},
                                              {"total", page->total},
                                              {"total_exact", page->total_exact},
                                              {"next", cursor(page->next)},
                                              {"prev", cursor(page->prev)}}));
}

// A cursor as the listings hand them out: digits and dots, short.
bool is_cursor(std::string_view text) {
  return !text.empty() && text.size() <= 48 && text.find_first_not_of("0123456789.") == std::string_view::npos;
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
  q.after = req.param("after");
  q.before = req.param("before");
  if ((!q.after.empty() && !is_cursor(q.after)) || (!q.before.empty() && !is_cursor(q.before))) {
    return unexpected(std::string("after and before take a cursor from a listing's next or prev"));
  }
  if (!q.after.empty() && !q.before.empty()) {
    return unexpected(std::string("after and before cannot be used together"));
  }
  return q;
}

json::Json scrub_json(const store::ScrubStatus& s) {
  const auto time = [](UnixTime t) { return t > 0 ? json::Json(util::format_rfc3339(t)) : json::Json(nullptr); };
  return json::Json{{"running", s.running},
                    {"paused", s.paused},
                    {"pass_started_at", time(s.pass_started_at)},
                    {"last_pass_finished_at", time(s.last_pass_finished_at)},
                    {"passes", s.passes},
                    {"pass_blobs", s.pass_blobs},
                    {"pass_bytes", s.pass_bytes},
                    {"blobs_checked", s.blobs_checked},
                    {"bytes_checked", s.bytes_checked},
                    {"mismatches", s.mismatches},
                    {"missing", s.missing},
                    {"orphans_removed", s.orphans_removed},
                    {"rate", s.rate}};
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
    if (code == fills::EnqueueErrc::url_too_long) {
      return json_error(414, queued.error().message);
    }
    const bool conflict = code == fills::EnqueueErrc::already_cached || code == fills::EnqueueErrc::cache_full ||
                          code == fills::EnqueueErrc::shutting_down;
    return json_error(conflict ? 409 : 400, queued.error().message);
  }
  ctx.store->record_event("fetch", actor(ctx, req), req.remote_address, url::shown(queued->job.url));
  return json_text(202, json::dump(json::Json(shown(queued->job))));
}

} // namespace

Expected<store::Page<Job>, std::string> list_downloads(const Context& ctx, const store::ListQuery& query) {
  // The pool's jobs from memory: queued and running ones, and the newest ended ones (also in the history,
  // unless it could not be written yet: a full disk), matched like the history (case-insensitive).
  const std::string filter = util::lower(query.filter);
  const bool backward = !query.before.empty();
  const auto cursor = http::parse_decimal(backward ? query.before : query.after);
  const bool history_behind = ctx.store->write_failure().has_value();
  std::vector<Job> active;
  std::uint64_t active_total = 0;
  for (auto& j : ctx.pool->list()) {
    if (!filter.empty() && util::lower(j.url).find(filter) == std::string::npos) {
      continue;
    }
    if (!j.ended() || history_behind) {
      ++active_total;
    }
    const auto id = static_cast<std::uint64_t>(j.id);
    if (!cursor || (backward ? id > *cursor : id < *cursor)) {
      active.push_back(std::move(j));
    }
  }
  // Then the history, asked for as many as the page could need from it.
  store::ListQuery wanted = query;
  wanted.offset = 0;
  wanted.limit = (cursor ? 0 : query.offset) + query.limit + 1;
  WITHCACHE_TRY_ASSIGN(auto history, ctx.store->list_finished_jobs(wanted));

  // Merge the two by id (newest first; nearest to the cursor first when going back), each id once.
  const auto newer = [](const Job& a, const Job& b) { return a.id > b.id; };
  const auto older = [](const Job& a, const Job& b) { return a.id < b.id; };
  std::sort(active.begin(), active.end(), backward ? older : newer);
  if (backward) {
    std::reverse(history.items.begin(), history.items.end());
  }
  std::vector<Job> merged;
  std::merge(history.items.begin(), history.items.end(), active.begin(), active.end(), std::back_inserter(merged),
             backward ? older : newer);
  merged.erase(std::unique(merged.begin(), merged.end(), [](const Job& a, const Job& b) { return a.id == b.id; }),
               merged.end());
  const std::size_t skip = cursor ? 0 : static_cast<std::size_t>(std::min<std::uint64_t>(query.offset, merged.size()));
  merged.erase(merged.begin(), merged.begin() + static_cast<std::ptrdiff_t>(skip));
  const bool more = merged.size() > query.limit;
  if (more) {
    merged.resize(query.limit);
  }
  if (backward) {
    std::reverse(merged.begin(), merged.end());
  }
  store::Page<Job> page;
  page.total = active_total + history.total;
  page.total_exact = history.total_exact;
  if (!merged.empty()) {
    const std::string first = std::to_string(merged.front().id);
    const std::string last = std::to_string(merged.back().id);
    if (backward) {
      page.prev = more ? first : "";
      page.next = last;
    } else {
      page.next = more ? last : "";
      page.prev = cursor || query.offset > 0 ? first : "";
    }
  }
  page.items = std::move(merged);
  return page;
}

void add_api_routes(Router& router, Context& ctx) {
  add_listing(router, ctx, "/api/v1/artifacts",
              [](Context& c, const store::ListQuery& q) { return c.store->list_artifacts(q); });
  add_listing(router, ctx, "/api/v1/misses",
              [](Context& c, const store::ListQuery& q) { return c.store->list_misses(q); });
  add_listing(router, ctx, "/api/v1/events",
              [](Context& c, const store::ListQuery& q) { return c.store->list_events(q); });
  add_listing(router, ctx, "/api/v1/downloads",
              [](Context& c, const store::ListQuery& q) { return list_downloads(c, q); });

  router.add_prefix("DELETE", "/api/v1/artifacts/", Runs::worker, [&ctx](const Request& req) {
    return guarded(ctx, req, true, [&] {
      const auto key = key_suffix(req, "/api/v1/artifacts/");
      if (!key) {
        return json_error(404, "no such route");
      }
      const auto row = ctx.store->describe(*key); // the URL, for the events log (the index does not keep it)
      const auto removed = ctx.store->remove(*key);
      if (!removed) {
        return unavailable(removed.error());
      }
      if (!*removed) {
        return json_error(404, "no artifact with key " + *key);
      }
      ctx.store->record_event("delete", actor(ctx, req), req.remote_address,
                              url::shown(row && *row ? (*row)->url : *key));
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
        // Ended long enough ago to be only in the history: it exists, but there is nothing to cancel.
        const auto ended = ctx.store->finished_job(id);
        if (ended && *ended) {
          return json_error(409, "download " + std::to_string(id) + " has already ended");
        }
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
  // The scrub: its state, and a full pass on demand (SPEC §3 "At rest").
  router.add("GET", "/api/v1/scrub", Runs::worker, [&ctx](const Request& req) {
    return guarded(ctx, req, false, [&] { return json_text(200, json::dump(scrub_json(ctx.scrubber->status()))); });
  });
  router.add("POST", "/api/v1/scrub", Runs::worker, [&ctx](const Request& req) {
    return guarded(ctx, req, true, [&] {
      ctx.scrubber->start_pass();
      ctx.store->record_event("scrub", actor(ctx, req), req.remote_address, "a full scrub pass was started");
      auto status = ctx.scrubber->status();
      status.running = true;
      return json_text(202, json::dump(scrub_json(status)));
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
