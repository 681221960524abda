// The shim deployed the way users deploy it: `curl` and `wget` symlinks to
// withcache-shim first on PATH, the real curl and wget after them, a real
// withcache-server and an origin on 127.0.0.1.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "support/deployment.hpp"
#include "support/origin.hpp"
#include "support/process.hpp"
#include "support/server_process.hpp"
#include "support/temp_dir.hpp"
#include "withcache/digest.hpp"
#include "withcache/url.hpp"

namespace fs = std::filesystem;
using namespace withcache;
using test::Origin;
using test::Route;

using test::Deployment;
using test::quoted;

TEST_CASE("a cached URL is served by the cache even with the origin gone", "[shim]") {
  auto origin = std::make_unique<Origin>();
  const std::string body = test::make_bytes(1024 * 1024 + 17, 41);
  origin->add("/cuda_12.4.0_linux.run", Route(body));
  const std::string url = origin->url("/cuda_12.4.0_linux.run");
  test::ServerProcess server;
  Deployment d;
  const std::vector<std::string> env = {"WITHCACHE_SERVER=" + server.base()};

  // A miss: bytes come from the origin, and the miss is recorded and filled.
  auto first = d.sh("curl -fsSL " + quoted(url) + " -o first.run", env);
  CHECK(first.exit_code == 0);
  CHECK(d.work_file("first.run") == body);
  CHECK(server.metric("withcache_misses_total") == 1);
  REQUIRE(server.fills_completed(1));
  CHECK(origin->gets("/cuda_12.4.0_linux.run") == 2); // curl's own GET and the fill

  origin.reset(); // the origin is gone: only the cache can answer now
  auto cached = d.sh("curl -fsSL " + quoted(url) + " -o out.run", env);
  CHECK(cached.exit_code == 0);
  CHECK(d.work_file("out.run") == body);

  auto named = d.sh("mkdir -p o && cd o && curl -fsS -O " + quoted(url) + " && ls", env);
  CHECK(named.exit_code == 0);
  CHECK(named.out == "cuda_12.4.0_linux.run\n");
  auto wget_named = d.sh("mkdir -p w && cd w && wget -q " + quoted(url) + " && ls", env);
  CHECK(wget_named.exit_code == 0);
  CHECK(wget_named.out == "cuda_12.4.0_linux.run\n");
  CHECK(test::slurp(d.dir / "work" / "w" / "cuda_12.4.0_linux.run") == body);
  CHECK(server.metric("withcache_hits_total") == 3);

  // curl -C - resumes a partial file against the cache.
  {
    std::ofstream partial(d.dir / "work" / "partial.run", std::ios::binary);
    partial << body.substr(0, 400'000);
  }
  auto resumed = d.sh("curl -fsS -C - -o partial.run " + quoted(url), env);
  CHECK(resumed.exit_code == 0);
  CHECK(digest::sha256_hex(d.work_file("partial.run")) == digest::sha256_hex(body));
}

TEST_CASE("an unreachable or unset server leaves the command as written", "[shim]") {
  Origin origin;
  origin.add("/f.tgz", Route("origin bytes"));
  Deployment d;
  // A closed port refuses at once; a long probe timeout would show as a hang.
  const test::ClosedPort refusing;
  const std::string closed = "http://" + refusing.authority();
  auto unreachable = d.sh("curl -fsS " + quoted(origin.url("/f.tgz")) + " -o f.tgz",
                          {"WITHCACHE_SERVER=" + closed, "WITHCACHE_PROBE_TIMEOUT=600"});
  CHECK(unreachable.exit_code == 0);
  CHECK(d.work_file("f.tgz") == "origin bytes");
  auto wget_unreachable = d.sh("wget -q -O g.tgz " + quoted(origin.url("/f.tgz")),
                               {"WITHCACHE_SERVER=" + closed, "WITHCACHE_PROBE_TIMEOUT=600"});
  CHECK(wget_unreachable.exit_code == 0);
  CHECK(d.work_file("g.tgz") == "origin bytes");

  // Unset: the real tool gets the argv untouched (REAL_CURL prints its arguments).
  const fs::path echo_args = d.dir / "echo-args";
  std::ofstream(echo_args) << "#!/bin/sh\nprintf '%s\\n' \"$@\"\n";
  fs::permissions(echo_args, fs::perms::owner_all);
  const std::string args =
      "-H 'Referer: https://ref' --data u=https://x " + quoted(origin.url("/f.tgz")) + " -o 'a b'";
  const std::string expected =
      "-H\nReferer: https://ref\n--data\nu=https://x\n" + origin.url("/f.tgz") + "\n-o\na b\n";
  auto unset = d.sh("curl " + args, {"REAL_CURL=" + echo_args.string(), "WITHCACHE_SERVER="});
  CHECK(unset.out == expected);
  CHECK(origin.requests() == 2);
}

TEST_CASE("a hit rewrites exactly the URL argument and a miss leaves every byte", "[shim]") {
  Origin origin;
  origin.add("/pkg.deb", Route("deb bytes"));
  test::ServerProcess server;
  Deployment d;
  const fs::path echo_args = d.dir / "echo-args";
  std::ofstream(echo_args) << "#!/bin/sh\nprintf '%s\\n' \"$@\"\n";
  fs::permissions(echo_args, fs::perms::owner_all);
  const std::string url = origin.url("/pkg.deb");
  const std::vector<std::string> env = {"WITHCACHE_SERVER=" + server.base(),
                                        "REAL_CURL=" + echo_args.string()};

  auto miss = d.sh("curl -fsSL --url " + quoted(url) + " -o out", env);
  CHECK(miss.out == "-fsSL\n--url\n" + url + "\n-o\nout\n");
  REQUIRE(server.fills_completed(1));
  auto hit = d.sh("curl -fsSL --url " + quoted(url) + " -o out", env);
  CHECK(hit.out == "-fsSL\n--url\n" + url::blob_url(server.base(), url) + "\n-o\nout\n");
  // curl 7.88 has no --url=VALUE (it exits 2, "option --url=...: is unknown"): passed through as written.
  auto equals = d.sh("curl -fsSL --url=" + quoted(url) + " -o out", env);
  CHECK(equals.out == "-fsSL\n--url=" + url + "\n-o\nout\n");
  // An option's value is never rewritten, even when it is a URL the cache holds.
  auto referer =
      d.sh("curl -e " + quoted(url) + " -x http://127.0.0.1:9 -o " + quoted(url) + " " + quoted(url), env);
  CHECK(referer.out == "-e\n" + url + "\n-x\nhttp://127.0.0.1:9\n-o\n" + url + "\n" +
                           url::blob_url(server.base(), url) + "\n");
  // CURLWITHCACHE_SERVER wins over WITHCACHE_SERVER.
  auto specific = d.sh("curl " + quoted(url),
                       {"WITHCACHE_SERVER=http://127.0.0.1:1", "CURLWITHCACHE_SERVER=" + server.base(),
                        "REAL_CURL=" + echo_args.string()});
  CHECK(specific.out == url::blob_url(server.base(), url) + "\n");
}

TEST_CASE("exit codes pass through, and a missing real tool is exit 127", "[shim]") {
  Origin origin; // no routes: every path is a 404
  test::ServerProcess server;
  Deployment d;
  const std::vector<std::string> env = {"WITHCACHE_SERVER=" + server.base()};
  CHECK(d.sh("curl -fsS -o /dev/null " + quoted(origin.url("/missing.iso")), env).exit_code == 22);
  CHECK(d.sh("wget -q -O /dev/null " + quoted(origin.url("/missing.iso")), env).exit_code == 8);

  const auto none = test::run({(d.dir / "bin" / "curl").string(), "--version"},
                              {"PATH=" + (d.dir / "bin").string(), "REAL_CURL="});
  CHECK(none.exit_code == 127);
  CHECK(none.err == "curlwithcache: no real curl found on PATH (set $REAL_CURL)\n");
  const auto none_wget = test::run({(d.dir / "bin" / "wget").string(), "--version"},
                                   {"PATH=" + (d.dir / "bin").string(), "REAL_WGET="});
  CHECK(none_wget.exit_code == 127);
  CHECK(none_wget.err == "wgetwithcache: no real wget found on PATH (set $REAL_WGET)\n");
}

TEST_CASE("several URLs are probed in one round and each hit is rewritten", "[shim]") {
  Origin origin;
  const std::string cached_body = test::make_bytes(70000, 42);
  origin.add("/cached.bin", Route(cached_body));
  origin.add("/cold.bin", Route("cold bytes"));
  test::ServerProcess server;
  Deployment d;
  const std::vector<std::string> env = {"WITHCACHE_SERVER=" + server.base()};
  REQUIRE(d.sh("curl -fsS -o warm.bin " + quoted(origin.url("/cached.bin")), env).exit_code == 0);
  REQUIRE(server.fills_completed(1));
  const int gets_before = origin.gets("/cached.bin");

  const auto both = d.sh("curl -fsS -o a.bin " + quoted(origin.url("/cached.bin")) + " -o b.bin " +
                             quoted(origin.url("/cold.bin")) + " -O " + quoted("ftp://127.0.0.1:1/x"),
                         env);
  CHECK(both.exit_code != 0); // the ftp:// URL fails, after the others ran
  CHECK(d.work_file("a.bin") == cached_body);
  CHECK(d.work_file("b.bin") == "cold bytes");
  CHECK(origin.gets("/cached.bin") == gets_before); // served by the cache
  CHECK(server.metric("withcache_hits_total") == 1);
  // The ftp:// URL was not probed; the two http ones were, once each (a miss records one).
  CHECK(server.metric("withcache_misses_total") == 2); // warm's first miss and cold.bin's
}
