#include "withcache/store.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <SQLiteCpp/Transaction.h>
#include <sqlite3.h>

#include "http/http.hpp"
#include "store/index.hpp"
#include "util/regular_file.hpp"
#include "withcache/url.hpp"
#include "withcache/util/size.hpp"
#include "withcache/util/strings.hpp"
#include "withcache/util/time.hpp"

namespace withcache::store {
namespace fs = std::filesystem;

namespace {

constexpr int k_busy_timeout_ms = 5000;

// Ordered migrations: entry i brings the schema from version i to i + 1.
// Never edit a shipped entry; append a new one.
constexpr const char* k_migrations[] = {
    R"sql(
CREATE TABLE IF NOT EXISTS artifacts (
  key          TEXT PRIMARY KEY,
  url          TEXT NOT NULL,
  raw_url      TEXT NOT NULL,
  size         INTEGER NOT NULL,
  sha256       TEXT NOT NULL,
  content_type TEXT NOT NULL,
  fetched_at   INTEGER NOT NULL,
  hits         INTEGER NOT NULL DEFAULT 0,
  misses       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS artifacts_by_fetched_at ON artifacts (fetched_at DESC);
CREATE TABLE IF NOT EXISTS misses (
  key        TEXT PRIMARY KEY,
  url        TEXT NOT NULL,
  count      INTEGER NOT NULL,
  first_seen INTEGER NOT NULL,
  last_seen  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS misses_by_last_seen ON misses (last_seen DESC);
CREATE TABLE IF NOT EXISTS pending_jobs (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  key        TEXT NOT NULL,
  url        TEXT NOT NULL,
  headers    TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
)sql",
    R"sql(
CREATE TABLE IF NOT EXISTS events (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  time    INTEGER NOT NULL,
  kind    TEXT NOT NULL,
  actor   TEXT NOT NULL,
  address TEXT NOT NULL,
  details TEXT NOT NULL
);
)sql",
    // Issue 13: the origin's validators and caching headers, freshness, and the negative cache.
    R"sql(
ALTER TABLE artifacts ADD COLUMN etag                TEXT    NOT NULL DEFAULT '';
ALTER TABLE artifacts ADD COLUMN last_modified       TEXT    NOT NULL DEFAULT '';
ALTER TABLE artifacts ADD COLUMN cache_control       TEXT    NOT NULL DEFAULT '';
ALTER TABLE artifacts ADD COLUMN expires             TEXT    NOT NULL DEFAULT '';
ALTER TABLE artifacts ADD COLUMN content_encoding    TEXT    NOT NULL DEFAULT '';
ALTER TABLE artifacts ADD COLUMN content_disposition TEXT    NOT NULL DEFAULT '';
ALTER TABLE artifacts ADD COLUMN fresh_until         INTEGER NOT NULL DEFAULT 0;
ALTER TABLE misses    ADD COLUMN last_reason         TEXT    NOT NULL DEFAULT '';
ALTER TABLE misses    ADD COLUMN failures            INTEGER NOT NULL DEFAULT 0;
ALTER TABLE misses    ADD COLUMN retry_after         INTEGER NOT NULL DEFAULT 0;
ALTER TABLE misses    ADD COLUMN failed_attempt      TEXT    NOT NULL DEFAULT '';
)sql",
    // Issue 14: server-side operator sessions (only a hash of each id), and the server's own settings.
    R"sql(
CREATE TABLE IF NOT EXISTS sessions (
  id_hash    TEXT PRIMARY KEY,
  user       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  address    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
  name  TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
)sql",
    // Issue 16: a million artifacts. Stable integer ids (a rowid that is not an INTEGER PRIMARY KEY may
    // change on VACUUM) for trigram indexes of the URLs; running totals kept exact by triggers; a
    // journal of blob files a crash may leave behind (so open() never lists blobs/); the history of
    // ended fills; the scrub's position.
    R"sql(
CREATE TABLE artifacts_v4 (
  id                  INTEGER PRIMARY KEY,
  key                 TEXT    NOT NULL UNIQUE,
  url                 TEXT    NOT NULL,
  raw_url             TEXT    NOT NULL,
  size                INTEGER NOT NULL,
  sha256              TEXT    NOT NULL,
  content_type        TEXT    NOT NULL,
  fetched_at          INTEGER NOT NULL,
  hits                INTEGER NOT NULL DEFAULT 0,
  misses              INTEGER NOT NULL DEFAULT 0,
  etag                TEXT    NOT NULL DEFAULT '',
  last_modified       TEXT    NOT NULL DEFAULT '',
  cache_control       TEXT    NOT NULL DEFAULT '',
  expires             TEXT    NOT NULL DEFAULT '',
  content_encoding    TEXT    NOT NULL DEFAULT '',
  content_disposition TEXT    NOT NULL DEFAULT '',
  fresh_until         INTEGER NOT NULL DEFAULT 0
);
INSERT INTO artifacts_v4 (id, key, url, raw_url, size, sha256, content_type, fetched_at, hits, misses, etag,
                          last_modified, cache_control, expires, content_encoding, content_disposition, fresh_until)
  SELECT rowid, key, url, raw_url, size, sha256, content_type, fetched_at, hits, misses, etag, last_modified,
         cache_control, expires, content_encoding, content_disposition, fresh_until FROM artifacts;
DROP TABLE artifacts;
ALTER TABLE artifacts_v4 RENAME TO artifacts;
CREATE INDEX artifacts_by_fetched_at ON artifacts (fetched_at);
CREATE INDEX artifacts_by_sha256 ON artifacts (sha256);
-- What the in-memory index loads at start, in key order: half the bytes of the rows, and no sort.
CREATE INDEX artifacts_for_serving ON artifacts (key, sha256, size, fetched_at, fresh_until, content_type,
                                                 content_encoding, content_disposition);
CREATE INDEX artifacts_to_revalidate ON artifacts (key) WHERE fresh_until != 0;

CREATE TABLE misses_v4 (
  id             INTEGER PRIMARY KEY,
  key            TEXT    NOT NULL UNIQUE,
  url            TEXT    NOT NULL,
  count          INTEGER NOT NULL,
  first_seen     INTEGER NOT NULL,
  last_seen      INTEGER NOT NULL,
  last_reason    TEXT    NOT NULL DEFAULT '',
  failures       INTEGER NOT NULL DEFAULT 0,
  retry_after    INTEGER NOT NULL DEFAULT 0,
  failed_attempt TEXT    NOT NULL DEFAULT ''
);
INSERT INTO misses_v4 (id, key, url, count, first_seen, last_seen, last_reason, failures, retry_after, failed_attempt)
  SELECT rowid, key, url, count, first_seen, last_seen, last_reason, failures, retry_after, failed_attempt FROM misses;
DROP TABLE misses;
ALTER TABLE misses_v4 RENAME TO misses;
CREATE INDEX misses_by_last_seen ON misses (last_seen);

CREATE VIRTUAL TABLE artifacts_fts USING fts5(url, content='artifacts', content_rowid='id', tokenize='trigram');
INSERT INTO artifacts_fts (artifacts_fts) VALUES ('rebuild');
CREATE VIRTUAL TABLE misses_fts USING fts5(url, content='misses', content_rowid='id', tokenize='trigram');
INSERT INTO misses_fts (misses_fts) VALUES ('rebuild');

CREATE TABLE totals (
  id              INTEGER PRIMARY KEY CHECK (id = 1),
  artifacts       INTEGER NOT NULL,
  stored_bytes    INTEGER NOT NULL,
  hits            INTEGER NOT NULL,
  artifact_misses INTEGER NOT NULL,
  miss_rows       INTEGER NOT NULL,
  miss_count      INTEGER NOT NULL
);
INSERT INTO totals
  SELECT 1, count(*), COALESCE(sum(size), 0), COALESCE(sum(hits), 0), COALESCE(sum(misses), 0),
         (SELECT count(*) FROM misses), (SELECT COALESCE(sum(count), 0) FROM misses)
  FROM artifacts;

CREATE TRIGGER artifacts_inserted AFTER INSERT ON artifacts BEGIN
  UPDATE totals SET artifacts = artifacts + 1, stored_bytes = stored_bytes + new.size, hits = hits + new.hits,
                    artifact_misses = artifact_misses + new.misses;
  INSERT INTO artifacts_fts (rowid, url) VALUES (new.id, new.url);
END;
CREATE TRIGGER artifacts_deleted AFTER DELETE ON artifacts BEGIN
  UPDATE totals SET artifacts = artifacts - 1, stored_bytes = stored_bytes - old.size, hits = hits - old.hits,
                    artifact_misses = artifact_misses - old.misses;
  INSERT INTO artifacts_fts (artifacts_fts, rowid, url) VALUES ('delete', old.id, old.url);
END;
CREATE TRIGGER artifacts_counted AFTER UPDATE OF size, hits, misses ON artifacts BEGIN
  UPDATE totals SET stored_bytes = stored_bytes - old.size + new.size, hits = hits - old.hits + new.hits,
                    artifact_misses = artifact_misses - old.misses + new.misses;
END;
CREATE TRIGGER artifacts_renamed AFTER UPDATE OF url ON artifacts WHEN old.url IS NOT new.url BEGIN
  INSERT INTO artifacts_fts (artifacts_fts, rowid, url) VALUES ('delete', old.id, old.url);
  INSERT INTO artifacts_fts (rowid, url) VALUES (new.id, new.url);
END;
CREATE TRIGGER misses_inserted AFTER INSERT ON misses BEGIN
  UPDATE totals SET miss_rows = miss_rows + 1, miss_count = miss_count + new.count;
  INSERT INTO misses_fts (rowid, url) VALUES (new.id, new.url);
END;
CREATE TRIGGER misses_deleted AFTER DELETE ON misses BEGIN
  UPDATE totals SET miss_rows = miss_rows - 1, miss_count = miss_count - old.count;
  INSERT INTO misses_fts (misses_fts, rowid, url) VALUES ('delete', old.id, old.url);
END;
CREATE TRIGGER misses_counted AFTER UPDATE OF count ON misses BEGIN
  UPDATE totals SET miss_count = miss_count - old.count + new.count;
END;
CREATE TRIGGER misses_renamed AFTER UPDATE OF url ON misses WHEN old.url IS NOT new.url BEGIN
  INSERT INTO misses_fts (misses_fts, rowid, url) VALUES ('delete', old.id, old.url);
  INSERT INTO misses_fts (rowid, url) VALUES (new.id, new.url);
END;

CREATE TABLE blob_removals (
  key        TEXT    PRIMARY KEY,
  quarantine INTEGER NOT NULL
);
CREATE TABLE finished_jobs (
  id           INTEGER PRIMARY KEY,
  key          TEXT    NOT NULL,
  url          TEXT    NOT NULL,
  status       TEXT    NOT NULL,
  bytes_done   INTEGER NOT NULL,
  bytes_total  INTEGER NOT NULL,
  error        TEXT    NOT NULL,
  error_reason TEXT    NOT NULL,
  created_at   INTEGER NOT NULL,
  started_at   INTEGER NOT NULL,
  finished_at  INTEGER NOT NULL
);
CREATE INDEX finished_jobs_by_finished_at ON finished_jobs (finished_at);
CREATE TABLE scrub_state (
  id                    INTEGER PRIMARY KEY CHECK (id = 1),
  cursor                TEXT    NOT NULL,
  pass_started_at       INTEGER NOT NULL,
  last_pass_finished_at INTEGER NOT NULL,
  passes                INTEGER NOT NULL,
  running               INTEGER NOT NULL
);
)sql",
    // Issue 19: the URL filters' trigram indexes hold the first 512 characters of each URL
    // (k_indexed_url_chars), so a row costs them a bounded amount. Rows indexed in full so far leave
    // the index with what was indexed and come back cut. (A 'rebuild' would index whole URLs again.)
    R"sql(
DROP TRIGGER artifacts_inserted;
DROP TRIGGER artifacts_deleted;
DROP TRIGGER artifacts_renamed;
DROP TRIGGER misses_inserted;
DROP TRIGGER misses_deleted;
DROP TRIGGER misses_renamed;
INSERT INTO artifacts_fts (artifacts_fts, rowid, url) SELECT 'delete', id, url FROM artifacts WHERE length(url) > 512;
INSERT INTO artifacts_fts (rowid, url) SELECT id, substr(url, 1, 512) FROM artifacts WHERE length(url) > 512;
INSERT INTO misses_fts (misses_fts, rowid, url) SELECT 'delete', id, url FROM misses WHERE length(url) > 512;
INSERT INTO misses_fts (rowid, url) SELECT id, substr(url, 1, 512) FROM misses WHERE length(url) > 512;
CREATE TRIGGER artifacts_inserted AFTER INSERT ON artifacts BEGIN
  UPDATE totals SET artifacts = artifacts + 1, stored_bytes = stored_bytes + new.size, hits = hits + new.hits,
                    artifact_misses = artifact_misses + new.misses;
  INSERT INTO artifacts_fts (rowid, url) VALUES (new.id, substr(new.url, 1, 512));
END;
CREATE TRIGGER artifacts_deleted AFTER DELETE ON artifacts BEGIN
  UPDATE totals SET artifacts = artifacts - 1, stored_bytes = stored_bytes - old.size, hits = hits - old.hits,
                    artifact_misses = artifact_misses - old.misses;
  INSERT INTO artifacts_fts (artifacts_fts, rowid, url) VALUES ('delete', old.id, substr(old.url, 1, 512));
END;
CREATE TRIGGER artifacts_renamed AFTER UPDATE OF url ON artifacts WHEN old.url IS NOT new.url BEGIN
  INSERT INTO artifacts_fts (artifacts_fts, rowid, url) VALUES ('delete', old.id, substr(old.url, 1, 512));
  INSERT INTO artifacts_fts (rowid, url) VALUES (new.id, substr(new.url, 1, 512));
END;
CREATE TRIGGER misses_inserted AFTER INSERT ON misses BEGIN
  UPDATE totals SET miss_rows = miss_rows + 1, miss_count = miss_count + new.count;
  INSERT INTO misses_fts (rowid, url) VALUES (new.id, substr(new.url, 1, 512));
END;
CREATE TRIGGER misses_deleted AFTER DELETE ON misses BEGIN
  UPDATE totals SET miss_rows = miss_rows - 1, miss_count = miss_count - old.count;
  INSERT INTO misses_fts (misses_fts, rowid, url) VALUES ('delete', old.id, substr(old.url, 1, 512));
END;
CREATE TRIGGER misses_renamed AFTER UPDATE OF url ON misses WHEN old.url IS NOT new.url BEGIN
  INSERT INTO misses_fts (misses_fts, rowid, url) VALUES ('delete', old.id, substr(old.url, 1, 512));
  INSERT INTO misses_fts (rowid, url) VALUES (new.id, substr(new.url, 1, 512));
END;
)sql",
    // Issue 19: no crash loop. `running` is set (synchronously) when a fill starts and cleared when a
    // clean stop interrupts it; open() turns a set one into one more `crashes`: the server died while
    // the fill ran. The pool does not resume a fill that was running at two such deaths in a row.
    R"sql(
ALTER TABLE pending_jobs ADD COLUMN running INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pending_jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;
)sql",
};
static_assert(k_indexed_url_chars == 512, "migration 6's triggers index substr(url, 1, 512)");

// The first schema version whose open() can trust the journal instead of listing blobs/.
constexpr int k_journal_version = 5;

// The events log keeps this many of the newest rows.
constexpr std::int64_t k_max_events = 100'000;

// Bounds of the write queue while cache.db cannot be written (a full disk): distinct keys of queued
// hits and of queued misses (more keys are counted as lost, known ones keep counting), events and
// ended fills (the newest are dropped and counted).
constexpr std::size_t k_max_queued_keys = 100'000;
constexpr std::size_t k_max_queued_events = 10'000;
constexpr std::size_t k_max_queued_finished = 1'000;

// Below this much free space the disk counts as full: fills are refused.
constexpr std::uint64_t k_min_free_bytes = 1024 * 1024;

using detail::Digest;
using detail::IndexRecord;
using util::now;

// Runs `body`, turning a database exception into a one-line error: no SQLite
// exception leaves the store.
template <class F> auto guarded(std::string_view what, F&& body) -> Expected<decltype(body()), std::string> {
  try {
    return body();
  } catch (const std::exception& e) {
    return unexpected(std::string(what) + ": " + e.what());
  }
}

// Resets a prepared statement and clears its bindings however the code using it ends.
class Use {
 public:
  explicit Use(SQLite::Statement& statement) noexcept : m_statement(statement) {}
  ~Use() {
    m_statement.tryReset();
    try {
      m_statement.clearBindings();
    } catch (...) { // a statement that cannot clear its bindings is rebound before its next use anyway
    }
  }
  Use(const Use&) = delete;
  Use& operator=(const Use&) = delete;
  SQLite::Statement* operator->() const noexcept { return &m_statement; }
  SQLite::Statement& operator*() const noexcept { return m_statement; }

 private:
  SQLite::Statement& m_statement;
};

std::int64_t to_db(std::uint64_t value) {
  return static_cast<std::int64_t>(std::min<std::uint64_t>(value, INT64_MAX));
}
std::uint64_t from_db(std::int64_t value) {
  return value < 0 ? 0 : static_cast<std::uint64_t>(value);
}
std::uint32_t to_u32_time(UnixTime t) {
  return static_cast<std::uint32_t>(std::clamp<UnixTime>(t, 0, UINT32_MAX));
}

bool is_key_id(std::string_view name) {
  return name.size() == 64 && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// `<key>.<sha256>.staged`: a blob whose row may or may not be written yet (in tmp/; in blobs/ before
// schema version 5).
constexpr std::string_view k_staged_suffix = ".staged";

std::string staged_name(std::string_view key, std::string_view sha256) {
  return std::string(key) + "." + std::string(sha256) + std::string(k_staged_suffix);
}

// The key and SHA-256 a staged file name carries; nothing for any other name.
std::optional<std::pair<std::string, std::string>> parse_staged_name(std::string_view name) {
  if (name.size() != 64 + 1 + 64 + k_staged_suffix.size() || !name.ends_with(k_staged_suffix) || name[64] != '.') {
    return std::nullopt;
  }
  const std::string_view key = name.substr(0, 64);
  const std::string_view sha = name.substr(65, 64);
  if (!is_key_id(key) || !is_key_id(sha)) {
    return std::nullopt;
  }
  return std::pair{std::string(key), std::string(sha)};
}

// fsync a directory by path; the rename-then-fsync(dir) dance is what makes a committed blob survive a
// power cut. (Files are synced through the descriptor open_regular() checked.)
bool fsync_dir(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    return false;
  }
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

// Pending-job headers are stored one `Name: Value` per line; the pool refuses
// names or values containing CR/LF, so this cannot be confused.
std::string encode_headers(const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string out;
  for (const auto& [name, value] : headers) {
    out += name;
    out += ": ";
    out += value;
    out += '\n';
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> decode_headers(std::string_view text) {
  // Written by encode_headers from checked fields; a row that does not parse is dropped rather than sent.
  return http::parse_header_lines(text).value_or(http::Fields{});
}

// LIKE pattern for a case-insensitive substring, with % _ and \ escaped.
std::string like_pattern(std::string_view filter) {
  std::string out = "%";
  for (const char c : filter) {
    if (c == '%' || c == '_' || c == '\\') {
      out += '\\';
    }
    out += c;
  }
  out += '%';
  return out;
}

// An FTS5 phrase for a substring: with the trigram tokenizer a phrase matches where its trigrams
// follow each other, i.e. the substring (case-insensitive). Quotes are doubled inside the phrase.
std::string trigram_phrase(std::string_view filter) {
  std::string out = "\"";
  for (const char c : filter) {
    out += c;
    if (c == '"') {
      out += '"';
    }
  }
  out += '"';
  return out;
}

// Characters, not bytes: the trigram tokenizer works on Unicode characters.
std::size_t characters(std::string_view text) {
  return static_cast<std::size_t>(
      std::count_if(text.begin(), text.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

bool is_hex_prefix(std::string_view text) {
  return text.size() >= 8 && text.size() <= 64 && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
         });
}

Artifact artifact_from_row(SQLite::Statement& row) {
  Artifact a;
  a.key = row.getColumn(0).getString();
  a.url = row.getColumn(1).getString();
  a.raw_url = row.getColumn(2).getString();
  a.size = from_db(row.getColumn(3).getInt64());
  a.sha256 = row.getColumn(4).getString();
  a.content_type = row.getColumn(5).getString();
  a.fetched_at = row.getColumn(6).getInt64();
  a.hits = from_db(row.getColumn(7).getInt64());
  a.misses = from_db(row.getColumn(8).getInt64());
  a.etag = row.getColumn(9).getString();
  a.last_modified = row.getColumn(10).getString();
  a.cache_control = row.getColumn(11).getString();
  a.expires = row.getColumn(12).getString();
  a.content_encoding = row.getColumn(13).getString();
  a.content_disposition = row.getColumn(14).getString();
  a.fresh_until = row.getColumn(15).getInt64();
  return a;
}

constexpr const char* k_artifact_columns =
    "key, url, raw_url, size, sha256, content_type, fetched_at, hits, misses, etag, last_modified, "
    "cache_control, expires, content_encoding, content_disposition, fresh_until";

Miss miss_from_row(SQLite::Statement& row) {
  Miss m;
  m.key = row.getColumn(0).getString();
  m.url = row.getColumn(1).getString();
  m.count = from_db(row.getColumn(2).getInt64());
  m.first_seen = row.getColumn(3).getInt64();
  m.last_seen = row.getColumn(4).getInt64();
  m.last_reason = row.getColumn(5).getString();
  m.failures = static_cast<std::uint32_t>(std::clamp<std::int64_t>(row.getColumn(6).getInt64(), 0, UINT32_MAX));
  m.retry_after = row.getColumn(7).getInt64();
  return m;
}

constexpr const char* k_miss_columns = "key, url, count, first_seen, last_seen, last_reason, failures, retry_after";

Job job_from_row(SQLite::Statement& row) {
  Job j;
  j.id = row.getColumn(0).getInt64();
  j.key = row.getColumn(1).getString();
  j.url = row.getColumn(2).getString();
  j.status = job_status_from(row.getColumn(3).getString());
  j.bytes_done = from_db(row.getColumn(4).getInt64());
  j.bytes_total = from_db(row.getColumn(5).getInt64());
  j.error = row.getColumn(6).getString();
  j.error_reason = row.getColumn(7).getString();
  j.created_at = row.getColumn(8).getInt64();
  j.started_at = row.getColumn(9).getInt64();
  j.finished_at = row.getColumn(10).getInt64();
  return j;
}

constexpr const char* k_job_columns =
    "id, key, url, status, bytes_done, bytes_total, error, error_reason, created_at, started_at, finished_at";

// The index record of an artifact, its strings interned or kept as extras.
IndexRecord record_of(detail::CompactIndex& index, const Artifact& a) {
  IndexRecord r;
  r.key = detail::digest_from_hex(a.key).value_or(Digest{});
  r.sha256 = detail::digest_from_hex(a.sha256).value_or(Digest{});
  r.set_size(a.size);
  r.fetched_at = to_u32_time(a.fetched_at);
  r.fresh_until = a.fresh_until == 0 ? 0 : std::max<std::uint32_t>(1, to_u32_time(a.fresh_until));
  r.type = index.intern_type(a.content_type) & 0x7FFFFFFFU;
  detail::Extras extras;
  extras.content_encoding = a.content_encoding;
  extras.content_disposition = a.content_disposition;
  if (a.fresh_until != 0) {
    // The validators are only read to revalidate; an artifact that never goes stale leaves them in cache.db.
    extras.etag = a.etag;
    extras.last_modified = a.last_modified;
    extras.cache_control = a.cache_control;
    extras.expires = a.expires;
  }
  r.extras = index.add_extras(extras);
  return r;
}

Artifact artifact_of(const detail::CompactIndex& index, const IndexRecord& r) {
  Artifact a;
  a.key = detail::digest_hex(r.key);
  a.sha256 = detail::digest_hex(r.sha256);
  a.size = r.size();
  a.content_type = index.type_name(r.type);
  a.fetched_at = r.fetched_at;
  a.fresh_until = r.fresh_until;
  if (r.extras != 0) {
    detail::Extras extras = index.extras(r.extras);
    a.content_encoding = std::move(extras.content_encoding);
    a.content_disposition = std::move(extras.content_disposition);
    a.etag = std::move(extras.etag);
    a.last_modified = std::move(extras.last_modified);
    a.cache_control = std::move(extras.cache_control);
    a.expires = std::move(extras.expires);
  }
  return a;
}

bool is_full_error(const std::exception& e) {
  if (const auto* sqlite = dynamic_cast<const SQLite::Exception*>(&e)) {
    return sqlite->getErrorCode() == SQLITE_FULL;
  }
  return false;
}

// A listing cursor: `<order value>.<id>` (opaque to clients).
struct Cursor {
  std::int64_t order = 0;
  std::int64_t id = 0;
};

std::optional<Cursor> parse_cursor(std::string_view text, bool with_order) {
  Cursor c;
  if (with_order) {
    const std::size_t dot = text.find('.');
    if (dot == std::string_view::npos) {
      return std::nullopt;
    }
    const auto order = http::parse_decimal(text.substr(0, dot));
    if (!order || *order > INT64_MAX) {
      return std::nullopt;
    }
    c.order = static_cast<std::int64_t>(*order);
    text.remove_prefix(dot + 1);
  }
  const auto id = http::parse_decimal(text);
  if (!id || *id > INT64_MAX) {
    return std::nullopt;
  }
  c.id = static_cast<std::int64_t>(*id);
  return c;
}

std::string format_cursor(std::int64_t order, std::int64_t id, bool with_order) {
  return with_order ? std::to_string(order) + "." + std::to_string(id) : std::to_string(id);
}

// One listing, described for keyset paging (see page_of()).
struct ListingSpec {
  const char* table;    // artifacts, misses, events, finished_jobs
  const char* columns;  // the select list the row converter reads, without the id and order columns
  const char* order;    // the column listed newest first ("" = by id alone)
  const char* fts;      // the trigram index of `url`, or nullptr (then filters scan with LIKE)
  const char* like;     // the LIKE condition on ?1 (a pattern)
  bool sha_prefix;      // a hex filter also matches a prefix of sha256 (artifacts)
};

} // namespace

// Statements of the write connection, prepared once (STYLE: "statements prepared once").
struct BlobStore::Statements {
  explicit Statements(SQLite::Database& db)
      : add_hits(db, "UPDATE artifacts SET hits = hits + ? WHERE key = ?"),
        add_artifact_misses(db, "UPDATE artifacts SET misses = misses + ? WHERE key = ?"),
        upsert_miss(db, R"sql(
INSERT INTO misses (key, url, count, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (key) DO UPDATE SET url = excluded.url, count = count + excluded.count,
                                last_seen = max(last_seen, excluded.last_seen))sql"),
        upsert_failure(db, R"sql(
INSERT INTO misses (key, url, count, first_seen, last_seen, last_reason, failures, retry_after, failed_attempt)
VALUES (?1, ?2, 0, ?3, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (key) DO UPDATE SET last_reason = excluded.last_reason, failures = excluded.failures,
                                retry_after = excluded.retry_after, failed_attempt = excluded.failed_attempt)sql"),
        clear_failure(db, "UPDATE misses SET failures = 0, retry_after = 0 WHERE key = ?"),
        insert_event(db, "INSERT INTO events (time, kind, actor, address, details) VALUES (?, ?, ?, ?, ?)"),
        prune_events(db, "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?"),
        insert_job(
            db,
            "INSERT OR REPLACE INTO pending_jobs (id, key, url, headers, created_at) VALUES (?, ?, ?, ?, ?)"),
        delete_job(db, "DELETE FROM pending_jobs WHERE id = ?"),
        job_running(db, "UPDATE pending_jobs SET running = 1 WHERE id = ?"),
        job_stopped(db, "UPDATE pending_jobs SET running = 0, crashes = 0 WHERE id = ?"),
        insert_finished(db, "INSERT OR REPLACE INTO finished_jobs (" + std::string(k_job_columns) +
                                ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        prune_finished(
            db, "DELETE FROM finished_jobs WHERE finished_at < ?1 OR id <= (SELECT id FROM finished_jobs "
                "ORDER BY id DESC LIMIT 1 OFFSET ?2)"),
        upsert_artifact(db, R"sql(
INSERT INTO artifacts (key, url, raw_url, size, sha256, content_type, fetched_at, hits, misses, etag,
                       last_modified, cache_control, expires, content_encoding, content_disposition, fresh_until)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, COALESCE((SELECT count FROM misses WHERE key = ?1), 0), ?8, ?9, ?10,
        ?11, ?12, ?13, ?14)
ON CONFLICT (key) DO UPDATE SET url = excluded.url, raw_url = excluded.raw_url, size = excluded.size,
  sha256 = excluded.sha256, content_type = excluded.content_type, fetched_at = excluded.fetched_at,
  misses = misses + excluded.misses, etag = excluded.etag, last_modified = excluded.last_modified,
  cache_control = excluded.cache_control, expires = excluded.expires,
  content_encoding = excluded.content_encoding, content_disposition = excluded.content_disposition,
  fresh_until = excluded.fresh_until)sql"),
        delete_miss(db, "DELETE FROM misses WHERE key = ?"),
        miss_rows(db, "SELECT miss_rows FROM totals WHERE id = 1"),
        prune_misses(db, "DELETE FROM misses WHERE id IN (SELECT id FROM misses WHERE retry_after <= ?1 "
                         "ORDER BY last_seen LIMIT ?2) RETURNING key"),
        read_artifact(db, std::string("SELECT ") + k_artifact_columns + " FROM artifacts WHERE key = ?"),
        refresh(db, R"sql(
UPDATE artifacts SET fresh_until = ?2, etag = ?3, last_modified = ?4, cache_control = ?5, expires = ?6
WHERE key = ?1)sql"),
        delete_artifact(db, "DELETE FROM artifacts WHERE key = ?"),
        delete_artifact_if(db, "DELETE FROM artifacts WHERE key = ? AND sha256 = ?"),
        journal_removal(db, "INSERT OR REPLACE INTO blob_removals (key, quarantine) VALUES (?, ?)"),
        forget_removal(db, "DELETE FROM blob_removals WHERE key = ?"),
        save_scrub(db,
                   "INSERT OR REPLACE INTO scrub_state (id, cursor, pass_started_at, last_pass_finished_at, "
                   "passes, running) VALUES (1, ?, ?, ?, ?, ?)"),
        sha_of(db, "SELECT sha256 FROM artifacts WHERE key = ?") {}

  SQLite::Statement add_hits;
  SQLite::Statement add_artifact_misses;
  SQLite::Statement upsert_miss;
  SQLite::Statement upsert_failure;
  SQLite::Statement clear_failure;
  SQLite::Statement insert_event;
  SQLite::Statement prune_events;
  SQLite::Statement insert_job;
  SQLite::Statement delete_job;
  SQLite::Statement job_running;
  SQLite::Statement job_stopped;
  SQLite::Statement insert_finished;
  SQLite::Statement prune_finished;
  SQLite::Statement upsert_artifact;
  SQLite::Statement delete_miss;
  SQLite::Statement miss_rows;
  SQLite::Statement prune_misses;
  SQLite::Statement read_artifact;
  SQLite::Statement refresh;
  SQLite::Statement delete_artifact;
  SQLite::Statement delete_artifact_if;
  SQLite::Statement journal_removal;
  SQLite::Statement forget_removal;
  SQLite::Statement save_scrub;
  SQLite::Statement sha_of;
  // Listings are built from a few shapes; each distinct text is prepared once on the read connection.
  std::unordered_map<std::string, std::unique_ptr<SQLite::Statement>> listing;
};

std::chrono::seconds backoff_delay(std::uint32_t failures) {
  constexpr std::chrono::seconds k_first{10 * 60};
  constexpr std::chrono::seconds k_longest{24 * 60 * 60};
  std::chrono::seconds delay = k_first;
  for (std::uint32_t i = 1; i < failures && delay < k_longest; ++i) {
    delay *= 2;
  }
  return std::min(delay, k_longest);
}

OpenedBlob::~OpenedBlob() {
  if (m_fd >= 0) {
    ::close(m_fd);
  }
}

OpenedBlob::OpenedBlob(OpenedBlob&& other) noexcept
    : m_artifact(std::move(other.m_artifact)), m_fd(std::exchange(other.m_fd, -1)) {}

OpenedBlob& OpenedBlob::operator=(OpenedBlob&& other) noexcept {
  if (this != &other) {
    if (m_fd >= 0) {
      ::close(m_fd);
    }
    m_artifact = std::move(other.m_artifact);
    m_fd = std::exchange(other.m_fd, -1);
  }
  return *this;
}

int OpenedBlob::release() noexcept {
  return std::exchange(m_fd, -1);
}

bool BlobStore::Queue::empty() const noexcept {
  return hits.empty() && misses.empty() && events.empty() && job_ops.empty() && failures.empty() &&
         finished_jobs.empty() && removals_done.empty() && drops.empty() && !scrub;
}

std::uint64_t BlobStore::Queue::size() const noexcept {
  return hits.size() + misses.size() + events.size() + job_ops.size() + failures.size() + finished_jobs.size() +
         removals_done.size() + drops.size() + (scrub ? 1 : 0);
}

BlobStore::BlobStore(StoreOptions options)
    : m_options(std::move(options)), m_index(std::make_unique<detail::CompactIndex>()) {
  std::error_code ec;
  for (const auto& dir : {m_options.data_dir, m_options.data_dir / "blobs", m_options.data_dir / "tmp",
                          m_options.data_dir / "quarantine"}) {
    fs::create_directories(dir, ec);
    if (ec) {
      throw StoreError("cannot create " + dir.string() + ": " + ec.message());
    }
    if (::access(dir.c_str(), W_OK | X_OK) != 0) {
      throw StoreError("data dir " + dir.string() + " is not writable: " + std::strerror(errno));
    }
  }
  const fs::path db_path = m_options.data_dir / "cache.db";
  try {
    open_database(db_path);
    migrate();
    if (m_upgraded_from_old_layout) {
      sweep_blobs_once();
    }
    load_index();
    recover_tmp();
    finish_removals();
    count_crashed_fills();
    // Job ids are never reused: continue after the highest ever handed out (also in the history).
    std::int64_t highest = m_db->execAndGet("SELECT max(COALESCE((SELECT max(id) FROM pending_jobs), 0), "
                                            "COALESCE((SELECT max(id) FROM finished_jobs), 0))")
                               .getInt64();
    if (m_db->tableExists("sqlite_sequence")) {
      SQLite::Statement seq(*m_db, "SELECT seq FROM sqlite_sequence WHERE name = 'pending_jobs'");
      if (seq.executeStep()) {
        highest = std::max(highest, seq.getColumn(0).getInt64());
      }
    }
    m_next_job_id = highest + 1;
    // Each connection is used under its own mutex: SQLite need not lock again inside every call.
    m_read_db = std::make_unique<SQLite::Database>(db_path.string(), SQLite::OPEN_READONLY | SQLite::OPEN_NOMUTEX,
                                                   k_busy_timeout_ms);
  } catch (const SQLite::Exception& e) {
    throw StoreError("cannot open " + db_path.string() + ": " + e.what());
  }
  m_flusher = std::thread([this] { flusher_loop(); });
}

BlobStore::~BlobStore() {
  {
    std::lock_guard lock(m_counter_mutex);
    m_stopping = true;
  }
  m_flusher_cv.notify_all();
  if (m_flusher.joinable()) {
    m_flusher.join();
  }
  // Best effort on shutdown: the blobs and their rows are already safe.
  (void)flush();
}

void BlobStore::open_database(const fs::path& db_path) {
  m_db = std::make_unique<SQLite::Database>(db_path.string(),
                                            SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE | SQLite::OPEN_NOMUTEX,
                                            k_busy_timeout_ms);
  // cache.db holds the headers of pending fills (possibly credentials).
  ::chmod(db_path.c_str(), S_IRUSR | S_IWUSR);
  m_db->exec("PRAGMA journal_mode=WAL");
  m_db->exec("PRAGMA synchronous=NORMAL");
  m_db->exec("PRAGMA foreign_keys=ON");
}

void BlobStore::migrate() {
  const int version = m_db->execAndGet("PRAGMA user_version").getInt();
  const int latest = static_cast<int>(std::size(k_migrations));
  if (version > latest) {
    throw StoreError("cache.db has schema version " + std::to_string(version) +
                     ", newer than this withcache (" + std::to_string(latest) + "); upgrade withcache");
  }
  // A data dir written before the journal existed may hold crash leftovers only a listing of blobs/ finds.
  m_upgraded_from_old_layout = version > 0 && version < k_journal_version;
  for (int v = version; v < latest; ++v) {
    SQLite::Transaction tx(*m_db);
    m_db->exec(k_migrations[v]);
    m_db->exec("PRAGMA user_version = " + std::to_string(v + 1));
    tx.commit();
  }
  m_statements = std::make_unique<Statements>(*m_db);
}

// Once, after an upgrade from a schema without the removal journal: what open() used to do at every
// start, minus the stat of every blob (sizes are checked when served and by the scrub).
void BlobStore::sweep_blobs_once() {
  std::error_code ec;
  std::unordered_set<std::string> present;
  for (const auto& entry : fs::directory_iterator(m_options.data_dir / "blobs", ec)) {
    const std::string name = entry.path().filename().string();
    if (const auto staged = parse_staged_name(name)) {
      Use sha_of(m_statements->sha_of);
      sha_of->bind(1, staged->first);
      const bool recorded = sha_of->executeStep() && sha_of->getColumn(0).getString() == staged->second;
      std::error_code move_ec;
      if (recorded) {
        fs::rename(entry.path(), blob_path(staged->first), move_ec);
        if (!move_ec) {
          ++m_recovery.replacements_completed;
          present.insert(staged->first);
        }
      } else if (fs::remove(entry.path(), move_ec)) {
        ++m_recovery.blobs_without_row_removed;
      }
    } else if (is_key_id(name)) {
      present.insert(name);
    }
  }
  (void)fsync_dir(m_options.data_dir / "blobs");
  std::vector<std::string> missing;
  std::unordered_set<std::string> rows;
  {
    SQLite::Statement all(*m_db, "SELECT key FROM artifacts");
    while (all.executeStep()) {
      std::string key = all.getColumn(0).getString();
      if (present.count(key) == 0) {
        missing.push_back(std::move(key));
      } else {
        rows.insert(std::move(key));
      }
    }
  }
  if (!missing.empty()) {
    SQLite::Transaction tx(*m_db);
    for (const auto& key : missing) {
      Use drop(m_statements->delete_artifact);
      drop->bind(1, key);
      drop->exec();
      ++m_recovery.rows_without_blob_dropped;
    }
    tx.commit();
  }
  for (const auto& name : present) {
    if (rows.count(name) == 0 && fs::remove(blob_path(name), ec)) {
      ++m_recovery.blobs_without_row_removed;
    }
  }
}

void BlobStore::load_index() {
  std::unique_lock lock(m_index_mutex);
  const auto count = from_db(m_db->execAndGet("SELECT artifacts FROM totals").getInt64());
  m_index->reserve(static_cast<std::size_t>(count) + 1024);
  // A million rows: read from the covering index in key order, with sqlite3_column_* directly (no
  // per-column objects), hex decoded by table, the content type interned with a one-entry cache
  // (neighbouring rows tend to share it).
  const auto prepare = [this](const char* sql) {
    sqlite3_stmt* statement = nullptr;
    if (::sqlite3_prepare_v2(m_db->getHandle(), sql, -1, &statement, nullptr) != SQLITE_OK) {
      throw SQLite::Exception(m_db->getHandle(), ::sqlite3_errcode(m_db->getHandle()));
    }
    return std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)>(statement, ::sqlite3_finalize);
  };
  const auto text = [](sqlite3_stmt* row, int column) {
    const auto* bytes = reinterpret_cast<const char*>(::sqlite3_column_text(row, column));
    return bytes == nullptr ? std::string_view()
                            : std::string_view(bytes, static_cast<std::size_t>(::sqlite3_column_bytes(row, column)));
  };
  const auto step = [this](sqlite3_stmt* statement) {
    const int rc = ::sqlite3_step(statement);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
      throw SQLite::Exception(m_db->getHandle(), rc);
    }
    return rc == SQLITE_ROW;
  };
  // The validators of artifacts that will be revalidated (a partial index: usually few).
  std::unordered_map<std::string, detail::Extras> validators;
  {
    const auto rows = prepare("SELECT key, etag, last_modified, cache_control, expires FROM artifacts "
                              "INDEXED BY artifacts_to_revalidate WHERE fresh_until != 0");
    while (step(rows.get())) {
      detail::Extras& v = validators[std::string(text(rows.get(), 0))];
      v.etag = text(rows.get(), 1);
      v.last_modified = text(rows.get(), 2);
      v.cache_control = text(rows.get(), 3);
      v.expires = text(rows.get(), 4);
    }
  }
  const auto rows = prepare("SELECT key, sha256, size, fetched_at, fresh_until, content_type, content_encoding, "
                            "content_disposition FROM artifacts INDEXED BY artifacts_for_serving ORDER BY key");
  sqlite3_stmt* row = rows.get();
  std::uint64_t stored = 0;
  std::string last_type;
  std::uint32_t last_type_id = 0;
  while (step(row)) {
    IndexRecord r;
    const auto key = detail::digest_from_hex(text(row, 0));
    const auto sha = detail::digest_from_hex(text(row, 1));
    if (!key || !sha) {
      continue; // not a row this store wrote: it could never be looked up or served
    }
    r.key = *key;
    r.sha256 = *sha;
    const auto size = from_db(::sqlite3_column_int64(row, 2));
    r.set_size(size);
    r.fetched_at = to_u32_time(::sqlite3_column_int64(row, 3));
    const UnixTime fresh_until = ::sqlite3_column_int64(row, 4);
    r.fresh_until = fresh_until == 0 ? 0 : std::max<std::uint32_t>(1, to_u32_time(fresh_until));
    const std::string_view type = text(row, 5);
    if (type != last_type) {
      last_type = type;
      last_type_id = m_index->intern_type(type) & 0x7FFFFFFFU;
    }
    r.type = last_type_id & 0x7FFFFFFFU;
    const std::string_view encoding = text(row, 6);
    const std::string_view disposition = text(row, 7);
    if (!encoding.empty() || !disposition.empty() || fresh_until != 0) {
      detail::Extras extras;
      if (fresh_until != 0) {
        if (const auto it = validators.find(std::string(text(row, 0))); it != validators.end()) {
          extras = std::move(it->second);
        }
      }
      extras.content_encoding = encoding;
      extras.content_disposition = disposition;
      r.extras = m_index->add_extras(extras);
    }
    stored += size;
    m_index->load(r);
  }
  m_index->finish_load();
  m_stored_bytes = stored;

  SQLite::Statement misses(*m_db, "SELECT key, last_reason, failures, retry_after, failed_attempt FROM misses");
  std::lock_guard counter_lock(m_counter_mutex);
  while (misses.executeStep()) {
    std::string key = misses.getColumn(0).getString();
    const auto failures = static_cast<std::uint32_t>(std::clamp<std::int64_t>(misses.getColumn(2).getInt64(), 0, UINT32_MAX));
    if (failures > 0) {
      m_backoffs[key] = Backoff{misses.getColumn(1).getString(), failures, misses.getColumn(3).getInt64(),
                                misses.getColumn(4).getString()};
    }
    m_known_misses.insert(std::move(key));
  }
}

void BlobStore::recover_tmp() {
  std::error_code ec;
  // A staged blob: commit died after staging it. Its row was written exactly
  // when the row's SHA-256 is the one in its name: then finish the rename;
  // otherwise the earlier blob (if any) is still the artifact.
  bool renamed = false;
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator(m_options.data_dir / "tmp", ec)) {
    entries.push_back(entry.path());
  }
  for (const auto& path : entries) {
    const auto staged = parse_staged_name(path.filename().string());
    if (!staged) {
      continue;
    }
    const auto key = detail::digest_from_hex(staged->first);
    const auto sha = detail::digest_from_hex(staged->second);
    const IndexRecord* row = key ? m_index->find(*key) : nullptr;
    std::error_code move_ec;
    if (row != nullptr && sha && row->sha256 == *sha) {
      fs::rename(path, blob_path(staged->first), move_ec);
      if (!move_ec) {
        ++m_recovery.replacements_completed;
        renamed = true;
      }
    } else if (fs::remove(path, move_ec)) {
      ++m_recovery.blobs_without_row_removed;
    }
  }
  if (renamed) {
    (void)fsync_dir(m_options.data_dir / "blobs");
  }

  // .part files that no pending job owns are leftovers of a crash or a cancel.
  std::unordered_set<std::string> owned;
  {
    SQLite::Statement jobs(*m_db, "SELECT key FROM pending_jobs");
    while (jobs.executeStep()) {
      owned.insert(jobs.getColumn(0).getString());
    }
  }
  for (const auto& path : entries) {
    const bool part = path.extension() == ".part";
    if ((part || path.extension() == ".resume") && owned.count(path.stem().string()) == 0) {
      if (fs::remove(path, ec) && part) {
        ++m_recovery.stray_parts_removed;
      }
    }
  }
}

// Deletes and quarantines write their journal entry with the row's deletion, then remove or move the
// file: a crash in between leaves an entry naming a file to finish with. A key filled again since has a
// row, and its file is the new blob.
void BlobStore::finish_removals() {
  std::vector<std::pair<std::string, bool>> removals;
  {
    SQLite::Statement all(*m_db, "SELECT key, quarantine FROM blob_removals");
    while (all.executeStep()) {
      removals.emplace_back(all.getColumn(0).getString(), all.getColumn(1).getInt() != 0);
    }
  }
  if (removals.empty()) {
    return;
  }
  for (const auto& [key, to_quarantine] : removals) {
    const auto digest = detail::digest_from_hex(key);
    if (!digest || m_index->find(*digest) != nullptr) {
      continue;
    }
    std::error_code ec;
    if (!fs::exists(blob_path(key), ec)) {
      continue;
    }
    if (to_quarantine) {
      move_to_quarantine(key, "interrupted");
    } else {
      fs::remove(blob_path(key), ec);
    }
    ++m_recovery.removals_finished;
  }
  m_db->exec("DELETE FROM blob_removals");
}

std::optional<Artifact> BlobStore::find(const std::string& key) const {
  const auto digest = detail::digest_from_hex(key);
  if (!digest) {
    return std::nullopt;
  }
  std::shared_lock lock(m_index_mutex);
  const IndexRecord* record = m_index->find(*digest);
  if (record == nullptr) {
    return std::nullopt;
  }
  return artifact_of(*m_index, *record);
}

std::optional<Artifact> BlobStore::find_present(const std::string& key, Presence* presence) {
  if (presence != nullptr) {
    *presence = Presence::not_cached;
  }
  auto artifact = find(key);
  if (!artifact) {
    return std::nullopt;
  }
  struct stat st{};
  // lstat: a blob is a regular file this store wrote, never a link planted beside it (the same rules
  // as open_blob's util::open_regular, so a HEAD never says hit where a GET would not).
  const bool exists = ::lstat(blob_path(key).c_str(), &st) == 0;
  if (exists && S_ISREG(st.st_mode) && st.st_nlink == 1 &&
      static_cast<std::uint64_t>(st.st_size) == artifact->size) {
    if (presence != nullptr) {
      *presence = Presence::hit;
    }
    return artifact;
  }
  if (!exists && errno != ENOENT) {
    return std::nullopt; // cannot tell (a permission, an I/O error): nothing is known to be wrong with it
  }
  drop_damaged(
      key, artifact->sha256,
      !exists                ? "blob missing"
      : S_ISLNK(st.st_mode)  ? "blob is a symbolic link"
      : !S_ISREG(st.st_mode) ? "blob is not a regular file (" + util::describe_file_type(st.st_mode) + ")"
      : st.st_nlink != 1
          ? "blob is a hard link (" + std::to_string(st.st_nlink) + " names for one file)"
          : "blob has " + std::to_string(st.st_size) + " bytes, expected " + std::to_string(artifact->size));
  if (presence != nullptr) {
    *presence = Presence::dropped;
  }
  return std::nullopt;
}

std::uint64_t BlobStore::artifact_count() const {
  std::shared_lock lock(m_index_mutex);
  return m_index->size();
}

std::uint64_t BlobStore::index_memory_bytes() const {
  std::shared_lock lock(m_index_mutex);
  return m_index->memory_bytes();
}

fs::path BlobStore::blob_path(std::string_view key) const {
  return m_options.data_dir / "blobs" / key;
}

fs::path BlobStore::part_path(std::string_view key) const {
  return m_options.data_dir / "tmp" / (std::string(key) + ".part");
}

fs::path BlobStore::resume_state_path(std::string_view key) const {
  return m_options.data_dir / "tmp" / (std::string(key) + ".resume");
}

fs::path BlobStore::quarantine_dir() const {
  return m_options.data_dir / "quarantine";
}

std::optional<OpenedBlob> BlobStore::open_blob(const std::string& key, Presence* presence) {
  if (presence != nullptr) {
    *presence = Presence::not_cached;
  }
  const auto digest = detail::digest_from_hex(key);
  if (!digest) {
    return std::nullopt;
  }
  std::string damage;
  Artifact artifact;
  {
    // Under the index lock, so that commit() cannot rename another blob into
    // place between reading the row and opening the file.
    std::shared_lock lock(m_index_mutex);
    const IndexRecord* record = m_index->find(*digest);
    if (record == nullptr) {
      return std::nullopt;
    }
    artifact = artifact_of(*m_index, *record);
    // On an I/O thread: a FIFO planted as the blob must not block it (util::open_regular).
    auto opened = util::open_regular(blob_path(key), O_RDONLY);
    if (opened) {
      const auto size = static_cast<std::uint64_t>(opened->info.st_size);
      if (size == artifact.size) {
        if (presence != nullptr) {
          *presence = Presence::hit;
        }
        return OpenedBlob(std::move(artifact), opened->fd);
      }
      damage = "blob has " + std::to_string(size) + " bytes, expected " + std::to_string(artifact.size);
      ::close(opened->fd);
    } else if (opened.error().reason == util::FileRefusal::failed) {
      return std::nullopt; // out of descriptors, say: nothing is known to be wrong with the blob
    } else {
      damage = opened.error().reason == util::FileRefusal::missing ? std::string("blob missing")
                                                                   : "blob is " + opened.error().message;
    }
  }
  drop_damaged(key, artifact.sha256, damage);
  if (presence != nullptr) {
    *presence = Presence::dropped;
  }
  return std::nullopt;
}

// The read path found a blob missing or of the wrong size: forget the artifact in memory now (so it is a
// miss, and can be filled again), and its row and damaged file with the next batch. A commit of the key
// first applies the drop, so the drop can never remove a newer artifact.
void BlobStore::drop_damaged(const std::string& key, const std::string& sha256, std::string details) {
  const auto digest = detail::digest_from_hex(key);
  const auto sha = detail::digest_from_hex(sha256);
  if (!digest || !sha) {
    return;
  }
  std::uint64_t size = 0;
  {
    std::unique_lock lock(m_index_mutex);
    const IndexRecord* record = m_index->find(*digest);
    if (record == nullptr || record->sha256 != *sha) {
      return; // already dropped, or replaced since it was looked up
    }
    size = record->size();
    m_index->erase(*digest);
  }
  m_stored_bytes -= std::min(size, m_stored_bytes.load());
  ++m_damaged_found;
  {
    std::lock_guard lock(m_counter_mutex);
    m_queue.drops[key] = Drop{sha256, std::move(details)};
    m_flush_now = true;
  }
  m_flusher_cv.notify_all();
}

void BlobStore::move_to_quarantine(const std::string& key, std::string_view why) {
  const fs::path blob = blob_path(key);
  std::error_code ec;
  struct stat dir {};
  // quarantine/ replaced by a link would carry the file out of the data dir: then it is only removed.
  const bool kept_aside = ::lstat(quarantine_dir().c_str(), &dir) == 0 && S_ISDIR(dir.st_mode);
  const std::string base = key + "." + std::to_string(now()) + "." + std::string(why);
  int error = EEXIST;
  // RENAME_NOREPLACE: a name already in quarantine/ (planted, or quarantined the same second) is never
  // replaced, so what is kept aside stays kept, and a directory there does not make the move fail.
  for (int attempt = 0; kept_aside && error == EEXIST && attempt < 100; ++attempt) {
    const fs::path target = quarantine_dir() / (attempt == 0 ? base : base + "." + std::to_string(attempt));
    error = ::renameat2(AT_FDCWD, blob.c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) == 0 ? 0 : errno;
    if (error == EINVAL) { // a file system without RENAME_NOREPLACE
      error = ::rename(blob.c_str(), target.c_str()) == 0 ? 0 : errno;
    }
  }
  if (error != 0 && error != ENOENT) {
    fs::remove(blob, ec); // a blob that cannot be kept aside is still not served again
  }
}

void BlobStore::record_hit(const std::string& key) {
  std::lock_guard lock(m_counter_mutex);
  auto it = m_queue.hits.find(key);
  if (it == m_queue.hits.end()) {
    if (m_queue.hits.size() >= k_max_queued_keys) {
      ++m_lost.hits;
      return;
    }
    it = m_queue.hits.emplace(key, 0).first;
  }
  ++it->second;
}

bool BlobStore::record_miss(const std::string& key, std::string_view url) {
  const UnixTime t = now();
  std::lock_guard lock(m_counter_mutex);
  auto it = m_queue.misses.find(key);
  if (it == m_queue.misses.end()) {
    if (m_queue.misses.size() >= k_max_queued_keys) {
      ++m_lost.misses;
      return false;
    }
    it = m_queue.misses.emplace(key, PendingMiss{}).first;
  }
  auto& miss = it->second;
  miss.url = url::strip_userinfo(url);
  if (miss.count == 0) {
    miss.first = t;
  }
  miss.last = t;
  ++miss.count;
  return m_known_misses.insert(key).second;
}

void BlobStore::flusher_loop() {
  std::unique_lock lock(m_counter_mutex);
  while (!m_stopping) {
    m_flusher_cv.wait_for(lock, m_options.flush_interval, [this] { return m_stopping || m_flush_now; });
    if (m_stopping) {
      break;
    }
    m_flush_now = false;
    if (m_queue.empty() && !m_lost.any()) {
      continue;
    }
    lock.unlock();
    (void)flush(); // on failure everything stays queued; the next round retries
    lock.lock();
  }
}

Expected<Ok, std::string> BlobStore::flush() {
  std::lock_guard db_lock(m_db_mutex);
  return flush_locked();
}

std::optional<WriteFailure> BlobStore::write_failure() const {
  std::lock_guard lock(m_counter_mutex);
  if (!m_write_failure) {
    return std::nullopt;
  }
  WriteFailure failure = *m_write_failure;
  failure.disk_full = failure.disk_full || disk_full();
  failure.queued = m_queue.size();
  return failure;
}

bool BlobStore::disk_full(bool fresh) const {
  const auto t = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now().time_since_epoch())
                     .count();
  std::int64_t checked = m_disk_checked_at.load();
  if ((fresh || t - checked >= 1000) && m_disk_checked_at.compare_exchange_strong(checked, t)) {
    struct statvfs fs_info{};
    if (::statvfs(m_options.data_dir.c_str(), &fs_info) == 0) {
      m_disk_full = static_cast<std::uint64_t>(fs_info.f_bavail) * fs_info.f_frsize < k_min_free_bytes;
    }
  }
  return m_disk_full.load();
}

// A write failed for want of space: the disk counts as full until statvfs, a second from now, says otherwise.
void BlobStore::note_disk_full() {
  m_writes_full = true;
  m_disk_full = true;
  m_disk_checked_at = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
}

void BlobStore::note_write_failure(const std::string& message) {
  std::lock_guard lock(m_counter_mutex);
  if (!m_write_failure) {
    m_write_failure = WriteFailure{message, now(), false, 0};
  } else {
    m_write_failure->message = message;
  }
  m_write_failure->disk_full = m_writes_full.load();
}

Expected<Ok, std::string> BlobStore::flush_locked() {
  Queue queue;
  Lost lost;
  {
    std::lock_guard lock(m_counter_mutex);
    std::swap(queue, m_queue);
    if (!m_write_failure) {
      std::swap(lost, m_lost); // what could not be kept is told once writes work again
    }
  }
  if (queue.empty() && !lost.any()) {
    return Ok{};
  }
  // One transaction: one wait for a busy database, and all or nothing.
  std::vector<std::pair<std::string, bool>> files; // (key, quarantine) to deal with once committed
  std::vector<std::string> pruned;                  // miss rows the cap removed
  bool full = false;
  std::string error;
  try {
    SQLite::Transaction tx(*m_db);
    write_queue(queue, files, pruned);
    if (lost.any()) {
      insert_event(Event{0, now(), "writes_resumed", "system", "",
                         "while cache.db could not be written, memory kept what it could; not recorded: " +
                             std::to_string(lost.hits) + " hits, " + std::to_string(lost.misses) +
                             " misses of new URLs, " + std::to_string(lost.events) + " events, " +
                             std::to_string(lost.finished_jobs) + " ended downloads"});
    }
    tx.commit();
  } catch (const std::exception& e) {
    full = is_full_error(e);
    error = std::string("cannot write counters, events and pending fills to cache.db: ") + e.what();
    files.clear();
    pruned.clear();
  }
  if (error.empty()) {
    m_writes_full = false;
    std::vector<std::string> done;
    for (const auto& [key, to_quarantine] : files) {
      if (to_quarantine) {
        move_to_quarantine(key, "damaged");
      }
      done.push_back(key);
    }
    std::lock_guard lock(m_counter_mutex);
    m_write_failure.reset();
    for (const auto& key : pruned) {
      if (!m_queue.misses.contains(key)) { // missed again meanwhile: still known
        m_known_misses.erase(key);
      }
    }
    for (auto& key : done) {
      m_queue.removals_done.push_back(std::move(key));
    }
    return Ok{};
  }
  if (full) {
    note_disk_full();
  } else {
    m_writes_full = false;
  }
  note_write_failure(error);
  if (lost.any()) {
    std::lock_guard lock(m_counter_mutex); // told next time, with whatever else gets lost meanwhile
    m_lost.hits += lost.hits;
    m_lost.misses += lost.misses;
    m_lost.events += lost.events;
    m_lost.finished_jobs += lost.finished_jobs;
  }
  requeue(std::move(queue));
  return unexpected(error);
}

void BlobStore::write_queue(Queue& queue, std::vector<std::pair<std::string, bool>>& files,
                            std::vector<std::string>& misses_pruned) {
  Statements& st = *m_statements;
  // Damaged artifacts the read path dropped: the row goes (only if it is still the damaged one) and
  // the journal names its file, quarantined once this commits.
  for (const auto& [key, drop] : queue.drops) {
    Use del(st.delete_artifact_if);
    del->bind(1, key);
    del->bind(2, drop.sha256);
    if (del->exec() > 0) {
      Use journal(st.journal_removal);
      journal->bind(1, key);
      journal->bind(2, drop.quarantine ? 1 : 0);
      journal->exec();
      files.emplace_back(key, drop.quarantine);
      if (drop.quarantine) {
        insert_event(Event{0, now(), "blob_dropped", "system", "", key + ": " + drop.details});
      }
    }
  }
  for (const auto& op : queue.job_ops) {
    if (op.kind == JobOp::Kind::stopped) {
      Use stopped(st.job_stopped);
      stopped->bind(1, op.job.id);
      stopped->exec();
    } else if (op.kind == JobOp::Kind::insert) {
      Use insert(st.insert_job);
      insert->bind(1, op.job.id);
      insert->bind(2, op.job.key);
      insert->bind(3, op.job.url);
      insert->bind(4, encode_headers(op.job.headers));
      insert->bind(5, op.job.created_at);
      insert->exec();
    } else {
      Use drop(st.delete_job);
      drop->bind(1, op.job.id);
      drop->exec();
    }
  }
  for (const auto& e : queue.events) {
    insert_event(e);
  }
  {
    Use prune(st.prune_events);
    prune->bind(1, k_max_events);
    prune->exec();
  }
  for (const auto& [key, count] : queue.hits) {
    Use add(st.add_hits);
    add->bind(1, to_db(count));
    add->bind(2, key);
    add->exec();
  }
  // A miss counted just before its fill completed lands on the artifact.
  for (const auto& [key, miss] : queue.misses) {
    int changed = 0;
    {
      Use add(st.add_artifact_misses);
      add->bind(1, to_db(miss.count));
      add->bind(2, key);
      changed = add->exec();
    }
    if (changed == 0) {
      Use upsert(st.upsert_miss);
      upsert->bind(1, key);
      upsert->bind(2, miss.url);
      upsert->bind(3, to_db(miss.count));
      upsert->bind(4, miss.first);
      upsert->bind(5, miss.last);
      upsert->exec();
    }
  }
  const UnixTime t = now();
  if (!queue.misses.empty()) {
    std::int64_t rows = 0;
    {
      Use count(st.miss_rows);
      rows = count->executeStep() ? count->getColumn(0).getInt64() : 0;
    }
    const std::int64_t over = rows - to_db(m_options.max_miss_rows);
    if (m_options.max_miss_rows > 0 && over > 0) {
      Use prune(st.prune_misses);
      prune->bind(1, t);
      prune->bind(2, over);
      while (prune->executeStep()) {
        misses_pruned.push_back(prune->getColumn(0).getString());
      }
    }
  }
  for (const auto& [key, op] : queue.failures) {
    if (op.clear) {
      Use clear(st.clear_failure);
      clear->bind(1, key);
      clear->exec();
      continue;
    }
    Use upsert(st.upsert_failure);
    upsert->bind(1, key);
    upsert->bind(2, op.url);
    upsert->bind(3, t);
    upsert->bind(4, op.backoff.reason);
    upsert->bind(5, static_cast<std::int64_t>(op.backoff.failures));
    upsert->bind(6, op.backoff.retry_after);
    upsert->bind(7, op.backoff.attempt);
    upsert->exec();
  }
  for (const auto& j : queue.finished_jobs) {
    Use insert(st.insert_finished);
    insert->bind(1, j.id);
    insert->bind(2, j.key);
    insert->bind(3, j.url);
    insert->bind(4, std::string(to_string(j.status)));
    insert->bind(5, to_db(j.bytes_done));
    insert->bind(6, to_db(j.bytes_total));
    insert->bind(7, j.error);
    insert->bind(8, j.error_reason);
    insert->bind(9, j.created_at);
    insert->bind(10, j.started_at);
    insert->bind(11, j.finished_at);
    insert->exec();
  }
  if (!queue.finished_jobs.empty()) {
    Use prune(st.prune_finished);
    prune->bind(1, t - std::chrono::duration_cast<std::chrono::seconds>(k_finished_job_age).count());
    prune->bind(2, to_db(k_max_finished_jobs));
    prune->exec();
  }
  for (const auto& key : queue.removals_done) {
    Use forget(st.forget_removal);
    forget->bind(1, key);
    forget->exec();
  }
  if (queue.scrub) {
    Use save(st.save_scrub);
    save->bind(1, queue.scrub->cursor);
    save->bind(2, queue.scrub->pass_started_at);
    save->bind(3, queue.scrub->last_pass_finished_at);
    save->bind(4, to_db(queue.scrub->passes));
    save->bind(5, queue.scrub->running ? 1 : 0);
    save->exec();
  }
}

void BlobStore::insert_event(const Event& e) {
  Use insert(m_statements->insert_event);
  insert->bind(1, e.time);
  insert->bind(2, e.kind);
  insert->bind(3, e.actor);
  insert->bind(4, e.address);
  insert->bind(5, e.details);
  insert->exec();
}

// Nothing was written: everything goes back to the front of its queue, in order, within the bounds.
void BlobStore::requeue(Queue&& failed) {
  std::lock_guard lock(m_counter_mutex);
  Queue& q = m_queue;
  std::vector<JobOp> job_ops = std::move(failed.job_ops);
  job_ops.insert(job_ops.end(), q.job_ops.begin(), q.job_ops.end());
  q.job_ops = std::move(job_ops);

  std::vector<Event> events = std::move(failed.events);
  events.insert(events.end(), q.events.begin(), q.events.end());
  if (events.size() > k_max_queued_events) {
    m_lost.events += events.size() - k_max_queued_events;
    events.resize(k_max_queued_events); // the oldest are kept: they are the ones nobody has seen
  }
  q.events = std::move(events);

  for (const auto& [key, count] : failed.hits) {
    auto it = q.hits.find(key);
    if (it == q.hits.end() && q.hits.size() >= k_max_queued_keys) {
      m_lost.hits += count;
      continue;
    }
    q.hits[key] += count;
  }
  for (auto& [key, miss] : failed.misses) {
    auto it = q.misses.find(key);
    if (it == q.misses.end() && q.misses.size() >= k_max_queued_keys) {
      m_lost.misses += miss.count;
      continue;
    }
    auto& queued = q.misses[key];
    queued.count += miss.count;
    queued.first = queued.first == 0 ? miss.first : std::min(queued.first, miss.first);
    queued.last = std::max(queued.last, miss.last);
    if (queued.url.empty()) {
      queued.url = std::move(miss.url);
    }
  }
  for (auto& [key, op] : failed.failures) {
    q.failures.try_emplace(key, std::move(op)); // a newer state queued since wins
  }
  std::vector<Job> finished = std::move(failed.finished_jobs);
  finished.insert(finished.end(), q.finished_jobs.begin(), q.finished_jobs.end());
  if (finished.size() > k_max_queued_finished) {
    m_lost.finished_jobs += finished.size() - k_max_queued_finished;
    finished.erase(finished.begin(), finished.begin() + static_cast<std::ptrdiff_t>(finished.size() - k_max_queued_finished));
  }
  q.finished_jobs = std::move(finished);
  q.removals_done.insert(q.removals_done.end(), failed.removals_done.begin(), failed.removals_done.end());
  for (auto& [key, drop] : failed.drops) {
    q.drops.try_emplace(key, std::move(drop));
  }
  if (!q.scrub) {
    q.scrub = std::move(failed.scrub);
  }
}

Backoff BlobStore::record_fill_failure(const std::string& key, std::string_view url, std::string reason,
                                       bool back_off, std::string attempt) {
  const UnixTime t = now();
  std::lock_guard lock(m_counter_mutex);
  Backoff& entry = m_backoffs[key];
  entry.reason = std::move(reason);
  entry.attempt = std::move(attempt);
  if (back_off) {
    ++entry.failures;
    entry.retry_after = t + backoff_delay(entry.failures).count();
  } else {
    entry.retry_after = 0;
  }
  const Backoff result = entry;
  if (entry.failures == 0) {
    m_backoffs.erase(key); // only a reason: nothing to remember in memory
  }
  m_queue.failures[key] = FailureOp{url::strip_userinfo(url), result, false};
  m_known_misses.insert(key);
  return result;
}

std::optional<Backoff> BlobStore::backoff(const std::string& key, UnixTime at) const {
  std::lock_guard lock(m_counter_mutex);
  const auto it = m_backoffs.find(key);
  if (it == m_backoffs.end() || it->second.retry_after <= at) {
    return std::nullopt;
  }
  return it->second;
}

bool BlobStore::clear_backoff(const std::string& key) {
  const UnixTime t = now();
  std::lock_guard lock(m_counter_mutex);
  const auto it = m_backoffs.find(key);
  if (it == m_backoffs.end()) {
    return false;
  }
  const bool active = it->second.retry_after > t;
  m_backoffs.erase(it);
  m_queue.failures[key] = FailureOp{{}, {}, true};
  return active;
}

bool BlobStore::is_full() const noexcept {
  const bool capped =
      m_options.max_bytes != 0 && m_stored_bytes.load() + m_reserved_bytes.load() >= m_options.max_bytes;
  return capped || disk_full();
}

std::string BlobStore::full_reason() const {
  if (m_options.max_bytes != 0 && m_stored_bytes.load() + m_reserved_bytes.load() >= m_options.max_bytes) {
    return "the cache is full (" + util::format_size(m_options.max_bytes) + "); delete artifacts to make room";
  }
  if (disk_full()) {
    return "the data disk is full (" + m_options.data_dir.string() + "); free space or delete artifacts";
  }
  return {};
}

bool BlobStore::has_room(std::uint64_t bytes) const noexcept {
  if (m_options.max_bytes == 0) {
    return true;
  }
  const std::uint64_t used = m_stored_bytes.load() + m_reserved_bytes.load();
  return used < m_options.max_bytes && bytes <= m_options.max_bytes - used;
}

bool BlobStore::reserve(std::uint64_t bytes) noexcept {
  if (m_options.max_bytes == 0) {
    m_reserved_bytes += bytes;
    return true;
  }
  std::uint64_t reserved = m_reserved_bytes.load();
  for (;;) {
    const std::uint64_t used = m_stored_bytes.load() + reserved;
    if (used > m_options.max_bytes || bytes > m_options.max_bytes - used) {
      return false;
    }
    if (m_reserved_bytes.compare_exchange_weak(reserved, reserved + bytes)) {
      return true;
    }
  }
}

void BlobStore::release(std::uint64_t bytes) noexcept {
  m_reserved_bytes -= std::min(bytes, m_reserved_bytes.load());
}

Expected<Artifact, std::string> BlobStore::commit(const NewArtifact& artifact) {
  const fs::path part = part_path(artifact.key);
  const fs::path blob = blob_path(artifact.key);
  const fs::path tmp = part.parent_path();
  const fs::path blobs = blob.parent_path();
  std::error_code ec;
  {
    // What becomes the blob is checked like a blob: a regular file of this store, with its size.
    auto opened = util::open_regular(part, O_RDONLY);
    if (!opened) {
      return unexpected("cannot commit " + artifact.key + ": the part file is " + opened.error().message);
    }
    const auto actual = static_cast<std::uint64_t>(opened->info.st_size);
    const bool synced = actual == artifact.size && ::fsync(opened->fd) == 0;
    const int error = errno;
    ::close(opened->fd);
    if (actual != artifact.size) {
      return unexpected("cannot commit " + artifact.key + ": part file has " + std::to_string(actual) +
                        " bytes, expected " + std::to_string(artifact.size));
    }
    if (!is_key_id(artifact.key) || !is_key_id(artifact.sha256)) {
      return unexpected("cannot commit " + artifact.key + ": not a key id and a SHA-256: " + artifact.sha256);
    }
    if (!synced) {
      return unexpected("cannot fsync " + part.string() + ": " + std::strerror(error));
    }
  }

  // No flush first: misses still queued land on the artifact row when the flusher writes them.
  std::lock_guard db_lock(m_db_mutex);
  bool drop_pending = false;
  {
    std::lock_guard lock(m_counter_mutex);
    drop_pending = m_queue.drops.count(artifact.key) != 0;
  }
  if (drop_pending) {
    // A damaged copy of this key is still to be forgotten: first, so that its drop cannot remove this one.
    if (auto flushed = flush_locked(); !flushed) {
      return unexpected("cannot commit " + artifact.key + ": " + flushed.error());
    }
  }
  const std::optional<Artifact> previous = find(artifact.key);
  // Staged in tmp/: the earlier blob keeps serving until the row says otherwise; a crash leaves the
  // staged file where open() looks (tmp/, never the million names of blobs/).
  const fs::path staged = tmp / staged_name(artifact.key, artifact.sha256);
  fs::rename(part, staged, ec);
  if (ec) {
    return unexpected("cannot stage " + part.string() + ": " + ec.message());
  }
  if (!fsync_dir(tmp)) {
    const std::string error = std::strerror(errno);
    fs::rename(staged, part, ec); // back where a resumed fill finds it
    return unexpected("cannot fsync " + tmp.string() + ": " + error);
  }

  Artifact stored;
  try {
    SQLite::Transaction tx(*m_db);
    {
      Use upsert(m_statements->upsert_artifact);
      upsert->bind(1, artifact.key);
      upsert->bind(2, artifact.url);
      upsert->bind(3, url::strip_userinfo(artifact.raw_url));
      upsert->bind(4, to_db(artifact.size));
      upsert->bind(5, artifact.sha256);
      upsert->bind(6, artifact.content_type);
      upsert->bind(7, now());
      upsert->bind(8, artifact.etag);
      upsert->bind(9, artifact.last_modified);
      upsert->bind(10, artifact.cache_control);
      upsert->bind(11, artifact.expires);
      upsert->bind(12, artifact.content_encoding);
      upsert->bind(13, artifact.content_disposition);
      upsert->bind(14, artifact.fresh_until);
      upsert->exec();
    }
    {
      Use forget_miss(m_statements->delete_miss);
      forget_miss->bind(1, artifact.key);
      forget_miss->exec();
    }
    {
      Use read(m_statements->read_artifact);
      read->bind(1, artifact.key);
      read->executeStep();
      stored = artifact_from_row(*read);
    }
    tx.commit();
  } catch (const std::exception& e) {
    if (is_full_error(e)) {
      note_disk_full();
    }
    // Nothing changed: any earlier artifact of the key still has its blob and its row.
    fs::remove(staged, ec);
    return unexpected("cannot record " + artifact.key + " in cache.db: " + e.what());
  }

  {
    // The rename and the index switch happen together for open_blob().
    std::unique_lock lock(m_index_mutex);
    fs::rename(staged, blob, ec);
    if (ec) {
      // The row is written; open() finishes this rename. Until then the old entry stays consistent.
      return unexpected("cannot move " + staged.string() + " over " + blob.string() + ": " + ec.message());
    }
    m_index->upsert(record_of(*m_index, stored));
  }
  (void)fsync_dir(blobs); // a lost rename is redone by open(): the row names the staged SHA-256
  m_stored_bytes += stored.size;
  if (previous) {
    m_stored_bytes -= std::min(previous->size, m_stored_bytes.load());
  }
  {
    std::lock_guard lock(m_counter_mutex);
    m_known_misses.erase(artifact.key);
    m_backoffs.erase(artifact.key);
    m_queue.failures.erase(artifact.key);
  }
  return stored;
}

Expected<Artifact, std::string> BlobStore::refresh(const std::string& key, const Freshness& freshness) {
  std::lock_guard db_lock(m_db_mutex);
  auto updated = guarded("cannot record a revalidation in cache.db", [&]() -> std::optional<Artifact> {
    Use update(m_statements->refresh);
    update->bind(1, key);
    update->bind(2, freshness.fresh_until);
    update->bind(3, freshness.etag);
    update->bind(4, freshness.last_modified);
    update->bind(5, freshness.cache_control);
    update->bind(6, freshness.expires);
    if (update->exec() == 0) {
      return std::nullopt;
    }
    const auto digest = detail::digest_from_hex(key);
    std::unique_lock lock(m_index_mutex);
    const IndexRecord* record = digest ? m_index->find(*digest) : nullptr;
    if (record == nullptr) {
      return std::nullopt;
    }
    Artifact a = artifact_of(*m_index, *record);
    a.fresh_until = freshness.fresh_until;
    a.etag = freshness.etag;
    a.last_modified = freshness.last_modified;
    a.cache_control = freshness.cache_control;
    a.expires = freshness.expires;
    m_index->upsert(record_of(*m_index, a));
    return a;
  });
  if (!updated) {
    return unexpected(updated.error());
  }
  if (!*updated) {
    return unexpected("cannot refresh " + key + ": not cached");
  }
  return std::move(**updated);
}

Expected<bool, std::string> BlobStore::remove(const std::string& key) {
  std::lock_guard db_lock(m_db_mutex);
  (void)flush_locked(); // on failure the queue is kept for the next round
  const auto digest = detail::digest_from_hex(key);
  if (!digest) {
    return false;
  }
  std::string full_error;
  try {
    SQLite::Transaction tx(*m_db);
    {
      Use drop(m_statements->delete_artifact);
      drop->bind(1, key);
      if (drop->exec() == 0) {
        return false;
      }
    }
    {
      Use journal(m_statements->journal_removal);
      journal->bind(1, key);
      journal->bind(2, 0);
      journal->exec();
    }
    tx.commit();
  } catch (const std::exception& e) {
    if (!is_full_error(e)) {
      return unexpected(std::string("cannot delete from cache.db: ") + e.what());
    }
    note_disk_full();
    full_error = e.what();
  }
  std::optional<std::uint64_t> size;
  std::string sha256;
  {
    std::unique_lock lock(m_index_mutex);
    if (const IndexRecord* record = m_index->find(*digest)) {
      size = record->size();
      sha256 = detail::digest_hex(record->sha256);
      m_index->erase(*digest);
    }
  }
  if (size) {
    m_stored_bytes -= std::min(*size, m_stored_bytes.load());
  }
  if (!full_error.empty() && !size) {
    return unexpected("cannot delete from cache.db: " + full_error);
  }
  // Readers that already opened the file keep streaming it; unlink is safe.
  std::error_code ec;
  fs::remove(blob_path(key), ec);
  std::lock_guard lock(m_counter_mutex);
  if (full_error.empty()) {
    m_queue.removals_done.push_back(key);
  } else {
    // A full disk: the file went first, freeing its bytes; the row follows when it can be written.
    m_queue.drops[key] = Drop{sha256, "deleted while the disk was full", false};
  }
  return true;
}

Expected<bool, std::string> BlobStore::quarantine(const std::string& key, const std::string& expected_sha256, int fd,
                                                  std::string_view details) {
  std::lock_guard db_lock(m_db_mutex);
  (void)flush_locked();
  const auto digest = detail::digest_from_hex(key);
  const auto sha = detail::digest_from_hex(expected_sha256);
  if (!digest || !sha) {
    return false;
  }
  struct stat checked{};
  struct stat current{};
  if (::fstat(fd, &checked) != 0 || ::lstat(blob_path(key).c_str(), &current) != 0 ||
      checked.st_ino != current.st_ino || checked.st_dev != current.st_dev) {
    return false; // replaced (or removed) since it was read
  }
  {
    std::shared_lock lock(m_index_mutex);
    const IndexRecord* record = m_index->find(*digest);
    if (record == nullptr || record->sha256 != *sha) {
      return false;
    }
  }
  auto written = guarded("cannot quarantine " + key, [&]() -> bool {
    SQLite::Transaction tx(*m_db);
    {
      Use drop(m_statements->delete_artifact_if);
      drop->bind(1, key);
      drop->bind(2, expected_sha256);
      if (drop->exec() == 0) {
        return false;
      }
    }
    {
      Use journal(m_statements->journal_removal);
      journal->bind(1, key);
      journal->bind(2, 1);
      journal->exec();
    }
    insert_event(Event{0, now(), "scrub_mismatch", "system", "", std::string(details)});
    tx.commit();
    return true;
  });
  if (!written || !*written) {
    return written;
  }
  std::uint64_t size = 0;
  {
    std::unique_lock lock(m_index_mutex);
    if (const IndexRecord* record = m_index->find(*digest)) {
      size = record->size();
      m_index->erase(*digest);
    }
  }
  m_stored_bytes -= std::min(size, m_stored_bytes.load());
  move_to_quarantine(key, "mismatch");
  std::lock_guard lock(m_counter_mutex);
  m_queue.removals_done.push_back(key);
  return true;
}

std::optional<std::string> BlobStore::next_key(const std::string& after) const {
  std::optional<Digest> from;
  if (!after.empty()) {
    from = detail::digest_from_hex(after);
    if (!from) {
      return std::nullopt;
    }
  }
  std::shared_lock lock(m_index_mutex);
  const auto next = m_index->next_key(from);
  return next ? std::optional<std::string>(detail::digest_hex(*next)) : std::nullopt;
}

std::uint64_t BlobStore::sweep_orphans() {
  std::uint64_t removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(m_options.data_dir / "blobs", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const auto digest = is_key_id(name) ? detail::digest_from_hex(name) : std::nullopt;
    if (!digest) {
      continue;
    }
    {
      std::lock_guard lock(m_counter_mutex);
      if (m_queue.drops.count(name) != 0) {
        continue; // a damaged blob on its way to quarantine/
      }
    }
    // Under the index lock: commit() renames a new blob into place and indexes it under the same lock,
    // so a blob without an entry here is nobody's.
    std::shared_lock lock(m_index_mutex);
    std::error_code remove_ec;
    if (m_index->find(*digest) == nullptr && fs::remove(it->path(), remove_ec)) {
      ++removed;
    }
  }
  return removed;
}

void BlobStore::save_scrub_state(const ScrubState& state) {
  std::lock_guard lock(m_counter_mutex);
  m_queue.scrub = state;
}

template <class F> auto BlobStore::reading(std::string_view what, F&& body) {
  (void)flush(); // exact listings; when writes fail the queue is kept and reads still work
  std::lock_guard lock(m_read_mutex);
  return guarded(what, std::forward<F>(body));
}

Expected<ScrubState, std::string> BlobStore::scrub_state() {
  return reading("cannot read the scrub's state", [&]() -> ScrubState {
    ScrubState state;
    SQLite::Statement row(*m_read_db,
                          "SELECT cursor, pass_started_at, last_pass_finished_at, passes, running FROM scrub_state "
                          "WHERE id = 1");
    if (row.executeStep()) {
      state.cursor = row.getColumn(0).getString();
      state.pass_started_at = row.getColumn(1).getInt64();
      state.last_pass_finished_at = row.getColumn(2).getInt64();
      state.passes = from_db(row.getColumn(3).getInt64());
      state.running = row.getColumn(4).getInt() != 0;
    }
    return state;
  });
}

Expected<std::optional<Artifact>, std::string> BlobStore::describe(const std::string& key) {
  return reading("cannot read an artifact", [&]() -> std::optional<Artifact> {
    SQLite::Statement row(*m_read_db, std::string("SELECT ") + k_artifact_columns + " FROM artifacts WHERE key = ?");
    row.bind(1, key);
    if (!row.executeStep()) {
      return std::nullopt;
    }
    return artifact_from_row(row);
  });
}

Expected<bool, std::string> BlobStore::dismiss_miss(const std::string& key) {
  std::lock_guard db_lock(m_db_mutex);
  (void)flush_locked(); // on failure the queue is kept for the next round
  return guarded("cannot dismiss from cache.db", [&]() -> bool {
    Use drop(m_statements->delete_miss);
    drop->bind(1, key);
    const bool removed = drop->exec() > 0;
    std::lock_guard lock(m_counter_mutex);
    m_known_misses.erase(key);
    m_backoffs.erase(key);
    m_queue.failures.erase(key);
    return removed;
  });
}

namespace {

// A statement text and the values of the named parameters it uses.
struct Sql {
  std::string text;
  std::vector<std::pair<std::string, std::int64_t>> numbers;
  std::vector<std::pair<std::string, std::string>> strings;
  Sql& operator+=(std::string_view part) {
    text += part;
    return *this;
  }
  void bind(const char* name, std::int64_t value) { numbers.emplace_back(name, value); }
  void bind(const char* name, std::string value) { strings.emplace_back(name, std::move(value)); }
};

using StatementCache = std::unordered_map<std::string, std::unique_ptr<SQLite::Statement>>;

// Runs `sql` (prepared once per distinct text) and calls `row` for each result row.
template <class F> void run(SQLite::Database& db, StatementCache& cache, const Sql& sql, F&& row) {
  auto& slot = cache[sql.text];
  if (!slot) {
    slot = std::make_unique<SQLite::Statement>(db, sql.text);
  }
  Use statement(*slot);
  for (const auto& [name, value] : sql.numbers) {
    statement->bind(name, value);
  }
  for (const auto& [name, value] : sql.strings) {
    statement->bind(name, value);
  }
  while (statement->executeStep()) {
    row(*statement);
  }
}

std::int64_t count_of(SQLite::Database& db, StatementCache& cache, const Sql& sql) {
  std::int64_t n = 0;
  run(db, cache, sql, [&](SQLite::Statement& row) { n = row.getColumn(0).getInt64(); });
  return n;
}

// One page of a listing, newest first, by keyset (see ListQuery). Filters of 3 characters or more that
// match at most k_count_cap rows are answered from the trigram index; broader ones by walking the
// listing's order with LIKE until the page is full (frequent matches are found quickly); 1–2 characters
// scan at most k_short_filter_scan rows a page.
template <class T, class Convert>
Page<T> page_of(SQLite::Database& db, StatementCache& cache, const ListingSpec& spec, const ListQuery& q,
                std::uint64_t unfiltered_total, Convert convert) {
  const bool with_order = *spec.order != '\0';
  const std::string order = with_order ? spec.order : "id";
  const bool backward = !q.before.empty();
  const auto cursor = parse_cursor(backward ? q.before : q.after, with_order);
  const bool from_cursor = cursor.has_value();
  const std::string direction = backward ? " ASC" : " DESC";
  const std::string keyset =
      !from_cursor ? ""
                   : (with_order ? "(" + order + ", id) " + (backward ? ">" : "<") + " (:co, :ci)"
                                 : std::string("id ") + (backward ? ">" : "<") + " :ci");
  const std::string order_by = with_order ? " ORDER BY " + order + direction + ", id" + direction
                                          : " ORDER BY id" + direction;
  const std::string select = "SELECT " + std::string(spec.columns) + (with_order ? ", " + order : "") + ", id FROM ";
  const auto limit = static_cast<std::int64_t>(std::min<std::uint64_t>(q.limit, 1'000'000) + 1);
  const auto offset = static_cast<std::int64_t>(from_cursor ? 0 : std::min<std::uint64_t>(q.offset, INT64_MAX));

  const auto bind_common = [&](Sql& sql) {
    if (from_cursor) {
      if (with_order) {
        sql.bind(":co", cursor->order);
      }
      sql.bind(":ci", cursor->id);
    }
  };
  const std::string& filter = q.filter;
  const std::string sha_lo = util::lower(filter);
  const bool sha = spec.sha_prefix && is_hex_prefix(filter);
  const std::string like = std::string(spec.like) + (sha ? " OR (sha256 >= :lo AND sha256 < :hi)" : "");
  const auto bind_filter = [&](Sql& sql, bool with_like, bool with_phrase) {
    if (with_like) {
      sql.bind(":l", like_pattern(filter));
    }
    if (with_phrase) {
      sql.bind(":p", trigram_phrase(filter));
    }
    if (sha) {
      sql.bind(":lo", sha_lo);
      sql.bind(":hi", sha_lo + "g");
    }
  };
  const std::string fts = spec.fts == nullptr ? "" : spec.fts;
  const std::string candidates =
      fts.empty() ? ""
                  : "SELECT rowid FROM " + fts + " WHERE " + fts + " MATCH :p" +
                        (sha ? " UNION SELECT id FROM " + std::string(spec.table) + " WHERE sha256 >= :lo AND sha256 < :hi"
                             : "");

  Page<T> page;
  enum class Mode { all, indexed, walk, short_scan } mode = Mode::all;
  if (filter.empty()) {
    page.total = unfiltered_total;
  } else if (!fts.empty() && characters(filter) < 3) {
    mode = Mode::short_scan; // counted below, in the one scan of the window
    page.total_exact = unfiltered_total <= k_short_filter_scan;
  } else {
    Sql count;
    if (!fts.empty()) {
      count += "SELECT count(*) FROM (" + candidates + " LIMIT :cap)";
      bind_filter(count, false, true);
    } else {
      count += "SELECT count(*) FROM (SELECT 1 FROM " + std::string(spec.table) + " WHERE " + like + " LIMIT :cap)";
      bind_filter(count, true, false);
    }
    count.bind(":cap", static_cast<std::int64_t>(k_count_cap + 1));
    const auto matches = from_db(count_of(db, cache, count));
    page.total = std::min(matches, k_count_cap);
    page.total_exact = matches <= k_count_cap;
    mode = !fts.empty() && matches <= k_count_cap ? Mode::indexed : Mode::walk;
  }

  Sql rows;
  switch (mode) {
  case Mode::all:
    if (offset > 0) {
      // The offset is skipped on the order index alone, then the page's rows are read.
      rows += select + spec.table + " WHERE id IN (SELECT id FROM " + spec.table + " ORDER BY " +
              (with_order ? order + " DESC, id DESC" : "id DESC") + " LIMIT :n OFFSET :o)" + order_by;
      rows.bind(":o", offset);
    } else {
      rows += select + spec.table + (keyset.empty() ? "" : " WHERE " + keyset) + order_by + " LIMIT :n";
    }
    break;
  case Mode::indexed:
    // Few matches: read them by id and sort them (the unary + keeps SQLite from walking the order index).
    rows += select + spec.table + " WHERE id IN (" + candidates + ")" + (keyset.empty() ? "" : " AND " + keyset) +
            (with_order ? " ORDER BY +" + order + direction + ", id" + direction : order_by) +
            " LIMIT :n OFFSET :o";
    bind_filter(rows, false, true);
    rows.bind(":o", offset);
    break;
  case Mode::walk:
    rows += select + spec.table + " WHERE (" + like + ")" + (keyset.empty() ? "" : " AND " + keyset) + order_by +
            " LIMIT :n OFFSET :o";
    bind_filter(rows, true, false);
    rows.bind(":o", offset);
    break;
  case Mode::short_scan:
    // Every match in the window: the first limit + 1 make the page, all of them the count.
    rows += "SELECT * FROM (" + select + spec.table + (keyset.empty() ? "" : " WHERE " + keyset) + order_by +
            " LIMIT :w OFFSET :o) WHERE " + like;
    rows.bind(":w", static_cast<std::int64_t>(k_short_filter_scan));
    rows.bind(":o", offset);
    bind_filter(rows, true, false);
    break;
  }
  if (mode != Mode::short_scan) {
    rows.bind(":n", limit);
  }
  bind_common(rows);

  struct Keyed {
    T item;
    std::int64_t order = 0;
    std::int64_t id = 0;
  };
  std::vector<Keyed> got;
  const int columns = with_order ? 2 : 1;
  std::uint64_t matched = 0;
  run(db, cache, rows, [&](SQLite::Statement& row) {
    if (++matched > static_cast<std::uint64_t>(limit)) {
      return; // a short filter's scan: counted, not kept
    }
    const int n = row.getColumnCount();
    got.push_back(Keyed{convert(row), with_order ? row.getColumn(n - columns).getInt64() : 0,
                        row.getColumn(n - 1).getInt64()});
  });
  if (mode == Mode::short_scan) {
    page.total = matched; // the matches among the rows this page's window covered
  }
  const bool more = got.size() > static_cast<std::size_t>(limit - 1);
  if (more) {
    got.pop_back();
  }
  // A short filter's page can end before it is full because its scan window did: then the page after
  // continues from the window's last row.
  std::optional<Cursor> window_end;
  if (mode == Mode::short_scan && !more) {
    Sql last;
    last += "SELECT " + order + ", id FROM " + std::string(spec.table) + (keyset.empty() ? "" : " WHERE " + keyset) +
            order_by + " LIMIT 1 OFFSET :w";
    last.bind(":w", static_cast<std::int64_t>(k_short_filter_scan) + offset - 1);
    bind_common(last);
    run(db, cache, last, [&](SQLite::Statement& row) {
      window_end = Cursor{row.getColumn(0).getInt64(), row.getColumn(1).getInt64()};
    });
  }
  if (backward) {
    std::reverse(got.begin(), got.end());
  }
  const auto cursor_of = [&](const Keyed& k) { return format_cursor(k.order, k.id, with_order); };
  if (!got.empty()) {
    if (backward) {
      page.prev = more || window_end ? cursor_of(got.front()) : "";
      page.next = cursor_of(got.back());
    } else {
      page.next = more || window_end ? cursor_of(got.back()) : "";
      page.prev = from_cursor || offset > 0 ? cursor_of(got.front()) : "";
    }
  } else if (window_end) {
    (backward ? page.prev : page.next) = format_cursor(window_end->order, window_end->id, with_order);
  }
  page.items.reserve(got.size());
  for (auto& k : got) {
    page.items.push_back(std::move(k.item));
  }
  return page;
}

constexpr ListingSpec k_artifacts{"artifacts", k_artifact_columns, "fetched_at", "artifacts_fts",
                                  "url LIKE :l ESCAPE '\\'", true};
constexpr ListingSpec k_misses{"misses", k_miss_columns, "last_seen", "misses_fts", "url LIKE :l ESCAPE '\\'", false};
constexpr ListingSpec k_events{"events", "id, time, kind, actor, address, details", "", nullptr,
                               "kind LIKE :l ESCAPE '\\' OR actor LIKE :l ESCAPE '\\' OR details LIKE :l ESCAPE '\\'",
                               false};
constexpr ListingSpec k_finished{"finished_jobs", k_job_columns, "", nullptr, "url LIKE :l ESCAPE '\\'", false};

} // namespace

Expected<Page<Artifact>, std::string> BlobStore::list_artifacts(const ListQuery& query) {
  return reading("cannot list artifacts", [&] {
    const auto total = from_db(m_read_db->execAndGet("SELECT artifacts FROM totals").getInt64());
    return page_of<Artifact>(*m_read_db, m_statements->listing, k_artifacts, query, total, artifact_from_row);
  });
}

Expected<Page<Miss>, std::string> BlobStore::list_misses(const ListQuery& query) {
  return reading("cannot list misses", [&] {
    const auto total = from_db(m_read_db->execAndGet("SELECT miss_rows FROM totals").getInt64());
    return page_of<Miss>(*m_read_db, m_statements->listing, k_misses, query, total, miss_from_row);
  });
}

Expected<Totals, std::string> BlobStore::totals() {
  return reading("cannot read totals", [&]() -> Totals {
    Totals t;
    SQLite::Statement& row = [&]() -> SQLite::Statement& {
      auto& slot = m_statements->listing["totals"];
      if (!slot) {
        slot = std::make_unique<SQLite::Statement>(
            *m_read_db, "SELECT artifacts, stored_bytes, hits, artifact_misses, miss_rows, miss_count FROM totals");
      }
      return *slot;
    }();
    Use use(row);
    if (row.executeStep()) {
      t.artifacts = from_db(row.getColumn(0).getInt64());
      t.stored_bytes = from_db(row.getColumn(1).getInt64());
      t.hits = from_db(row.getColumn(2).getInt64());
      t.misses = from_db(row.getColumn(3).getInt64()) + from_db(row.getColumn(5).getInt64());
      t.pending_misses = from_db(row.getColumn(4).getInt64());
    }
    t.max_bytes = m_options.max_bytes;
    return t;
  });
}

void BlobStore::record_event(std::string kind, std::string actor, std::string address, std::string details) {
  std::lock_guard lock(m_counter_mutex);
  if (m_queue.events.size() >= k_max_queued_events) {
    ++m_lost.events;
    return;
  }
  if (details.size() > k_max_event_details) {
    details = util::shorten(details, k_max_event_details);
  }
  m_queue.events.push_back(
      Event{0, now(), std::move(kind), std::move(actor), std::move(address), std::move(details)});
}

Expected<Page<Event>, std::string> BlobStore::list_events(const ListQuery& query) {
  return reading("cannot list events", [&] {
    const auto total = from_db(m_read_db->execAndGet("SELECT count(*) FROM events").getInt64());
    return page_of<Event>(*m_read_db, m_statements->listing, k_events, query, total, [](SQLite::Statement& row) {
      return Event{row.getColumn(0).getInt64(), row.getColumn(1).getInt64(), row.getColumn(2).getString(),
                   row.getColumn(3).getString(), row.getColumn(4).getString(), row.getColumn(5).getString()};
    });
  });
}

// Pending-job rows are written by the flusher like the counters: enqueueing a
// fill happens inside a request (a miss) and must not wait for the disk. A
// crash within one flush interval forgets the newest fills; the next miss of
// their URLs queues them again.
std::int64_t BlobStore::add_pending_job(const std::string& key, std::string_view url,
                                        const std::vector<std::pair<std::string, std::string>>& headers) {
  PendingJob job{m_next_job_id++, key, url::strip_userinfo(url), headers, now()};
  const std::int64_t id = job.id;
  std::lock_guard lock(m_counter_mutex);
  m_queue.job_ops.push_back({JobOp::Kind::insert, std::move(job)});
  return id;
}

void BlobStore::remove_pending_job(std::int64_t id) {
  // Written even when its insert is still queued: the row keeps the id from being handed out again.
  std::lock_guard lock(m_counter_mutex);
  m_queue.job_ops.push_back({JobOp::Kind::remove, PendingJob{id, {}, {}, {}, 0}});
}

Expected<Ok, std::string> BlobStore::mark_job_running(std::int64_t id) {
  // Written now, not with the next batch: a crash in the first half-second of a fill (an origin's
  // flood of header lines taking the memory) is exactly what this must count.
  std::lock_guard db_lock(m_db_mutex);
  // The job's own row first; when that cannot be written the update finds no row (and counts nothing).
  (void)flush_locked();
  return guarded("cannot mark a fill running", [&] {
    Use running(m_statements->job_running);
    running->bind(1, id);
    running->exec();
    return Ok{};
  });
}

void BlobStore::mark_job_stopped(std::int64_t id) {
  // A clean stop: written before the store closes (its destructor flushes).
  std::lock_guard lock(m_counter_mutex);
  m_queue.job_ops.push_back({JobOp::Kind::stopped, PendingJob{id, {}, {}, {}, 0}});
}

void BlobStore::count_crashed_fills() {
  // The server that ran these fills stopped without clearing `running`: it died (kill -9, the OOM
  // killer, a power cut) while they ran.
  SQLite::Transaction tx(*m_db);
  const int crashed =
      m_db->exec("UPDATE pending_jobs SET crashes = crashes + 1, running = 0 WHERE running != 0");
  tx.commit();
  m_recovery.fills_running_at_crash = static_cast<std::uint64_t>(std::max(crashed, 0));
}

Expected<std::vector<PendingJob>, std::string> BlobStore::pending_jobs() {
  std::lock_guard db_lock(m_db_mutex);
  (void)flush_locked(); // on failure the queue is kept for the next round
  return guarded("cannot read pending fills", [&]() -> std::vector<PendingJob> {
    std::vector<PendingJob> jobs;
    SQLite::Statement all(*m_db,
                          "SELECT id, key, url, headers, created_at, crashes FROM pending_jobs ORDER BY id");
    while (all.executeStep()) {
      PendingJob job;
      job.id = all.getColumn(0).getInt64();
      job.key = all.getColumn(1).getString();
      job.url = all.getColumn(2).getString();
      job.headers = decode_headers(all.getColumn(3).getString());
      job.created_at = all.getColumn(4).getInt64();
      job.crashes =
          static_cast<std::uint32_t>(std::clamp<std::int64_t>(all.getColumn(5).getInt64(), 0, UINT32_MAX));
      jobs.push_back(std::move(job));
    }
    return jobs;
  });
}

void BlobStore::record_finished_job(const Job& job) {
  std::lock_guard lock(m_counter_mutex);
  if (m_queue.finished_jobs.size() >= k_max_queued_finished) {
    ++m_lost.finished_jobs;
    return;
  }
  m_queue.finished_jobs.push_back(job);
}

Expected<Page<Job>, std::string> BlobStore::list_finished_jobs(const ListQuery& query) {
  return reading("cannot list ended downloads", [&] {
    const auto total = from_db(m_read_db->execAndGet("SELECT count(*) FROM finished_jobs").getInt64());
    return page_of<Job>(*m_read_db, m_statements->listing, k_finished, query, total, job_from_row);
  });
}

Expected<std::optional<Job>, std::string> BlobStore::finished_job(std::int64_t id) {
  return reading("cannot read an ended download", [&]() -> std::optional<Job> {
    SQLite::Statement row(*m_read_db, std::string("SELECT ") + k_job_columns + " FROM finished_jobs WHERE id = ?");
    row.bind(1, id);
    if (!row.executeStep()) {
      return std::nullopt;
    }
    return job_from_row(row);
  });
}

Expected<std::uint64_t, std::string> BlobStore::clear_finished_jobs() {
  std::lock_guard db_lock(m_db_mutex);
  (void)flush_locked();
  return guarded("cannot clear ended downloads", [&]() -> std::uint64_t {
    const int cleared = m_db->exec("DELETE FROM finished_jobs");
    std::lock_guard lock(m_counter_mutex);
    const auto queued = m_queue.finished_jobs.size();
    m_queue.finished_jobs.clear();
    return static_cast<std::uint64_t>(std::max(cleared, 0)) + queued;
  });
}

} // namespace withcache::store
