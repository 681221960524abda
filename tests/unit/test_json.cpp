#include <catch2/catch.hpp>

#include "json/json.hpp"

namespace json = withcache::json;
using withcache::Artifact;
using withcache::Event;
using withcache::Job;
using withcache::JobStatus;
using withcache::Miss;
using withcache::Stats;

TEST_CASE("json::parse accepts RFC 8259 texts", "[json]") {
  const auto v = json::parse(R"( {"url": "https://h/a?x=1", "headers": {"Authorization": "Bearer t"},
                                  "n": -1.5e2, "ok": true, "none": null, "list": [1, "two", []]} )");
  REQUIRE(v.has_value());
  REQUIRE(v->is_object());
  CHECK(v->at("url") == "https://h/a?x=1");
  CHECK(v->at("headers").at("Authorization") == "Bearer t");
  CHECK(v->at("n").get<double>() == -150.0);
  CHECK(v->at("ok") == true);
  CHECK(v->at("none").is_null());
  CHECK(v->at("list").size() == 3);

  struct Case {
    const char* text;
    const char* string;
  };
  const Case strings[] = {
      {R"("plain")", "plain"},
      {R"("q\"b\\s\/")", "q\"b\\s/"},
      {R"("\n\r\t\b\f")", "\n\r\t\b\f"},
      {R"("\u00fc")", "\xC3\xBC"},
      {R"("\ud83d\ude00")", "\xF0\x9F\x98\x80"},
      {"\"\xE6\x96\x87\"", "\xE6\x96\x87"},
  };
  for (const auto& c : strings) {
    INFO(c.text);
    const auto s = json::parse(c.text);
    REQUIRE(s.has_value());
    CHECK(s->get<std::string>() == c.string);
  }
  for (const char* number : {"0", "-0", "12", "1.25", "1e3", "1E-3", "-12.5e+2", "18446744073709551615"}) {
    INFO(number);
    CHECK(json::parse(number).has_value());
  }
}

TEST_CASE("json::parse refuses what is not strict JSON, in one line that never repeats the input", "[json]") {
  struct Case {
    std::string_view text;
    const char* error_starts;
  };
  const Case bad[] = {
      {"", "invalid JSON at byte "},
      {"{", "invalid JSON at byte "},
      {"[1,]", "invalid JSON at byte "},
      {"{\"a\":1,}", "invalid JSON at byte "},
      {"{\"a\" 1}", "invalid JSON at byte "},
      {"{'a':1}", "invalid JSON at byte "},
      {"{\"a\":1}x", "invalid JSON at byte "},
      {"01", "invalid JSON at byte "},
      {"1.", "invalid JSON at byte "},
      {".5", "invalid JSON at byte "},
      {"-", "invalid JSON at byte "},
      {"1e", "invalid JSON at byte "},
      {"NaN", "invalid JSON at byte "},
      {"Infinity", "invalid JSON at byte "},
      {"tru", "invalid JSON at byte "},
      {"\"a", "invalid JSON at byte "},
      {"\"\\x\"", "invalid JSON at byte "},
      {"\"\\u12\"", "invalid JSON at byte "},
      {"\"\\ud800\"", "invalid JSON at byte "},
      {"\"\\udc00\"", "invalid JSON at byte "},
      {"\"\x01\"", "invalid JSON at byte "},
      {"\"\xFF\"", "invalid JSON at byte "},
      {"\"\xC0\xAF\"", "invalid JSON at byte "},
      {"// c\n1", "invalid JSON at byte "},
      {"/* c */ 1", "invalid JSON at byte "},
      {"1e999", "invalid JSON: a number is out of range"},
      {std::string_view("3\0\0\0gg", 6), "invalid JSON at byte 1"}, // a NUL ended nlohmann's input early
      {"{\"a\":1,\"a\":2}", "JSON object repeats a key"},
      {"{\"h\":{\"x\":\"1\",\"x\":\"2\"}}", "JSON object repeats a key"},
      {"[{\"a\":1,\"b\":{\"a\":2},\"a\":3}]", "JSON object repeats a key"},
  };
  for (const auto& c : bad) {
    INFO(c.text);
    const auto v = json::parse(c.text);
    REQUIRE_FALSE(v.has_value());
    CHECK(v.error().starts_with(c.error_starts));
    CHECK(v.error().find('\n') == std::string::npos);
  }
  // The same key in two different objects is fine.
  CHECK(json::parse(R"([{"a":1},{"a":2},{"b":{"a":3}}])").has_value());

  std::string deep(65, '[');
  deep += std::string(65, ']');
  CHECK(json::parse(deep).error() == "JSON nested deeper than 64 levels");
  std::string deep_objects;
  for (int i = 0; i < 65; ++i) {
    deep_objects += "{\"a\":";
  }
  deep_objects += "1" + std::string(65, '}');
  CHECK_FALSE(json::parse(deep_objects).has_value());
  std::string ok_depth(64, '[');
  ok_depth += std::string(64, ']');
  CHECK(json::parse(ok_depth).has_value());
  // Far deeper input is refused without exhausting the stack.
  std::string abyss(200000, '[');
  CHECK_FALSE(json::parse(abyss).has_value());
}

TEST_CASE("json::dump replaces invalid UTF-8 instead of throwing", "[json]") {
  CHECK(json::dump(json::Json{{"url", "https://h/\xFF"}}) == "{\"url\":\"https://h/\xEF\xBF\xBD\"}");
  CHECK(json::dump(json::Json{{"x", "a\"b\n\x01"}}) == R"({"x":"a\"b\n\u0001"})");
}

TEST_CASE("records round-trip through their JSON shape", "[json]") {
  Artifact a;
  a.key = std::string(64, 'a');
  a.url = "https://h/x.run";
  a.size = 18446744073709551615ULL;
  a.sha256 = std::string(64, 'b');
  a.content_type = "application/octet-stream";
  a.fetched_at = 1'763'787'000;
  a.hits = 7;
  a.misses = 2;
  const json::Json aj = a;
  CHECK(aj.at("fetched_at") == "2025-11-22T04:50:00Z");
  CHECK(aj.find("raw_url") == aj.end());
  Artifact a2;
  from_json(aj, a2);
  CHECK(a2.key == a.key);
  CHECK(a2.size == a.size);
  CHECK(a2.fetched_at == a.fetched_at);
  CHECK(a2.hits == 7);

  Miss m{std::string(64, 'c'), "https://h/m", 3, 0, 1'763'787'000};
  const json::Json mj = m;
  CHECK(mj.at("first_seen").is_null());
  Miss m2;
  from_json(mj, m2);
  CHECK(m2.count == 3);
  CHECK(m2.first_seen == 0);
  CHECK(m2.last_seen == m.last_seen);

  Event e{12, 1'763'787'000, "login", "admin", "127.0.0.1", "details"};
  Event e2;
  from_json(json::Json(e), e2);
  CHECK(e2.id == 12);
  CHECK(e2.kind == "login");
  CHECK(e2.time == e.time);

  Job j;
  j.id = 5;
  j.url = "https://h/j";
  j.status = JobStatus::running;
  j.bytes_done = 10;
  j.bytes_total = 20;
  j.rate = 2.5;
  j.started_at = 1'763'787'000;
  const json::Json jj = j;
  CHECK(jj.at("status") == "running");
  CHECK(jj.at("finished_at").is_null());
  Job j2;
  from_json(jj, j2);
  CHECK(j2.status == JobStatus::running);
  CHECK(j2.rate == 2.5);
  CHECK(j2.started_at == j.started_at);

  Stats s{1, 2, 3, 4, 5, 6, 7, 8};
  Stats s2;
  from_json(json::Json(s), s2);
  CHECK(s2.capacity == 3);
  CHECK(s2.queue_depth == 8);
}

TEST_CASE("from_json keeps defaults for missing or mistyped fields", "[json]") {
  Artifact a;
  from_json(*json::parse(R"({"key": 5, "size": "big", "hits": -1, "url": "u", "fetched_at": "yesterday"})"), a);
  CHECK(a.key.empty());
  CHECK(a.size == 0);
  CHECK(a.hits == 0);
  CHECK(a.url == "u");
  CHECK(a.fetched_at == 0);
  Job j;
  from_json(*json::parse(R"({"status": "exploded"})"), j);
  CHECK(j.status == JobStatus::failed);
  from_json(*json::parse("[]"), a); // not an object: nothing read, nothing thrown
}
