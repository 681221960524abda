#include <catch2/catch.hpp>

#include "http/http.hpp"
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

using withcache::http::ByteRange;
namespace http = withcache::http;

TEST_CASE("parse_range: one range of a representation of 10 000 bytes", "[http]") {
  struct Case {
    const char* header;
    ByteRange::Kind kind;
    std::uint64_t first;
    std::uint64_t last;
  };
  using K = ByteRange::Kind;
  const Case cases[] = {
      {"bytes=0-99", K::partial, 0, 99},
      {"bytes=5-", K::partial, 5, 9999},
      {"bytes=-100", K::partial, 9900, 9999},
      {"bytes=-20000", K::partial, 0, 9999}, // suffix longer than the file: all of it
      {"bytes=9999-", K::partial, 9999, 9999},
      {"bytes=100-20000", K::partial, 100, 9999}, // last clamped
      {" bytes=1-2 ", K::partial, 1, 2},
      {"bytes= 1 - 2", K::partial, 1, 2},
      {"bytes=10000-", K::unsatisfiable, 0, 0},
      {"bytes=20000-30000", K::unsatisfiable, 0, 0},
      {"bytes=-0", K::unsatisfiable, 0, 0},
      {"", K::full, 0, 0},
      {"bytes=0-1,5-6", K::full, 0, 0}, // several ranges: the whole representation
      {"items=0-1", K::full, 0, 0},
      {"bytes=abc", K::full, 0, 0},
      {"bytes=5-1", K::full, 0, 0},
      {"bytes=-", K::full, 0, 0},
      {"bytes=1-x", K::full, 0, 0},
      // Positions too large for 64 bits are past the end of any file (RFC 9110 §14.1.2).
      {"bytes=99999999999999999999-", K::unsatisfiable, 0, 0},
      {"bytes=0-99999999999999999999", K::partial, 0, 9999},
      {"bytes=5-184467440737095516160000", K::partial, 5, 9999},
      {"bytes=-99999999999999999999", K::partial, 0, 9999},
      {"bytes=99999999999999999999-5", K::full, 0, 0}, // last < first: invalid, ignored
      {"bytes=1e3-", K::full, 0, 0},
      {"bytes=+5-", K::full, 0, 0},
  };
  for (const auto& c : cases) {
    INFO(c.header);
    const auto r = http::parse_range(c.header, 10'000);
    CHECK(r.kind == c.kind);
    if (c.kind == K::partial) {
      CHECK(r.first == c.first);
      CHECK(r.last == c.last);
    }
  }
  CHECK(http::parse_range("bytes=0-", 0).kind == K::unsatisfiable);
  CHECK(http::parse_range("bytes=-5", 0).kind == K::unsatisfiable);
}

TEST_CASE("none_match compares entity-tags weakly", "[http]") {
  const char* etag = R"("abc")";
  CHECK(http::none_match(R"("abc")", etag));
  CHECK(http::none_match(R"(W/"abc")", etag));
  CHECK(http::none_match(R"("x", "abc")", etag));
  CHECK(http::none_match("*", etag));
  CHECK_FALSE(http::none_match(R"("abcd")", etag));
  CHECK_FALSE(http::none_match("abc", etag));
  CHECK_FALSE(http::none_match("", etag));
}

TEST_CASE("http_date and parse_http_date round-trip IMF-fixdate", "[http]") {
  CHECK(http::http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK(http::http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
  CHECK(http::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == std::optional<std::time_t>(784111777));
  for (const std::time_t t : {std::time_t{0}, std::time_t{951782400}, std::time_t{1795927762}}) {
    CHECK(http::parse_http_date(http::http_date(t)) == std::optional<std::time_t>(t));
  }
  for (const char* bad :
       {"", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 32 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 UTC"}) {
    INFO(bad);
    CHECK_FALSE(http::parse_http_date(bad).has_value());
  }
  // What it accepts always formats back to itself (a leap second reads as :59); impossible dates are refused.
  for (const char* odd : {"Fri, 31 Dec 9999 23:59:60 GMT", "Sat, 31 Dec 1994 23:59:60 GMT"}) {
    INFO(odd);
    const auto t = http::parse_http_date(odd);
    REQUIRE(t.has_value());
    CHECK(http::parse_http_date(http::http_date(*t)) == t);
  }
  for (const char* impossible : {"Xyz, 06 Nov 1994 08:49:37 GMT", "Mon, 06 Nov 1994 08:49:37 GMT",
                                 "Thu, 31 Feb 1994 08:49:37 GMT", "Wed, 31 Dec 1969 23:59:59 GMT"}) {
    INFO(impossible);
    CHECK_FALSE(http::parse_http_date(impossible).has_value());
  }
}

TEST_CASE("if_range_matches takes a strong tag or the exact date", "[http]") {
  const char* etag = R"("abc")";
  CHECK(http::if_range_matches(R"("abc")", etag, 784111777));
  CHECK_FALSE(http::if_range_matches(R"(W/"abc")", etag, 784111777)); // weak tags never match
  CHECK_FALSE(http::if_range_matches(R"("old")", etag, 784111777));
  CHECK(http::if_range_matches("Sun, 06 Nov 1994 08:49:37 GMT", etag, 784111777));
  CHECK_FALSE(http::if_range_matches("Sun, 06 Nov 1994 08:49:38 GMT", etag, 784111777));
  CHECK_FALSE(http::if_range_matches("garbage", etag, 784111777));
}

TEST_CASE("is_strong_etag takes one quoted opaque tag", "[http]") {
  const std::pair<const char*, bool> cases[] = {
      {R"("abc")", true},
      {R"("")", true},
      {R"("wc-fill-0123abcd-2")", true},
      {"\"caf\xC3\xA9\"", true}, // obs-text
      {R"(W/"abc")", false},
      {"abc", false},
      {R"("abc)", false},
      {R"(")", false},
      {R"("a"b")", false},
      {R"("a", "b")", false},
      {"\"a b\"", false}, // SP is not an etagc
      {"", false},
  };
  for (const auto& [text, strong] : cases) {
    INFO(text);
    CHECK(http::is_strong_etag(text) == strong);
  }
}

TEST_CASE("range_applies: a 206 only for the version the client holds", "[http]") {
  const std::time_t date = 784111777; // Sun, 06 Nov 1994 08:49:37 GMT
  const http::RangeGuard immutable{R"("sha")", date, true};
  const http::RangeGuard may_change{R"("sha")", std::nullopt, false};
  const http::RangeGuard filling{R"("wc-fill-ab-1")", std::nullopt, false};
  struct Case {
    const http::RangeGuard* guard;
    std::optional<std::string_view> if_range;
    bool applies;
  };
  const Case cases[] = {
      // Bytes that never change: a bare Range resumes (curl -C -, wget -c); If-Range as RFC 9110 says.
      {&immutable, std::nullopt, true},
      {&immutable, R"("sha")", true},
      {&immutable, R"( "sha" )", true},
      {&immutable, R"("other")", false},
      {&immutable, R"(W/"sha")", false}, // a weak tag never matches
      {&immutable, "Sun, 06 Nov 1994 08:49:37 GMT", true},
      {&immutable, "Sun, 06 Nov 1994 08:49:38 GMT", false},
      {&immutable, "garbage", false},
      // Bytes that can change (a finite lifetime, a replacement): a Range needs the strong tag.
      {&may_change, std::nullopt, false},
      {&may_change, R"("sha")", true},
      {&may_change, R"("other")", false},
      {&may_change, "Sun, 06 Nov 1994 08:49:37 GMT", false}, // a date cannot tell two versions of one second
      // A running fill: only its own validator.
      {&filling, std::nullopt, false},
      {&filling, R"("wc-fill-ab-1")", true},
      {&filling, R"("wc-fill-ab-0")", false}, // the generation before a restart
      {&filling, R"(W/"wc-fill-ab-1")", false},
      {&filling, R"("wc-fill-ab-1)", false},
      {&filling, "", false},
  };
  for (const auto& c : cases) {
    INFO((c.guard == &immutable    ? "immutable"
          : c.guard == &may_change ? "may change"
                                   : "filling")
         << ", If-Range: " << (c.if_range ? std::string(*c.if_range) : std::string("(none)")));
    CHECK(http::range_applies(c.if_range, *c.guard) == c.applies);
  }
}

TEST_CASE("answer_range: 206, the whole body, or 428 for a bare resume of bytes that can change", "[http]") {
  using A = http::RangeAnswer;
  const http::RangeGuard immutable{R"("sha")", 784111777, true};
  const http::RangeGuard may_change{R"("sha")", std::nullopt, false};
  struct Case {
    const http::RangeGuard* guard;
    const char* range; // nullptr: no Range
    std::optional<std::string_view> if_range;
    A answer;
  };
  const Case cases[] = {
      {&immutable, nullptr, std::nullopt, A::whole},
      {&immutable, "bytes=100-", std::nullopt, A::range},  // curl -C -, wget -c
      {&immutable, "bytes=2000-", std::nullopt, A::range}, // unsatisfiable: the caller answers 416
      {&immutable, "bytes=100-", R"("old")", A::whole},
      {&immutable, "items=1-2", std::nullopt, A::whole}, // not a byte range: ignored
      {&may_change, nullptr, std::nullopt, A::whole},
      {&may_change, "bytes=100-", R"("sha")", A::range},
      {&may_change, "bytes=2000-", R"("sha")", A::range},
      {&may_change, "bytes=100-", R"("old")", A::whole}, // If-Range: the client restarts on a 200
      {&may_change, "bytes=100-", "Sun, 06 Nov 1994 08:49:37 GMT", A::whole},
      {&may_change, "bytes=100-", std::nullopt, A::needs_if_range}, // wget's retry would splice a 200
      {&may_change, "bytes=100-199", std::nullopt, A::needs_if_range},
      {&may_change, "bytes=-10", std::nullopt, A::needs_if_range},
      {&may_change, "bytes=2000-", std::nullopt, A::needs_if_range}, // wget -c would call it complete
      {&may_change, "bytes=0-", std::nullopt, A::whole},             // nothing before byte 0 to splice
      {&may_change, "bytes=0-99", std::nullopt, A::whole},
      {&may_change, "bytes=0-1,5-6", std::nullopt, A::whole}, // several ranges: ignored
  };
  for (const auto& c : cases) {
    INFO((c.guard == &immutable ? "immutable" : "may change")
         << ", Range: " << (c.range ? c.range : "(none)")
         << ", If-Range: " << (c.if_range ? std::string(*c.if_range) : std::string("(none)")));
    const auto asked = c.range ? http::parse_range(c.range, 1000) : http::ByteRange{};
    CHECK(http::answer_range(asked, c.if_range, *c.guard) == c.answer);
  }
}

TEST_CASE("parse_content_range reads what origins send back", "[http]") {
  struct Case {
    const char* header;
    bool ok;
    std::uint64_t first;
    std::uint64_t last;
    std::uint64_t total;
    bool unsatisfied;
  };
  const Case cases[] = {
      {"bytes 100-199/1000", true, 100, 199, 1000, false},
      {"bytes 0-0/1", true, 0, 0, 1, false},
      {"bytes 5-9/*", true, 5, 9, 0, false},
      {"bytes */1000", true, 0, 0, 1000, true},
      {"bytes 9-5/10", false, 0, 0, 0, false},
      {"bytes 1-2", false, 0, 0, 0, false},
      {"items 1-2/3", false, 0, 0, 0, false},
      {"bytes a-b/c", false, 0, 0, 0, false},
      {"", false, 0, 0, 0, false},
  };
  for (const auto& c : cases) {
    INFO(c.header);
    const auto r = http::parse_content_range(c.header);
    REQUIRE(r.has_value() == c.ok);
    if (c.ok) {
      CHECK(r->first == c.first);
      CHECK(r->last == c.last);
      CHECK(r->total == c.total);
      CHECK(r->unsatisfied == c.unsatisfied);
    }
  }
  CHECK(http::parse_decimal("18446744073709551615") == std::nullopt); // 20 digits
  CHECK(http::parse_decimal("1234567890123456789") == std::optional<std::uint64_t>(1234567890123456789ULL));
  CHECK_FALSE(http::parse_decimal("").has_value());
  CHECK_FALSE(http::parse_decimal("-1").has_value());
}

TEST_CASE("Cache-Control directives are split, lower-cased and unquoted", "[http]") {
  struct Case {
    const char* value;
    std::vector<std::tuple<std::string, std::string, bool>> directives;
  };
  const Case cases[] = {
      {"", {}},
      {"no-store", {{"no-store", "", false}}},
      {"Public, MAX-AGE=600", {{"public", "", false}, {"max-age", "600", true}}},
      {" max-age = 60 ,, immutable ", {{"max-age", "60", true}, {"immutable", "", false}}},
      {"private=\"Set-Cookie, X-Y\", max-age=5", {{"private", "Set-Cookie, X-Y", true}, {"max-age", "5", true}}},
      {"no-cache=\"a\\\"b\"", {{"no-cache", "a\"b", true}}},
      {"max-age=", {{"max-age", "", true}}},
  };
  for (const auto& c : cases) {
    INFO(c.value);
    const auto parsed = http::parse_cache_control(c.value);
    REQUIRE(parsed.size() == c.directives.size());
    for (std::size_t i = 0; i < parsed.size(); ++i) {
      CHECK(parsed[i].name == std::get<0>(c.directives[i]));
      CHECK(parsed[i].argument == std::get<1>(c.directives[i]));
      CHECK(parsed[i].has_argument == std::get<2>(c.directives[i]));
    }
  }
  const auto directives = http::parse_cache_control("public, max-age=1");
  CHECK(http::find_directive(directives, "max-age")->argument == "1");
  CHECK(http::find_directive(directives, "no-store") == nullptr);
}
