#pragma once

// HTML of the operator UI (server-side rendered; HTMX swaps the fragments).
// Everything that came from a URL, a header or the database goes through
// escape(). Internal to withcache::server.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "withcache/records.hpp"
#include "withcache/store.hpp"

namespace withcache::server {

/** The embedded asset `name` (e.g. `htmx.min.js`); empty when unknown. Generated at build time. */
std::string_view embedded_asset(std::string_view name);

namespace pages {

/** HTML-escapes `& < > " '`. */
std::string escape(std::string_view text);

/** Numbers for the dashboard. */
struct Dashboard {
  store::Totals totals;
  std::uint64_t queued = 0;
  std::uint64_t running = 0;
  std::uint64_t bytes_served = 0;
  bool curate = false;
};

/** A listing's query, echoed into filter forms and paging links. */
struct Listing {
  std::string path; ///< e.g. /ui/artifacts
  std::string filter;
  std::uint64_t offset = 0;
  std::uint64_t limit = 50;
  std::uint64_t total = 0;
  bool total_exact = true;   ///< false: more than `total` match
  std::uint64_t shown = 0;   ///< rows on this page
  std::string next{};        ///< cursor of the page after (empty: none)
  std::string prev{};        ///< cursor of the page before (empty: none)
  bool by_cursor = false;    ///< this page was asked for with a cursor (its position is not known)
};

/** The whole page around `body`. `auth` shows the "Log out" and "Log out everywhere" buttons. */
std::string layout(std::string_view title, std::string_view active, bool auth, std::string_view body);
/** The login form; `failed` says the password was wrong, `notice` is shown when not empty. */
std::string login(bool failed, std::string_view notice);

/**
 * The banner shown above every section while cache.db cannot be written (a full disk): what is kept in
 * memory and that hits are still served. Empty when writes work.
 */
std::string write_failure_banner(const std::optional<store::WriteFailure>& failure);
std::string dashboard_fragment(const Dashboard& d);
std::string downloads_fragment(const store::Page<Job>& page, const Listing& listing);
std::string misses_fragment(const store::Page<store::Miss>& page, const Listing& listing, bool curate);
std::string artifacts_fragment(const store::Page<store::Artifact>& page, const Listing& listing);
std::string events_fragment(const store::Page<store::Event>& page, const Listing& listing);
std::string add_form(std::string_view message, bool ok);

/** The filter box of a listing; outside the live section, so a refresh never resets what is typed. */
std::string filter_form(std::string_view path, std::string_view filter);

/** A section that re-fetches `fragment_url` every second and swaps only its own content. */
std::string live_section(std::string_view id, std::string_view fragment_url, std::string_view fragment);

} // namespace pages
} // namespace withcache::server
