// Fuzzes the shim's argument scan (shim::find_url) and its decision (shim::plan) over a user's
// arguments: the input split at NUL bytes, as the kernel hands them over. A URL found is one of the
// arguments, and on a hit plan() changes exactly that argument to the cache URL, keeping `--url=`.
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_target.hpp"
#include "withcache/shim.hpp"

namespace shim = withcache::shim;

namespace {

// REAL_CURL names this executable, so plan() finds a real tool without searching $PATH.
const char* test_env(const char* name) {
  const std::string_view key = name;
  if (key == "REAL_CURL" || key == "REAL_WGET") {
    return "/proc/self/exe";
  }
  if (key == "WITHCACHE_SERVER") {
    return "http://cache:3000";
  }
  return nullptr;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> args;
  for (const std::string_view arg : withcache::fuzz::split(withcache::fuzz::text_of(data, size), '\0')) {
    args.emplace_back(arg);
  }

  const auto found = shim::find_url(args);
  if (found) {
    WITHCACHE_FUZZ_CHECK(found->index < args.size());
    WITHCACHE_FUZZ_CHECK(found->prefix.empty() || found->prefix == "--url=");
    WITHCACHE_FUZZ_CHECK(found->prefix + found->url == args[found->index]);
  }

  for (const bool hit : {false, true}) {
    int probes = 0;
    const shim::Plan plan = shim::plan(
        shim::Tool::curl, args, test_env,
        [&](const std::string&) {
          ++probes;
          return hit;
        },
        "/nonexistent/curlwithcache");
    WITHCACHE_FUZZ_CHECK(plan.error.empty() && plan.program == "/proc/self/exe");
    WITHCACHE_FUZZ_CHECK(plan.argv.size() == args.size() + 1 && plan.argv.front() == plan.program);
    const bool should_probe = found && !found->url.empty();
    WITHCACHE_FUZZ_CHECK(probes == (should_probe ? 1 : 0) && plan.probed == should_probe);
    WITHCACHE_FUZZ_CHECK(plan.hit == (should_probe && hit));
    WITHCACHE_FUZZ_CHECK(!plan.probed || plan.cache_url.starts_with("http://cache:3000/b/"));
    for (std::size_t i = 0; i < args.size(); ++i) {
      if (plan.hit && i == found->index) {
        WITHCACHE_FUZZ_CHECK(plan.argv[i + 1] == found->prefix + plan.cache_url);
      } else {
        WITHCACHE_FUZZ_CHECK(plan.argv[i + 1] == args[i]);
      }
    }
  }
  return 0;
}
