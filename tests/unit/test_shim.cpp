#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <sys/stat.h>
#include <unistd.h>

#include "support/temp_dir.hpp"
#include "withcache/shim.hpp"
#include "withcache/url.hpp"

namespace fs = std::filesystem;
using namespace withcache;
using shim::ParseProblem;
using shim::PassThrough;
using shim::Tool;
using shim::UrlSkip;

namespace {

const std::string k_url =
    "https://developer.download.nvidia.com/compute/cuda/12.4.0/local_installers/cuda.run";
const std::string k_url2 = "https://repo.radeon.com/rocm/rocm.deb";
const std::string k_server = "http://cache.lab:3000";

void make_executable(const fs::path& path) {
  std::ofstream(path) << "#!/bin/sh\nexit 0\n";
  fs::permissions(path, fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
}

std::string device_inode(const fs::path& path) {
  struct stat info {};
  REQUIRE(::stat(path.c_str(), &info) == 0);
  return std::to_string(info.st_dev) + ":" + std::to_string(info.st_ino);
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

std::string joined(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& a : args) {
    out += "[" + a + "] ";
  }
  return out;
}

// Records every probe call; answers every URL with `hit`.
struct FakeProbe {
  bool hit = false;
  std::vector<std::vector<std::string>> calls;
  shim::Probe probe() {
    return [this](const std::vector<std::string>& cache_urls) {
      calls.push_back(cache_urls);
      return std::vector<bool>(cache_urls.size(), hit);
    };
  }
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

TEST_CASE("the option tables are sorted, unique and know the options the shim judges", "[shim][parse]") {
  for (const Tool tool : {Tool::curl, Tool::wget}) {
    const auto table = shim::options_of(tool);
    INFO(shim::name_of(tool));
    REQUIRE(table.size() > 150);
    for (std::size_t i = 1; i < table.size(); ++i) {
      CHECK(table[i - 1].long_name < table[i].long_name);
    }
  }
  const auto find = [](Tool tool, std::string_view name) -> const shim::OptionSpec* {
    for (const auto& o : shim::options_of(tool)) {
      if (o.long_name == name) {
        return &o;
      }
    }
    return nullptr;
  };
  struct Known {
    Tool tool;
    std::string_view name;
    char short_name;
    shim::Value value;
  };
  const Known known[] = {
      {Tool::curl, "data", 'd', shim::Value::required},
      {Tool::curl, "output", 'o', shim::Value::required},
      {Tool::curl, "url", '\0', shim::Value::required},
      {Tool::curl, "head", 'I', shim::Value::none},
      {Tool::curl, "user", 'u', shim::Value::required},
      {Tool::curl, "config", 'K', shim::Value::required},
      {Tool::curl, "proxy", 'x', shim::Value::required},
      {Tool::curl, "referer", 'e', shim::Value::required},
      {Tool::curl, "location", 'L', shim::Value::none},
      {Tool::curl, "url-query", '\0', shim::Value::required},
      {Tool::wget, "output-document", 'O', shim::Value::required},
      {Tool::wget, "post-data", '\0', shim::Value::required},
      {Tool::wget, "execute", 'e', shim::Value::required},
      {Tool::wget, "input-file", 'i', shim::Value::required},
      {Tool::wget, "continue", 'c', shim::Value::optional},
      {Tool::wget, "no-continue", '\0', shim::Value::none},
      {Tool::wget, "max-redirect", '\0',
       shim::Value::required}, // --help omits its value; the manual does not
      {Tool::wget, "no", 'n', shim::Value::required},
      {Tool::wget, "header", '\0', shim::Value::required},
  };
  for (const auto& k : known) {
    INFO(shim::name_of(k.tool) << " --" << k.name);
    const auto* spec = find(k.tool, k.name);
    REQUIRE(spec != nullptr);
    CHECK(spec->short_name == k.short_name);
    CHECK(spec->value == k.value);
  }
  CHECK(find(Tool::curl, "silent")->negatable);
  CHECK_FALSE(find(Tool::curl, "output")->negatable);
}

TEST_CASE("parse_args reads clusters, values, -- and --url as the tools do", "[shim][parse]") {
  struct Case {
    Tool tool;
    std::vector<std::string> args;
    std::vector<std::size_t> url_indices;
    ParseProblem problem;
  };
  const std::vector<Case> cases = {
      {Tool::curl, {"-sSLo", "file", k_url}, {2}, ParseProblem::none},
      {Tool::curl, {"-sSLofile", k_url}, {1}, ParseProblem::none},
      {Tool::curl, {"-o", k_url, k_url2}, {2}, ParseProblem::none}, // -o's value is never a URL
      {Tool::curl, {"--url", k_url, "--url", k_url2}, {1, 3}, ParseProblem::none},
      {Tool::curl, {"--url"}, {}, ParseProblem::missing_value},
      {Tool::curl, {"--url=" + k_url}, {}, ParseProblem::unknown_option},
      {Tool::curl, {"--", "-o", k_url}, {1, 2}, ParseProblem::none},
      {Tool::curl, {k_url, "--", "--"}, {0, 2}, ParseProblem::none},
      {Tool::curl, {"-", k_url}, {}, ParseProblem::unknown_option},
      {Tool::curl, {"-d"}, {}, ParseProblem::missing_value},
      {Tool::curl, {"-s\xC3\xBC", k_url}, {}, ParseProblem::unknown_option},
      {Tool::curl, {"--no-url", k_url}, {}, ParseProblem::not_negatable},
      {Tool::curl, {"--no-", k_url}, {}, ParseProblem::unknown_option},
      {Tool::curl, {"--", ""}, {1}, ParseProblem::none},
      {Tool::curl, {"---", k_url}, {}, ParseProblem::unknown_option},
      {Tool::curl, {"--Location", k_url}, {1}, ParseProblem::none},
      {Tool::curl, {"-o", "--", k_url}, {2}, ParseProblem::none}, // "--" as -o's value does not end options
      {Tool::wget, {"-O", "-", k_url}, {2}, ParseProblem::none},
      {Tool::wget, {"-qO-", k_url}, {1}, ParseProblem::none},
      {Tool::wget, {"--output-document=x", k_url}, {1}, ParseProblem::none},
      {Tool::wget, {"--output-document", "x", k_url}, {2}, ParseProblem::none},
      {Tool::wget, {k_url, "-O", "x", k_url2}, {0, 3}, ParseProblem::none}, // getopt permutes
      {Tool::wget, {"-", k_url}, {0, 1}, ParseProblem::none},
      {Tool::wget, {"--", "-O", k_url}, {1, 2}, ParseProblem::none},
      {Tool::wget, {"-nv", k_url}, {1}, ParseProblem::none},
      {Tool::wget, {"--continue=off", k_url}, {1}, ParseProblem::none},
      {Tool::wget,
       {"--continue", k_url},
       {1},
       ParseProblem::none}, // an optional value is never the next argument
      {Tool::wget, {"--no-continue=1", k_url}, {}, ParseProblem::unexpected_value},
      {Tool::wget, {"--Continue", k_url}, {}, ParseProblem::unknown_option}, // getopt is case-sensitive
      {Tool::wget, {"--con", k_url}, {}, ParseProblem::ambiguous_option},
      {Tool::wget, {"--header"}, {}, ParseProblem::missing_value},
  };
  for (const auto& c : cases) {
    INFO(shim::name_of(c.tool) << " " << joined(c.args));
    const auto parsed = shim::parse_args(c.tool, c.args);
    CHECK(parsed.problem == c.problem);
    if (c.problem == ParseProblem::none) {
      std::vector<std::size_t> indices;
      for (const auto& u : parsed.urls) {
        CHECK(u.url == c.args[u.index]);
        indices.push_back(u.index);
      }
      CHECK(indices == c.url_indices);
    }
  }
  // POSIXLY_CORRECT: getopt stops at the first non-option, so wget reads -O as a URL.
  const std::vector<std::string> args = {k_url, "-O", "x"};
  CHECK(shim::parse_args(Tool::wget, args, true).urls.size() == 3);
  CHECK(shim::parse_args(Tool::wget, args, false).urls.size() == 1);
}

TEST_CASE("parse_args survives hostile argv", "[shim][parse]") {
  std::vector<std::vector<std::string>> hostile = {
      {std::string(1 << 20, '-')},   {"-" + std::string(100000, 's')},
      {std::string("-\0o", 3), "x"}, {"--" + std::string(100000, 'a')},
      {"--=", "-=", "==", "-o="},    {"\xFF\xFE", "--\xC3\xBC", "-\x80", "http://\xE2\x80\xAE/x"},
  };
  std::vector<std::string> many;
  for (int i = 0; i < 20000; ++i) {
    many.push_back(i % 3 == 0 ? "-o" : i % 3 == 1 ? "--" : k_url);
  }
  hostile.push_back(many);
  for (const Tool tool : {Tool::curl, Tool::wget}) {
    for (const auto& args : hostile) {
      const auto parsed = shim::parse_args(tool, args);
      for (const auto& u : parsed.urls) {
        REQUIRE(u.index < args.size());
        CHECK(u.url == args[u.index]);
      }
      const auto decision = shim::decide(tool, parsed, k_server);
      CHECK(decision.urls.size() <= parsed.urls.size());
    }
  }
}

TEST_CASE("decide skips single URLs for what they are", "[shim]") {
  struct Case {
    std::string url;
    UrlSkip skip;
  };
  const Case cases[] = {
      {k_url, UrlSkip::none},
      {"ftp://h/x", UrlSkip::not_http},
      {"file:///etc/passwd", UrlSkip::not_http},
      {"example.com/x.tgz", UrlSkip::not_http},
      {"http://cache.lab:3000/b/abc/x", UrlSkip::cache_itself},
      {"https://cache.lab:3000/x", UrlSkip::cache_itself},
      {"http://Cache.Lab:3000/blob?url=x", UrlSkip::cache_itself},
      {"http://cache.lab:3001/x", UrlSkip::none},
      {"http://h/a b", UrlSkip::unparsable},
      {"http://h:x/", UrlSkip::unparsable},
      {"http://h/a[1-2]", UrlSkip::glob},
      {"http://h/{a,b}", UrlSkip::glob},
  };
  for (const auto& c : cases) {
    INFO(c.url);
    const std::vector<std::string> args = {"-O", c.url};
    const auto decision = shim::decide(Tool::curl, shim::parse_args(Tool::curl, args), k_server);
    REQUIRE(decision.urls.size() == 1);
    CHECK(decision.urls[0].second == c.skip);
  }
  // wget does not glob.
  const std::vector<std::string> args = {"http://h/a[1-2]"};
  CHECK(shim::decide(Tool::wget, shim::parse_args(Tool::wget, args), k_server).urls[0].second ==
        UrlSkip::none);
}

TEST_CASE("plan: a table of argv cases as curl and wget, for hit, miss and unreachable", "[shim]") {
  struct ArgvCase {
    Tool tool;
    std::vector<std::string> args;
    std::vector<std::size_t> probed; // indices into args
  };
  const std::vector<ArgvCase> cases = {
      {Tool::curl, {"-fsSL", k_url, "-o", "out"}, {1}},
      {Tool::curl, {"--url", k_url}, {1}},
      {Tool::curl, {"-H", "Accept: */*", k_url}, {2}},
      {Tool::curl, {"--data", "u=https://x", k_url}, {}}, // a POST: never probed
      {Tool::curl, {"--", k_url}, {1}},
      {Tool::curl, {"--version"}, {}},
      {Tool::curl, {k_url, k_url2}, {0, 1}},
      {Tool::curl, {"-O", k_url, "-O", k_url2}, {1, 3}},
      {Tool::curl, {"-C", "-", "-o", "f", k_url}, {4}},
      {Tool::curl, {"-L", "--retry", "3", k_url}, {3}},
      {Tool::curl, {"-x", "http://proxy:3128", k_url}, {2}},
      {Tool::curl, {"-e", k_server + "/b/x/y", k_url}, {2}},
      {Tool::curl, {"-K", "config.txt", k_url}, {}},
      {Tool::curl, {}, {}},
      {Tool::curl, {"-s", "-S", "-f", "-L", "-o", "/dev/null", "-w", "%{http_code}", k_url}, {8}},
      {Tool::curl, {"-T", "file", k_url}, {}},
      {Tool::curl, {"--output", "a b", k_url}, {2}},
      {Tool::curl, {"--url=", k_url}, {}},
      {Tool::curl, {"-u", "a:b", k_url}, {}},
      {Tool::curl, {"ftp://h/x", k_url}, {1}},
      {Tool::wget, {"-q", "-O", "file", k_url}, {3}},
      {Tool::wget, {"-c", k_url}, {1}},
      {Tool::wget, {"-e", "robots=off", k_url}, {2}},
      {Tool::wget, {"--header=Authorization: Bearer x", k_url}, {}},
      {Tool::wget, {"--referer", k_url2, k_url}, {2}},
      {Tool::wget, {"--post-data", "x", k_url}, {}},
      {Tool::wget, {k_url, "-O", "x", k_url2}, {0, 3}},
      {Tool::wget, {"HTTPS://DEVELOPER.download.nvidia.com/cuda.run"}, {0}},
  };
  Layout layout;
  // HOME is the layout's, so no ~/.curlrc or ~/.wgetrc of whoever runs the tests counts.
  const auto env =
      env_of({{"PATH", layout.path}, {"WITHCACHE_SERVER", k_server}, {"HOME", layout.dir.path().string()}});
  for (const std::string outcome : {"hit", "miss"}) {
    for (const auto& c : cases) {
      INFO(shim::name_of(c.tool) << " " << outcome << ": " << joined(c.args));
      FakeProbe fake;
      fake.hit = outcome == "hit";
      const auto p = shim::plan(c.tool, c.args, env, fake.probe(), layout.self);
      REQUIRE(p.error.empty());
      CHECK(p.program == (c.tool == Tool::curl ? layout.real_curl : layout.real_wget).string());
      REQUIRE(p.argv.size() == c.args.size() + 1);
      CHECK(p.argv[0] == p.program);
      if (c.probed.empty()) {
        CHECK(fake.calls.empty());
      } else {
        REQUIRE(fake.calls.size() == 1); // one round, all URLs together
        REQUIRE(fake.calls[0].size() == c.probed.size());
        for (std::size_t k = 0; k < c.probed.size(); ++k) {
          CHECK(fake.calls[0][k] == url::blob_url(k_server, c.args[c.probed[k]]));
        }
      }
      for (std::size_t i = 0; i < c.args.size(); ++i) {
        const bool rewritten =
            outcome == "hit" && std::find(c.probed.begin(), c.probed.end(), i) != c.probed.end();
        CHECK(p.argv[i + 1] == (rewritten ? url::blob_url(k_server, c.args[i]) : c.args[i]));
      }
      CHECK(p.hits == (outcome == "hit" ? c.probed.size() : 0));
    }
  }
}

TEST_CASE("plan: only the URLs that hit are rewritten", "[shim]") {
  Layout layout;
  // HOME is the layout's, so no ~/.curlrc or ~/.wgetrc of whoever runs the tests counts.
  const auto env =
      env_of({{"PATH", layout.path}, {"WITHCACHE_SERVER", k_server}, {"HOME", layout.dir.path().string()}});
  const std::vector<std::string> args = {"-O", k_url, "-O", k_url2, "-O", "https://third.example/c"};
  const auto p = shim::plan(
      Tool::curl, args, env,
      [](const std::vector<std::string>& urls) {
        REQUIRE(urls.size() == 3);
        return std::vector<bool>{false, true, false};
      },
      layout.self);
  CHECK(p.argv == std::vector<std::string>{layout.real_curl.string(), "-O", k_url, "-O",
                                           url::blob_url(k_server, k_url2), "-O", "https://third.example/c"});
  CHECK(p.hits == 1);
}

TEST_CASE("plan: the same URL twice is probed once and rewritten twice", "[shim]") {
  Layout layout;
  const auto env =
      env_of({{"PATH", layout.path}, {"WITHCACHE_SERVER", k_server}, {"HOME", layout.dir.path().string()}});
  FakeProbe fake;
  fake.hit = true;
  const auto p =
      shim::plan(Tool::curl, {"-O", k_url, "-o", "copy", k_url, k_url2}, env, fake.probe(), layout.self);
  REQUIRE(fake.calls.size() == 1);
  CHECK(fake.calls[0] ==
        std::vector<std::string>{url::blob_url(k_server, k_url), url::blob_url(k_server, k_url2)});
  CHECK(p.argv == std::vector<std::string>{layout.real_curl.string(), "-O", url::blob_url(k_server, k_url),
                                           "-o", "copy", url::blob_url(k_server, k_url),
                                           url::blob_url(k_server, k_url2)});
  CHECK(p.hits == 3);
}

TEST_CASE("plan: server variables", "[shim]") {
  Layout layout;
  const auto server_probed = [&](Tool tool, std::map<std::string, std::string> vars) {
    vars["PATH"] = layout.path;
    vars["HOME"] = layout.dir.path().string();
    FakeProbe fake;
    shim::plan(tool, {k_url}, env_of(vars), fake.probe(), layout.self);
    return fake.calls.empty() ? std::string() : fake.calls[0][0];
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
  CHECK(shim::server_variable_for(Tool::curl, env_of({{"WITHCACHE_SERVER", "a:1"}})) == "WITHCACHE_SERVER");
  CHECK_FALSE(shim::server_variable_for(Tool::wget, env_of({{"CURLWITHCACHE_SERVER", "a:1"}})));
}

TEST_CASE("plan: with no server nothing is parsed, even argv curl would refuse", "[shim]") {
  Layout layout;
  FakeProbe fake;
  const std::vector<std::string> args = {"--no-such-option", k_url};
  const auto p = shim::plan(Tool::curl, args, env_of({{"PATH", layout.path}}), fake.probe(), layout.self);
  CHECK(fake.calls.empty());
  CHECK(p.decision.urls.empty());
  CHECK(p.decision.pass_through == PassThrough::none);
  CHECK(p.argv == std::vector<std::string>{layout.real_curl.string(), "--no-such-option", k_url});
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
  // REAL_CURL naming the shim (directly, by symlink, by hard link) is skipped like PATH entries are.
  for (const fs::path& itself : {layout.self, layout.dir / "shim" / "curl", layout.dir / "shim" / "wget"}) {
    INFO(itself);
    CHECK(shim::find_real_tool(Tool::curl, env_of({{"PATH", layout.path}, {"REAL_CURL", itself.string()}}),
                               layout.self) == layout.real_curl.string());
  }
  // Tools a shim earlier in the chain exec'd are skipped too.
  CHECK(shim::find_real_tool(Tool::curl, env_of({{"PATH", layout.path}}), layout.self,
                             "1:2," + device_inode(layout.real_curl))
            .empty());
  CHECK(shim::find_real_tool(Tool::curl, env_of({{"PATH", layout.path}, {"REAL_CURL", other.string()}}),
                             layout.self, device_inode(other)) == layout.real_curl.string());
}

TEST_CASE("the marker makes a re-entered shim exec the next real tool without parsing or probing", "[shim]") {
  Layout layout;
  // A wrapper named curl ahead of the real one: shim → wrapper → shim (re-entered) → real curl.
  fs::create_directories(layout.dir / "wrap");
  const fs::path wrapper = layout.dir / "wrap" / "curl";
  make_executable(wrapper);
  const std::string path = (layout.dir / "shim").string() + ":" + (layout.dir / "wrap").string() + ":" +
                           (layout.dir / "real").string();
  FakeProbe fake;
  const auto first = shim::plan(
      Tool::curl, {k_url},
      env_of({{"PATH", path}, {"WITHCACHE_SERVER", k_server}, {"HOME", layout.dir.path().string()}}),
      fake.probe(), layout.self);
  CHECK(first.program == wrapper.string());
  CHECK_FALSE(first.reentered);
  CHECK(first.marker == device_inode(wrapper));
  CHECK(fake.calls.size() == 1);

  const auto second = shim::plan(
      Tool::curl, {k_url},
      env_of({{"PATH", path}, {"WITHCACHE_SERVER", k_server}, {shim::k_marker_variable, first.marker}}),
      fake.probe(), layout.self);
  CHECK(second.reentered);
  CHECK(second.program == layout.real_curl.string());
  CHECK(second.argv == std::vector<std::string>{layout.real_curl.string(), k_url});
  CHECK(second.marker == first.marker + "," + device_inode(layout.real_curl));
  CHECK(fake.calls.size() == 1); // never more than one round of probes per command

  // Every candidate already ran: the 127 error instead of a loop.
  const auto third =
      shim::plan(Tool::curl, {k_url}, env_of({{"PATH", path}, {shim::k_marker_variable, second.marker}}),
                 fake.probe(), layout.self);
  CHECK(third.error == "curlwithcache: no real curl found on PATH (set $REAL_CURL)");

  // A hostile marker is bounded and does not break the lookup.
  const std::string huge(100000, ',');
  const auto fourth =
      shim::plan(Tool::curl, {k_url}, env_of({{"PATH", path}, {shim::k_marker_variable, huge}}), fake.probe(),
                 layout.self);
  CHECK(fourth.program == wrapper.string());
  CHECK(fourth.marker.size() == huge.size());
}

TEST_CASE("no real tool is a clear error and exit 127", "[shim]") {
  Layout layout;
  const auto env = env_of({{"PATH", (layout.dir / "shim").string()}, {"WITHCACHE_SERVER", k_server}});
  FakeProbe fake;
  const auto curl = shim::plan(Tool::curl, {k_url}, env, fake.probe(), layout.self);
  CHECK(curl.error == "curlwithcache: no real curl found on PATH (set $REAL_CURL)");
  CHECK(curl.program.empty());
  CHECK(fake.calls.empty());
  const auto wget = shim::plan(Tool::wget, {k_url}, env, fake.probe(), layout.self);
  CHECK(wget.error == "wgetwithcache: no real wget found on PATH (set $REAL_WGET)");
}

TEST_CASE("probe_timeout reads WITHCACHE_PROBE_TIMEOUT", "[shim]") {
  using std::chrono::milliseconds;
  const std::pair<const char*, milliseconds> cases[] = {
      {nullptr, milliseconds(3000)}, {"", milliseconds(3000)},    {"2", milliseconds(2000)},
      {"0.25", milliseconds(250)},   {"abc", milliseconds(3000)}, {"-1", milliseconds(3000)},
      {"0", milliseconds(3000)},     {"3s", milliseconds(3000)},  {"99999", milliseconds(3000)},
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

TEST_CASE("the memo: where it lives, what it trusts, how long it lasts", "[shim][memo]") {
  test::TempDir dir;
  const std::string base = "http://cache.lab:3000";

  SECTION("XDG_RUNTIME_DIR when it is private and ours, else /tmp/withcache-$UID") {
    fs::create_directories(dir / "run");
    fs::permissions(dir / "run", fs::perms::owner_all, fs::perm_options::replace);
    CHECK(shim::Memo(env_of({{"XDG_RUNTIME_DIR", (dir / "run").string()}})).directory() ==
          dir / "run" / "withcache");
    const fs::path fallback = "/tmp/withcache-" + std::to_string(::geteuid());
    CHECK(shim::Memo(env_of({})).directory() == fallback);
    CHECK(shim::Memo(env_of({{"XDG_RUNTIME_DIR", "relative/dir"}})).directory() == fallback);
    fs::permissions(dir / "run", fs::perms::owner_all | fs::perms::others_all, fs::perm_options::replace);
    CHECK(shim::Memo(env_of({{"XDG_RUNTIME_DIR", (dir / "run").string()}})).directory() == fallback);
  }

  SECTION("remembered for 30 s, per cache, written atomically with private modes") {
    const shim::Memo memo(dir / "state");
    CHECK_FALSE(memo.unreachable_until(base));
    memo.remember_unreachable(base);
    const auto until = memo.unreachable_until(base);
    REQUIRE(until);
    const auto left = *until - std::chrono::system_clock::now();
    CHECK(left > std::chrono::seconds(25));
    CHECK(left <= shim::k_memo_lifetime);
    CHECK_FALSE(memo.unreachable_until("http://other:3000"));
    CHECK((fs::status(dir / "state").permissions() & fs::perms::mask) == fs::perms::owner_all);
    CHECK((fs::status(memo.file_for(base)).permissions() & fs::perms::mask) ==
          (fs::perms::owner_read | fs::perms::owner_write));
    std::size_t files = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir / "state")) {
      ++files; // no temporary file left behind
    }
    CHECK(files == 1);
  }

  SECTION("an expired, future, foreign or writable-by-others memo is not set") {
    const shim::Memo memo(dir / "state");
    memo.remember_unreachable(base);
    const auto write = [&](const std::string& text) {
      std::ofstream(memo.file_for(base), std::ios::trunc) << text;
    };
    const auto ms = [](std::chrono::system_clock::time_point t) {
      return std::to_string(
          std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count());
    };
    const auto now = std::chrono::system_clock::now();
    write(ms(now - std::chrono::seconds(1)) + " " + base + "\n");
    CHECK_FALSE(memo.unreachable_until(base));
    write(ms(now + std::chrono::hours(1)) + " " + base + "\n"); // the clock went back
    CHECK_FALSE(memo.unreachable_until(base));
    write(ms(now + std::chrono::seconds(10)) + " http://another:1\n");
    CHECK_FALSE(memo.unreachable_until(base));
    write("garbage");
    CHECK_FALSE(memo.unreachable_until(base));
    write(ms(now + std::chrono::seconds(10)) + " " + base + "\n");
    CHECK(memo.unreachable_until(base));
    fs::permissions(memo.file_for(base), fs::perms::others_write, fs::perm_options::add);
    CHECK_FALSE(memo.unreachable_until(base));
    fs::permissions(memo.file_for(base), fs::perms::others_write, fs::perm_options::remove);
    fs::permissions(dir / "state", fs::perms::group_write, fs::perm_options::add);
    CHECK_FALSE(memo.unreachable_until(base)); // the directory must be private too
    memo.remember_unreachable(base);           // and is not written into
    fs::permissions(dir / "state", fs::perms::group_write, fs::perm_options::remove);
  }

  SECTION("a symlink is never followed") {
    fs::create_directories(dir / "elsewhere");
    fs::create_directory_symlink(dir / "elsewhere", dir / "link");
    const shim::Memo memo(dir / "link");
    memo.remember_unreachable(base);
    CHECK(fs::is_empty(dir / "elsewhere"));
    CHECK_FALSE(memo.unreachable_until(base));

    const shim::Memo real(dir / "state");
    real.remember_unreachable(base);
    const fs::path file = real.file_for(base);
    fs::rename(file, dir / "target");
    fs::create_symlink(dir / "target", file);
    CHECK_FALSE(real.unreachable_until(base));
  }

  SECTION("probe_cache: a refused cache is remembered and then not asked again") {
    const shim::Memo memo(dir / "state");
    const std::string dead = "http://127.0.0.1:1";
    const auto first = shim::probe_cache(dead, {dead + "/b/x/y"}, std::chrono::seconds(5), memo);
    CHECK(first == std::vector<bool>{false});
    CHECK(memo.unreachable_until(dead));
    CHECK(shim::probe_cache(dead, {dead + "/b/x/y", dead + "/b/z/w"}, std::chrono::seconds(5), memo) ==
          std::vector<bool>{false, false});
  }
}

TEST_CASE("what ~/.curlrc and wgetrc add is judged like the command line", "[shim][config]") {
  test::TempDir home;
  const auto write = [&](const std::string& name, const std::string& text) {
    fs::create_directories((home / name).parent_path());
    std::ofstream(home / name, std::ios::trunc) << text;
  };
  const auto env = env_of({{"HOME", home.path().string()}, {"WGETRC", (home / "wgetrc").string()}});
  const auto curl = [&](const std::vector<std::string>& args) {
    std::string because;
    const auto reason = shim::config_files_pass_through(Tool::curl, args, env, &because);
    return std::make_pair(reason, because);
  };
  const auto wget = [&](const std::vector<std::string>& args) {
    return shim::config_files_pass_through(Tool::wget, args, env);
  };

  CHECK(curl({k_url}).first == PassThrough::none); // no .curlrc
  struct Case {
    std::string curlrc;
    PassThrough expected;
  };
  const Case cases[] = {
      {"# a comment\nsilent\n--show-error\n-L\nconnect-timeout = 10\nretry: 3\n", PassThrough::none},
      {"user-agent = \"my agent/1.0\"\nheader = \"Accept: */*\"\n", PassThrough::none},
      {"url = \"https://example.com/x\"\noutput = x\n", PassThrough::none},
      {"user = \"alice:s3cret\"\n", PassThrough::credentials},
      {"--user alice:s3cret\n", PassThrough::credentials},
      {"-u alice:s3cret\n", PassThrough::credentials},
      {"  header = \"Authorization: Bearer x\"\n", PassThrough::credentials},
      {"header: \"X-Api-Key: x\"\n", PassThrough::credentials},
      {"oauth2-bearer x\n", PassThrough::credentials},
      {"netrc\n", PassThrough::credentials},
      {"data = \"x=1\"\n", PassThrough::not_a_get},
      {"request POST\n", PassThrough::not_a_get},
      {"request = \"GET\"\n", PassThrough::none},
      {"frobnicate\n", PassThrough::unparsed},
      {"\r\n\n# nothing\n", PassThrough::none},
  };
  for (const auto& c : cases) {
    INFO(c.curlrc);
    write(".curlrc", c.curlrc);
    CHECK(curl({k_url}).first == c.expected);
  }
  write(".curlrc", "user = \"alice:s3cret\"\n");
  CHECK(curl({k_url}).second.ends_with(".curlrc: --user"));
  CHECK(curl({"-q", k_url}).first == PassThrough::none); // -q first: curl skips .curlrc
  CHECK(curl({"-qsS", k_url}).first == PassThrough::none);
  CHECK(curl({"--disable", k_url}).first == PassThrough::none);
  CHECK(curl({k_url, "-q"}).first == PassThrough::credentials); // only as the first argument
  // CURL_HOME comes first; XDG_CONFIG_HOME's ~/.config/curlrc only without XDG_CONFIG_HOME.
  write("curlhome/.curlrc", "silent\n");
  CHECK(shim::config_files_pass_through(
            Tool::curl, {k_url},
            env_of({{"HOME", home.path().string()}, {"CURL_HOME", (home / "curlhome").string()}})) ==
        PassThrough::none);
  fs::remove(home / ".curlrc");
  write(".config/curlrc", "user = a:b\n");
  CHECK(curl({k_url}).first == PassThrough::credentials);
  fs::create_directories(home / ".curlrc");
  CHECK(curl({k_url}).first == PassThrough::unparsed); // there, but a directory

  CHECK(wget({k_url}) == PassThrough::none); // no $WGETRC file (and /etc/wgetrc as Debian ships it)
  write("wgetrc", "# wgetrc\ntries = 3\ncheck_certificate = off\nrobots = off\nuse_proxy = on\n");
  CHECK(wget({k_url}) == PassThrough::none);
  write("wgetrc", "header = Authorization: Bearer s3cret\n");
  CHECK(wget({k_url}) == PassThrough::credentials);
  CHECK(wget({"--no-config", k_url}) == PassThrough::none);
  write("wgetrc", "http_password = s3cret\n");
  CHECK(wget({k_url}) == PassThrough::credentials);
  write("wgetrc", "method = POST\n");
  CHECK(wget({k_url}) == PassThrough::not_a_get);
}

TEST_CASE("plan: a credential in .curlrc means no probe", "[shim][config]") {
  Layout layout;
  std::ofstream(layout.dir / ".curlrc") << "user = \"alice:s3cret\"\n";
  FakeProbe fake;
  const auto p = shim::plan(
      Tool::curl, {k_url},
      env_of({{"PATH", layout.path}, {"WITHCACHE_SERVER", k_server}, {"HOME", layout.dir.path().string()}}),
      fake.probe(), layout.self);
  CHECK(fake.calls.empty());
  CHECK(p.decision.pass_through == PassThrough::credentials);
  CHECK(p.argv == std::vector<std::string>{layout.real_curl.string(), k_url});
}

// ---------------------------------------------------------------------------------------------
// The decision for real command lines: from curl's and wget's manuals and from well-known install
// scripts (rustup, nvm, get-docker, CUDA, Debian and Ubuntu docs, Homebrew, kubectl, ...). For each:
// which URLs are probed, or why the whole command passes through untouched.
// ---------------------------------------------------------------------------------------------

namespace {

// Splits a command the way sh would for these simple cases: blanks separate words, '...' is
// literal, "..." keeps its content (with \" and \\ escapes), a backslash outside quotes escapes
// the next character.
std::vector<std::string> words(const std::string& command) {
  std::vector<std::string> out;
  std::string word;
  bool in_word = false;
  for (std::size_t i = 0; i < command.size(); ++i) {
    const char c = command[i];
    if (c == ' ') {
      if (in_word) {
        out.push_back(word);
        word.clear();
        in_word = false;
      }
      continue;
    }
    in_word = true;
    if (c == '\'') {
      const std::size_t end = command.find('\'', i + 1);
      word += command.substr(i + 1, end - i - 1);
      i = end;
    } else if (c == '"') {
      for (++i; i < command.size() && command[i] != '"'; ++i) {
        if (command[i] == '\\' && i + 1 < command.size() &&
            (command[i + 1] == '"' || command[i + 1] == '\\')) {
          ++i;
        }
        word += command[i];
      }
    } else if (c == '\\' && i + 1 < command.size()) {
      word += command[++i];
    } else {
      word += c;
    }
  }
  if (in_word) {
    out.push_back(word);
  }
  return out;
}

struct Expect {
  PassThrough pass = PassThrough::none;
  std::vector<std::string> probed;
};

Expect probes(std::vector<std::string> urls) {
  return Expect{PassThrough::none, std::move(urls)};
}
Expect nothing_to_probe() {
  return Expect{PassThrough::none, {}};
}
Expect pass(PassThrough reason) {
  return Expect{reason, {}};
}

struct CommandCase {
  std::string command;
  Expect expect;
};

const std::string k_cache = "http://cache.lab:3000";

constexpr auto not_get = PassThrough::not_a_get;
constexpr auto creds = PassThrough::credentials;
constexpr auto list = PassThrough::url_list;
constexpr auto naming = PassThrough::naming;
constexpr auto unparsed = PassThrough::unparsed;
constexpr auto shows = PassThrough::shows_url;
constexpr auto wgetrc = PassThrough::wgetrc_command;

const std::string ex = "https://example.com";

// clang-format off
const std::vector<CommandCase> k_command_cases = {
    // --- curl's manual (curl.1 of curl 7.88, the "Example:" of each option) ---
    {"curl --abstract-unix-socket socketpath https://example.com", pass(not_get)},
    {"curl --alt-svc svc.txt https://example.com", probes({ex})},
    {"curl --anyauth --user me:pwd https://example.com", pass(creds)},
    {"curl --upload-file local --append ftp://example.com/", pass(not_get)},
    {"curl --aws-sigv4 \"aws:amz:east-2:es\" --user \"key:secret\" https://example.com", pass(creds)},
    {"curl -u name:password --basic https://example.com", pass(creds)},
    {"curl --cacert CA-file.txt https://example.com", probes({ex})},
    {"curl --capath /local/directory https://example.com", probes({ex})},
    {"curl --cert-status https://example.com", probes({ex})},
    {"curl --cert-type PEM --cert file https://example.com", pass(creds)},
    {"curl --cert certfile --key keyfile https://example.com", pass(creds)},
    {"curl --ciphers ECDHE-ECDSA-AES256-CCM8 https://example.com", probes({ex})},
    {"curl --compressed-ssh sftp://example.com/", nothing_to_probe()},
    {"curl --compressed https://example.com", probes({ex})},
    {"curl --config file.txt https://example.com", pass(list)},
    {"curl --connect-timeout 3.14 https://example.com", probes({ex})},
    {"curl --connect-to example.com:443:example.net:8443 https://example.com", pass(not_get)},
    {"curl -C - https://example.com", probes({ex})},
    {"curl -C 400 https://example.com", probes({ex})},
    {"curl -c store-here.txt https://example.com", probes({ex})},
    {"curl -c store-here.txt -b read-these https://example.com", pass(creds)},
    {"curl -b cookiefile https://example.com", pass(creds)},
    {"curl --create-dirs --output local/dir/file https://example.com", probes({ex})},
    {"curl --create-file-mode 0777 -T localfile sftp://example.com/new", pass(not_get)},
    {"curl --crlf -T file ftp://example.com/", pass(not_get)},
    {"curl --crlfile rejects.txt https://example.com", probes({ex})},
    {"curl --curves X25519 https://example.com", probes({ex})},
    {"curl --data-ascii @file https://example.com", pass(not_get)},
    {"curl --data-binary @filename https://example.com", pass(not_get)},
    {"curl --data-raw \"@at@at@\" https://example.com", pass(not_get)},
    {"curl --data-urlencode name@file https://example.com", pass(not_get)},
    {"curl -d \"name=curl\" -d \"tool=cmdline\" https://example.com", pass(not_get)},
    {"curl -d @filename https://example.com", pass(not_get)},
    {"curl --delegation \"none\" https://example.com", pass(creds)},
    {"curl -u name:password --digest https://example.com", pass(creds)},
    {"curl --disable-epsv ftp://example.com/", nothing_to_probe()},
    {"curl -q https://example.com", probes({ex})},
    {"curl --disallow-username-in-url https://example.com", probes({ex})},
    {"curl --dns-servers 192.168.0.1,192.168.0.2 https://example.com", probes({ex})},
    {"curl --doh-url https://doh.example https://example.com", probes({ex})}, // an option's value is never probed
    {"curl --dump-header store.txt https://example.com", probes({ex})},
    {"curl --egd-file /random/here https://example.com", probes({ex})},
    {"curl --etag-compare etag.txt https://example.com", probes({ex})},
    {"curl --etag-save storetag.txt https://example.com", probes({ex})},
    {"curl --expect100-timeout 2.5 -T file https://example.com", pass(not_get)},
    {"curl --fail-early https://example.com https://two.example", probes({ex, "https://two.example"})},
    {"curl --fail-with-body https://example.com", probes({ex})},
    {"curl --false-start https://example.com", probes({ex})},
    {"curl --form-escape -F 'field\\name=curl' -F 'file=@load\"this' https://example.com", pass(not_get)},
    {"curl --form-string \"data\" https://example.com", pass(not_get)},
    {"curl -F profile=@portrait.jpg https://example.com/upload.cgi", pass(not_get)},
    {"curl --form \"name=curl\" --form \"file=@loadthis\" https://example.com", pass(not_get)},
    {"curl --ftp-method multicwd ftp://example.com/dir1/dir2/file", nothing_to_probe()},
    {"curl -P - ftp:/example.com", nothing_to_probe()},
    {"curl --get https://example.com", probes({ex})},
    {"curl --get -d \"tool=curl\" -d \"age=old\" https://example.com", pass(not_get)},
    {"curl --get -I -d \"tool=curl\" https://example.com", pass(not_get)},
    {"curl -g \"https://example.com/{[]}}}}\"", probes({"https://example.com/{[]}}}}"})},
    {"curl --happy-eyeballs-timeout-ms 500 https://example.com", probes({ex})},
    {"curl -I https://example.com", pass(not_get)},
    {"curl -H \"X-First-Name: Joe\" https://example.com", pass(creds)}, // a header the shim cannot vouch for
    {"curl -H \"User-Agent: yes-please/2000\" https://example.com", probes({ex})},
    {"curl -H \"Host:\" https://example.com", pass(creds)},
    {"curl -H @headers.txt https://example.com", pass(creds)},
    {"curl --help all", nothing_to_probe()},
    {"curl --hsts cache.txt https://example.com", probes({ex})},
    {"curl --http1.1 https://example.com", probes({ex})},
    {"curl --http2 https://example.com", probes({ex})},
    {"curl --ignore-content-length https://example.com", probes({ex})},
    {"curl -i https://example.com", probes({ex})},
    {"curl --insecure https://example.com", probes({ex})},
    {"curl --interface eth0 https://example.com", probes({ex})},
    {"curl --ipv4 https://example.com", probes({ex})},
    {"curl --json '{ \"drink\": \"coffe\" }' https://example.com", pass(not_get)},
    {"curl --json @- https://example.com", pass(not_get)},
    {"curl --junk-session-cookies -b cookies.txt https://example.com", pass(creds)},
    {"curl --keepalive-time 20 https://example.com", probes({ex})},
    {"curl --key-type DER --key here https://example.com", pass(creds)},
    {"curl --krb clear ftp://example.com/", pass(creds)},
    {"curl --libcurl client.c https://example.com", pass(shows)},
    {"curl --limit-rate 10M https://example.com", probes({ex})},
    {"curl --list-only ftp://example.com/dir/", nothing_to_probe()},
    {"curl --local-port 1000-3000 https://example.com", probes({ex})},
    {"curl --location-trusted -u user:password https://example.com", pass(creds)},
    {"curl -L https://example.com", probes({ex})},
    {"curl --login-options 'AUTH=*' imap://example.com", pass(creds)},
    {"curl --mail-from user@example.com -T mail smtp://example.com/", pass(not_get)},
    {"curl --mail-rcpt user@example.net smtp://example.com", nothing_to_probe()},
    {"curl --manual", nothing_to_probe()},
    {"curl --max-filesize 100K https://example.com", probes({ex})},
    {"curl --max-redirs 3 --location https://example.com", probes({ex})},
    {"curl --max-time 2.92 https://example.com", probes({ex})},
    {"curl --negotiate -u : https://example.com", pass(creds)},
    {"curl --netrc-file netrc https://example.com", pass(creds)},
    {"curl --netrc-optional https://example.com", pass(creds)},
    {"curl --netrc https://example.com", pass(creds)},
    {"curl https://example.com --next -d postthis www2.example.com", pass(not_get)}, // a POST anywhere: the whole command
    {"curl -I https://example.com --next https://example.net/", pass(not_get)},
    {"curl --no-alpn https://example.com", probes({ex})},
    {"curl --no-buffer https://example.com", probes({ex})},
    {"curl --no-clobber --output local/dir/file https://example.com", probes({ex})},
    {"curl --no-progress-meter -o store https://example.com", probes({ex})},
    {"curl --noproxy \"www.example\" https://example.com", probes({ex})},
    {"curl --ntlm -u user:password https://example.com", pass(creds)},
    {"curl --oauth2-bearer \"mF_9.B5f-4.1JqM\" https://example.com", pass(creds)},
    {"curl --output-dir \"tmp\" -O https://example.com", probes({ex})},
    {"curl -o file https://example.com", probes({ex})},
    {"curl \"http://{one,two}.example.com\" -o \"file_#1.txt\"", nothing_to_probe()}, // a glob: curl expands it
    {"curl \"http://{site,host}.host[1-5].com\" -o \"#1_#2\"", nothing_to_probe()},
    {"curl -o file https://example.com -o file2 https://example.net", probes({ex, "https://example.net"})},
    {"curl --parallel-immediate -Z https://example.com -o file1 https://example.com -o file2", probes({ex, ex})},
    {"curl --parallel-max 100 -Z https://example.com ftp://example.com/", probes({ex})},
    {"curl --pass secret --key file https://example.com", pass(creds)},
    {"curl --path-as-is https://example.com/../../etc/passwd", pass(not_get)},
    {"curl --pinnedpubkey 'sha256//ce118b51897f4452dc' https://example.com", probes({ex})},
    {"curl --post301 --location -d \"data\" https://example.com", pass(not_get)},
    {"curl --preproxy socks5://proxy.example -x http://http.example https://example.com", probes({ex})},
    {"curl -# -O https://example.com", probes({ex})},
    {"curl --proto-default https ftp.example.com", nothing_to_probe()},
    {"curl --proto =http,https,sftp https://example.com", probes({ex})},
    {"curl --proxy-basic --proxy-user user:passwd -x proxy https://example.com", pass(creds)},
    {"curl --proxy-cacert CA-file.txt -x https://proxy https://example.com", probes({ex})},
    {"curl --proxy-cert file -x https://proxy https://example.com", pass(creds)},
    {"curl --proxy-header \"User-Agent: surprise\" -x http://proxy https://example.com", probes({ex})},
    {"curl --proxy-header \"X-First-Name: Joe\" -x http://proxy https://example.com", pass(creds)},
    {"curl --proxy-insecure -x https://proxy https://example.com", probes({ex})},
    {"curl --proxy-key here -x https://proxy https://example.com", pass(creds)},
    {"curl --proxy-tlspassword passwd -x https://proxy https://example.com", pass(creds)},
    {"curl --proxy-user name:pwd -x proxy https://example.com", pass(creds)},
    {"curl --proxy http://proxy.example https://example.com", probes({ex})},
    {"curl --proxytunnel -x http://proxy https://example.com", probes({ex})},
    {"curl --quote \"DELE file\" ftp://example.com/foo", nothing_to_probe()},
    {"curl --range 22-44 https://example.com", probes({ex})},
    {"curl --rate 2/s https://example.com", probes({ex})},
    {"curl --raw https://example.com", probes({ex})},
    {"curl --referer \"https://fake.example;auto\" -L https://example.com", probes({ex})},
    {"curl -OJ https://example.com/file", pass(naming)}, // the cache does not send the origin's Content-Disposition yet
    {"curl --remote-name-all ftp://example.com/file1 ftp://example.com/file2", nothing_to_probe()},
    {"curl -O https://example.com/filename", probes({ex + "/filename"})},
    {"curl --remote-time -o foo https://example.com", probes({ex})},
    {"curl --remove-on-error -o output https://example.com", probes({ex})},
    {"curl --request-target \"*\" -X OPTIONS https://example.com", pass(not_get)},
    {"curl -X \"DELETE\" https://example.com", pass(not_get)},
    {"curl -X NLST ftp://example.com/", pass(not_get)},
    {"curl --resolve example.com:443:127.0.0.1 https://example.com", pass(not_get)}, // aimed at another server
    {"curl --retry 5 --retry-all-errors https://example.com", probes({ex})},
    {"curl --retry-connrefused --retry 7 https://example.com", probes({ex})},
    {"curl --sasl-authzid zid imap://example.com/", pass(creds)},
    {"curl --show-error --silent https://example.com", probes({ex})},
    {"curl --socks5 proxy.example:7000 https://example.com", probes({ex})},
    {"curl --speed-limit 300 --speed-time 10 https://example.com", probes({ex})},
    {"curl --ssl pop3://example.com/", nothing_to_probe()},
    {"curl --stderr output.txt https://example.com", probes({ex})},
    {"curl --styled-output -I https://example.com", pass(not_get)},
    {"curl --suppress-connect-headers --include -x proxy https://example.com", probes({ex})},
    {"curl --tcp-nodelay https://example.com", probes({ex})},
    {"curl -t TTYPE=vt100 telnet://example.com/", nothing_to_probe()},
    {"curl -z \"Wed 01 Sep 2021 12:18:00\" https://example.com", probes({ex})},
    {"curl --tls-max 1.3 --tlsv1.2 https://example.com", probes({ex})},
    {"curl --tlspassword pwd --tlsuser user https://example.com", pass(creds)},
    {"curl --trace-time --trace-ascii output https://example.com", probes({ex})},
    {"curl --unix-socket socket-path https://example.com", pass(not_get)},
    {"curl -T file https://example.com", pass(not_get)},
    {"curl --upload-file \"{file1,file2}\" https://example.com", pass(not_get)},
    {"curl --url-query name=val https://example.com", pass(not_get)},
    {"curl --url https://example.com", probes({ex})},
    {"curl -A \"Agent 007\" https://example.com", probes({ex})},
    {"curl -u user:secret https://example.com", pass(creds)},
    {"curl --verbose https://example.com", probes({ex})},
    {"curl --version", nothing_to_probe()},
    {"curl -w '%{http_code}\\n' https://example.com", probes({ex})},
    {"curl --xattr -o storage https://example.com", probes({ex})},

    // --- wget's manual (wget.1 of wget 1.21) and its classic examples ---
    {"wget -r --tries=10 http://fly.srk.fer.hr/ -o log", pass(naming)},
    {"wget -drc http://fly.srk.fer.hr/", pass(naming)},
    {"wget -o log -- -x", nothing_to_probe()}, // after --, -x is a (scheme-less) URL
    {"wget -X \"\" -X /~nobody,/~somebody", nothing_to_probe()},
    {"wget -O file http://foo", probes({"http://foo"})},
    {"wget -O - http://foo", probes({"http://foo"})},
    {"wget -c ftp://sunsite.doc.ic.ac.uk/ls-lR.Z", nothing_to_probe()},
    {"wget --spider --force-html -i bookmarks.html", pass(not_get)},
    {"wget -Q10k https://example.com/ls-lR.gz", probes({"https://example.com/ls-lR.gz"})},
    {"wget -Q2m -i sites", pass(list)},
    {"wget --no-cookies --header \"Cookie: name=value\" http://example.com/", pass(creds)},
    {"wget --header='Accept-Charset: iso-8859-2' --header='Accept-Language: hr' http://fly.srk.fer.hr/",
     probes({"http://fly.srk.fer.hr/"})},
    {"wget --header=\"Host: foo.bar\" http://localhost/", pass(creds)},
    {"wget --save-cookies cookies.txt --post-data 'user=foo&password=bar' http://example.com/auth.php", pass(not_get)},
    {"wget --load-cookies cookies.txt -p http://example.com/interesting/article.php", pass(creds)},
    {"wget -r -l 0 http://site.example/1.html", pass(naming)},
    {"wget -r -nd --delete-after http://whatever.com/~popular/page/", pass(naming)},
    {"wget -p http://site.example/1.html", pass(naming)},
    {"wget -E -H -k -K -p http://site.example/document", pass(naming)},
    {"wget --ignore-tags=a,area -H -k -K -r http://site.example/document", pass(naming)},
    {"wget -rl0 -kKE -t5 --no-proxy http://example.com/", pass(naming)},
    {"wget ftp://gnjilux.srk.fer.hr/*.msg", nothing_to_probe()},
    {"wget http://fly.srk.fer.hr/", probes({"http://fly.srk.fer.hr/"})},
    {"wget --tries=45 http://fly.srk.fer.hr/jpg/flyweb.jpg", probes({"http://fly.srk.fer.hr/jpg/flyweb.jpg"})},
    {"wget -t 45 -o log http://fly.srk.fer.hr/jpg/flyweb.jpg", probes({"http://fly.srk.fer.hr/jpg/flyweb.jpg"})},
    {"wget -i file", pass(list)},
    {"wget -r https://www.gnu.org/ -o gnulog", pass(naming)},
    {"wget -p --convert-links -nH -nd -Pdownload http://www.example.com/dir/page.html", pass(naming)},
    {"wget -S http://www.lycos.com/", probes({"http://www.lycos.com/"})},
    {"wget --save-headers http://www.lycos.com/", probes({"http://www.lycos.com/"})},
    {"wget -r -l1 --no-parent -A.gif http://www.example.com/dir/", pass(naming)},
    {"wget ftp://hniksic:mypassword@unix.example.com/.emacs", pass(creds)},
    {"wget -O - http://jagor.srce.hr/ http://www.srce.hr/", probes({"http://jagor.srce.hr/", "http://www.srce.hr/"})},
    {"wget --force-html -i -", pass(list)},
    {"wget --mirror --convert-links --backup-converted https://www.gnu.org/ -o /home/me/weeklog", pass(naming)},
    {"wget -m -k -K -E https://www.gnu.org/ -o /home/me/weeklog", pass(naming)},
    {"wget --user=u --password=p https://example.com/f", pass(creds)},
    {"wget --http-user=u --http-password=p https://example.com/f", pass(creds)},
    {"wget --ask-password --user=u https://example.com/f", pass(creds)},
    {"wget --method=PUT --body-file=x https://example.com/f", pass(not_get)},
    {"wget --method=DELETE https://example.com/f", pass(not_get)},
    {"wget --post-file=data.json https://example.com/hook", pass(not_get)},
    {"wget --body-data=x --method=POST https://example.com/hook", pass(not_get)},
    {"wget --certificate=c.pem --private-key=k.pem https://example.com/f", pass(creds)},
    {"wget --config=my.wgetrc https://example.com/f", pass(list)},
    {"wget --input-file=urls.txt --continue", pass(list)},
    {"wget -x https://example.com/a/b.tgz", pass(naming)},
    {"wget --force-directories https://example.com/a/b.tgz", pass(naming)},
    {"wget --protocol-directories https://example.com/a/b.tgz", pass(naming)},
    {"wget --content-disposition https://example.com/download?id=3", pass(naming)},
    {"wget --trust-server-names https://example.com/latest", pass(naming)}, // named after the redirect
    {"wget -N https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget -b https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget --limit-rate=200k https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget -nv -nc https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget -nd -np https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget -P /tmp https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget -P/tmp https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget --directory-prefix=/opt https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget --referer=https://example.com/page https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget --referer https://example.com/page https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget --tries=3 --waitretry=5 --retry-connrefused https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget -q --show-progress -O f.tgz https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget --quiet --output-document=- https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget --no-check-certificate https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget --continue=on https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget --no-continue https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget --contin https://example.com/f.tgz", probes({"https://example.com/f.tgz"})}, // an unambiguous prefix
    {"wget --cont https://example.com/f.tgz", pass(unparsed)},   // content-disposition? continue?
    {"wget --frobnicate https://example.com/f.tgz", pass(unparsed)},
    {"wget -Z https://example.com/f.tgz", pass(unparsed)},
    {"wget --no-verbose=1 https://example.com/f.tgz", pass(unparsed)}, // a negation takes no value
    {"wget -O", pass(unparsed)},
    {"wget -- -notaurl https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget https://example.com/f.tgz -O f.tgz", probes({"https://example.com/f.tgz"})}, // options after URLs
    {"wget -e robots=off https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget -e robots=off -r -np https://example.com/dir/", pass(naming)},
    {"wget -e \"header = Authorization: Bearer x\" https://example.com/f.tgz", pass(creds)},
    {"wget -e http_proxy=proxy:3128 -e use_proxy=yes https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget -e method=POST https://example.com/f.tgz", pass(not_get)},
    {"wget -e input=list.txt", pass(wgetrc)},
    {"wget --execute=tries=3 https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget --help", nothing_to_probe()},
    {"wget --version", nothing_to_probe()},
    {"wget --header=Accept:application/octet-stream https://example.com/f.tgz", probes({"https://example.com/f.tgz"})},
    {"wget --header=authorization:x https://example.com/f.tgz", pass(creds)},
    {"wget --proxy-user=u --proxy-password=p https://example.com/f.tgz", pass(creds)},
    {"wget --spider https://example.com/f.tgz", pass(not_get)},

    // --- install scripts and distribution docs ---
    // rustup (rustup.rs and rustup-init.sh)
    {"curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs", probes({"https://sh.rustup.rs"})},
    {"curl --proto '=https' --tlsv1.2 --retry 3 --silent --show-error --fail --location "
     "https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init --output /tmp/rustup-init",
     probes({"https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init"})},
    {"curl --proto '=https' --tlsv1.2 --ciphers TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384 --silent --show-error "
     "--fail --location https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init --output rustup-init",
     probes({"https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init"})},
    {"wget --https-only --secure-protocol=TLSv1_2 https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init "
     "-O rustup-init",
     probes({"https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init"})},
    // nvm (install.sh and nvm.sh)
    {"curl -o- https://raw.githubusercontent.com/nvm-sh/nvm/v0.39.7/install.sh",
     probes({"https://raw.githubusercontent.com/nvm-sh/nvm/v0.39.7/install.sh"})},
    {"wget -qO- https://raw.githubusercontent.com/nvm-sh/nvm/v0.39.7/install.sh",
     probes({"https://raw.githubusercontent.com/nvm-sh/nvm/v0.39.7/install.sh"})},
    {"curl --fail --compressed -q -L -s https://raw.githubusercontent.com/nvm-sh/nvm/v0.39.7/nvm.sh -o /root/.nvm/nvm.sh",
     probes({"https://raw.githubusercontent.com/nvm-sh/nvm/v0.39.7/nvm.sh"})},
    {"curl -q --fail --compressed -L -s https://nodejs.org/dist/index.tab -o -", probes({"https://nodejs.org/dist/index.tab"})},
    {"curl --fail --compressed -q -L -s -o node.tar.xz --progress-bar https://nodejs.org/dist/v20.11.0/node-v20.11.0-linux-x64.tar.xz",
     probes({"https://nodejs.org/dist/v20.11.0/node-v20.11.0-linux-x64.tar.xz"})},
    {"wget -q https://nodejs.org/dist/v20.11.0/node-v20.11.0-linux-x64.tar.xz -O node.tar.xz",
     probes({"https://nodejs.org/dist/v20.11.0/node-v20.11.0-linux-x64.tar.xz"})},
    {"curl -q --fail --compressed -L -s -H \"Authorization: token abc\" https://nodejs.org/dist/index.tab", pass(creds)},
    {"wget --header \"Authorization: token abc\" -q https://nodejs.org/dist/index.tab -O -", pass(creds)},
    // get-docker.sh and Docker's install docs
    {"curl -fsSL https://get.docker.com -o get-docker.sh", probes({"https://get.docker.com"})},
    {"curl -fsSL https://download.docker.com/linux/ubuntu/gpg -o /etc/apt/keyrings/docker.asc",
     probes({"https://download.docker.com/linux/ubuntu/gpg"})},
    {"wget -qO- https://get.docker.com/", probes({"https://get.docker.com/"})},
    {"curl -fsSL \"https://download.docker.com/linux/centos/docker-ce.repo\" -o /etc/yum.repos.d/docker-ce.repo",
     probes({"https://download.docker.com/linux/centos/docker-ce.repo"})},
    {"curl --unix-socket /var/run/docker.sock http://localhost/version", pass(not_get)},
    // NVIDIA CUDA runfile and repository instructions
    {"wget https://developer.download.nvidia.com/compute/cuda/12.4.0/local_installers/cuda_12.4.0_550.54.14_linux.run",
     probes({"https://developer.download.nvidia.com/compute/cuda/12.4.0/local_installers/cuda_12.4.0_550.54.14_linux.run"})},
    {"curl -O https://developer.download.nvidia.com/compute/cuda/12.4.0/local_installers/cuda_12.4.0_550.54.14_linux.run",
     probes({"https://developer.download.nvidia.com/compute/cuda/12.4.0/local_installers/cuda_12.4.0_550.54.14_linux.run"})},
    {"wget https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/cuda-keyring_1.1-1_all.deb",
     probes({"https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/cuda-keyring_1.1-1_all.deb"})},
    {"wget https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/cuda-ubuntu2204.pin",
     probes({"https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/cuda-ubuntu2204.pin"})},
    {"curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey", probes({"https://nvidia.github.io/libnvidia-container/gpgkey"})},
    {"curl -s -L https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list",
     probes({"https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list"})},
    {"wget -c https://developer.download.nvidia.com/compute/cuda/12.4.0/local_installers/cuda_12.4.0_550.54.14_linux.run",
     probes({"https://developer.download.nvidia.com/compute/cuda/12.4.0/local_installers/cuda_12.4.0_550.54.14_linux.run"})},
    {"wget --content-disposition https://api.ngc.nvidia.com/v2/resources/nvidia/ngc-apps/ngc_cli/versions/3.41.4/files/ngccli_linux.zip "
     "-O ngccli_linux.zip",
     pass(naming)},
    // Debian and Ubuntu documentation
    {"wget https://cdimage.debian.org/debian-cd/current/amd64/iso-cd/debian-12.5.0-amd64-netinst.iso",
     probes({"https://cdimage.debian.org/debian-cd/current/amd64/iso-cd/debian-12.5.0-amd64-netinst.iso"})},
    {"wget https://cdimage.debian.org/debian-cd/current/amd64/iso-cd/SHA256SUMS",
     probes({"https://cdimage.debian.org/debian-cd/current/amd64/iso-cd/SHA256SUMS"})},
    {"curl -LO https://releases.ubuntu.com/22.04/ubuntu-22.04.4-live-server-amd64.iso",
     probes({"https://releases.ubuntu.com/22.04/ubuntu-22.04.4-live-server-amd64.iso"})},
    {"wget -c https://releases.ubuntu.com/22.04/ubuntu-22.04.4-desktop-amd64.iso",
     probes({"https://releases.ubuntu.com/22.04/ubuntu-22.04.4-desktop-amd64.iso"})},
    {"curl -fsSLo /usr/share/keyrings/kubernetes-archive-keyring.gpg https://packages.cloud.google.com/apt/doc/apt-key.gpg",
     probes({"https://packages.cloud.google.com/apt/doc/apt-key.gpg"})},
    {"wget -O- https://apt.releases.hashicorp.com/gpg", probes({"https://apt.releases.hashicorp.com/gpg"})},
    {"wget -qO - https://packages.microsoft.com/keys/microsoft.asc", probes({"https://packages.microsoft.com/keys/microsoft.asc"})},
    {"curl -sSL https://packages.microsoft.com/config/ubuntu/22.04/prod.list -o /etc/apt/sources.list.d/microsoft-prod.list",
     probes({"https://packages.microsoft.com/config/ubuntu/22.04/prod.list"})},
    {"wget --spider https://deb.debian.org/debian/", pass(not_get)},
    {"wget -r -np -nH --cut-dirs=3 https://cdimage.debian.org/debian-cd/current/amd64/", pass(naming)},
    {"wget -i -", pass(list)},
    {"curl -K curl.cfg", pass(list)},
    {"curl -K -", pass(list)},
    // other well-known installers
    {"curl -fsSL https://raw.githubusercontent.com/Homebrew/install/HEAD/install.sh",
     probes({"https://raw.githubusercontent.com/Homebrew/install/HEAD/install.sh"})},
    {"curl -LO https://dl.k8s.io/release/v1.29.2/bin/linux/amd64/kubectl",
     probes({"https://dl.k8s.io/release/v1.29.2/bin/linux/amd64/kubectl"})},
    {"curl -L -s https://dl.k8s.io/release/stable.txt", probes({"https://dl.k8s.io/release/stable.txt"})},
    {"curl -fsSL -o get_helm.sh https://raw.githubusercontent.com/helm/helm/main/scripts/get-helm-3",
     probes({"https://raw.githubusercontent.com/helm/helm/main/scripts/get-helm-3"})},
    {"curl -sfL https://get.k3s.io", probes({"https://get.k3s.io"})},
    {"curl -sSL https://install.python-poetry.org", probes({"https://install.python-poetry.org"})},
    {"wget https://repo.anaconda.com/miniconda/Miniconda3-latest-Linux-x86_64.sh",
     probes({"https://repo.anaconda.com/miniconda/Miniconda3-latest-Linux-x86_64.sh"})},
    {"wget https://go.dev/dl/go1.22.0.linux-amd64.tar.gz", probes({"https://go.dev/dl/go1.22.0.linux-amd64.tar.gz"})},
    {"curl -fsSL https://tailscale.com/install.sh", probes({"https://tailscale.com/install.sh"})},
    {"curl -H \"Authorization: token ghp_x\" -L https://api.github.com/repos/o/r/releases/latest", pass(creds)},
    {"curl -L -H \"Accept: application/octet-stream\" -H \"Authorization: Bearer x\" https://api.github.com/repos/o/r/releases/assets/1",
     pass(creds)},
    {"curl -L -H \"Accept: application/octet-stream\" https://github.com/o/r/releases/download/v1/tool.tgz -o tool.tgz",
     probes({"https://github.com/o/r/releases/download/v1/tool.tgz"})},
    {"curl --header \"PRIVATE-TOKEN: glpat-x\" https://gitlab.example.com/api/v4/projects/1/packages/generic/p/1/f.bin", pass(creds)},
    {"curl -H \"X-JFrog-Art-Api: KEY\" -O https://artifactory.example.com/artifactory/repo/f.bin", pass(creds)},
    {"curl -u admin:secret -T f.bin https://artifactory.example.com/artifactory/repo/f.bin", pass(creds)},
    {"curl -X POST -H 'Content-type: application/json' --data '{\"text\":\"Hello\"}' https://hooks.slack.com/services/T/B/X",
     pass(not_get)},
    {"curl -d build=ok http://origin.example/hook", pass(not_get)},
    {"curl -e https://cache.example/b/x https://vendor.example/x", probes({"https://vendor.example/x"})},
    {"curl -x http://proxy:3128 https://vendor.example/x", probes({"https://vendor.example/x"})},
    {"curl https://bob:pw@host.example/x", pass(creds)},
    {"curl bob:pw@host.example/x -O https://vendor.example/y", pass(creds)},
    {"curl \"http://cache.lab:3000/blob?url=https://vendor.example/x\"", nothing_to_probe()}, // the cache itself
    {"curl -fsSLO http://cache.lab:3000/b/aHR0cHM6Ly92ZW5kb3IuZXhhbXBsZS94/x", nothing_to_probe()},
    {"curl -fsSLO http://CACHE.LAB:3000/b/aHR0cHM6Ly92ZW5kb3IuZXhhbXBsZS94/x", nothing_to_probe()},
    {"curl https://cache.lab:3000/healthz", nothing_to_probe()},
    {"curl http://cache.lab/x.tgz", probes({"http://cache.lab/x.tgz"})}, // another port: not the cache
    {"curl --aws-sigv4 aws:amz:us-east-1:s3 --user KEY:SECRET https://bucket.s3.amazonaws.com/f.bin", pass(creds)},

    // --- parsing corner cases ---
    {"curl -sSLo file https://x.example/a", probes({"https://x.example/a"})},
    {"curl -ofile https://x.example/a", probes({"https://x.example/a"})},
    {"curl -o https://x.example/not-a-url https://x.example/a", probes({"https://x.example/a"})},
    {"curl -fsSL --url https://x.example/a", probes({"https://x.example/a"})},
    {"curl --url=https://x.example/a", pass(unparsed)}, // curl 7.88: "option --url=...: is unknown"
    {"curl --URL https://x.example/a", probes({"https://x.example/a"})},
    {"curl --outp f https://x.example/a", pass(unparsed)},   // output? output-dir?
    {"curl --compress https://x.example/a", pass(unparsed)}, // compressed? compressed-ssh?
    {"curl --silen https://x.example/a", probes({"https://x.example/a"})},
    {"curl --no-silent https://x.example/a", probes({"https://x.example/a"})},
    {"curl --no-output f https://x.example/a", pass(unparsed)},
    {"curl --no-sil https://x.example/a", pass(unparsed)}, // --no- takes only exact names
    {"curl -- -weird https://x.example/a", probes({"https://x.example/a"})},
    {"curl -- --data x https://x.example/a", probes({"https://x.example/a"})}, // after --, --data is a URL
    {"curl - https://x.example/a", pass(unparsed)},
    {"curl -X GET https://x.example/a", probes({"https://x.example/a"})},
    {"curl -XGET https://x.example/a", probes({"https://x.example/a"})},
    {"curl -X get https://x.example/a", pass(not_get)},
    {"curl -XPOST https://x.example/a", pass(not_get)},
    {"curl -G https://x.example/a", probes({"https://x.example/a"})},
    {"curl -H 'authorization: bearer x' https://x.example/a", pass(creds)},
    {"curl -HAccept:x https://x.example/a", probes({"https://x.example/a"})},
    {"curl -u: https://x.example/a", pass(creds)},
    {"curl -n https://x.example/a", pass(creds)},
    {"curl -E cert.pem https://x.example/a", pass(creds)},
    {"curl -O https://x.example/a -O https://x.example/b", probes({"https://x.example/a", "https://x.example/b"})},
    {"curl -O ftp://x.example/a -O https://x.example/b", probes({"https://x.example/b"})},
    {"curl file:///etc/passwd", nothing_to_probe()},
    {"curl -O https://x.example/a[1-3].bin", nothing_to_probe()},
    {"curl -g -O https://x.example/a[1].bin", probes({"https://x.example/a[1].bin"})},
    {"curl -w '%{url_effective}' https://x.example/a", pass(shows)},
    {"curl -w '%{http_code}' -o /dev/null -s https://x.example/a", probes({"https://x.example/a"})},
    {"curl -w @fmt.txt https://x.example/a", pass(shows)},
    {"curl -sS -- https://x.example/a", probes({"https://x.example/a"})},
    {"curl -ZO https://x.example/a https://x.example/b", probes({"https://x.example/a", "https://x.example/b"})},
    {"curl -C - -O https://x.example/a", probes({"https://x.example/a"})},
    {"curl -r 0-99 https://x.example/a", probes({"https://x.example/a"})},
    {"curl -sI https://x.example/a", pass(not_get)},
    {"curl --no-head https://x.example/a", probes({"https://x.example/a"})},
    {"curl HTTPS://X.EXAMPLE/A", probes({"HTTPS://X.EXAMPLE/A"})},
    {"curl \"https://x.example/a b\"", nothing_to_probe()}, // a space: not a URL the cache can key
    {"curl https://x.example:99999/a", nothing_to_probe()},
    {"curl -o", pass(unparsed)},
    {"curl", nothing_to_probe()},
    {"curl -sSL https://x.example/a --next -O https://x.example/b",
     probes({"https://x.example/a", "https://x.example/b"})},
};
// clang-format on

} // namespace

TEST_CASE("the decision for 150+ real command lines", "[shim][commands]") {
  REQUIRE(k_command_cases.size() >= 150);
  std::set<std::string> seen;
  for (const CommandCase& c : k_command_cases) {
    INFO(c.command);
    CHECK(seen.insert(c.command).second); // each command once
    auto argv = words(c.command);
    REQUIRE(!argv.empty());
    const Tool tool = argv[0] == "wget" ? Tool::wget : Tool::curl;
    const std::vector<std::string> args(argv.begin() + 1, argv.end());
    const auto parsed = shim::parse_args(tool, args);
    const auto decision = shim::decide(tool, parsed, k_cache);
    CHECK(std::string(shim::describe(decision.pass_through)) == shim::describe(c.expect.pass));
    std::vector<std::string> probed;
    for (const auto& u : decision.probed()) {
      REQUIRE(u.index < args.size());
      CHECK(args[u.index] == u.url); // a URL is always a whole argument
      probed.push_back(u.url);
    }
    CHECK(probed == c.expect.probed);
    if (decision.pass_through != PassThrough::none) {
      CHECK(decision.urls.empty());
    }
  }
}
