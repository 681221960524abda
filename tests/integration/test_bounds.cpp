// Long URLs cost a bounded amount (issue 19, item 7), seen from clients of a real withcache-server: an
// origin URL over url::k_max_origin_url is answered 414 on every route that takes one and is never
// recorded; a flood of long URLs grows neither cache.db nor the log; a burst of failing fills writes at
// most 60 "fill failed" lines a minute and then says how many it left out.
#include <catch2/catch.hpp>

#include <filesystem>
#include <functional>
#include <regex>

#include <nlohmann/json.hpp>

#include "support/origin.hpp"
#include "support/process.hpp"
#include "support/server_process.hpp"
#include "withcache/url.hpp"
#include "withcache/util/encoding.hpp"

namespace fs = std::filesystem;
using namespace withcache;
using namespace std::chrono_literals;
using test::curl;
using test::Origin;
using test::ServerProcess;

namespace {

constexpr const char* k_token = "bounds-token";

// A URL of exactly `size` bytes on `origin`, padded with `pad` in a middle segment: its `/b/` name stays
// `file.bin`, so the cache URL of 8 KiB of origin fits the server's default 16 KiB head.
std::string url_of_size(const Origin& origin, const std::string& tag, std::size_t size, char pad) {
  const std::string head = origin.url("/" + tag + "/");
  const std::string tail = "/file.bin";
  REQUIRE(size > head.size() + tail.size());
  return head + std::string(size - head.size() - tail.size(), pad) + tail;
}

httplib::Headers bearer() {
  return {{"Authorization", std::string("Bearer ") + k_token}};
}

nlohmann::json api_get(const ServerProcess& server, const std::string& target) {
  httplib::Client client("127.0.0.1", server.port());
  const auto res = client.Get(target.c_str(), bearer());
  REQUIRE(res);
  INFO(target << " -> " << res->status << " " << res->body.substr(0, 200));
  REQUIRE(res->status == 200);
  return nlohmann::json::parse(res->body);
}

std::uintmax_t size_or_zero(const fs::path& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  return ec ? 0 : size;
}

std::uintmax_t database_bytes(const ServerProcess& server) {
  const fs::path data = server.dir() / "data";
  return size_or_zero(data / "cache.db") + size_or_zero(data / "cache.db-wal");
}

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

struct Answer {
  int status = 0;
  std::string body;
};

// One way of handing the server an origin URL, and what it answers when the URL is accepted.
struct UrlRoute {
  const char* name;
  std::function<Answer(const ServerProcess&, const std::string&)> send;
  int accepted;
};

Answer via_curl(const std::string& target, std::vector<std::string> extra = {}) {
  const auto r = curl(target, std::move(extra));
  return {r.status, r.body};
}

Answer via(const httplib::Result& res) {
  REQUIRE(res);
  return {res->status, res->body};
}

const UrlRoute k_routes[] = {
    {"GET /b/<token>/<name>",
     [](const ServerProcess& s, const std::string& u) { return via_curl(s.blob(u)); }, 404},
    {"HEAD /b/<token>/<name>",
     [](const ServerProcess& s, const std::string& u) { return via_curl(s.blob(u), {"-I"}); }, 404},
    {"GET /blob?url=",
     [](const ServerProcess& s, const std::string& u) {
       return via_curl(s.base() + "/blob?url=" + util::percent_encode(u));
     },
     404},
    {"POST /api/v1/downloads",
     [](const ServerProcess& s, const std::string& u) {
       httplib::Client client("127.0.0.1", s.port());
       return via(
           client.Post("/api/v1/downloads", bearer(), nlohmann::json{{"url", u}}.dump(), "application/json"));
     },
     202},
    {"POST /admin/fetch",
     [](const ServerProcess& s, const std::string& u) {
       httplib::Client client("127.0.0.1", s.port());
       return via(client.Post("/admin/fetch", httplib::Params{{"url", u}}));
     },
     303},
    {"POST /admin/fetch from the UI (HTMX)",
     [](const ServerProcess& s, const std::string& u) {
       httplib::Client client("127.0.0.1", s.port());
       return via(client.Post("/admin/fetch", httplib::Headers{{"HX-Request", "true"}},
                              httplib::Params{{"url", u}}));
     },
     200},
};

} // namespace

TEST_CASE("an origin URL of 8192 bytes is accepted and one of 8193 gets 414 on every route, never recorded",
          "[bounds][414]") {
  REQUIRE(url::k_max_origin_url == 8192);
  Origin origin; // every path is a 404: accepted fills fail, which is fine here
  ServerProcess server({"--scrub-rate", "0"}, {std::string("WITHCACHE_API_TOKEN=") + k_token});
  int tag = 0;
  for (const auto& route : k_routes) {
    INFO(route.name);
    ++tag;
    const std::string accepted = url_of_size(origin, "a" + std::to_string(tag), 8192, 'p');
    const std::string refused = url_of_size(origin, "r" + std::to_string(tag), 8193, 'q');
    const Answer yes = route.send(server, accepted);
    INFO("8192 bytes -> " << yes.status << " " << yes.body.substr(0, 200));
    CHECK(yes.status == route.accepted);
    const Answer no = route.send(server, refused);
    INFO("8193 bytes -> " << no.status << " " << no.body.substr(0, 200));
    CHECK(no.status == 414);
    if (std::string(route.name).starts_with("GET")) { // HEAD has no body; the API's is JSON, the form's HTML
      CHECK(no.body == "URL too long: 8193 bytes, at most 8192 are accepted\n");
    } else if (std::string(route.name).starts_with("POST")) {
      CHECK(no.body.find("URL too long: 8193 bytes, at most 8192 are accepted") != std::string::npos);
    }
  }
  CHECK(test::wait_until_healthy(server.port()));

  // Nothing of the refused URLs anywhere: no miss row, no event, no fill, no log line. The accepted
  // ones are there (the positive control: the checks below can see a long URL when there is one).
  const auto misses = api_get(server, "/api/v1/misses?limit=1000");
  int long_misses = 0;
  for (const auto& m : misses["items"]) {
    const auto u = m["url"].get<std::string>();
    CHECK(u.size() <= 8192);
    long_misses += u.size() == 8192 ? 1 : 0;
  }
  CHECK(long_misses >= 3); // GET and HEAD of /b/, /blob?url= (and the operator's fills once they fail)
  const auto downloads = api_get(server, "/api/v1/downloads?limit=1000");
  int long_fills = 0;
  for (const auto& j : downloads["items"]) {
    const auto u = j["url"].get<std::string>();
    CHECK(u.find("qqqq") == std::string::npos);
    long_fills += u.find("pppp") != std::string::npos ? 1 : 0;
  }
  CHECK(long_fills >= 3); // the API's, the form's, and the misses' (joined when they share a key)
  const auto events = api_get(server, "/api/v1/events?limit=1000").dump();
  CHECK(events.find("qqqq") == std::string::npos);
  CHECK(events.find("(8193 bytes)") == std::string::npos);
  CHECK(events.find("(8192 bytes)") != std::string::npos); // events show URLs cut, with their size
  const std::string log = server.log();
  CHECK(log.find("qqqq") == std::string::npos);
  CHECK(log.find("pppp") != std::string::npos);
  CHECK(log.find(std::string(300, 'p')) == std::string::npos); // cut to 256 bytes in the log
  CHECK(log.find("[URL too long]") != std::string::npos);
}

TEST_CASE("with a head limit that lets it in, a /b/ URL of 14 000 characters is 414 too, not recorded",
          "[bounds][414]") {
  Origin origin;
  ServerProcess server({"--scrub-rate", "0", "--max-header-bytes", "64K"},
                       {std::string("WITHCACHE_API_TOKEN=") + k_token});
  const std::string u = url_of_size(origin, "wide", 14'000, 'w');
  const auto r = curl(server.blob(u));
  CHECK(r.status == 414);
  CHECK(r.body == "URL too long: 14000 bytes, at most 8192 are accepted\n");
  CHECK(api_get(server, "/api/v1/misses")["total"] == 0);
  CHECK(server.log().find("wwww") == std::string::npos);
}

TEST_CASE("1 000 misses of 14 000-character URLs: all 414, cache.db and the log grow by a few hundred KiB",
          "[bounds][flood]") {
  Origin origin;
  ServerProcess server({"--scrub-rate", "0"}, {std::string("WITHCACHE_API_TOKEN=") + k_token});
  CHECK(api_get(server, "/api/v1/misses")["total"] == 0); // a listing flushes the write queue first
  const auto db_before = database_bytes(server);
  const auto log_before = server.log().size();

  httplib::Client reader("127.0.0.1", server.port()); // keep-alive, like a scripted flood
  httplib::Client api("127.0.0.1", server.port());
  int refused = 0;
  constexpr int k_misses = 1000;
  for (int i = 0; i < k_misses; ++i) {
    const std::string u = url_of_size(origin, "flood/" + std::to_string(i), 14'000, 'z');
    const auto read = reader.Get(("/blob?url=" + util::percent_encode(u)).c_str());
    const auto queued =
        api.Post("/api/v1/downloads", bearer(), nlohmann::json{{"url", u}}.dump(), "application/json");
    refused += read && read->status == 414 ? 1 : 0;
    refused += queued && queued->status == 414 ? 1 : 0;
  }
  CHECK(refused == 2 * k_misses);

  CHECK(api_get(server, "/api/v1/misses")["total"] == 0);
  CHECK(api_get(server, "/api/v1/downloads")["total"] == 0);
  const auto events = api_get(server, "/api/v1/events?limit=1000").dump();
  CHECK(events.find("zzzz") == std::string::npos);
  const auto db_growth = database_bytes(server) - std::min(database_bytes(server), db_before);
  const std::string log = server.log();
  const auto log_growth = log.size() - log_before;
  WARN("after " << 2 * k_misses << " requests of 14 000-character URLs: cache.db + WAL +" << db_growth
                << " bytes, log +" << log_growth << " bytes");
  CHECK(db_growth <= 300 * 1024);
  CHECK(log_growth <= 400 * 1024);
  CHECK(log.find("zzzz") == std::string::npos);
}

TEST_CASE(
    "a burst of failing fills logs at most 60 'fill failed' lines a minute, then how many were left out",
    "[bounds][log]") {
  Origin origin; // no routes: every fill fails with the origin's 404
  ServerProcess server({"--scrub-rate", "0"}, {std::string("WITHCACHE_API_TOKEN=") + k_token});
  httplib::Client api("127.0.0.1", server.port());
  const auto queue = [&](const std::string& path) {
    const auto res = api.Post("/api/v1/downloads", bearer(), nlohmann::json{{"url", origin.url(path)}}.dump(),
                              "application/json");
    REQUIRE(res);
    REQUIRE(res->status == 202);
  };
  const auto failed = [&] {
    return server.metric("withcache_fills_total{outcome=\"failed\"}");
  };

  const auto started = std::chrono::steady_clock::now();
  constexpr int k_burst = 150;
  for (int i = 0; i < k_burst; ++i) {
    queue("/burst/" + std::to_string(i) + ".bin");
  }
  REQUIRE(test::eventually([&] { return failed() >= k_burst; }));
  const auto minutes =
      std::chrono::duration_cast<std::chrono::minutes>(std::chrono::steady_clock::now() - started);
  const std::size_t burst_lines = count_of(server.log(), "fill failed: ");
  INFO(burst_lines << " lines for " << k_burst << " failed fills");
  CHECK(burst_lines >= 1);
  CHECK(burst_lines <= 60 * static_cast<std::size_t>(minutes.count() + 1));

  // Once the minute is over, the next failure is logged and says how many were left out. One more
  // failing fill a second until that line appears.
  static const std::regex k_left_out(R"(fill failed: .* \((\d+) more failed fills not logged\))");
  std::smatch match;
  std::string log;
  int extra = 0;
  auto last = std::chrono::steady_clock::now() - 1h;
  const bool told = test::eventually(
      [&] {
        log = server.log();
        if (std::regex_search(log, match, k_left_out)) {
          return true;
        }
        if (std::chrono::steady_clock::now() - last >= 1s) {
          last = std::chrono::steady_clock::now();
          queue("/after/" + std::to_string(extra++) + ".bin");
        }
        return false;
      },
      120s);
  REQUIRE(told);
  const std::uint64_t left_out = std::stoull(match[1].str());
  INFO(left_out << " left out, " << burst_lines << " written, " << extra << " more fills");
  CHECK(left_out >= static_cast<std::uint64_t>(k_burst) - burst_lines);
  CHECK(left_out <= static_cast<std::uint64_t>(k_burst + extra) - burst_lines);
}
