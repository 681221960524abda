// The session and auth middleware, and the routes that open and close a session.
#include <spdlog/spdlog.h>

#include "server/context.hpp"
#include "server/pages.hpp"
#include "withcache/digest.hpp"
#include "withcache/util/strings.hpp"
#include "withcache/util/time.hpp"

namespace withcache::server {
namespace {

constexpr const char* k_password_setting = "operator_password_hmac";

std::optional<auth::Claims> session_claims(const Context& ctx, const Request& req) {
  const auto token = auth::cookie_value(req.header("Cookie"), auth::k_cookie);
  if (!token) {
    return std::nullopt;
  }
  auto claims = ctx.sessions->claims(*token);
  if (!claims || !ctx.session_table.live(*claims, util::now())) {
    return std::nullopt;
  }
  return claims;
}

// `Secure` whenever the request came over TLS: a browser then never sends the cookie over plain HTTP (to
// the same host on another port, or to an attacker on the path). Over plain HTTP it would not be stored.
std::string secure_if_tls(const Request& req) {
  return req.tls ? "; Secure" : "";
}

std::string session_cookie(const Request& req, const std::string& token, std::chrono::seconds lifetime) {
  return std::string(auth::k_cookie) + "=" + token +
         "; HttpOnly; SameSite=Lax; Path=/; Max-Age=" + std::to_string(lifetime.count()) + secure_if_tls(req);
}

std::string clear_cookie(const Request& req) {
  return std::string(auth::k_cookie) + "=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0" + secure_if_tls(req);
}

// Sent only to the login form (Path=/ui/login) and never cross-site: it is worth nothing elsewhere.
std::string device_cookie(const Request& req, const std::string& token, std::chrono::seconds lifetime) {
  return std::string(auth::k_device_cookie) + "=" + token +
         "; HttpOnly; SameSite=Strict; Path=/ui/login; Max-Age=" + std::to_string(lifetime.count()) +
         secure_if_tls(req);
}

// The id of the operator's valid device cookie on this request, or empty.
std::string device_id(const Context& ctx, const Request& req) {
  const auto token = auth::cookie_value(req.header("Cookie"), auth::k_device_cookie);
  if (!token) {
    return {};
  }
  const auto claims = ctx.device_cookies->claims(*token);
  return claims && claims->user == "admin" ? claims->id : std::string();
}

} // namespace

void load_sessions(Context& ctx) {
  const auto now = util::now();
  auto rows = ctx.store->load_sessions(now);
  if (!rows) {
    throw StartupError(rows.error());
  }
  std::vector<auth::SessionRecord> records;
  for (auto& row : *rows) {
    records.push_back(auth::SessionRecord{std::move(row.id_hash), std::move(row.user), row.created_at,
                                          row.expires_at, std::move(row.address)});
  }
  const std::string fingerprint = ctx.sessions->password_fingerprint(ctx.options.admin_password);
  const auto stored = ctx.store->setting(k_password_setting);
  if (!stored) {
    throw StartupError(stored.error());
  }
  if (*stored != fingerprint) {
    // Another password (or another session secret): nobody logged in under the old one stays in.
    if (!records.empty()) {
      spdlog::warn("the operator password or session secret changed: {} sessions revoked", records.size());
    }
    records.clear();
    if (auto dropped = ctx.store->delete_sessions(); !dropped) {
      throw StartupError(dropped.error());
    }
    if (auto saved = ctx.store->set_setting(k_password_setting, fingerprint); !saved) {
      throw StartupError(saved.error());
    }
  }
  ctx.session_table.load(std::move(records));
}

bool ui_open(const Context& ctx) {
  return ctx.options.admin_password.empty();
}

std::size_t end_every_session(Context& ctx) {
  const std::size_t ended = ctx.session_table.revoke_all();
  if (auto dropped = ctx.store->delete_sessions(); !dropped) {
    spdlog::error("{}", dropped.error()); // revoked in memory already; the rows go at the next start
  }
  return ended;
}

bool has_session(const Context& ctx, const Request& req) {
  return session_claims(ctx, req).has_value();
}

bool has_bearer(const Context& ctx, const Request& req) {
  const std::string_view header = req.header("Authorization");
  return !ctx.options.api_token.empty() && header.starts_with("Bearer ") &&
         digest::constant_time_equal(header.substr(7), ctx.options.api_token);
}

bool page_allowed(const Context& ctx, const Request& req) {
  return ui_open(ctx) || has_session(ctx, req);
}

bool api_allowed(const Context& ctx, const Request& req) {
  return (ui_open(ctx) && ctx.options.api_token.empty()) || has_session(ctx, req) || has_bearer(ctx, req);
}

std::string actor(const Context& ctx, const Request& req) {
  if (has_session(ctx, req)) {
    return "admin";
  }
  return has_bearer(ctx, req) ? "api" : "anonymous";
}

bool csrf_ok(const Request& req) {
  return auth::same_origin(req.header("Origin"), req.header("Referer"), req.header("Host"));
}

bool is_htmx(const Request& req) {
  return req.header("HX-Request") == "true";
}

Handler secured(Handler handler) {
  return [handler = std::move(handler)](const Request& req) {
    Response res = handler(req);
    // Pico's icons are data: SVG images (no script runs in an image); nothing else leaves 'self'.
    res.set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    res.set("X-Frame-Options", "DENY");
    res.set("X-Content-Type-Options", "nosniff");
    res.set("Referrer-Policy", "same-origin");
    return res;
  };
}

void add_session_routes(Router& router, Context& ctx) {
  router.add("GET", "/ui/login", Runs::io, [&ctx](const Request&) {
    return ui_open(ctx) ? redirect("/") : html(200, pages::login(false, {}));
  });

  router.add("POST", "/ui/login", Runs::worker, [&ctx](const Request& req) {
    if (ui_open(ctx)) {
      return redirect("/");
    }
    if (!csrf_ok(req)) {
      return plain(403, "cross-site request refused\n");
    }
    const std::string& address = req.remote_address;
    // A browser that logged in here before skips the global pause (not its own limits): a spray from many
    // addresses cannot lock the operator out.
    const std::string device = device_id(ctx, req);
    if (const auto wait = ctx.throttle.retry_after(address, device); wait.count() > 0) {
      const auto seconds = std::to_string((wait.count() + 999) / 1000);
      Response res = html(429, pages::login(false, "Too many wrong passwords: try again in " + seconds + " s."));
      res.set("Retry-After", seconds);
      return res;
    }
    if (!digest::constant_time_equal(req.param("password"), ctx.options.admin_password)) {
      ctx.throttle.record_failure(address, device);
      spdlog::warn("failed operator login from {}{}", address,
                   device.empty() ? "" : " (with a device cookie)");
      if (!device.empty() && ctx.throttle.device_locked_out(device)) {
        spdlog::warn("a device cookie used from {} has too many wrong passwords: no more skipping the pause",
                     address);
      }
      ctx.store->record_event("login_failed", "anonymous", address, "");
      return html(401, pages::login(true, {}));
    }
    ctx.throttle.reset(address, device);
    const std::string token = ctx.sessions->issue("admin");
    const auto claims = ctx.sessions->claims(token);
    if (!claims) {
      return plain(500, "cannot open a session\n");
    }
    const auto now = util::now();
    auth::SessionRecord record{auth::id_hash(claims->id), claims->user, now, claims->expires, address};
    // Written through before the cookie is handed out: a restart never loses a session it gave.
    if (auto saved = ctx.store->save_session(
            {record.id_hash, record.user, record.created_at, record.expires_at, record.address});
        !saved) {
      spdlog::error("{}", saved.error());
      return plain(503, "the cache database is unavailable: " + saved.error() + "\n");
    }
    ctx.session_table.add(std::move(record));
    if (const std::size_t purged = ctx.session_table.purge_expired(now); purged > 0) {
      (void)ctx.store->delete_sessions(now);
    }
    ctx.store->record_event("login", "admin", address, "");
    Response res = redirect("/");
    res.set("Set-Cookie", session_cookie(req, token, ctx.sessions->lifetime()));
    // A fresh device cookie on every login, so it stays valid for a year after the last one.
    res.add("Set-Cookie",
            device_cookie(req, ctx.device_cookies->issue("admin"), ctx.device_cookies->lifetime()));
    return res;
  });

  // Logout ends this session on the server: a copy of the cookie stops working too.
  router.add("POST", "/ui/logout", Runs::worker, [&ctx](const Request& req) {
    if (!csrf_ok(req)) {
      return plain(403, "cross-site request refused\n");
    }
    if (const auto claims = session_claims(ctx, req)) {
      const std::string hash = auth::id_hash(claims->id);
      ctx.session_table.revoke(hash);
      if (auto dropped = ctx.store->delete_session(hash); !dropped) {
        spdlog::error("{}", dropped.error()); // revoked in memory; the row expires on its own
      }
      ctx.store->record_event("logout", "admin", req.remote_address, "");
    }
    Response res = redirect(ui_open(ctx) ? "/" : "/ui/login");
    res.set("Set-Cookie", clear_cookie(req));
    return res;
  });

  // "Log out everywhere": every session ends, this one included (a cookie may have been copied).
  router.add("POST", "/ui/logout-everywhere", Runs::worker, [&ctx](const Request& req) {
    if (!page_allowed(ctx, req)) {
      return plain(401, "log in first (POST /ui/login)\n");
    }
    if (!csrf_ok(req)) {
      return plain(403, "cross-site request refused\n");
    }
    const std::string who = actor(ctx, req);
    const std::size_t ended = end_every_session(ctx);
    spdlog::info("operator logged out everywhere from {}: {} sessions ended", req.remote_address, ended);
    ctx.store->record_event("logout_everywhere", who, req.remote_address,
                            std::to_string(ended) + " sessions ended");
    Response res = redirect(ui_open(ctx) ? "/" : "/ui/login");
    res.set("Set-Cookie", clear_cookie(req));
    return res;
  });
}

} // namespace withcache::server
