// The operator surface over real HTTP: sessions, CSRF, Bearer, every form
// action and API route with its status codes, and HTML escaping.
#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <thread>

#include <sys/stat.h>

#include "support/origin.hpp"
#include "support/process.hpp"
#include "support/raw_client.hpp"
#include "support/server_process.hpp"

#include <nlohmann/json.hpp>

#include "auth/auth.hpp"
#include "json/json.hpp"
#include "withcache/url.hpp"

namespace fs = std::filesystem;
using namespace withcache;
using namespace std::chrono_literals;
using test::Origin;
using test::Route;
using test::ServerProcess;

namespace {

const std::string k_password = "correct horse";
const std::string k_secret = "fixed-test-secret";

httplib::Client client_for(const ServerProcess& server) {
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(30s);
  return c;
}

std::string login(const ServerProcess& server) {
  auto c = client_for(server);
  const auto res = c.Post("/ui/login", httplib::Params{{"password", k_password}});
  REQUIRE(res);
  REQUIRE(res->status == 303);
  const std::string cookie = res->get_header_value("Set-Cookie");
  CHECK(cookie.find("HttpOnly") != std::string::npos);
  CHECK(cookie.find("SameSite=Lax") != std::string::npos);
  CHECK(cookie.find("Path=/") != std::string::npos);
  CHECK(cookie.find("Max-Age=604800") != std::string::npos);
  return cookie.substr(0, cookie.find(';')); // withcache-token=...
}

httplib::Headers with_cookie(const std::string& cookie) {
  return {{"Cookie", cookie}};
}

nlohmann::json parse(const httplib::Result& res) {
  REQUIRE(res);
  auto v = json::parse(res->body);
  REQUIRE(v.has_value());
  return *v;
}

double number(const nlohmann::json& v, const char* key) {
  return v.at(key).get<double>();
}

// What a browser sees of one POST /ui/login: the status and every Set-Cookie, whole.
struct LoginAnswer {
  int status = 0; // 0: no answer
  std::vector<std::string> set_cookies;

  /** The `name=value` of the cookie `name` was set to, or empty. */
  [[nodiscard]] std::string cookie(const std::string& name) const {
    for (const auto& set : set_cookies) {
      if (set.starts_with(name + "=")) {
        return set.substr(0, set.find(';'));
      }
    }
    return {};
  }
  [[nodiscard]] std::string attributes(const std::string& name) const {
    for (const auto& set : set_cookies) {
      if (set.starts_with(name + "=")) {
        return set.substr(set.find(';'));
      }
    }
    return {};
  }
};

// POST /ui/login from loopback address `from` (any of 127.0.0.0/8; the server sees it as the client).
LoginAnswer post_login(int port, const std::string& from, const std::string& password,
                       const std::string& cookie = {}) {
  test::RawClient client(port, from.c_str());
  if (!client.connected()) {
    return {};
  }
  std::string form = "password=";
  for (const char c : password) {
    form += c == ' ' ? '+' : c;
  }
  std::string request = "POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " +
                        std::to_string(form.size()) + "\r\n";
  if (!cookie.empty()) {
    request += "Cookie: " + cookie + "\r\n";
  }
  if (!client.send(request + "\r\n" + form)) {
    return {};
  }
  client.closed_within(30s);
  LoginAnswer answer;
  const std::string& text = client.received();
  const std::string head = text.substr(0, text.find("\r\n\r\n"));
  if (head.starts_with("HTTP/1.1 ") && head.size() >= 12) {
    answer.status = std::stoi(head.substr(9, 3));
  }
  for (std::size_t at = head.find("\r\nSet-Cookie: "); at != std::string::npos;
       at = head.find("\r\nSet-Cookie: ", at + 2)) {
    const std::size_t start = at + 14;
    answer.set_cookies.push_back(head.substr(start, head.find("\r\n", start) - start));
  }
  return answer;
}

} // namespace

TEST_CASE("without a password the UI is open and startup warns", "[operator]") {
  ServerProcess server;
  auto c = client_for(server);
  const auto page = c.Get("/");
  REQUIRE(page);
  CHECK(page->status == 200);
  CHECK(page->body.find("Dashboard") != std::string::npos);
  CHECK(c.Get("/ui/login")->status == 303);
  CHECK(c.Get("/api/v1/stats")->status == 200);
  CHECK(server.log().find("WITHCACHE_ADMIN_PASSWORD is not set") != std::string::npos);
  CHECK(c.Get("/static/htmx.min.js")->body.find("htmx") != std::string::npos);
  CHECK(c.Get("/static/pico.min.css")->get_header_value("Content-Type") == "text/css");
  CHECK(c.Get("/static/nope.js")->status == 404);
}

TEST_CASE("sessions: login, wrong password, tampered, expired and foreign cookies, logout", "[operator]") {
  ServerProcess server({},
                       {"WITHCACHE_ADMIN_PASSWORD=" + k_password, "WITHCACHE_SESSION_SECRET=" + k_secret});
  auto c = client_for(server);
  auto page = c.Get("/ui/misses");
  CHECK(page->status == 303);
  CHECK(page->get_header_value("Location") == "/ui/login");
  CHECK(c.Post("/admin/clear", "", "application/x-www-form-urlencoded")->status == 401);
  CHECK(c.Get("/api/v1/artifacts")->status == 401);
  // The read path, health and metrics stay open.
  CHECK(c.Get("/healthz")->status == 200);
  CHECK(c.Get("/metrics")->status == 200);

  const auto wrong = c.Post("/ui/login", httplib::Params{{"password", "nope"}});
  CHECK(wrong->status == 401);
  CHECK(wrong->body.find("Wrong password") != std::string::npos);
  CHECK(server.log().find("failed operator login") != std::string::npos);

  const std::string cookie = login(server);
  CHECK(c.Get("/", with_cookie(cookie))->status == 200);
  CHECK(c.Get("/api/v1/stats", with_cookie(cookie))->status == 200);

  // withcache 0.3's dashboard fragment is gated like the other operator routes.
  CHECK(c.Get("/admin/dash")->status == 401);
  const auto dash = c.Get("/admin/dash", with_cookie(cookie));
  REQUIRE(dash);
  CHECK(dash->status == 200);
  CHECK(dash->get_header_value("Content-Type").starts_with("text/html"));
  CHECK(dash->body.find("Artifacts") != std::string::npos);
  CHECK(dash->body.find("<html") == std::string::npos); // a fragment, not a page

  // A second wrong password in a row asks the next attempt to wait (0.25 s): an immediate one is refused.
  CHECK(c.Post("/ui/login", httplib::Params{{"password", "nope"}})->status == 401);
  CHECK(c.Post("/ui/login", httplib::Params{{"password", "nope"}})->status == 401);
  const auto throttled = c.Post("/ui/login", httplib::Params{{"password", k_password}});
  CHECK(throttled->status == 429);
  CHECK(throttled->get_header_value("Retry-After") == "1");
  CHECK(throttled->body.find("Too many wrong passwords") != std::string::npos);

  std::string tampered = cookie;
  tampered[20] = tampered[20] == 'A' ? 'B' : 'A';
  CHECK(c.Get("/", with_cookie(tampered))->status == 303);
  const auth::Sessions same_key(k_secret);
  const std::string expired =
      std::string(auth::k_cookie) + "=" + same_key.issue("admin", std::chrono::system_clock::now() - 8 * 24h);
  CHECK(c.Get("/", with_cookie(expired))->status == 303);
  const std::string foreign =
      std::string(auth::k_cookie) + "=" + auth::Sessions("another-key").issue("admin");
  CHECK(c.Get("/", with_cookie(foreign))->status == 303);

  const auto out = c.Post("/ui/logout", with_cookie(cookie), "", "application/x-www-form-urlencoded");
  CHECK(out->status == 303);
  CHECK(out->get_header_value("Set-Cookie").find("Max-Age=0") != std::string::npos);
  CHECK(c.Get("/", with_cookie(cookie))->status == 303); // ended on the server, not only in the browser

  std::string again; // once the throttle's pause after the wrong passwords is over
  REQUIRE(test::eventually([&] {
    const auto res = c.Post("/ui/login", httplib::Params{{"password", k_password}});
    if (!res || res->status != 303) {
      return false;
    }
    const std::string set = res->get_header_value("Set-Cookie");
    again = set.substr(0, set.find(';'));
    return true;
  }));
  const auto events = parse(c.Get("/api/v1/events", with_cookie(again)));
  std::string kinds;
  for (const auto& e : events.at("items")) {
    kinds += e.at("kind").get<std::string>() + " ";
  }
  CHECK(kinds.find("logout login_failed login_failed login login_failed") != std::string::npos);
}

TEST_CASE("cookies survive restarts with a fixed and with a persisted secret", "[operator]") {
  ServerProcess fixed({}, {"WITHCACHE_ADMIN_PASSWORD=" + k_password, "WITHCACHE_SESSION_SECRET=" + k_secret});
  std::string cookie = login(fixed);
  fixed.restart();
  CHECK(client_for(fixed).Get("/", with_cookie(cookie))->status == 200);
  fixed.restart({"WITHCACHE_ADMIN_PASSWORD=" + k_password, "WITHCACHE_SESSION_SECRET=other"});
  CHECK(client_for(fixed).Get("/", with_cookie(cookie))->status == 303);

  ServerProcess persisted({}, {"WITHCACHE_ADMIN_PASSWORD=" + k_password, "WITHCACHE_SESSION_SECRET="});
  cookie = login(persisted);
  struct stat info {};
  REQUIRE(::stat((persisted.dir() / "data" / "session-secret").c_str(), &info) == 0);
  CHECK((info.st_mode & 0777) == 0600);
  persisted.restart();
  CHECK(client_for(persisted).Get("/", with_cookie(cookie))->status == 200);
}

TEST_CASE("CSRF: another site's Origin or Referer is refused", "[operator]") {
  ServerProcess server({}, {"WITHCACHE_ADMIN_PASSWORD=" + k_password});
  const std::string cookie = login(server);
  auto c = client_for(server);
  const std::string self = "http://127.0.0.1:" + std::to_string(server.port());
  auto post = [&](httplib::Headers headers) {
    headers.emplace("Cookie", cookie);
    return c.Post("/admin/clear", headers, "", "application/x-www-form-urlencoded")->status;
  };
  CHECK(post({{"Origin", "http://evil.example"}}) == 403);
  CHECK(post({{"Referer", "http://evil.example/page"}}) == 403);
  CHECK(post({{"Origin", "null"}}) == 403);
  CHECK(post({{"Origin", self}}) == 303);
  CHECK(post({{"Referer", self + "/ui/downloads"}}) == 303);
  CHECK(post({}) == 303); // scripts and curl send neither
  httplib::Headers evil_api = {{"Cookie", cookie}, {"Origin", "http://evil.example"}};
  CHECK(c.Delete("/api/v1/misses/" + std::string(64, 'a'), evil_api)->status == 403);
}

TEST_CASE("Bearer tokens authorise the API only", "[operator]") {
  ServerProcess server({}, {"WITHCACHE_ADMIN_PASSWORD=" + k_password, "WITHCACHE_API_TOKEN=api-secret"});
  auto c = client_for(server);
  CHECK(c.Get("/api/v1/stats", httplib::Headers{{"Authorization", "Bearer api-secret"}})->status == 200);
  CHECK(c.Get("/api/v1/stats", httplib::Headers{{"Authorization", "Bearer wrong"}})->status == 401);
  CHECK(c.Get("/api/v1/stats", httplib::Headers{{"Authorization", "Basic api-secret"}})->status == 401);
  CHECK(c.Get("/", httplib::Headers{{"Authorization", "Bearer api-secret"}})->status == 303);
  // A Bearer request needs no Origin check: no browser sends it by itself.
  CHECK(c.Post("/api/v1/downloads",
               httplib::Headers{{"Authorization", "Bearer api-secret"}, {"Origin", "http://x"}},
               R"({"url": "ftp://h/x"})", "application/json")
            ->status == 400);
}

TEST_CASE("form actions: 0.3 routes and fields, HTMX fragments and 303s", "[operator]") {
  Origin origin;
  const std::string body = test::make_bytes(100'000, 51);
  origin.add("/tool.tgz", Route(body));
  Route slow(test::make_bytes(4 * 1024 * 1024, 52));
  slow.chunk_delay = 20ms;
  origin.add("/slow.iso", slow);
  Route secret("vendor bytes");
  secret.require_authorization = "Bearer vendor-token";
  origin.add("/vendor.run", secret);
  ServerProcess server({"--curate"});
  auto c = client_for(server);
  const httplib::Headers htmx = {{"HX-Request", "true"}};

  // A miss, then the operator's Download from the Misses list.
  test::curl(server.blob(origin.url("/tool.tgz")));
  const std::string key = *url::key_id(origin.url("/tool.tgz"));
  const auto misses = c.Get("/ui/misses", htmx);
  CHECK(misses->body.find(origin.url("/tool.tgz")) != std::string::npos);
  auto fetched = c.Post("/admin/fetch", httplib::Params{{"url", origin.url("/tool.tgz")}});
  CHECK(fetched->status == 303);
  CHECK(fetched->get_header_value("Location") == "/");
  REQUIRE(server.fills_completed(1));
  CHECK(test::curl(server.blob(origin.url("/tool.tgz"))).body == body);

  // Headers go with the fill and are never shown back.
  auto with_header = c.Post(
      "/admin/fetch", htmx,
      httplib::Params{{"url", origin.url("/vendor.run")}, {"header", "Authorization: Bearer vendor-token"}});
  CHECK(with_header->status == 200);
  CHECK(with_header->body.find("Queued.") != std::string::npos);
  REQUIRE(server.fills_completed(2));
  const auto downloads_page = c.Get("/ui/downloads");
  CHECK(downloads_page->body.find("vendor-token") == std::string::npos);
  CHECK(c.Get("/api/v1/events")->body.find("vendor-token") == std::string::npos);
  CHECK(server.log().find("vendor-token") == std::string::npos);

  CHECK(c.Post("/admin/fetch", httplib::Params{{"url", "file:///etc/passwd"}})->status == 400);
  CHECK(c.Post("/admin/fetch", httplib::Params{{"url", origin.url("/x")}, {"header", "no colon"}})->status ==
        400);
  CHECK(c.Post("/admin/fetch", httplib::Params{{"url", origin.url("/tool.tgz")}})->status ==
        400); // already cached
  CHECK(c.Post("/admin/fetch", "url=a&url=b", "application/x-www-form-urlencoded")->status == 400);

  // Cancel a running fill, clear finished.
  c.Post("/admin/fetch", httplib::Params{{"url", origin.url("/slow.iso")}});
  const auto jobs = parse(c.Get("/api/v1/downloads"));
  const auto& newest = jobs.at("items").at(0);
  const std::string id = std::to_string(static_cast<long long>(number(newest, "id")));
  CHECK(c.Post("/admin/cancel", htmx, httplib::Params{{"id", id}})->status == 200);
  CHECK(c.Post("/admin/cancel", httplib::Params{{"id", "999999"}})->status == 400);
  REQUIRE(test::eventually(
      [&] { return c.Get("/api/v1/downloads")->body.find("\"cancelled\"") != std::string::npos; }));
  CHECK(c.Post("/admin/clear", "", "application/x-www-form-urlencoded")->status == 303);
  CHECK(number(parse(c.Get("/api/v1/downloads")), "total") == 0);

  // Dismiss a miss, delete an artifact.
  test::curl(server.blob(origin.url("/other.bin")));
  const std::string other = *url::key_id(origin.url("/other.bin"));
  CHECK(c.Post("/admin/dismiss", htmx, httplib::Params{{"key", other}})->status == 200);
  CHECK(c.Post("/admin/dismiss", httplib::Params{{"key", other}})->status == 400);
  CHECK(c.Post("/admin/delete", httplib::Params{{"key", key}})->status == 303);
  CHECK(c.Post("/admin/delete", httplib::Params{{"key", key}})->status == 400);
  CHECK(test::curl(server.blob(origin.url("/tool.tgz"))).status == 404);
}

TEST_CASE("JSON API routes and status codes", "[operator]") {
  Origin origin;
  origin.add("/a.bin", Route(test::make_bytes(5000, 53)));
  ServerProcess server({"--curate"});
  auto c = client_for(server);

  auto posted =
      c.Post("/api/v1/downloads", R"({"url": ")" + origin.url("/a.bin") + R"(", "headers": {"X-Lab": "1"}})",
             "application/json");
  CHECK(posted->status == 202);
  const auto job = parse(posted);
  CHECK(job.at("status").get<std::string>() == "queued");
  REQUIRE(server.fills_completed(1));

  const auto artifacts = parse(c.Get("/api/v1/artifacts?limit=10&offset=0&q=a.bin"));
  REQUIRE(number(artifacts, "total") == 1);
  const auto& a = artifacts.at("items").at(0);
  for (const char* field : {"key", "url", "size", "sha256", "content_type", "fetched_at", "hits", "misses"}) {
    INFO(field);
    CHECK(a.count(field) == 1);
  }
  CHECK(a.at("fetched_at").get<std::string>().ends_with("Z"));
  const std::string key = a.at("key").get<std::string>();

  CHECK(c.Post("/api/v1/downloads", R"({"url": ")" + origin.url("/a.bin") + R"("})", "application/json")
            ->status == 409);
  CHECK(c.Post("/api/v1/downloads", "{not json", "application/json")->status == 400);
  CHECK(c.Post("/api/v1/downloads", R"({"url": "http://h/x", "extra": 1})", "application/json")->status ==
        400);
  CHECK(c.Post("/api/v1/downloads", R"({"headers": {}})", "application/json")->status == 400);
  CHECK(c.Post("/api/v1/downloads", R"({"url": "http://h/x", "headers": {"A": 1}})", "application/json")
            ->status == 400);
  CHECK(parse(c.Post("/api/v1/downloads", "[]", "application/json")).count("error") == 1);
  CHECK(c.Get("/api/v1/artifacts?offset=-1")->status == 400);
  CHECK(c.Get("/api/v1/artifacts?limit=abc")->status == 400);
  CHECK(c.Get("/api/v1/artifacts?limit=5000")->status == 400);
  CHECK(c.Get("/api/v1/nothing")->status == 404);

  test::curl(server.blob(origin.url("/missing.bin")));
  const auto misses = parse(c.Get("/api/v1/misses"));
  REQUIRE(number(misses, "total") == 1);
  const auto& m = misses.at("items").at(0);
  for (const char* field : {"key", "url", "count", "first_seen", "last_seen"}) {
    CHECK(m.count(field) == 1);
  }
  const std::string miss_key = m.at("key").get<std::string>();
  CHECK(c.Delete("/api/v1/misses/" + miss_key)->status == 200);
  CHECK(c.Delete("/api/v1/misses/" + miss_key)->status == 404);

  const auto downloads = parse(c.Get("/api/v1/downloads"));
  const auto& d = downloads.at("items").at(0);
  for (const char* field :
       {"id", "url", "status", "bytes_done", "bytes_total", "rate", "error", "started_at", "finished_at"}) {
    CHECK(d.count(field) == 1);
  }
  const std::string id = std::to_string(static_cast<long long>(number(d, "id")));
  CHECK(c.Delete("/api/v1/downloads/" + id)->status == 409); // already completed
  CHECK(c.Delete("/api/v1/downloads/424242")->status == 404);

  const auto stats = parse(c.Get("/api/v1/stats"));
  for (const char* field : {"artifacts", "stored_bytes", "capacity", "hits", "misses", "bytes_served",
                            "bytes_fetched", "queue_depth"}) {
    CHECK(stats.count(field) == 1);
  }
  CHECK(number(stats, "artifacts") == 1);

  CHECK(c.Delete("/api/v1/artifacts/" + key)->status == 200);
  CHECK(c.Delete("/api/v1/artifacts/" + key)->status == 404);
  const auto events = parse(c.Get("/api/v1/events?limit=100"));
  CHECK(number(events, "total") >= 5);
  const auto& e = events.at("items").at(0);
  for (const char* field : {"id", "time", "kind", "actor", "address", "details"}) {
    CHECK(e.count(field) == 1);
  }
}

TEST_CASE("everything from a URL is escaped in the HTML", "[operator]") {
  ServerProcess server({"--curate"});
  const std::string evil = "https://evil.example/<script>alert(1)</script>\"onmouseover=\"x.iso";
  CHECK(test::curl(server.blob(evil)).status == 404);
  auto c = client_for(server);
  for (const char* page : {"/ui/misses", "/ui/events"}) {
    INFO(page);
    const auto res = c.Get(page);
    REQUIRE(res);
    CHECK(res->body.find("<script>alert") == std::string::npos);
    CHECK(res->body.find("\"onmouseover") == std::string::npos);
    CHECK(res->body.find("&lt;script&gt;alert(1)&lt;/script&gt;&quot;onmouseover") != std::string::npos);
  }
}

TEST_CASE("a spray from 50 addresses: the operator with a device cookie gets in, a new browser waits",
          "[operator][throttle]") {
  ServerProcess server({},
                       {"WITHCACHE_ADMIN_PASSWORD=" + k_password, "WITHCACHE_SESSION_SECRET=" + k_secret});
  const int port = server.port();

  // The operator logged in on this browser before: it holds a device cookie.
  const auto first = post_login(port, "127.0.0.1", k_password);
  REQUIRE(first.status == 303);
  const std::string device = first.cookie(auth::k_device_cookie);
  REQUIRE_FALSE(device.empty());
  const std::string attributes = first.attributes(auth::k_device_cookie);
  CHECK(attributes.find("HttpOnly") != std::string::npos);
  CHECK(attributes.find("SameSite=Strict") != std::string::npos);
  CHECK(attributes.find("Path=/ui/login") != std::string::npos);
  CHECK(attributes.find("Max-Age=31536000") != std::string::npos);
  CHECK(attributes.find("Secure") == std::string::npos); // plain HTTP
  // It is no session: it opens nothing.
  CHECK(client_for(server).Get("/", with_cookie(device))->status == 303);
  CHECK(client_for(server).Get("/api/v1/stats", with_cookie(device))->status == 401);

  // The spray: 50 addresses guessing as fast as the server answers them (a short pause after each answer
  // keeps 50 threads from starving a shared test machine).
  std::atomic<bool> stop{false};
  std::atomic<int> judged{0};
  std::atomic<int> paused{0};
  std::vector<std::thread> sprayers;
  for (int i = 1; i <= 50; ++i) {
    sprayers.emplace_back([&, i] {
      const std::string from = "127.0.1." + std::to_string(i);
      for (int n = 0; !stop; ++n) {
        const int status = post_login(port, from, "guess-" + std::to_string(n)).status;
        if (status == 401) {
          ++judged;
        } else if (status == 429) {
          ++paused;
        }
        std::this_thread::sleep_for(20ms);
      }
    });
  }
  struct Joiner {
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~Joiner() {
      stop = true;
      for (auto& t : threads) {
        t.join();
      }
    }
  } joiner{stop, sprayers};

  // The global budget (60 a minute) is spent and the spray is being paced.
  REQUIRE(test::eventually([&] { return judged > 60 && paused > 100; }, 60s));

  // The operator, with the device cookie, from its own address: every login gets in.
  const int paused_before = paused;
  int got_in = 0;
  std::string session;
  for (int i = 0; i < 16; ++i) {
    const auto answer = post_login(port, "127.0.0.1", k_password, device);
    INFO("operator login " << i << ": " << answer.status);
    got_in += answer.status == 303 ? 1 : 0;
    session = answer.cookie(auth::k_cookie);
  }
  CHECK(got_in == 16);
  CHECK(client_for(server).Get("/", with_cookie(session))->status == 200);

  // A new browser (no device cookie, or a forged one) with the right password, from addresses that never
  // failed: paused like the spray. (One may land in the instant between two pauses; that is pacing.)
  const std::string forged =
      std::string(auth::k_device_cookie) + "=" + auth::DeviceCookies("another-key").issue("admin");
  int new_paused = 0;
  int forged_paused = 0;
  for (int i = 1; i <= 5; ++i) {
    const auto fresh = post_login(port, "127.0.2." + std::to_string(i), k_password);
    new_paused += fresh.status == 429 ? 1 : 0;
    const auto fake = post_login(port, "127.0.3." + std::to_string(i), k_password, forged);
    forged_paused += fake.status == 429 ? 1 : 0;
  }
  CHECK(new_paused >= 4);
  CHECK(forged_paused >= 4);
  CHECK(paused > paused_before); // the spray was still paced while the operator logged in
  stop = true;
  // The global budget held: most guesses were refused unjudged.
  CHECK(paused > judged);
}

TEST_CASE("cookies carry Secure over HTTPS, not over plain HTTP", "[operator][tls]") {
  test::TempDir certs;
  const auto made =
      test::run({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                 "/CN=withcache-test", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout",
                 (certs / "key.pem").string(), "-out", (certs / "cert.pem").string()});
  REQUIRE(made.exit_code == 0);
  const std::vector<std::string> env = {"WITHCACHE_ADMIN_PASSWORD=" + k_password,
                                        "WITHCACHE_SESSION_SECRET=" + k_secret};
  ServerProcess plain_server({}, env);
  ServerProcess tls_server(
      {"--tls-cert", (certs / "cert.pem").string(), "--tls-key", (certs / "key.pem").string()}, env);

  const auto secure = [](const std::string& set_cookie) {
    return set_cookie.find("; Secure") != std::string::npos;
  };
  const auto check = [&](httplib::ClientImpl& c, bool tls) {
    INFO((tls ? "HTTPS" : "plain HTTP"));
    const auto res = c.Post("/ui/login", httplib::Params{{"password", k_password}});
    REQUIRE(res);
    REQUIRE(res->status == 303);
    const std::size_t n = res->get_header_value_count("Set-Cookie");
    REQUIRE(n == 2);
    std::string session;
    for (std::size_t i = 0; i < n; ++i) {
      const std::string set = res->get_header_value("Set-Cookie", i);
      INFO(set);
      CHECK(secure(set) == tls);
      if (set.starts_with(std::string(auth::k_cookie) + "=")) {
        session = set.substr(0, set.find(';'));
      }
    }
    REQUIRE_FALSE(session.empty());
    const auto out = c.Post("/ui/logout", with_cookie(session), "", "application/x-www-form-urlencoded");
    REQUIRE(out);
    CHECK(out->get_header_value("Set-Cookie").find("Max-Age=0") != std::string::npos);
    CHECK(secure(out->get_header_value("Set-Cookie")) == tls);
  };
  httplib::ClientImpl plain_client("127.0.0.1", plain_server.port());
  plain_client.set_read_timeout(30s);
  check(plain_client, false);
  httplib::SSLClient tls_client("127.0.0.1", tls_server.port());
  tls_client.set_ca_cert_path((certs / "cert.pem").c_str());
  tls_client.enable_server_certificate_verification(true);
  tls_client.set_read_timeout(30s);
  check(tls_client, true);
}
