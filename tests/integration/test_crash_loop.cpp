// No crash loop (issue 19): a fill that was running when withcache-server died twice in a row is not
// resumed at the next start, but failed with a `fill_abandoned` event and backed off; one death, or a
// clean stop (SIGTERM), still resumes it. Real server processes killed with SIGKILL, a real origin that
// sends its body slowly enough that the fill is always still running.
#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <string>

#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "support/origin.hpp"
#include "support/process.hpp"
#include "support/server_process.hpp"

using namespace withcache;
using namespace std::chrono_literals;
using test::curl;
using test::eventually;
using test::Origin;
using test::Route;
using test::ServerProcess;

namespace {

constexpr const char* k_token = "crash-loop-test-token";

nlohmann::json api_get(const ServerProcess& server, const std::string& target) {
  httplib::Client client("127.0.0.1", server.port());
  client.set_read_timeout(10s);
  const auto res = client.Get(target.c_str(), {{"Authorization", std::string("Bearer ") + k_token}});
  REQUIRE(res);
  INFO(target << " → " << res->status << " " << res->body);
  REQUIRE(res->status == 200);
  return nlohmann::json::parse(res->body);
}

// The newest job of `url` in GET /api/v1/downloads, or null.
nlohmann::json job_of(const ServerProcess& server, const std::string& url) {
  const auto listing = api_get(server, "/api/v1/downloads?limit=100");
  for (const auto& item : listing["items"]) {
    if (item["url"] == url) {
      return item;
    }
  }
  return nullptr;
}

bool is_running(const ServerProcess& server, const std::string& url) {
  const auto job = job_of(server, url);
  return !job.is_null() && job["status"] == "running";
}

} // namespace

TEST_CASE("a fill running at two deaths in a row is failed at start with an event, while one death or "
          "SIGTERM resumes it",
          "[crash][fills]") {
  Origin origin;
  // 4 MiB at 40 KiB/s: the fill is still running whenever the test kills the server.
  Route slow(test::make_bytes(4 * 1024 * 1024, 19));
  slow.chunk_size = 4096;
  slow.chunk_delay = 100ms;
  slow.etag = "\"v1\"";
  origin.add("/huge.iso", slow);
  const std::string url = origin.url("/huge.iso");
  ServerProcess server({"--scrub-rate", "0"}, {std::string("WITHCACHE_API_TOKEN=") + k_token});

  curl(server.blob(url), {"-I", "--max-time", "10"}); // a reader's miss queues the fill
  // The origin was asked, so the fill was marked running in cache.db before (mark_job_running).
  REQUIRE(eventually([&] { return origin.gets("/huge.iso") == 1 && is_running(server, url); }, 30s));

  // One death: resumed at start, as before.
  server.stop(SIGKILL);
  server.start();
  REQUIRE(eventually([&] { return origin.gets("/huge.iso") == 2 && is_running(server, url); }, 30s));

  // A clean stop: resumed, and the deaths in a row start over.
  const int status = server.stop(SIGTERM);
  CHECK(WIFEXITED(status));
  server.start();
  REQUIRE(eventually([&] { return origin.gets("/huge.iso") == 3 && is_running(server, url); }, 30s));

  // One death after the clean stop: still resumed.
  server.stop(SIGKILL);
  server.start();
  REQUIRE(eventually([&] { return origin.gets("/huge.iso") == 4 && is_running(server, url); }, 30s));

  // The second death in a row: not resumed. The job ends failed before any worker runs.
  server.stop(SIGKILL);
  server.start();
  const auto job = job_of(server, url);
  REQUIRE_FALSE(job.is_null());
  CHECK(job["status"] == "failed");
  CHECK(job["error"].get<std::string>().find("the server died twice while this fill ran") !=
        std::string::npos);
  const auto events = api_get(server, "/api/v1/events?q=fill_abandoned");
  REQUIRE(events["total"] == 1);
  CHECK(events["items"][0]["kind"] == "fill_abandoned");
  CHECK(events["items"][0]["details"].get<std::string>().find(url) != std::string::npos);
  // A reader's miss does not start it again either: the key backs off, and says why.
  const auto miss = curl(server.blob(url), {"--max-time", "10"});
  CHECK(miss.status == 404);
  CHECK(miss.body.find("not fetched: the server died twice") != std::string::npos);
  CHECK(job_of(server, url)["status"] == "failed");
  CHECK(origin.gets("/huge.iso") == 4); // not at start, not for the reader
  CHECK(server.log().find("died twice") != std::string::npos);

  // An operator's Download retries it.
  httplib::Client client("127.0.0.1", server.port());
  const auto retried = client.Post("/api/v1/downloads", {{"Authorization", std::string("Bearer ") + k_token}},
                                   nlohmann::json{{"url", url}}.dump(), "application/json");
  REQUIRE(retried);
  CHECK(retried->status == 202);
  CHECK(eventually([&] { return origin.gets("/huge.iso") == 5; }, 30s));
}
