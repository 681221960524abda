// Fuzzes the shim's argv parser (shim::parse_args), its decision (shim::decide) and the whole plan
// (shim::plan) over a user's arguments: the input split at NUL bytes, as the kernel hands them over.
// The first byte picks the tool and POSIXLY_CORRECT. Every URL found is one whole argument that no
// option consumed as its value, a pass-through probes nothing, and on a hit plan() changes exactly the
// probed URL arguments to cache URLs.
#include <algorithm>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_target.hpp"
#include "withcache/shim.hpp"

namespace shim = withcache::shim;

namespace {

constexpr std::string_view k_cache = "http://cache:3000";

// REAL_CURL/REAL_WGET name this executable, so plan() finds a real tool without searching $PATH;
// HOME and the config variables point nowhere, so no .curlrc or wgetrc is read.
const char* test_env(const char* name) {
  const std::string_view key = name;
  if (key == "REAL_CURL" || key == "REAL_WGET") {
    return "/proc/self/exe";
  }
  if (key == "WITHCACHE_SERVER") {
    return "http://cache:3000";
  }
  if (key == "HOME" || key == "CURL_HOME" || key == "XDG_CONFIG_HOME" || key == "WGETRC") {
    return "/nonexistent";
  }
  return nullptr;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  const shim::Tool tool = (data[0] & 1) != 0 ? shim::Tool::wget : shim::Tool::curl;
  const bool posixly_correct = (data[0] & 2) != 0;
  std::vector<std::string> args;
  for (const std::string_view arg : withcache::fuzz::split(withcache::fuzz::text_of(data + 1, size - 1), '\0')) {
    args.emplace_back(arg);
  }

  const shim::ParsedArgs parsed = shim::parse_args(tool, args, posixly_correct);
  const auto table = shim::options_of(tool);

  // URLs: whole arguments, in strictly increasing order.
  for (std::size_t i = 0; i < parsed.urls.size(); ++i) {
    const auto& url = parsed.urls[i];
    WITHCACHE_FUZZ_CHECK(url.index < args.size());
    WITHCACHE_FUZZ_CHECK(url.url == args[url.index]);
    WITHCACHE_FUZZ_CHECK(i == 0 || parsed.urls[i - 1].index < url.index);
  }
  // Options: specs from the tool's table; an argument taken as a value (the one after the option) is a
  // URL only for curl's --url.
  std::set<std::size_t> taken;     // values of options other than --url
  std::set<std::size_t> any_value; // values of any option, --url included
  for (const auto& option : parsed.options) {
    WITHCACHE_FUZZ_CHECK(option.spec != nullptr);
    WITHCACHE_FUZZ_CHECK(option.spec >= table.data() && option.spec < table.data() + table.size());
    WITHCACHE_FUZZ_CHECK(option.index < args.size());
    if (option.value && option.index + 1 < args.size() && *option.value == args[option.index + 1]) {
      any_value.insert(option.index + 1);
    }
    if (option.value && option.index + 1 < args.size() && *option.value == args[option.index + 1] &&
        option.spec->long_name != "url") {
      // A value may also be glued (`-ofile`, `--output-document=file`); when the option's own argument
      // ends with it, which one was taken is ambiguous and nothing is checked.
      if (!args[option.index].ends_with(*option.value)) {
        taken.insert(option.index + 1);
      }
    }
  }
  for (const auto& url : parsed.urls) {
    WITHCACHE_FUZZ_CHECK(!taken.contains(url.index));
  }
  if (parsed.problem != shim::ParseProblem::none) {
    WITHCACHE_FUZZ_CHECK(parsed.problem_index < args.size());
  }
  // curl: everything after a bare `--` (outside an option's value) is a URL.
  if (tool == shim::Tool::curl && parsed.problem == shim::ParseProblem::none) {
    const auto dashdash = std::find(args.begin(), args.end(), std::string("--"));
    if (dashdash != args.end()) {
      const auto at = static_cast<std::size_t>(dashdash - args.begin());
      if (!any_value.contains(at)) {
        for (std::size_t i = at + 1; i < args.size(); ++i) {
          WITHCACHE_FUZZ_CHECK(std::any_of(parsed.urls.begin(), parsed.urls.end(),
                                           [&](const shim::UrlArgument& url) { return url.index == i; }));
        }
      }
    }
  }

  // Deterministic.
  const shim::ParsedArgs again = shim::parse_args(tool, args, posixly_correct);
  WITHCACHE_FUZZ_CHECK(again.urls.size() == parsed.urls.size() && again.options.size() == parsed.options.size() &&
                       again.problem == parsed.problem);

  const shim::Decision decision = shim::decide(tool, parsed, k_cache);
  if (decision.pass_through != shim::PassThrough::none) {
    WITHCACHE_FUZZ_CHECK(decision.urls.empty());
  } else {
    WITHCACHE_FUZZ_CHECK(decision.urls.size() == parsed.urls.size());
    for (std::size_t i = 0; i < decision.urls.size(); ++i) {
      WITHCACHE_FUZZ_CHECK(decision.urls[i].first.index == parsed.urls[i].index);
    }
  }
  const auto probed = decision.probed();

  for (const bool hit : {false, true}) {
    int probe_calls = 0;
    const shim::Plan plan = shim::plan(
        tool, args, test_env,
        [&](const std::vector<std::string>& cache_urls) {
          ++probe_calls;
          for (const auto& cache_url : cache_urls) {
            WITHCACHE_FUZZ_CHECK(cache_url.starts_with("http://cache:3000/b/"));
          }
          return std::vector<bool>(cache_urls.size(), hit);
        },
        "/nonexistent/curlwithcache");
    WITHCACHE_FUZZ_CHECK(plan.error.empty() && plan.program == "/proc/self/exe");
    WITHCACHE_FUZZ_CHECK(plan.argv.size() == args.size() + 1 && plan.argv.front() == plan.program);
    WITHCACHE_FUZZ_CHECK(probe_calls <= 1);
    WITHCACHE_FUZZ_CHECK(probed.empty() ? probe_calls == 0 : plan.cache_urls.size() <= probed.size());
    std::set<std::size_t> rewritten;
    for (std::size_t i = 0; i < args.size(); ++i) {
      if (plan.argv[i + 1] != args[i]) {
        rewritten.insert(i);
        WITHCACHE_FUZZ_CHECK(hit);
        WITHCACHE_FUZZ_CHECK(plan.argv[i + 1].starts_with("http://cache:3000/b/"));
        WITHCACHE_FUZZ_CHECK(std::any_of(probed.begin(), probed.end(),
                                         [&](const shim::UrlArgument& url) { return url.index == i; }));
      }
    }
    WITHCACHE_FUZZ_CHECK(plan.hits <= rewritten.size() + probed.size());
    if (!hit) {
      WITHCACHE_FUZZ_CHECK(plan.hits == 0);
    }
  }
  return 0;
}
