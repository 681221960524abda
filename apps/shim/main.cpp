// curlwithcache / wgetwithcache: decide with withcache::shim::plan, then execv
// the real tool, so its exit status, signals and I/O are the real tool's.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

#include "withcache/shim.hpp"
#include "withcache/url.hpp"
#include "withcache/version.hpp"

namespace {

constexpr int k_exit_cannot_run = 127;

// /proc/self/exe names this binary however it was reached (symlink, hard link); find_real_tool()
// stat()s it, so the shim never picks itself. No readlink, no open.
constexpr const char* k_self = "/proc/self/exe";

const char* k_help =
    "withcache-shim: runs curl or wget, re-pointing a plain download's URL at a withcache server that holds "
    "it.\n"
    "\n"
    "Install it as curlwithcache / wgetwithcache (or as curl / wget ahead of the real ones on PATH);\n"
    "the tool is chosen by the name it is invoked as (contains 'wget' -> wget, else curl).\n"
    "\n"
    "  WITHCACHE_SERVER           the cache, e.g. cache.lab:3000 (unset or empty: the real tool runs "
    "untouched)\n"
    "  CURLWITHCACHE_SERVER       overrides WITHCACHE_SERVER for curl; WGETWITHCACHE_SERVER for wget\n"
    "  WITHCACHE_PROBE_TIMEOUT    seconds for the whole probe: DNS, connect, TLS and answer (default 3)\n"
    "  REAL_CURL, REAL_WGET       the real tools, when PATH lookup is not what you want\n"
    "\n"
    "The shim reads the arguments with the tool's own option table. Only a plain download is probed: a\n"
    "body or another method (-d, -F, -T, -X POST, -I, --post-data, --method, --spider), credentials or\n"
    "headers that may carry them (-u, -b, -E, -n, -H Authorization, user:pw@ in a URL, --user,\n"
    "--load-cookies, or the same in ~/.curlrc or wgetrc), URLs it cannot see (-K, -i, --config),\n"
    "names that depend on more than the URL (wget -r/-x/--content-disposition, curl -J), unknown\n"
    "options, and URLs of the cache itself or of other schemes all run exactly as written, unprobed.\n"
    "On a hit only the URL argument changes, and the saved file name stays the same. A cache that does\n"
    "not answer is remembered for 30 s (in $XDG_RUNTIME_DIR/withcache or /tmp/withcache-$UID), so it\n"
    "costs one timeout per 30 s.\n"
    "\n"
    "Usage: withcache-shim --check     what the shim would do here: server, probe, real tools, memo\n"
    "       withcache-shim --version\n"
    "       curlwithcache [curl arguments...]   wgetwithcache [wget arguments...]\n"
    "--check exits 0 when a server is set and answers and both real tools are found, else 1.\n";

} // namespace

int main(int argc, char** argv) {
  const std::string invoked = argc > 0 ? argv[0] : "curl";
  const std::string base = invoked.substr(invoked.rfind('/') + 1);
  const withcache::shim::Getenv getenv = [](const char* name) {
    return static_cast<const char*>(std::getenv(name));
  };
  if (base == "withcache-shim" && argc == 2) {
    if (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
      std::fputs(k_help, stdout);
      return 0;
    }
    if (std::strcmp(argv[1], "--version") == 0) {
      std::puts(withcache::k_product);
      return 0;
    }
    if (std::strcmp(argv[1], "--check") == 0) {
      std::string report;
      const int status = withcache::shim::check(getenv, k_self, report);
      std::fputs(report.c_str(), stdout);
      return status;
    }
  }

  const auto tool = withcache::shim::tool_for(invoked);
  const std::vector<std::string> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  const auto plan = withcache::shim::plan(
      tool, args, getenv,
      [&](const std::vector<std::string>& cache_urls) {
        // Only reached with a server set and something to probe: unset costs no file access.
        const std::string server = withcache::shim::server_for(tool, getenv);
        return withcache::shim::probe_cache(withcache::url::cache_base(server), cache_urls,
                                            withcache::shim::probe_timeout(getenv),
                                            withcache::shim::Memo(getenv));
      },
      k_self);
  if (!plan.error.empty()) {
    std::fprintf(stderr, "%s\n", plan.error.c_str());
    return k_exit_cannot_run;
  }
  // A wrapper that runs `curl` again reaches a shim that sees this and execs the real tool at once.
  ::setenv(withcache::shim::k_marker_variable, plan.marker.c_str(), 1);
  std::vector<char*> exec_argv;
  exec_argv.reserve(plan.argv.size() + 1);
  for (const auto& arg : plan.argv) {
    exec_argv.push_back(const_cast<char*>(arg.c_str()));
  }
  exec_argv.push_back(nullptr);
  ::execv(plan.program.c_str(), exec_argv.data());
  const std::string name(withcache::shim::name_of(tool));
  std::fprintf(stderr, "%swithcache: cannot run %s: %s\n", name.c_str(), plan.program.c_str(),
               std::strerror(errno));
  return k_exit_cannot_run;
}
