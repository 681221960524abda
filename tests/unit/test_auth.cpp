#include <catch2/catch.hpp>

#include <fstream>

#include <sys/stat.h>

#include "support/temp_dir.hpp"
#include "auth/auth.hpp"
#include "withcache/digest.hpp"

using namespace withcache;
using namespace std::chrono_literals;

TEST_CASE("constant_time_equal compares exactly", "[auth]") {
  CHECK(digest::constant_time_equal("secret", "secret"));
  CHECK_FALSE(digest::constant_time_equal("secret", "secreT"));
  CHECK_FALSE(digest::constant_time_equal("secret", "secret2"));
  CHECK_FALSE(digest::constant_time_equal("", "x"));
  CHECK(digest::constant_time_equal("", ""));
}

TEST_CASE("sessions: signed, expiring, bound to their secret", "[auth]") {
  const auth::Sessions sessions("key-one", 7 * 24h);
  const auto now = std::chrono::system_clock::now();
  const std::string token = sessions.issue("admin", now);
  CHECK(sessions.verify(token, now) == std::optional<std::string>("admin"));
  CHECK(sessions.verify(token, now + 7 * 24h - 1s).has_value());
  CHECK_FALSE(sessions.verify(token, now + 7 * 24h).has_value());        // expired
  CHECK_FALSE(auth::Sessions("key-two").verify(token, now).has_value()); // foreign key
  CHECK(sessions.issue("admin", now) != token);                          // a nonce makes every token distinct

  std::string tampered = token;
  tampered[3] = tampered[3] == 'A' ? 'B' : 'A';
  CHECK_FALSE(sessions.verify(tampered, now).has_value());
  std::string bad_sig = token;
  bad_sig.back() = bad_sig.back() == '0' ? '1' : '0';
  CHECK_FALSE(sessions.verify(bad_sig, now).has_value());
  for (const char* junk : {"", ".", "abc", "abc.def", "..", "v1:admin:99999999999:x"}) {
    INFO(junk);
    CHECK_FALSE(sessions.verify(junk, now).has_value());
  }
}

TEST_CASE("the session secret comes from the environment or a 0600 file", "[auth]") {
  test::TempDir dir;
  CHECK(auth::session_secret(dir.path(), " from-env \n") == "from-env");
  CHECK_FALSE(std::filesystem::exists(dir / "session-secret"));
  const std::string created = auth::session_secret(dir.path(), "   ");
  CHECK(created.size() == 64);
  struct stat info {};
  REQUIRE(::stat((dir / "session-secret").c_str(), &info) == 0);
  CHECK((info.st_mode & 0777) == 0600);
  CHECK(auth::session_secret(dir.path(), nullptr) == created); // reused: cookies survive restarts
}

TEST_CASE("cookie_value finds one cookie", "[auth]") {
  CHECK(auth::cookie_value("a=1; withcache-token=abc.def; b=2", "withcache-token") ==
        std::optional<std::string>("abc.def"));
  CHECK(auth::cookie_value("withcache-token=x", "withcache-token") == std::optional<std::string>("x"));
  CHECK_FALSE(auth::cookie_value("xwithcache-token=x", "withcache-token").has_value());
  CHECK_FALSE(auth::cookie_value("", "withcache-token").has_value());
}

TEST_CASE("same_origin is the CSRF check", "[auth]") {
  struct Case {
    const char* origin;
    const char* referer;
    const char* host;
    bool allowed;
  };
  const Case cases[] = {
      {"", "", "cache:3000", true}, // scripts and curl
      {"http://cache:3000", "", "cache:3000", true},
      {"http://CACHE:3000", "", "cache:3000", true},
      {"http://evil.example", "", "cache:3000", false},
      {"http://cache:3001", "", "cache:3000", false},
      {"", "http://cache:3000/ui/misses?x", "cache:3000", true},
      {"", "https://evil.example/cache:3000", "cache:3000", false},
      {"null", "", "cache:3000", false},
      {"https://cache.lab", "", "cache.lab:443", true},
      {"http://cache", "", "", false},
      // Not a browser's Origin or Referer: refused, not read as a host name (found by fuzz_same_origin).
      {"cache:3000", "", "cache:3000", false},
      {"", "https:/ocht/uli/j:0o", "https:/U", false},
      {"ftp://cache:3000", "", "cache:3000", false},
  };
  for (const auto& c : cases) {
    INFO(c.origin << " | " << c.referer << " | " << c.host);
    CHECK(auth::same_origin(c.origin, c.referer, c.host) == c.allowed);
  }
}

TEST_CASE("LoginThrottle: attempts inside the pause are refused, not held", "[auth]") {
  auth::LoginThrottle throttle;
  const auto t0 = auth::LoginThrottle::Clock::now();
  CHECK(throttle.retry_after("a", t0) == 0ms);
  throttle.record_failure("a", t0);
  CHECK(throttle.retry_after("a", t0) == 0ms); // the first two failures cost nothing
  throttle.record_failure("a", t0);
  CHECK(throttle.retry_after("a", t0) == 250ms);
  CHECK(throttle.retry_after("a", t0 + 100ms) == 150ms);
  CHECK(throttle.retry_after("a", t0 + 250ms) == 0ms);
  CHECK(throttle.retry_after("b", t0) == 0ms);
  throttle.reset("a");
  CHECK(throttle.retry_after("a", t0) == 0ms);
}

TEST_CASE("LoginThrottle slows repeated failures from one address", "[auth]") {
  auth::LoginThrottle throttle;
  CHECK(throttle.delay_for("a") == 0ms);
  throttle.record_failure("a");
  CHECK(throttle.delay_for("a") == 0ms);
  throttle.record_failure("a");
  CHECK(throttle.delay_for("a") == 250ms);
  throttle.record_failure("a");
  CHECK(throttle.delay_for("a") == 500ms);
  for (int i = 0; i < 20; ++i) {
    throttle.record_failure("a");
  }
  CHECK(throttle.delay_for("a") == 5000ms);
  CHECK(throttle.delay_for("b") == 0ms);
  throttle.reset("a");
  CHECK(throttle.delay_for("a") == 0ms);
}

TEST_CASE("LoginThrottle: a spray of 10 001 addresses does not unlock a locked one", "[auth]") {
  auth::LoginThrottle throttle;
  auto t = auth::LoginThrottle::Clock::now();
  for (int i = 0; i < 7; ++i) {
    throttle.record_failure("10.0.0.1", t);
    t += throttle.retry_after("10.0.0.1", t); // the attacker waits out each pause
  }
  throttle.record_failure("10.0.0.1", t);
  REQUIRE(throttle.retry_after("10.0.0.1", t) == 5000ms);
  // 10 001 other addresses fail within the next second: the table stays bounded and keeps the locked one.
  for (int i = 0; i < 10'001; ++i) {
    throttle.record_failure("198.51." + std::to_string(i / 256) + "." + std::to_string(i % 256), t + 100us * i);
  }
  CHECK(throttle.size() <= 10'000);
  CHECK(throttle.retry_after("10.0.0.1", t + 1100ms) >= 3800ms);
  // And the spray itself set off the global pacing: a fresh address must wait too.
  CHECK(throttle.retry_after("203.0.113.9", t + 1100ms) > 0ms);
}

TEST_CASE("LoginThrottle: the global budget paces every address and lifts once the minute is quiet",
          "[auth]") {
  auth::ThrottleOptions options;
  options.global_failures_per_minute = 10;
  options.global_pause = 1000ms;
  auth::LoginThrottle throttle(options);
  const auto t0 = auth::LoginThrottle::Clock::now();
  for (int i = 0; i < 10; ++i) {
    throttle.record_failure("192.0.2." + std::to_string(i), t0);
  }
  CHECK(throttle.retry_after("new", t0) == 0ms); // at the budget, not above it
  throttle.record_failure("192.0.2.200", t0);
  CHECK(throttle.retry_after("new", t0) == 1000ms);
  CHECK(throttle.retry_after("new", t0 + 400ms) == 600ms);
  CHECK(throttle.retry_after("new", t0 + 1000ms) == 0ms);
  CHECK(throttle.retry_after("new", t0 + 61s) == 0ms);
}

TEST_CASE("LoginThrottle: a full table makes room only from addresses whose pause is over", "[auth]") {
  auth::ThrottleOptions options;
  options.max_addresses = 3;
  options.global_failures_per_minute = 1000;
  auth::LoginThrottle throttle(options);
  const auto t0 = auth::LoginThrottle::Clock::now();
  for (const char* a : {"a", "b", "c"}) {
    throttle.record_failure(a, t0);
    throttle.record_failure(a, t0); // each now waits 250 ms
  }
  throttle.record_failure("d", t0 + 10ms);
  CHECK(throttle.size() == 3); // every remembered address is still waiting: none is dropped
  CHECK(throttle.retry_after("a", t0 + 10ms) == 240ms);
  throttle.record_failure("d", t0 + 300ms); // "a" failed longest ago and its pause is over
  CHECK(throttle.size() == 3);
  CHECK(throttle.retry_after("a", t0 + 300ms) == 0ms);
  CHECK(throttle.delay_for("a") == 0ms);
  CHECK(throttle.delay_for("b") == 250ms);
}

TEST_CASE("device cookies: signed with their own key, expiring, never a session", "[auth]") {
  const auth::DeviceCookies devices("key-one", 365 * 24h);
  const auto now = std::chrono::system_clock::now();
  const std::string token = devices.issue("admin", now);
  const auto claims = devices.claims(token, now);
  REQUIRE(claims.has_value());
  CHECK(claims->user == "admin");
  CHECK(claims->id.size() == 32);
  CHECK(devices.claims(token, now + 365 * 24h - 1s).has_value());
  CHECK_FALSE(devices.claims(token, now + 365 * 24h).has_value());            // expired
  CHECK_FALSE(auth::DeviceCookies("key-two").claims(token, now).has_value()); // foreign secret
  CHECK(devices.issue("admin", now) != token);                                // every login a new device id

  // Same secret, different purposes: neither token is accepted as the other.
  const auth::Sessions sessions("key-one");
  CHECK_FALSE(sessions.claims(token, now).has_value());
  CHECK_FALSE(devices.claims(sessions.issue("admin", now), now).has_value());

  std::string tampered = token;
  tampered[3] = tampered[3] == 'A' ? 'B' : 'A';
  CHECK_FALSE(devices.claims(tampered, now).has_value());
  for (const char* junk : {"", ".", "abc.def", "d1:admin:99999999999:x"}) {
    INFO(junk);
    CHECK_FALSE(devices.claims(junk, now).has_value());
  }
}

TEST_CASE("LoginThrottle: a device cookie skips the global pause, never its own limits", "[auth]") {
  struct Case {
    const char* what;
    unsigned address_failures;          // wrong passwords from the checked address (no device), at t0
    unsigned device_failures;           // wrong passwords with the device (from elsewhere), at t0
    bool with_device;                   // the checked attempt carries the device cookie
    bool reset_device;                  // a right password with the device, after its failures
    std::chrono::milliseconds spray_at; // 11 addresses (budget 10) fail then, and the check runs
    std::chrono::milliseconds expected;
  };
  // Budget 10 a minute, pause 1 s; a device loses its exemption at 3 failures, for 60 s after the last.
  const Case cases[] = {
      {"no device during a spray: the global pause", 0, 0, false, false, 10s, 1000ms},
      {"a device during a spray: no pause", 0, 0, true, false, 10s, 0ms},
      {"a device keeps its address's wait", 2, 0, true, false, 0ms, 250ms},
      {"a device keeps its own wait, from any address", 0, 2, true, false, 0ms, 250ms},
      {"a device with 2 failures is still exempt once its wait is over", 0, 2, true, false, 10s, 0ms},
      {"a locked-out device pays the global pause", 0, 3, true, false, 10s, 1000ms},
      {"a locked-out device is exempt again after the lockout", 0, 3, true, false, 61s, 0ms},
      {"a right password forgets the device's failures", 0, 3, true, true, 10s, 0ms},
      {"no spray, no device: no wait", 0, 0, false, false, -1ms, 0ms},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    auth::ThrottleOptions options;
    options.global_failures_per_minute = 10;
    options.global_pause = 1000ms;
    options.device_lockout_failures = 3;
    options.device_lockout = 60s;
    auth::LoginThrottle throttle(options);
    const auto t0 = auth::LoginThrottle::Clock::now();
    const std::string device = "0123456789abcdef0123456789abcdef";
    for (unsigned i = 0; i < c.address_failures; ++i) {
      throttle.record_failure("192.0.2.1", t0);
    }
    for (unsigned i = 0; i < c.device_failures; ++i) {
      throttle.record_failure("198.51.100.7", device, t0);
    }
    if (c.reset_device) {
      throttle.reset("198.51.100.7", device);
    }
    auto check_at = t0;
    if (c.spray_at >= 0ms) {
      check_at = t0 + c.spray_at;
      for (int i = 0; i < 11; ++i) {
        throttle.record_failure("203.0.113." + std::to_string(i), check_at);
      }
    }
    CHECK(throttle.retry_after("192.0.2.1", c.with_device ? device : std::string(), check_at) == c.expected);
  }
}

TEST_CASE("LoginThrottle: locked-out devices are remembered in bounded memory, never dropped early",
          "[auth]") {
  auth::ThrottleOptions options;
  options.global_failures_per_minute = 0; // every failure sets off the global pause
  options.max_devices = 2;
  options.device_lockout_failures = 2;
  options.device_lockout = 60s;
  auth::LoginThrottle throttle(options);
  const auto t0 = auth::LoginThrottle::Clock::now();
  for (const char* device : {"device-a", "device-b"}) {
    throttle.record_failure("192.0.2.1", device, t0);
    throttle.record_failure("192.0.2.1", device, t0);
  }
  CHECK(throttle.devices() == 2);
  CHECK(throttle.device_locked_out("device-a", t0));
  // A third device finds the table full of locked-out devices: it is not remembered, and so not exempt
  // (else failing with it would never lock it out).
  throttle.record_failure("192.0.2.9", "device-c", t0 + 1s);
  CHECK(throttle.devices() == 2);
  CHECK(throttle.retry_after("192.0.2.10", "device-d", t0 + 1s) == 1000ms);
  CHECK(throttle.retry_after("192.0.2.10", "device-a", t0 + 1s) == 1000ms);
  // Once the lockouts are over, a new device is exempt and makes room by dropping the oldest.
  const auto later = t0 + 61s;
  throttle.record_failure("192.0.2.9", later); // keeps the global pause going
  CHECK(throttle.retry_after("192.0.2.10", "device-d", later) == 0ms);
  throttle.record_failure("192.0.2.9", "device-c", later);
  CHECK(throttle.devices() == 2);
  CHECK_FALSE(throttle.device_locked_out("device-a", later));
}
