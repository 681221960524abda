#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <map>
#include <thread>
#include <unistd.h>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>

#include "store/index.hpp" // the compact index is internal; tested directly
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

TEST_CASE("miss rows are capped: the least recently seen go, never one backing off", "[store]") {
  TempDir dir;
  store::StoreOptions options{dir.path(), 0, std::chrono::milliseconds(20)};
  options.max_miss_rows = 5;
  store::BlobStore s(options);
  const auto key = [](int i) { return *url::key_id("https://h/m" + std::to_string(i)); };
  // One that failed and backs off, then more distinct misses than the cap, in several batches.
  const auto failing = *url::key_id("https://h/failing");
  s.record_miss(failing, "https://h/failing");
  (void)s.record_fill_failure(failing, "https://h/failing", "origin answered HTTP 503", true);
  for (int i = 0; i < 12; ++i) {
    CHECK(s.record_miss(key(i), "https://h/m" + std::to_string(i)));
    if (i % 4 == 3) {
      REQUIRE(s.flush().has_value());
    }
  }
  REQUIRE(s.flush().has_value());
  const auto misses = s.list_misses({0, 100, ""}).value();
  CHECK(misses.total == 5);
  CHECK(s.totals()->pending_misses == 5);
  bool kept_failing = false;
  for (const auto& m : misses.items) {
    kept_failing = kept_failing || m.key == failing;
  }
  CHECK(kept_failing);
  CHECK(s.backoff(failing, store::UnixTime{0}).has_value());
  // A pruned key is new again: its next miss is a first miss.
  CHECK(s.record_miss(key(0), "https://h/m0"));
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
  // open() trusts cache.db (it never lists or stats a million blobs): the vanished file is found when
  // the artifact is served, the stray blob by the scrub's sweep.
  CHECK(s.recovery().rows_without_blob_dropped == 0);
  CHECK(s.find(kept_key).has_value());
  store::Presence presence = store::Presence::hit;
  CHECK_FALSE(s.open_blob(lost_row_key, &presence).has_value());
  CHECK(presence == store::Presence::dropped);
  CHECK_FALSE(s.find(lost_row_key).has_value());
  CHECK(s.damaged_blobs_found() == 1);
  CHECK(s.sweep_orphans() == 1);
  CHECK_FALSE(fs::exists(dir / "blobs" / std::string(64, 'c')));
  CHECK(fs::exists(dir / "blobs" / "README"));
  const auto pending = s.pending_jobs().value();
  REQUIRE(pending.size() == 1);
  CHECK(pending[0].url == "https://h/pending");
  REQUIRE(pending[0].headers.size() == 1);
  CHECK(pending[0].headers[0].second == "Bearer t");
  CHECK(fs::exists(s.part_path(pending[0].key))); // owned by a pending job: kept for resume
  s.remove_pending_job(pending[0].id);
  CHECK(s.pending_jobs()->empty());
  CHECK(s.totals()->artifacts == 1); // the dropped row is gone from cache.db too
  const auto events = s.list_events({0, 10, "blob_dropped"}).value();
  REQUIRE(events.total == 1);
  CHECK(events.items[0].details == lost_row_key + ": blob missing");
}

TEST_CASE("a data dir of schema version 3 is upgraded, and blobs/ is swept once", "[store][upgrade]") {
  TempDir dir;
  fs::create_directories(dir / "blobs");
  fs::create_directories(dir / "tmp");
  const std::string kept_key = *url::key_id("https://h/kept.iso");
  const std::string gone_key = *url::key_id("https://h/gone.iso");
  const std::string staged_key = *url::key_id("https://h/staged.iso");
  {
    // The schema as issue 13 left it, with rows written the way that version wrote them.
    SQLite::Database db((dir / "cache.db").string(), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    db.exec(R"sql(
CREATE TABLE artifacts (key TEXT PRIMARY KEY, url TEXT NOT NULL, raw_url TEXT NOT NULL, size INTEGER NOT NULL,
  sha256 TEXT NOT NULL, content_type TEXT NOT NULL, fetched_at INTEGER NOT NULL, hits INTEGER NOT NULL DEFAULT 0,
  misses INTEGER NOT NULL DEFAULT 0, etag TEXT NOT NULL DEFAULT '', last_modified TEXT NOT NULL DEFAULT '',
  cache_control TEXT NOT NULL DEFAULT '', expires TEXT NOT NULL DEFAULT '', content_encoding TEXT NOT NULL DEFAULT '',
  content_disposition TEXT NOT NULL DEFAULT '', fresh_until INTEGER NOT NULL DEFAULT 0);
CREATE INDEX artifacts_by_fetched_at ON artifacts (fetched_at DESC);
CREATE TABLE misses (key TEXT PRIMARY KEY, url TEXT NOT NULL, count INTEGER NOT NULL, first_seen INTEGER NOT NULL,
  last_seen INTEGER NOT NULL, last_reason TEXT NOT NULL DEFAULT '', failures INTEGER NOT NULL DEFAULT 0,
  retry_after INTEGER NOT NULL DEFAULT 0, failed_attempt TEXT NOT NULL DEFAULT '');
CREATE INDEX misses_by_last_seen ON misses (last_seen DESC);
CREATE TABLE pending_jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, url TEXT NOT NULL,
  headers TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, kind TEXT NOT NULL,
  actor TEXT NOT NULL, address TEXT NOT NULL, details TEXT NOT NULL);
PRAGMA user_version = 3;
)sql");
    const auto row = [&](const std::string& key, const std::string& url, const std::string& bytes, int hits) {
      SQLite::Statement insert(db, "INSERT INTO artifacts (key, url, raw_url, size, sha256, content_type, fetched_at, "
                                   "hits) VALUES (?, ?, ?, ?, ?, 'application/x-iso9660-image', 1700000000, ?)");
      insert.bind(1, key);
      insert.bind(2, url);
      insert.bind(3, url);
      insert.bind(4, static_cast<std::int64_t>(bytes.size()));
      insert.bind(5, digest::sha256_hex(bytes));
      insert.bind(6, hits);
      insert.exec();
    };
    row(kept_key, "https://h/kept.iso", "kept bytes", 3);
    row(gone_key, "https://h/gone.iso", "gone bytes", 4);
    row(staged_key, "https://h/staged.iso", "new bytes", 5);
    db.exec("INSERT INTO misses (key, url, count, first_seen, last_seen) VALUES ('" + std::string(64, 'e') +
            "', 'https://h/missed.iso', 7, 1, 2)");
  }
  write_file(dir / "blobs" / kept_key, "kept bytes");
  write_file(dir / "blobs" / std::string(64, 'c'), "no row");
  // That version staged in blobs/: a replacement whose row was written, not yet renamed.
  write_file(dir / "blobs" / staged_key, "old bytes");
  write_file(dir / "blobs" / (staged_key + "." + digest::sha256_hex("new bytes") + ".staged"), "new bytes");

  store::BlobStore s({dir.path()});
  CHECK(s.recovery().replacements_completed == 1);
  CHECK(s.recovery().rows_without_blob_dropped == 1);
  CHECK(s.recovery().blobs_without_row_removed == 1);
  CHECK(read_file(s.blob_path(staged_key)) == "new bytes");
  CHECK(s.find(kept_key).has_value());
  CHECK_FALSE(s.find(gone_key).has_value());
  const auto totals = s.totals().value();
  CHECK(totals.artifacts == 2);
  CHECK(totals.stored_bytes == 19);
  CHECK(totals.hits == 8);
  CHECK(totals.misses == 7);
  CHECK(totals.pending_misses == 1);
  CHECK(s.list_artifacts({0, 10, "kept.iso"})->total == 1); // the trigram index was built
  CHECK(s.list_misses({0, 10, "missed"})->total == 1);
  const auto again = add(s, "https://h/new.iso", "fresh");
  CHECK(s.list_artifacts({})->items.at(0).key == again.key);
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

TEST_CASE("a replacement commits atomically, readers of the old blob keep the old bytes",
          "[store][replace]") {
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
  for (const auto& where : {dir / "blobs", dir / "tmp"}) {
    for (const auto& entry : fs::directory_iterator(where)) {
      CHECK(entry.path().filename().string().find(".staged") == std::string::npos);
    }
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
  // Staged in tmp/, where open() looks (it never lists blobs/).
  const auto staged = dir / "tmp" / (key + "." + digest::sha256_hex(v2) + ".staged");

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

namespace {

// The sums the running totals stand for, straight from cache.db.
store::Totals summed(const fs::path& dir) {
  SQLite::Database db((dir / "cache.db").string(), SQLite::OPEN_READONLY);
  SQLite::Statement a(db, "SELECT count(*), COALESCE(sum(size), 0), COALESCE(sum(hits), 0), COALESCE(sum(misses), 0) "
                          "FROM artifacts");
  a.executeStep();
  SQLite::Statement m(db, "SELECT count(*), COALESCE(sum(count), 0) FROM misses");
  m.executeStep();
  store::Totals t;
  t.artifacts = static_cast<std::uint64_t>(a.getColumn(0).getInt64());
  t.stored_bytes = static_cast<std::uint64_t>(a.getColumn(1).getInt64());
  t.hits = static_cast<std::uint64_t>(a.getColumn(2).getInt64());
  t.misses = static_cast<std::uint64_t>(a.getColumn(3).getInt64() + m.getColumn(1).getInt64());
  t.pending_misses = static_cast<std::uint64_t>(m.getColumn(0).getInt64());
  return t;
}

void check_totals(store::BlobStore& s, const fs::path& dir) {
  const auto running = s.totals().value();
  const auto sums = summed(dir);
  CHECK(running.artifacts == sums.artifacts);
  CHECK(running.stored_bytes == sums.stored_bytes);
  CHECK(running.hits == sums.hits);
  CHECK(running.misses == sums.misses);
  CHECK(running.pending_misses == sums.pending_misses);
  CHECK(running.stored_bytes == s.stored_bytes());
  CHECK(running.artifacts == s.artifact_count());
}

} // namespace

TEST_CASE("running totals stay equal to the sums through commits, replacements, deletes and restarts",
          "[store][totals]") {
  TempDir dir;
  {
    store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
    const auto a = add(s, "https://h/a", "aaaa");
    s.record_miss(*url::key_id("https://h/b"), "https://h/b");
    s.record_miss(*url::key_id("https://h/b"), "https://h/b");
    s.record_miss(*url::key_id("https://h/c"), "https://h/c");
    for (int i = 0; i < 3; ++i) {
      s.record_hit(a.key);
    }
    check_totals(s, dir.path());
    add(s, "https://h/b", "bbbbbbbb"); // the misses move onto the artifact
    add(s, "https://h/a", "a2");       // a replacement: new size, hits kept
    check_totals(s, dir.path());
    CHECK(s.remove(a.key).value());
    s.record_fill_failure(*url::key_id("https://h/d"), "https://h/d", "not fetched: HTTP 404");
    check_totals(s, dir.path());
    CHECK(s.dismiss_miss(*url::key_id("https://h/c")).value());
    check_totals(s, dir.path());
  }
  store::BlobStore reopened({dir.path()});
  check_totals(reopened, dir.path());
  CHECK(reopened.totals()->artifacts == 1);
  CHECK(reopened.totals()->misses == 2);
}

TEST_CASE("listings page by cursor, forwards and backwards, and agree with offsets", "[store][listing]") {
  TempDir dir;
  store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
  // Misses are cheap to make in numbers; they page like artifacts (newest first, then by id).
  for (int i = 0; i < 237; ++i) {
    s.record_miss(*url::key_id("https://h/m-" + std::to_string(i)), "https://h/m-" + std::to_string(i) + ".bin");
  }
  const auto all = s.list_misses({0, 1000, ""}).value();
  REQUIRE(all.items.size() == 237);
  CHECK(all.total == 237);
  CHECK(all.next.empty());
  CHECK(all.prev.empty());

  std::vector<std::string> walked;
  store::ListQuery q{0, 50, ""};
  std::vector<std::string> cursors;
  for (int pages = 0; pages < 10; ++pages) {
    const auto page = s.list_misses(q).value();
    CHECK(page.total == 237);
    for (const auto& m : page.items) {
      walked.push_back(m.key);
    }
    if (pages > 0) {
      CHECK_FALSE(page.prev.empty());
    }
    if (page.next.empty()) {
      break;
    }
    cursors.push_back(page.next);
    q.after = page.next;
  }
  REQUIRE(walked.size() == 237);
  for (std::size_t i = 0; i < walked.size(); ++i) {
    CHECK(walked[i] == all.items[i].key);
  }
  // Backwards from the last page, by prev cursors, to the first.
  auto page = s.list_misses(q).value();
  std::vector<std::string> back(page.items.size());
  std::transform(page.items.begin(), page.items.end(), back.begin(), [](const auto& m) { return m.key; });
  while (!page.prev.empty()) {
    page = s.list_misses({0, 50, "", "", page.prev}).value();
    std::vector<std::string> keys;
    for (const auto& m : page.items) {
      keys.push_back(m.key);
    }
    back.insert(back.begin(), keys.begin(), keys.end());
  }
  CHECK(back == walked);
  // Offsets still work and agree.
  const auto third = s.list_misses({100, 50, ""}).value();
  REQUIRE(third.items.size() == 50);
  CHECK(third.items[0].key == walked[100]);
  CHECK(third.next == cursors[2]);
}

TEST_CASE("filters: trigram for 3+ characters, bounded scans for 1-2, counts capped for broad ones",
          "[store][listing]") {
  TempDir dir;
  store::StoreOptions options{dir.path(), 0, std::chrono::milliseconds(10)};
  options.max_miss_rows = 0; // no cap: more rows than the count cap
  store::BlobStore s(options);
  for (std::uint64_t i = 0; i < store::k_count_cap + 50; ++i) {
    const std::string u = "https://mirror.example/" + std::string(i % 100 == 7 ? "Rare-" : "pkg-") +
                          std::to_string(i) + ".deb";
    s.record_miss(*url::key_id(u), u);
  }
  // Selective: the index answers, exactly, case-insensitively.
  const auto rare = s.list_misses({0, 50, "rare-"}).value();
  CHECK(rare.total == 101);
  CHECK(rare.total_exact);
  CHECK(rare.items.size() == 50);
  CHECK_FALSE(rare.next.empty());
  const auto rare2 = s.list_misses({0, 50, "rare-", rare.next}).value();
  CHECK(rare2.items.size() == 50);
  const auto rare3 = s.list_misses({0, 50, "rare-", rare2.next}).value();
  CHECK(rare3.items.size() == 1);
  CHECK(rare3.next.empty());
  CHECK(rare3.items.back().url.find("Rare-") != std::string::npos);
  // Broad: counted up to the cap, paged by walking the order with LIKE.
  const auto broad = s.list_misses({0, 50, "mirror.example"}).value();
  CHECK(broad.total == store::k_count_cap);
  CHECK_FALSE(broad.total_exact);
  CHECK(broad.items.size() == 50);
  const auto broad2 = s.list_misses({0, 50, "mirror.example", broad.next}).value();
  CHECK(broad2.items.front().key != broad.items.back().key);
  // Short: no trigram; the newest rows are scanned, and the page says the count is partial.
  const auto short_filter = s.list_misses({0, 20, "e-"}).value();
  CHECK(short_filter.items.size() == 20);
  CHECK_FALSE(short_filter.total_exact);
  CHECK(s.list_misses({0, 20, "zz"})->items.empty());
  CHECK(s.list_misses({0, 20, "\"x"})->items.empty()); // quotes cannot break out of the phrase
  CHECK(s.list_misses({0, 20, "%%%"})->items.empty());
  CHECK(s.list_misses({0, 20, "\xC3\xA9t\xC3\xA9"})->items.empty()); // 3 characters, 5 bytes
}

TEST_CASE("a blob missing or short when served is dropped, a re-fill is never undone by the drop",
          "[store][at-rest]") {
  TempDir dir;
  store::BlobStore s({dir.path(), 0, std::chrono::hours(1)}); // only explicit flushes
  const auto a = add(s, "https://h/short.bin", "0123456789");
  const auto b = add(s, "https://h/gone.bin", "abcdef");
  write_file(s.blob_path(a.key), "01234"); // truncated behind our back
  fs::remove(s.blob_path(b.key));

  store::Presence presence = store::Presence::hit;
  CHECK_FALSE(s.find_present(b.key, &presence).has_value()); // a HEAD's check
  CHECK(presence == store::Presence::dropped);
  CHECK_FALSE(s.open_blob(a.key, &presence).has_value()); // a GET's check
  CHECK(presence == store::Presence::dropped);
  CHECK_FALSE(s.open_blob(a.key, &presence).has_value());
  CHECK(presence == store::Presence::not_cached); // dropped once, counted once
  CHECK(s.damaged_blobs_found() == 2);
  CHECK(s.stored_bytes() == 0);

  // The re-fill commits before the background write of the drop: the drop goes first, not after.
  const auto refilled = add(s, "https://h/short.bin", "0123456789");
  REQUIRE(s.flush().has_value());
  CHECK(s.find(refilled.key).has_value());
  CHECK(read_file(s.blob_path(a.key)) == "0123456789");
  CHECK(s.list_artifacts({})->total == 1);
  CHECK_FALSE(s.find(b.key).has_value());
  // The damaged bytes are kept aside, never served.
  std::size_t quarantined = 0;
  for (const auto& entry : fs::directory_iterator(s.quarantine_dir())) {
    CHECK(entry.path().filename().string().starts_with(a.key));
    CHECK(read_file(entry.path()) == "01234");
    ++quarantined;
  }
  CHECK(quarantined == 1);
  // Not a regular file this store wrote: a link planted in its place (to anything), or a directory.
  const auto c = add(s, "https://h/linked.bin", "abc");
  const auto d = add(s, "https://h/dir.bin", std::string(4096, 'd'));
  write_file(dir / "secret", "abc");
  fs::remove(s.blob_path(c.key));
  fs::create_symlink(dir / "secret", s.blob_path(c.key));
  fs::remove(s.blob_path(d.key));
  fs::create_directory(s.blob_path(d.key));
  CHECK_FALSE(s.open_blob(c.key, &presence).has_value());
  CHECK(presence == store::Presence::dropped);
  CHECK_FALSE(s.find_present(d.key, &presence).has_value());
  CHECK(presence == store::Presence::dropped);
  CHECK(s.damaged_blobs_found() == 4);
  REQUIRE(s.flush().has_value());
  CHECK(fs::exists(dir / "secret")); // the link was moved aside, not what it pointed to

  check_totals(s, dir.path());
}

TEST_CASE("the compact index agrees with a map through inserts, replacements, removals and merges",
          "[store][index]") {
  store::detail::CompactIndex index;
  std::map<store::detail::Digest, std::uint64_t> model;
  std::uint32_t x = 12345;
  const auto next = [&] {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
  };
  const auto key_of = [](std::uint32_t n) {
    const std::string hex = digest::sha256_hex(std::to_string(n));
    return *store::detail::digest_from_hex(hex);
  };
  for (std::uint32_t i = 0; i < 3000; ++i) { // loaded, like at open
    store::detail::IndexRecord r;
    r.key = key_of(i);
    r.set_size(i);
    index.load(r);
    model[r.key] = i;
  }
  index.finish_load();
  for (int step = 0; step < 20000; ++step) {
    const std::uint32_t n = next() % 6000;
    const auto key = key_of(n);
    if (next() % 3 == 0) {
      CHECK(index.erase(key) == (model.erase(key) == 1));
    } else {
      store::detail::IndexRecord r;
      r.key = key;
      r.set_size(step);
      r.extras = index.add_extras(store::detail::Extras{"gzip", "attachment", "", "", "", ""});
      index.upsert(r);
      model[key] = static_cast<std::uint64_t>(step);
    }
    if (step % 997 == 0) {
      index.merge();
    }
  }
  REQUIRE(index.size() == model.size());
  std::optional<store::detail::Digest> at;
  for (const auto& [key, size] : model) {
    const auto* r = index.find(key);
    REQUIRE(r != nullptr);
    CHECK(r->size() == size);
    CHECK(index.extras(r->extras).content_encoding == (r->extras == 0 ? "" : "gzip"));
    at = index.next_key(at);
    REQUIRE(at.has_value());
    CHECK(*at == key);
  }
  CHECK_FALSE(index.next_key(at).has_value());
}

TEST_CASE("the history of ended fills is kept, paged, pruned by count and cleared", "[store][history]") {
  TempDir dir;
  store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
  const auto now = util::now();
  for (std::int64_t id = 1; id <= 30; ++id) {
    Job j;
    j.id = id;
    j.key = std::string(64, 'a');
    j.url = "https://h/f-" + std::to_string(id);
    j.status = id % 2 == 0 ? JobStatus::completed : JobStatus::failed;
    j.finished_at = now;
    s.record_finished_job(j);
  }
  auto page = s.list_finished_jobs({0, 10, ""}).value();
  CHECK(page.total == 30);
  REQUIRE(page.items.size() == 10);
  CHECK(page.items[0].id == 30);
  CHECK(page.items[0].status == JobStatus::completed);
  page = s.list_finished_jobs({0, 10, "", page.next}).value();
  CHECK(page.items[0].id == 20);
  CHECK(s.list_finished_jobs({0, 10, "f-1"})->total == 11); // f-1, f-10..f-19
  CHECK(s.finished_job(7)->value().url == "https://h/f-7");
  Job old;
  old.id = 31;
  old.url = "https://h/ancient";
  old.status = JobStatus::completed;
  old.finished_at = now - 31 * 24 * 3600; // older than the age limit: pruned at once
  s.record_finished_job(old);
  CHECK(s.list_finished_jobs({})->total == 30);
  CHECK(s.clear_finished_jobs().value() == 30);
  CHECK(s.list_finished_jobs({})->total == 0);
}

TEST_CASE("rows that hold URLs stay bounded in bytes: the URL index takes 512 characters, events 1 KiB",
          "[store][bounds]") {
  TempDir dir;
  constexpr int k_rows = 200;
  // URLs of the largest accepted size whose text differs everywhere, so every trigram is new.
  const auto long_url = [](int i) {
    std::string u = "https://h/" + std::to_string(i) + "/";
    for (int j = 0; u.size() < url::k_max_origin_url; ++j) {
      u += digest::sha256_hex(std::to_string(i) + "." + std::to_string(j));
    }
    u.resize(url::k_max_origin_url);
    return u;
  };
  {
    store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
    for (int i = 0; i < k_rows; ++i) {
      const std::string u = long_url(i);
      s.record_miss(*url::key_id(u), u);
    }
    s.record_event("fill_failed", "system", "", std::string(5000, 'x'));
    REQUIRE(s.list_misses({})->total == static_cast<std::uint64_t>(k_rows));

    // A filter finds text in a URL's first 512 characters, not after them.
    const std::string u7 = long_url(7);
    CHECK(s.list_misses({0, 10, u7.substr(400, 40)})->total == 1);
    CHECK(s.list_misses({0, 10, u7.substr(600, 40)})->total == 0);

    const auto events = s.list_events({0, 10, ""}).value();
    REQUIRE(events.items.size() == 1);
    CHECK(events.items[0].details.size() <= store::k_max_event_details + 32);
    CHECK(events.items[0].details.ends_with("(5000 bytes)"));

    // The dismissals delete what was indexed: the index stays consistent.
    for (int i = 0; i < k_rows / 2; ++i) {
      CHECK(s.dismiss_miss(*url::key_id(long_url(i))).value());
    }
  }
  SQLite::Database db((dir / "cache.db").string(), SQLite::OPEN_READWRITE);
  db.exec("INSERT INTO misses_fts (misses_fts) VALUES ('integrity-check')");
  // Merged into one segment first: how the write queue happened to batch the rows must not change the size.
  db.exec("INSERT INTO misses_fts (misses_fts) VALUES ('optimize')");
  // What the index holds: a few bytes per indexed character of each row left, never 8 KiB of trigrams.
  const auto index_bytes = db.execAndGet("SELECT sum(length(block)) FROM misses_fts_data").getInt64();
  INFO(index_bytes << " bytes of trigram index for " << k_rows / 2 << " rows of " << url::k_max_origin_url
                   << " bytes");
  CHECK(index_bytes > 0);
  CHECK(index_bytes < static_cast<std::int64_t>(k_rows / 2) * 8 * store::k_indexed_url_chars);
  CHECK(index_bytes <
        static_cast<std::int64_t>(k_rows / 2) * static_cast<std::int64_t>(url::k_max_origin_url));
}

TEST_CASE("a schema 5 index of whole URLs is cut to 512 characters on upgrade", "[store][upgrade][bounds]") {
  TempDir dir;
  const std::string long_url = "https://h/" + std::string(1000, 'a') + "tail-marker";
  const std::string key = *url::key_id(long_url);
  {
    store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
    s.record_miss(key, long_url);
    REQUIRE(s.flush().has_value());
  }
  {
    // The triggers and the index as schema 5 wrote them: the whole URL indexed.
    SQLite::Database db((dir / "cache.db").string(), SQLite::OPEN_READWRITE);
    db.exec("DROP TRIGGER misses_inserted; DROP TRIGGER misses_deleted; DROP TRIGGER misses_renamed;"
            "INSERT INTO misses_fts (misses_fts) VALUES ('delete-all');"
            "INSERT INTO misses_fts (rowid, url) SELECT id, url FROM misses;"
            "CREATE TRIGGER misses_inserted AFTER INSERT ON misses BEGIN"
            "  UPDATE totals SET miss_rows = miss_rows + 1, miss_count = miss_count + new.count;"
            "  INSERT INTO misses_fts (rowid, url) VALUES (new.id, new.url);"
            "END;"
            "CREATE TRIGGER misses_deleted AFTER DELETE ON misses BEGIN"
            "  UPDATE totals SET miss_rows = miss_rows - 1, miss_count = miss_count - old.count;"
            "  INSERT INTO misses_fts (misses_fts, rowid, url) VALUES ('delete', old.id, old.url);"
            "END;"
            "CREATE TRIGGER misses_renamed AFTER UPDATE OF url ON misses WHEN old.url IS NOT new.url BEGIN"
            "  INSERT INTO misses_fts (misses_fts, rowid, url) VALUES ('delete', old.id, old.url);"
            "  INSERT INTO misses_fts (rowid, url) VALUES (new.id, new.url);"
            "END;"
            "ALTER TABLE pending_jobs DROP COLUMN running;" // what schema 7 added
            "ALTER TABLE pending_jobs DROP COLUMN crashes;"
            "PRAGMA user_version = 5;");
    CHECK(
        db.execAndGet("SELECT count(*) FROM misses_fts WHERE misses_fts MATCH '\"tail-marker\"'").getInt() ==
        1);
  }
  {
    store::BlobStore s({dir.path(), 0, std::chrono::milliseconds(10)});
    CHECK(s.list_misses({0, 10, "tail-marker"})->total == 0);
    CHECK(s.list_misses({0, 10, "aaaa"})->total == 1);
    CHECK(s.dismiss_miss(key).value());
  }
  SQLite::Database db((dir / "cache.db").string(), SQLite::OPEN_READWRITE);
  db.exec("INSERT INTO misses_fts (misses_fts) VALUES ('integrity-check')");
  CHECK(db.execAndGet("SELECT count(*) FROM misses_fts WHERE misses_fts MATCH '\"aaaa\"'").getInt() == 0);
}

TEST_CASE(
    "a pending fill running when its store was not closed cleanly counts a crash, a clean stop starts over",
    "[store][crash]") {
  TempDir dir;
  const std::string key(64, 'e');
  std::int64_t id = 0;
  const auto crashes = [&](store::BlobStore& s) {
    const auto jobs = s.pending_jobs().value();
    REQUIRE(jobs.size() == 1);
    CHECK(jobs[0].id == id);
    return jobs[0].crashes;
  };
  {
    store::BlobStore s({dir.path()});
    id = s.add_pending_job(key, "https://h/big.iso", {});
    CHECK(crashes(s) == 0); // queued only
  }
  {
    store::BlobStore s({dir.path()});
    CHECK(s.recovery().fills_running_at_crash == 0);
    CHECK(crashes(s) == 0);
    REQUIRE(s.mark_job_running(id).has_value());
  } // closed with the fill still marked running: what a kill -9 leaves
  {
    store::BlobStore s({dir.path()});
    CHECK(s.recovery().fills_running_at_crash == 1);
    CHECK(crashes(s) == 1);
    REQUIRE(s.mark_job_running(id).has_value());
  }
  {
    store::BlobStore s({dir.path()});
    CHECK(crashes(s) == 2);
    REQUIRE(s.mark_job_running(id).has_value());
    s.mark_job_stopped(id); // a clean stop interrupted it
  }
  {
    store::BlobStore s({dir.path()});
    CHECK(s.recovery().fills_running_at_crash == 0);
    CHECK(crashes(s) == 0);
  }
}
