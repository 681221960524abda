#include "server/pages.hpp"

#include <algorithm>

#include "withcache/url.hpp"
#include "withcache/util/encoding.hpp"
#include "withcache/util/size.hpp"
#include "withcache/util/time.hpp"

namespace withcache::server::pages {
namespace {

using util::format_display_time;
using util::format_size;

// A form button that posts one action; HTMX swaps the section's fragment, and
// without JavaScript the plain POST answers 303 back to the page.
std::string action(std::string_view route, std::string_view field, std::string_view value,
                   std::string_view label, std::string_view target, std::string_view confirm = {}) {
  std::string out = "<form method=\"post\" action=\"" + std::string(route) + "\" hx-post=\"" +
                    std::string(route) + "\" hx-target=\"#" + std::string(target) +
                    "\" hx-swap=\"innerHTML\"";
  if (!confirm.empty()) {
    out += " hx-confirm=\"" + escape(confirm) + "\"";
  }
  out += " class=\"inline\">";
  if (!field.empty()) {
    out += "<input type=\"hidden\" name=\"" + std::string(field) + "\" value=\"" + escape(value) + "\">";
  }
  out +=
      "<button type=\"submit\" class=\"secondary outline small\">" + std::string(label) + "</button></form>";
  return out;
}

// "1–50 of 1234 · first · previous · next": links carry the cursors of the page before and after, so
// paging deep costs what the first page costs. A page asked for by cursor does not know its position.
std::string pages_line(const Listing& l) {
  const auto link = [&](const std::string& query, const char* label, const char* rel) {
    return "<a href=\"" + l.path + "?q=" + util::percent_encode(l.filter) + "&amp;limit=" + std::to_string(l.limit) +
           query + "\" rel=\"" + rel + "\">" + label + "</a>";
  };
  const std::string total = (l.total_exact ? "" : "more than ") + std::to_string(l.total);
  std::string out = "<p class=\"paging\">";
  if (l.by_cursor) {
    out += std::to_string(l.shown) + " of " + total;
  } else {
    const std::uint64_t first = l.shown == 0 ? 0 : l.offset + 1;
    out += std::to_string(first) + "–" + std::to_string(l.offset + l.shown) + " of " + total;
  }
  if (l.by_cursor || l.offset > 0) {
    out += " · " + link("", "first", "first");
  }
  if (!l.prev.empty()) {
    out += " · " + link("&amp;before=" + l.prev, "previous", "prev");
  }
  if (!l.next.empty()) {
    out += " · " + link("&amp;after=" + l.next, "next", "next");
  }
  out += "</p>";
  return out;
}

} // namespace

std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
    case '&':
      out += "&amp;";
      break;
    case '<':
      out += "&lt;";
      break;
    case '>':
      out += "&gt;";
      break;
    case '"':
      out += "&quot;";
      break;
    case '\'':
      out += "&#39;";
      break;
    default:
      out += c;
    }
  }
  return out;
}

std::string layout(std::string_view title, std::string_view active, bool auth, std::string_view body) {
  static constexpr std::pair<const char*, const char*> nav[] = {
      {"/", "Dashboard"},          {"/ui/downloads", "Downloads"}, {"/ui/misses", "Misses"},
      {"/ui/artifacts", "Cached"}, {"/ui/add", "Add from URI"},    {"/ui/events", "Events"},
  };
  std::string out =
      "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
      "<title>" +
      escape(title) +
      " · withcache</title>"
      // No inline style or script anywhere: the UI runs under CSP default-src 'self'. htmx must not
      // inject its indicator <style> either.
      "<meta name=\"htmx-config\" content='{\"includeIndicatorStyles\": false}'>"
      "<link rel=\"stylesheet\" href=\"/static/pico.min.css\">"
      "<link rel=\"stylesheet\" href=\"/static/withcache.css\">"
      "<script src=\"/static/htmx.min.js\"></script>"
      "<script src=\"/static/withcache.js\" defer></script>"
      "</head><body>"
      "<header class=\"container\"><nav><ul><li><strong>withcache</strong></li></ul><ul>";
  for (const auto& [href, label] : nav) {
    out += std::string("<li><a href=\"") + href + "\"" + (active == label ? " aria-current=\"page\"" : "") +
           ">" + label + "</a></li>";
  }
  if (auth) {
    out +=
        "<li><form method=\"post\" action=\"/ui/logout\" class=\"inline\"><button type=\"submit\" "
        "class=\"secondary outline small\">Log out</button></form></li>"
        "<li><form method=\"post\" action=\"/ui/logout-everywhere\" class=\"inline\"><button type=\"submit\" "
        "class=\"secondary outline small\" title=\"End every operator session, on every browser\">"
        "Log out everywhere</button></form></li>";
  }
  out += "</ul></nav></header><main class=\"container\"><h2>" + escape(title) + "</h2>" + std::string(body) +
         "</main></body></html>";
  return out;
}

std::string login(bool failed, std::string_view notice) {
  std::string body = "<article><form method=\"post\" action=\"/ui/login\">";
  if (failed) {
    body += "<p role=\"alert\"><strong>Wrong password.</strong></p>";
  }
  if (!notice.empty()) {
    body += "<p role=\"alert\"><strong>" + escape(notice) + "</strong></p>";
  }
  body += "<label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" "
          "autofocus "
          "required></label><button type=\"submit\">Log in</button></form></article>";
  return "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Log in · withcache</title>"
         "<link rel=\"stylesheet\" href=\"/static/pico.min.css\"></head><body><main class=\"container\">"
         "<h2>withcache: log in</h2>" +
         body + "</main></body></html>";
}

std::string filter_form(std::string_view path, std::string_view filter) {
  return "<form method=\"get\" action=\"" + std::string(path) +
         "\" role=\"search\"><input type=\"search\" "
         "name=\"q\" placeholder=\"Filter by URL\" value=\"" +
         escape(filter) + "\"><button type=\"submit\">Filter</button></form>";
}

std::string live_section(std::string_view id, std::string_view fragment_url, std::string_view fragment) {
  return "<section id=\"" + std::string(id) + "\" hx-get=\"" + std::string(fragment_url) +
         "\" hx-trigger=\"every 1s\" hx-swap=\"innerHTML\">" + std::string(fragment) + "</section>";
}

std::string write_failure_banner(const std::optional<store::WriteFailure>& failure) {
  if (!failure) {
    return {};
  }
  const std::string what = failure->disk_full ? "Disk full" : "cache.db cannot be written";
  return "<article class=\"banner\" role=\"alert\"><strong>" + what + ":</strong> counters, misses and events are "
         "kept in memory (" + std::to_string(failure->queued) + " waiting) and written as soon as there is room. "
         "Cached artifacts are still served; new downloads wait. Since " + format_display_time(failure->since) +
         ": <small>" + escape(failure->message) + "</small></article>";
}

std::string dashboard_fragment(const Dashboard& d) {
  const auto& t = d.totals;
  std::string out = "<div class=\"grid\">";
  const auto card = [&](const std::string& label, const std::string& value) {
    out += "<article><small>" + label + "</small><h3>" + value + "</h3></article>";
  };
  card("Artifacts", std::to_string(t.artifacts));
  card("Stored", format_size(t.stored_bytes));
  card("Served", format_size(d.bytes_served));
  const std::uint64_t asked = t.hits + t.misses;
  card("Hit ratio", asked == 0 ? "–" : std::to_string(t.hits * 100 / asked) + " %");
  out += "</div><div class=\"grid\">";
  card("Downloads running", std::to_string(d.running));
  card("Queued", std::to_string(d.queued));
  card("URLs missing", std::to_string(t.pending_misses));
  card("Mode", d.curate ? "curated" : "auto-fetch");
  out += "</div>";
  if (t.max_bytes == 0) {
    out += "<p>Capacity: unlimited.</p>";
  } else {
    const bool full = t.stored_bytes >= t.max_bytes;
    out += "<p>Capacity: " + format_size(t.stored_bytes) + " of " + format_size(t.max_bytes) +
           (full ? " — <strong>cache full</strong>: delete artifacts to make room." : "") + "</p>";
    out += "<progress value=\"" + std::to_string(std::min(t.stored_bytes, t.max_bytes)) + "\" max=\"" +
           std::to_string(t.max_bytes) + "\"></progress>";
  }
  return out;
}

std::string downloads_fragment(const store::Page<Job>& page, const Listing& listing) {
  const std::vector<Job>& jobs = page.items;
  std::string out = action("/admin/clear", "", "", "Clear finished", "downloads");
  out += pages_line(listing);
  out +=
      "<table><thead><tr><th>URL</th><th>Status</th><th>Progress</th><th>Rate</th><th>ETA</th><th>Clients</th>"
      "<th></th></tr>"
      "</thead><tbody>";
  if (jobs.empty()) {
    out += "<tr><td colspan=\"7\">No downloads.</td></tr>";
  }
  for (const auto& j : jobs) {
    out += "<tr data-status=\"" + std::string(to_string(j.status)) + "\"><td>" +
           escape(url::redact(j.url)) + "</td><td>" + std::string(to_string(j.status));
    if (!j.error.empty()) {
      out += "<br><small>" + escape(j.error) + "</small>";
    }
    out += "</td><td>";
    if (j.bytes_total > 0) {
      out += "<progress value=\"" + std::to_string(j.bytes_done) + "\" max=\"" +
             std::to_string(j.bytes_total) + "\"></progress>" + format_size(j.bytes_done) + " / " +
             format_size(j.bytes_total) + " (" + std::to_string(j.bytes_done * 100 / j.bytes_total) +
             " %)";
    } else {
      out += format_size(j.bytes_done);
    }
    out += "</td><td>" + util::format_rate(j.rate) +
           "</td><td>";
    if (j.status == JobStatus::running && j.rate > 0 && j.bytes_total > j.bytes_done) {
      out += std::to_string(
                 static_cast<std::uint64_t>(static_cast<double>(j.bytes_total - j.bytes_done) / j.rate)) +
             " s";
    } else {
      out += "–";
    }
    // Clients being served this fill's bytes while it runs.
    out += "</td><td data-attached=\"" + std::to_string(j.attached) + "\">" +
           (j.status == JobStatus::running ? std::to_string(j.attached) : std::string("–")) + "</td><td>";
    if (!j.ended()) {
      out += action("/admin/cancel", "id", std::to_string(j.id), "Cancel", "downloads");
    }
    out += "</td></tr>";
  }
  out += "</tbody></table>";
  return out;
}

std::string misses_fragment(const store::Page<store::Miss>& page, const Listing& listing, bool curate) {
  std::string out = curate ? ""
                           : "<p><small>Auto-fetch is on: misses fill themselves when the origin is "
                             "allowed and there is room.</small></p>";
  out += pages_line(listing);
  out += "<table><thead><tr><th>URL</th><th>Count</th><th>Last seen</th><th>Why not cached</th><th></th></tr>"
         "</thead><tbody>";
  if (page.items.empty()) {
    out += "<tr><td colspan=\"5\">No misses.</td></tr>";
  }
  for (const auto& m : page.items) {
    std::string why = escape(m.last_reason);
    if (m.retry_after > 0) {
      why += "<br><small>retried automatically after " + format_display_time(m.retry_after) + " (" +
             std::to_string(m.failures) + (m.failures == 1 ? " failure" : " failures") + ")</small>";
    }
    out += "<tr><td>" + escape(url::redact(m.url)) + "</td><td>" + std::to_string(m.count) + "</td><td>" +
           format_display_time(m.last_seen) + "</td><td>" + why + "</td><td>" +
           // The key, not the URL: a hidden input would carry the URL's signature into the page.
           action("/admin/fetch", "key", m.key, "Download", "misses") + " " +
           action("/admin/dismiss", "key", m.key, "Dismiss", "misses") + "</td></tr>";
  }
  out += "</tbody></table>";
  return out;
}

std::string artifacts_fragment(const store::Page<store::Artifact>& page, const Listing& listing) {
  std::string out = pages_line(listing);
  out += "<table><thead><tr><th>URL</th><th>Size</th><th>Hits</th><th>Misses</th><th>SHA-256</"
         "th><th>Fetched</th>"
         "<th></th></tr></thead><tbody>";
  if (page.items.empty()) {
    out += "<tr><td colspan=\"7\">Nothing cached yet.</td></tr>";
  }
  for (const auto& a : page.items) {
    out += "<tr><td>" + escape(url::redact(a.url)) + "</td><td>" + format_size(a.size) + "</td><td>" +
           std::to_string(a.hits) + "</td><td>" + std::to_string(a.misses) +
           "</td><td><code class=\"sha\" title=\"" + escape(a.sha256) + "\">" + escape(a.sha256.substr(0, 12)) +
           "…</code> <button type=\"button\" class=\"secondary outline "
           "small\" data-copy=\"" + escape(a.sha256) + "\">Copy</button></td><td>" + format_display_time(a.fetched_at) + "</td><td>" +
           action("/admin/delete", "key", a.key, "Delete", "artifacts", "Delete " + url::redact(a.url) + "?") +
           "</td></tr>";
  }
  out += "</tbody></table>";
  return out;
}

std::string events_fragment(const store::Page<store::Event>& page, const Listing& listing) {
  std::string out = pages_line(listing);
  out += "<table><thead><tr><th>Time</th><th>Event</th><th>Actor</th><th>Address</th><th>Details</th></tr></"
         "thead><tbody>";
  if (page.items.empty()) {
    out += "<tr><td colspan=\"5\">No events.</td></tr>";
  }
  for (const auto& e : page.items) {
    out += "<tr><td>" + format_display_time(e.time) + "</td><td>" + escape(e.kind) + "</td><td>" + escape(e.actor) +
           "</td><td>" + escape(e.address) + "</td><td>" + escape(e.details) + "</td></tr>";
  }
  out += "</tbody></table>";
  return out;
}

std::string add_form(std::string_view message, bool ok) {
  std::string out;
  if (!message.empty()) {
    out += std::string("<p role=\"") + (ok ? "status" : "alert") + "\">" + escape(message) + "</p>";
  }
  out += "<form method=\"post\" action=\"/admin/fetch\" hx-post=\"/admin/fetch\" hx-target=\"#add\" "
         "hx-swap=\"innerHTML\"><label>URL <input type=\"url\" name=\"url\" required "
         "placeholder=\"https://developer.download.nvidia.com/…/cuda.run\"></label><label>Request headers "
         "<small>(optional, one <code>Name: Value</code> per line; never shown again)</small>"
         "<textarea name=\"header\" rows=\"3\"></textarea></label><button "
         "type=\"submit\">Download</button></form>";
  return out;
}

} // namespace withcache::server::pages
