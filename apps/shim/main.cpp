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
#include "withcache/version.hpp"

namespace {

constexpr int k_exit_cannot_run = 127;

const char* k_help =
    "withcache-shim: runs curl or wget, re-pointing the URL at a withcache server when it holds it.\n"
    "\n"
    "Install it as curlwithcache / wgetwithcache (or as curl / wget ahead of the real ones on PATH);\n"
    "the tool is chosen by the name it is invoked as (contains 'wget' -> wget, else curl).\n"
    "\n"
    "  WITHCACHE_SERVER           the cache, e.g. cache.lab:3000 (unset or empty: the real tool runs "
    "untouched)\n"
    "  CURLWITHCACHE_SERVER       overrides WITHCACHE_SERVER for curl; WGETWITHCACHE_SERVER for wget\n"
    "  WITHCACHE_PROBE_TIMEOUT    seconds to wait for the cache's answer (default 5)\n"
    "  REAL_CURL, REAL_WGET       the real tools, when PATH lookup is not what you want\n"
    "\n"
    "On a hit only the URL argument changes; on a miss, an unset or unreachable cache the command runs\n"
    "exactly as written. URLs inside -K config files or read from stdin are not seen and pass through.\n";

std::string self_path() {
  char buffer[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buffer, sizeof buffer - 1);
  return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
}

} // namespace

int main(int argc, char** argv) {
  const std::string invoked = argc > 0 ? argv[0] : "curl";
  const std::string base = invoked.substr(invoked.rfind('/') + 1);
  if (base == "withcache-shim" && argc == 2 &&
      (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::fputs(k_help, stdout);
    std::puts("\nUsage: withcache-shim [curl arguments...]   (as curlwithcache / wgetwithcache: the tool's "
              "arguments)");
    return 0;
  }
  if (base == "withcache-shim" && argc == 2 && std::strcmp(argv[1], "--version") == 0) {
    std::puts(withcache::k_product);
    return 0;
  }

  const auto tool = withcache::shim::tool_for(invoked);
  const withcache::shim::Getenv getenv = [](const char* name) {
    return static_cast<const char*>(std::getenv(name));
  };
  const auto timeout = withcache::shim::probe_timeout(getenv);
  const std::vector<std::string> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  const auto plan = withcache::shim::plan(
      tool, args, getenv,
      [&](const std::string& cache_url) { return withcache::shim::head_is_200(cache_url, timeout); },
      self_path());
  if (!plan.error.empty()) {
    std::fprintf(stderr, "%s\n", plan.error.c_str());
    return k_exit_cannot_run;
  }
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
