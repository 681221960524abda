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

TEST_CASE("special_purpose_range refuses every IANA special-purpose range and lets public unicast through",
          "[fetch]") {
  struct Case {
    const char* address;
    const char* why; // nullptr: public
  };
  const Case cases[] = {
      {"127.0.0.1", "loopback"},
      {"127.255.0.9", "loopback"},
      {"0.0.0.0", "this network"},
      {"0.1.2.3", "this network"},
      {"10.1.2.3", "RFC 1918"},
      {"172.16.0.5", "RFC 1918"},
      {"172.31.255.255", "RFC 1918"},
      {"192.168.1.7", "RFC 1918"},
      {"100.64.0.9", "CGNAT"},
      {"100.127.255.255", "CGNAT"},
      {"169.254.169.254", "link-local"},
      {"192.0.0.8", "IETF protocol"},
      {"192.0.2.1", "documentation"},
      {"198.51.100.1", "documentation"},
      {"203.0.113.7", "documentation"},
      {"198.18.0.1", "benchmarking"},
      {"198.19.255.1", "benchmarking"},
      {"192.88.99.1", "6to4 relay"},
      {"224.0.0.1", "multicast"},
      {"239.255.255.250", "multicast"},
      {"240.0.0.1", "reserved"},
      {"255.255.255.255", "reserved"},
      {"::", "unspecified"},
      {"::1", "loopback"},
      {"fe80::1", "link-local"},
      {"febf::1", "link-local"},
      {"fec0::1", "site-local"},
      {"fc00::1", "unique local"},
      {"fd00::5", "unique local"},
      {"ff02::1", "multicast"},
      {"2001:db8::1", "documentation"},
      {"3fff::1", "documentation"},
      {"2001::1", "IETF protocol"}, // Teredo
      {"100::1", "discard-only"},
      {"64:ff9b:1::1", "local-use NAT64"},
      {"5f00::1", "SRv6"},
      {"::10.1.2.3", "outside global unicast"}, // IPv4-compatible (deprecated)
      {"4000::1", "outside global unicast"},
      // IPv6 forms of IPv4 addresses are judged by the IPv4 address.
      {"::ffff:127.0.0.1", "loopback"},
      {"::ffff:10.1.2.3", "RFC 1918"},
      {"::ffff:169.254.1.1", "link-local"},
      {"64:ff9b::10.1.2.3", "RFC 1918"},
      {"2002:c0a8:0107::1", "RFC 1918"}, // 6to4 of 192.168.1.7
      {"2002:7f00:1::1", "loopback"},
      // Public unicast.
      {"8.8.8.8", nullptr},
      {"1.1.1.1", nullptr},
      {"100.128.0.1", nullptr},
      {"172.32.0.1", nullptr},
      {"192.169.0.1", nullptr},
      {"11.1.2.3", nullptr},
      {"2606:4700::1111", nullptr},
      {"2a00:1450:4001::1", nullptr},
      {"::ffff:8.8.8.8", nullptr},
      {"64:ff9b::8.8.8.8", nullptr},
      {"2002:0808:0808::1", nullptr},
  };
  for (const auto& c : cases) {
    INFO(c.address);
    const auto storage = address(c.address);
    const auto* sa = reinterpret_cast<const sockaddr*>(&storage);
    const auto why = special_purpose_range(sa);
    CHECK(is_internal_address(sa) == (c.why != nullptr));
    if (c.why == nullptr) {
      CHECK_FALSE(why.has_value());
    } else {
      REQUIRE(why.has_value());
      CHECK(why->find(c.why) != std::string::npos);
    }
  }
}

TEST_CASE("parse_allow_private reads CIDRs, addresses and names", "[fetch]") {
  struct Case {
    const char* text;
    const char* networks; // space-separated texts, or nullptr for an error
  };
  const Case cases[] = {
      {"10.1.2.3", "10.1.2.3/32"},
      {"10.0.0.0/8", "10.0.0.0/8"},
      {"192.168.1.1/24", "192.168.1.0/24"},
      {"fd00::5", "fd00::5/128"},
      {"[fd00::5]", "fd00::5/128"},
      {"fd00::/8", "fd00::/8"},
      {"::ffff:10.1.2.3", "10.1.2.3/32"},
      {"::ffff:10.0.0.0/104", "10.0.0.0/8"},
      {"0.0.0.0/0", "0.0.0.0/0"},
      {"localhost", "127.0.0.1/32"},
      {"10.1.2.3/33", nullptr},
      {"fd00::/129", nullptr},
      {"10.1.2.3/x", nullptr},
      {"", nullptr},
      {"no-such-host.invalid", nullptr},
      {"localhost/8", nullptr},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    const auto parsed = parse_allow_private(c.text);
    if (c.networks == nullptr) {
      CHECK_FALSE(parsed.has_value());
      continue;
    }
    REQUIRE(parsed.has_value());
    std::string texts;
    for (const auto& n : *parsed) {
      texts += (texts.empty() ? "" : " ") + n.text();
    }
    if (std::string_view(c.text) == "localhost") {
      CHECK(texts.find("127.0.0.1/32") != std::string::npos); // and ::1/128 where /etc/hosts says so
    } else {
      CHECK(texts == c.networks);
    }
  }
  const auto lab = parse_allow_private("10.0.0.0/8").value().at(0);
  for (const char* inside : {"10.0.0.1", "10.255.255.255", "::ffff:10.9.9.9"}) {
    INFO(inside);
    const auto storage = address(inside);
    CHECK(lab.contains(reinterpret_cast<const sockaddr*>(&storage)));
  }
  for (const char* outside : {"11.0.0.1", "9.255.255.255", "fd00::1"}) {
    INFO(outside);
    const auto storage = address(outside);
    CHECK_FALSE(lab.contains(reinterpret_cast<const sockaddr*>(&storage)));
  }
}

TEST_CASE("OriginPolicy: --allow-origin narrows names, only --allow-private opens addresses", "[fetch]") {
  const auto at = [](const char* text) {
    return address(text);
  };
  const auto check = [](const OriginPolicy& policy, const char* host, const sockaddr_storage& storage) {
    return policy.check_address(host, reinterpret_cast<const sockaddr*>(&storage));
  };

  const OriginPolicy open;
  CHECK_FALSE(open.check_url("https://developer.download.nvidia.com/x.run").has_value());
  CHECK_FALSE(open.check_url("http://mirror.lab/x").has_value());
  for (const char* url :
       {"file:///etc/passwd", "ftp://h/x", "data:text/plain,hi", "gopher://h/", "not a url"}) {
    INFO(url);
    CHECK(open.check_url(url).has_value());
  }
  const auto loopback = at("127.0.0.1");
  const auto refused = check(open, "localhost", loopback);
  REQUIRE(refused.has_value());
  CHECK(*refused == "host localhost resolves to 127.0.0.1: loopback, not a public address; allow it with "
                    "--allow-private 127.0.0.1");
  const auto literal = check(open, "10.1.2.3", at("10.1.2.3"));
  REQUIRE(literal.has_value());
  CHECK(literal->starts_with("address 10.1.2.3: private (RFC 1918), not a public address"));
  CHECK_FALSE(check(open, "dns.google", at("8.8.8.8")).has_value());

  // A glob never exempts an address: not '*', not a pattern naming the host, not an IP literal.
  for (const auto& patterns :
       std::vector<std::vector<std::string>>{{"*"}, {"127.0.0.1"}, {"*.lab", "localhost"}}) {
    const OriginPolicy named(patterns);
    CHECK(check(named, "127.0.0.1", loopback).has_value());
    CHECK(check(named, "localhost", loopback).has_value());
    CHECK(check(named, "mirror.lab", at("10.1.2.3")).has_value());
    CHECK(check(named, "x.lab", at("::ffff:192.168.1.7")).has_value());
  }
  const OriginPolicy restricted({"*.nvidia.com", "127.0.0.1"});
  CHECK_FALSE(restricted.check_url("https://developer.download.nvidia.com/x").has_value());
  CHECK(restricted.check_url("https://example.com/x").has_value());
  CHECK_FALSE(restricted.check_url("http://127.0.0.1:8080/x").has_value());

  // --allow-private opens exactly its networks, whatever the name, and IPv4-mapped forms of them.
  const OriginPolicy mirror({}, parse_allow_private("10.1.2.3").value());
  CHECK_FALSE(check(mirror, "mirror.lab", at("10.1.2.3")).has_value());
  CHECK_FALSE(check(mirror, "::ffff:10.1.2.3", at("::ffff:10.1.2.3")).has_value());
  CHECK(check(mirror, "mirror.lab", at("10.1.2.4")).has_value());
  CHECK(check(mirror, "localhost", loopback).has_value());
  CHECK(check(mirror, "x", at("172.16.0.5")).has_value());
  CHECK(mirror.describe().find("--allow-private 10.1.2.3/32; any host name") != std::string::npos);
  CHECK(OriginPolicy({"*.nvidia.com"}).describe().find("host names matching *.nvidia.com") !=
        std::string::npos);

  // A client downloading for itself may go anywhere.
  CHECK_FALSE(check(OriginPolicy::any(), "localhost", loopback).has_value());
}

TEST_CASE("this host's own interface addresses are refused unless --allow-private names them", "[fetch]") {
  // Loopback is an interface address of every host: it is refused as loopback first, so look for
  // another address this host has, if any, and check that a public-looking one would be refused too.
  const auto own = address("127.0.0.1");
  CHECK(is_own_interface_address(reinterpret_cast<const sockaddr*>(&own)));
  const auto far = address("192.0.2.200");
  CHECK_FALSE(is_own_interface_address(reinterpret_cast<const sockaddr*>(&far)));
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
