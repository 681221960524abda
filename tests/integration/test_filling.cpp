// Serving a download to every client while its first fill is still running (SPEC §3 "filling"),
// against a real withcache-server and an origin slowed down so that a fill takes seconds: attached
// clients get the right bytes from one origin GET; a restart or a failure cuts them with a short read
// and never a wrong byte; a killed server resumes.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <regex>
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
  // A Range inside the declared total, under the fill's validator, waits for its bytes.
  REQUIRE_FALSE(head.headers["etag"].empty());
  Download tail(blob, tmp / "tail",
                {"-H", "Range: bytes=" + std::to_string(body.size() - 100000) + "-", "-H",
                 "If-Range: " + head.headers["etag"]});
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

// --- Never a spliced resume (issue 19): validators while filling and on what can change -------------

namespace {

// `curl(blob, extra)` on a thread of its own, so that several requests meet one running fill.
std::future<test::Response> curl_async(const std::string& url, std::vector<std::string> extra) {
  return std::async(std::launch::async, [url, extra = std::move(extra)] { return curl(url, extra); });
}

test::Response get_within(std::future<test::Response>& response) {
  REQUIRE(response.wait_for(120s) == std::future_status::ready);
  return response.get();
}

// A derived validator: "wc-fill-<16 hex>-<generation>".
bool derived_validator(const std::string& etag, char generation) {
  static const std::regex shape(R"re("wc-fill-[0-9a-f]{16}-([0-9]+)")re");
  std::smatch match;
  return std::regex_match(etag, match, shape) && match[1] == std::string(1, generation);
}

} // namespace

TEST_CASE("a filling response carries its version's validator, a Range gets 206 only under it",
          "[filling][validators]") {
  Origin origin;
  const std::string body = test::make_bytes(4 * 1024 * 1024, 211);
  const std::string date = "Mon, 01 Jan 2024 00:00:00 GMT";
  Route tagged = slow(body, 4.0);
  tagged.etag = "\"t1\"";
  tagged.last_modified = date;
  origin.add("/tagged.bin", tagged);
  Route dated = slow(body, 4.0);
  dated.last_modified = date; // no ETag: the cache derives one
  origin.add("/dated.bin", dated);
  ServerProcess server({"--miss-wait", "1s"});
  test::TempDir tmp;

  for (const std::string path : {"/tagged.bin", "/dated.bin"}) {
    INFO(path);
    const std::string blob = server.blob(origin.url(path));
    Download first(blob, tmp / (path.substr(1) + ".first"));
    REQUIRE(test::eventually([&] { return filling(server, blob); }, 30s));
    auto head = curl(blob, {"-I"});
    REQUIRE(head.headers["x-withcache-status"] == "filling");
    const std::string etag = head.headers["etag"];
    if (path == "/tagged.bin") {
      CHECK(etag == "\"t1\""); // the origin's strong ETag
    } else {
      CHECK(derived_validator(etag, '0'));
    }
    CHECK(head.headers["last-modified"] == date);
    CHECK(head.headers["cache-control"] == "no-store");

    // Four Range requests that meet the running fill.
    auto matching = curl_async(blob, {"-H", "Range: bytes=1000-", "-H", "If-Range: " + etag});
    auto bare = curl_async(blob, {"-H", "Range: bytes=1000-"});
    auto from_start = curl_async(blob, {"-H", "Range: bytes=0-99"});
    auto stale = curl_async(blob, {"-H", "Range: bytes=1000-", "-H", "If-Range: \"t0\""});
    auto by_date = curl_async(blob, {"-H", "Range: bytes=1000-", "-H", "If-Range: " + date});
    auto m = get_within(matching);
    auto b = get_within(bare);
    auto s = get_within(stale);
    auto d = get_within(by_date);
    auto z = get_within(from_start);
    CHECK(first.exit_code() == 0);
    CHECK(first.bytes() == body);
    for (auto* r : {&m, &b, &s, &d, &z}) {
      CHECK(r->exit_code == 0);
      CHECK(r->headers["x-withcache-status"] == "filling"); // served by the fill, not by the blob
      CHECK(r->headers["etag"] == etag);
    }
    CHECK(m.status == 206);
    CHECK(m.headers["content-range"] ==
          "bytes 1000-" + std::to_string(body.size() - 1) + "/" + std::to_string(body.size()));
    CHECK(m.body == body.substr(1000));
    // Another version's validator, or a date: the whole body, so the client starts over. A Range from
    // byte 0 has nothing to splice: the whole body too.
    for (auto* r : {&s, &d, &z}) {
      CHECK(r->status == 200);
      CHECK(r->body == body);
    }
    // No If-Range past byte 0 (wget's retry, `curl -C -`): 428, since wget would splice a 200.
    CHECK(b.status == 428);
    CHECK(b.body.find("needs If-Range") != std::string::npos);
    REQUIRE(
        test::eventually([&] { return curl(blob, {"-I"}).headers.count("x-withcache-sha256") == 1; }, 30s));
  }
}

TEST_CASE("a stored artifact: a bare Range resumes an immutable one, one that can change needs If-Range",
          "[filling][validators]") {
  Origin origin;
  const std::string body = test::make_bytes(100 * 1024, 212);
  origin.add("/fixed.bin", Route(body));
  Route lasting = Route(body);
  lasting.headers = {{"Cache-Control", "max-age=3600"}};
  origin.add("/lasting.bin", lasting);
  ServerProcess server;
  const std::string sha = digest::sha256_hex(body);
  for (const std::string path : {"/fixed.bin", "/lasting.bin"}) {
    const std::string blob = server.blob(origin.url(path));
    curl(blob); // the miss starts the fill
    REQUIRE(test::eventually([&] { return curl(blob, {"-I"}).status == 200; }, 30s));
  }

  const std::string fixed = server.blob(origin.url("/fixed.bin"));
  const auto resumed = curl(fixed, {"-H", "Range: bytes=1000-"});
  CHECK(resumed.status == 206);
  CHECK(resumed.body == body.substr(1000));
  const auto fixed_date = curl(fixed, {"-I"}).headers["last-modified"];
  CHECK(curl(fixed, {"-H", "Range: bytes=1000-", "-H", "If-Range: " + fixed_date}).status == 206);
  CHECK(curl(fixed, {"-I"}).headers["cache-control"] == "public, max-age=31536000, immutable");

  const std::string lasting_blob = server.blob(origin.url("/lasting.bin"));
  auto head = curl(lasting_blob, {"-I"});
  CHECK(head.headers["etag"] == "\"" + sha + "\"");
  CHECK(head.headers["cache-control"].find("immutable") == std::string::npos);
  auto bare = curl(lasting_blob, {"-H", "Range: bytes=1000-"});
  CHECK(bare.status == 428); // it may have been replaced since the client's first bytes
  CHECK(bare.headers["etag"] == "\"" + sha + "\"");
  CHECK(curl(lasting_blob, {"-H", "Range: bytes=0-"}).body == body);
  const auto matching = curl(lasting_blob, {"-H", "Range: bytes=1000-", "-H", "If-Range: \"" + sha + "\""});
  CHECK(matching.status == 206);
  CHECK(matching.body == body.substr(1000));
  const auto stale = curl(lasting_blob, {"-H", "Range: bytes=1000-", "-H", "If-Range: \"0000\""});
  CHECK(stale.status == 200);
  CHECK(stale.body == body);
  const auto by_date =
      curl(lasting_blob, {"-H", "Range: bytes=1000-", "-H", "If-Range: " + head.headers["last-modified"]});
  CHECK(by_date.status == 200); // a date cannot tell two versions of one second apart
}

TEST_CASE("an artifact a revalidation replaced needs If-Range even when its new version says immutable",
          "[filling][validators]") {
  Origin origin;
  const std::string v1 = test::make_bytes(100 * 1024, 213);
  const std::string v2 = test::make_bytes(100 * 1024, 214);
  Route first(v1);
  first.etag = "\"r1\"";
  first.headers = {{"Cache-Control", "max-age=1"}};
  Route second(v2);
  second.etag = "\"r2\"";
  second.headers = {{"Cache-Control", "public, max-age=31536000, immutable"}};
  first.then = {second};
  origin.add("/moving.txt", first);
  ServerProcess server;
  const std::string blob = server.blob(origin.url("/moving.txt"));
  curl(blob);
  REQUIRE(test::eventually([&] { return curl(blob, {"-I"}).status == 200; }, 30s));
  CHECK(curl(blob, {"-H", "Range: bytes=1000-"}).status == 428); // a lifetime of 1 s: it can change
  // Stale after a second: a hit queues the revalidation, which brings version 2.
  REQUIRE(test::eventually(
      [&] { return curl(blob, {"-I"}).headers["x-withcache-sha256"] == digest::sha256_hex(v2); }, 30s));
  auto head = curl(blob, {"-I"});
  CHECK(head.headers["cache-control"].find("immutable") == std::string::npos);
  // A client holding version 1's first 1000 bytes resumes: without If-Range it is refused; with
  // version 1's validator it gets the whole of version 2.
  CHECK(curl(blob, {"-H", "Range: bytes=1000-"}).status == 428);
  const auto old =
      curl(blob, {"-H", "Range: bytes=1000-", "-H", "If-Range: \"" + digest::sha256_hex(v1) + "\""});
  CHECK(old.status == 200);
  CHECK(old.body == v2);
  const auto matching =
      curl(blob, {"-H", "Range: bytes=1000-", "-H", "If-Range: \"" + digest::sha256_hex(v2) + "\""});
  CHECK(matching.status == 206);
  CHECK(matching.body == v2.substr(1000));
}

namespace {

// Exit 0 means the file is one version, whole: never v1's first bytes followed by v2's.
void check_one_version(const std::string& who, int code, const std::string& got, const std::string& v1,
                       const std::string& v2) {
  const auto common = [&](const std::string& v) {
    std::size_t n = 0;
    while (n < got.size() && n < v.size() && got[n] == v[n]) {
      ++n;
    }
    return n;
  };
  INFO(who << ": exit " << code << ", " << got.size() << " bytes; the first " << common(v1)
           << " are version 1's, the first " << common(v2) << " version 2's");
  if (code == 0) {
    CHECK((got == v1 || got == v2));
  } else {
    SUCCEED(who << " failed: acceptable, it did not claim a file");
  }
}

int exit_code_of(test::Process& process) {
  const auto status = process.wait(180s);
  REQUIRE(status.has_value());
  return WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
}

} // namespace

TEST_CASE("the origin publishes version 2 mid-fill: no client exits 0 with a spliced file",
          "[filling][validators][clients]") {
  // Two versions of one size (so no length tells them apart). The fill gets version 1's first 900 KiB,
  // the connection drops, and the resume finds version 2: the fill restarts from zero and cuts its
  // readers, which then retry or resume in every way curl, wget and withcache-client do.
  struct Flavour {
    const char* name;
    std::string v1_etag, v2_etag, v1_date, v2_date;
  };
  const Flavour flavours[] = {
      {"origin ETags", "\"one\"", "\"two\"", "", ""},
      {"origin dates only (a derived validator)", "", "", "Mon, 01 Jan 2024 00:00:00 GMT",
       "Tue, 02 Jan 2024 00:00:00 GMT"},
  };
  for (const auto& flavour : flavours) {
    INFO(flavour.name);
    Origin origin;
    const std::string v1 = test::make_bytes(2 * 1024 * 1024, 215);
    const std::string v2 = test::make_bytes(2 * 1024 * 1024, 216);
    Route first = slow(v1, 4.0);
    first.etag = flavour.v1_etag;
    first.last_modified = flavour.v1_date;
    first.truncate_at = 900 * 1024;
    first.truncate_times = 1;
    Route second = slow(v2, 4.0);
    second.etag = flavour.v2_etag;
    second.last_modified = flavour.v2_date;
    first.then = {second};
    origin.add("/v.bin", first);
    ServerProcess server({"--miss-wait", "1s"});
    const std::string blob = server.blob(origin.url("/v.bin"));
    test::TempDir tmp;
    const auto out = [&](const char* name) {
      return (tmp / name).string();
    };

    // The first reader starts the fill; the others attach while version 1 streams.
    Download plain(blob, tmp / "curl-plain");
    REQUIRE(test::eventually([&] { return filling(server, blob); }, 30s));
    Download resumer(blob, tmp / "curl-c");
    test::Process curl_retry({"curl", "-sS", "--retry", "5", "--retry-all-errors", "--retry-delay", "1", "-o",
                              out("curl-retry"), blob});
    test::Process curl_retry_c({"curl", "-sS", "-C", "-", "--retry", "5", "--retry-all-errors",
                                "--retry-delay", "1", "-o", out("curl-retry-c"), blob});
    test::Process wget_retry(
        {"wget", "-q", "--tries=3", "--retry-connrefused", "--waitretry=1", "-O", out("wget-retry"), blob});
    test::Process wget_once({"wget", "-q", "--tries=1", "-O", out("wget-c"), blob});
    test::Process client({WITHCACHE_CLIENT, "get", origin.url("/v.bin"), "-o", out("client")},
                         {"WITHCACHE_SERVER=" + server.base()}, tmp / "client.log");

    // curl and `wget --tries=1`, cut by the restart, then resumed by hand (`curl -C -`, `wget -c`).
    CHECK(plain.exit_code() == 18);
    check_one_version("curl", 18, plain.bytes(), v1, v2);
    const int resumer_first = resumer.exit_code();
    const int wget_first = exit_code_of(wget_once);
    const auto curl_c = test::run({"curl", "-sS", "-C", "-", "-o", out("curl-c"), blob});
    check_one_version("curl -C - after a cut (exit " + std::to_string(resumer_first) + " first)",
                      curl_c.exit_code, test::slurp(out("curl-c")), v1, v2);
    const auto wget_c = test::run({"wget", "-q", "-c", "--tries=1", "-O", out("wget-c"), blob});
    check_one_version("wget -c after a cut (exit " + std::to_string(wget_first) + " first)", wget_c.exit_code,
                      test::slurp(out("wget-c")), v1, v2);
    // The automatic ways: curl --retry (with and without -C -), wget's own retries, withcache-client.
    // Each exit code first: the file is read once its writer has ended.
    const int curl_retry_code = exit_code_of(curl_retry);
    check_one_version("curl --retry", curl_retry_code, test::slurp(out("curl-retry")), v1, v2);
    const int curl_retry_c_code = exit_code_of(curl_retry_c);
    check_one_version("curl -C - --retry", curl_retry_c_code, test::slurp(out("curl-retry-c")), v1, v2);
    const int wget_retry_code = exit_code_of(wget_retry);
    check_one_version("wget --tries=3", wget_retry_code, test::slurp(out("wget-retry")), v1, v2);
    const int client_code = exit_code_of(client);
    INFO("withcache-client said: " << test::slurp(tmp / "client.log"));
    check_one_version("withcache-client get", client_code, test::slurp(out("client")), v1, v2);

    REQUIRE(server.fills_completed(1));
    CHECK(curl(blob).body == v2);
    // Once stored, a client holding version 1's bytes still cannot resume into version 2.
    CHECK(curl(blob, {"-H", "Range: bytes=921600-"}).status == 428);
    // ...and `curl -C -` and `wget -c` of version 1's first bytes, now against the stored artifact.
    test::TempDir late;
    std::ofstream(late / "curl", std::ios::binary) << v1.substr(0, 921600);
    std::ofstream(late / "wget", std::ios::binary) << v1.substr(0, 921600);
    const auto late_curl = test::run({"curl", "-sS", "-C", "-", "-o", (late / "curl").string(), blob});
    check_one_version("curl -C - against the stored artifact", late_curl.exit_code,
                      test::slurp(late / "curl"), v1, v2);
    const auto late_wget = test::run({"wget", "-q", "-c", "--tries=1", "-O", (late / "wget").string(), blob});
    check_one_version("wget -c against the stored artifact", late_wget.exit_code, test::slurp(late / "wget"),
                      v1, v2);
  }
}

TEST_CASE("withcache-client get with a .part of another version, from a running fill: starts over",
          "[filling][validators][client]") {
  Origin origin;
  const std::string body = test::make_bytes(3 * 1024 * 1024, 217);
  origin.add("/left.bin", slow(body, 3.0));
  ServerProcess server({"--miss-wait", "1s"});
  const std::string blob = server.blob(origin.url("/left.bin"));
  curl(blob, {"-I"}); // starts the fill
  REQUIRE(test::eventually([&] { return filling(server, blob); }, 30s));
  test::TempDir tmp;
  // An earlier run's bytes of another version: a bare Range resume is refused (428), the client restarts.
  std::ofstream(tmp / "left.bin.part", std::ios::binary) << test::make_bytes(500 * 1024, 218);
  const auto r =
      test::run({WITHCACHE_CLIENT, "get", origin.url("/left.bin"), "-o", (tmp / "left.bin").string()},
                {"WITHCACHE_SERVER=" + server.base()});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("SHA-256 verified") != std::string::npos);
  CHECK(test::slurp(tmp / "left.bin") == body);
}

TEST_CASE("a fill cut under its readers makes the next fill of the key need If-Range for a resume",
          "[filling][validators]") {
  Origin origin;
  const std::string v1 = test::make_bytes(3 * 1024 * 1024, 219);
  const std::string v2 = test::make_bytes(3 * 1024 * 1024, 220);
  Route first = slow(v1, 2.0);
  first.etag = "\"c1\"";
  first.truncate_at = 1024 * 1024;
  first.truncate_times = 1;
  Route later(v2);
  later.etag = "\"c2\"";
  first.then = {Route::error(404)}; // the resume finds it gone: the fill fails for good
  origin.add("/cut.bin", first);
  ServerProcess server({"--miss-wait", "1s"});
  const std::string blob = server.blob(origin.url("/cut.bin"));
  test::TempDir tmp;
  Download reader(blob, tmp / "reader");
  REQUIRE(test::eventually([&] { return filling(server, blob); }, 30s));
  CHECK(reader.exit_code() == 18);
  const std::string held = reader.bytes();
  CHECK(held == v1.substr(0, held.size()));
  REQUIRE(
      test::eventually([&] { return server.metric("withcache_fills_total{outcome=\"failed\"}") >= 1; }, 20s));
  // The origin publishes version 2, and the operator fetches it (past the back-off); it says nothing of
  // a lifetime, so it would be immutable.
  origin.add("/cut.bin", later);
  CHECK(curl(server.base() + "/api/v1/downloads",
             {"-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
              "{\"url\": \"" + origin.url("/cut.bin") + "\"}"})
            .status == 202);
  REQUIRE(server.fills_completed(1));
  auto head = curl(blob, {"-I"});
  REQUIRE(head.headers["x-withcache-sha256"] == digest::sha256_hex(v2));
  CHECK(head.headers["cache-control"].find("immutable") == std::string::npos);
  // The reader's `curl -C -` / `wget -c` of version 1's bytes: refused, never version 2's tail.
  const std::string from = "Range: bytes=" + std::to_string(held.size()) + "-";
  CHECK(curl(blob, {"-H", from}).status == 428);
  const auto resumed = test::run({"curl", "-sS", "-C", "-", "-o", (tmp / "reader").string(), blob});
  CHECK(resumed.exit_code != 0);
  CHECK(test::slurp(tmp / "reader") == held);
  const auto proven = curl(blob, {"-H", from, "-H", "If-Range: " + head.headers["etag"]});
  CHECK(proven.status == 206);
  CHECK(proven.body == v2.substr(held.size()));
}
