// The same file name on a hit as on a miss: curl -O, curl -OJ, wget's default
// naming (query included) and wget --content-disposition, through the real
// tools run as `curl`/`wget` symlinks first on PATH, against a real
// withcache-server and an origin on 127.0.0.1.
#include <catch2/catch.hpp>

#include <filesystem>
#include <map>

#include "support/deployment.hpp"
#include "support/origin.hpp"
#include "support/server_process.hpp"

namespace fs = std::filesystem;
using namespace withcache;
using test::Deployment;
using test::Origin;
using test::quoted;
using test::Route;

namespace {

// The files in `dir` with their contents.
std::map<std::string, std::string> files_in(const fs::path& dir) {
  std::map<std::string, std::string> out;
  if (fs::exists(dir)) {
    for (const auto& entry : fs::directory_iterator(dir)) {
      out[entry.path().filename().string()] = test::slurp(entry.path());
    }
  }
  return out;
}

struct Name {
  std::string route;       // the path the origin serves (decoded, as cpp-httplib matches it)
  std::string url_path;    // the path (and query) in the URL the user types
  std::string disposition; // the origin's Content-Disposition, if any
  std::string redirect;    // answer 302 to this path instead
};

struct Tool {
  std::string name;
  std::string command;
  bool cached; // false: the shim passes it through (the name depends on more than the URL)
};

} // namespace

TEST_CASE("curl and wget save the same file name from the cache as from the origin", "[shim][names]") {
  const std::vector<Name> names = {
      {"/d/a+b(1),v=2.tar", "/d/a+b(1),v=2.tar", "", ""},
      {"/d/a b.tgz", "/d/a%20b.tgz", "", ""},
      {"/d/\xC3\xBC-caf\xC3\xA9.tgz", "/d/\xC3\xBC-caf\xC3\xA9.tgz", "", ""},   // UTF-8 as typed
      {"/d/\xE6\x97\xA5\xE6\x9C\xAC.iso", "/d/%E6%97%A5%E6%9C%AC.iso", "", ""}, // UTF-8 percent-encoded
      {"/d/small.bin", "/d/small.bin?sig=abc&Expires=1700000000", "", ""},      // wget keeps the query
      {"/d/get", "/d/get?id=42", "attachment; filename=\"named-by-origin.bin\"", ""},
      {"/d/semi;colon.bin", "/d/semi;colon.bin", "", ""},
      {"/d/latest", "/d/latest", "", "/d/tool-1.2.3.tgz"},
  };
  const std::vector<Tool> tools = {
      {"curl -O", "curl -fsSL -O", true},
      {"wget", "wget -q", true},
      {"curl -OJ", "curl -fsSL -OJ", false},
      {"wget --content-disposition", "wget -q --content-disposition", false},
      {"wget --trust-server-names", "wget -q --trust-server-names", false},
  };

  Origin origin;
  origin.add("/d/tool-1.2.3.tgz", Route(test::make_bytes(2500, 49)));
  for (std::size_t i = 0; i < names.size(); ++i) {
    Route route = names[i].redirect.empty()
                      ? Route(test::make_bytes(3000 + i, static_cast<std::uint32_t>(50 + i)))
                      : Route::redirect(names[i].redirect);
    if (!names[i].disposition.empty()) {
      route.headers.emplace_back("Content-Disposition", names[i].disposition);
    }
    origin.add(names[i].route, route);
  }
  Deployment d;
  const auto run_all = [&](const std::string& phase, const std::vector<std::string>& env) {
    for (std::size_t i = 0; i < names.size(); ++i) {
      for (std::size_t t = 0; t < tools.size(); ++t) {
        const std::string dir = phase + "-" + std::to_string(i) + "-" + std::to_string(t);
        const auto r = d.sh("mkdir " + dir + " && cd " + dir + " && " + tools[t].command + " " +
                                quoted(origin.url(names[i].url_path)),
                            env);
        INFO(phase << ": " << tools[t].name << " " << names[i].url_path << "\n" << r.err);
        CHECK(r.exit_code == 0);
      }
    }
  };
  {
    // Misses, probed but never filled (--curate): the bytes and the names come from the origin.
    test::ServerProcess curate({"--curate"});
    run_all("miss", {"WITHCACHE_SERVER=" + curate.base()});
    CHECK(curate.metric("withcache_misses_total") ==
          static_cast<double>(names.size() * 2)); // the cached tools
    CHECK(curate.metric("withcache_hits_total") == 0);
  }

  // Another server fills each URL once; then every command runs again.
  test::ServerProcess server;
  const std::vector<std::string> env = {"WITHCACHE_SERVER=" + server.base()};
  for (const auto& n : names) {
    REQUIRE(d.sh("curl -fsS -o /dev/null " + quoted(origin.url(n.url_path)), env).exit_code == 0);
  }
  REQUIRE(server.fills_completed(static_cast<double>(names.size())));
  const int origin_gets = origin.count("GET");
  run_all("hit", env);

  for (std::size_t i = 0; i < names.size(); ++i) {
    for (std::size_t t = 0; t < tools.size(); ++t) {
      const std::string suffix = std::to_string(i) + "-" + std::to_string(t);
      INFO(tools[t].name << " " << names[i].url_path);
      const auto miss = files_in(d.dir / "work" / ("miss-" + suffix));
      const auto hit = files_in(d.dir / "work" / ("hit-" + suffix));
      REQUIRE(miss.size() == 1);
      CHECK(hit == miss); // the same name and the same bytes
    }
  }
  // The cached tools were served by the cache; the others went to the origin, unprobed.
  CHECK(server.metric("withcache_hits_total") == static_cast<double>(names.size() * 2));
  CHECK(server.metric("withcache_misses_total") == static_cast<double>(names.size()));
  int uncached_gets = 0;
  for (const auto& n : names) {
    uncached_gets += n.redirect.empty() ? 3 : 6; // a redirect costs two GETs
  }
  CHECK(origin.count("GET") - origin_gets == uncached_gets);
}
