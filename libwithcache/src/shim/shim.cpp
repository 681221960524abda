#include "withcache/shim.hpp"

#include <cerrno>
#include <cstring>

#include <sys/stat.h>
#include <unistd.h>

#include "withcache/client/probe.hpp"
#include "withcache/url.hpp"
#include "withcache/util/strings.hpp"

namespace withcache::shim {
namespace {

bool is_executable_file(const std::string& path, struct stat* info) {
  return ::stat(path.c_str(), info) == 0 && S_ISREG(info->st_mode) && ::access(path.c_str(), X_OK) == 0;
}

bool has_scheme(std::string_view arg) {
  return url::has_authority_scheme(arg);
}

} // namespace

Tool tool_for(std::string_view argv0) {
  const std::size_t slash = argv0.rfind('/');
  const std::string_view name = slash == std::string_view::npos ? argv0 : argv0.substr(slash + 1);
  return name.find("wget") != std::string_view::npos ? Tool::wget : Tool::curl;
}

std::string_view name_of(Tool tool) {
  return tool == Tool::wget ? "wget" : "curl";
}

std::string find_real_tool(Tool tool, const Getenv& getenv, const std::filesystem::path& self) {
  struct stat info {};
  if (const char* explicit_path = getenv(tool == Tool::wget ? "REAL_WGET" : "REAL_CURL");
      explicit_path != nullptr && *explicit_path != '\0' && is_executable_file(explicit_path, &info)) {
    return explicit_path;
  }
  struct stat self_info {};
  const bool know_self = !self.empty() && ::stat(self.c_str(), &self_info) == 0;
  const char* path = getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  const std::string_view name = name_of(tool);
  for (;;) {
    const std::size_t colon = dirs.find(':');
    std::string dir(dirs.substr(0, colon));
    if (dir.empty()) {
      dir = "."; // an empty PATH entry is the current directory
    }
    std::string candidate = dir + "/" + std::string(name);
    if (is_executable_file(candidate, &info) &&
        !(know_self && info.st_dev == self_info.st_dev && info.st_ino == self_info.st_ino)) {
      return candidate;
    }
    if (colon == std::string_view::npos) {
      return {};
    }
    dirs.remove_prefix(colon + 1);
  }
}

std::string server_for(Tool tool, const Getenv& getenv) {
  const char* specific = getenv(tool == Tool::wget ? "WGETWITHCACHE_SERVER" : "CURLWITHCACHE_SERVER");
  if (specific != nullptr && *specific != '\0') {
    return specific;
  }
  const char* general = getenv("WITHCACHE_SERVER");
  return general != nullptr ? general : "";
}

std::optional<UrlArgument> find_url(const std::vector<std::string>& args) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      for (std::size_t j = i + 1; j < args.size(); ++j) {
        if (has_scheme(args[j])) {
          return UrlArgument{j, "", args[j]};
        }
      }
      return std::nullopt;
    }
    if (arg == "--url" && i + 1 < args.size()) {
      return UrlArgument{i + 1, "", args[i + 1]};
    }
    if (arg.starts_with("--url=")) {
      return UrlArgument{i, "--url=", arg.substr(6)};
    }
    if (has_scheme(arg)) {
      return UrlArgument{i, "", arg};
    }
  }
  return std::nullopt;
}

Plan plan(Tool tool, const std::vector<std::string>& args, const Getenv& getenv, const Probe& probe,
          const std::filesystem::path& self) {
  Plan result;
  result.program = find_real_tool(tool, getenv, self);
  if (result.program.empty()) {
    const std::string name(name_of(tool));
    result.error = name + "withcache: no real " + name + " found on PATH (set $REAL_" + util::upper(name) + ")";
    return result;
  }
  result.argv.reserve(args.size() + 1);
  result.argv.push_back(result.program);
  result.argv.insert(result.argv.end(), args.begin(), args.end());

  const std::string server = server_for(tool, getenv);
  if (server.empty()) {
    return result; // unset: no parsing, no network
  }
  const auto found = find_url(args);
  if (!found || found->url.empty()) {
    return result;
  }
  result.cache_url = url::blob_url(server, found->url);
  result.probed = true;
  result.hit = probe(result.cache_url);
  if (result.hit) {
    result.argv[found->index + 1] = found->prefix + result.cache_url;
  }
  return result;
}

bool head_is_200(const std::string& url, std::chrono::milliseconds timeout) {
  return client::head_status(url, client::ProbeOptions{timeout, {}}) == 200;
}

std::chrono::milliseconds probe_timeout(const Getenv& getenv) {
  constexpr std::chrono::milliseconds fallback(5000);
  const char* text = getenv("WITHCACHE_PROBE_TIMEOUT");
  if (text == nullptr || *text == '\0') {
    return fallback;
  }
  char* end = nullptr;
  errno = 0;
  const double seconds = std::strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !(seconds > 0) || seconds > 3600) {
    return fallback;
  }
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
}

} // namespace withcache::shim
