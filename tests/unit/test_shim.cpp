#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>

#include <sys/stat.h>
#include <unistd.h>

#include "support/temp_dir.hpp"
#include "withcache/shim.hpp"
#include "withcache/url.hpp"

namespace fs = std::filesystem;
using namespace withcache;
using shim::Tool;

namespace {

const std::string k_url =
    "https://developer.download.nvidia.com/compute/cuda/12.4.0/local_installers/cuda.run";
const std::string k_url2 = "https://repo.radeon.com/rocm/rocm.deb";
const std::string k_server = "http://cache.lab:3000";

void make_executable(const fs::path& path) {
  std::ofstream(path) << "#!/bin/sh\nexit 0\n";
  fs::permissions(path, fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
}

// A PATH with the shim first (as `curl` and `wget` symlinks) and the real tools after it.
struct Layout {
  test::TempDir dir;
  fs::path self;
  fs::path real_curl;
  fs::path real_wget;
  std::string path;
  Layout() {
    fs::create_directories(dir / "shim");
    fs::create_directories(dir / "real");
    self = dir / "shim" / "withcache-shim";
    make_executable(self);
    fs::create_symlink(self, dir / "shim" / "curl");
    fs::create_hard_link(self, dir / "shim" / "wget");
    real_curl = dir / "real" / "curl";
    real_wget = dir / "real" / "wget";
    make_executable(real_curl);
    make_executable(real_wget);
    path = (dir / "shim").string() + ":" + (dir / "real").string();
  }
};

shim::Getenv env_of(const std::map<std::string, std::string>& vars) {
  return [vars](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

struct ArgvCase {
  std::vector<std::string> args;
  int url_index; // -1: no URL
  std::string prefix;
};

} // namespace

TEST_CASE("tool_for picks the tool from the invoked name", "[shim]") {
  CHECK(shim::tool_for("curlwithcache") == Tool::curl);
  CHECK(shim::tool_for("/usr/local/bin/wgetwithcache") == Tool::wget);
  CHECK(shim::tool_for("curl") == Tool::curl);
  CHECK(shim::tool_for("wget") == Tool::wget);
  CHECK(shim::tool_for("withcache-shim") == Tool::curl);
  CHECK(shim::tool_for("/opt/wget/bin/curl") == Tool::curl); // the file name decides, not the directory
}

TEST_CASE("plan: a table of argv cases as curl and wget, for hit, miss and unreachable", "[shim]") {
  const std::vector<ArgvCase> cases = {
      {{"-fsSL", k_url, "-o", "out"}, 1, ""},
      {{"--url=" + k_url, "-O"}, 0, "--url="},
      {{"--url", k_url}, 1, ""},
      {{"-H", "Referer: https://ref", k_url}, 2, ""},
      {{"--data", "u=https://x", k_url}, 2, ""},
      {{"--", k_url}, 1, ""},
      {{"--version"}, -1, ""},
      {{k_url, k_url2}, 0, ""},
      {{"-o", "out", k_url}, 2, ""},
      {{k_url}, 0, ""},
      {{"-C", "-", "-o", "f", k_url}, 4, ""},
      {{"-L", "--retry", "3", k_url}, 3, ""},
      {{"-O", k_url}, 1, ""},
      {{"-c", k_url}, 1, ""},
      {{"-q", "-O", "file", k_url}, 3, ""},
      {{"--", "-notaurl", k_url}, 2, ""},
      {{"--", "plainword"}, -1, ""},
      {{"-e", "robots=off", k_url}, 2, ""},
      {{"--header=Authorization: Bearer x", k_url}, 1, ""},
      {{"HTTPS://DEVELOPER.download.nvidia.com/cuda.run"}, 0, ""},
      {{"example.com/a.tgz"}, -1, ""},
      {{"--url"}, -1, ""},
      {{"-K", "config.txt"}, -1, ""},
      {{}, -1, ""},
      {{"-s", "-S", "-f", "-L", "-o", "/dev/null", "-w", "%{http_code}", k_url}, 8, ""},
      {{"--compressed", k_url, "-o", "x"}, 1, ""},
      {{"--url", k_url, k_url2}, 1, ""},
      {{"-T", "file", k_url}, 2, ""},
      {{"--", k_url, k_url2}, 1, ""},
      {{"-d", "@body.json", "--url=" + k_url}, 2, "--url="},
      {{"--output", "a b", k_url}, 2, ""},
      {{"-x", "http://proxy:3128", k_url}, 1, ""}, // SPEC §4: the first scheme-looking argument
      {{"--url=", k_url}, -1, ""},                 // an empty --url= is not probed
  };
  Layout layout;
  const auto env = env_of({{"PATH", layout.path}, {"WITHCACHE_SERVER", k_server}});
  for (const Tool tool : {Tool::curl, Tool::wget}) {
    for (const std::string outcome : {"hit", "miss", "unreachable"}) {
      for (const auto& c : cases) {
        std::string joined;
        for (const auto& a : c.args) {
          joined += "[" + a + "] ";
        }
        INFO(shim::name_of(tool) << " " << outcome << ": " << joined);
        std::vector<std::string> probed;
        const auto p = shim::plan(
            tool, c.args, env,
            [&](const std::string& cache_url) {
              probed.push_back(cache_url);
              return outcome == "hit";
            },
            layout.self);
        REQUIRE(p.error.empty());
        CHECK(p.program == (tool == Tool::curl ? layout.real_curl : layout.real_wget).string());
        REQUIRE(p.argv.size() == c.args.size() + 1);
        CHECK(p.argv[0] == p.program);
        if (c.url_index < 0) {
          CHECK(probed.empty());
          CHECK_FALSE(p.probed);
        } else {
          REQUIRE(probed.size() == 1);
          const std::string origin = c.args[static_cast<std::size_t>(c.url_index)].substr(c.prefix.size());
          CHECK(probed[0] == url::blob_url(k_server, origin));
        }
        for (std::size_t i = 0; i < c.args.size(); ++i) {
          if (outcome == "hit" && static_cast<int>(i) == c.url_index) {
            CHECK(p.argv[i + 1] == c.prefix + url::blob_url(k_server, c.args[i].substr(c.prefix.size())));
          } else {
            CHECK(p.argv[i + 1] == c.args[i]); // byte-identical and in order
          }
        }
        CHECK(p.hit == (outcome == "hit" && c.url_index >= 0));
      }
    }
  }
}

TEST_CASE("plan: server variables", "[shim]") {
  Layout layout;
  const auto server_probed = [&](Tool tool, std::map<std::string, std::string> vars) {
    vars["PATH"] = layout.path;
    std::string probed;
    shim::plan(
        tool, {k_url}, env_of(vars),
        [&](const std::string& cache_url) {
          probed = cache_url;
          return false;
        },
        layout.self);
    return probed;
  };
  CHECK(server_probed(Tool::curl, {}).empty()); // unset: no probe
  CHECK(server_probed(Tool::curl, {{"WITHCACHE_SERVER", ""}}).empty());
  CHECK(server_probed(Tool::curl, {{"WITHCACHE_SERVER", "a:1"}}).starts_with("http://a:1/b/"));
  CHECK(server_probed(Tool::curl, {{"WITHCACHE_SERVER", "a:1"}, {"CURLWITHCACHE_SERVER", "c:2"}})
            .starts_with("http://c:2/b/"));
  CHECK(server_probed(Tool::wget, {{"WITHCACHE_SERVER", "a:1"}, {"CURLWITHCACHE_SERVER", "c:2"}})
            .starts_with("http://a:1/b/"));
  CHECK(server_probed(Tool::wget, {{"WITHCACHE_SERVER", "a:1"}, {"WGETWITHCACHE_SERVER", "https://w/"}})
            .starts_with("https://w/b/"));
  CHECK(server_probed(Tool::curl, {{"WITHCACHE_SERVER", "a:1"}, {"CURLWITHCACHE_SERVER", ""}})
            .starts_with("http://a:1/b/")); // empty means unset
  CHECK(server_probed(Tool::curl, {{"CURLWITHCACHE_SERVER", ""}, {"WITHCACHE_SERVER", ""}}).empty());
}

TEST_CASE("find_real_tool skips the shim however it is linked", "[shim]") {
  Layout layout;
  CHECK(shim::find_real_tool(Tool::curl, env_of({{"PATH", layout.path}}), layout.self) ==
        layout.real_curl.string());
  CHECK(shim::find_real_tool(Tool::wget, env_of({{"PATH", layout.path}}), layout.self) ==
        layout.real_wget.string());
  // Without knowing itself, the shim's own symlink would be found first.
  CHECK(shim::find_real_tool(Tool::curl, env_of({{"PATH", layout.path}}), {}) ==
        (layout.dir / "shim" / "curl").string());
  // REAL_CURL wins when it is executable, and is ignored when it is not.
  const fs::path other = layout.dir / "other-curl";
  make_executable(other);
  CHECK(shim::find_real_tool(Tool::curl, env_of({{"PATH", layout.path}, {"REAL_CURL", other.string()}}),
                             layout.self) == other.string());
  CHECK(shim::find_real_tool(Tool::curl, env_of({{"PATH", layout.path}, {"REAL_CURL", "/nonexistent/curl"}}),
                             layout.self) == layout.real_curl.string());
  std::ofstream(layout.dir / "not-executable") << "x";
  CHECK(shim::find_real_tool(
            Tool::curl,
            env_of({{"PATH", layout.path}, {"REAL_CURL", (layout.dir / "not-executable").string()}}),
            layout.self) == layout.real_curl.string());
}

TEST_CASE("no real tool is a clear error and exit 127", "[shim]") {
  Layout layout;
  const auto env = env_of({{"PATH", (layout.dir / "shim").string()}, {"WITHCACHE_SERVER", k_server}});
  bool probed = false;
  const auto curl = shim::plan(
      Tool::curl, {k_url}, env, [&](const std::string&) { return probed = true; }, layout.self);
  CHECK(curl.error == "curlwithcache: no real curl found on PATH (set $REAL_CURL)");
  CHECK(curl.program.empty());
  CHECK_FALSE(probed);
  const auto wget = shim::plan(
      Tool::wget, {k_url}, env, [&](const std::string&) { return probed = true; }, layout.self);
  CHECK(wget.error == "wgetwithcache: no real wget found on PATH (set $REAL_WGET)");
}

TEST_CASE("probe_timeout reads WITHCACHE_PROBE_TIMEOUT", "[shim]") {
  using std::chrono::milliseconds;
  const std::pair<const char*, milliseconds> cases[] = {
      {nullptr, milliseconds(5000)}, {"", milliseconds(5000)},    {"2", milliseconds(2000)},
      {"0.25", milliseconds(250)},   {"abc", milliseconds(5000)}, {"-1", milliseconds(5000)},
      {"0", milliseconds(5000)},     {"3s", milliseconds(5000)},  {"99999", milliseconds(5000)},
  };
  for (const auto& [text, expected] : cases) {
    INFO((text == nullptr ? "(unset)" : text));
    const auto env = text == nullptr ? env_of({}) : env_of({{"WITHCACHE_PROBE_TIMEOUT", text}});
    CHECK(shim::probe_timeout(env) == expected);
  }
}

TEST_CASE("head_is_200 is false for a refused connection, at once", "[shim]") {
  // With an hour's timeout, waiting for it would trip ctest's test timeout.
  CHECK_FALSE(shim::head_is_200("http://127.0.0.1:1/b/x/y", std::chrono::hours(1)));
  CHECK_FALSE(shim::head_is_200("ftp://127.0.0.1/x", std::chrono::seconds(1)));
  CHECK_FALSE(shim::head_is_200("not a url", std::chrono::seconds(1)));
}
