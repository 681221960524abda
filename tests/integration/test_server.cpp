// withcache-server as a real process on 127.0.0.1, an origin on 127.0.0.1,
// driven with the real curl and wget.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "support/origin.hpp"
#include "support/process.hpp"
#include "support/server_process.hpp"
#include "support/temp_dir.hpp"
#include "withcache/digest.hpp"
#include "withcache/url.hpp"

namespace fs = std::filesystem;
using namespace withcache;
using namespace std::chrono_literals;
using test::Origin;
using test::Route;

namespace {

using test::curl;
using test::ServerProcess;

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

} // namespace

TEST_CASE("miss, auto-fill, then hit with exact bytes and sha headers", "[server]") {
  Origin origin;
  const std::string body = test::make_bytes(3 * 1024 * 1024 + 5, 21);
  origin.add("/cuda_12.4.run", Route(body, "application/x-sh"));
  ServerProcess server;
  const std::string origin_url = origin.url("/cuda_12.4.run");

  auto miss = curl(server.blob(origin_url));
  CHECK(miss.status == 404);
  CHECK(miss.body == "cache miss (recorded)\n");
  CHECK(miss.headers["server"].starts_with("withcache/"));
  REQUIRE(server.fills_completed(1));

  auto hit = curl(server.blob(origin_url));
  CHECK(hit.status == 200);
  CHECK(hit.body == body);
  const std::string sha = digest::sha256_hex(body);
  CHECK(hit.headers["x-withcache-sha256"] == sha);
  CHECK(hit.headers["etag"] == "\"" + sha + "\"");
  CHECK(hit.headers["content-type"] == "application/x-sh");
  CHECK(hit.headers["content-length"] == std::to_string(body.size()));
  CHECK(hit.headers["accept-ranges"] == "bytes");
  CHECK(hit.headers["cache-control"] == "public, max-age=31536000, immutable");
  CHECK(hit.headers.count("last-modified") == 1);
  CHECK(origin.gets("/cuda_12.4.run") == 1);
  CHECK(server.metric("withcache_hits_total") == 1);
  CHECK(server.metric("withcache_misses_total") == 1);
  CHECK(server.metric("withcache_artifacts") == 1);
  CHECK(server.metric("withcache_stored_bytes") == static_cast<double>(body.size()));

  // /blob?url= is the same lookup; the <name> part is ignored; padded tokens work.
  auto by_query = curl(server.base() + "/blob", {"-G", "--data-urlencode", "url=" + origin_url});
  CHECK(by_query.status == 200);
  CHECK(by_query.body == body);
  const std::string token = url::encode_token(origin_url);
  std::string padded = token;
  while (padded.size() % 4 != 0) {
    padded += '=';
  }
  CHECK(curl(server.base() + "/b/" + padded + "/whatever.bin").body == body);
  CHECK(curl(server.base() + "/b/" + token).status == 200);

  // Scheme and host are case-insensitive; userinfo and fragments do not matter.
  const std::string shouting = "HTTP://127.0.0.1:" + std::to_string(origin.port()) + "/cuda_12.4.run#frag";
  CHECK(curl(server.blob(shouting)).status == 200);
  CHECK(origin.gets("/cuda_12.4.run") == 1);

  // The access log names the artifact by a short key id, never the token or the origin URL, and
  // escapes control characters a path could use to forge a line.
  const std::string log_before = server.log();
  CHECK(log_before.find(token) == std::string::npos);
  CHECK(log_before.find(token.substr(0, 12)) == std::string::npos);
  CHECK(log_before.find("/b/[" + url::key_id(origin_url)->substr(0, 12) + "]/cuda_12.4.run 200") !=
        std::string::npos);
  CHECK(curl(server.base() + "/ui/x%0d%0a2026-01-01T00:00:00.000Z%20info%20FORGED%1b%5B31m").status == 404);
  REQUIRE(test::eventually([&] { return server.log().find("FORGED") != std::string::npos; }));
  const std::string log = server.log();
  CHECK(log.find("\n2026-01-01T00:00:00.000Z info FORGED") == std::string::npos);
  CHECK(log.find(R"(\x0d\x0a2026-01-01T00:00:00.000Z info FORGED\x1b[31m)") != std::string::npos);
}

TEST_CASE("the query string is dropped from the key unless keep-query", "[server]") {
  Origin origin;
  origin.add("/q.bin", Route(test::make_bytes(1000, 22)));
  {
    ServerProcess server;
    CHECK(curl(server.blob(origin.url("/q.bin?token=one"))).status == 404);
    REQUIRE(server.fills_completed(1));
    CHECK(curl(server.blob(origin.url("/q.bin?token=two"))).status == 200);
    CHECK(curl(server.blob(origin.url("/q.bin"))).status == 200);
    // The log never shows the origin's query (presigned tokens).
    CHECK(server.log().find("token=one") == std::string::npos);
  }
  ServerProcess keep({"--keep-query"});
  CHECK(curl(keep.blob(origin.url("/q.bin?a=1"))).status == 404);
  REQUIRE(keep.fills_completed(1));
  CHECK(curl(keep.blob(origin.url("/q.bin?a=1"))).status == 200);
  CHECK(curl(keep.blob(origin.url("/q.bin?a=2"))).status == 404);
}

TEST_CASE("the server reads only the token: the name and a query on the cache URL change nothing",
          "[server]") {
  // SPEC §2: blob_url() repeats the origin's name byte for byte and its query, so curl and wget name
  // files as from the origin; withcache 0.3's clients send a percent-quoted name and no query.
  Origin origin;
  const std::string body = test::make_bytes(5000, 23);
  origin.add("/dir/a+b(1),v=2.tar", Route(body));
  ServerProcess server;
  const std::string origin_url = origin.url("/dir/a+b(1),v=2.tar?sig=abc&url=http://elsewhere.example/x");
  const std::string cache_url = server.blob(origin_url);
  CHECK(cache_url.ends_with("/a+b(1),v=2.tar?sig=abc&url=http://elsewhere.example/x"));

  CHECK(curl(cache_url).status == 404);
  REQUIRE(server.fills_completed(1));
  const auto hit = curl(cache_url);
  CHECK(hit.status == 200);
  CHECK(hit.body == body);
  CHECK(curl(cache_url, {"-I"}).status == 200);

  const std::string token = url::encode_token(origin_url);
  const std::string base = server.base() + "/b/" + token;
  // withcache 0.3's form: the quoted name, no query.
  const auto old_form = curl(base + "/a%2Bb%281%29%2Cv%3D2.tar");
  CHECK(old_form.status == 200);
  CHECK(old_form.body == body);
  // No name at all, another name, another query: the same artifact.
  CHECK(curl(base).body == body);
  CHECK(curl(base + "/other.bin?url=" + origin.url("/missing")).body == body);
  CHECK(curl(base + "/x?" + std::string(4000, 'q')).status == 200);
  CHECK(server.metric("withcache_misses_total") == 1);
  // The query a cache URL carries is never logged (it may hold a signature).
  CHECK(server.log().find("sig=abc") == std::string::npos);
}

TEST_CASE("curate mode records misses but does not fill", "[server]") {
  Origin origin;
  origin.add("/c.bin", Route("curated"));
  ServerProcess server({"--curate"});
  CHECK(curl(server.blob(origin.url("/c.bin"))).status == 404);
  CHECK(curl(server.blob(origin.url("/c.bin"))).status == 404);
  CHECK(server.metric("withcache_misses_total") == 2);
  // A fill would have been queued inside the request; none was.
  CHECK(server.metric("withcache_queue_depth") == 0);
  CHECK(server.metric("withcache_downloads_running") == 0);
  CHECK(server.metric("withcache_fills_total{outcome=\"completed\"}") == 0);
  CHECK(origin.gets("/c.bin") == 0);
}

TEST_CASE("a max-bytes cap stops new fills", "[server]") {
  Origin origin;
  origin.add("/fits.bin", Route(test::make_bytes(100 * 1024, 23)));
  origin.add("/over.bin", Route(test::make_bytes(10, 24)));
  ServerProcess server({"--max-bytes", "100K"});
  CHECK(server.metric("withcache_capacity_bytes") == 100 * 1024);
  CHECK(curl(server.blob(origin.url("/fits.bin"))).status == 404);
  REQUIRE(server.fills_completed(1));
  CHECK(curl(server.blob(origin.url("/over.bin"))).status == 404);
  CHECK(server.metric("withcache_queue_depth") == 0);
  CHECK(server.metric("withcache_downloads_running") == 0);
  CHECK(origin.gets("/over.bin") == 0);
  CHECK(curl(server.blob(origin.url("/fits.bin"))).status == 200);
}

TEST_CASE("ranges, conditional requests and HEAD", "[server]") {
  Origin origin;
  const std::string body = test::make_bytes(10'000, 25);
  origin.add("/r.bin", Route(body));
  ServerProcess server;
  const std::string blob = server.blob(origin.url("/r.bin"));
  curl(blob);
  REQUIRE(server.fills_completed(1));
  const std::string sha = digest::sha256_hex(body);

  auto suffix = curl(blob, {"-H", "Range: bytes=-100"});
  CHECK(suffix.status == 206);
  CHECK(suffix.body == body.substr(body.size() - 100));
  CHECK(suffix.headers["content-range"] == "bytes 9900-9999/10000");

  auto from = curl(blob, {"-H", "Range: bytes=5-"});
  CHECK(from.status == 206);
  CHECK(from.body == body.substr(5));

  auto middle = curl(blob, {"-H", "Range: bytes=10-19"});
  CHECK(middle.status == 206);
  CHECK(middle.body == body.substr(10, 10));

  auto unsatisfiable = curl(blob, {"-H", "Range: bytes=10000-"});
  CHECK(unsatisfiable.status == 416);
  CHECK(unsatisfiable.headers["content-range"] == "bytes */10000");

  auto several = curl(blob, {"-H", "Range: bytes=0-1,5-6"});
  CHECK(several.status == 200); // several ranges: the whole representation
  CHECK(several.body == body);

  auto not_modified = curl(blob, {"-H", "If-None-Match: \"" + sha + "\""});
  CHECK(not_modified.status == 304);
  CHECK(not_modified.body.empty());
  CHECK(curl(blob, {"-H", "If-None-Match: \"other\""}).status == 200);

  auto if_range_ok = curl(blob, {"-H", "Range: bytes=5-", "-H", "If-Range: \"" + sha + "\""});
  CHECK(if_range_ok.status == 206);
  auto if_range_stale = curl(blob, {"-H", "Range: bytes=5-", "-H", "If-Range: \"stale\""});
  CHECK(if_range_stale.status == 200);
  CHECK(if_range_stale.body == body);

  const double hits = server.metric("withcache_hits_total");
  auto head = curl(blob, {"-I"}); // curl -I writes the headers where the body would go
  CHECK(head.status == 200);
  CHECK(head.headers["content-length"] == "10000");
  CHECK(head.headers["x-withcache-sha256"] == sha);
  httplib::Client client("127.0.0.1", server.port());
  const auto raw_head = client.Head(blob.substr(server.base().size()));
  REQUIRE(raw_head);
  CHECK(raw_head->status == 200);
  CHECK(raw_head->body.empty());
  CHECK(server.metric("withcache_hits_total") == hits); // HEAD is not a hit
}

TEST_CASE("curl -C - and wget -c resume a partial file from the cache", "[server]") {
  Origin origin;
  const std::string body = test::make_bytes(2 * 1024 * 1024 + 3, 26);
  origin.add("/resume.iso", Route(body));
  ServerProcess server;
  const std::string blob = server.blob(origin.url("/resume.iso"));
  curl(blob);
  REQUIRE(server.fills_completed(1));

  test::TempDir tmp;
  write_file(tmp / "curl.iso", body.substr(0, 700'000));
  const auto c = test::run({"curl", "-sS", "-f", "-C", "-", "-o", (tmp / "curl.iso").string(), blob});
  CHECK(c.exit_code == 0);
  CHECK(digest::sha256_hex(test::slurp(tmp / "curl.iso")) == digest::sha256_hex(body));

  write_file(tmp / "resume.iso", body.substr(0, 1'234'567));
  const auto w = test::run({"wget", "-q", "-c", "-O", (tmp / "resume.iso").string(), blob});
  CHECK(w.exit_code == 0);
  CHECK(digest::sha256_hex(test::slurp(tmp / "resume.iso")) == digest::sha256_hex(body));

  // Plain wget names the file after the artifact.
  const auto named = test::run(
      {"sh", "-c",
       "cd '" + tmp.path().string() + "' && mkdir plain && cd plain && wget -q '" + blob + "' && ls"});
  CHECK(named.exit_code == 0);
  CHECK(named.out == "resume.iso\n");
}

TEST_CASE("200 concurrent HEADs on one missing URL make one origin GET", "[server]") {
  Origin origin;
  Route slow(test::make_bytes(512 * 1024, 27));
  slow.chunk_delay = 5ms;
  origin.add("/popular.bin", slow);
  ServerProcess server;
  const std::string token = url::encode_token(origin.url("/popular.bin"));
  std::vector<std::thread> threads;
  std::atomic<int> answered{0};
  for (int t = 0; t < 20; ++t) {
    threads.emplace_back([&] {
      httplib::Client client("127.0.0.1", server.port());
      for (int i = 0; i < 10; ++i) {
        const auto res = client.Head("/b/" + token + "/popular.bin");
        if (res && (res->status == 404 || res->status == 200)) {
          ++answered;
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  CHECK(answered == 200);
  REQUIRE(server.fills_completed(1));
  CHECK(origin.gets("/popular.bin") == 1);
}

TEST_CASE("malformed requests get 4xx and the server keeps serving", "[server]") {
  Origin origin;
  origin.add("/ok.bin", Route("fine"));
  ServerProcess server;
  const std::string base = server.base();
  struct Case {
    std::string path;
    int status;
  };
  const std::vector<Case> cases = {
      {"/b/ab*c/x", 400},                                 // not base64url
      {"/b/YQ=/x", 400},                                  // padded wrong
      {"/b/" + std::string(100 * 1024, 'A') + "/x", 414}, // 100 KiB token
      {"/b/_w/x", 400},                                   // not UTF-8
      {"/b//x", 400},                                     // empty token
      {"/b/" + url::encode_token("file:///etc/passwd") + "/passwd", 400},
      {"/b/" + url::encode_token("ftp://127.0.0.1/x") + "/x", 400},
      {"/b/" + url::encode_token("https://h/a b") + "/x", 400},
      {"/blob", 400},
      {"/blob?url=", 400},
  };
  for (const auto& c : cases) {
    INFO(c.path.substr(0, 80));
    const auto r = curl(base + c.path);
    if (c.status == 414) {
      CHECK(r.status >= 400);
      CHECK(r.status < 500);
    } else {
      CHECK(r.status == c.status);
      CHECK(r.body.find('\n') == r.body.size() - 1); // one line
    }
  }
  CHECK(server.metric("withcache_misses_total") == 0);
  CHECK(server.metric("withcache_queue_depth") == 0);
  CHECK(server.metric("withcache_fills_total{outcome=\"failed\"}") == 0);
  CHECK(curl(base + "/healthz").body == "ok\n");
  CHECK(curl(server.blob(origin.url("/ok.bin"))).status == 404);
  REQUIRE(server.fills_completed(1));
  CHECK(curl(server.blob(origin.url("/ok.bin"))).body == "fine");
}

TEST_CASE("a restart keeps artifacts", "[server]") {
  Origin origin;
  const std::string body = test::make_bytes(300'000, 28);
  origin.add("/keep.tgz", Route(body));
  ServerProcess server;
  curl(server.blob(origin.url("/keep.tgz")));
  REQUIRE(server.fills_completed(1));
  server.restart();
  const auto hit = curl(server.blob(origin.url("/keep.tgz")));
  CHECK(hit.status == 200);
  CHECK(hit.body == body);
  CHECK(origin.gets("/keep.tgz") == 1);
}

TEST_CASE("SIGTERM during a fill, then a restart completes it with the right sha", "[server]") {
  Origin origin;
  const std::string body = test::make_bytes(6 * 1024 * 1024, 29);
  Route slow(body);
  slow.chunk_delay = 10ms;
  origin.add("/slow.run", slow);
  ServerProcess server;
  const std::string blob = server.blob(origin.url("/slow.run"));
  CHECK(curl(blob).status == 404);
  const auto part = server.dir() / "data" / "tmp" / (*url::key_id(origin.url("/slow.run")) + ".part");
  REQUIRE(test::eventually([&] {
    std::error_code ec;
    return fs::file_size(part, ec) >= 2 * 1024 * 1024 && !ec;
  }));
  const auto started = std::chrono::steady_clock::now();
  const int status = server.stop(SIGTERM);
  CHECK(std::chrono::steady_clock::now() - started < 10s);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(fs::exists(part));

  slow.chunk_delay = 0ms;
  origin.add("/slow.run", slow);
  server.start(); // on a new port
  REQUIRE(server.fills_completed(1));
  auto hit = curl(server.blob(origin.url("/slow.run")));
  CHECK(hit.status == 200);
  CHECK(hit.headers["x-withcache-sha256"] == digest::sha256_hex(body));
  CHECK(digest::sha256_hex(hit.body) == digest::sha256_hex(body));
  const auto ranges = origin.ranges("/slow.run");
  REQUIRE(ranges.size() == 2);
  CHECK(ranges[1].starts_with("bytes="));
}

TEST_CASE("bad options are one-line errors with exit status 2", "[server]") {
  test::TempDir tmp;
  write_file(tmp / "file", "not a directory");
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  test::Process holder({WITHCACHE_SERVER, "--host", "127.0.0.1", "--port", "0", "--data-dir",
                        (tmp / "busy").string()},
                       {}, tmp / "holder.log");
  const int busy_port = test::bound_port(tmp / "holder.log");
  REQUIRE(busy_port > 0);
  REQUIRE(test::wait_until_healthy(busy_port));
  const std::vector<Case> cases = {
      {{"--no-such-option"}, "no-such-option"},
      {{"--max-bytes", "lots"}, "invalid size 'lots'"},
      {{"--port", "70000"}, "--port"},
      {{"--workers", "0"}, "--workers"},
      {{"--log-level", "loud"}, "--log-level"},
      {{"--keep-query", "--drop-query"}, "--keep-query and --drop-query cannot be used together"},
      {{"--query-drop", "a=b"}, "--query-drop: 'a=b' is not a query parameter name"},
      {{"--max-age", "5w"}, "--max-age: invalid duration '5w'"},
      {{"--max-age", "0"}, "--max-age must be at least 1s"},
      {{"--min-rate", "fast"}, "--min-rate: invalid size 'fast'"},
      {{"--data-dir", (tmp / "file" / "data").string()}, "cannot create"},
      {{"--host", "127.0.0.1", "--port", std::to_string(busy_port), "--data-dir", (tmp / "d2").string()},
       "cannot listen on 127.0.0.1:" + std::to_string(busy_port)},
      // One server per data dir: the second names the first.
      {{"--host", "127.0.0.1", "--port", "0", "--data-dir", (tmp / "busy").string()},
       "data dir " + (tmp / "busy").string() + " is in use by another withcache-server (pid " +
           std::to_string(holder.pid()) + ")"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> argv = {WITHCACHE_SERVER};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    const auto r = test::run(argv, {}, 30s);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(c.message) != std::string::npos);
    CHECK(r.err.starts_with("withcache-server: "));
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
}
