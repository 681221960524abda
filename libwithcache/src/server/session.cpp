// The session and auth middleware, and the routes that open and close a session.
#include <spdlog/spdlog.h>

#include "server/context.hpp"
#include "server/pages.hpp"
#include "withcache/digest.hpp"
#include "withcache/util/strings.hpp"

namespace withcache::server {

bool ui_open(const Context& ctx) {
  return ctx.options.admin_password.empty();
}

bool has_session(const Context& ctx, const Request& req) {
  const auto token = auth::cookie_value(req.header("Cookie"), auth::k_cookie);
  return token && ctx.sessions->verify(*token).has_value();
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
    if (const auto wait = ctx.throttle.retry_after(address); wait.count() > 0) {
      const auto seconds = std::to_string((wait.count() + 999) / 1000);
      Response res = html(429, pages::login(false, "Too many wrong passwords: try again in " + seconds + " s."));
      res.set("Retry-After", seconds);
      return res;
    }
    if (!digest::constant_time_equal(req.param("password"), ctx.options.admin_password)) {
      ctx.throttle.record_failure(address);
      spdlog::warn("failed operator login from {}", address);
      ctx.store->record_event("login_failed", "anonymous", address, "");
      return html(401, pages::login(true, {}));
    }
    ctx.throttle.reset(address);
    ctx.store->record_event("login", "admin", address, "");
    Response res = redirect("/");
    res.set("Set-Cookie", std::string(auth::k_cookie) + "=" + ctx.sessions->issue("admin") +
                              "; HttpOnly; SameSite=Lax; Path=/; Max-Age=" +
                              std::to_string(ctx.sessions->lifetime().count()));
    return res;
  });

  router.add("POST", "/ui/logout", Runs::worker, [&ctx](const Request& req) {
    if (!csrf_ok(req)) {
      return plain(403, "cross-site request refused\n");
    }
    if (has_session(ctx, req)) {
      ctx.store->record_event("logout", "admin", req.remote_address, "");
    }
    Response res = redirect(ui_open(ctx) ? "/" : "/ui/login");
    res.set("Set-Cookie", std::string(auth::k_cookie) + "=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0");
    return res;
  });
}

} // namespace withcache::server
