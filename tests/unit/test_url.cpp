#include <catch2/catch.hpp>

#include <string>

#include "withcache/digest.hpp"
#include "withcache/url.hpp"
#include "withcache/util/encoding.hpp"

using withcache::url::KeyOptions;
using withcache::url::UrlErrc;
namespace url = withcache::url;
namespace digest = withcache::digest;

namespace {

struct KeyCase {
  const char* input;
  const char* expected;
};

struct ErrorCase {
  const char* input;
  UrlErrc code;
};

} // namespace

TEST_CASE("normalize_key produces the SPEC §2 cache key", "[url]") {
  const KeyCase cases[] = {
      // Scheme and host lower-cased; signing parameters dropped from the query.
      {"HTTPS://Example.COM/p/x.tgz?token=abc", "https://example.com/p/x.tgz"},
      {"https://example.com/Path/Is/Case/Sensitive", "https://example.com/Path/Is/Case/Sensitive"},
      // Default ports dropped; others kept.
      {"https://h:443/a", "https://h/a"},
      {"http://h:80/a", "http://h/a"},
      {"http://h:8080/a", "http://h:8080/a"},
      {"https://h:80/a", "https://h:80/a"},
      {"http://h:443/a", "http://h:443/a"},
      {"https://h:0443/a", "https://h/a"},
      {"https://h:/a", "https://h/a"},
      // Userinfo and fragment dropped.
      {"https://u:p@h/a", "https://h/a"},
      {"https://user@h/a", "https://h/a"},
      {"https://a@b:c@h/a", "https://h/a"},
      {"https://h/a#section", "https://h/a"},
      {"https://h/a?x=1#frag", "https://h/a?x=1"},
      // Empty path becomes "/".
      {"https://h", "https://h/"},
      {"https://h/", "https://h/"},
      {"https://h?x=1", "https://h/?x=1"},
      {"https://h#f", "https://h/"},
      // Dot segments (RFC 3986 §5.2.4).
      {"https://h/a/./b/../c", "https://h/a/c"},
      {"https://h/../a", "https://h/a"},
      {"https://h/a/b/..", "https://h/a/"},
      {"https://h/a/b/.", "https://h/a/b/"},
      {"https://h/a/%2E%2E/b", "https://h/b"},
      {"https://h/a//b", "https://h/a//b"},
      // Percent-encoding: hex upper-cased, unreserved decoded, reserved kept.
      {"https://h/%7e/x", "https://h/~/x"},
      {"https://h/a%2fb", "https://h/a%2Fb"},
      {"https://h/%41%62%63", "https://h/Abc"},
      {"https://h/a%20b", "https://h/a%20b"},
      {"https://h/a%3ab", "https://h/a%3Ab"},
      // Characters invalid in a URI are encoded, so both spellings are one key.
      {"https://h/a{b}", "https://h/a%7Bb%7D"},
      {"https://h/a%7Bb%7D", "https://h/a%7Bb%7D"},
      {"https://h/a\\b", "https://h/a%5Cb"},
      // Non-ASCII paths are keyed by their UTF-8 bytes.
      {"https://h/d\xC3\xBC/\xE6\x96\x87.tgz", "https://h/d%C3%BC/%E6%96%87.tgz"},
      {"https://h/d%c3%bc", "https://h/d%C3%BC"},
      // Sub-delims and ':' '@' stay literal in the path.
      {"https://h/a;b=c,d@e:f", "https://h/a;b=c,d@e:f"},
      // IPv6 literals and ports.
      {"http://[::1]:8080/a", "http://[::1]:8080/a"},
      {"https://[2001:DB8::1]:443/a", "https://[2001:db8::1]/a"},
      {"http://127.0.0.1:80/f", "http://127.0.0.1/f"},
      // Other schemes normalise structurally (the server refuses them separately).
      {"FTP://H/x", "ftp://h/x"},
  };
  for (const auto& c : cases) {
    INFO(c.input);
    const auto key = url::normalize_key(c.input);
    REQUIRE(key.has_value());
    CHECK(*key == c.expected);
  }
}

TEST_CASE("keep_query keeps and normalises the query", "[url]") {
  const KeyOptions keep{.keep_query = true};
  const KeyCase cases[] = {
      {"https://h/a?a=1", "https://h/a?a=1"}, {"https://h/a?a=1&b=%7e%2f", "https://h/a?a=1&b=~%2F"},
      {"https://h/a?", "https://h/a"},        {"https://h/a?a=1#frag", "https://h/a?a=1"},
      {"HTTPS://H?q", "https://h/?q"},        {"https://h/a?x=/y?z", "https://h/a?x=/y?z"},
  };
  for (const auto& c : cases) {
    INFO(c.input);
    const auto key = url::normalize_key(c.input, keep);
    REQUIRE(key.has_value());
    CHECK(*key == c.expected);
  }
  CHECK(*url::key_id("https://h/a?a=1", keep) != *url::key_id("https://h/a?a=2", keep));
  CHECK(*url::key_id("https://h/a?a=1") != *url::key_id("https://h/a?a=2"));
  CHECK(*url::key_id("https://h/a?token=1") == *url::key_id("https://h/a?token=2"));
}

TEST_CASE("the query in the key: signing parameters dropped, the rest kept in order", "[url]") {
  struct QueryCase {
    const char* input;
    KeyOptions options;
    const char* expected;
  };
  const KeyOptions by_default{};
  const KeyOptions keep{.keep_query = true};
  const KeyOptions drop{.drop_query = true};
  const KeyOptions both{.keep_query = true, .drop_query = true};
  const KeyOptions lab{.query_drop = {"session", "X-Lab-*"}};
  const QueryCase cases[] = {
      // Issue 13 case 1: one key per file= value; no caller picks another's variant.
      {"https://h/download?file=evil.iso", by_default, "https://h/download?file=evil.iso"},
      {"https://h/download?file=driver.run", by_default, "https://h/download?file=driver.run"},
      {"https://h/echo?q=bar", by_default, "https://h/echo?q=bar"},
      // Kept parameters stay in their order (never sorted).
      {"https://h/a?z=1&a=2&m=3", by_default, "https://h/a?z=1&a=2&m=3"},
      {"https://h/a?b=1&a=1&b=2", by_default, "https://h/a?b=1&a=1&b=2"},
      // AWS and GCS presigned URLs match by path.
      {"https://b.s3.amazonaws.com/k.iso?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F2026"
       "&X-Amz-Date=20260101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=ab12",
       by_default, "https://b.s3.amazonaws.com/k.iso"},
      {"https://b.s3.amazonaws.com/k.iso?versionId=7&x-amz-signature=ab12", by_default,
       "https://b.s3.amazonaws.com/k.iso?versionId=7"},
      {"https://storage.googleapis.com/b/o?X-Goog-Algorithm=x&X-Goog-Signature=y&generation=3", by_default,
       "https://storage.googleapis.com/b/o?generation=3"},
      // CloudFront, matched case-insensitively.
      {"https://d.cloudfront.net/f.run?Expires=1&Signature=s&Key-Pair-Id=k&Policy=p", by_default,
       "https://d.cloudfront.net/f.run"},
      {"https://d/f?expires=1&signature=s&KEY-PAIR-ID=k&policy=p&v=2", by_default, "https://d/f?v=2"},
      // Azure SAS.
      {"https://a.blob.core.windows.net/c/f.vhd?sv=2022-11-02&ss=b&srt=o&sp=r&se=2026&st=2025&spr=https"
       "&sig=abc%3D&sr=b&sdd=1&skoid=o&sktid=t&skt=1&ske=2&sks=b&skv=2022&comp=blocklist",
       by_default, "https://a.blob.core.windows.net/c/f.vhd?comp=blocklist"},
      // Akamai and generic tokens.
      {"https://h/f?__token__=exp=1~hmac=2&hdnts=x&token=t&access_token=a&ACCESS_TOKEN=b&arch=amd64",
       by_default, "https://h/f?arch=amd64"},
      // Names are compared after percent-decoding; values never matter.
      {"https://h/f?X%2DAmz%2DSignature=1&x=token", by_default, "https://h/f?x=token"},
      {"https://h/f?tokens=1&sigs=2&xsig=3", by_default, "https://h/f?tokens=1&sigs=2&xsig=3"},
      // A parameter without a value, empty parameters and an empty query.
      {"https://h/f?flag&&token", by_default, "https://h/f?flag"},
      {"https://h/f?token=1&sig=2", by_default, "https://h/f"},
      {"https://h/f?", by_default, "https://h/f"},
      {"https://h/f?&", by_default, "https://h/f"},
      // Kept parameters are normalised like the path.
      {"https://h/f?a=%7e%2f&b=%41", by_default, "https://h/f?a=~%2F&b=A"},
      // --query-drop adds names (exact, or a prefix with a trailing *), case-insensitively.
      {"https://h/f?session=1&v=2&x-lab-run=9&X-LAB-ID=3&lab=4", lab, "https://h/f?v=2&lab=4"},
      {"https://h/f?SESSION=1&token=2", lab, "https://h/f"},
      // --keep-query keeps everything, signatures included.
      {"https://h/f?v=2&X-Amz-Signature=s&token=t", keep, "https://h/f?v=2&X-Amz-Signature=s&token=t"},
      // --drop-query drops the whole query (withcache 0.3's key), and wins over --keep-query.
      {"https://h/f?v=2&X-Amz-Signature=s", drop, "https://h/f"},
      {"https://h/download?file=evil.iso", drop, "https://h/download"},
      {"https://h/f?v=2", both, "https://h/f"},
  };
  for (const auto& c : cases) {
    INFO(c.input);
    const auto key = url::normalize_key(c.input, c.options);
    REQUIRE(key.has_value());
    CHECK(*key == c.expected);
  }
  const char* const signing[] = {"X-Amz-Date", "x-goog-credential", "Expires", "SIGNATURE", "Key-Pair-Id",
                                 "Policy",     "sv",                "ss",      "srt",       "sp",
                                 "se",         "st",                "spr",     "sig",       "sr",
                                 "sdd",        "skoid",             "sktid",   "skt",       "ske",
                                 "sks",        "skv",               "__token__", "hdnts",   "token",
                                 "access_token"};
  for (const char* name : signing) {
    INFO(name);
    CHECK(url::is_signing_parameter(name));
  }
  for (const char* name : {"file", "version", "x-amz", "X-Am-Date", "tok", "sigv", "s", "", "policy2"}) {
    INFO(name);
    CHECK_FALSE(url::is_signing_parameter(name));
  }
}

TEST_CASE("fetch_url: the normalised path of the key with the original query", "[url]") {
  const KeyCase cases[] = {
      // Issue 13 case 2: the origin is asked for the path the key names, never the raw dot segments.
      {"http://h/pub/%2E%2E/releases/tool.tar.gz", "http://h/releases/tool.tar.gz"},
      {"http://h/pub/./a/../b", "http://h/pub/b"},
      {"HTTP://H:80/%7euser/%41?x=1", "http://h/~user/A?x=1"},
      {"https://h:8443/a%2fb", "https://h:8443/a%2Fb"},
      {"https://h/a{b}", "https://h/a%7Bb%7D"},
      {"https://h", "https://h/"},
      // The query is sent exactly as given: signatures, order, escapes and all.
      {"https://b.s3.amazonaws.com/k.iso?X-Amz-Signature=ab%2Bc&versionId=7",
       "https://b.s3.amazonaws.com/k.iso?X-Amz-Signature=ab%2Bc&versionId=7"},
      {"https://h/f?b=2&a=1&&%7e", "https://h/f?b=2&a=1&&%7e"},
      {"https://h/f?y=/../z", "https://h/f?y=/../z"},
      // Userinfo (sent as a header by the pool) and the fragment are not part of it.
      {"https://u:p@h/f?x=1#frag", "https://h/f?x=1"},
      {"https://h/f?", "https://h/f"},
  };
  for (const auto& c : cases) {
    INFO(c.input);
    const auto fetched = url::fetch_url(c.input);
    REQUIRE(fetched.has_value());
    CHECK(*fetched == c.expected);
  }
  // Every spelling of one key fetches one origin path.
  const char* const spellings[] = {"http://H/releases/tool.tar.gz", "http://h:80/pub/../releases/tool.tar.gz",
                                   "http://h/releases/%74ool.tar.gz", "http://h/releases/./tool.tar.gz#x"};
  for (const char* spelling : spellings) {
    INFO(spelling);
    CHECK(*url::fetch_url(spelling) == "http://h/releases/tool.tar.gz");
    CHECK(*url::key_id(spelling) == *url::key_id("http://h/releases/tool.tar.gz"));
  }
  // A URL has a fetch URL exactly when it has a key.
  for (const char* bad : {"", "nope", "https://h/a b", "https://h/a%zz", "https://h/a?x=%zz", "https://:1/a"}) {
    INFO(bad);
    CHECK(url::fetch_url(bad).has_value() == url::normalize_key(bad).has_value());
  }
}

TEST_CASE("malformed URLs are error values with a clear message", "[url]") {
  const ErrorCase cases[] = {
      {"", UrlErrc::empty},
      {"example.com/a.tgz", UrlErrc::no_scheme},
      {"/a/b", UrlErrc::no_scheme},
      {"1http://h/a", UrlErrc::no_scheme},
      {"://h/a", UrlErrc::no_scheme},
      {"https:/h/a", UrlErrc::no_host},
      {"https:h/a", UrlErrc::no_host},
      {"https:///a", UrlErrc::no_host},
      {"https://", UrlErrc::no_host},
      {"https://u:p@/a", UrlErrc::no_host},
      {"https://h:port/a", UrlErrc::bad_port},
      {"https://h:65536/a", UrlErrc::bad_port},
      {"https://h:99999999999999999999/a", UrlErrc::bad_port},
      {"https://h/a%zz", UrlErrc::bad_percent_escape},
      {"https://h/a%4", UrlErrc::bad_percent_escape},
      {"https://h/a%", UrlErrc::bad_percent_escape},
      {"https://h/a b", UrlErrc::space},
      {" https://h/a", UrlErrc::space},
      {"https://h/a\n", UrlErrc::control_character},
      {"https://h/a\tb", UrlErrc::control_character},
      {"https://h/a\x7F", UrlErrc::control_character},
      {"https://[::1/a", UrlErrc::bad_host},
      {"https://[::1]x/a", UrlErrc::bad_host},
      {"https://h<x>/a", UrlErrc::bad_host},
  };
  for (const auto& c : cases) {
    INFO(c.input);
    const auto key = url::normalize_key(c.input);
    REQUIRE_FALSE(key.has_value());
    CHECK(key.error().code == c.code);
    CHECK_FALSE(key.error().message.empty());
    CHECK(key.error().message.find('\n') == std::string::npos);
  }
  // A bad percent escape in the query only matters when the query is part of the key.
  CHECK_FALSE(url::normalize_key("https://h/a?x=%zz").has_value());
  CHECK(url::normalize_key("https://h/a?x=%zz", {.drop_query = true}).has_value());
  CHECK_FALSE(url::normalize_key("https://h/a?x=%zz", {.keep_query = true}).has_value());
}

TEST_CASE("key_id is the SHA-256 hex of the normalised URL", "[url]") {
  CHECK(digest::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(digest::sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(*url::key_id("HTTPS://H:443/a?x") == digest::sha256_hex("https://h/a?x"));
  CHECK(*url::key_id("HTTPS://H:443/a?token=x") == digest::sha256_hex("https://h/a"));
  CHECK(*url::key_id("https://h/a") == *url::key_id("https://u:p@H/./a#x"));
  CHECK_FALSE(url::key_id("nope").has_value());
}

TEST_CASE("cache_base accepts host, host:port and full URLs", "[url]") {
  const KeyCase cases[] = {
      {"cache", "http://cache"},
      {"cache:3000", "http://cache:3000"},
      {"http://cache:3000/", "http://cache:3000"},
      {"  http://cache:3000//  \n", "http://cache:3000"},
      {"https://cache.lab.example/", "https://cache.lab.example"},
      {"10.0.0.5:3000/", "http://10.0.0.5:3000"},
      {"http://cache:3000/prefix/", "http://cache:3000/prefix"},
  };
  for (const auto& c : cases) {
    INFO(c.input);
    CHECK(url::cache_base(c.input) == c.expected);
  }
}

TEST_CASE("tokens are byte-identical to withcache 0.3, names and queries are the origin's own",
          "[url][compat]") {
  // Tokens computed with Python: urlsafe_b64encode(origin).rstrip(b'='), as 0.3 does. The name is the
  // origin's last path segment byte for byte (0.3 percent-quoted it, which made `curl -O` save
  // `a%2Bb...`), and the origin's query follows it (SPEC §2), so curl and wget name files the same
  // from the cache as from the origin.
  struct Vector {
    const char* origin;
    const char* token;
    const char* name;
    const char* query; // what blob_url puts after the name
  };
  const Vector vectors[] = {
      {"https://developer.download.nvidia.com/compute/cuda/12.4.0/local_installers/"
       "cuda_12.4.0_550.54.14_linux.run",
       "aHR0cHM6Ly9kZXZlbG9wZXIuZG93bmxvYWQubnZpZGlhLmNvbS9jb21wdXRlL2N1ZGEvMTIuNC4wL2xvY2FsX2luc3RhbGxl"
       "cnMvY3VkYV8xMi40LjBfNTUwLjU0LjE0X2xpbnV4LnJ1bg",
       "cuda_12.4.0_550.54.14_linux.run", ""},
      {"https://h", "aHR0cHM6Ly9o", "download", ""},
      {"https://h/", "aHR0cHM6Ly9oLw", "download", ""},
      {"https://h/my file.tgz", "aHR0cHM6Ly9oL215IGZpbGUudGd6", "my%20file.tgz", ""},
      {"https://h/dir/\xC3\xBC.tgz", "aHR0cHM6Ly9oL2Rpci_DvC50Z3o", "\xC3\xBC.tgz", ""},
      {"https://repo.radeon.com/rocm/apt/6.0/pool/main/r/rocm/rocm_6.0.60000-91~22.04_amd64.deb",
       "aHR0cHM6Ly9yZXBvLnJhZGVvbi5jb20vcm9jbS9hcHQvNi4wL3Bvb2wvbWFpbi9yL3JvY20vcm9jbV82LjAuNjAwMDAtOTF-"
       "MjIuMDRfYW1kNjQuZGVi",
       "rocm_6.0.60000-91~22.04_amd64.deb", ""},
      {"https://h/a.tgz?token=abc&x=1#frag", "aHR0cHM6Ly9oL2EudGd6P3Rva2VuPWFiYyZ4PTEjZnJhZw", "a.tgz",
       "?token=abc&x=1"},
      {"https://h/a%20b.tgz", "aHR0cHM6Ly9oL2ElMjBiLnRneg", "a%20b.tgz", ""},
      {"http://127.0.0.1:8080/f.bin", "aHR0cDovLzEyNy4wLjAuMTo4MDgwL2YuYmlu", "f.bin", ""},
      {"https://h/a;b=c(1)", "aHR0cHM6Ly9oL2E7Yj1jKDEp", "a;b=c(1)", ""},
      {"https://h/~user/x+y.tar.gz", "aHR0cHM6Ly9oL351c2VyL3greS50YXIuZ3o", "x+y.tar.gz", ""},
      {"https://u:p@h/secret.iso", "aHR0cHM6Ly91OnBAaC9zZWNyZXQuaXNv", "secret.iso", ""},
      {"a", "YQ", "a", ""},
      {"ab", "YWI", "ab", ""},
      {"abc", "YWJj", "abc", ""},
  };
  for (const auto& v : vectors) {
    INFO(v.origin);
    CHECK(url::encode_token(v.origin) == v.token);
    CHECK(url::basename_of(v.origin) == v.name);
    CHECK(url::blob_url("cache:3000/", v.origin) ==
          std::string("http://cache:3000/b/") + v.token + "/" + v.name + v.query);
    const auto decoded = url::decode_token(v.token);
    REQUIRE(decoded.has_value());
    CHECK(*decoded == v.origin);
  }
}

TEST_CASE("the cache URL keeps the origin's file name and query byte for byte", "[url]") {
  struct Case {
    std::string origin;
    std::string tail; // the cache URL after its token
  };
  const Case cases[] = {
      {"https://h/d/a+b(1),v=2.tar", "/a+b(1),v=2.tar"},
      {"https://h/d/a%20b.tgz", "/a%20b.tgz"},
      {"https://h/d/a%2Bb.tgz", "/a%2Bb.tgz"},
      {"https://h/d/\xE6\x97\xA5\xE6\x9C\xAC.iso", "/\xE6\x97\xA5\xE6\x9C\xAC.iso"},
      {"https://h/small.bin?sig=abc", "/small.bin?sig=abc"},
      {"https://h/small.bin?", "/small.bin?"},
      {"https://h/f.bin?a=1&b=%2F#frag", "/f.bin?a=1&b=%2F"},
      {"https://h/dir/", "/download"},
      {"https://h/dir/?x=1", "/download?x=1"},
      {"https://h?x=1", "/download?x=1"},
      {"https://h/a/b/../c.tgz", "/c.tgz"},  // dot-segments resolved, as curl and wget do
      {"https://h/a/c.tgz/..", "/download"}, // ... which can leave no name at all
      {"https://h/a/c.tgz/.", "/download"},
      {"https://h/x\\y.bin", "/x\\y.bin"}, // curl names this y.bin either way
      {"https://h/t\tab", "/t%09ab"},      // bytes no request line may carry are escaped
      {"https://h/s p?q r", "/s%20p?q%20r"},
      {"https://h/%zz", "/%zz"},
      {"https://h/a;b", "/a;b"},
      {"https://h/[1].bin", "/[1].bin"},
  };
  for (const auto& c : cases) {
    INFO(c.origin);
    const std::string cache = url::blob_url("http://c:1", c.origin);
    const std::string prefix = "http://c:1/b/" + url::encode_token(c.origin);
    REQUIRE(cache.starts_with(prefix));
    CHECK(cache.substr(prefix.size()) == c.tail);
  }
}

TEST_CASE("tokens round-trip for origins of 1 byte to 4 KiB", "[url]") {
  std::string origin = "https://h/";
  for (std::size_t length = 1; length <= 4096; length = length < 64 ? length + 1 : length * 2) {
    std::string text(length, 'x');
    for (std::size_t i = 0; i < length; ++i) {
      text[i] = "abcXYZ019-_./~?=&%"[i % 18];
    }
    INFO(length);
    const auto token = url::encode_token(text);
    CHECK(token.find('=') == std::string::npos);
    const auto decoded = url::decode_token(token);
    REQUIRE(decoded.has_value());
    CHECK(*decoded == text);
  }
}

TEST_CASE("decode_token accepts padded tokens and refuses anything else", "[url]") {
  const KeyCase accepted[] = {
      {"YQ", "a"},
      {"YQ==", "a"},
      {"YWI", "ab"},
      {"YWI=", "ab"},
      {"YWJj", "abc"},
      {"w7w", "\xC3\xBC"},
      {"aHR0cHM6Ly9oL2Rpci_DvC50Z3o", "https://h/dir/\xC3\xBC.tgz"},
  };
  for (const auto& c : accepted) {
    INFO(c.input);
    const auto decoded = url::decode_token(c.input);
    REQUIRE(decoded.has_value());
    CHECK(*decoded == c.expected);
  }
  const ErrorCase refused[] = {
      {"", UrlErrc::empty},
      {"YQ=", UrlErrc::bad_token},      // partial padding
      {"YQ===", UrlErrc::bad_token},    // too much padding
      {"YWJj=", UrlErrc::bad_token},    // padding where none belongs
      {"Y=Q=", UrlErrc::bad_token},     // padding in the middle
      {"YWJjZ", UrlErrc::bad_token},    // impossible length
      {"aHR0+cHM", UrlErrc::bad_token}, // '+' is standard, not URL-safe, base64
      {"aHR0/cHM", UrlErrc::bad_token}, // '/'
      {"aHR0*cHM", UrlErrc::bad_token}, // '*'
      {"aHR0 cHM", UrlErrc::bad_token}, // space
      {"YR", UrlErrc::bad_token},       // non-zero trailing bits
      {"_w", UrlErrc::not_utf8},        // 0xFF
      {"wA", UrlErrc::not_utf8},        // overlong NUL
      {"7aCA", UrlErrc::not_utf8},      // UTF-16 surrogate
  };
  for (const auto& c : refused) {
    INFO(c.input);
    const auto decoded = url::decode_token(c.input);
    REQUIRE_FALSE(decoded.has_value());
    CHECK(decoded.error().code == c.code);
  }
}

TEST_CASE("redact removes userinfo and the values of signing and credential parameters", "[url]") {
  const KeyCase cases[] = {
      {"https://user:secret@h/a.tgz?X-Amz-Signature=abc#f", "https://h/a.tgz?X-Amz-Signature=\xE2\x80\xA6"},
      {"https://h/a.tgz", "https://h/a.tgz"},
      {"https://h:8443/p?", "https://h:8443/p?"},
      {"https://tok@h", "https://h"},
      {"not a url?token=1", "not a url?token=\xE2\x80\xA6"},
      {"user:pw@host/x?sig=s", "host/x?sig=\xE2\x80\xA6"},
      // Names kept, values of the known list replaced, whatever their case or percent-encoding.
      {"https://h/f.iso?file=a&X-Amz-Credential=AKIA%2F1&x-amz-signature=00ff&Expires=9",
       "https://h/"
       "f.iso?file=a&X-Amz-Credential=\xE2\x80\xA6&x-amz-signature=\xE2\x80\xA6&Expires=\xE2\x80\xA6"},
      {"https://h/f?X%2DGoog%2DSignature=s&access_token=t&__token__=exp=1~hmac=2&token",
       "https://h/"
       "f?X%2DGoog%2DSignature=\xE2\x80\xA6&access_token=\xE2\x80\xA6&__token__=\xE2\x80\xA6&token"},
      {"https://h/blob?sv=2020&sig=abc%3D&se=2030&name=x",
       "https://h/blob?sv=\xE2\x80\xA6&sig=\xE2\x80\xA6&se=\xE2\x80\xA6&name=x"},
      {"https://h/p?a=1&&b=2", "https://h/p?a=1&&b=2"},
  };
  for (const auto& c : cases) {
    INFO(c.input);
    CHECK(url::redact(c.input) == c.expected);
  }
}

TEST_CASE("shown redacts, then cuts long URLs to k_shown_url_bytes with their size", "[url]") {
  STATIC_REQUIRE(url::k_shown_url_bytes == 256);
  const std::string ellipsis = "\xE2\x80\xA6";
  const std::string e_acute = "\xC3\xA9";
  const auto repeat = [](const std::string& text, std::size_t n) {
    std::string out;
    for (std::size_t i = 0; i < n; ++i) {
      out += text;
    }
    return out;
  };
  const std::string exactly = "https://h/" + std::string(246, 'a'); // 256 bytes
  struct Case {
    const char* what;
    std::string input;
    std::string expected;
  };
  const Case cases[] = {
      {"short: only redacted", "https://u:pw@h/a.iso?X-Amz-Signature=abc",
       "https://h/a.iso?X-Amz-Signature=" + ellipsis},
      {"256 bytes: unchanged", exactly, exactly},
      {"257 bytes: cut, with the size", exactly + "b", exactly + ellipsis + " (257 bytes)"},
      {"9000 bytes", "https://h/" + std::string(8990, 'c'),
       "https://h/" + std::string(246, 'c') + ellipsis + " (9000 bytes)"},
      {"long userinfo: removed before the cut", "https://" + std::string(300, 'u') + ":secret@h/x",
       "https://h/x"},
      {"a signature past the cut: redacted, and the size is the redacted one",
       "https://h/" + std::string(300, 'd') + "?X-Amz-Signature=" + std::string(500, 'S'),
       "https://h/" + std::string(246, 'd') + ellipsis + " (" + std::to_string(10 + 300 + 17 + 3) +
           " bytes)"},
      {"a signature before the cut: its value never shown", "https://h/f?sig=SECRET&" + std::string(400, 'e'),
       "https://h/f?sig=" + ellipsis + "&" + std::string(256 - 20, 'e') + ellipsis + " (" +
           std::to_string(20 + 400) + " bytes)"},
      {"UTF-8: never cut inside a character", "https://h/x" + repeat(e_acute, 200),
       "https://h/x" + repeat(e_acute, 122) + ellipsis + " (411 bytes)"},
      {"fragment dropped first", "https://h/a#" + std::string(400, 'f'), "https://h/a"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    CHECK(url::shown(c.input) == c.expected);
    CHECK(url::shown(c.input).find("SECRET") == std::string::npos);
    CHECK(url::shown(c.input).find("secret") == std::string::npos);
  }
}

TEST_CASE("check_origin_size accepts k_max_origin_url bytes and refuses one more", "[url]") {
  STATIC_REQUIRE(url::k_max_origin_url == 8192);
  const auto of_size = [](std::size_t n) {
    std::string text = "https://h/";
    text.resize(n, 'a');
    return text;
  };
  struct Case {
    std::size_t size;
    bool accepted;
  };
  const Case cases[] = {{0, true}, {10, true}, {8191, true}, {8192, true}, {8193, false}, {14000, false}};
  for (const auto& c : cases) {
    INFO(c.size << " bytes");
    const auto error = url::check_origin_size(of_size(c.size));
    CHECK(error.has_value() == !c.accepted);
    if (error) {
      CHECK(error->code == UrlErrc::too_long);
      CHECK(error->message ==
            "URL too long: " + std::to_string(c.size) + " bytes, at most 8192 are accepted");
      CHECK(error->message.find("https://") == std::string::npos); // never repeats the URL
    }
  }
}

TEST_CASE("is_utf8 validates UTF-8", "[url]") {
  CHECK(url::is_utf8(""));
  CHECK(url::is_utf8("plain"));
  CHECK(url::is_utf8("\xF0\x9F\x98\x80"));
  CHECK_FALSE(url::is_utf8("\xF4\x90\x80\x80")); // > U+10FFFF
  CHECK_FALSE(url::is_utf8("\xE2\x82"));         // truncated
  CHECK_FALSE(url::is_utf8("\x80"));             // lone continuation
}

TEST_CASE("parse_target gives what a client connects to", "[url]") {
  struct Case {
    const char* input;
    const char* scheme;
    const char* host;
    int port;
    const char* request;
  };
  const Case cases[] = {
      {"https://Example.COM/a/b?x=1#f", "https", "example.com", 443, "/a/b?x=1"},
      {"http://h", "http", "h", 80, "/"},
      {"http://u:p@h:8080?q", "http", "h", 8080, "/?q"},
      {"http://[::1]:3000/x", "http", "::1", 3000, "/x"},
      {"https://h/a%20b/../c%7e", "https", "h", 443, "/c%7e"},
      {"https://h/./x?y=/../z", "https", "h", 443, "/x?y=/../z"},
  };
  for (const auto& c : cases) {
    INFO(c.input);
    const auto target = url::parse_target(c.input);
    REQUIRE(target.has_value());
    CHECK(target->scheme == c.scheme);
    CHECK(target->host == c.host);
    CHECK(target->port == c.port);
    CHECK(target->request == c.request);
  }
  CHECK_FALSE(url::parse_target("no scheme").has_value());
  CHECK(url::scheme_of("HTTPS://h") == "https");
  CHECK(url::scheme_of("file:///etc/passwd") == "file");
  CHECK(url::scheme_of("no scheme") == "");
}

TEST_CASE("strip_userinfo removes only the userinfo", "[url]") {
  CHECK(url::strip_userinfo("https://u:p@h/a?x=1") == "https://h/a?x=1");
  CHECK(url::strip_userinfo("https://h/a@b") == "https://h/a@b");
  CHECK(url::strip_userinfo("https://a@b@h:1/x") == "https://h:1/x");
  CHECK(url::strip_userinfo("not a url") == "not a url");
}

TEST_CASE("resolve_reference follows RFC 3986 section 5.2", "[url]") {
  const char* base = "http://a/b/c/d;p?q";
  const KeyCase cases[] = {
      {"g:h", "g:h"},
      {"g", "http://a/b/c/g"},
      {"./g", "http://a/b/c/g"},
      {"g/", "http://a/b/c/g/"},
      {"/g", "http://a/g"},
      {"//g", "http://g"},
      {"?y", "http://a/b/c/d;p?y"},
      {"g?y", "http://a/b/c/g?y"},
      {"#s", "http://a/b/c/d;p?q"},
      {"", "http://a/b/c/d;p?q"},
      {"../g", "http://a/b/g"},
      {"../../../g", "http://a/g"},
      {"https://cdn.example/x.run?sig=1", "https://cdn.example/x.run?sig=1"},
  };
  for (const auto& c : cases) {
    INFO(c.input);
    const auto resolved = url::resolve_reference(base, c.input);
    REQUIRE(resolved.has_value());
    CHECK(*resolved == c.expected);
  }
  CHECK(*url::resolve_reference("https://h", "x") == "https://h/x");
}

TEST_CASE("Sha256 hashes incrementally and can be read, continued and reset", "[url]") {
  digest::Sha256 sha;
  CHECK(sha.hex() == digest::sha256_hex(""));
  sha.update("ab", 2);
  CHECK(sha.hex() == digest::sha256_hex("ab"));
  sha.update("c", 1); // still usable after hex()
  CHECK(sha.hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  digest::Sha256 moved = std::move(sha);
  CHECK(moved.hex() == digest::sha256_hex("abc"));
  moved.reset();
  CHECK(moved.hex() == digest::sha256_hex(""));
}
