#pragma once

/**
 * @file
 * withcache::shim — what `curlwithcache`/`wgetwithcache` do (SPEC §4), as a
 * pure decision (`plan`) separate from the `execv`, plus the probe with its
 * memo of unreachable caches and the self-check.
 *
 * The rule: the shim changes only where the bytes of a plain download come
 * from. It parses argv with the real tool's own option table
 * (parse_args), and anything it cannot show to be a plain download passes
 * through (decide): the real tool is exec'd with the original argv and no
 * probe is sent.
 *
 * This module links only withcache::url, withcache::probe and OpenSSL (for
 * HTTPS cache servers): no SQLite, no spdlog, no cpp-httplib, so the shim
 * starts fast. Everything here is thread-safe; only the memo, find_real_tool() and
 * config_files_pass_through() touch the file system.
 */

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
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

// ---------------------------------------------------------------------------------------------
// Parsing argv the way the tools do
// ---------------------------------------------------------------------------------------------

/** Whether an option takes a value. */
enum class Value : std::uint8_t {
  none,     ///< a flag
  required, ///< `-o file`, `-ofile`, `--output file` (wget also `--output-document=file`)
  optional, ///< wget booleans: only `--continue=off` gives one; the next argument is never taken
};

/** One option of a tool, as its own help and manual document it (scripts/gen-shim-options). */
struct OptionSpec {
  std::string_view long_name; ///< without the leading `--`
  char short_name;            ///< `\0` when it has none
  Value value;
  bool negatable; ///< curl accepts `--no-<long_name>`
};

/**
 * The option table of Debian 12's curl 7.88 or wget 1.21, sorted by long
 * name, generated from the tools' help and manual text. For wget, each
 * boolean's `no-` form is its own entry (as getopt_long sees it).
 */
std::span<const OptionSpec> options_of(Tool tool);

/** One option found in argv. */
struct ParsedOption {
  const OptionSpec* spec = nullptr; ///< never null
  bool negated = false;             ///< curl's `--no-X`
  std::optional<std::string> value; ///< its value, when it has one
  std::size_t index = 0;            ///< the argument the option starts in (its value may be the next one)
};

/** A URL argument: a positional argument, or the value of curl's `--url`. */
struct UrlArgument {
  std::size_t index = 0; ///< index into the arguments; the whole argument is the URL
  std::string url;
};

/** Why argv could not be parsed the way the tool would. */
enum class ParseProblem {
  none,
  unknown_option,   ///< not in the tool's table (or a short letter it does not have)
  ambiguous_option, ///< a long-name prefix that matches several options
  missing_value,    ///< an option that needs a value is the last argument
  unexpected_value, ///< `--flag=value` for an option without a value (wget)
  not_negatable,    ///< curl `--no-X` for an X that is not a boolean
};

/** argv as the tool would read it. */
struct ParsedArgs {
  std::vector<ParsedOption> options;
  std::vector<UrlArgument> urls; ///< in order
  ParseProblem problem = ParseProblem::none;
  std::size_t problem_index = 0; ///< the argument with the problem
};

/**
 * Reads `args` (argv without argv[0]) as `tool` would.
 *
 * curl 7.88: `-abc` clusters whose first value-taking letter takes the rest of
 * the cluster (`-ofile`) or the next argument (`-sSLo file`); `--name value`
 * with names matched case-insensitively, exactly or by an unambiguous prefix;
 * `--no-name` (exact names of booleans only); no `--name=value` syntax (curl
 * rejects `--url=X` as an unknown option); `--` makes every later argument a
 * URL; every non-option argument and every `--url` value is a URL.
 * wget 1.21 (glibc getopt_long): the same clusters; `--name=value` or
 * `--name value` for options that need one, `--name[=value]` for booleans;
 * case-sensitive names, exact or an unambiguous prefix; options anywhere
 * unless `posixly_correct` (then the first non-option ends them); `--`;
 * `-nv` is `-n` with the value `v`.
 *
 * Parsing stops at the first problem (the tool would refuse the command).
 * Pure; never throws except std::bad_alloc.
 */
ParsedArgs parse_args(Tool tool, std::span<const std::string> args, bool posixly_correct = false);

// ---------------------------------------------------------------------------------------------
// Deciding: a plain download, or pass through
// ---------------------------------------------------------------------------------------------

/** Why a whole command passes through untouched, with no probe. */
enum class PassThrough {
  none,           ///< the command is a plain download: its qualifying URLs are probed
  unparsed,       ///< an option the tool's table does not have, is ambiguous, or lacks its value
  not_a_get,      ///< a body, an upload, another method, HEAD, or an extra query (curl -d/-F/-T/-X/-I/...)
  credentials,    ///< credentials or a header the shim cannot vouch for (-u, -H Authorization, userinfo, ...)
  url_list,       ///< URLs the shim cannot see: curl -K, wget -i, wget --config
  naming,         ///< the saved name depends on more than the URL (wget -r/-x/--content-disposition, curl -J)
  shows_url,      ///< the output would show the cache URL (curl -w '%{url_effective}', ...)
  wgetrc_command, ///< a wget -e command the shim does not know to be harmless
};

/** Why one URL of a plain download is not probed (the others still are). */
enum class UrlSkip {
  none,         ///< probed
  not_http,     ///< no scheme, or a scheme other than http/https (ftp://, file://, ...)
  cache_itself, ///< host and port are the cache server's own (/b/ and /blob?url= URLs)
  unparsable,   ///< the URL does not parse (a space, a bad port, ...)
  glob,         ///< curl would expand `[...]`/`{...}` in it (no -g/--globoff)
};

/** `curl -d`, `wget --header Authorization`, ...: one line for logs and --check. */
const char* describe(PassThrough reason);
/** A few words for a UrlSkip. */
const char* describe(UrlSkip skip);

/** What the shim does with a parsed command. */
struct Decision {
  PassThrough pass_through = PassThrough::none;
  std::string
      because; ///< the option or argument that decided a pass-through (`-d`, `--header`), for messages
  /** Per URL argument, in order: probed (UrlSkip::none) or why not. Empty on a pass-through. */
  std::vector<std::pair<UrlArgument, UrlSkip>> urls;

  /** The URLs to probe. */
  [[nodiscard]] std::vector<UrlArgument> probed() const;
};

/**
 * Decides, from `parsed` and the cache's base URL (cache_base() form), which
 * URLs to probe or why the command passes through. The pass-through classes
 * apply to the whole command: one POST flag, credential or URL list anywhere
 * (even after curl's `--next`) means no probe at all, because the shim cannot
 * show which transfers they touch. The UrlSkip reasons apply to one URL.
 */
Decision decide(Tool tool, const ParsedArgs& parsed, std::string_view cache_base);

/**
 * What the tools' own config files add to a command: curl's `.curlrc` (the
 * first of `$CURL_HOME/.curlrc`, `$XDG_CONFIG_HOME/.curlrc`, `$HOME/.curlrc`,
 * `~/.config/curlrc`, as curl 7.88 looks; none when the first argument is
 * `-q...` or `--disable`), wget's `/etc/wgetrc` and `$WGETRC` or
 * `~/.wgetrc` (none with `--no-config`). Each line is judged as the same
 * option on the command line would be: a credential, a header or a method
 * there makes the command pass through. A file that exists but cannot be
 * read as text (not a regular file, over 256 KiB) passes through too.
 * @param because set to `file: option` when the result is not PassThrough::none
 */
PassThrough config_files_pass_through(Tool tool, const std::vector<std::string>& args, const Getenv& getenv,
                                      std::string* because = nullptr);

// ---------------------------------------------------------------------------------------------
// Finding the real tool, the server, the plan
// ---------------------------------------------------------------------------------------------

/** The environment variable a shim sets before it execs the real tool (see plan()). */
inline constexpr const char* k_marker_variable = "WITHCACHE_SHIM_EXECED";

/**
 * The real tool: `$REAL_CURL`/`$REAL_WGET` when it names an executable file,
 * else the first `curl`/`wget` on `$PATH`. A candidate is skipped when it is
 * the shim itself (`self`, compared by device and inode after following
 * symlinks, so symlinks and hard links to the shim are skipped, for REAL_* too)
 * or when its device:inode is listed in `skip` (tools a shim earlier in this
 * chain already exec'd). Empty when there is none.
 */
std::string find_real_tool(Tool tool, const Getenv& getenv, const std::filesystem::path& self,
                           std::string_view skip = {});

/** The cache server for a tool: `CURLWITHCACHE_SERVER`/`WGETWITHCACHE_SERVER`, else `WITHCACHE_SERVER`; empty
 * = unset. */
std::string server_for(Tool tool, const Getenv& getenv);

/** The variable server_for() took the server from (`WITHCACHE_SERVER`, ...), or nothing when unset. */
std::optional<std::string> server_variable_for(Tool tool, const Getenv& getenv);

/**
 * Asks the cache about several cache URLs at once, within one deadline:
 * true for each one it holds (HEAD answered 200), in order.
 */
using Probe = std::function<std::vector<bool>(const std::vector<std::string>& cache_urls)>;

/** What a shim decided. */
struct Plan {
  std::string program; ///< the real tool to execv; empty with an error
  /** Its argv: argv[0] is `program`, the rest the user's, only the probed URLs that hit replaced. */
  std::vector<std::string> argv;
  std::string error;                   ///< when non-empty: print it and exit 127
  std::string marker;                  ///< the value of k_marker_variable to set before the exec
  bool reentered = false;              ///< a shim earlier in this chain already ran: no parsing, no probe
  Decision decision;                   ///< what parse_args/decide said (empty when nothing was parsed)
  std::vector<std::string> cache_urls; ///< the distinct cache URLs probed, in the order of decision.probed()
  std::size_t hits = 0;                ///< how many were rewritten
};

/**
 * Decides what to run (SPEC §4). `args` are the user's arguments (without
 * argv[0]).
 *  - Re-entered (k_marker_variable set, e.g. REAL_CURL is a wrapper that runs
 *    `curl` again): the real tool, skipping those the chain already ran, with
 *    the arguments untouched. No parsing, no probe.
 *  - No server set: the real tool with the arguments untouched. Nothing is
 *    parsed and `probe` is not called.
 *  - Otherwise parse_args() + decide(), then (only when there is a URL to
 *    probe) config_files_pass_through(); a pass-through runs untouched;
 *    else `probe` is called once with every qualifying cache URL, and
 *    exactly the URL arguments that hit are replaced.
 * POSIXLY_CORRECT in `getenv` changes how wget reads argv, so it is passed on to parse_args().
 */
Plan plan(Tool tool, const std::vector<std::string>& args, const Getenv& getenv, const Probe& probe,
          const std::filesystem::path& self);

// ---------------------------------------------------------------------------------------------
// The probe, bounded, and the memo of a dead cache
// ---------------------------------------------------------------------------------------------

/** `WITHCACHE_PROBE_TIMEOUT` in seconds (fractions allowed), default 3 s; bad values fall back to the
 * default. */
std::chrono::milliseconds probe_timeout(const Getenv& getenv);

/** How long a cache that did not answer is remembered as unreachable. */
inline constexpr std::chrono::seconds k_memo_lifetime{30};

/**
 * The per-user memo of caches that did not answer (SPEC §4.5): one small file
 * per cache base URL in `$XDG_RUNTIME_DIR/withcache/` when XDG_RUNTIME_DIR is
 * an absolute directory the user owns that no one else may write, else in
 * `/tmp/withcache-$UID/` (mode 0700). A directory or file that is a symlink,
 * not owned by the user, or group/world-writable is ignored (no memo). Files
 * are written atomically (a temporary file renamed into place).
 */
class Memo {
 public:
  /** The memo for the environment `getenv` describes (reads XDG_RUNTIME_DIR). */
  explicit Memo(const Getenv& getenv);
  /** A memo in `directory` (tests). */
  explicit Memo(std::filesystem::path directory);

  /** The directory it uses; empty when none is safe to use. */
  [[nodiscard]] const std::filesystem::path& directory() const { return m_directory; }

  /** When `cache_base` was remembered as unreachable, the time it is remembered until; else nothing. */
  [[nodiscard]] std::optional<std::chrono::system_clock::time_point>
  unreachable_until(std::string_view cache_base) const;

  /** Remembers `cache_base` as unreachable for k_memo_lifetime. Best effort: errors are ignored. */
  void remember_unreachable(std::string_view cache_base) const;

  /** The file that holds the memo of `cache_base` (inside directory()). */
  [[nodiscard]] std::filesystem::path file_for(std::string_view cache_base) const;

 private:
  std::filesystem::path m_directory;
};

/**
 * The shim's probe: no network at all when `memo` says `cache_base` is
 * unreachable (every URL is a miss); otherwise one concurrent HEAD per cache
 * URL under one deadline (`timeout`). When no probe got any answer because
 * the cache could not be resolved, refused or was unreachable, or timed out,
 * the cache is remembered as unreachable (TLS and protocol failures are
 * answers of a kind, fast, and not remembered).
 */
std::vector<bool> probe_cache(std::string_view cache_base, const std::vector<std::string>& cache_urls,
                              std::chrono::milliseconds timeout, const Memo& memo);

/**
 * One `HEAD` of `url` (http or https; HTTPS verifies the certificate against
 * the system CA store). True only for status 200. A refused connection
 * returns at once; everything else is bounded by `timeout` overall.
 */
bool head_is_200(const std::string& url, std::chrono::milliseconds timeout);

// ---------------------------------------------------------------------------------------------
// withcache-shim --check
// ---------------------------------------------------------------------------------------------

/**
 * The self-check (`withcache-shim --check`): for curl and for wget, the
 * server variable in effect and its value, a `HEAD /healthz` of it (latency
 * or failure; the memo is neither consulted nor changed), the real tool it
 * would exec, and whether the memo of an unreachable cache is set.
 * @return the report as text, and 0 when every configured server answered
 *         and both real tools were found, 1 otherwise.
 */
int check(const Getenv& getenv, const std::filesystem::path& self, std::string& report);

} // namespace withcache::shim
