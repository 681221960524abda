#include <catch2/catch.hpp>

#include <fstream>
#include <thread>

#include "support/temp_dir.hpp"
#include "withcache/store.hpp"
#include "withcache/digest.hpp"
#include "withcache/url.hpp"
#include "withcache/util/size.hpp"

namespace fs = std::filesystem;
using namespace withcache;
using withcache::test::TempDir;

namespace {

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Puts `bytes` in the part file of `url` and commits it.
store::Artifact add(store::BlobStore& s, const std::string& origin, const std::string& bytes,
                    const std::string& type = "application/gzip") {
  const auto key = *url::key_id(origin);
  write_file(s.part_path(key), bytes);
  store::NewArtifact a{key, *url::normalize_key(origin), origin, type, bytes.size(), digest::sha256_hex(bytes)};
  auto committed = s.commit(a);
  REQUIRE(committed.has_value());
  return *committed;
}

} // namespace

TEST_CASE("commit stores a blob and its row, and reopening keeps it", "[store]") {
  TempDir dir;
  const std::string bytes = "hello artifact";
  const std::string origin = "https://u:p@Example.COM/x/a.tgz?token=1";
  const auto key = *url::key_id(origin);
  {
    store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(50)});
    const auto a = add(s, origin, bytes);
    CHECK(a.key == key);
    CHECK(a.url == "https://example.com/x/a.tgz");
    CHECK(a.raw_url == "https://Example.COM/x/a.tgz?token=1");
    CHECK(a.size == bytes.size());
    CHECK(a.sha256 == digest::sha256_hex(bytes));
    CHECK(a.content_type == "application/gzip");
    CHECK(read_file(s.blob_path(key)) == bytes);
    CHECK_FALSE(fs::exists(s.part_path(key)));
    CHECK(s.stored_bytes() == bytes.size());
    CHECK(s.find(key).has_value());
  }
  store::BlobStore reopened({dir.path()});
  const auto found = reopened.find(key);
  REQUIRE(found.has_value());
  CHECK(found->sha256 == digest::sha256_hex(bytes));
  CHECK(reopened.stored_bytes() == bytes.size());
  CHECK(reopened.recovery().blobs_without_row_removed == 0);
  CHECK(reopened.recovery().rows_without_blob_dropped == 0);
}

TEST_CASE("commit refuses a part file of the wrong size", "[store]") {
  TempDir dir;
  store::BlobStore s({dir.path()});
  write_file(s.part_path(std::string(64, 'a')), "abc");
  store::NewArtifact a{std::string(64, 'a'), "https://h/x", "https://h/x", "", 4, "00"};
  const auto committed = s.commit(a);
  REQUIRE_FALSE(committed.has_value());
  CHECK(committed.error().find("expected 4") != std::string::npos);
  CHECK_FALSE(s.find(a.key).has_value());
}

TEST_CASE("misses are counted, listed, dismissed and move onto the artifact", "[store]") {
  TempDir dir;
  store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(20)});
  const std::string origin = "https://h/cuda.run";
  const auto key = *url::key_id(origin);
  CHECK(s.record_miss(key, "https://user:secret@h/cuda.run?sig=1"));
  CHECK_FALSE(s.record_miss(key, origin));
  CHECK_FALSE(s.record_miss(key, origin));
  auto misses = s.list_misses({}).value();
  REQUIRE(misses.total == 1);
  CHECK(misses.items[0].count == 3);
  CHECK(misses.items[0].url == "https://h/cuda.run");
  CHECK(misses.items[0].first_seen <= misses.items[0].last_seen);

  const auto a = add(s, origin, "bytes");
  CHECK(a.misses == 3);
  CHECK(s.list_misses({})->total == 0);

  const auto other = *url::key_id("https://h/other");
  s.record_miss(other, "https://h/other");
  CHECK(s.dismiss_miss(other).value());
  CHECK_FALSE(s.dismiss_miss(other).value());
  CHECK(s.list_misses({})->total == 0);
  CHECK(s.record_miss(other, "https://h/other")); // first again after dismissal
}

TEST_CASE("hits are queued, written in batches and survive a re-fetch", "[store]") {
  TempDir dir;
  const std::string origin = "https://h/a";
  const auto key = *url::key_id(origin);
  {
    store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
    add(s, origin, "v1");
    for (int i = 0; i < 5; ++i) {
      s.record_hit(key);
    }
    auto page = s.list_artifacts({}).value();
    REQUIRE(page.items.size() == 1);
    CHECK(page.items[0].hits == 5);
    const auto again = add(s, origin, "v2-bytes");
    CHECK(again.hits == 5);
    CHECK(again.size == 8);
    CHECK(s.stored_bytes() == 8);
    s.record_hit(key);
  } // the destructor writes the queued hit
  store::BlobStore s({dir.path()});
  CHECK(s.list_artifacts({})->items.at(0).hits == 6);
  CHECK(s.totals()->hits == 6);
}

TEST_CASE("remove deletes the row and the file", "[store]") {
  TempDir dir;
  store::BlobStore s({dir.path()});
  const auto a = add(s, "https://h/a", "12345");
  CHECK(s.remove(a.key).value());
  CHECK_FALSE(s.remove(a.key).value());
  CHECK_FALSE(s.find(a.key).has_value());
  CHECK_FALSE(fs::exists(s.blob_path(a.key)));
  CHECK(s.stored_bytes() == 0);
  CHECK(s.totals()->artifacts == 0);
}

TEST_CASE("capacity: has_room, reservations and is_full", "[store]") {
  TempDir dir;
  store::BlobStore s({dir.path(), 100});
  CHECK(s.has_room(100));
  CHECK_FALSE(s.has_room(101));
  add(s, "https://h/a", std::string(60, 'x'));
  CHECK(s.has_room(40));
  CHECK_FALSE(s.has_room(41));
  CHECK(s.reserve(30));
  CHECK_FALSE(s.reserve(11));
  CHECK(s.reserve(10));
  CHECK(s.is_full());
  s.release(40);
  CHECK_FALSE(s.is_full());
  CHECK(s.totals()->max_bytes == 100);

  TempDir unlimited_dir;
  store::BlobStore unlimited({unlimited_dir.path(), 0});
  CHECK(unlimited.has_room(UINT64_MAX));
  CHECK_FALSE(unlimited.is_full());
}

TEST_CASE("listings page and filter", "[store]") {
  TempDir dir;
  store::BlobStore s({dir.path()});
  for (int i = 0; i < 25; ++i) {
    add(s, "https://h/pkg-" + std::to_string(i) + (i % 5 == 0 ? ".deb" : ".rpm"), std::to_string(i));
  }
  auto first = s.list_artifacts({0, 10, ""}).value();
  CHECK(first.total == 25);
  CHECK(first.items.size() == 10);
  auto last = s.list_artifacts({20, 10, ""}).value();
  CHECK(last.items.size() == 5);
  auto debs = s.list_artifacts({0, 100, ".DEB"}).value();
  CHECK(debs.total == 5);
  CHECK(s.list_artifacts({0, 100, "100%"})->total == 0);
  CHECK(s.list_artifacts({0, 100, "pkg_1"})->total == 0); // '_' is literal, not a wildcard
  const auto sha = digest::sha256_hex("7");
  CHECK(s.list_artifacts({0, 100, sha.substr(0, 12)})->total == 1);
}

TEST_CASE("open recovers from a crash at any step", "[store]") {
  TempDir dir;
  std::string kept_key;
  std::string lost_row_key;
  {
    store::BlobStore s({dir.path()});
    kept_key = add(s, "https://h/kept", "kept").key;
    lost_row_key = add(s, "https://h/file-gone", "gone").key;
    const auto pending_key = *url::key_id("https://h/pending");
    s.add_pending_job(pending_key, "https://h/pending", {{"Authorization", "Bearer t"}});
    write_file(s.part_path(pending_key), "partial bytes of a pending job");
  }
  // A crash left: a part no job owns, a blob renamed but never recorded, a
  // row whose file vanished, and a blob truncated behind our back.
  write_file(dir / "tmp" / (std::string(64, 'b') + ".part"), "stray");
  write_file(dir / "blobs" / std::string(64, 'c'), "no row");
  fs::remove(dir / "blobs" / lost_row_key);
  write_file(dir / "blobs" / "README", "not ours: left alone");

  store::BlobStore s({dir.path()});
  CHECK(s.recovery().stray_parts_removed == 1);
  CHECK(s.recovery().blobs_without_row_removed == 1);
  CHECK(s.recovery().rows_without_blob_dropped == 1);
  CHECK(s.find(kept_key).has_value());
  CHECK_FALSE(s.find(lost_row_key).has_value());
  CHECK(fs::exists(dir / "blobs" / "README"));
  const auto pending = s.pending_jobs().value();
  REQUIRE(pending.size() == 1);
  CHECK(pending[0].url == "https://h/pending");
  REQUIRE(pending[0].headers.size() == 1);
  CHECK(pending[0].headers[0].second == "Bearer t");
  CHECK(fs::exists(s.part_path(pending[0].key))); // owned by a pending job: kept for resume
  s.remove_pending_job(pending[0].id);
  CHECK(s.pending_jobs()->empty());
  CHECK(s.totals()->artifacts == 1);
}

TEST_CASE("an unwritable data dir is a clear StoreError", "[store]") {
  if (::geteuid() == 0) {
    // root ignores permissions; use a path under a regular file instead.
    TempDir dir;
    write_file(dir / "file", "x");
    CHECK_THROWS_AS(store::BlobStore({dir / "file" / "data"}), store::StoreError);
    return;
  }
  TempDir dir;
  fs::permissions(dir.path(), fs::perms::owner_read | fs::perms::owner_exec);
  CHECK_THROWS_AS(store::BlobStore({dir / "data"}), store::StoreError);
  fs::permissions(dir.path(), fs::perms::owner_all);
}

TEST_CASE("concurrent reads and queued counters stay consistent", "[store]") {
  TempDir dir;
  store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(5)});
  const auto a = add(s, "https://h/a", "x");
  std::vector<std::thread> threads;
  std::atomic<int> not_found{0}; // Catch2 assertions stay on the test's own thread
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        not_found += s.find(a.key).has_value() ? 0 : 1;
        s.record_hit(a.key);
        s.record_miss(std::to_string(i), "https://h/m" + std::to_string(i));
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  CHECK(not_found == 0);
  CHECK(s.totals()->hits == 8000);
  CHECK(s.list_misses({})->total == 2000);
}

TEST_CASE("the events log records, pages and filters", "[store]") {
  TempDir dir;
  {
    store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
    s.record_event("login", "admin", "10.0.0.5", "signed in");
    s.record_event("delete", "admin", "10.0.0.5", "https://h/a.tgz");
    s.record_event("fill_failed", "system", "", "https://h/b.tgz: HTTP 404");
    const auto all = s.list_events({}).value();
    REQUIRE(all.total == 3);
    CHECK(all.items[0].kind == "fill_failed"); // newest first
    CHECK(all.items[2].kind == "login");
    CHECK(all.items[2].address == "10.0.0.5");
    CHECK(all.items[2].time > 0);
    CHECK(s.list_events({0, 10, "a.tgz"})->total == 1);
    CHECK(s.list_events({0, 10, "ADMIN"})->total == 2);
    CHECK(s.list_events({1, 1, ""})->items.at(0).kind == "delete");
    s.record_event("logout", "admin", "10.0.0.5", "");
  }
  store::BlobStore reopened({dir.path()});
  CHECK(reopened.list_events({})->total == 4);
}

TEST_CASE("pending fills are written in batches and their ids are never reused", "[store]") {
  TempDir dir;
  std::int64_t last = 0;
  {
    store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
    for (int i = 0; i < 3; ++i) {
      last = s.add_pending_job(std::string(64, 'a'), "https://h/" + std::to_string(i), {});
    }
    CHECK(s.pending_jobs()->size() == 3);
    for (std::int64_t id = last - 2; id <= last; ++id) {
      s.remove_pending_job(id);
    }
    CHECK(s.pending_jobs()->empty());
    last = s.add_pending_job(std::string(64, 'b'), "https://h/kept", {{"X-A", "b"}});
    s.remove_pending_job(last); // added and removed within one batch
  }
  store::BlobStore reopened({dir.path()});
  CHECK(reopened.pending_jobs()->empty());
  CHECK(reopened.add_pending_job(std::string(64, 'c'), "https://h/next", {}) == last + 1);
}
