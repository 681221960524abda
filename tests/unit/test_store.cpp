#include <catch2/catch.hpp>

#include <fstream>
#include <thread>
#include <unistd.h>

#include "support/temp_dir.hpp"
#include "withcache/store.hpp"
#include "withcache/digest.hpp"
#include "withcache/url.hpp"
#include "withcache/util/size.hpp"
#include "withcache/util/time.hpp"

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

TEST_CASE("the back-off is 10 min doubling up to 24 h", "[store][negative-cache]") {
  const std::pair<std::uint32_t, long> cases[] = {{0, 600},   {1, 600},   {2, 1200},  {3, 2400},
                                                  {4, 4800},  {5, 9600},  {6, 19200}, {7, 38400},
                                                  {8, 76800}, {9, 86400}, {10, 86400}, {4000000000U, 86400}};
  for (const auto& [failures, seconds] : cases) {
    INFO(failures);
    CHECK(store::backoff_delay(failures).count() == seconds);
  }
}

TEST_CASE("failed fills put a key in the negative cache, kept in memory and on the miss row", "[store][negative-cache]") {
  TempDir dir;
  const std::string origin = "https://h/gone.iso";
  const auto key = *url::key_id(origin);
  {
    store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
    CHECK_FALSE(s.backoff(key, util::now()).has_value());
    const auto before = util::now();
    auto b = s.record_fill_failure(key, "https://u:p@h/gone.iso", "not fetched: origin answered HTTP 404");
    CHECK(b.failures == 1);
    CHECK(b.retry_after >= before + 600);
    CHECK(b.retry_after <= util::now() + 600);
    b = s.record_fill_failure(key, origin, "not fetched: origin answered HTTP 410");
    CHECK(b.failures == 2);
    CHECK(b.retry_after >= before + 1200);
    const auto active = s.backoff(key, util::now());
    REQUIRE(active.has_value());
    CHECK(active->reason == "not fetched: origin answered HTTP 410");
    CHECK_FALSE(s.backoff(key, b.retry_after).has_value()); // over at retry_after

    // The miss row carries it, even for a key that was never missed on the read path.
    const auto misses = s.list_misses({}).value();
    REQUIRE(misses.total == 1);
    CHECK(misses.items[0].url == origin); // userinfo removed
    CHECK(misses.items[0].count == 0);
    CHECK(misses.items[0].last_reason == "not fetched: origin answered HTTP 410");
    CHECK(misses.items[0].failures == 2);
    CHECK(misses.items[0].retry_after == b.retry_after);

    // A local cause keeps the reason without backing off.
    const auto full = *url::key_id("https://h/full.iso");
    const auto f = s.record_fill_failure(full, "https://h/full.iso", "not fetched: the cache is full", false);
    CHECK(f.failures == 0);
    CHECK_FALSE(s.backoff(full, util::now()).has_value());
    s.record_miss(key, origin); // counting misses keeps the reason
  }
  // It survives a restart: memory is loaded from the miss rows.
  store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
  auto active = s.backoff(key, util::now());
  REQUIRE(active.has_value());
  CHECK(active->failures == 2);
  auto misses = s.list_misses({0, 10, "gone"}).value();
  REQUIRE(misses.total == 1);
  CHECK(misses.items[0].count == 1);
  CHECK(misses.items[0].last_reason == "not fetched: origin answered HTTP 410");

  // An operator clears it: the count starts over, the reason stays to read.
  CHECK(s.clear_backoff(key));
  CHECK_FALSE(s.clear_backoff(key));
  CHECK_FALSE(s.backoff(key, util::now()).has_value());
  misses = s.list_misses({0, 10, "gone"}).value();
  CHECK(misses.items[0].failures == 0);
  CHECK(misses.items[0].retry_after == 0);
  CHECK(misses.items[0].last_reason == "not fetched: origin answered HTTP 410");
  CHECK(s.record_fill_failure(key, origin, "again").failures == 1);

  // A completed fill forgets it; so does a dismissal.
  add(s, origin, "finally");
  CHECK_FALSE(s.backoff(key, util::now()).has_value());
  CHECK(s.list_misses({0, 10, "gone"})->total == 0);
  const auto other = *url::key_id("https://h/other.iso");
  s.record_fill_failure(other, "https://h/other.iso", "not stored: origin marked it no-store");
  CHECK(s.dismiss_miss(other).value());
  CHECK_FALSE(s.backoff(other, util::now()).has_value());
  CHECK(s.list_misses({0, 10, "other"})->total == 0);
}

TEST_CASE("a replacement commits atomically; readers of the old blob keep the old bytes", "[store][replace]") {
  TempDir dir;
  const std::string origin = "https://h/latest.txt";
  const std::string v1 = "version one, the longer of the two";
  const std::string v2 = "version two";
  store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
  const auto first = add(s, origin, v1);
  s.record_hit(first.key);
  REQUIRE(s.flush().has_value());

  auto reader = s.open_blob(first.key);
  REQUIRE(reader.has_value());
  CHECK(reader->artifact().sha256 == digest::sha256_hex(v1));
  char head[8] = {};
  REQUIRE(::pread(reader->fd(), head, sizeof head, 0) == sizeof head); // a download in flight

  write_file(s.part_path(first.key), v2);
  store::NewArtifact next{first.key, first.url, origin, "text/plain", v2.size(), digest::sha256_hex(v2)};
  next.etag = "\"2\"";
  next.cache_control = "max-age=60";
  next.fresh_until = util::now() + 60;
  const auto second = s.commit(next);
  REQUIRE(second.has_value());
  CHECK(second->etag == "\"2\"");
  CHECK(second->hits == 1); // hits survive a re-fetch

  // The reader that opened v1 reads v1 to its end.
  std::string rest(v1.size(), '\0');
  REQUIRE(::pread(reader->fd(), rest.data(), rest.size(), 0) == static_cast<ssize_t>(v1.size()));
  CHECK(rest == v1);
  CHECK(digest::sha256_hex(rest) == reader->artifact().sha256);
  // New readers get v2 with v2's metadata, together.
  const auto now_reading = s.open_blob(first.key);
  REQUIRE(now_reading.has_value());
  CHECK(now_reading->artifact().sha256 == digest::sha256_hex(v2));
  CHECK(read_file(s.blob_path(first.key)) == v2);
  CHECK(s.stored_bytes() == v2.size());
  CHECK(s.find(first.key)->fresh_until == next.fresh_until);
  for (const auto& entry : fs::directory_iterator(dir / "blobs")) {
    CHECK(entry.path().filename().string().find(".staged") == std::string::npos);
  }

  // refresh(): a 304 extends freshness and keeps the bytes.
  store::Freshness freshness{util::now() + 3600, "\"2\"", "Mon, 01 Jan 2024 00:00:00 GMT", "max-age=3600", ""};
  const auto refreshed = s.refresh(first.key, freshness);
  REQUIRE(refreshed.has_value());
  CHECK(refreshed->fresh_until == freshness.fresh_until);
  CHECK(refreshed->sha256 == digest::sha256_hex(v2));
  CHECK(s.find(first.key)->last_modified == "Mon, 01 Jan 2024 00:00:00 GMT");
  CHECK_FALSE(s.refresh(*url::key_id("https://h/none"), freshness).has_value());
}

TEST_CASE("a replacement interrupted by a crash is finished or forgotten, never half-done", "[store][replace]") {
  TempDir dir;
  const std::string origin = "https://h/latest.txt";
  const std::string v1 = "version one";
  const std::string v2 = "version two!";
  const auto key = *url::key_id(origin);
  const auto staged = dir / "blobs" / (key + "." + digest::sha256_hex(v2) + ".staged");

  SECTION("died before the row was written: the old artifact stays") {
    {
      store::BlobStore s({dir.path()});
      add(s, origin, v1);
    }
    write_file(staged, v2);
    store::BlobStore s({dir.path()});
    CHECK(s.recovery().replacements_completed == 0);
    CHECK(s.recovery().blobs_without_row_removed == 1);
    CHECK(s.find(key)->sha256 == digest::sha256_hex(v1));
    CHECK(read_file(s.blob_path(key)) == v1);
    CHECK_FALSE(fs::exists(staged));
  }
  SECTION("died after the row, before the rename: the rename is finished") {
    {
      store::BlobStore s({dir.path()});
      add(s, origin, v1);
      add(s, origin, v2);
    }
    // The disk as it was between the row and the rename: the row says v2, v2 staged, v1 in place.
    fs::rename(dir / "blobs" / key, staged);
    write_file(dir / "blobs" / key, v1);
    store::BlobStore s({dir.path()});
    CHECK(s.recovery().replacements_completed == 1);
    CHECK(s.recovery().rows_without_blob_dropped == 0);
    CHECK(s.find(key)->sha256 == digest::sha256_hex(v2));
    CHECK(read_file(s.blob_path(key)) == v2);
    CHECK_FALSE(fs::exists(staged));
  }
  SECTION("a first commit that died after the row: the rename is finished too") {
    {
      store::BlobStore s({dir.path()});
      add(s, origin, v2);
    }
    fs::rename(dir / "blobs" / key, staged);
    store::BlobStore s({dir.path()});
    CHECK(s.recovery().replacements_completed == 1);
    CHECK(read_file(s.blob_path(key)) == v2);
  }
  SECTION("resume state files follow their part files") {
    {
      store::BlobStore s({dir.path()});
      s.add_pending_job(key, origin, {});
      write_file(s.part_path(key), "part");
      write_file(s.resume_state_path(key), "state");
      write_file(s.resume_state_path(std::string(64, 'd')), "stray state");
    }
    store::BlobStore s({dir.path()});
    CHECK(fs::exists(s.resume_state_path(key)));
    CHECK_FALSE(fs::exists(s.resume_state_path(std::string(64, 'd'))));
  }
}
