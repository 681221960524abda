// Issue 14, "the cache-host is safe to put on a lab network", through real HTTP against a real
// withcache-server: the login throttle against a spray, a fair fill queue under a flood, server-side
// sessions that end, no secret on display, credentials, the free-space guard and the start-up lines.
// (The SSRF cases run in a network namespace: test_origin_policy.py.)
#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <thread>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>

#include "support/origin.hpp"
#include "support/process.hpp"
#include "support/raw_client.hpp"
#include "support/server_process.hpp"
#include "withcache/url.hpp"

namespace fs = std::filesystem;
using namespace withcache;
using namespace std::chrono_literals;
using test::Origin;
using test::RawClient;
using test::Route;
using test::ServerProcess;

namespace {

const std::string k_password = "correct horse";

struct Reply {
  int status = 0;
  std::string head;
  std::string body;
  [[nodiscard]] std::string header(const std::string& name) const {
    const std::string key = "\r\n" + name + ": ";
    const std::size_t at = head.find(key);
    if (at == std::string::npos) {
      return {};
    }
    const std::size_t start = at + key.size();
    return head.substr(start, head.find("\r\n", start) - start);
  }
};

// One request on its own connection from source address `from` (any 127.x.y.z), read to the close.
Reply exchange(int port, const std::string& from, const std::string& request) {
  RawClient client(port, from.c_str());
  Reply reply;
  if (!client.connected() || !client.send(request)) {
    return reply;
  }
  const std::string received = client.read_until("", 30s);
  const std::size_t end = received.find("\r\n\r\n");
  if (!received.starts_with("HTTP/1.1 ") || end == std::string::npos) {
    return reply;
  }
  reply.status = std::stoi(received.substr(9, 3));
  reply.head = received.substr(0, end + 2);
  reply.body = received.substr(end + 4);
  return reply;
}

Reply get(int port, const std::string& from, const std::string& target, const std::string& extra = {}) {
  return exchange(port, from,
                  "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + "Connection: close\r\n\r\n");
}

Reply login(int port, const std::string& from, const std::string& password) {
  const std::string body = "password=" + password;
  return exchange(
      port, from,
      "POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
      "Content-Length: " +
          std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
}

// The /b/ target of an origin URL.
std::string blob_target(const std::string& origin) {
  return "/b/" + url::encode_token(origin) + "/" + url::basename_of(origin);
}

// 127.A.B.C for the n-th address of a block (never .0 or .255 in the last byte).
std::string address(int block, int n) {
  return "127." + std::to_string(block) + "." + std::to_string(n / 250) + "." + std::to_string(n % 250 + 1);
}

httplib::Client client_for(const ServerProcess& server) {
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(30s);
  return c;
}

std::string login_cookie(const ServerProcess& server) {
  auto c = client_for(server);
  const auto res = c.Post("/ui/login", httplib::Params{{"password", k_password}});
  REQUIRE(res);
  REQUIRE(res->status == 303);
  const std::string cookie = res->get_header_value("Set-Cookie");
  return cookie.substr(0, cookie.find(';'));
}

int page_status(const ServerProcess& server, const std::string& cookie) {
  const auto res = client_for(server).Get("/", httplib::Headers{{"Cookie", cookie}});
  REQUIRE(res);
  return res->status;
}

} // namespace

TEST_CASE("item 4: a spray of 10 001 addresses does not unlock a locked one", "[lab][throttle]") {
  ServerProcess server({}, {"WITHCACHE_ADMIN_PASSWORD=" + k_password});
  const int port = server.port();
  const std::string locked = "127.0.9.9";

  // Lock one address: six wrong passwords, each as soon as its pause allows, leave it waiting 4 s.
  for (int i = 0; i < 6; ++i) {
    INFO("failure " << i + 1);
    REQUIRE(test::eventually([&] { return login(port, locked, "guess").status == 401; }, 30s));
  }
  CHECK(login(port, locked, k_password).status == 429);

  // The spray: 10 001 other addresses, one wrong password each, four at a time.
  std::atomic<int> next{0};
  std::atomic<int> unauthorized{0};
  std::atomic<int> throttled{0};
  std::atomic<int> other{0};
  std::vector<std::thread> sprayers;
  for (int t = 0; t < 4; ++t) {
    sprayers.emplace_back([&] {
      for (int n = next++; n < 10'001; n = next++) {
        const int status = login(port, address(1, n), "spray").status;
        ++(status == 401 ? unauthorized : status == 429 ? throttled : other);
      }
    });
  }
  for (auto& t : sprayers) {
    t.join();
  }
  CHECK(unauthorized + throttled == 10'001);
  CHECK(other == 0);
  // The global budget paced the spray: most of it was refused before its password was even compared.
  CHECK(throttled > 9'000);

  // Right after it the locked address is still locked, even with the right password.
  const Reply after = login(port, locked, k_password);
  CHECK(after.status == 429);

  // And it was not forgotten: once its pause is over its next wrong password counts as its seventh,
  // so the one after that must wait the full 5 s (a forgotten address would get free guesses).
  REQUIRE(test::eventually([&] { return login(port, locked, "guess").status == 401; }, 30s));
  const Reply held = login(port, locked, "guess");
  CHECK(held.status == 429);
  CHECK(held.header("Retry-After") == "5");
}

TEST_CASE("item 5: a flood of 5 000 anonymous misses does not delay an operator's fill", "[lab][queue]") {
  Origin origin;
  // Flood targets: each fill takes about 2 s, so 1 000 queued would take ~17 min on two workers.
  Route slow(test::make_bytes(16 * 1024, 71));
  slow.chunk_size = 1024;
  slow.chunk_delay = 125ms;
  for (int i = 0; i < 5'100; ++i) {
    origin.add("/flood/" + std::to_string(i) + ".bin", slow);
  }
  const std::string wanted = test::make_bytes(2 * 1024 * 1024, 72);
  origin.add("/operator.iso", Route(wanted));
  ServerProcess server({"--workers", "2"});
  const int port = server.port();

  // One client alone is capped at 50 queued fills.
  int capped = 0;
  for (int i = 0; i < 60; ++i) {
    const Reply r =
        get(port, "127.0.3.1", blob_target(origin.url("/flood/" + std::to_string(5'000 + i) + ".bin")));
    REQUIRE(r.status == 404);
    if (r.body.find("not fetched: this client has 50 fills queued (--queue-max-per-client 50)") !=
        std::string::npos) {
      ++capped;
    }
  }
  CHECK(capped >= 5);

  // 5 000 misses from 125 addresses, 40 each, four connections at a time.
  std::atomic<int> next{0};
  std::atomic<int> queue_full{0};
  std::atomic<int> misses{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      for (int n = next++; n < 5'000; n = next++) {
        const Reply r =
            get(port, address(2, n % 125), blob_target(origin.url("/flood/" + std::to_string(n) + ".bin")));
        misses += r.status == 404 ? 1 : 0;
        if (r.body.find("not fetched: the fill queue is full") != std::string::npos) {
          ++queue_full;
        }
      }
    });
  }
  for (auto& t : readers) {
    t.join();
  }
  CHECK(misses == 5'000);
  CHECK(queue_full >= 3'500); // over the cap: counted, not queued
  CHECK(server.metric("withcache_misses_total") >= 5'060);
  CHECK(server.metric("withcache_queue_depth") <= 1'000);
  CHECK(server.metric("withcache_misses_not_queued_total{reason=\"queue_cap\"}") >= 3'500);

  // The operator adds a fill: it runs ahead of every automatic one and completes within 10 s.
  auto api = client_for(server);
  const auto started = std::chrono::steady_clock::now();
  const auto posted = api.Post("/api/v1/downloads", R"({"url": ")" + origin.url("/operator.iso") + R"("})",
                               "application/json");
  REQUIRE(posted);
  REQUIRE(posted->status == 202);
  const bool done = test::eventually(
      [&] { return test::curl(server.blob(origin.url("/operator.iso")), {"-I"}).status == 200; }, 10s);
  const auto took = std::chrono::steady_clock::now() - started;
  CHECK(done);
  INFO("the operator's fill took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                                   << " ms");
  CHECK(took < 10s);
  CHECK(test::curl(server.blob(origin.url("/operator.iso"))).body == wanted);

  // The Downloads page pages: a thousand queued fills are one page of 50, not a megabyte.
  const auto fragment = api.Get("/ui/downloads", httplib::Headers{{"HX-Request", "true"}});
  REQUIRE(fragment);
  CHECK(fragment->body.size() < 64 * 1024);
  CHECK(fragment->body.find(" of ") != std::string::npos);
  CHECK(test::count_of(fragment->body, "<tr data-status=") == 50);
  const auto filtered = api.Get("/ui/downloads?q=operator.iso");
  REQUIRE(filtered);
  CHECK(filtered->body.find("operator.iso") != std::string::npos);
  CHECK(filtered->body.find("/flood/") == std::string::npos);
  CHECK(filtered->body.find("name=\"q\"") != std::string::npos); // the filter box
  const auto second = api.Get("/api/v1/downloads?offset=50&limit=50");
  REQUIRE(second);
  CHECK(second->status == 200);
}

TEST_CASE("item 3: sessions end on logout, log out everywhere and a password change", "[lab][sessions]") {
  const std::vector<std::string> env = {"WITHCACHE_ADMIN_PASSWORD=" + k_password,
                                        "WITHCACHE_API_TOKEN=api-token"};
  ServerProcess server({}, env);
  auto c = client_for(server);

  // Logout revokes the session on the server: a copy of the cookie stops working too.
  const std::string copied = login_cookie(server);
  CHECK(page_status(server, copied) == 200);
  const auto out =
      c.Post("/ui/logout", httplib::Headers{{"Cookie", copied}}, "", "application/x-www-form-urlencoded");
  REQUIRE(out);
  CHECK(out->status == 303);
  CHECK(page_status(server, copied) == 303);
  CHECK(c.Get("/api/v1/stats", httplib::Headers{{"Cookie", copied}})->status == 401);

  // "Log out everywhere" (the button, a form action) ends every session, on every browser.
  const std::string laptop = login_cookie(server);
  const std::string desktop = login_cookie(server);
  const auto page = c.Get("/", httplib::Headers{{"Cookie", laptop}});
  CHECK(page->body.find("action=\"/ui/logout-everywhere\"") != std::string::npos);
  CHECK(page->body.find("Log out everywhere") != std::string::npos);
  CHECK(c.Post("/ui/logout-everywhere", "", "application/x-www-form-urlencoded")->status == 401);
  const auto everywhere = c.Post("/ui/logout-everywhere", httplib::Headers{{"Cookie", laptop}}, "",
                                 "application/x-www-form-urlencoded");
  REQUIRE(everywhere);
  CHECK(everywhere->status == 303);
  CHECK(everywhere->get_header_value("Set-Cookie").find("Max-Age=0") != std::string::npos);
  CHECK(page_status(server, laptop) == 303);
  CHECK(page_status(server, desktop) == 303);
  const auto events =
      c.Get("/api/v1/events?q=logout_everywhere", httplib::Headers{{"Authorization", "Bearer api-token"}});
  CHECK(events->body.find("2 sessions ended") != std::string::npos);

  // The API token can end them too (a cookie copied off a lost laptop).
  const std::string lost = login_cookie(server);
  const auto ended = c.Delete("/api/v1/sessions", httplib::Headers{{"Authorization", "Bearer api-token"}});
  REQUIRE(ended);
  CHECK(ended->status == 200);
  CHECK(ended->body == R"({"ended":1})");
  CHECK(page_status(server, lost) == 303);

  // A session survives a restart with the same password, not one with another.
  const std::string kept = login_cookie(server);
  server.restart();
  CHECK(page_status(server, kept) == 200);
  server.restart({"WITHCACHE_ADMIN_PASSWORD=another password", "WITHCACHE_API_TOKEN=api-token"});
  CHECK(page_status(server, kept) == 303);
  CHECK(server.log().find("sessions revoked") != std::string::npos);
  server.restart(env); // changing it back does not bring it back
  CHECK(page_status(server, kept) == 303);

  // Sessions are rows holding a hash of the id, never the id; expired ones are purged at start.
  const std::string fresh = login_cookie(server);
  server.stop();
  const fs::path db = server.dir() / "data" / "cache.db";
  {
    SQLite::Database sql(db.string(), SQLite::OPEN_READWRITE);
    sql.exec("INSERT INTO sessions (id_hash, user, created_at, expires_at, address) VALUES ('stale', "
             "'admin', 1, 2, '')");
    SQLite::Statement rows(sql, "SELECT id_hash FROM sessions");
    int n = 0;
    while (rows.executeStep()) {
      ++n;
      CHECK(fresh.find(rows.getColumn(0).getString()) == std::string::npos);
    }
    CHECK(n == 2);
    SQLite::Statement settings(sql, "SELECT value FROM settings");
    while (settings.executeStep()) {
      CHECK(settings.getColumn(0).getString().find(k_password) == std::string::npos);
    }
  }
  server.start();
  CHECK(page_status(server, fresh) == 200);
  server.stop();
  {
    SQLite::Database sql(db.string(), SQLite::OPEN_READONLY);
    CHECK(sql.execAndGet("SELECT count(*) FROM sessions WHERE id_hash = 'stale'").getInt() == 0);
    CHECK(sql.execAndGet("SELECT count(*) FROM sessions").getInt() == 1);
  }
}

TEST_CASE("item 6: a presigned URL's signature never appears in the API, the UI, events or the log",
          "[lab][redaction]") {
  Origin origin;
  const std::string body = test::make_bytes(50'000, 73);
  const std::string query = "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIASECRETCRED%2F20240101&"
                            "X-Amz-Signature=5ec12e7519a7u12e&file=linux.run";
  // Only the exact signed URL is served: the stored raw URL must still fetch with its signature.
  origin.add("/signed/driver.run" + query, Route(body));
  origin.add("/signed/driver.run", Route::error(403));
  origin.add("/signed/later.run" + std::string("?token=T0KENSECRET&v=2"), Route(body));
  origin.add("/signed/later.run", Route::error(403));
  ServerProcess server({"--log-level", "debug"});
  auto c = client_for(server);
  const std::string signed_url = origin.url("/signed/driver.run" + query);
  const std::string pw_url =
      "http://alice:PASSW0RDSECRET@127.0.0.1:" + std::to_string(origin.port()) + "/signed/x.bin";

  CHECK(test::curl(server.blob(signed_url)).status == 404); // the miss fills it
  REQUIRE(server.fills_completed(1));
  CHECK(test::curl(server.blob(signed_url)).body == body);
  CHECK(test::curl(server.blob(pw_url)).status == 404);
  CHECK(test::curl(server.base() + "/blob?url=" + httplib::detail::encode_query_param(signed_url)).status ==
        200);

  // A curated server keeps the miss for the operator: its Download names the key, not the URL.
  ServerProcess curated({"--curate", "--log-level", "debug"});
  auto cc = client_for(curated);
  const std::string later = origin.url("/signed/later.run?token=T0KENSECRET&v=2");
  CHECK(test::curl(curated.blob(later)).status == 404);
  const auto misses_page = cc.Get("/ui/misses");
  REQUIRE(misses_page);
  CHECK(misses_page->body.find("name=\"key\" value=\"" + *url::key_id(later) + "\"") != std::string::npos);
  CHECK(misses_page->body.find("token=\xE2\x80\xA6&amp;v=2") != std::string::npos); // name kept, value not
  const auto fetched = cc.Post("/admin/fetch", httplib::Params{{"key", *url::key_id(later)}});
  REQUIRE(fetched);
  CHECK(fetched->status == 303);
  REQUIRE(curated.fills_completed(1)); // the stored URL, signature and all, fetched
  // Scripts do the same through the API, which shows them only redacted URLs.
  const std::string third = origin.url("/signed/driver.run" + query);
  CHECK(test::curl(curated.blob(third)).status == 404);
  const auto by_key =
      cc.Post("/api/v1/downloads", R"({"key": ")" + *url::key_id(third) + R"("})", "application/json");
  REQUIRE(by_key);
  CHECK(by_key->status == 202);
  REQUIRE(curated.fills_completed(2));
  CHECK(cc.Post("/api/v1/downloads", R"({"key": ")" + std::string(64, 'f') + R"("})", "application/json")
            ->status == 404);
  CHECK(cc.Post("/api/v1/downloads", R"({"key": "k", "url": "http://h/x"})", "application/json")->status ==
        400);

  std::string shown;
  for (auto* s : {&server, &curated}) {
    auto sc = client_for(*s);
    for (const char* path : {"/api/v1/artifacts", "/api/v1/misses", "/api/v1/downloads", "/api/v1/events",
                             "/ui/artifacts", "/ui/misses", "/ui/downloads", "/ui/events", "/", "/metrics"}) {
      const auto res = sc.Get(path);
      REQUIRE(res);
      shown += res->body;
    }
    shown += s->log();
  }
  CHECK(shown.find("X-Amz-Signature=\xE2\x80\xA6") != std::string::npos);
  CHECK(shown.find("X-Amz-Credential=\xE2\x80\xA6") != std::string::npos);
  CHECK(shown.find("file=linux.run") != std::string::npos); // other parameters stay readable
  for (const char* secret :
       {"5ec12e7519a7u12e", "AKIASECRETCRED", "T0KENSECRET", "PASSW0RDSECRET", "alice"}) {
    INFO(secret);
    CHECK(shown.find(secret) == std::string::npos);
  }
}

TEST_CASE("item 2: credentials in a miss are used only with --forward-auth", "[lab][credentials]") {
  Origin origin;
  Route secret("private bytes");
  secret.require_authorization = "Basic YWxpY2U6cHc="; // alice:pw
  origin.add("/private.bin", secret);
  Route bearer("vendor bytes");
  bearer.require_authorization = "Bearer vendor-token";
  origin.add("/vendor.bin", bearer);
  const std::string with_userinfo =
      "http://alice:pw@127.0.0.1:" + std::to_string(origin.port()) + "/private.bin";

  ServerProcess server;
  auto miss = test::curl(server.blob(with_userinfo));
  CHECK(miss.status == 404);
  CHECK(miss.body == "cache miss (recorded; not fetched: carries credentials)\n");
  auto header =
      test::curl(server.blob(origin.url("/vendor.bin")), {"-H", "Authorization: Bearer vendor-token"});
  CHECK(header.status == 404);
  CHECK(header.body == "cache miss (recorded; not fetched: carries credentials)\n");
  CHECK(origin.requests() == 0); // nothing was fetched
  auto c = client_for(server);
  const auto misses = c.Get("/api/v1/misses")->body;
  CHECK(test::count_of(misses, "not fetched: carries credentials") == 2);
  CHECK(server.metric("withcache_misses_not_queued_total{reason=\"credentials\"}") == 2);
  CHECK(test::count_of(server.log(), "not fetching") == 2);
  test::curl(server.blob(with_userinfo)); // asked again: logged once per URL
  CHECK(test::count_of(server.log(), "not fetching") == 2);

  // The operator adds gated artifacts with their headers (and userinfo) as before.
  const auto added = c.Post("/api/v1/downloads",
                            R"({"url": ")" + origin.url("/vendor.bin") +
                                R"(", "headers": {"Authorization": "Bearer vendor-token"}})",
                            "application/json");
  CHECK(added->status == 202);
  CHECK(c.Post("/admin/fetch", httplib::Params{{"url", with_userinfo}})->status == 303);
  REQUIRE(server.fills_completed(2));

  // With --forward-auth the reader's credentials go into the fill.
  ServerProcess forwarding({"--forward-auth"});
  CHECK(forwarding.log().find(
            "--forward-auth: bytes fetched with a client's credentials are served to everyone") !=
        std::string::npos);
  CHECK(test::curl(forwarding.blob(with_userinfo)).body == "cache miss (recorded)\n");
  test::curl(forwarding.blob(origin.url("/vendor.bin")), {"-H", "Authorization: Bearer vendor-token"});
  REQUIRE(forwarding.fills_completed(2));
}

TEST_CASE("item 5: --min-free refuses fills that would leave too little free space", "[lab][disk]") {
  Origin origin;
  origin.add("/big.iso", Route(test::make_bytes(10'000, 74)));
  ServerProcess server({"--min-free", "1000T"}); // more than any disk here has
  auto miss = test::curl(server.blob(origin.url("/big.iso")));
  CHECK(miss.status == 404);
  CHECK(miss.body.starts_with("cache miss (recorded; not fetched: not enough free space: "));
  CHECK(miss.body.find("--min-free keeps") != std::string::npos);
  CHECK(origin.requests() == 0);
  CHECK(server.metric("withcache_misses_not_queued_total{reason=\"min_free\"}") == 1);
  // The operator's fill is checked against the declared size and refused with the same reason.
  auto c = client_for(server);
  CHECK(c.Post("/api/v1/downloads", R"({"url": ")" + origin.url("/big.iso") + R"("})", "application/json")
            ->status == 202);
  REQUIRE(test::eventually(
      [&] { return c.Get("/api/v1/downloads")->body.find("not enough free space") != std::string::npos; }));
}

TEST_CASE("the start-up lines state the origin policy and warn about an unlimited disk", "[lab][startup]") {
  ServerProcess open;
  const std::string log = open.log();
  CHECK(log.find(
            "fills reach public unicast addresses only (private, special-purpose and own addresses refused); "
            "--allow-private 127.0.0.1/32; any host name") != std::string::npos);
  CHECK(log.find("anonymous readers can fill the disk") != std::string::npos);
  ServerProcess narrowed({"--allow-origin", "*.nvidia.com", "--max-bytes", "1G"});
  CHECK(narrowed.log().find("; host names matching *.nvidia.com") != std::string::npos);
  CHECK(narrowed.log().find("anonymous readers can fill the disk") == std::string::npos);

  test::TempDir dir;
  for (const auto& [option, value] :
       std::vector<std::pair<std::string, std::string>>{{"--allow-private", "10.0.0.0/33"},
                                                        {"--allow-private", "no-such-host.invalid"},
                                                        {"--min-free", "200%"},
                                                        {"--min-free", "lots"}}) {
    INFO(option << " " << value);
    const auto r =
        test::run({WITHCACHE_SERVER, "--port", "0", "--data-dir", (dir / "d").string(), option, value});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(option) != std::string::npos);
  }
}
