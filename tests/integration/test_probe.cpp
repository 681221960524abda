// The probe against servers that lie, stall or trickle: a status counts only
// when its line is strictly HTTP/1.x, and one deadline bounds everything.
#include <catch2/catch.hpp>

#include <chrono>

#include "support/process.hpp"
#include "support/raw_origin.hpp"
#include "support/stub_servers.hpp"
#include "withcache/client/probe.hpp"

using namespace withcache;
using client::ProbeFailure;
using Clock = std::chrono::steady_clock;

namespace {

// The deadline bounds asserted here are the behavioural bounds (a probe ends within its
// timeout plus 0.2 s). They compare elapsed wall time with the timeout the test chose, so a loaded
// machine only adds scheduling delay after poll() wakes, which is milliseconds, not 200.
constexpr auto k_slack = std::chrono::milliseconds(200);

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

} // namespace

TEST_CASE("a status counts only on a strict HTTP/1.0 or HTTP/1.1 status line", "[probe]") {
  struct Case {
    std::string response;
    int status;
    ProbeFailure failure;
  };
  const Case cases[] = {
      {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200, ProbeFailure::none},
      {"HTTP/1.0 200 OK\r\n\r\n", 200, ProbeFailure::none},
      {"HTTP/1.1 404 Not Found\r\n\r\n", 404, ProbeFailure::none},
      {"HTTP/1.1 200 \r\n\r\n", 200, ProbeFailure::none},
      {"HTTP/1.1 200 OK\n\n", 200, ProbeFailure::none},
      {"HTTP/1.1 200 OK\r\n" + std::string(1 << 20, 'x'), 200,
       ProbeFailure::none}, // huge headers: never read
      {"HTTP/1.1 2000 OK\r\n\r\n", 0, ProbeFailure::not_http},
      {"HTTP/1.10 200 OK\r\n\r\n", 0, ProbeFailure::not_http},
      {"HTTP/1.1 200\r\n\r\n", 0, ProbeFailure::not_http},
      {"HTTP/1.1  200 OK\r\n\r\n", 0, ProbeFailure::not_http},
      {"HTTP/1.1 20 OK\r\n\r\n", 0, ProbeFailure::not_http},
      {"HTTP/1.1 2x0 OK\r\n\r\n", 0, ProbeFailure::not_http},
      {"HTTP/1.1 +20 OK\r\n\r\n", 0, ProbeFailure::not_http},
      {"HTTP/2 200 \r\n\r\n", 0, ProbeFailure::not_http},
      {"HTTP/1.2 200 OK\r\n\r\n", 0, ProbeFailure::not_http},
      {"http/1.1 200 OK\r\n\r\n", 0, ProbeFailure::not_http},
      {" HTTP/1.1 200 OK\r\n\r\n", 0, ProbeFailure::not_http},
      {std::string("\0HTTP/1.1 200 OK\r\n", 18), 0, ProbeFailure::not_http},
      {"\x16\x03\x01\x00\x05hello\r\n", 0, ProbeFailure::not_http},
      {"SSH-2.0-OpenSSH_9.2\r\n", 0, ProbeFailure::not_http},
      {"HTTP/1.1 200 OK", 0, ProbeFailure::not_http}, // closed before the line ended
      {"HTTP/1.1 200 " + std::string(4000, 'x') + "\r\n", 0,
       ProbeFailure::not_http},           // longer than any status line
      {"", 0, ProbeFailure::unreachable}, // closed without a byte
  };
  for (const auto& c : cases) {
    INFO(c.response.substr(0, 40));
    test::RawOrigin server(c.response);
    const auto result = client::head(server.url("/b/x/y"), {std::chrono::seconds(10), {}});
    CHECK(result.status == c.status);
    CHECK(result.failure == c.failure);
    CHECK(client::head_status(server.url("/b/x/y"), {std::chrono::seconds(10), {}}) == c.status);
  }
}

TEST_CASE("the probe sends one well-formed HEAD", "[probe]") {
  test::RawOrigin server("HTTP/1.1 200 OK\r\n\r\n");
  CHECK(client::head_status(server.url("/b/tok/a+b(1),v=2.tar?sig=abc"),
                            {std::chrono::seconds(10), {{"X-Extra", "1"}, {"Bad\r\nName", "x"}}}) == 200);
  const auto requests = server.requests();
  REQUIRE(requests.size() == 1);
  const std::string& head = requests[0];
  CHECK(head.starts_with("HEAD /b/tok/a+b(1),v=2.tar?sig=abc HTTP/1.1\r\nHost: 127.0.0.1:"));
  CHECK(head.find("\r\nX-Extra: 1\r\n") != std::string::npos);
  CHECK(head.find("Bad") == std::string::npos); // a header that would split the request is dropped
  CHECK(head.ends_with("\r\n\r\n"));

  test::RawOrigin utf8("HTTP/1.1 200 OK\r\n\r\n");
  CHECK(client::head_status(utf8.url("/b/tok/\xC3\xBC.tgz?q=\xC3\xA9"), {std::chrono::seconds(10), {}}) ==
        200);
  CHECK(
      utf8.requests().at(0).starts_with("HEAD /b/tok/%C3%BC.tgz?q=%C3%A9 HTTP/1.1\r\n")); // ASCII on the wire
}

TEST_CASE("a hung or trickling server is cut at the deadline", "[probe]") {
  const auto timeout = std::chrono::milliseconds(500);
  SECTION("accepts and never answers") {
    test::HungServer hung;
    const auto start = Clock::now();
    const auto result = client::head("http://" + hung.authority() + "/b/x/y", {timeout, {}});
    CHECK(result.failure == ProbeFailure::timed_out);
    CHECK(seconds_since(start) <= std::chrono::duration<double>(timeout + k_slack).count());
    CHECK(hung.connections() == 1);
  }
  SECTION("a status line that never ends") {
    test::TrickleServer trickle("HTTP/1.1 200 OK, but slowly " + std::string(10000, '.'),
                                std::chrono::milliseconds(20));
    const auto start = Clock::now();
    const auto result = client::head("http://" + trickle.authority() + "/b/x/y", {timeout, {}});
    CHECK(result.status == 0);
    CHECK(result.failure == ProbeFailure::timed_out);
    CHECK(seconds_since(start) <= std::chrono::duration<double>(timeout + k_slack).count());
  }
  SECTION("many URLs share one deadline, eight connections at a time") {
    test::HungServer hung;
    std::vector<std::string> urls(20, "http://" + hung.authority() + "/b/x/y");
    const auto start = Clock::now();
    const auto results = client::head_all(urls, {timeout, {}});
    CHECK(seconds_since(start) <= std::chrono::duration<double>(timeout + k_slack).count());
    REQUIRE(results.size() == urls.size());
    for (const auto& r : results) {
      CHECK(r.failure == ProbeFailure::timed_out);
    }
    CHECK(hung.connections() <= 8);
  }
  SECTION("a live server answers while a hung one times out, in one call") {
    test::HungServer hung;
    test::RawOrigin live("HTTP/1.1 200 OK\r\n\r\n");
    const auto start = Clock::now();
    const auto results = client::head_all(
        {"http://" + hung.authority() + "/b/x/y", live.url("/b/x/y"), "ftp://127.0.0.1/x", "not a url"},
        {timeout, {}});
    CHECK(seconds_since(start) <= std::chrono::duration<double>(timeout + k_slack).count());
    REQUIRE(results.size() == 4);
    CHECK(results[0].failure == ProbeFailure::timed_out);
    CHECK(results[1].status == 200);
    CHECK(results[1].elapsed < timeout);
    CHECK(results[2].failure == ProbeFailure::bad_url);
    CHECK(results[3].failure == ProbeFailure::bad_url);
  }
}

TEST_CASE("a refused connection fails at once, a name is resolved within the deadline", "[probe]") {
  const test::ClosedPort closed;
  const auto start = Clock::now();
  const auto refused = client::head("http://" + closed.authority() + "/b/x/y", {std::chrono::hours(1), {}});
  CHECK(refused.failure == ProbeFailure::unreachable);
  CHECK(seconds_since(start) < 60); // an hour's timeout would trip ctest's

  test::RawOrigin live("HTTP/1.1 204 No Content\r\n\r\n");
  const std::string by_name = "http://localhost:" + live.url("").substr(live.url("").rfind(':') + 1) + "/b/x";
  CHECK(client::head_status(by_name, {std::chrono::seconds(10), {}}) == 204);

  // .invalid never resolves (RFC 6761); without a reachable DNS server the lookup itself may hang,
  // and the probe must not: the helper thread is abandoned at the deadline.
  const auto timeout = std::chrono::milliseconds(300);
  const auto lookup_start = Clock::now();
  const auto unresolved = client::head("http://withcache-probe-test.invalid/b/x", {timeout, {}});
  CHECK(unresolved.status == 0);
  CHECK((unresolved.failure == ProbeFailure::unresolved || unresolved.failure == ProbeFailure::timed_out));
  CHECK(seconds_since(lookup_start) <= std::chrono::duration<double>(timeout + k_slack).count());
}
