#pragma once

// The shim deployed the way users deploy it: `curl` and `wget` symlinks to
// withcache-shim first on PATH, the real tools after them. Commands run with
// sh in a work directory, with their own XDG_RUNTIME_DIR so the shim's memo of
// unreachable caches never leaks between tests (or into the user's).
// WITHCACHE_SHIM must be defined to the shim binary's path.

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace withcache::test {

struct Deployment {
  TempDir dir;
  std::string path;
  Deployment() {
    std::filesystem::create_directories(dir / "bin");
    std::filesystem::create_symlink(WITHCACHE_SHIM, dir / "bin" / "curl");
    std::filesystem::create_symlink(WITHCACHE_SHIM, dir / "bin" / "wget");
    std::filesystem::create_directories(dir / "run");
    std::filesystem::permissions(dir / "run", std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace);
    std::filesystem::create_directories(dir / "work");
    const char* inherited = std::getenv("PATH");
    path = (dir / "bin").string() + ":" + (inherited != nullptr ? inherited : "/usr/bin:/bin");
  }
  /** The environment every command gets, then `env`. */
  /** The environment every command gets (no inherited shim or proxy settings), `env` overriding it. */
  [[nodiscard]] std::vector<std::string> environment(const std::vector<std::string>& env) const {
    const std::vector<std::string> defaults = {"PATH=" + path,
                                               "XDG_RUNTIME_DIR=" + (dir / "run").string(),
                                               "HOME=" + dir.path().string(),
                                               "WITHCACHE_SHIM_EXECED",
                                               "WITHCACHE_SERVER",
                                               "CURLWITHCACHE_SERVER",
                                               "WGETWITHCACHE_SERVER",
                                               "REAL_CURL",
                                               "REAL_WGET",
                                               "WITHCACHE_PROBE_TIMEOUT",
                                               "http_proxy",
                                               "https_proxy",
                                               "POSIXLY_CORRECT"};
    const auto name_of = [](const std::string& entry) {
      return entry.substr(0, entry.find('='));
    };
    std::vector<std::string> out;
    for (const auto& d : defaults) {
      bool overridden = false;
      for (const auto& e : env) {
        overridden = overridden || name_of(e) == name_of(d);
      }
      if (!overridden) {
        out.push_back(d);
      }
    }
    out.insert(out.end(), env.begin(), env.end());
    return out;
  }
  /** Runs `command` with sh in the deployment's work dir, with the shim first on PATH. */
  [[nodiscard]] CommandResult sh(const std::string& command, const std::vector<std::string>& env = {}) const {
    return run({"/bin/sh", "-c", "cd '" + (dir / "work").string() + "' && " + command}, environment(env));
  }
  /** sh() with an exact elapsed time. */
  [[nodiscard]] CommandResult sh_timed(const std::string& command, const std::vector<std::string>& env = {},
                                       std::chrono::milliseconds timeout = std::chrono::seconds(60)) const {
    return run_timed({"/bin/sh", "-c", "cd '" + (dir / "work").string() + "' && " + command},
                     environment(env), timeout);
  }
  [[nodiscard]] std::string work_file(const std::string& name) const { return slurp(dir / "work" / name); }
};

inline std::string quoted(const std::string& s) {
  std::string out = "'";
  for (const char c : s) {
    out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  }
  return out + "'";
}

} // namespace withcache::test
