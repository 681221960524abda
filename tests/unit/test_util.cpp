#include <catch2/catch.hpp>

#include "server/line_budget.hpp"

#include <fstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/temp_dir.hpp"
#include "util/regular_file.hpp"
#include "withcache/util/encoding.hpp"
#include "withcache/util/env.hpp"
#include "withcache/util/size.hpp"
#include "withcache/util/strings.hpp"
#include "withcache/util/time.hpp"

namespace util = withcache::util;

namespace {
struct TextCase {
  const char* input;
  const char* expected;
};
} // namespace

TEST_CASE("trim, case and control-character helpers", "[util]") {
  const TextCase blank[] = {{"  a b\t", "a b"}, {"\t\t", ""}, {"", ""}, {"x", "x"}, {" \r\n x\r\n", "\r\n x\r\n"}};
  for (const auto& c : blank) {
    INFO(c.input);
    CHECK(util::trim(c.input) == c.expected);
  }
  CHECK(util::trim(" \r\n x\r\n", util::k_whitespace) == "x");
  CHECK(util::lower("HeLLo-Ü") == "hello-Ü");
  CHECK(util::upper("curl") == "CURL");
  CHECK(util::iequals("Content-Length", "content-LENGTH"));
  CHECK_FALSE(util::iequals("Content-Length", "Content-Lengt"));
  CHECK_FALSE(util::iequals("\xC3\x9C", "\xC3\xBC")); // ASCII only
  CHECK(util::istarts_with("Bearer xyz", "bearer "));
  CHECK_FALSE(util::istarts_with("Bear", "bearer"));
  CHECK(util::has_control("a\x01"));
  CHECK(util::has_control("a\x7F"));
  CHECK(util::has_control("a\tb"));
  CHECK_FALSE(util::has_control("a\tb", true));
  CHECK_FALSE(util::has_control("caf\xC3\xA9"));
  const TextCase escaped[] = {{"GET /x", "GET /x"},
                              {"a\r\nb", "a\\x0d\\x0ab"},
                              {"\x1b[31m", "\\x1b[31m"},
                              {"back\\slash", "back\\x5cslash"},
                              {"caf\xC3\xA9", "caf\xC3\xA9"}};
  for (const auto& c : escaped) {
    INFO(c.input);
    CHECK(util::escape_control(c.input) == c.expected);
  }
}

TEST_CASE("hex, percent-encoding and base64", "[util]") {
  CHECK(util::hex_lower(std::string("\x00\xff\x10", 3)) == "00ff10");
  CHECK(util::hex_value('a') == 10);
  CHECK(util::hex_value('F') == 15);
  CHECK(util::hex_value('g') == -1);
  const TextCase encoded[] = {
      {"a b", "a%20b"}, {"a+b(1),v=2.tar", "a%2Bb%281%29%2Cv%3D2.tar"}, {"~._-", "~._-"},
      {"\xC3\xBC", "%C3%BC"}, {"", ""}};
  for (const auto& c : encoded) {
    INFO(c.input);
    CHECK(util::percent_encode(c.input) == c.expected);
  }
  CHECK(util::percent_encode("/a b/", "/") == "/a%20b/");
  const TextCase decoded[] = {
      {"a%20b", "a b"}, {"%C3%bc", "\xC3\xBC"},           {"100%", "100%"}, {"%zz", "%zz"}, {"%4", "%4"},
      {"", ""},         {"us%40er:p%3Ass", "us@er:p:ss"}, {"%41%", "A%"}};
  for (const auto& c : decoded) {
    INFO(c.input);
    CHECK(util::percent_decode(c.input) == c.expected);
  }
  // RFC 4648 §10 test vectors.
  const TextCase base64[] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},        {"foo", "Zm9v"},
                             {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
  for (const auto& c : base64) {
    INFO(c.input);
    CHECK(util::base64_encode(c.input) == c.expected);
  }
  CHECK(util::base64_encode("alice:p@ss") == "YWxpY2U6cEBzcw==");
  CHECK(util::base64url_encode("\xfb\xff") == "-_8");
  CHECK(util::base64url_encode("fo") == "Zm8");
}

TEST_CASE("RFC 3339 times are written and read back", "[util]") {
  CHECK(util::format_rfc3339(0).empty());
  CHECK(util::format_rfc3339(1'763'787'000) == "2025-11-22T04:50:00Z");
  CHECK(util::format_display_time(1'763'787'000) == "2025-11-22 04:50:00Z");
  CHECK(util::format_display_time(0) == "\xE2\x80\x93");
  struct Case {
    const char* text;
    util::UnixTime time;
  };
  const Case good[] = {{"2025-11-22T04:50:00Z", 1'763'787'000},
                       {"1970-01-01T00:00:01Z", 1},
                       {"2024-02-29t12:00:00z", 1'709'208'000}};
  for (const auto& c : good) {
    INFO(c.text);
    REQUIRE(util::parse_rfc3339(c.text).has_value());
    CHECK(*util::parse_rfc3339(c.text) == c.time);
  }
  for (const char* bad : {"", "2025-11-22", "2025-11-22 04:50:00Z", "2025-13-01T00:00:00Z",
                          "2025-02-30T00:00:00Z", "2025-11-22T24:00:00Z", "2025-11-22T04:50:00+01:00",
                          "x025-11-22T04:50:00Z", "1969-12-31T23:59:59Z"}) {
    INFO(bad);
    CHECK_FALSE(util::parse_rfc3339(bad).has_value());
  }
  CHECK(util::now() > 1'700'000'000);
}

TEST_CASE("parse_duration takes a number and a unit", "[util]") {
  struct Case {
    const char* text;
    long long ms;
  };
  const Case good[] = {{"500ms", 500},     {"10s", 10'000},       {"10", 10'000},          {"30m", 1'800'000},
                       {"12h", 43'200'000}, {"7d", 604'800'000}, {"0s", 0},               {"15S", 15'000}};
  for (const auto& c : good) {
    INFO(c.text);
    REQUIRE(util::parse_duration(c.text).has_value());
    CHECK(util::parse_duration(c.text)->count() == c.ms);
  }
  for (const char* bad : {"", "s", "-1s", "1.5s", "10 s", "10w", "1000000000000d", "999999999999d", "ms10"}) {
    INFO(bad);
    const auto d = util::parse_duration(bad);
    REQUIRE_FALSE(d.has_value());
    CHECK(d.error().starts_with("invalid duration"));
  }
}

TEST_CASE("process_env reads the environment", "[util]") {
  ::setenv("WITHCACHE_TEST_UTIL_ENV", "v", 1);
  const auto env = util::process_env();
  CHECK(std::string(env("WITHCACHE_TEST_UTIL_ENV")) == "v");
  CHECK(env("WITHCACHE_TEST_UTIL_UNSET_XYZ") == nullptr);
}

TEST_CASE("parse_size accepts 1024-based sizes and refuses the rest", "[util]") {
  struct Case {
    const char* text;
    std::uint64_t bytes;
  };
  const Case good[] = {
      {"0", 0},
      {"1024", 1024},
      {"512K", 512ULL << 10},
      {"50M", 50ULL << 20},
      {"50m", 50ULL << 20},
      {"20G", 20ULL << 30},
      {"1.5T", (3ULL << 40) / 2},
      {"2GiB", 2ULL << 30},
      {"2GB", 2ULL << 30},
      {"0.5G", 1ULL << 29},
      {"1P", 1ULL << 50},
      {"100B", 100},
  };
  for (const auto& c : good) {
    INFO(c.text);
    const auto size = util::parse_size(c.text);
    REQUIRE(size.has_value());
    CHECK(*size == c.bytes);
  }
  const char* bad[] = {
      "",          "-1", "M", "1X", "1.5", "1..5G", "1.G", "abc", " 5G", "5 G", "99999999999999999999",
      "20000000P", "1e3"};
  for (const char* text : bad) {
    INFO(text);
    const auto size = util::parse_size(text);
    REQUIRE_FALSE(size.has_value());
    CHECK(size.error().find("invalid size") != std::string::npos);
  }
}

TEST_CASE("format_size prints binary units", "[util]") {
  CHECK(util::format_size(0) == "0 B");
  CHECK(util::format_size(1023) == "1023 B");
  CHECK(util::format_size(1536) == "1.5 KiB");
  CHECK(util::format_size(20ULL << 30) == "20.0 GiB");
  CHECK(util::format_rate(1536) == "1.5 KiB/s");
  CHECK(util::format_rate(0) == "\xE2\x80\x93");
}

TEST_CASE("shorten cuts text to a size, never inside a UTF-8 character, and says how long it was", "[util]") {
  struct Case {
    std::string input;
    std::size_t max;
    std::string expected;
  };
  const std::string ellipsis = "\xE2\x80\xA6";
  const Case cases[] = {
      {"", 0, ""},
      {"abc", 3, "abc"},
      {"abc", 10, "abc"},
      {"abcd", 3, "abc" + ellipsis + " (4 bytes)"},
      {"ab", 0, ellipsis + " (2 bytes)"},
      {"a\xC3\xA9", 2, "a" + ellipsis + " (3 bytes)"},          // é is 2 bytes: not split
      {"a\xC3\xA9x", 3, "a\xC3\xA9" + ellipsis + " (4 bytes)"}, // cut right after it
      {"\xF0\x9F\x98\x80x", 3, ellipsis + " (5 bytes)"},        // a 4-byte character
      {std::string(10'000, 'z'), 256, std::string(256, 'z') + ellipsis + " (10000 bytes)"},
  };
  for (const auto& c : cases) {
    INFO(c.input.substr(0, 20) << " to " << c.max);
    CHECK(util::shorten(c.input, c.max) == c.expected);
  }
}

TEST_CASE("LineBudget writes at most N lines a window and counts the ones left out", "[util]") {
  using withcache::server::LineBudget;
  using namespace std::chrono_literals;
  const auto t0 = LineBudget::Clock::time_point{} + 1h;
  LineBudget budget(3, 60s);
  struct Step {
    std::chrono::seconds at;
    std::optional<std::uint64_t> expected; // nothing: left out; else how many were left out before it
  };
  const Step steps[] = {
      {0s, 0},   {1s, 0},   {2s, 0},              // the budget of the first window
      {3s, {}},  {30s, {}}, {59s, {}},            // left out: 3
      {60s, 3},  {61s, 0},  {62s, 0},  {63s, {}}, // a new window: the first line says 3 were left out
      {200s, 1},                                  // long after: 1 left out since
  };
  for (const auto& s : steps) {
    INFO("at " << s.at.count() << " s");
    CHECK(budget.admit(t0 + s.at) == s.expected);
  }
  // line(): the text, with what was left out said after it.
  LineBudget lines(1, 60s);
  CHECK(lines.line("first miss: a", "first misses", t0) == "first miss: a");
  CHECK_FALSE(lines.line("first miss: b", "first misses", t0 + 1s).has_value());
  CHECK_FALSE(lines.line("first miss: c", "first misses", t0 + 2s).has_value());
  CHECK(lines.line("first miss: d", "first misses", t0 + 60s) ==
        "first miss: d (2 more first misses not logged)");
  LineBudget none(0, 60s);
  CHECK_FALSE(none.admit(t0).has_value());
  CHECK_FALSE(none.admit(t0 + 120s).has_value());
}

TEST_CASE("open_regular opens a regular file of one name and refuses what was planted, without blocking",
          "[util]") {
  withcache::test::TempDir dir;
  const auto file = dir / "file";
  std::ofstream(file) << "bytes";
  const auto outside = dir / "outside";
  std::ofstream(outside) << "secret";
  std::filesystem::create_symlink(outside, dir / "symlink");
  std::filesystem::create_hard_link(outside, dir / "hard-link");
  std::filesystem::create_directory(dir / "directory");
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);

  auto opened = util::open_regular(file, O_RDONLY);
  REQUIRE(opened.has_value());
  CHECK(opened->info.st_size == 5);
  CHECK((::fcntl(opened->fd, F_GETFL) & O_NONBLOCK) == 0); // cleared again: the caller did not ask for it
  ::close(opened->fd);

  struct Refused {
    const char* name;
    int flags;
    util::FileRefusal reason;
    const char* message;
  };
  const Refused refused[] = {
      {"missing", O_RDONLY, util::FileRefusal::missing, "missing"},
      {"symlink", O_RDONLY, util::FileRefusal::symlink, "a symbolic link"},
      {"symlink", O_RDWR | O_CREAT | O_APPEND, util::FileRefusal::symlink, "a symbolic link"},
      {"hard-link", O_RDONLY, util::FileRefusal::hard_linked, "a hard link (2 names for one file)"},
      {"hard-link", O_RDWR | O_CREAT | O_APPEND, util::FileRefusal::hard_linked,
       "a hard link (2 names for one file)"},
      {"directory", O_RDONLY, util::FileRefusal::not_regular, "not a regular file (a directory)"},
      {"directory", O_RDWR, util::FileRefusal::not_regular, "not a regular file (a directory)"},
      // Without O_NONBLOCK these would wait for a writer (or a reader) for ever.
      {"fifo", O_RDONLY, util::FileRefusal::not_regular, "not a regular file (a FIFO)"},
      {"fifo", O_RDWR | O_CREAT | O_APPEND, util::FileRefusal::not_regular, "not a regular file (a FIFO)"},
      {"fifo", O_WRONLY, util::FileRefusal::not_regular, "not a regular file"},
      {"file", O_RDWR | O_CREAT | O_EXCL, util::FileRefusal::failed, "File exists"},
  };
  for (const auto& c : refused) {
    INFO(c.name << " with flags " << c.flags);
    const auto result = util::open_regular(dir / c.name, c.flags);
    REQUIRE_FALSE(result.has_value());
    CHECK(result.error().reason == c.reason);
    CHECK(result.error().message == c.message);
  }
  // Nothing was written through a link.
  std::ifstream in(outside);
  CHECK(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()) == "secret");
}
