// cache.db held by another process: an operator's sqlite3 shell or a backup
// takes exactly this write lock. The server must stay up and keep serving;
// a fill that finishes meanwhile completes or fails with a reason.
#include <catch2/catch.hpp>

#include <chrono>

#include <SQLiteCpp/Database.h>

#include "support/eventually.hpp"
#include "support/origin.hpp"
#include "support/process.hpp"
#include "support/server_process.hpp"

using namespace withcache;
using namespace std::chrono_literals;
using test::Origin;
using test::Route;

namespace {

struct JobState {
  std::string status;
  std::string error;
};

// The newest fill, from the JSON API (with no password set it is open).
JobState newest_job(const test::ServerProcess& server) {
  httplib::Client client("127.0.0.1", server.port());
  client.set_read_timeout(10s);
  const auto res = client.Get("/api/v1/downloads");
  if (!res || res->status != 200) {
    return {};
  }
  const std::string& body = res->body;
  const auto field = [&](const std::string& name) {
    const std::size_t at = body.find("\"" + name + "\":\"");
    if (at == std::string::npos) {
      return std::string();
    }
    const std::size_t start = at + name.size() + 4;
    return body.substr(start, body.find('"', start) - start);
  };
  return {field("status"), field("error")};
}

// Holds cache.db's write lock for `hold` while a fill finishes; returns how many of the
// /healthz polls made meanwhile answered 200, and how many were made.
std::pair<int, int> hold_lock_during_fill(const test::ServerProcess& server, const std::string& cache_url,
                                          std::chrono::seconds hold) {
  SQLite::Database db((server.dir() / "data" / "cache.db").string(), SQLite::OPEN_READWRITE);
  db.exec("BEGIN IMMEDIATE"); // the write lock: readers go on, writers wait
  const auto start = std::chrono::steady_clock::now();
  CHECK(test::curl(cache_url, {"-I"}).status == 404); // the miss queues the fill, which finishes at once
  int polls = 0;
  int healthy = 0;
  httplib::Client client("127.0.0.1", server.port());
  client.set_connection_timeout(2s);
  client.set_read_timeout(2s);
  while (std::chrono::steady_clock::now() - start < hold) {
    const auto res = client.Get("/healthz");
    ++polls;
    healthy += res && res->status == 200 ? 1 : 0;
    // A measurement interval, not synchronisation: the lock is released on the clock below.
    std::this_thread::sleep_for(50ms);
  }
  db.exec("COMMIT");
  return {healthy, polls};
}

} // namespace

TEST_CASE("a fill that completes while another process holds cache.db's write lock for 3 s", "[server][store]") {
  Origin origin;
  origin.add("/locked.bin", Route(test::make_bytes(256 * 1024, 91)));
  test::ServerProcess server;
  const auto [healthy, polls] = hold_lock_during_fill(server, server.blob(origin.url("/locked.bin")), 3s);
  CHECK(polls > 10);
  CHECK(healthy == polls);
  // The commit waited for the lock (5 s busy timeout) and went through.
  REQUIRE(test::eventually([&] { return newest_job(server).status == "completed"; }));
  CHECK(test::curl(server.blob(origin.url("/locked.bin"))).status == 200);
  CHECK(test::curl(server.base() + "/healthz").status == 200);
}

TEST_CASE("a lock held past the busy timeout fails the fill with a reason, and nothing is lost",
          "[server][store]") {
  Origin origin;
  origin.add("/long.bin", Route(test::make_bytes(128 * 1024, 92)));
  test::ServerProcess server;
  const std::string cache_url = server.blob(origin.url("/long.bin"));
  const auto [healthy, polls] = hold_lock_during_fill(server, cache_url, 13s);
  CHECK(healthy == polls);
  const auto ended = [&] {
    const auto job = newest_job(server);
    return job.status == "completed" || job.status == "failed";
  };
  REQUIRE(test::eventually(ended));
  const auto job = newest_job(server);
  INFO("fill ended " << job.status << ": " << job.error);
  if (job.status == "failed") {
    CHECK(job.error.find("cache.db") != std::string::npos);
    // A later miss fills it again.
    CHECK(test::curl(cache_url, {"-I"}).status == 404);
    REQUIRE(test::eventually([&] { return test::curl(cache_url, {"-I"}).status == 200; }));
  }
  CHECK(test::curl(cache_url).status == 200);
  // The miss counted while the database was locked was kept and written later.
  httplib::Client client("127.0.0.1", server.port());
  REQUIRE(test::eventually([&] {
    const auto res = client.Get("/api/v1/artifacts");
    return res && res->body.find("\"misses\":") != std::string::npos &&
           res->body.find("\"misses\":0") == std::string::npos;
  }));
  CHECK(test::curl(server.base() + "/healthz").status == 200);
}
