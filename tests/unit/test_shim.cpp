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
