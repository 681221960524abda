#pragma once

/**
 * @file
 * withcache::shim — what `curlwithcache`/`wgetwithcache` do (SPEC §4), as a
 * pure decision (`plan`) separate from the `execv`, plus the one-HEAD probe.
 *
 * This module links only withcache::url and OpenSSL (for HTTPS cache
 * servers): no SQLite, no spdlog, no cpp-httplib, so the shim starts fast.
 * Everything here is thread-safe.
 */

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "withcache/util/env.hpp"

namespace withcache::shim {

/** The tool a shim stands in for. */
enum class Tool { curl, wget };

/** The tool for an invocation name: its file name contains `wget` → wget, else curl. */
Tool tool_for(std::string_view argv0);

/** `curl` or `wget`. */
std::string_view name_of(Tool tool);

using util::Getenv;

/** Asks the cache whether it holds a cache URL (one HEAD; true only for a 200). */
using Probe = std::function<bool(const std::string& cache_url)>;

/** What a shim decided. */
struct Plan {
  std::string program; ///< the real tool to execv; empty with an error
  std::vector<std::string>
      argv;          ///< its argv: argv[0] is `program`, the rest the user's, one argument rewritten on a hit
  std::string error; ///< when non-empty: print it and exit 127
  bool probed = false;   ///< a probe was made
  bool hit = false;      ///< the probe said 200 and the URL was rewritten
  std::string cache_url; ///< the cache URL probed, when probed
};

/**
 * The real tool: `$REAL_CURL`/`$REAL_WGET` when it names an executable file,
 * else the first `curl`/`wget` on `$PATH` that is not `self` (compared by
 * device and inode after following symlinks, so symlinks and hard links to
 * the shim are skipped). Empty when there is none.
 */
std::string find_real_tool(Tool tool, const Getenv& getenv, const std::filesystem::path& self);

/** The cache server for a tool: `CURLWITHCACHE_SERVER`/`WGETWITHCACHE_SERVER`, else `WITHCACHE_SERVER`; empty
 * = unset. */
std::string server_for(Tool tool, const Getenv& getenv);

/** Where the URL is in the user's arguments (not counting argv[0]). */
struct UrlArgument {
  std::size_t index = 0; ///< index into the arguments
  std::string prefix;    ///< `--url=` when the URL came that way, else empty
  std::string url;
};

/**
 * SPEC §4 step 3: scanning left to right, after `--` the first argument with
 * a scheme; `--url X`; `--url=X`; or the first argument matching
 * `^[A-Za-z][A-Za-z0-9+.-]*://`. Nothing when there is none.
 */
std::optional<UrlArgument> find_url(const std::vector<std::string>& args);

/**
 * Decides what to run (SPEC §4 steps 1–5). `args` are the user's arguments
 * (without argv[0]). With no server set, nothing is parsed and `probe` is not
 * called. On a hit exactly one argument changes (keeping a `--url=` prefix).
 */
Plan plan(Tool tool, const std::vector<std::string>& args, const Getenv& getenv, const Probe& probe,
          const std::filesystem::path& self);

/** `WITHCACHE_PROBE_TIMEOUT` in seconds (fractions allowed), default 5 s; bad values fall back to the
 * default. */
std::chrono::milliseconds probe_timeout(const Getenv& getenv);

/**
 * One `HEAD` of `url` (http or https; HTTPS verifies the certificate against
 * the system CA store). True only for status 200. A refused connection
 * returns at once; everything else is bounded by `timeout` overall.
 */
bool head_is_200(const std::string& url, std::chrono::milliseconds timeout);

} // namespace withcache::shim
