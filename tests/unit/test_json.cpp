#include <catch2/catch.hpp>

#include "withcache/json.hpp"

namespace json = withcache::json;

TEST_CASE("json::parse accepts RFC 8259 texts", "[json]") {
  const auto v = json::parse(R"( {"url": "https://h/a?x=1", "headers": {"Authorization": "Bearer t"},
                                  "n": -1.5e2, "ok": true, "none": null, "list": [1, "two", []]} )");
  REQUIRE(v.has_value());
  const auto* object = v->as_object();
  REQUIRE(object != nullptr);
  CHECK(*object->at("url").as_string() == "https://h/a?x=1");
  CHECK(*object->at("headers").as_object()->at("Authorization").as_string() == "Bearer t");
  CHECK(*object->at("n").as_number() == -150.0);
  CHECK(*object->at("ok").as_bool());
  CHECK(object->at("none").is_null());
  CHECK(object->at("list").as_array()->size() == 3);

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
    CHECK(*s->as_string() == c.string);
  }
  for (const char* number : {"0", "-0", "12", "1.25", "1e3", "1E-3", "-12.5e+2"}) {
    INFO(number);
    CHECK(json::parse(number).has_value());
  }
}

TEST_CASE("json::parse refuses what is not strict JSON", "[json]") {
  const char* bad[] = {
      "",
      "{",
      "[1,]",
      "{\"a\":1,}",
      "{\"a\" 1}",
      "{'a':1}",
      "{\"a\":1}x",
      "01",
      "1.",
      ".5",
      "-",
      "1e",
      "NaN",
      "Infinity",
      "tru",
      "\"a",
      "\"\\x\"",
      "\"\\u12\"",
      "\"\\ud800\"",
      "\"\\udc00\"",
      "\"\x01\"",
      "\"\xFF\"",
      "{\"a\":1,\"a\":2}",
      "// c\n1",
      "1e999",
  };
  for (const char* text : bad) {
    INFO(text);
    const auto v = json::parse(text);
    REQUIRE_FALSE(v.has_value());
    CHECK(v.error().starts_with("invalid JSON at byte "));
  }
  std::string deep(65, '[');
  deep += std::string(65, ']');
  CHECK_FALSE(json::parse(deep).has_value());
  std::string ok_depth(64, '[');
  ok_depth += std::string(64, ']');
  CHECK(json::parse(ok_depth).has_value());
}

TEST_CASE("json::Writer writes compact, escaped JSON that parses back", "[json]") {
  json::Writer w;
  w.begin_object()
      .key("items")
      .begin_array()
      .begin_object()
      .key("url")
      .value("https://h/<script>\"x\"\n\x01")
      .key("size")
      .value(std::uint64_t{18446744073709551615ULL})
      .key("rate")
      .value(1.5)
      .key("ok")
      .value(true)
      .key("error")
      .null()
      .end_object()
      .end_array()
      .key("total")
      .value(1)
      .end_object();
  CHECK(w.str() ==
        R"({"items":[{"url":"https://h/<script>\"x\"\n\u0001","size":18446744073709551615,"rate":1.5,)"
        R"("ok":true,"error":null}],"total":1})");
  const auto back = json::parse(w.str());
  REQUIRE(back.has_value());
  CHECK(*back->as_object()->at("items").as_array()->at(0).as_object()->at("url").as_string() ==
        "https://h/<script>\"x\"\n\x01");
  CHECK(json::quote("a\"b") == R"("a\"b")");
  CHECK(json::write(*json::parse(R"({"b": [1, 2.5, null, true], "a": "x"})")) ==
        R"({"a":"x","b":[1,2.5,null,true]})");
}
