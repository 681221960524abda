// Fuzzes the operator session cookie: auth::cookie_value over a Cookie header, then
// auth::Sessions::verify of the value. A value is a piece of the header; a token verifies only under
// the secret that signed it (the seed corpus holds tokens signed with k_secret, so mutations reach
// past the signature); and issue/verify round-trips a user name taken from the input.
#include <chrono>
#include <string>
#include <string_view>

#include "auth/auth.hpp"
#include "fuzz_target.hpp"
#include "withcache/url.hpp"

namespace auth = withcache::auth;

namespace {

// The seeds in fuzz/corpus/session_cookie were issued with this secret at k_now - 1 h.
constexpr std::string_view k_secret = "fuzz-session-secret";
constexpr std::chrono::system_clock::time_point k_now{std::chrono::seconds(1'700'000'000)};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auth::Sessions sessions{std::string(k_secret)};
  static const auth::Sessions stranger{"another secret"};
  const std::string_view header = withcache::fuzz::text_of(data, size);

  if (const auto value = auth::cookie_value(header, auth::k_cookie)) {
    WITHCACHE_FUZZ_CHECK(value->find(';') == std::string::npos);
    WITHCACHE_FUZZ_CHECK(header.find(std::string(auth::k_cookie) + "=" + *value) != std::string_view::npos);
    if (const auto user = sessions.verify(*value, k_now)) {
      WITHCACHE_FUZZ_CHECK(user->find(':') == std::string::npos);
      WITHCACHE_FUZZ_CHECK(!stranger.verify(*value, k_now));
      WITHCACHE_FUZZ_CHECK(!sessions.verify(*value, k_now + sessions.lifetime() + std::chrono::hours(1)));
    }
  }

  // Any user name that is UTF-8 text without ':' comes back from its own token, and only until it expires.
  const std::string_view user = header.substr(0, header.find(';'));
  if (withcache::url::is_utf8(user) && user.find(':') == std::string_view::npos) {
    const std::string token = sessions.issue(user, k_now);
    const auto verified = sessions.verify(token, k_now);
    WITHCACHE_FUZZ_CHECK(verified && *verified == user);
    WITHCACHE_FUZZ_CHECK(!sessions.verify(token, k_now + sessions.lifetime()));
    WITHCACHE_FUZZ_CHECK(!stranger.verify(token, k_now));
    const auto cookie = auth::cookie_value(std::string(auth::k_cookie) + "=" + token, auth::k_cookie);
    WITHCACHE_FUZZ_CHECK(cookie && *cookie == token);
  }
  return 0;
}
