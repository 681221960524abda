// Fuzzes auth::same_origin, the CSRF check of the operator surface. The input is split at its first
// two NUL bytes into Origin, Referer and Host. The answer must follow the documented rules, never
// pass a claimed origin that does not parse as a URL, and always pass a parsed http(s) origin
// against the Host header that names it.
#include <string>
#include <string_view>

#include "auth/auth.hpp"
#include "fuzz_target.hpp"
#include "withcache/url.hpp"

namespace auth = withcache::auth;
namespace url = withcache::url;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = withcache::fuzz::text_of(data, size);
  const std::size_t first = text.find('\0');
  const std::size_t second = first == std::string_view::npos ? first : text.find('\0', first + 1);
  const std::string_view origin = text.substr(0, first);
  const std::string_view referer =
      first == std::string_view::npos ? std::string_view{} : text.substr(first + 1, second - first - 1);
  const std::string_view host =
      second == std::string_view::npos ? std::string_view{} : text.substr(second + 1);

  const bool same = auth::same_origin(origin, referer, host);
  const std::string_view claimed = !origin.empty() ? origin : referer;
  if (claimed.empty()) {
    WITHCACHE_FUZZ_CHECK(same); // scripts and curl send neither header
    return 0;
  }
  if (claimed == "null" || host.empty()) {
    WITHCACHE_FUZZ_CHECK(!same);
  }
  // The Referer counts only without an Origin; either header alone gives the same answer.
  WITHCACHE_FUZZ_CHECK(same == auth::same_origin(claimed, "", host));
  WITHCACHE_FUZZ_CHECK(same == auth::same_origin("", claimed, host));

  const auto target = url::parse_target(claimed);
  if (same) {
    WITHCACHE_FUZZ_CHECK(url::has_authority_scheme(claimed) && target.has_value());
  }
  if (target && (target->scheme == "http" || target->scheme == "https")) {
    // Only an IP literal's host can hold ':' or '['; it goes back in brackets.
    const std::string name =
        target->host.find_first_of(":[") != std::string::npos ? "[" + target->host + "]" : target->host;
    WITHCACHE_FUZZ_CHECK(auth::same_origin(claimed, "", name + ":" + std::to_string(target->port)));
  }
  return 0;
}
