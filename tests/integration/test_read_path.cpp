// What the cache serves is exactly what the origin would have served, seen from a client of the real
// withcache-server: the query in the key, safe blob headers, reasons in 404 bodies, stale hits that
// revalidate, and a server that never fills from itself.
#include <catch2/catch.hpp>

#include "support/origin.hpp"
#include "support/process.hpp"
#include "support/server_process.hpp"
#include "withcache/digest.hpp"
#include "withcache/url.hpp"

using namespace withcache;
using namespace std::chrono_literals;
using test::curl;
using test::Origin;
using test::Route;
using test::ServerProcess;

namespace {

// Asks once (the miss queues a fill) and waits until the URL is served.
void fill(const ServerProcess& server, const std::string& origin_url) {
  const std::string blob = server.blob(origin_url);
  curl(blob, {"-I"});
  REQUIRE(test::eventually([&] { return curl(blob, {"-I"}).status == 200; }));
}

// The 404 body once the fill of `origin_url` has ended with a reason.
std::string reason_body(const ServerProcess& server, const std::string& origin_url) {
  const std::string blob = server.blob(origin_url);
  std::string body;
  test::eventually([&] {
    body = curl(blob).body;
    return body.starts_with("cache miss (recorded; ");
  });
  return body;
}

} // namespace

TEST_CASE("case 1: the query is in the key, so asking first cannot poison another URL", "[read-path][query]") {
  Origin origin;
  const std::string evil = test::make_bytes(20'000, 101);
  const std::string driver = test::make_bytes(30'000, 102);
  origin.add("/download?file=evil.iso", Route(evil));
  origin.add("/download?file=driver.run", Route(driver));
  origin.add("/signed.run", Route(test::make_bytes(5000, 103)));
  ServerProcess server;

  fill(server, origin.url("/download?file=evil.iso")); // the attacker asks first
  CHECK(curl(server.blob(origin.url("/download?file=driver.run"))).status == 404);
  fill(server, origin.url("/download?file=driver.run"));
  CHECK(curl(server.blob(origin.url("/download?file=driver.run"))).body == driver);
  CHECK(curl(server.blob(origin.url("/download?file=evil.iso"))).body == evil);

  // Signing parameters are not part of the key: a presigned URL matches by its path.
  fill(server, origin.url("/signed.run?X-Amz-Signature=first&X-Amz-Expires=60"));
  CHECK(curl(server.blob(origin.url("/signed.run?X-Amz-Signature=second&X-Amz-Expires=60"))).status == 200);
  CHECK(origin.gets("/signed.run") == 1);
}

TEST_CASE("case 4: blob responses cannot run as the UI's origin", "[read-path][headers]") {
  Origin origin;
  Route page("<html><script>fetch('/api/v1/events')</script></html>", "text/html");
  Route inline_svg("<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "image/svg+xml");
  inline_svg.headers = {{"Content-Disposition", "inline; filename=\"logo.svg\""}};
  origin.add("/page.html", page);
  origin.add("/logo.svg", inline_svg);
  ServerProcess server({"--cache-html"});
  fill(server, origin.url("/page.html"));
  fill(server, origin.url("/logo.svg"));

  auto html = curl(server.blob(origin.url("/page.html")));
  CHECK(html.status == 200);
  CHECK(html.headers["x-content-type-options"] == "nosniff");
  CHECK(html.headers["content-security-policy"] == "sandbox; default-src 'none'");
  CHECK(html.headers["content-disposition"] == "attachment"); // the origin sent none
  auto svg = curl(server.blob(origin.url("/logo.svg")));
  CHECK(svg.headers["content-disposition"] == "inline; filename=\"logo.svg\""); // the origin's own
  CHECK(svg.headers["content-security-policy"] == "sandbox; default-src 'none'");
  // Every kind of blob answer carries them: 304, 416 and HEAD too.
  const std::string etag = html.headers["etag"];
  for (auto r : {curl(server.blob(origin.url("/page.html")), {"-H", "If-None-Match: " + etag}),
                 curl(server.blob(origin.url("/page.html")), {"-H", "Range: bytes=999999-"}),
                 curl(server.blob(origin.url("/page.html")), {"-I"})}) {
    INFO(r.status);
    CHECK(r.headers["content-security-policy"] == "sandbox; default-src 'none'");
    CHECK(r.headers["x-content-type-options"] == "nosniff");
  }
}

TEST_CASE("case 6 and 7: what is not stored says why, and a failure is not fetched again at once",
          "[read-path][reasons]") {
  Origin origin;
  Route secret("session data");
  secret.headers = {{"Cache-Control", "no-store"}};
  origin.add("/no-store.bin", secret);
  origin.add("/login.html", Route("<html>please log in</html>", "text/html"));
  origin.add("/gone.iso", Route::error(404));
  ServerProcess server;

  CHECK(curl(server.blob(origin.url("/no-store.bin"))).body == "cache miss (recorded)\n");
  CHECK(reason_body(server, origin.url("/no-store.bin")) ==
        "cache miss (recorded; not stored: origin marked it no-store)\n");
  CHECK(reason_body(server, origin.url("/login.html")).starts_with("cache miss (recorded; not stored: "));
  CHECK(reason_body(server, origin.url("/gone.iso")) ==
        "cache miss (recorded; not fetched: origin answered HTTP 404)\n");

  // The negative cache: more probes do not reach the origin again.
  const int gets = origin.gets("/gone.iso");
  for (int i = 0; i < 20; ++i) {
    CHECK(curl(server.blob(origin.url("/gone.iso")), {"-I"}).status == 404);
  }
  CHECK(origin.gets("/gone.iso") == gets);

  // The reason is on the miss in the API, and an operator's Download clears the back-off.
  const auto misses = curl(server.base() + "/api/v1/misses?q=gone");
  CHECK(misses.body.find("\"last_reason\":\"not fetched: origin answered HTTP 404\"") != std::string::npos);
  CHECK(misses.body.find("\"retry_after\":\"") != std::string::npos);
  origin.add("/gone.iso", Route(test::make_bytes(4096, 104)));
  const auto queued = curl(server.base() + "/api/v1/downloads",
                           {"-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                            "{\"url\": \"" + origin.url("/gone.iso") + "\"}"});
  CHECK(queued.status == 202);
  REQUIRE(test::eventually([&] { return curl(server.blob(origin.url("/gone.iso")), {"-I"}).status == 200; }));
}

TEST_CASE("case 5: a stale hit is served and revalidated, immutable only when it is",
          "[read-path][freshness]") {
  Origin origin;
  Route latest("version 1");
  latest.etag = "\"v1\"";
  latest.headers = {{"Cache-Control", "max-age=2"}};
  origin.add("/latest.txt", latest);
  origin.add("/versioned-1.2.3.tgz", Route(test::make_bytes(1000, 105)));
  ServerProcess server;
  fill(server, origin.url("/latest.txt"));
  fill(server, origin.url("/versioned-1.2.3.tgz"));
  const std::string blob = server.blob(origin.url("/latest.txt"));

  auto fresh = curl(blob);
  CHECK(fresh.body == "version 1");
  CHECK(fresh.headers["cache-control"].starts_with("public, max-age="));
  CHECK(fresh.headers["cache-control"].find("immutable") == std::string::npos);
  CHECK(curl(server.blob(origin.url("/versioned-1.2.3.tgz"))).headers["cache-control"] ==
        "public, max-age=31536000, immutable");

  // The origin moves on; once stale, a hit still answers at once from the cache and queues one
  // conditional fill, after which the new version is served.
  Route v2("version 2 is longer");
  v2.etag = "\"v2\"";
  v2.headers = {{"Cache-Control", "max-age=2"}};
  origin.add("/latest.txt", v2);
  std::string body;
  REQUIRE(test::eventually(
      [&] {
        auto r = curl(blob);
        CHECK(r.status == 200); // never a miss while revalidating
        body = r.body;
        return body == "version 2 is longer";
      },
      30s));
  std::vector<test::Received> asked;
  for (const auto& r : origin.received()) {
    if (r.target == "/latest.txt") {
      asked.push_back(r);
    }
  }
  REQUIRE(asked.size() >= 2);
  CHECK(asked[1].header("If-None-Match") == "\"v1\"");
}

TEST_CASE("case 8: the server never fills from itself", "[read-path][self]") {
  ServerProcess server; // --allow-private 127.0.0.1, as every test server
  const std::string self = server.base() + "/metrics";
  CHECK(curl(server.blob(self)).status == 404);
  const std::string body = reason_body(server, self);
  CHECK(body.find("this server's own listening socket") != std::string::npos);
  CHECK(server.metric("withcache_artifacts") == 0);
}
