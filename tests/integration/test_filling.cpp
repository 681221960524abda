// Serving a download to every client while its first fill is still running (SPEC §3 "filling"),
// against a real withcache-server and an origin slowed down so that a fill takes seconds: attached
// clients get the right bytes from one origin GET; a restart or a failure cuts them with a short read
// and never a wrong byte; a killed server resumes.
#include <catch2/catch.hpp>

#include <filesystem>
#include <memory>
#include <thread>
#include <vector>

#include "support/origin.hpp"
#include "support/process.hpp"
#include "support/raw_client.hpp"
#include "support/server_process.hpp"
#include "withcache/digest.hpp"
#include "withcache/url.hpp"

namespace fs = std::filesystem;
using namespace withcache;
using namespace std::chrono_literals;
using test::curl;
using test::Origin;
using test::Route;
using test::ServerProcess;

namespace {

// An origin route that takes about `seconds` to send `body`.
Route slow(const std::string& body, double seconds) {
  Route r(body);
  r.chunk_size = 64 * 1024;
  const auto chunks = std::max<std::size_t>(1, body.size() / r.chunk_size);
  r.chunk_delay = std::chrono::milliseconds(static_cast<long long>(seconds * 1000 / static_cast<double>(chunks)));
  return r;
}

// `curl` of `url` into `out` in the background; its exit code once it ends.
class Download {
 public:
  Download(const std::string& url, fs::path out, std::vector<std::string> extra = {}) : m_out(std::move(out)) {
    std::vector<std::string> argv = {"curl", "-sS", "-o", m_out.string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(url);
    m_process = std::make_unique<test::Process>(argv);
  }
  int exit_code() {
    const auto status = m_process->wait(120s);
    REQUIRE(status.has_value());
    return WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
  }
  [[nodiscard]] std::string bytes() const { return test::slurp(m_out); }

 private:
  fs::path m_out;
  std::unique_ptr<test::Process> m_process;
};

bool filling(const ServerProcess& /*server*/, const std::string& blob) {
  auto head = curl(blob, {"-I"});
  return head.status == 200 && head.headers["x-withcache-status"] == "filling";
}

} // namespace

TEST_CASE("five clients attach to one running fill: right bytes, one origin GET", "[filling]") {
  Origin origin;
  const std::string body = test::make_bytes(6 * 1024 * 1024 + 17, 201);
  origin.add("/herd.iso", slow(body, 3.0));
  ServerProcess server({"--miss-wait", "1s"});
  const std::string blob = server.blob(origin.url("/herd.iso"));
  test::TempDir tmp;

  // The first request starts the fill and is served as soon as the origin's head arrives (--miss-wait).
  std::vector<std::unique_ptr<Download>> clients;
  clients.push_back(std::make_unique<Download>(blob, tmp / "0"));
  REQUIRE(test::eventually([&] { return filling(server, blob); }, 30s));
  // HEAD while filling: 200 at once with the total length, the status, and no SHA-256 yet.
  auto head = curl(blob, {"-I"});
  CHECK(head.headers["content-length"] == std::to_string(body.size()));
  CHECK(head.headers.count("x-withcache-sha256") == 0);
  CHECK(head.headers["x-content-type-options"] == "nosniff");
  for (int i = 1; i < 5; ++i) {
    clients.push_back(std::make_unique<Download>(blob, tmp / std::to_string(i)));
  }
  // A Range inside the declared total waits for its bytes.
  Download tail(blob, tmp / "tail", {"-H", "Range: bytes=" + std::to_string(body.size() - 100000) + "-"});
  for (auto& c : clients) {
    CHECK(c->exit_code() == 0);
    CHECK(c->bytes().size() == body.size());
    CHECK(digest::sha256_hex(c->bytes()) == digest::sha256_hex(body));
  }
  CHECK(tail.exit_code() == 0);
  CHECK(tail.bytes() == body.substr(body.size() - 100000));
  CHECK(origin.gets("/herd.iso") == 1);
  REQUIRE(server.fills_completed(1));
  CHECK(server.metric("withcache_filling_responses_total") >= 6);
  CHECK(server.metric("withcache_filling_bytes_served_total") >= 5.0 * static_cast<double>(body.size()));
  CHECK(server.metric("withcache_origin_bytes_saved_total") >= 4.0 * static_cast<double>(body.size()));
  // Once complete it is an ordinary hit.
  auto hit = curl(blob, {"-I"});
  CHECK(hit.headers.count("x-withcache-status") == 0);
  CHECK(hit.headers["x-withcache-sha256"] == digest::sha256_hex(body));
}

TEST_CASE("a reader that stops never slows the fill or the others", "[filling]") {
  Origin origin;
  const std::string body = test::make_bytes(8 * 1024 * 1024, 202);
  origin.add("/shared.bin", slow(body, 2.0));
  ServerProcess server({"--miss-wait", "1s"});
  const std::string blob = server.blob(origin.url("/shared.bin"));
  test::TempDir tmp;
  Download first(blob, tmp / "first");
  REQUIRE(test::eventually([&] { return filling(server, blob); }, 30s));
  test::RawClient stalled(server.port());
  stalled.send("GET " + blob.substr(server.base().size()) + " HTTP/1.1\r\nHost: c\r\n\r\n");
  CHECK(stalled.read_some(100 * 1024, 10s) == 100 * 1024); // then it reads nothing more
  Download second(blob, tmp / "second");
  CHECK(first.exit_code() == 0);
  CHECK(second.exit_code() == 0);
  CHECK(first.bytes() == body);
  CHECK(second.bytes() == body);
  REQUIRE(server.fills_completed(1));
  CHECK(origin.gets("/shared.bin") == 1);
}

TEST_CASE("a restart from zero cuts the attached streams before a byte of another version", "[filling]") {
  Origin origin;
  const std::string v1 = test::make_bytes(4 * 1024 * 1024, 203);
  const std::string v2 = test::make_bytes(4 * 1024 * 1024, 204);
  // Version 1 is cut off halfway; when the fill resumes, the origin has moved to version 2 (another
  // ETag), so the resume is refused with a 200 and the fill starts over.
  Route first = slow(v1, 2.0);
  first.etag = "\"v1\"";
  first.truncate_at = 2 * 1024 * 1024;
  first.truncate_times = 1;
  Route second = slow(v2, 1.0);
  second.etag = "\"v2\"";
  first.then = {second};
  origin.add("/moving.bin", first);
  ServerProcess server({"--miss-wait", "1s"});
  const std::string blob = server.blob(origin.url("/moving.bin"));
  test::TempDir tmp;
  std::vector<std::unique_ptr<Download>> clients;
  clients.push_back(std::make_unique<Download>(blob, tmp / "0"));
  REQUIRE(test::eventually([&] { return filling(server, blob); }, 30s));
  for (int i = 1; i < 3; ++i) {
    clients.push_back(std::make_unique<Download>(blob, tmp / std::to_string(i)));
  }
  for (auto& c : clients) {
    const int code = c->exit_code();
    const std::string got = c->bytes();
    INFO("curl exit " << code << ", " << got.size() << " bytes");
    CHECK(code == 18); // a short read (CURLE_PARTIAL_FILE): the client knows it did not get the file
    CHECK(got.size() < v1.size());
    CHECK(got == v1.substr(0, got.size())); // every byte it got is version 1's, in place
  }
  REQUIRE(server.fills_completed(1));
  CHECK(curl(blob).body == v2); // the blob is version 2, whole
}

TEST_CASE("a fill that resumes after a dropped origin connection keeps its streams attached", "[filling]") {
  Origin origin;
  const std::string body = test::make_bytes(4 * 1024 * 1024, 205);
  Route flaky = slow(body, 1.5);
  flaky.truncate_at = 1024 * 1024;
  flaky.truncate_times = -1; // every response breaks off after 1 MiB; each resume gets the next MiB
  flaky.etag = "\"same\"";
  origin.add("/flaky.bin", flaky);
  ServerProcess server({"--miss-wait", "1s"});
  const std::string blob = server.blob(origin.url("/flaky.bin"));
  test::TempDir tmp;
  Download client(blob, tmp / "client");
  REQUIRE(test::eventually([&] { return filling(server, blob); }, 30s));
  Download late(blob, tmp / "late");
  for (Download* d : {&client, &late}) {
    CHECK(d->exit_code() == 0);
    CHECK(d->bytes() == body);
  }
  CHECK(origin.gets("/flaky.bin") == 4);
  REQUIRE(server.fills_completed(1));
}

TEST_CASE("a fill that fails for good cuts the attached streams", "[filling]") {
  Origin origin;
  const std::string body = test::make_bytes(4 * 1024 * 1024, 210);
  Route breaks = slow(body, 1.5);
  breaks.truncate_at = 1536 * 1024;
  breaks.truncate_times = 1;
  breaks.etag = "\"gone\"";
  breaks.then = {Route::error(404)}; // the resume finds it gone: the fill fails for good
  origin.add("/broken.bin", breaks);
  ServerProcess server({"--miss-wait", "1s"});
  const std::string blob = server.blob(origin.url("/broken.bin"));
  test::TempDir tmp;
  Download client(blob, tmp / "client");
  REQUIRE(test::eventually([&] { return filling(server, blob); }, 30s));
  Download late(blob, tmp / "late");
  for (Download* d : {&client, &late}) {
    const int code = d->exit_code();
    const std::string got = d->bytes();
    CHECK(code == 18); // a short read, as if the origin had died
    CHECK(got.size() < body.size());
    CHECK(got == body.substr(0, got.size()));
  }
  REQUIRE(test::eventually([&] { return server.metric("withcache_fills_total{outcome=\"failed\"}") >= 1; }, 20s));
  CHECK_FALSE(filling(server, blob));
}

TEST_CASE("withcache-client get from a running fill verifies once the fill completes", "[filling][client]") {
  Origin origin;
  const std::string body = test::make_bytes(3 * 1024 * 1024, 206);
  origin.add("/verified.bin", slow(body, 1.5));
  ServerProcess server({"--miss-wait", "1s"});
  const std::string blob = server.blob(origin.url("/verified.bin"));
  curl(blob, {"-I"}); // starts the fill
  REQUIRE(test::eventually([&] { return filling(server, blob); }, 30s));
  test::TempDir tmp;
  const auto r = test::run({WITHCACHE_CLIENT, "get", origin.url("/verified.bin"), "-o", (tmp / "v.bin").string()},
                           {"WITHCACHE_SERVER=" + server.base()});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("from the cache") != std::string::npos);
  CHECK(r.err.find("SHA-256 verified") != std::string::npos);
  CHECK(test::slurp(tmp / "v.bin") == body);
}

TEST_CASE("a server killed during a fill with attached clients resumes it after a restart", "[filling][crash]") {
  Origin origin;
  const std::string body = test::make_bytes(6 * 1024 * 1024, 207);
  origin.add("/killed.iso", slow(body, 4.0));
  ServerProcess server({"--miss-wait", "1s"});
  const std::string blob = server.blob(origin.url("/killed.iso"));
  test::TempDir tmp;
  Download a(blob, tmp / "a");
  REQUIRE(test::eventually([&] { return filling(server, blob); }, 30s));
  Download b(blob, tmp / "b");
  const auto part = server.dir() / "data" / "tmp" / (*url::key_id(origin.url("/killed.iso")) + ".part");
  REQUIRE(test::eventually([&] {
    std::error_code ec;
    return fs::file_size(part, ec) >= 1024 * 1024 && !ec;
  }));
  server.stop(SIGKILL);
  for (Download* d : {&a, &b}) {
    const int code = d->exit_code();
    CHECK(code != 0); // cut off, not a complete-looking file
    CHECK(d->bytes() == body.substr(0, d->bytes().size()));
  }
  server.start();
  REQUIRE(server.fills_completed(1));
  auto hit = curl(server.blob(origin.url("/killed.iso")));
  CHECK(hit.status == 200);
  CHECK(digest::sha256_hex(hit.body) == digest::sha256_hex(body));
  CHECK(hit.headers["x-withcache-sha256"] == digest::sha256_hex(body));
}

TEST_CASE("a fill with no declared length is not streamed, curated mode never streams", "[filling]") {
  Origin origin;
  Route unsized = slow(test::make_bytes(2 * 1024 * 1024, 208), 2.0);
  unsized.chunked = true;
  origin.add("/unsized.bin", unsized);
  origin.add("/curated.bin", slow(test::make_bytes(2 * 1024 * 1024, 209), 2.0));
  {
    ServerProcess server({"--miss-wait", "1s"});
    const std::string blob = server.blob(origin.url("/unsized.bin"));
    CHECK(curl(blob).status == 404); // waited up to --miss-wait, then: no length, so not streamed
    REQUIRE(test::eventually([&] { return origin.gets("/unsized.bin") == 1; }));
    CHECK(curl(blob, {"-I"}).status == 404);
    REQUIRE(server.fills_completed(1));
    CHECK(curl(blob).status == 200);
  }
  ServerProcess curated({"--curate", "--miss-wait", "1s"});
  const std::string blob = curated.blob(origin.url("/curated.bin"));
  CHECK(curl(blob).status == 404);
  CHECK(curl(curated.base() + "/api/v1/downloads",
             {"-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
              "{\"url\": \"" + origin.url("/curated.bin") + "\"}"})
            .status == 202);
  // While the operator's fill runs, readers get the 404 of curated mode, not the running fill.
  REQUIRE(test::eventually([&] { return origin.gets("/curated.bin") == 1; }));
  CHECK(curl(blob, {"-I"}).status == 404);
  REQUIRE(curated.fills_completed(1));
  CHECK(curl(blob, {"-I"}).status == 200);
}
