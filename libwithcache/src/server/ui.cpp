// The operator UI: pages, their live fragments, withcache 0.3's form actions
// and /admin/dash. Everything that reads SQLite runs on the worker pool.
#include <set>

#include <spdlog/spdlog.h>

#include "http/http.hpp"
#include "server/context.hpp"
#include "server/pages.hpp"
#include "withcache/url.hpp"
#include "withcache/util/encoding.hpp"

namespace withcache::server {
namespace {

// offset, limit and q of a listing; a one-line message when malformed.
Expected<store::ListQuery, std::string> list_query(const Request& req) {
  store::ListQuery q;
  q.limit = 50;
  const auto number = [&](const char* name, std::uint64_t& out, std::uint64_t max) {
    if (!req.has_param(name)) {
      return true;
    }
    const auto value = http::parse_decimal(req.param(name));
    if (!value || *value > max) {
      return false;
    }
    out = *value;
    return true;
  };
  if (!number("offset", q.offset, 1'000'000'000'000ULL) || !number("limit", q.limit, 1000)) {
    return unexpected(std::string("offset and limit must be whole numbers (limit at most 1000)"));
  }
  q.filter = req.param("q");
  const auto cursor = [&](const char* name, std::string& out) {
    out = req.param(name);
    return out.size() <= 48 && out.find_first_not_of("0123456789.") == std::string::npos;
  };
  if (!cursor("after", q.after) || !cursor("before", q.before)) {
    return unexpected(std::string("after and before take a cursor from a page's next or previous link"));
  }
  if (!q.after.empty()) {
    q.before.clear();
  }
  return q;
}

// Refuses a form that repeats a field (other than `header`): which one would win is ambiguous.
bool duplicate_fields(const Request& req) {
  std::set<std::string_view> seen;
  for (const auto& [name, value] : req.params()) {
    if (name != "header" && !seen.insert(name).second) {
      return true;
    }
  }
  return false;
}

// `Name: Value` lines (one textarea, or repeated `header` fields).
std::optional<origin::Headers> header_lines(const Request& req) {
  origin::Headers headers;
  for (const auto& [name, value] : req.params()) {
    if (name != "header") {
      continue;
    }
    auto fields = http::parse_header_lines(value);
    if (!fields) {
      return std::nullopt;
    }
    headers.insert(headers.end(), fields->begin(), fields->end());
  }
  return headers;
}

template <class T> pages::Listing listing_of(const std::string& path, const store::ListQuery& q, const store::Page<T>& page) {
  return pages::Listing{path,       q.filter,          q.offset,  q.limit,  page.total, page.total_exact,
                        page.items.size(), page.next, page.prev, !q.after.empty() || !q.before.empty()};
}

Expected<pages::Dashboard, std::string> dashboard(const Context& ctx) {
  WITHCACHE_TRY_ASSIGN(auto totals, ctx.store->totals());
  return pages::Dashboard{totals, ctx.pool->queue_depth(), ctx.pool->running(), ctx.metrics.bytes_served.load(),
                          ctx.options.curate};
}

// A section's HTML; a database failure comes back as its one-line message.
Expected<std::string, std::string> section_html(const Context& ctx, const std::string& section,
                                                const store::ListQuery& q) {
  if (section == "dashboard") {
    return dashboard(ctx).transform(pages::dashboard_fragment);
  }
  if (section == "downloads") {
    // Running and queued downloads from the pool, then the history: paged and filtered like the others.
    return list_downloads(ctx, q).transform([&](const store::Page<Job>& page) {
      return pages::downloads_fragment(page, listing_of("/ui/downloads", q, page));
    });
  }
  if (section == "misses") {
    return ctx.store->list_misses(q).transform([&](const store::Page<store::Miss>& page) {
      return pages::misses_fragment(page, listing_of("/ui/misses", q, page), ctx.options.curate);
    });
  }
  if (section == "artifacts") {
    return ctx.store->list_artifacts(q).transform([&](const store::Page<store::Artifact>& page) {
      return pages::artifacts_fragment(page, listing_of("/ui/artifacts", q, page));
    });
  }
  return ctx.store->list_events(q).transform([&](const store::Page<store::Event>& page) {
    return pages::events_fragment(page, listing_of("/ui/events", q, page));
  });
}

// Every live section starts with the disk-full banner while cache.db cannot be written: pages keep
// answering from what can be read, and the banner goes away by itself once writes work again.
Expected<std::string, std::string> fragment_for(const Context& ctx, const std::string& section,
                                                const store::ListQuery& q) {
  return section_html(ctx, section, q).transform(
      [&](const std::string& html) { return pages::write_failure_banner(ctx.store->write_failure()) + html; });
}

Response unavailable(const std::string& reason) {
  spdlog::error("{}", reason);
  return plain(503, "the cache database is unavailable: " + reason + "\n");
}

Response page(const Context& ctx, const Request& req, const std::string& section, const std::string& title) {
  if (!page_allowed(ctx, req)) {
    return redirect("/ui/login");
  }
  const auto q = list_query(req);
  if (!q) {
    return plain(400, q.error() + "\n");
  }
  const auto fragment = fragment_for(ctx, section, *q);
  if (!fragment) {
    return unavailable(fragment.error());
  }
  if (is_htmx(req)) {
    return html(200, *fragment);
  }
  std::string self = section == "dashboard" ? "/" : "/ui/" + section;
  if (req.has_param("q") || req.has_param("offset") || req.has_param("limit") || req.has_param("after") ||
      req.has_param("before")) {
    self += "?q=" + util::percent_encode(q->filter) + "&limit=" + std::to_string(q->limit);
    if (!q->after.empty()) {
      self += "&after=" + q->after;
    } else if (!q->before.empty()) {
      self += "&before=" + q->before;
    } else {
      self += "&offset=" + std::to_string(q->offset);
    }
  }
  const std::string filter = section == "dashboard" ? "" : pages::filter_form("/ui/" + section, q->filter);
  return html(200, pages::layout(title, title, !ui_open(ctx), filter + pages::live_section(section, self, *fragment)));
}

// The outcome of a form action: an error message (empty when it worked) and the section to refresh.
struct Outcome {
  std::string error;
  std::string section;
  int status = 400; // of a refusal (`error` not empty)
};

// A state-changing form action: session, CSRF, then `act`.
Response form_action(const Context& ctx, const Request& req, const std::function<Outcome()>& act) {
  if (!page_allowed(ctx, req)) {
    return plain(401, "log in first (POST /ui/login)\n");
  }
  if (!csrf_ok(req)) {
    return plain(403, "cross-site request refused (Origin does not match this server)\n");
  }
  if (duplicate_fields(req)) {
    return plain(400, "a form field is repeated\n");
  }
  const Outcome outcome = act();
  if (is_htmx(req)) {
    if (outcome.section == "add") {
      // The form with its reason. Refusals the operator can fix in the form answer 200 (HTMX swaps only
      // 2xx); an over-long URL answers 414 like every other route, and withcache.js swaps that one in.
      return html(outcome.error.empty() || outcome.status != 414 ? 200 : 414,
                  pages::add_form(outcome.error.empty() ? "Queued." : outcome.error, outcome.error.empty()));
    }
    const auto fragment = fragment_for(ctx, outcome.section, store::ListQuery{0, 50, ""});
    if (!fragment) {
      return unavailable(fragment.error());
    }
    return html(outcome.error.empty() ? 200 : outcome.status, *fragment);
  }
  if (!outcome.error.empty()) {
    return html(outcome.status, pages::layout("Not done", "", !ui_open(ctx),
                                              "<p role=\"alert\">" + pages::escape(outcome.error) +
                                                  "</p><p><a href=\"/\">Back</a></p>"));
  }
  return redirect("/");
}

} // namespace

void add_ui_routes(Router& router, Context& ctx) {
  router.add_prefix("GET", "/static/", Runs::io, [](const Request& req) {
    const std::string name = req.path.substr(8);
    const std::string_view asset = embedded_asset(name);
    if (asset.empty() || name.find('/') != std::string::npos) {
      return plain(404, "not found\n");
    }
    Response res;
    res.body = std::string(asset);
    res.set("Content-Type", name.ends_with(".css") ? "text/css" : "text/javascript");
    res.set("Cache-Control", "public, max-age=86400");
    return res;
  });

  // Browsers ask for it on every page; answer "nothing" rather than a 404 in the operator's console.
  router.add("GET", "/favicon.ico", Runs::io, [](const Request&) {
    Response res;
    res.status = 204;
    res.set("Cache-Control", "public, max-age=86400");
    return res;
  });

  const std::pair<const char*, const char*> sections[] = {{"dashboard", "Dashboard"}, {"downloads", "Downloads"},
                                                          {"misses", "Misses"},       {"artifacts", "Cached"},
                                                          {"events", "Events"}};
  for (const auto& [section, title] : sections) {
    const std::string path = std::string(section) == "dashboard" ? "/" : "/ui/" + std::string(section);
    router.add("GET", path, Runs::worker, [&ctx, section = std::string(section), title = std::string(title)](
                                              const Request& req) { return page(ctx, req, section, title); });
  }
  router.add("GET", "/ui/add", Runs::io, [&ctx](const Request& req) {
    if (!page_allowed(ctx, req)) {
      return redirect("/ui/login");
    }
    return html(200, pages::layout("Add from URI", "Add from URI", !ui_open(ctx),
                                   "<section id=\"add\">" + pages::add_form("", true) + "</section>"));
  });
  // withcache 0.3's dashboard fragment, which its operator pages poll.
  router.add("GET", "/admin/dash", Runs::worker, [&ctx](const Request& req) {
    if (!page_allowed(ctx, req)) {
      return plain(401, "log in first (POST /ui/login)\n");
    }
    const auto d = dashboard(ctx);
    return d ? html(200, pages::write_failure_banner(ctx.store->write_failure()) + pages::dashboard_fragment(*d))
             : unavailable(d.error());
  });

  router.add("POST", "/admin/fetch", Runs::worker, [&ctx](const Request& req) {
    return form_action(ctx, req, [&]() -> Outcome {
      const std::string section = req.header("HX-Target") == "misses" ? "misses" : "add";
      const auto headers = header_lines(req);
      if (!headers) {
        return {"header lines must look like 'Name: Value'", section};
      }
      // `url` (withcache 0.3's field, for scripts), or `key`: the Misses page's Download names the miss,
      // and its stored URL, signature and all, never leaves the server.
      std::string target = req.param("url");
      if (target.empty() && req.has_param("key")) {
        const auto miss = ctx.store->find_miss(req.param("key"));
        if (!miss) {
          return {miss.error(), section};
        }
        if (!*miss) {
          return {"no such miss", section};
        }
        target = (*miss)->url;
      }
      auto queued = ctx.pool->enqueue(target, *headers, /*by_operator=*/true);
      if (!queued) {
        const bool too_long = queued.error().code == fills::EnqueueErrc::url_too_long;
        return {queued.error().message, section, too_long ? 414 : 400};
      }
      // Header names, never values, go to the log.
      std::string names;
      for (const auto& h : *headers) {
        names += (names.empty() ? " with headers " : ", ") + h.first;
      }
      ctx.store->record_event("fetch", actor(ctx, req), req.remote_address,
                              url::shown(queued->job.url) + names);
      return {"", section};
    });
  });
  router.add("POST", "/admin/dismiss", Runs::worker, [&ctx](const Request& req) {
    return form_action(ctx, req, [&]() -> Outcome {
      const std::string key = req.param("key");
      const auto dismissed = ctx.store->dismiss_miss(key);
      if (!dismissed || !*dismissed) {
        return {dismissed ? "no such miss" : dismissed.error(), "misses"};
      }
      ctx.store->record_event("dismiss", actor(ctx, req), req.remote_address, key);
      return {"", "misses"};
    });
  });
  router.add("POST", "/admin/delete", Runs::worker, [&ctx](const Request& req) {
    return form_action(ctx, req, [&]() -> Outcome {
      const std::string key = req.param("key");
      const auto row = ctx.store->describe(key); // the URL, for the events log (the index does not keep it)
      const auto removed = ctx.store->remove(key);
      if (!removed || !*removed) {
        return {removed ? "no such artifact" : removed.error(), "artifacts"};
      }
      ctx.store->record_event("delete", actor(ctx, req), req.remote_address,
                              url::shown(row && *row ? (*row)->url : key));
      return {"", "artifacts"};
    });
  });
  router.add("POST", "/admin/cancel", Runs::worker, [&ctx](const Request& req) {
    return form_action(ctx, req, [&]() -> Outcome {
      const std::string id = req.param("id");
      const auto number = http::parse_decimal(id);
      if (!number || id.size() > 18 || !ctx.pool->cancel(static_cast<std::int64_t>(*number))) {
        return {"no such running or queued download", "downloads"};
      }
      ctx.store->record_event("cancel", actor(ctx, req), req.remote_address, "download " + id);
      return {"", "downloads"};
    });
  });
  router.add("POST", "/admin/clear", Runs::worker, [&ctx](const Request& req) {
    return form_action(ctx, req, [&]() -> Outcome {
      const std::size_t cleared = ctx.pool->clear_finished();
      ctx.store->record_event("clear", actor(ctx, req), req.remote_address,
                              std::to_string(cleared) + " finished downloads");
      return {"", "downloads"};
    });
  });
}

} // namespace withcache::server
