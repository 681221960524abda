#include <catch2/catch.hpp>

#include <map>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "withcache/origin.hpp"

using namespace withcache::origin;
using withcache::util::Getenv;

namespace {

sockaddr_storage address(const char* text) {
  sockaddr_storage storage{};
  if (std::string_view(text).find(':') != std::string_view::npos) {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
    v6->sin6_family = AF_INET6;
    REQUIRE(::inet_pton(AF_INET6, text, &v6->sin6_addr) == 1);
  } else {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
    v4->sin_family = AF_INET;
    REQUIRE(::inet_pton(AF_INET, text, &v4->sin_addr) == 1);
  }
  return storage;
}

Getenv env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

} // namespace

TEST_CASE("glob_match matches host patterns case-insensitively", "[fetch]") {
  struct Case {
    const char* pattern;
    const char* host;
    bool match;
  };
  const Case cases[] = {
      {"*.nvidia.com", "developer.download.nvidia.com", true},
      {"*.nvidia.com", "DEVELOPER.NVIDIA.COM", true},
      {"*.nvidia.com", "nvidia.com", false},
      {"*.nvidia.com", "evilnvidia.com", false},
      {"repo.example.org", "repo.example.org", true},
      {"repo.example.org", "repo.example.org.evil", false},
      {"127.0.0.1", "127.0.0.1", true},
      {"127.0.0.*", "127.0.0.9", true},
      {"*", "anything", true},
      {"a*b*c", "aXXbYYc", true},
      {"a*b*c", "aXXbYY", false},
      {"", "", true},
      {"", "h", false},
  };
  for (const auto& c : cases) {
    INFO(c.pattern << " ~ " << c.host);
    CHECK(glob_match(c.pattern, c.host) == c.match);
  }
}

TEST_CASE("is_internal_address flags loopback, link-local and unspecified", "[fetch]") {
  struct Case {
    const char* address;
    bool internal;
  };
  const Case cases[] = {
      {"127.0.0.1", true},
      {"127.255.0.9", true},
      {"169.254.169.254", true},
      {"0.0.0.0", true},
      {"::1", true},
      {"::", true},
      {"fe80::1", true},
      {"febf::1", true},
      {"::ffff:127.0.0.1", true},
      {"::ffff:169.254.1.1", true},
      {"10.0.0.1", false},
      {"192.168.1.10", false},
      {"8.8.8.8", false},
      {"2001:db8::1", false},
      {"fec0::1", false},
      {"::ffff:10.1.2.3", false},
  };
  for (const auto& c : cases) {
    INFO(c.address);
    const auto storage = address(c.address);
    CHECK(is_internal_address(reinterpret_cast<const sockaddr*>(&storage)) == c.internal);
  }
}

TEST_CASE("OriginPolicy refuses schemes, hosts and internal addresses", "[fetch]") {
  const OriginPolicy open;
  CHECK_FALSE(open.check_url("https://developer.download.nvidia.com/x.run").has_value());
  CHECK_FALSE(open.check_url("http://mirror.lab/x").has_value());
  for (const char* url :
       {"file:///etc/passwd", "ftp://h/x", "data:text/plain,hi", "gopher://h/", "not a url"}) {
    INFO(url);
    CHECK(open.check_url(url).has_value());
  }
  const auto loopback = address("127.0.0.1");
  const auto refused = open.check_address("localhost", reinterpret_cast<const sockaddr*>(&loopback));
  REQUIRE(refused.has_value());
  CHECK(refused->find("--allow-origin localhost") != std::string::npos);

  const OriginPolicy restricted({"*.nvidia.com", "127.0.0.1"});
  CHECK_FALSE(restricted.check_url("https://developer.download.nvidia.com/x").has_value());
  CHECK(restricted.check_url("https://example.com/x").has_value());
  CHECK_FALSE(restricted.check_url("http://127.0.0.1:8080/x").has_value());
  CHECK_FALSE(
      restricted.check_address("127.0.0.1", reinterpret_cast<const sockaddr*>(&loopback)).has_value());
  CHECK(restricted.check_address("localhost", reinterpret_cast<const sockaddr*>(&loopback)).has_value());
}

TEST_CASE("proxy_for reads http_proxy, https_proxy and no_proxy", "[fetch]") {
  struct Case {
    std::map<std::string, std::string> vars;
    const char* scheme;
    const char* host;
    const char* proxy_host; // nullptr: direct
    int proxy_port;
  };
  const Case cases[] = {
      {{}, "https", "h", nullptr, 0},
      {{{"https_proxy", "http://proxy:3128"}}, "https", "h", "proxy", 3128},
      {{{"HTTPS_PROXY", "proxy:8080"}}, "https", "h", "proxy", 8080},
      {{{"https_proxy", "http://proxy"}}, "https", "h", "proxy", 1080},
      {{{"https_proxy", "http://proxy:3128"}}, "http", "h", nullptr, 0},
      {{{"http_proxy", "http://proxy:3128"}}, "http", "h", "proxy", 3128},
      {{{"HTTP_PROXY", "http://proxy:3128"}}, "http", "h", nullptr, 0},
      {{{"https_proxy", "proxy:1"}, {"no_proxy", "*"}}, "https", "h", nullptr, 0},
      {{{"https_proxy", "proxy:1"}, {"no_proxy", "example.com"}}, "https", "a.example.com", nullptr, 0},
      {{{"https_proxy", "proxy:1"}, {"no_proxy", ".example.com"}}, "https", "example.com", nullptr, 0},
      {{{"https_proxy", "proxy:1"}, {"NO_PROXY", "lab, example.com:443"}},
       "https",
       "example.com",
       nullptr,
       0},
      {{{"https_proxy", "proxy:1"}, {"no_proxy", "example.com"}}, "https", "badexample.com", "proxy", 1},
      {{{"https_proxy", "http://[::1]:3128"}}, "https", "h", "::1", 3128},
  };
  for (const auto& c : cases) {
    INFO(c.scheme << "://" << c.host);
    const auto proxy = proxy_for(c.scheme, c.host, env(c.vars));
    if (c.proxy_host == nullptr) {
      CHECK_FALSE(proxy.has_value());
    } else {
      REQUIRE(proxy.has_value());
      CHECK(proxy->host == c.proxy_host);
      CHECK(proxy->port == c.proxy_port);
    }
  }
  const auto with_auth = proxy_for("https", "h", env({{"https_proxy", "http://us%40er:p%3Ass@proxy:3128"}}));
  REQUIRE(with_auth.has_value());
  CHECK(with_auth->user == "us@er");
  CHECK(with_auth->password == "p:ss");
}
