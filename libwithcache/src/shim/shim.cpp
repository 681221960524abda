// The shim's process-level work: finding the real tool and marking the chain
// (plan), the memo of unreachable caches, the probe with it, and --check.
#include "withcache/shim.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "withcache/client/probe.hpp"
#include "withcache/url.hpp"
#include "withcache/util/strings.hpp"

namespace withcache::shim {
namespace {

// ----- the real tool and the marker ---------------------------------------------------------------

bool is_executable_file(const std::string& path, struct stat* info) {
  return ::stat(path.c_str(), info) == 0 && S_ISREG(info->st_mode) && ::access(path.c_str(), X_OK) == 0;
}

std::string device_inode(const struct stat& info) {
  return std::to_string(static_cast<unsigned long long>(info.st_dev)) + ":" +
         std::to_string(static_cast<unsigned long long>(info.st_ino));
}

bool listed(std::string_view list, std::string_view item) {
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    if (list.substr(0, comma) == item) {
      return true;
    }
    if (comma == std::string_view::npos) {
      break;
    }
    list.remove_prefix(comma + 1);
  }
  return false;
}

// ----- the memo -----------------------------------------------------------------------------------

// A directory that is ours: not a symlink, owned by us, writable by no one else.
bool is_own_private_dir(const std::filesystem::path& dir) {
  struct stat info {};
  return ::lstat(dir.c_str(), &info) == 0 && S_ISDIR(info.st_mode) && info.st_uid == ::geteuid() &&
         (info.st_mode & 022) == 0;
}

bool ensure_own_private_dir(const std::filesystem::path& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return false;
  }
  return is_own_private_dir(dir);
}

std::uint64_t fnv1a(std::string_view text) {
  std::uint64_t hash = 14695981039346656037ULL;
  for (const char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 1099511628211ULL;
  }
  return hash;
}

using SystemClock = std::chrono::system_clock;

long long to_ms(SystemClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

std::string format_ms(std::chrono::microseconds elapsed) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.1f ms", static_cast<double>(elapsed.count()) / 1000.0);
  return buffer;
}

} // namespace

namespace {

// find_real_tool(), also giving the device:inode of what it found (for the marker) without another stat().
std::string find_tool(Tool tool, const Getenv& getenv, const std::filesystem::path& self,
                      std::string_view skip, std::string* identity) {
  struct stat self_info {};
  const bool know_self = !self.empty() && ::stat(self.c_str(), &self_info) == 0;
  const auto usable = [&](const std::string& candidate) {
    struct stat info {};
    if (!is_executable_file(candidate, &info) ||
        (know_self && info.st_dev == self_info.st_dev && info.st_ino == self_info.st_ino)) {
      return false;
    }
    std::string id = device_inode(info);
    if (listed(skip, id)) {
      return false;
    }
    if (identity != nullptr) {
      *identity = std::move(id);
    }
    return true;
  };
  if (const char* explicit_path = getenv(tool == Tool::wget ? "REAL_WGET" : "REAL_CURL");
      explicit_path != nullptr && *explicit_path != '\0' && usable(explicit_path)) {
    return explicit_path;
  }
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
    if (usable(candidate)) {
      return candidate;
    }
    if (colon == std::string_view::npos) {
      return {};
    }
    dirs.remove_prefix(colon + 1);
  }
}

} // namespace

std::string find_real_tool(Tool tool, const Getenv& getenv, const std::filesystem::path& self,
                           std::string_view skip) {
  return find_tool(tool, getenv, self, skip, nullptr);
}

std::optional<std::string> server_variable_for(Tool tool, const Getenv& getenv) {
  for (const char* name :
       {tool == Tool::wget ? "WGETWITHCACHE_SERVER" : "CURLWITHCACHE_SERVER", "WITHCACHE_SERVER"}) {
    const char* value = getenv(name);
    if (value != nullptr && *value != '\0') {
      return std::string(name);
    }
  }
  return std::nullopt;
}

std::string server_for(Tool tool, const Getenv& getenv) {
  const auto variable = server_variable_for(tool, getenv);
  return variable ? getenv(variable->c_str()) : "";
}

Plan plan(Tool tool, const std::vector<std::string>& args, const Getenv& getenv, const Probe& probe,
          const std::filesystem::path& self) {
  Plan result;
  const char* marker = getenv(k_marker_variable);
  const std::string_view chain = marker != nullptr ? marker : "";
  result.reentered = !chain.empty();
  std::string identity;
  result.program = find_tool(tool, getenv, self, chain, &identity);
  if (result.program.empty()) {
    const std::string name(name_of(tool));
    result.error = name + "withcache: no real " + name + " found on PATH (set $REAL_" + util::upper(name) + ")";
    return result;
  }
  // The chain of tools shims have exec'd, so a re-entered shim never picks one of them again and a
  // wrapper loop ends after at most one pass over the candidates. Bounded, in case the environment
  // is hostile: past 4 KiB nothing is added (what is listed is still skipped).
  result.marker = std::string(chain);
  if (result.marker.size() < 4096) {
    result.marker += (result.marker.empty() ? "" : ",") + identity;
  }
  result.argv.reserve(args.size() + 1);
  result.argv.push_back(result.program);
  result.argv.insert(result.argv.end(), args.begin(), args.end());
  if (result.reentered) {
    return result; // a shim earlier in this chain already probed (at most one round per command)
  }

  const std::string server = server_for(tool, getenv);
  if (server.empty()) {
    return result; // unset: no parsing, no network
  }
  const std::string base = url::cache_base(server);
  result.decision = decide(tool, parse_args(tool, args, getenv("POSIXLY_CORRECT") != nullptr), base);
  if (result.decision.probed().empty()) {
    return result;
  }
  // The tools' own config files can add what the command line lacks (a user, a header).
  std::string because;
  if (const PassThrough reason = config_files_pass_through(tool, args, getenv, &because);
      reason != PassThrough::none) {
    result.decision.pass_through = reason;
    result.decision.because = std::move(because);
    result.decision.urls.clear();
    return result;
  }
  // One probe per distinct URL (curl -O x -O x asks once), all in one round.
  const auto probed = result.decision.probed();
  std::vector<std::size_t> slot(probed.size());
  for (std::size_t k = 0; k < probed.size(); ++k) {
    const std::string cache_url = url::blob_url(base, probed[k].url);
    const auto it = std::find(result.cache_urls.begin(), result.cache_urls.end(), cache_url);
    slot[k] = static_cast<std::size_t>(it - result.cache_urls.begin());
    if (it == result.cache_urls.end()) {
      result.cache_urls.push_back(cache_url);
    }
  }
  const std::vector<bool> hits = probe(result.cache_urls);
  for (std::size_t k = 0; k < probed.size(); ++k) {
    if (slot[k] < hits.size() && hits[slot[k]]) {
      result.argv[probed[k].index + 1] = result.cache_urls[slot[k]];
      ++result.hits;
    }
  }
  return result;
}

bool head_is_200(const std::string& url, std::chrono::milliseconds timeout) {
  return client::head_status(url, client::ProbeOptions{timeout, {}}) == 200;
}

std::chrono::milliseconds probe_timeout(const Getenv& getenv) {
  constexpr std::chrono::milliseconds fallback(3000);
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

// ----- the memo -----------------------------------------------------------------------------------

Memo::Memo(const Getenv& getenv) {
  const char* runtime = getenv("XDG_RUNTIME_DIR");
  if (runtime != nullptr && runtime[0] == '/' && is_own_private_dir(runtime)) {
    m_directory = std::filesystem::path(runtime) / "withcache";
  } else {
    m_directory = "/tmp/withcache-" + std::to_string(::geteuid());
  }
}

Memo::Memo(std::filesystem::path directory) : m_directory(std::move(directory)) {}

std::filesystem::path Memo::file_for(std::string_view cache_base) const {
  char name[40];
  std::snprintf(name, sizeof name, "unreachable-%016llx", static_cast<unsigned long long>(fnv1a(cache_base)));
  return m_directory / name;
}

std::optional<SystemClock::time_point> Memo::unreachable_until(std::string_view cache_base) const {
  if (m_directory.empty() || !is_own_private_dir(m_directory)) {
    return std::nullopt;
  }
  const int fd = ::open(file_for(cache_base).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    return std::nullopt;
  }
  char buffer[4096];
  struct stat info {};
  ssize_t n = -1;
  if (::fstat(fd, &info) == 0 && S_ISREG(info.st_mode) && info.st_uid == ::geteuid() &&
      (info.st_mode & 022) == 0) {
    n = ::read(fd, buffer, sizeof buffer);
  }
  ::close(fd);
  if (n <= 0) {
    return std::nullopt;
  }
  // "<expiry in ms since the epoch> <cache base>\n"
  const std::string_view text(buffer, static_cast<std::size_t>(n));
  const std::size_t space = text.find(' ');
  if (space == std::string_view::npos || text.substr(space + 1) != std::string(cache_base) + "\n") {
    return std::nullopt;
  }
  long long expiry = 0;
  for (const char c : text.substr(0, space)) {
    if (!util::is_digit(c) || expiry > 100'000'000'000'000LL) {
      return std::nullopt;
    }
    expiry = expiry * 10 + (c - '0');
  }
  const auto until = SystemClock::time_point(std::chrono::milliseconds(expiry));
  const auto now = SystemClock::now();
  // Past, or further ahead than it can be (the clock went back): not set.
  if (until <= now || until - now > k_memo_lifetime + std::chrono::seconds(5)) {
    return std::nullopt;
  }
  return until;
}

void Memo::remember_unreachable(std::string_view cache_base) const {
  if (m_directory.empty() || !ensure_own_private_dir(m_directory)) {
    return;
  }
  std::string temp = (m_directory / ".unreachable-XXXXXX").string();
  const int fd = ::mkstemp(temp.data()); // mode 0600
  if (fd < 0) {
    return;
  }
  const std::string text =
      std::to_string(to_ms(SystemClock::now() + k_memo_lifetime)) + " " + std::string(cache_base) + "\n";
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  if (!written || ::rename(temp.c_str(), file_for(cache_base).c_str()) != 0) {
    ::unlink(temp.c_str());
  }
}

std::vector<bool> probe_cache(std::string_view cache_base, const std::vector<std::string>& cache_urls,
                              std::chrono::milliseconds timeout, const Memo& memo) {
  std::vector<bool> hits(cache_urls.size(), false);
  if (cache_urls.empty() || memo.unreachable_until(cache_base)) {
    return hits; // a dead cache costs one timeout per k_memo_lifetime, not one per command
  }
  const auto results = client::head_all(cache_urls, client::ProbeOptions{timeout, {}});
  bool dead = true;
  for (std::size_t i = 0; i < results.size(); ++i) {
    hits[i] = results[i].status == 200;
    const auto f = results[i].failure;
    dead = dead && (f == client::ProbeFailure::unresolved || f == client::ProbeFailure::unreachable ||
                    f == client::ProbeFailure::timed_out);
  }
  if (dead) {
    memo.remember_unreachable(cache_base);
  }
  return hits;
}

// ----- --check ------------------------------------------------------------------------------------

int check(const Getenv& getenv, const std::filesystem::path& self, std::string& report) {
  int status = 0;
  bool any_server = false;
  std::map<std::string, std::string> probed; // cache base → result line
  const Memo memo(getenv);
  const auto timeout = probe_timeout(getenv);
  report.clear();
  for (const Tool tool : {Tool::curl, Tool::wget}) {
    const std::string name(name_of(tool));
    report += name + ":\n";
    const auto variable = server_variable_for(tool, getenv);
    if (!variable) {
      report += "  server  unset (" + util::upper(name) +
                "WITHCACHE_SERVER and WITHCACHE_SERVER are empty): " + name + " runs untouched\n";
    } else {
      any_server = true;
      const std::string base = url::cache_base(getenv(variable->c_str()));
      report += "  server  " + *variable + "=" + getenv(variable->c_str()) + "  (" + base + ")\n";
      auto it = probed.find(base);
      if (it == probed.end()) {
        const std::string health = base + "/healthz";
        const auto result = client::head(health, client::ProbeOptions{timeout, {}});
        std::string line = "  probe   HEAD " + health + ": ";
        if (result.failure == client::ProbeFailure::none) {
          line += std::to_string(result.status) + " in " + format_ms(result.elapsed);
          if (result.status != 200) {
            status = 1;
          }
        } else {
          line += std::string("failed after ") + format_ms(result.elapsed) + ": " +
                  client::describe(result.failure) + " (timeout " + std::to_string(timeout.count()) + " ms)";
          status = 1;
        }
        it = probed.emplace(base, line + "\n").first;
      } else if (it->second.find(": 200 in ") == std::string::npos) {
        status = 1;
      }
      report += it->second;
      const auto until = memo.unreachable_until(base);
      if (until) {
        const auto left =
            std::chrono::duration_cast<std::chrono::seconds>(*until - SystemClock::now()).count();
        report += "  memo    set: remembered as unreachable for " + std::to_string(left) +
                  " s more, so commands skip the probe (" + memo.file_for(base).string() + ")\n";
      } else {
        report += "  memo    not set" +
                  (memo.directory().empty() ? std::string(" (no private state directory)")
                                            : " (" + memo.directory().string() + ")") +
                  "\n";
      }
    }
    const std::string real = find_real_tool(tool, getenv, self);
    if (real.empty()) {
      report += "  exec    no real " + name + " found on PATH (set $REAL_" + util::upper(name) + ")\n";
      status = 1;
    } else {
      report += "  exec    " + real + "\n";
    }
  }
  report += "probe timeout " + std::to_string(timeout.count()) + " ms (WITHCACHE_PROBE_TIMEOUT)\n";
  return any_server ? status : 1;
}

} // namespace withcache::shim
