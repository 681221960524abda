// Fills against a real origin on 127.0.0.1: the fetcher and the download
// pool end to end, with the store on a temp dir.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <thread>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include "support/eventually.hpp"
#include "support/origin.hpp"
#include "support/raw_origin.hpp"
#include "support/temp_dir.hpp"
#include "withcache/fills.hpp"
#include "withcache/origin.hpp"
#include "withcache/store.hpp"
#include "withcache/digest.hpp"
#include "withcache/url.hpp"
#include "withcache/util/time.hpp"

namespace fs = std::filesystem;
using namespace withcache;
using namespace std::chrono_literals;
using test::Origin;
using withcache::Artifact;
using withcache::UnixTime;
using test::Route;
using test::TempDir;

namespace {


std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// `--allow-private 127.0.0.1`: the test origins listen there.
std::vector<origin::Network> loopback() {
  return origin::parse_allow_private("127.0.0.1").value();
}

origin::FetchOptions local_options() {
  origin::FetchOptions options;
  options.policy = origin::OriginPolicy({}, loopback());
  options.backoff = 10ms;
  options.read_timeout = 10s;
  options.getenv = [](const char*) -> const char* {
    return nullptr;
  }; // no proxy from the CI environment
  return options;
}

fills::PoolOptions pool_options(unsigned workers = 2) {
  fills::PoolOptions options;
  options.workers = workers;
  options.fetch = local_options();
  return options;
}

std::size_t files_in(const fs::path& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir)) {
    ++n;
  }
  return n;
}

using test::eventually;
using test::k_deadline;

} // namespace

TEST_CASE("fetch_to_file downloads with the right size and sha", "[fills]") {
  Origin origin;
  const std::string body = test::make_bytes(3 * 1024 * 1024 + 7);
  origin.add("/a.bin", {body, "application/x-test"});
  TempDir dir;
  origin::FetchRequest request;
  request.url = origin.url("/a.bin");
  request.part_path = dir / "a.part";
  std::uint64_t last_done = 0;
  std::uint64_t last_total = 0;
  request.on_progress = [&](std::uint64_t done, std::uint64_t total) {
    CHECK(done >= last_done);
    last_done = done;
    last_total = total;
  };
  const auto result = origin::fetch_to_file(request, local_options());
  REQUIRE(result.has_value());
  CHECK(result->size == body.size());
  CHECK(result->sha256 == digest::sha256_hex(body));
  CHECK(result->content_type == "application/x-test");
  CHECK(read_file(request.part_path) == body);
  CHECK(last_done == body.size());
  CHECK(last_total == body.size());
}

TEST_CASE("a truncated body is resumed with Range to the right sha", "[fills]") {
  Origin origin;
  const std::string body = test::make_bytes(1024 * 1024, 2);
  Route route{body};
  route.truncate_at = 300 * 1024;
  route.truncate_times = 2;
  origin.add("/t.bin", route);
  TempDir dir;
  origin::FetchRequest request;
  request.url = origin.url("/t.bin");
  request.part_path = dir / "t.part";
  const auto result = origin::fetch_to_file(request, local_options());
  REQUIRE(result.has_value());
  CHECK(result->sha256 == digest::sha256_hex(body));
  const auto ranges = origin.ranges("/t.bin");
  REQUIRE(ranges.size() == 3);
  CHECK(ranges[0].empty());
  CHECK(ranges[1] == "bytes=" + std::to_string(300 * 1024) + "-");
  CHECK(ranges[2] == "bytes=" + std::to_string(600 * 1024) + "-");
}

TEST_CASE("an origin that ignores Range restarts from zero", "[fills]") {
  Origin origin;
  const std::string body = test::make_bytes(512 * 1024, 3);
  Route route{body};
  route.truncate_at = 100 * 1024;
  route.truncate_times = 1;
  route.ignore_range = true;
  origin.add("/r.bin", route);
  TempDir dir;
  origin::FetchRequest request;
  request.url = origin.url("/r.bin");
  request.part_path = dir / "r.part";
  const auto result = origin::fetch_to_file(request, local_options());
  REQUIRE(result.has_value());
  CHECK(result->size == body.size());
  CHECK(result->sha256 == digest::sha256_hex(body));
}

TEST_CASE("a body that never completes fails as truncated with both sizes", "[fills]") {
  Origin origin;
  Route route{test::make_bytes(200 * 1024, 4)};
  route.truncate_at = 50 * 1024;
  route.truncate_times = -1;
  route.ignore_range = true;
  origin.add("/never.bin", route);
  TempDir dir;
  origin::FetchRequest request;
  request.url = origin.url("/never.bin");
  request.part_path = dir / "never.part";
  const auto result = origin::fetch_to_file(request, local_options());
  REQUIRE_FALSE(result.has_value());
  CHECK(result.error().reason == origin::FetchErrc::truncated);
  CHECK(result.error().message.find("declared 204800 bytes, received 51200") != std::string::npos);
  CHECK(result.error().message.find("5 attempts") != std::string::npos);
  CHECK(origin.gets("/never.bin") == 5);
}

TEST_CASE("origin errors, refused schemes and hosts come back as reasons", "[fills]") {
  Origin origin;
  Route missing = Route::error(404);
  origin.add("/missing", missing);
  Route secret{"secret bytes"};
  secret.require_authorization = "Bearer lab-token";
  origin.add("/secret", secret);
  // Loopback, but not the 127.0.0.1 that --allow-private opened.
  origin.add("/to-loopback",
             Route::redirect("http://127.0.0.2:" + std::to_string(origin.port()) + "/secret"));
  origin.add("/to-metadata", Route::redirect("http://169.254.169.254/latest/meta-data/"));
  origin.add("/to-file", Route::redirect("file:///etc/passwd"));
  origin.add("/hop", Route::redirect("/secret"));
  TempDir dir;

  auto run = [&](const std::string& url, origin::Headers headers = {},
                 origin::FetchOptions options = local_options()) {
    origin::FetchRequest request;
    request.url = url;
    request.headers = std::move(headers);
    request.part_path = dir / "x.part";
    fs::remove(request.part_path);
    return origin::fetch_to_file(request, options);
  };

  auto r = run(origin.url("/missing"));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().reason == origin::FetchErrc::http_status);
  CHECK(r.error().status == 404);
  CHECK(origin.gets("/missing") == 1); // a 4xx is not retried

  r = run(origin.url("/secret"));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().status == 401);
  r = run(origin.url("/secret"), {{"Authorization", "Bearer lab-token"}});
  REQUIRE(r.has_value());
  CHECK(r->size == 12);

  // Relative redirects are followed; the Authorization header stays on the same origin.
  r = run(origin.url("/hop"), {{"Authorization", "Bearer lab-token"}});
  REQUIRE(r.has_value());

  const int before = origin.requests();
  for (const char* url : {"file:///etc/passwd", "ftp://127.0.0.1/x", "data:text/plain,hi"}) {
    INFO(url);
    r = run(url);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().reason == origin::FetchErrc::refused_origin);
  }
  origin::FetchOptions closed = local_options();
  closed.policy = origin::OriginPolicy();
  r = run(origin.url("/secret"), {}, closed);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().reason == origin::FetchErrc::refused_origin);
  CHECK(r.error().message.find("--allow-private 127.0.0.1") != std::string::npos);
  CHECK(r.error().message.find(": loopback, not a public address") != std::string::npos);
  CHECK(origin.requests() == before); // refused before any I/O

  for (const char* path : {"/to-loopback", "/to-metadata", "/to-file"}) {
    INFO(path);
    r = run(origin.url(path));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().reason == origin::FetchErrc::refused_origin);
  }
  CHECK(origin.gets("/secret") == 3); // the refused redirect never reached it
}

TEST_CASE("redirect loops end with a clear error", "[fills]") {
  Origin origin;
  origin.add("/loop", Route::redirect("/loop"));
  TempDir dir;
  origin::FetchRequest request;
  request.url = origin.url("/loop");
  request.part_path = dir / "loop.part";
  const auto r = origin::fetch_to_file(request, local_options());
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message.find("more than 10 redirects") != std::string::npos);
}

TEST_CASE("capacity: a declared size over the cap is refused", "[fills]") {
  Origin origin;
  origin.add("/big.bin", Route{test::make_bytes(100 * 1024)});
  TempDir dir;
  origin::FetchRequest request;
  request.url = origin.url("/big.bin");
  request.part_path = dir / "big.part";
  request.may_store = [](std::uint64_t bytes) {
    return bytes <= 50 * 1024;
  };
  const auto r = origin::fetch_to_file(request, local_options());
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().reason == origin::FetchErrc::cache_full);
}

TEST_CASE("the pool fills a 64 MiB artifact with the right size and sha", "[fills][pool]") {
  Origin origin;
  const std::string body = test::make_bytes(64 * 1024 * 1024, 5);
  origin.add("/cuda.run", Route{body, "application/x-sh"});
  TempDir dir;
  store::BlobStore s({dir.path()});
  fills::FillPool pool(s, pool_options());
  const auto enqueued = pool.enqueue(origin.url("/cuda.run"));
  REQUIRE(enqueued.has_value());
  CHECK_FALSE(enqueued->joined);
  const auto job = pool.wait(enqueued->job.id, k_deadline);
  REQUIRE(job.has_value());
  REQUIRE(job->status == JobStatus::completed);
  CHECK(job->bytes_done == body.size());
  CHECK(job->bytes_total == body.size());
  const auto artifact = s.find(*url::key_id(origin.url("/cuda.run")));
  REQUIRE(artifact.has_value());
  CHECK(artifact->size == body.size());
  CHECK(artifact->sha256 == digest::sha256_hex(body));
  CHECK(artifact->content_type == "application/x-sh");
  CHECK(read_file(s.blob_path(artifact->key)) == body);
  CHECK(files_in(dir / "tmp") == 0);
  CHECK(s.pending_jobs()->empty());
}

TEST_CASE("50 concurrent enqueues of one URL make one origin GET", "[fills][pool]") {
  Origin origin;
  Route slow{test::make_bytes(2 * 1024 * 1024, 6)};
  slow.chunk_delay = 2ms;
  origin.add("/one.bin", slow);
  TempDir dir;
  store::BlobStore s({dir.path()});
  fills::FillPool pool(s, pool_options(4));
  std::vector<std::thread> threads;
  std::vector<std::int64_t> ids(50);
  std::atomic<int> joined{0};
  for (int i = 0; i < 50; ++i) {
    threads.emplace_back([&, i] {
      // Spellings that normalise to one key.
      const std::string url =
          i % 2 == 0 ? origin.url("/one.bin") : origin.url("/./one.bin?token=" + std::to_string(i));
      const auto r = pool.enqueue(url);
      if (r) {
        ids[static_cast<std::size_t>(i)] = r->job.id;
        joined += r->joined ? 1 : 0;
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  CHECK(joined == 49);
  CHECK(std::all_of(ids.begin(), ids.end(), [&](std::int64_t id) { return id == ids[0]; }));
  const auto job = pool.wait(ids[0], k_deadline);
  REQUIRE(job.has_value());
  CHECK(job->status == JobStatus::completed);
  CHECK(origin.gets("/one.bin") == 1);
  const auto again = pool.enqueue(origin.url("/one.bin"));
  REQUIRE_FALSE(again.has_value());
  CHECK(again.error().code == fills::EnqueueErrc::already_cached);
}

TEST_CASE("pool: truncation that never completes fails, stores nothing and keeps its guarded part",
          "[fills][pool]") {
  Origin origin;
  Route route{test::make_bytes(256 * 1024, 7)};
  route.truncate_at = 1000;
  route.truncate_times = -1;
  route.ignore_range = true;
  origin.add("/bad.bin", route);
  TempDir dir;
  store::BlobStore s({dir.path()});
  fills::FillPool pool(s, pool_options());
  const auto enqueued = pool.enqueue(origin.url("/bad.bin"));
  REQUIRE(enqueued.has_value());
  const auto job = pool.wait(enqueued->job.id, k_deadline);
  REQUIRE(job.has_value());
  CHECK(job->status == JobStatus::failed);
  CHECK(job->error_reason == "truncated");
  CHECK(job->error.find("declared 262144 bytes") != std::string::npos);
  CHECK(files_in(dir / "blobs") == 0);
  // The part and the validators that guard it stay for the next attempt (SPEC §3 "At rest").
  CHECK(fs::file_size(s.part_path(enqueued->job.key)) == 1000);
  CHECK(fs::exists(s.resume_state_path(enqueued->job.key)));
  CHECK(s.pending_jobs()->empty());
  CHECK(s.totals()->artifacts == 0);
}

TEST_CASE("pool: cancel works queued and running and leaves no file", "[fills][pool]") {
  Origin origin;
  Route slow{test::make_bytes(8 * 1024 * 1024, 8)};
  slow.chunk_delay = 20ms;
  origin.add("/slow.bin", slow);
  origin.add("/queued.bin", Route{test::make_bytes(1024, 9)});
  TempDir dir;
  store::BlobStore s({dir.path()});
  fills::FillPool pool(s, pool_options(1));
  const auto running = pool.enqueue(origin.url("/slow.bin"));
  const auto queued = pool.enqueue(origin.url("/queued.bin"));
  REQUIRE(running.has_value());
  REQUIRE(queued.has_value());
  REQUIRE(eventually([&] {
    const auto j = pool.get(running->job.id);
    return j && j->status == JobStatus::running && j->bytes_done > 0;
  }));
  CHECK(pool.get(queued->job.id)->status == JobStatus::queued);
  CHECK(pool.queue_depth() == 1);

  CHECK(pool.cancel(queued->job.id));
  CHECK(pool.get(queued->job.id)->status == JobStatus::cancelled);
  CHECK(pool.cancel(running->job.id));
  const auto job = pool.wait(running->job.id, k_deadline);
  REQUIRE(job.has_value());
  CHECK(job->status == JobStatus::cancelled);
  CHECK(job->bytes_done < 8 * 1024 * 1024);
  CHECK_FALSE(pool.cancel(running->job.id)); // already ended
  CHECK(files_in(dir / "tmp") == 0);
  CHECK(files_in(dir / "blobs") == 0);
  CHECK(s.pending_jobs()->empty());
  CHECK(origin.gets("/queued.bin") == 0);

  CHECK(pool.clear_finished() == 2);
  CHECK(pool.list().empty());
}

TEST_CASE("pool: capacity refuses new fills and aborts ones that would overflow", "[fills][pool]") {
  Origin origin;
  origin.add("/fits.bin", Route{test::make_bytes(60 * 1024, 10)});
  origin.add("/too-big.bin", Route{test::make_bytes(60 * 1024, 11)});
  origin.add("/more.bin", Route{test::make_bytes(10, 12)});
  TempDir dir;
  store::BlobStore s({dir.path(), 100 * 1024});
  fills::FillPool pool(s, pool_options());

  auto first = pool.enqueue(origin.url("/fits.bin"));
  REQUIRE(first.has_value());
  CHECK(pool.wait(first->job.id, k_deadline)->status == JobStatus::completed);

  auto second = pool.enqueue(origin.url("/too-big.bin"));
  REQUIRE(second.has_value());
  const auto job = pool.wait(second->job.id, k_deadline);
  CHECK(job->status == JobStatus::failed);
  CHECK(job->error_reason == "cache_full");
  CHECK(files_in(dir / "tmp") == 0);

  // Fill the rest by hand; then the store is full and enqueue refuses at once.
  REQUIRE(s.reserve(40 * 1024));
  auto refused = pool.enqueue(origin.url("/more.bin"));
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().code == fills::EnqueueErrc::cache_full);
  CHECK(origin.gets("/more.bin") == 0);
  s.release(40 * 1024);
}

TEST_CASE("pool: bad URLs, schemes and headers are refused with no I/O", "[fills][pool]") {
  Origin origin;
  TempDir dir;
  store::BlobStore s({dir.path()});
  fills::PoolOptions options = pool_options();
  options.fetch.policy = origin::OriginPolicy();
  fills::FillPool pool(s, options);
  fills::PoolOptions restricted_options = pool_options();
  restricted_options.fetch.policy = origin::OriginPolicy({"*.nvidia.com"});
  fills::FillPool restricted(s, restricted_options);
  const auto not_allowed = restricted.enqueue("https://example.com/x.run");
  REQUIRE_FALSE(not_allowed.has_value());
  CHECK(not_allowed.error().code == fills::EnqueueErrc::refused_origin);
  CHECK(not_allowed.error().message.find("--allow-origin") != std::string::npos);
  struct Case {
    std::string url;
    origin::Headers headers;
    fills::EnqueueErrc code;
  };
  const Case cases[] = {
      {"not a url", {}, fills::EnqueueErrc::bad_url},
      {"file:///etc/passwd", {}, fills::EnqueueErrc::refused_origin},
      {"ftp://127.0.0.1/x", {}, fills::EnqueueErrc::refused_origin},
      {origin.url("/x"), {{"X-Bad", "a\r\nInjected: 1"}}, fills::EnqueueErrc::bad_header},
      {origin.url("/x"), {{"Bad Name", "v"}}, fills::EnqueueErrc::bad_header},
  };
  for (const auto& c : cases) {
    INFO(c.url);
    const auto r = pool.enqueue(c.url, c.headers);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == c.code);
    CHECK(r.error().message.find("Injected") == std::string::npos);
  }
  // Loopback without --allow-private is refused by the worker after resolving.
  const auto loopback = pool.enqueue(origin.url("/x"));
  REQUIRE(loopback.has_value());
  const auto job = pool.wait(loopback->job.id, k_deadline);
  CHECK(job->status == JobStatus::failed);
  CHECK(job->error_reason == "refused_origin");
  CHECK(origin.requests() == 0);
}

TEST_CASE("pool: userinfo becomes a Basic Authorization header, for the operator or with --forward-auth",
          "[fills][pool]") {
  Origin origin;
  Route secret{"vendor bytes"};
  secret.require_authorization = "Basic dXNlcjpwQHNz"; // user:p@ss
  origin.add("/vendor.bin", secret);
  TempDir dir;
  store::BlobStore s({dir.path()});
  const std::string url = "http://user:p%40ss@127.0.0.1:" + std::to_string(origin.port()) + "/vendor.bin";
  {
    // Credentials are credentials: an automatic fill without --forward-auth uses neither userinfo nor a
    // reader's Authorization, and does not fetch at all.
    fills::FillPool plain(s, pool_options());
    for (const auto& [target, headers] : std::vector<std::pair<std::string, origin::Headers>>{
             {url, {}}, {origin.url("/vendor.bin"), {{"Authorization", "Basic dXNlcjpwQHNz"}}}}) {
      const auto refused = plain.enqueue(target, headers);
      REQUIRE_FALSE(refused.has_value());
      CHECK(refused.error().code == fills::EnqueueErrc::carries_credentials);
      CHECK(refused.error().message == "carries credentials");
    }
    CHECK(origin.requests() == 0);
    const auto by_operator = plain.enqueue(url, {}, /*by_operator=*/true);
    REQUIRE(by_operator.has_value());
    CHECK(plain.wait(by_operator->job.id, k_deadline)->status == JobStatus::completed);
    REQUIRE(s.remove(by_operator->job.key).value());
  }
  fills::PoolOptions forwarding = pool_options();
  forwarding.forward_auth = true;
  fills::FillPool pool(s, forwarding);
  const auto r = pool.enqueue(url);
  REQUIRE(r.has_value());
  CHECK(r->job.url.find("user") == std::string::npos);
  CHECK(pool.wait(r->job.id, k_deadline)->status == JobStatus::completed);
  const auto artifact = s.describe(r->job.key).value();
  REQUIRE(artifact.has_value());
  CHECK(artifact->raw_url.find("p%40ss") == std::string::npos);
  CHECK_FALSE(artifact->raw_url.empty());
}

TEST_CASE("pool: a restart resumes queued and running fills from their .part bytes", "[fills][pool]") {
  Origin origin;
  const std::string big = test::make_bytes(4 * 1024 * 1024, 13);
  Route slow{big};
  slow.chunk_delay = 10ms;
  origin.add("/big.bin", slow);
  const std::string small = test::make_bytes(4096, 14);
  origin.add("/small.bin", Route{small});
  TempDir dir;
  std::int64_t running_id = 0;
  {
    store::BlobStore s({dir.path()});
    fills::FillPool pool(s, pool_options(1));
    running_id = pool.enqueue(origin.url("/big.bin"))->job.id;
    pool.enqueue(origin.url("/small.bin"), {{"X-Lab", "kept across restarts"}});
    REQUIRE(eventually([&] { return pool.get(running_id)->bytes_done >= 256 * 1024; }));
    pool.shutdown();
    CHECK(s.pending_jobs()->size() == 2);
  }
  const auto big_key = *url::key_id(origin.url("/big.bin"));
  const auto part_size = fs::file_size(dir / "tmp" / (big_key + ".part"));
  CHECK(part_size >= 256 * 1024);
  slow.chunk_delay = 0ms;
  origin.add("/big.bin", slow);

  store::BlobStore s({dir.path()});
  CHECK(s.recovery().stray_parts_removed == 0);
  fills::FillPool pool(s, pool_options(1));
  const auto resumed = pool.wait(running_id, k_deadline);
  REQUIRE(resumed.has_value());
  CHECK(resumed->status == JobStatus::completed);
  REQUIRE(eventually([&] { return s.find(*url::key_id(origin.url("/small.bin"))).has_value(); }));
  CHECK(s.find(big_key)->sha256 == digest::sha256_hex(big));
  CHECK(s.find(*url::key_id(origin.url("/small.bin")))->sha256 == digest::sha256_hex(small));
  const auto ranges = origin.ranges("/big.bin");
  REQUIRE(ranges.size() == 2);
  CHECK(ranges[1] == "bytes=" + std::to_string(part_size) + "-");
  CHECK(s.pending_jobs()->empty());
}

TEST_CASE("pool: cancel and shutdown do not wait for a silent origin", "[fills][pool]") {
  // The origin sends headers, then nothing: only the watchdog can end the read early.
  Origin origin;
  Route silent(test::make_bytes(1024 * 1024, 15));
  silent.chunk_delay = std::chrono::hours(1);
  origin.add("/silent.bin", silent);
  TempDir dir;
  store::BlobStore s({dir.path()});
  fills::PoolOptions options = pool_options(1);
  options.fetch.read_timeout = std::chrono::hours(1); // waiting for it would trip ctest's timeout
  fills::FillPool pool(s, options);
  const auto job = pool.enqueue(origin.url("/silent.bin"));
  REQUIRE(job.has_value());
  REQUIRE(eventually([&] { return pool.get(job->job.id)->status == JobStatus::running; }));
  REQUIRE(eventually([&] { return origin.gets("/silent.bin") == 1; }));
  CHECK(pool.cancel(job->job.id));
  const auto ended = pool.wait(job->job.id, k_deadline);
  REQUIRE(ended.has_value());
  CHECK(ended->status == JobStatus::cancelled);
  CHECK(files_in(dir / "tmp") == 0);
}

// ---------------------------------------------------------------------------
// Issue 13: what the cache stores is exactly what the origin would have served.
// One test (or a few) per numbered case of the "Why" that lives below
// the HTTP server, against an origin that misbehaves on purpose.

namespace {

const char k_gzip_body[] =
    "\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\x2b\xcf\x2c\xc9\x48\x4e\x4c\xce\x48\x55\x28\x2e\xc9\x2f\x4a\x2d"
    "\x56\x28\xcf\x48\x2c\x51\x28\x01\xf2\xf3\x8b\x32\xd3\x33\xf3\x14\x8a\x53\xf3\x4a\xb8\xca\xe9\xae\x0a\x00"
    "\x62\x8b\x3b\x61\x98\x00\x00\x00";
const std::string k_gzip(k_gzip_body, sizeof k_gzip_body - 1); // gzip of 4 lines of text, 60 bytes

origin::FetchRequest request_for(const std::string& url, const TempDir& dir, const std::string& name = "x") {
  origin::FetchRequest request;
  request.url = url;
  request.part_path = dir / (name + ".part");
  request.resume_state_path = dir / (name + ".resume");
  return request;
}

Route version(std::string body, std::string etag = {}, std::string last_modified = {}) {
  Route route{std::move(body)};
  route.etag = std::move(etag);
  route.last_modified = std::move(last_modified);
  return route;
}

// A route that cuts its body after `at` bytes once, then serves `next`.
Route cut_once_then(Route first, std::size_t at, Route next) {
  first.truncate_at = at;
  first.truncate_times = 1;
  first.then = {std::move(next)};
  return first;
}

std::string key_of(const std::string& url) {
  return *url::key_id(url);
}

} // namespace

TEST_CASE("case 3: every resume carries If-Range, a changed body restarts from zero", "[fills][resume]") {
  Origin origin;
  const std::string v1 = test::make_bytes(256 * 1024, 31);
  const std::string v2 = test::make_bytes(256 * 1024, 32);
  TempDir dir;

  SECTION("strong ETag: the origin honours If-Range and answers 200 with the new body") {
    origin.add("/f.bin", cut_once_then(version(v1, "\"v1\""), 100 * 1024, version(v2, "\"v2\"")));
    const auto r = origin::fetch_to_file(request_for(origin.url("/f.bin"), dir), local_options());
    REQUIRE(r.has_value());
    CHECK(r->sha256 == digest::sha256_hex(v2));
    CHECK(r->etag == "\"v2\"");
    const auto got = origin.received();
    REQUIRE(got.size() == 2);
    CHECK(got[1].header("Range") == "bytes=102400-");
    CHECK(got[1].header("If-Range") == "\"v1\"");
  }
  SECTION("an origin that ignores If-Range: a 206 with another ETag restarts from zero") {
    Route changed = version(v2, "\"v2\"");
    changed.honour_if_range = false;
    origin.add("/f.bin", cut_once_then(version(v1, "\"v1\""), 100 * 1024, changed));
    const auto r = origin::fetch_to_file(request_for(origin.url("/f.bin"), dir), local_options());
    REQUIRE(r.has_value());
    CHECK(r->sha256 == digest::sha256_hex(v2)); // never v1's first half spliced with v2's second
    const auto got = origin.received();
    REQUIRE(got.size() == 3);
    CHECK(got[1].header("If-Range") == "\"v1\"");
    CHECK(got[2].header("Range").empty());
  }
  SECTION("Last-Modified when there is no strong ETag") {
    Route changed = version(v2, "W/\"weak2\"", "Tue, 02 Jan 2024 00:00:00 GMT");
    changed.honour_if_range = false;
    origin.add("/f.bin", cut_once_then(version(v1, "W/\"weak1\"", "Mon, 01 Jan 2024 00:00:00 GMT"), 100 * 1024,
                                       changed));
    const auto r = origin::fetch_to_file(request_for(origin.url("/f.bin"), dir), local_options());
    REQUIRE(r.has_value());
    CHECK(r->sha256 == digest::sha256_hex(v2));
    const auto got = origin.received();
    REQUIRE(got.size() == 3);
    CHECK(got[1].header("If-Range") == "Mon, 01 Jan 2024 00:00:00 GMT");
  }
  SECTION("no validator: a 206 whose total differs from the first length restarts") {
    const std::string longer = test::make_bytes(300 * 1024, 33);
    origin.add("/f.bin", cut_once_then(version(v1), 100 * 1024, version(longer)));
    const auto r = origin::fetch_to_file(request_for(origin.url("/f.bin"), dir), local_options());
    REQUIRE(r.has_value());
    CHECK(r->sha256 == digest::sha256_hex(longer));
    const auto got = origin.received();
    REQUIRE(got.size() == 3);
    CHECK(got[1].header("Range") == "bytes=102400-");
    CHECK_FALSE(got[1].headers.count("If-Range"));
    CHECK(got[2].header("Range").empty());
  }
  SECTION("no validator, same length: accepted (the documented residual risk)") {
    origin.add("/f.bin", cut_once_then(version(v1), 100 * 1024, version(v1)));
    const auto r = origin::fetch_to_file(request_for(origin.url("/f.bin"), dir), local_options());
    REQUIRE(r.has_value());
    CHECK(r->sha256 == digest::sha256_hex(v1));
    CHECK(origin.received().size() == 2);
  }
  SECTION("a 416 to the resume restarts from zero instead of committing the first half") {
    const std::string shorter = test::make_bytes(100 * 1024, 34); // exactly the bytes already held
    origin.add("/f.bin", cut_once_then(version(v1), 100 * 1024, version(shorter)));
    const auto r = origin::fetch_to_file(request_for(origin.url("/f.bin"), dir), local_options());
    REQUIRE(r.has_value());
    CHECK(r->sha256 == digest::sha256_hex(shorter));
    const auto got = origin.received();
    REQUIRE(got.size() == 3); // 200 cut, 416, 200
    CHECK(got[2].header("Range").empty());
  }
}

TEST_CASE("case 3: a part and its resume state survive between calls, a 416 for all bytes held completes",
          "[fills][resume]") {
  Origin origin;
  const std::string v1 = test::make_bytes(200 * 1024, 35);
  TempDir dir;
  // The first call receives every byte and is interrupted before it could
  // return (as a crash before the commit would): the part and its state stay.
  auto interrupted = [&](const std::string& path) {
    std::atomic<bool> stop{false};
    auto request = request_for(origin.url(path), dir);
    request.cancel = &stop;
    request.on_progress = [&](std::uint64_t done, std::uint64_t total) {
      if (total != 0 && done == total) {
        stop = true;
      }
    };
    const auto r = origin::fetch_to_file(request, local_options());
    REQUIRE_FALSE(r.has_value());
    REQUIRE(r.error().reason == origin::FetchErrc::cancelled);
    REQUIRE(fs::file_size(request.part_path) == v1.size());
    REQUIRE(fs::exists(request.resume_state_path));
  };

  SECTION("same representation: 416 bytes */N with the same ETag means done") {
    origin.add("/f.bin", version(v1, "\"v1\""));
    interrupted("/f.bin");
    const auto r = origin::fetch_to_file(request_for(origin.url("/f.bin"), dir), local_options());
    REQUIRE(r.has_value());
    CHECK(r->sha256 == digest::sha256_hex(v1));
    CHECK(r->etag == "\"v1\"");
    const auto got = origin.received();
    REQUIRE(got.size() == 2);
    CHECK(got[1].header("If-Range") == "\"v1\"");
    CHECK_FALSE(fs::exists(dir / "x.resume")); // nothing left to resume
  }
  SECTION("a new version of the same length behind a 416: restart") {
    const std::string v2 = test::make_bytes(200 * 1024, 36);
    Route changed = version(v2, "\"v2\"");
    changed.honour_if_range = false;
    Route first = version(v1, "\"v1\"");
    first.then = {changed};
    origin.add("/f.bin", first);
    interrupted("/f.bin");
    const auto r = origin::fetch_to_file(request_for(origin.url("/f.bin"), dir), local_options());
    REQUIRE(r.has_value());
    CHECK(r->sha256 == digest::sha256_hex(v2));
    CHECK(origin.received().size() == 3);
  }
  SECTION("part bytes with no resume state are not trusted: fetched again from zero") {
    origin.add("/f.bin", version(v1, "\"v1\""));
    interrupted("/f.bin");
    fs::remove(dir / "x.resume");
    const auto r = origin::fetch_to_file(request_for(origin.url("/f.bin"), dir), local_options());
    REQUIRE(r.has_value());
    CHECK(r->sha256 == digest::sha256_hex(v1));
    const auto got = origin.received();
    REQUIRE(got.size() == 2);
    CHECK(got[1].header("Range").empty());
  }
}

TEST_CASE("case 9: two Content-Length headers are refused before the body is read", "[fills][framing]") {
  TempDir dir;
  struct Case {
    const char* name;
    std::string head;
    const char* says;
  };
  const Case cases[] = {
      {"conflicting", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 10\r\n", "conflicting Content-Length"},
      {"duplicate", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 10\r\n", "duplicate Content-Length"},
      {"with chunked", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n",
       "both Content-Length and Transfer-Encoding"},
      {"malformed", "HTTP/1.1 200 OK\r\nContent-Length: 1O\r\n", "malformed Content-Length"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    test::RawOrigin raw(c.head + "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n0123456789");
    const auto request = request_for(raw.url("/two.bin"), dir, c.name);
    const auto r = origin::fetch_to_file(request, local_options());
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().reason == origin::FetchErrc::malformed);
    CHECK(r.error().detail.find(c.says) != std::string::npos);
    CHECK(raw.requests().size() == 1); // refused, not retried
    CHECK(fs::file_size(request.part_path) == 0); // not one byte of it was kept
  }
}

TEST_CASE("case 9: a gzip body sent despite Accept-Encoding: identity is stored as delivered", "[fills][framing]") {
  test::RawOrigin raw("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nContent-Length: " +
                      std::to_string(k_gzip.size()) + "\r\nConnection: close\r\n\r\n" + k_gzip);
  TempDir dir;
  const auto request = request_for(raw.url("/notes.txt"), dir);
  const auto r = origin::fetch_to_file(request, local_options());
  REQUIRE(r.has_value());
  CHECK(r->content_encoding == "gzip");
  CHECK(r->sha256 == digest::sha256_hex(k_gzip));
  CHECK(read_file(request.part_path) == k_gzip); // not decompressed
  REQUIRE(raw.requests().size() == 1);
  CHECK(raw.requests()[0].find("Accept-Encoding: identity\r\n") != std::string::npos);
}

TEST_CASE("case 6: no-store, private and HTML responses are refused on the head", "[fills][store-policy]") {
  Origin origin;
  const std::string big = test::make_bytes(512 * 1024, 37);
  auto with = [&](std::string type, std::string cache_control) {
    Route route{big, std::move(type)};
    if (!cache_control.empty()) {
      route.headers = {{"Cache-Control", std::move(cache_control)}};
    }
    return route;
  };
  origin.add("/no-store", with("application/octet-stream", "no-store"));
  origin.add("/private", with("application/octet-stream", "max-age=60, private"));
  origin.add("/private-field", with("application/octet-stream", "private=\"Set-Cookie\", max-age=60"));
  origin.add("/login", with("text/html; charset=utf-8", ""));
  origin.add("/xhtml", with("application/xhtml+xml", ""));
  origin.add("/public", with("application/octet-stream", "public, max-age=600"));
  TempDir dir;
  origin::FetchOptions storing = local_options();
  storing.only_storable = true;

  struct Case {
    const char* path;
    const char* detail; // nullptr: stored
  };
  const Case cases[] = {
      {"/no-store", "origin marked it no-store"},
      {"/private", "origin marked it private"},
      {"/private-field", nullptr},
      {"/login", "an HTML page (text/html; start the server with --cache-html"},
      {"/xhtml", "an HTML page (application/xhtml+xml"},
      {"/public", nullptr},
  };
  for (const auto& c : cases) {
    INFO(c.path);
    const auto request = request_for(origin.url(c.path), dir, c.path + 1);
    const auto r = origin::fetch_to_file(request, storing);
    if (c.detail == nullptr) {
      REQUIRE(r.has_value());
      CHECK(r->size == big.size());
      continue;
    }
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().reason == origin::FetchErrc::not_storable);
    CHECK(r.error().detail.find(c.detail) != std::string::npos);
    CHECK(fs::file_size(request.part_path) == 0);
    CHECK(origin.gets(c.path) == 1);
  }
  // --cache-html stores pages; a client fetching for itself is not the cache and takes everything.
  origin::FetchOptions html = storing;
  html.cache_html = true;
  CHECK(origin::fetch_to_file(request_for(origin.url("/login"), dir, "login-html"), html).has_value());
  CHECK(origin::fetch_to_file(request_for(origin.url("/no-store"), dir, "client"), local_options()).has_value());
}

TEST_CASE("case 8: a trickle below min_rate fails, and so does a stall before the head", "[fills][slow]") {
  Origin origin;
  Route trickle{test::make_bytes(64 * 1024, 38)};
  trickle.chunk_size = 20;
  trickle.chunk_delay = 100ms; // 200 bytes/s
  origin.add("/trickle.bin", trickle);
  Route stall{test::make_bytes(1024, 39)};
  stall.head_delay = 30s; // ended by the origin's destructor
  origin.add("/stall.bin", stall);
  Route fast{test::make_bytes(256 * 1024, 40)};
  fast.chunk_size = 4096;
  fast.chunk_delay = 5ms; // ~800 KiB/s
  origin.add("/fast.bin", fast);
  TempDir dir;
  origin::FetchOptions options = local_options();
  options.min_rate = 1024;
  options.rate_window = 800ms;
  options.head_timeout = 600ms;

  auto started = std::chrono::steady_clock::now();
  auto r = origin::fetch_to_file(request_for(origin.url("/trickle.bin"), dir, "trickle"), options);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().reason == origin::FetchErrc::too_slow);
  CHECK(r.error().detail.find("below the minimum rate") != std::string::npos);
  CHECK(r.error().detail.find("1.0 KiB/s") != std::string::npos);
  CHECK(origin.gets("/trickle.bin") == 1); // not retried: it would trickle again
  CHECK(std::chrono::steady_clock::now() - started < 10s);

  started = std::chrono::steady_clock::now();
  r = origin::fetch_to_file(request_for(origin.url("/stall.bin"), dir, "stall"), options);
  const auto took = std::chrono::steady_clock::now() - started;
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().reason == origin::FetchErrc::timeout);
  CHECK(r.error().detail == "no response head within 600 ms");
  CHECK(took >= 600ms);
  CHECK(took < 10s);
  CHECK(origin.gets("/stall.bin") == 1);

  // A body that keeps moving above the rate is not disturbed, however long it takes.
  r = origin::fetch_to_file(request_for(origin.url("/fast.bin"), dir, "fast"), options);
  REQUIRE(r.has_value());
  CHECK(r->size == 256 * 1024);
}

TEST_CASE("case 8: never fill from ourselves: the server's own sockets are refused", "[fills][self]") {
  Origin origin;
  origin.add("/a.bin", Route{"bytes"});
  origin.add("/to-self", Route::redirect("http://localhost:" + std::to_string(origin.port()) + "/a.bin"));
  Origin other;
  other.add("/hop", Route::redirect(origin.url("/a.bin")));
  TempDir dir;
  origin::FetchOptions options = local_options();
  options.policy = origin::OriginPolicy({"127.0.0.1", "localhost"}, loopback());

  for (const char* listening : {"127.0.0.1", "0.0.0.0", "::", "[::]"}) {
    INFO(listening);
    auto own = std::make_shared<origin::OwnListeners>();
    REQUIRE_FALSE(own->add(listening, origin.port()).has_value());
    options.own_listeners = own;
    const int before = origin.requests();
    for (const std::string& url : {origin.url("/a.bin"), other.url("/hop")}) {
      INFO(url);
      const auto r = origin::fetch_to_file(request_for(url, dir), options);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().reason == origin::FetchErrc::refused_origin);
      CHECK(r.error().detail.find(":" + std::to_string(origin.port()) + " is this server's own listening socket") !=
            std::string::npos);
    }
    CHECK(origin.requests() == before); // no byte was asked of it
  }
  // Another port of the same host is someone else.
  auto own = std::make_shared<origin::OwnListeners>();
  REQUIRE_FALSE(own->add("0.0.0.0", other.port()).has_value());
  options.own_listeners = own;
  CHECK(origin::fetch_to_file(request_for(origin.url("/a.bin"), dir), options).has_value());
  CHECK(own->add("127.0.0.1", 0).has_value()); // a bad port is an error, not a silent no-op

  // A wildcard listener covers every address of the host's interfaces, not only loopback.
  ifaddrs* list = nullptr;
  REQUIRE(::getifaddrs(&list) == 0);
  int checked = 0;
  for (const ifaddrs* entry = list; entry != nullptr; entry = entry->ifa_next) {
    if (entry->ifa_addr == nullptr || (entry->ifa_addr->sa_family != AF_INET && entry->ifa_addr->sa_family != AF_INET6)) {
      continue;
    }
    auto wildcard = std::make_shared<origin::OwnListeners>();
    REQUIRE_FALSE(wildcard->add("::", 3000).has_value());
    CHECK(wildcard->check(entry->ifa_addr, 3000).has_value());
    CHECK_FALSE(wildcard->check(entry->ifa_addr, 3001).has_value());
    ++checked;
  }
  ::freeifaddrs(list);
  CHECK(checked > 0);
  sockaddr_in elsewhere{};
  elsewhere.sin_family = AF_INET;
  ::inet_pton(AF_INET, "192.0.2.7", &elsewhere.sin_addr); // TEST-NET-1: never a local address here
  auto wildcard = std::make_shared<origin::OwnListeners>();
  REQUIRE_FALSE(wildcard->add("0.0.0.0", 3000).has_value());
  CHECK_FALSE(wildcard->check(reinterpret_cast<const sockaddr*>(&elsewhere), 3000).has_value());
  sockaddr_in6 mapped{};
  mapped.sin6_family = AF_INET6;
  ::inet_pton(AF_INET6, "::ffff:127.0.0.1", &mapped.sin6_addr);
  auto exact = std::make_shared<origin::OwnListeners>();
  REQUIRE_FALSE(exact->add("127.0.0.1", 3000).has_value());
  CHECK(exact->check(reinterpret_cast<const sockaddr*>(&mapped), 3000).has_value());
}

TEST_CASE("a conditional request answered 304 writes nothing and says not_modified", "[fills][revalidate]") {
  Origin origin;
  Route route = version(test::make_bytes(4096, 41), "\"e1\"", "Mon, 01 Jan 2024 00:00:00 GMT");
  route.headers = {{"Cache-Control", "max-age=5"}};
  origin.add("/c.bin", route);
  TempDir dir;
  auto request = request_for(origin.url("/c.bin"), dir);
  request.conditional = {"\"e1\"", "Mon, 01 Jan 2024 00:00:00 GMT"};
  auto r = origin::fetch_to_file(request, local_options());
  REQUIRE(r.has_value());
  CHECK(r->not_modified);
  CHECK(r->size == 0);
  CHECK(r->cache_control == "max-age=5");
  CHECK(fs::file_size(request.part_path) == 0);
  auto got = origin.received();
  REQUIRE(got.size() == 1);
  CHECK(got[0].header("If-None-Match") == "\"e1\"");
  CHECK(got[0].header("If-Modified-Since") == "Mon, 01 Jan 2024 00:00:00 GMT");

  request.conditional = {"\"old\"", ""};
  r = origin::fetch_to_file(request, local_options());
  REQUIRE(r.has_value());
  CHECK_FALSE(r->not_modified);
  CHECK(r->size == 4096);
  CHECK(r->etag == "\"e1\"");
  CHECK(r->last_modified == "Mon, 01 Jan 2024 00:00:00 GMT");
}

TEST_CASE("case 1: the query is part of the key, so no one can poison another's URL", "[fills][pool][query]") {
  Origin origin;
  origin.add("/download?file=evil.iso", Route{"EVIL BYTES"});
  origin.add("/download?file=driver.run", Route{"driver bytes"});
  origin.add("/k.iso", Route{"presigned object"});
  TempDir dir;
  store::BlobStore s({dir.path()});
  fills::FillPool pool(s, pool_options());

  const auto evil = pool.enqueue(origin.url("/download?file=evil.iso"));
  REQUIRE(evil.has_value());
  REQUIRE(pool.wait(evil->job.id, k_deadline)->status == JobStatus::completed);
  const auto driver = pool.enqueue(origin.url("/download?file=driver.run"));
  REQUIRE(driver.has_value()); // not "already cached" under the evil bytes
  CHECK(driver->job.key != evil->job.key);
  REQUIRE(pool.wait(driver->job.id, k_deadline)->status == JobStatus::completed);
  CHECK(read_file(s.blob_path(driver->job.key)) == "driver bytes");
  CHECK(read_file(s.blob_path(evil->job.key)) == "EVIL BYTES");
  CHECK(s.describe(driver->job.key)->value().url == origin.url("/download?file=driver.run")); // the row

  // Presigned URLs match by path, and the origin still gets the signature it needs.
  const auto one = pool.enqueue(origin.url("/k.iso?X-Amz-Date=1&X-Amz-Signature=one"));
  REQUIRE(one.has_value());
  REQUIRE(pool.wait(one->job.id, k_deadline)->status == JobStatus::completed);
  const auto two = pool.enqueue(origin.url("/k.iso?X-Amz-Date=2&X-Amz-Signature=two"));
  REQUIRE_FALSE(two.has_value());
  CHECK(two.error().code == fills::EnqueueErrc::already_cached);
  const auto got = origin.received();
  CHECK(std::any_of(got.begin(), got.end(), [](const test::Received& r) {
    return r.target == "/k.iso?X-Amz-Date=1&X-Amz-Signature=one";
  }));

  // --drop-query: withcache 0.3's key, for an operator who wants it.
  TempDir dir03;
  store::BlobStore s03({dir03.path()});
  fills::PoolOptions options03 = pool_options();
  options03.key_options.drop_query = true;
  fills::FillPool pool03(s03, options03);
  const auto first = pool03.enqueue(origin.url("/download?file=driver.run"));
  REQUIRE(first.has_value());
  REQUIRE(pool03.wait(first->job.id, k_deadline)->status == JobStatus::completed);
  CHECK(pool03.enqueue(origin.url("/download?file=evil.iso")).error().code == fills::EnqueueErrc::already_cached);
  CHECK(pool03.key_of(origin.url("/download?file=x")).value() == first->job.key);
}

TEST_CASE("case 2: the fill fetches the path its key names, not the raw dot segments", "[fills][pool][query]") {
  Origin origin;
  origin.add("/releases/tool.tar.gz", Route{"the release"});
  // What an origin that does not normalise would answer for the raw path: another resource.
  origin.add("/pub/%2E%2E/releases/tool.tar.gz", Route{"ANOTHER RESOURCE"});
  TempDir dir;
  store::BlobStore s({dir.path()});
  fills::FillPool pool(s, pool_options());
  const auto job = pool.enqueue(origin.url("/pub/%2E%2E/releases/tool.tar.gz?v=1"));
  REQUIRE(job.has_value());
  CHECK(job->job.key == key_of(origin.url("/releases/tool.tar.gz?v=1")));
  REQUIRE(pool.wait(job->job.id, k_deadline)->status == JobStatus::completed);
  CHECK(read_file(s.blob_path(job->job.key)) == "the release");
  const auto got = origin.received();
  REQUIRE(got.size() == 1);
  CHECK(got[0].target == "/releases/tool.tar.gz?v=1");
}

TEST_CASE("case 3: a fill resumed after a restart obeys If-Range too", "[fills][pool][resume]") {
  Origin origin;
  const std::string v1 = test::make_bytes(4 * 1024 * 1024, 42);
  const std::string v2 = test::make_bytes(4 * 1024 * 1024, 43);
  Route slow = version(v1, "\"v1\"");
  slow.chunk_delay = 10ms;
  origin.add("/big.bin", slow);
  TempDir dir;
  const auto key = key_of(origin.url("/big.bin"));
  std::int64_t id = 0;
  {
    store::BlobStore s({dir.path()});
    fills::FillPool pool(s, pool_options(1));
    id = pool.enqueue(origin.url("/big.bin"))->job.id;
    REQUIRE(eventually([&] { return pool.get(id)->bytes_done >= 256 * 1024; }));
    pool.shutdown();
  }
  CHECK(fs::exists(dir / "tmp" / (key + ".resume")));
  origin.add("/big.bin", version(v2, "\"v2\"")); // the vendor published a new build meanwhile

  store::BlobStore s({dir.path()});
  fills::FillPool pool(s, pool_options(1));
  const auto done = pool.wait(id, k_deadline);
  REQUIRE(done.has_value());
  CHECK(done->status == JobStatus::completed);
  CHECK(s.find(key)->sha256 == digest::sha256_hex(v2));
  CHECK(s.describe(key)->value().etag == "\"v2\""); // an immutable artifact's validators live in its row only
  CHECK(read_file(s.blob_path(key)) == v2);
  const auto got = origin.received();
  REQUIRE(got.size() == 2);
  CHECK_FALSE(got[1].header("Range").empty());
  CHECK(got[1].header("If-Range") == "\"v1\"");
  CHECK(files_in(dir / "tmp") == 0);
}

TEST_CASE("fresh_until: max-age, Expires against Date, immutable, --max-age", "[fills][freshness]") {
  const UnixTime t = 1'700'000'000;
  struct Case {
    const char* cache_control;
    const char* expires;
    const char* date;
    const char* age;
    std::optional<std::chrono::seconds> max_age;
    UnixTime expected;
  };
  const Case cases[] = {
      {"", "", "", "", std::nullopt, 0}, // no explicit lifetime: never revalidated
      {"public", "", "", "", std::nullopt, 0},
      {"max-age=2", "", "", "", std::nullopt, t + 2},
      {"public, max-age=600", "", "", "100", std::nullopt, t + 500}, // Age counts against it
      {"max-age=60", "", "", "600", std::nullopt, t},
      {"max-age=600, immutable", "", "", "", std::nullopt, 0},
      {"immutable", "Thu, 01 Jan 2099 00:00:00 GMT", "", "", std::nullopt, 0},
      {"max-age=0", "", "", "", std::nullopt, t},
      {"no-cache", "", "", "", std::nullopt, t},
      {"max-age=abc", "", "", "", std::nullopt, t},
      {"max-age=60", "Thu, 01 Jan 2099 00:00:00 GMT", "", "", std::nullopt, t + 60}, // max-age wins
      // Expires relative to the origin's Date, so a skewed origin clock does not matter.
      {"", "Mon, 01 Jan 2024 01:00:00 GMT", "Mon, 01 Jan 2024 00:00:00 GMT", "", std::nullopt, t + 3600},
      {"", "Mon, 01 Jan 2024 00:00:00 GMT", "Mon, 01 Jan 2024 01:00:00 GMT", "", std::nullopt, t},
      {"", "0", "", "", std::nullopt, t}, // an invalid Expires is already expired
      // --max-age gives every artifact that lifetime.
      {"", "", "", "", std::chrono::seconds(7 * 24 * 3600), t + 7 * 24 * 3600},
      {"immutable", "", "", "", std::chrono::seconds(1800), t + 1800},
      {"max-age=5", "", "", "", std::chrono::seconds(1800), t + 1800},
  };
  for (const auto& c : cases) {
    INFO(c.cache_control << " | " << c.expires << " | " << c.date << " | " << c.age);
    CHECK(fills::fresh_until(c.cache_control, c.expires, c.date, c.age, t, c.max_age) == c.expected);
  }
  Artifact a;
  CHECK_FALSE(fills::is_stale(a, t));
  a.fresh_until = t;
  CHECK(fills::is_stale(a, t));
  CHECK_FALSE(fills::is_stale(a, t - 1));
}

TEST_CASE("case 5: max-age=2 goes stale, a 304 extends it, a new body replaces it under a reader in flight",
          "[fills][pool][revalidate]") {
  Origin origin;
  const std::string v1 = test::make_bytes(1024 * 1024, 44);
  const std::string v2 = test::make_bytes(700 * 1024, 45);
  Route first = version(v1, "\"1\"", "Mon, 01 Jan 2024 00:00:00 GMT");
  first.content_type = "text/plain";
  first.headers = {{"Cache-Control", "max-age=2"}};
  Route same = first; // the 304 says the lifetime is now 10 min
  same.headers = {{"Cache-Control", "max-age=600"}};
  Route changed = version(v2, "\"2\"", "Tue, 02 Jan 2024 00:00:00 GMT");
  changed.headers = {{"Cache-Control", "max-age=2"}, {"Content-Disposition", "attachment; filename=latest.txt"}};
  // The changed body's fill must still be running while all eight stale hits ask for it (they join it):
  // on a loaded machine a fill of 700 KiB from loopback can end before the last thread starts.
  changed.head_delay = std::chrono::milliseconds(1500);
  first.then = {same, changed};
  origin.add("/latest.txt", first);
  TempDir dir;
  store::BlobStore s({dir.path()});
  fills::FillPool pool(s, pool_options());

  const auto before = util::now();
  const auto filled = pool.enqueue(origin.url("/latest.txt"));
  REQUIRE(filled.has_value());
  REQUIRE(pool.wait(filled->job.id, k_deadline)->status == JobStatus::completed);
  const std::string key = filled->job.key;
  auto artifact = *s.find(key);
  CHECK(artifact.etag == "\"1\"");
  CHECK(artifact.cache_control == "max-age=2");
  CHECK(artifact.fresh_until >= before + 2);
  CHECK(artifact.fresh_until <= util::now() + 2);
  CHECK_FALSE(fills::is_stale(artifact, util::now()));
  // The lifetime passes (a poll with a deadline, on the wall clock the read path uses).
  REQUIRE(eventually([&] { return fills::is_stale(*s.find(key), util::now()); }, 10s));

  // The 304 path: one conditional GET, same bytes, a longer lifetime.
  auto revalidated = pool.revalidate(*s.find(key));
  REQUIRE(revalidated.has_value());
  REQUIRE(pool.wait(revalidated->job.id, k_deadline)->status == JobStatus::completed);
  artifact = *s.find(key);
  CHECK(artifact.sha256 == digest::sha256_hex(v1));
  CHECK(artifact.cache_control == "max-age=600");
  CHECK(artifact.fresh_until >= util::now() + 590);
  CHECK_FALSE(fills::is_stale(artifact, util::now()));
  auto got = origin.received();
  REQUIRE(got.size() == 2);
  CHECK(got[1].header("If-None-Match") == "\"1\"");
  CHECK(got[1].header("If-Modified-Since") == "Mon, 01 Jan 2024 00:00:00 GMT");

  // A download in flight on the old blob during the replacement.
  auto reader = s.open_blob(key);
  REQUIRE(reader.has_value());
  std::string in_flight(v1.size(), '\0');
  REQUIRE(::pread(reader->fd(), in_flight.data(), 4096, 0) == 4096);

  // The changed-body path: a 200 with new bytes replaces the artifact atomically.
  std::vector<std::thread> stale_hits;
  std::vector<std::int64_t> ids(8);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    stale_hits.emplace_back([&, i] {
      const auto r = pool.revalidate(artifact);
      ids[i] = r ? r->job.id : -1;
    });
  }
  for (auto& t : stale_hits) {
    t.join();
  }
  CHECK(std::all_of(ids.begin(), ids.end(), [&](std::int64_t id) { return id == ids[0]; })); // one per key
  REQUIRE(pool.wait(ids[0], k_deadline)->status == JobStatus::completed);
  artifact = *s.find(key);
  CHECK(artifact.sha256 == digest::sha256_hex(v2));
  CHECK(artifact.size == v2.size());
  CHECK(artifact.etag == "\"2\"");
  CHECK(artifact.content_disposition == "attachment; filename=latest.txt");
  CHECK(read_file(s.blob_path(key)) == v2);
  CHECK(s.stored_bytes() == v2.size());

  // The reader that opened v1 completes with v1's bytes and v1's SHA-256.
  REQUIRE(::pread(reader->fd(), in_flight.data() + 4096, v1.size() - 4096, 4096) ==
          static_cast<ssize_t>(v1.size() - 4096));
  CHECK(in_flight == v1);
  CHECK(digest::sha256_hex(in_flight) == reader->artifact().sha256);
  CHECK(origin.gets("/latest.txt") == 3);
  CHECK(files_in(dir / "tmp") == 0);
}

TEST_CASE("case 5: immutable and unlabelled artifacts are never revalidated, --max-age labels everything",
          "[fills][pool][revalidate]") {
  Origin origin;
  Route immutable{"versioned"};
  immutable.headers = {{"Cache-Control", "public, max-age=31536000, immutable"}};
  origin.add("/v1.2.3.tgz", immutable);
  origin.add("/plain.iso", Route{"plain"});
  TempDir dir;
  store::BlobStore s({dir.path()});
  fills::FillPool pool(s, pool_options());
  for (const char* path : {"/v1.2.3.tgz", "/plain.iso"}) {
    const auto job = pool.enqueue(origin.url(path));
    REQUIRE(pool.wait(job->job.id, k_deadline)->status == JobStatus::completed);
    CHECK(s.find(job->job.key)->fresh_until == 0);
    CHECK_FALSE(fills::is_stale(*s.find(job->job.key), util::now() + 10 * 365 * 24 * 3600));
  }

  TempDir labelled;
  store::BlobStore s2({labelled.path()});
  fills::PoolOptions options = pool_options();
  options.max_age = std::chrono::hours(12);
  fills::FillPool pool2(s2, options);
  const auto job = pool2.enqueue(origin.url("/v1.2.3.tgz"));
  REQUIRE(pool2.wait(job->job.id, k_deadline)->status == JobStatus::completed);
  const auto until = s2.find(job->job.key)->fresh_until;
  CHECK(until >= util::now() + 12 * 3600 - 5);
  CHECK(until <= util::now() + 12 * 3600);
}

TEST_CASE("readers never see bytes that differ from the artifact they were given, through replacements",
          "[fills][pool][revalidate]") {
  Origin origin;
  constexpr int k_versions = 8;
  std::vector<std::string> bodies;
  std::vector<Route> later;
  for (int i = 0; i <= k_versions; ++i) {
    bodies.push_back(test::make_bytes(static_cast<std::size_t>(200 + 37 * i) * 1024, 50 + static_cast<std::uint32_t>(i)));
    if (i > 0) {
      later.push_back(version(bodies.back(), "\"" + std::to_string(i) + "\""));
    }
  }
  Route first = version(bodies[0], "\"0\"");
  first.then = later;
  origin.add("/moving.bin", first);
  TempDir dir;
  store::BlobStore s({dir.path()});
  fills::FillPool pool(s, pool_options());
  const auto filled = pool.enqueue(origin.url("/moving.bin"));
  REQUIRE(pool.wait(filled->job.id, k_deadline)->status == JobStatus::completed);
  const std::string key = filled->job.key;

  std::atomic<bool> stop{false};
  std::atomic<int> reads{0};
  std::atomic<int> mismatches{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      while (!stop) {
        auto opened = s.open_blob(key);
        if (!opened) {
          ++mismatches; // a cached key is always served
          continue;
        }
        std::string bytes(opened->artifact().size + 1, '\0');
        const ssize_t n = ::pread(opened->fd(), bytes.data(), bytes.size(), 0);
        bytes.resize(n < 0 ? 0 : static_cast<std::size_t>(n));
        if (bytes.size() != opened->artifact().size || digest::sha256_hex(bytes) != opened->artifact().sha256) {
          ++mismatches;
        }
        ++reads;
      }
    });
  }
  for (int i = 1; i <= k_versions; ++i) {
    const auto job = pool.revalidate(*s.find(key));
    REQUIRE(job.has_value());
    REQUIRE(pool.wait(job->job.id, k_deadline)->status == JobStatus::completed);
    CHECK(s.find(key)->sha256 == digest::sha256_hex(bodies[static_cast<std::size_t>(i)]));
  }
  REQUIRE(eventually([&] { return reads.load() > 20; }));
  stop = true;
  for (auto& t : readers) {
    t.join();
  }
  CHECK(mismatches == 0);
  CHECK(s.stored_bytes() == bodies.back().size());
}

TEST_CASE("case 6: no-store, private and HTML are not stored, the reason goes on the miss, --cache-html "
          "stores pages",
          "[fills][pool][store-policy]") {
  Origin origin;
  Route no_store{"login first"};
  no_store.headers = {{"Cache-Control", "no-store"}};
  origin.add("/no-store.bin", no_store);
  origin.add("/session-expired", Route{"<html>please log in</html>", "text/html; charset=utf-8"});
  TempDir dir;
  store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
  fills::FillPool pool(s, pool_options());

  const auto refused = pool.enqueue(origin.url("/no-store.bin"));
  REQUIRE(refused.has_value());
  auto job = pool.wait(refused->job.id, k_deadline);
  CHECK(job->status == JobStatus::failed);
  CHECK(job->error_reason == "not_storable");
  auto misses = s.list_misses({0, 10, "no-store"}).value();
  REQUIRE(misses.total == 1);
  CHECK(misses.items[0].last_reason == "not stored: origin marked it no-store");
  const auto events = s.list_events({0, 10, "fill_refused"}).value();
  REQUIRE(events.total == 1);
  CHECK(events.items[0].details.find("not stored: origin marked it no-store") != std::string::npos);
  // Later reads are not fetched again, and say why.
  const auto again = pool.enqueue(origin.url("/no-store.bin"));
  REQUIRE_FALSE(again.has_value());
  CHECK(again.error().code == fills::EnqueueErrc::backing_off);
  CHECK(again.error().message == "not stored: origin marked it no-store");
  CHECK(origin.gets("/no-store.bin") == 1);

  const auto page = pool.enqueue(origin.url("/session-expired"));
  job = pool.wait(page->job.id, k_deadline);
  CHECK(job->status == JobStatus::failed);
  CHECK(job->error_reason == "not_storable");
  misses = s.list_misses({0, 10, "session"}).value();
  REQUIRE(misses.total == 1);
  CHECK(misses.items[0].last_reason.starts_with("not stored: an HTML page (text/html"));
  CHECK(files_in(dir / "blobs") == 0);
  CHECK(files_in(dir / "tmp") == 0);

  TempDir html_dir;
  store::BlobStore html_store({html_dir.path()});
  fills::PoolOptions options = pool_options();
  options.fetch.cache_html = true;
  fills::FillPool html_pool(html_store, options);
  const auto stored = html_pool.enqueue(origin.url("/session-expired"));
  REQUIRE(html_pool.wait(stored->job.id, k_deadline)->status == JobStatus::completed);
  CHECK(html_store.find(stored->job.key)->content_type == "text/html; charset=utf-8");
}

TEST_CASE("case 7: a failed URL backs off, an operator's Download clears it", "[fills][pool][negative-cache]") {
  Origin origin; // /missing answers 404 until the test adds it
  TempDir dir;
  store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
  fills::FillPool pool(s, pool_options());
  const std::string url = origin.url("/missing.iso");

  const auto before = util::now();
  auto job = pool.enqueue(url);
  REQUIRE(job.has_value());
  CHECK(pool.wait(job->job.id, k_deadline)->error_reason == "http_status");
  auto misses = s.list_misses({}).value();
  REQUIRE(misses.total == 1);
  CHECK(misses.items[0].last_reason == "not fetched: origin answered HTTP 404");
  CHECK(misses.items[0].failures == 1);
  CHECK(misses.items[0].retry_after >= before + 600);
  CHECK(misses.items[0].retry_after <= util::now() + 600);
  CHECK(s.list_events({0, 10, "fill_failed"})->total == 1);

  // Probes within the back-off are refused with the reason, without asking the origin.
  for (int i = 0; i < 5; ++i) {
    const auto refused = pool.enqueue(url);
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == fills::EnqueueErrc::backing_off);
    CHECK(refused.error().message == "not fetched: origin answered HTTP 404");
    CHECK(refused.error().retry_after == misses.items[0].retry_after);
  }
  CHECK(origin.gets("/missing.iso") == 1);
  CHECK(pool.list().size() == 1); // no duplicate failed rows in Downloads

  // An operator's Download asks again at once: it fails again, and the back-off starts over.
  job = pool.enqueue(url, {}, true);
  REQUIRE(job.has_value());
  CHECK(pool.wait(job->job.id, k_deadline)->status == JobStatus::failed);
  CHECK(origin.gets("/missing.iso") == 2);
  CHECK(s.backoff(job->job.key, util::now())->failures == 1);

  // Once the vendor publishes it, only the operator's Download fetches it before the back-off ends.
  origin.add("/missing.iso", Route{"published"});
  CHECK(pool.enqueue(url).error().code == fills::EnqueueErrc::backing_off);
  job = pool.enqueue(url, {}, true);
  REQUIRE(job.has_value());
  CHECK(pool.wait(job->job.id, k_deadline)->status == JobStatus::completed);
  CHECK_FALSE(s.backoff(job->job.key, util::now()).has_value());
  CHECK(s.list_misses({})->total == 0);
  CHECK(read_file(s.blob_path(job->job.key)) == "published");
}

TEST_CASE("case 7: a failed revalidation keeps the artifact and backs off", "[fills][pool][negative-cache]") {
  Origin origin;
  Route first = version("v1", "\"1\"");
  first.headers = {{"Cache-Control", "max-age=1"}};
  first.then = {Route::error(404)};
  origin.add("/flaky.txt", first);
  TempDir dir;
  store::BlobStore s({dir.path()});
  fills::FillPool pool(s, pool_options());
  const auto filled = pool.enqueue(origin.url("/flaky.txt"));
  REQUIRE(pool.wait(filled->job.id, k_deadline)->status == JobStatus::completed);
  const auto job = pool.revalidate(*s.find(filled->job.key));
  REQUIRE(job.has_value());
  CHECK(pool.wait(job->job.id, k_deadline)->status == JobStatus::failed);
  CHECK(read_file(s.blob_path(filled->job.key)) == "v1"); // still served
  const auto again = pool.revalidate(*s.find(filled->job.key));
  REQUIRE_FALSE(again.has_value());
  CHECK(again.error().code == fills::EnqueueErrc::backing_off);
  CHECK(again.error().message == "not fetched: origin answered HTTP 404");
  CHECK(origin.gets("/flaky.txt") == 2);
  CHECK(s.list_misses({})->total == 0); // a cached artifact is not a miss
}

TEST_CASE("case 8: slow origins fail a fill with the reason on the miss", "[fills][pool][slow]") {
  Origin origin;
  Route trickle{test::make_bytes(64 * 1024, 46)};
  trickle.chunk_size = 20;
  trickle.chunk_delay = 100ms;
  origin.add("/trickle.bin", trickle);
  Route stall{"never"};
  stall.head_delay = 30s;
  origin.add("/stall.bin", stall);
  TempDir dir;
  store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
  fills::PoolOptions options = pool_options();
  options.fetch.min_rate = 1024;
  options.fetch.rate_window = 800ms;
  options.fetch.head_timeout = 500ms;
  fills::FillPool pool(s, options);
  const auto slow = pool.enqueue(origin.url("/trickle.bin"));
  const auto stalled = pool.enqueue(origin.url("/stall.bin"));
  auto job = pool.wait(slow->job.id, 20s);
  CHECK(job->status == JobStatus::failed);
  CHECK(job->error_reason == "too_slow");
  job = pool.wait(stalled->job.id, 20s);
  CHECK(job->status == JobStatus::failed);
  CHECK(job->error_reason == "timeout");
  CHECK(s.list_misses({0, 10, "trickle"})->items.at(0).last_reason.starts_with(
      "not fetched: below the minimum rate: "));
  CHECK(s.list_misses({0, 10, "stall"})->items.at(0).last_reason == "not fetched: no response head within 500 ms");
  CHECK(eventually([&] { return pool.running() == 0; })); // the workers are free again
}

TEST_CASE("case 9: framing defects are not stored, an encoded body is stored with its encoding",
          "[fills][pool][framing]") {
  test::RawOrigin two("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
                      "0123456789");
  test::RawOrigin gzip("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n"
                       "Content-Length: " + std::to_string(k_gzip.size()) + "\r\nConnection: close\r\n\r\n" + k_gzip);
  TempDir dir;
  store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
  fills::FillPool pool(s, pool_options());
  const auto bad = pool.enqueue(two.url("/two.bin"));
  const auto job = pool.wait(bad->job.id, k_deadline);
  CHECK(job->status == JobStatus::failed);
  CHECK(job->error_reason == "malformed");
  CHECK_FALSE(s.find(bad->job.key).has_value());
  CHECK(s.list_misses({})->items.at(0).last_reason ==
        "not fetched: conflicting Content-Length headers (5 and 10)");

  const auto encoded = pool.enqueue(gzip.url("/notes.txt"));
  REQUIRE(pool.wait(encoded->job.id, k_deadline)->status == JobStatus::completed);
  const auto artifact = s.find(encoded->job.key);
  REQUIRE(artifact.has_value());
  CHECK(artifact->content_encoding == "gzip");
  CHECK(artifact->content_type == "text/plain");
  CHECK(artifact->sha256 == digest::sha256_hex(k_gzip));
  CHECK(read_file(s.blob_path(artifact->key)) == k_gzip);

  // A header value that is not a valid field value (a bare CR) makes the head malformed (RFC 9112 §2.2):
  // the response is refused whole, so nothing of it is ever replayed to readers.
  test::RawOrigin cr("HTTP/1.1 200 OK\r\nContent-Type: application/x\rX-Injected: ct\r\nETag: \"a\rb\"\r\n"
                     "Content-Length: 5\r\nConnection: close\r\n\r\nbytes");
  const auto odd = pool.enqueue(cr.url("/odd.bin"));
  const auto refused = pool.wait(odd->job.id, k_deadline);
  CHECK(refused->status == JobStatus::failed);
  CHECK(refused->error_reason == "malformed");
  CHECK_FALSE(s.find(odd->job.key).has_value());
}

TEST_CASE("case 7: a bad signature asked first does not hold back a valid presigned URL", "[fills][pool][negative-cache]") {
  Origin origin;
  origin.add("/k.iso?X-Amz-Signature=bogus", Route::error(403));
  origin.add("/k.iso?X-Amz-Signature=valid", Route{"the object"});
  Route secret{"vendor bytes"};
  secret.require_authorization = "Bearer good";
  origin.add("/vendor.run", secret);
  TempDir dir;
  store::BlobStore s({dir.path()});
  fills::PoolOptions options = pool_options();
  options.forward_auth = true; // a reader's credentials go into its fill
  fills::FillPool pool(s, options);

  auto job = pool.enqueue(origin.url("/k.iso?X-Amz-Signature=bogus"));
  CHECK(pool.wait(job->job.id, k_deadline)->status == JobStatus::failed);
  // The same request again is held back...
  CHECK(pool.enqueue(origin.url("/k.iso?X-Amz-Signature=bogus")).error().code == fills::EnqueueErrc::backing_off);
  // ...another signature for the same key is not.
  job = pool.enqueue(origin.url("/k.iso?X-Amz-Signature=valid"));
  REQUIRE(job.has_value());
  CHECK(pool.wait(job->job.id, k_deadline)->status == JobStatus::completed);
  CHECK(read_file(s.blob_path(job->job.key)) == "the object");

  // Likewise credentials: an anonymous 401 does not hold back a request that carries them.
  job = pool.enqueue(origin.url("/vendor.run"));
  CHECK(pool.wait(job->job.id, k_deadline)->status == JobStatus::failed);
  CHECK(pool.enqueue(origin.url("/vendor.run")).error().code == fills::EnqueueErrc::backing_off);
  job = pool.enqueue(origin.url("/vendor.run"), {{"Authorization", "Bearer good"}});
  REQUIRE(job.has_value());
  CHECK(pool.wait(job->job.id, k_deadline)->status == JobStatus::completed);
  const auto misses = s.list_misses({}).value();
  CHECK(misses.total == 0);
}

TEST_CASE("pool: the next attempt of a broken transfer resumes its part, under If-Range", "[fills][pool][resume]") {
  Origin origin;
  const std::string body = test::make_bytes(2 * 1024 * 1024, 47);
  Route broken = version(body, "\"b1\"");
  broken.truncate_at = 100 * 1024;
  broken.truncate_times = 5; // every attempt of the first fill
  origin.add("/big.iso", broken);
  TempDir dir;
  store::BlobStore s({dir.path()});
  fills::FillPool pool(s, pool_options());
  auto job = pool.enqueue(origin.url("/big.iso"));
  REQUIRE(pool.wait(job->job.id, k_deadline)->status == JobStatus::failed);
  CHECK(fs::file_size(s.part_path(job->job.key)) == 100 * 1024 * 5); // each attempt resumed the last
  job = pool.enqueue(origin.url("/big.iso"), {}, true); // the operator retries at once
  REQUIRE(pool.wait(job->job.id, k_deadline)->status == JobStatus::completed);
  CHECK(s.find(job->job.key)->sha256 == digest::sha256_hex(body));
  const auto got = origin.received();
  REQUIRE(got.size() == 6);
  CHECK(got[5].header("Range") == "bytes=" + std::to_string(100 * 1024 * 5) + "-");
  CHECK(got[5].header("If-Range") == "\"b1\"");
  CHECK(files_in(dir / "tmp") == 0);

  // A broken transfer of a body that changed meanwhile starts over instead.
  Route changed = version(test::make_bytes(300 * 1024, 48), "\"c2\"");
  Route first = version(test::make_bytes(2 * 1024 * 1024, 49), "\"c1\"");
  first.truncate_at = 100 * 1024;
  first.truncate_times = 5;
  origin.add("/other.iso", first);
  job = pool.enqueue(origin.url("/other.iso"));
  REQUIRE(pool.wait(job->job.id, k_deadline)->status == JobStatus::failed);
  origin.add("/other.iso", changed);
  job = pool.enqueue(origin.url("/other.iso"), {}, true);
  REQUIRE(pool.wait(job->job.id, k_deadline)->status == JobStatus::completed);
  CHECK(s.find(job->job.key)->sha256 == digest::sha256_hex(changed.body));
}

TEST_CASE("queue caps count clients by address, IPv6 by /64, the free-space floor is the smaller of both",
          "[fills][queue]") {
  struct Case {
    const char* address;
    const char* group;
  };
  const Case cases[] = {
      {"127.0.0.1", "127.0.0.1"},
      {"10.1.2.3", "10.1.2.3"},
      {"::ffff:10.1.2.3", "10.1.2.3"},
      {"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
      {"2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"},
      {"2001:db8:1:3::1", "2001:db8:1:3::/64"},
      {"::1", "::/64"},
      {"", ""},
      {"not-an-address", "not-an-address"},
  };
  for (const auto& c : cases) {
    INFO(c.address);
    CHECK(fills::client_group(c.address) == c.group);
  }
  constexpr std::uint64_t gib = 1ULL << 30;
  CHECK(fills::min_free_for(100 * gib, 10 * gib, 5.0) == 5 * gib);    // 5 % of a small disk
  CHECK(fills::min_free_for(1000 * gib, 10 * gib, 5.0) == 10 * gib);  // 10 GiB of a big one
  CHECK(fills::min_free_for(1000 * gib, std::nullopt, 1.0) == 10 * gib);
  CHECK(fills::min_free_for(1000 * gib, 3 * gib, std::nullopt) == 3 * gib);
  CHECK(fills::min_free_for(1000 * gib, std::nullopt, std::nullopt) == 0);
}

TEST_CASE("FillStream: every generation has its own validator, and an ETag a restart repeats is not trusted",
          "[fills][validators]") {
  const auto derived = [](const std::string& etag, std::uint64_t generation) {
    const std::string tail = "-" + std::to_string(generation) + "\"";
    return etag.starts_with("\"wc-fill-") && etag.ends_with(tail) &&
           etag.size() == 9 + 16 + tail.size(); // "wc-fill- + 16 hex + -<n>"
  };
  const origin::Headers v1 = {{"ETag", "\"v1\""}, {"Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT"}};
  const origin::Headers v2 = {{"ETag", "\"v2\""}};

  fills::FillStream stream;
  CHECK(stream.view().etag.empty()); // no head yet
  stream.head(100, v1);
  CHECK(stream.view().etag == "\"v1\""); // the origin's strong ETag
  stream.head(100, v1);                  // a resume (206) of the same generation keeps it
  CHECK(stream.view().etag == "\"v1\"");
  stream.restarting();
  CHECK(stream.view().etag.empty());
  stream.head(100, v2);
  CHECK(stream.view().etag == "\"v2\""); // a new version, a new tag
  stream.restarting();
  stream.head(100, v1); // the first version's tag again, after a restart: not trusted to be its bytes
  CHECK(derived(stream.view().etag, 2));
  CHECK_FALSE(stream.restarted_under_readers()); // nobody was served
  stream.attach();
  stream.detach();
  CHECK(stream.restarted_under_readers());

  // No usable ETag (none, weak, malformed): derived, different per stream and per generation.
  fills::FillStream none;
  fills::FillStream weak;
  fills::FillStream malformed;
  none.head(100, {});
  weak.head(100, {{"ETag", "W/\"w\""}});
  malformed.head(100, {{"ETag", "v1"}});
  for (auto* s : {&none, &weak, &malformed}) {
    CHECK(derived(s->view().etag, 0));
  }
  CHECK(none.view().etag != weak.view().etag);
  const std::string first = none.view().etag;
  none.restarting();
  none.head(100, {});
  CHECK(derived(none.view().etag, 1));
  CHECK(none.view().etag != first);
  none.attach();                         // a reader of generation 1 only; the restart came before it
  CHECK(none.restarted_under_readers()); // conservative: it cannot tell which generation a reader saw
  none.detach();
}
