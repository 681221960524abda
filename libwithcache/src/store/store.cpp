#include "withcache/store.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <SQLiteCpp/Transaction.h>

#include "http/http.hpp"
#include "withcache/url.hpp"
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
};

// The events log keeps this many of the newest rows.
constexpr std::int64_t k_max_events = 100'000;

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

std::int64_t to_db(std::uint64_t value) {
  return static_cast<std::int64_t>(value);
}
std::uint64_t from_db(std::int64_t value) {
  return value < 0 ? 0 : static_cast<std::uint64_t>(value);
}

bool is_key_id(std::string_view name) {
  return name.size() == 64 && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// `<key>.<sha256>.staged`: a blob whose row may or may not be written yet.
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

// fsync a file or directory by path; the rename-then-fsync(dir) dance is what
// makes a committed blob survive a power cut.
bool fsync_path(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
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

} // namespace

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

BlobStore::BlobStore(StoreOptions options) : m_options(std::move(options)) {
  std::error_code ec;
  for (const auto& dir : {m_options.data_dir, m_options.data_dir / "blobs", m_options.data_dir / "tmp"}) {
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
    m_db = std::make_unique<SQLite::Database>(db_path.string(), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE,
                                              k_busy_timeout_ms);
    // cache.db holds the headers of pending fills (possibly credentials).
    ::chmod(db_path.c_str(), S_IRUSR | S_IWUSR);
    m_db->exec("PRAGMA journal_mode=WAL");
    m_db->exec("PRAGMA synchronous=NORMAL");
    m_db->exec("PRAGMA foreign_keys=ON");
    migrate();
    recover();
    load_artifacts();
    // Job ids are never reused: continue after the highest ever handed out.
    std::int64_t highest = m_db->execAndGet("SELECT COALESCE(max(id), 0) FROM pending_jobs").getInt64();
    if (m_db->tableExists("sqlite_sequence")) {
      SQLite::Statement seq(*m_db, "SELECT seq FROM sqlite_sequence WHERE name = 'pending_jobs'");
      if (seq.executeStep()) {
        highest = std::max(highest, seq.getColumn(0).getInt64());
      }
    }
    m_next_job_id = highest + 1;
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

void BlobStore::migrate() {
  const int version = m_db->execAndGet("PRAGMA user_version").getInt();
  const int latest = static_cast<int>(std::size(k_migrations));
  if (version > latest) {
    throw StoreError("cache.db has schema version " + std::to_string(version) +
                     ", newer than this withcache (" + std::to_string(latest) + "); upgrade withcache");
  }
  for (int v = version; v < latest; ++v) {
    SQLite::Transaction tx(*m_db);
    m_db->exec(k_migrations[v]);
    m_db->exec("PRAGMA user_version = " + std::to_string(v + 1));
    tx.commit();
  }
}

void BlobStore::recover() {
  std::error_code ec;

  // .part files that no pending job owns are leftovers of a crash or a cancel.
  std::unordered_set<std::string> owned;
  {
    SQLite::Statement jobs(*m_db, "SELECT key FROM pending_jobs");
    while (jobs.executeStep()) {
      owned.insert(jobs.getColumn(0).getString());
    }
  }
  for (const auto& entry : fs::directory_iterator(m_options.data_dir / "tmp", ec)) {
    const fs::path& path = entry.path();
    const bool part = path.extension() == ".part";
    if ((part || path.extension() == ".resume") && owned.count(path.stem().string()) == 0) {
      if (fs::remove(path, ec) && part) {
        ++m_recovery.stray_parts_removed;
      }
    }
  }

  // A staged blob: commit died after staging it. Its row was written exactly
  // when the row's SHA-256 is the one in its name: then finish the rename;
  // otherwise the earlier blob (if any) is still the artifact.
  {
    SQLite::Statement sha_of(*m_db, "SELECT sha256 FROM artifacts WHERE key = ?");
    for (const auto& entry : fs::directory_iterator(m_options.data_dir / "blobs", ec)) {
      const auto staged = parse_staged_name(entry.path().filename().string());
      if (!staged) {
        continue;
      }
      sha_of.bind(1, staged->first);
      const bool recorded = sha_of.executeStep() && sha_of.getColumn(0).getString() == staged->second;
      sha_of.reset();
      std::error_code move_ec;
      if (recorded) {
        fs::rename(entry.path(), blob_path(staged->first), move_ec);
        if (!move_ec) {
          ++m_recovery.replacements_completed;
        }
      } else if (fs::remove(entry.path(), move_ec)) {
        ++m_recovery.blobs_without_row_removed;
      }
    }
    (void)fsync_path(m_options.data_dir / "blobs", true);
  }

  // Rows must point at a blob of exactly their size; the blob is renamed into
  // place before its row is written, so a missing or short file means damage.
  std::vector<std::string> broken;
  std::unordered_set<std::string> rows;
  {
    SQLite::Statement all(*m_db, "SELECT key, size FROM artifacts");
    while (all.executeStep()) {
      const std::string key = all.getColumn(0).getString();
      const auto size = from_db(all.getColumn(1).getInt64());
      std::error_code size_ec;
      const auto actual = fs::file_size(blob_path(key), size_ec);
      if (size_ec || actual != size) {
        broken.push_back(key);
      } else {
        rows.insert(key);
      }
    }
  }
  if (!broken.empty()) {
    SQLite::Transaction tx(*m_db);
    SQLite::Statement drop(*m_db, "DELETE FROM artifacts WHERE key = ?");
    for (const auto& key : broken) {
      drop.bind(1, key);
      drop.exec();
      drop.reset();
      fs::remove(blob_path(key), ec);
      ++m_recovery.rows_without_blob_dropped;
    }
    tx.commit();
  }

  // A blob without a row: the process died between rename and row, or
  // between deleting the row and the file.
  for (const auto& entry : fs::directory_iterator(m_options.data_dir / "blobs", ec)) {
    const std::string name = entry.path().filename().string();
    if (is_key_id(name) && rows.count(name) == 0) {
      if (fs::remove(entry.path(), ec)) {
        ++m_recovery.blobs_without_row_removed;
      }
    }
  }
}

void BlobStore::load_artifacts() {
  SQLite::Statement all(*m_db, std::string("SELECT ") + k_artifact_columns + " FROM artifacts");
  std::unique_lock lock(m_index_mutex);
  m_index.clear();
  std::uint64_t stored = 0;
  while (all.executeStep()) {
    Artifact a = artifact_from_row(all);
    stored += a.size;
    std::string key = a.key;
    m_index.emplace(std::move(key), std::move(a));
  }
  m_stored_bytes = stored;
  SQLite::Statement misses(*m_db, "SELECT key, last_reason, failures, retry_after, failed_attempt FROM misses");
  std::lock_guard counter_lock(m_counter_mutex);
  while (misses.executeStep()) {
    std::string key = misses.getColumn(0).getString();
    const auto failures = static_cast<std::uint32_t>(std::max<std::int64_t>(0, misses.getColumn(2).getInt64()));
    if (failures > 0) {
      m_backoffs[key] = Backoff{misses.getColumn(1).getString(), failures, misses.getColumn(3).getInt64(),
                                misses.getColumn(4).getString()};
    }
    m_known_misses.insert(std::move(key));
  }
}

std::optional<Artifact> BlobStore::find(const std::string& key) const {
  std::shared_lock lock(m_index_mutex);
  const auto it = m_index.find(key);
  if (it == m_index.end()) {
    return std::nullopt;
  }
  return it->second;
}

std::uint64_t BlobStore::artifact_count() const {
  std::shared_lock lock(m_index_mutex);
  return m_index.size();
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

std::optional<OpenedBlob> BlobStore::open_blob(const std::string& key) const {
  // Under the index lock, so that commit() cannot rename another blob into
  // place between reading the row and opening the file.
  std::shared_lock lock(m_index_mutex);
  const auto it = m_index.find(key);
  if (it == m_index.end()) {
    return std::nullopt;
  }
  const int fd = ::open(blob_path(key).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return std::nullopt;
  }
  return OpenedBlob(it->second, fd);
}

void BlobStore::record_hit(const std::string& key) {
  std::lock_guard lock(m_counter_mutex);
  ++m_pending_hits[key];
}

bool BlobStore::record_miss(const std::string& key, std::string_view url) {
  const UnixTime t = now();
  std::lock_guard lock(m_counter_mutex);
  auto& miss = m_pending_misses[key];
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
    m_flusher_cv.wait_for(lock, m_options.flush_interval, [this] { return m_stopping; });
    if (m_stopping) {
      break;
    }
    if (m_pending_hits.empty() && m_pending_misses.empty() && m_pending_events.empty() &&
        m_pending_job_ops.empty() && m_pending_failures.empty()) {
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

Expected<Ok, std::string> BlobStore::flush_locked() {
  std::unordered_map<std::string, std::uint64_t> hits;
  std::unordered_map<std::string, PendingMiss> misses;
  std::vector<Event> events;
  std::vector<JobOp> job_ops;
  std::unordered_map<std::string, FailureOp> failures;
  {
    std::lock_guard lock(m_counter_mutex);
    hits.swap(m_pending_hits);
    misses.swap(m_pending_misses);
    events.swap(m_pending_events);
    job_ops.swap(m_pending_job_ops);
    failures.swap(m_pending_failures);
  }
  if (job_ops.empty() && events.empty() && hits.empty() && misses.empty() && failures.empty()) {
    return Ok{};
  }
  // One transaction: one wait for a busy database, and all or nothing.
  auto written = guarded("cannot write counters, events and pending fills to cache.db", [&] {
    SQLite::Transaction tx(*m_db);
    write_job_ops(job_ops);
    write_events(events);
    write_counters(hits, misses);
    write_failures(failures);
    tx.commit();
    return Ok{};
  });
  if (written) {
    return Ok{};
  }
  // Nothing was written: everything goes back to the front of its queue, in order.
  std::lock_guard lock(m_counter_mutex);
  m_pending_job_ops.insert(m_pending_job_ops.begin(), job_ops.begin(), job_ops.end());
  m_pending_events.insert(m_pending_events.begin(), events.begin(), events.end());
  for (const auto& [key, count] : hits) {
    m_pending_hits[key] += count;
  }
  for (auto& [key, miss] : misses) {
    auto& queued = m_pending_misses[key];
    queued.count += miss.count;
    queued.first = queued.first == 0 ? miss.first : std::min(queued.first, miss.first);
    queued.last = std::max(queued.last, miss.last);
    if (queued.url.empty()) {
      queued.url = std::move(miss.url);
    }
  }
  for (auto& [key, op] : failures) {
    m_pending_failures.try_emplace(key, std::move(op)); // a newer state queued since wins
  }
  return written;
}

void BlobStore::write_failures(const std::unordered_map<std::string, FailureOp>& failures) {
  if (failures.empty()) {
    return;
  }
  const UnixTime t = now();
  SQLite::Statement upsert(*m_db, R"sql(
INSERT INTO misses (key, url, count, first_seen, last_seen, last_reason, failures, retry_after, failed_attempt)
VALUES (?1, ?2, 0, ?3, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (key) DO UPDATE SET last_reason = excluded.last_reason, failures = excluded.failures,
                                retry_after = excluded.retry_after, failed_attempt = excluded.failed_attempt)sql");
  SQLite::Statement clear(*m_db, "UPDATE misses SET failures = 0, retry_after = 0 WHERE key = ?");
  for (const auto& [key, op] : failures) {
    if (op.clear) {
      clear.bind(1, key);
      clear.exec();
      clear.reset();
      continue;
    }
    upsert.bind(1, key);
    upsert.bind(2, op.url);
    upsert.bind(3, t);
    upsert.bind(4, op.backoff.reason);
    upsert.bind(5, static_cast<std::int64_t>(op.backoff.failures));
    upsert.bind(6, op.backoff.retry_after);
    upsert.bind(7, op.backoff.attempt);
    upsert.exec();
    upsert.reset();
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
  m_pending_failures[key] = FailureOp{url::strip_userinfo(url), result, false};
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
  m_pending_failures[key] = FailureOp{{}, {}, true};
  return active;
}

void BlobStore::write_events(const std::vector<Event>& events) {
  if (events.empty()) {
    return;
  }
  SQLite::Statement insert(*m_db,
                           "INSERT INTO events (time, kind, actor, address, details) VALUES (?, ?, ?, ?, ?)");
  for (const auto& e : events) {
    insert.bind(1, e.time);
    insert.bind(2, e.kind);
    insert.bind(3, e.actor);
    insert.bind(4, e.address);
    insert.bind(5, e.details);
    insert.exec();
    insert.reset();
  }
  SQLite::Statement prune(*m_db, "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?");
  prune.bind(1, k_max_events);
  prune.exec();
}

void BlobStore::record_event(std::string kind, std::string actor, std::string address, std::string details) {
  std::lock_guard lock(m_counter_mutex);
  m_pending_events.push_back(
      Event{0, now(), std::move(kind), std::move(actor), std::move(address), std::move(details)});
}

Expected<Page<Event>, std::string> BlobStore::list_events(const ListQuery& query) {
  std::lock_guard db_lock(m_db_mutex);
  (void)flush_locked(); // on failure the queue is kept for the next round
  return guarded("cannot list events", [&]() -> Page<Event> {
    const bool filtered = !query.filter.empty();
    const std::string where =
        filtered ? " WHERE kind LIKE ?1 ESCAPE '\\' OR actor LIKE ?1 ESCAPE '\\' OR details LIKE ?1 ESCAPE '\\'"
                 : "";
    Page<Event> page;
    SQLite::Statement count(*m_db, "SELECT count(*) FROM events" + where);
    if (filtered) {
      count.bind(1, like_pattern(query.filter));
    }
    count.executeStep();
    page.total = from_db(count.getColumn(0).getInt64());
    SQLite::Statement rows(*m_db, "SELECT id, time, kind, actor, address, details FROM events" + where +
                                      " ORDER BY id DESC LIMIT ?2 OFFSET ?3");
    if (filtered) {
      rows.bind(1, like_pattern(query.filter));
    }
    rows.bind(2, to_db(query.limit));
    rows.bind(3, to_db(query.offset));
    while (rows.executeStep()) {
      page.items.push_back(Event{rows.getColumn(0).getInt64(), rows.getColumn(1).getInt64(),
                                 rows.getColumn(2).getString(), rows.getColumn(3).getString(),
                                 rows.getColumn(4).getString(), rows.getColumn(5).getString()});
    }
    return page;
  });
}

void BlobStore::write_counters(const std::unordered_map<std::string, std::uint64_t>& hits,
                               const std::unordered_map<std::string, PendingMiss>& misses) {
  if (hits.empty() && misses.empty()) {
    return;
  }
  SQLite::Statement add_hits(*m_db, "UPDATE artifacts SET hits = hits + ? WHERE key = ?");
  for (const auto& [key, count] : hits) {
    add_hits.bind(1, to_db(count));
    add_hits.bind(2, key);
    add_hits.exec();
    add_hits.reset();
  }
  // A miss counted just before its fill completed lands on the artifact.
  SQLite::Statement add_artifact_misses(*m_db, "UPDATE artifacts SET misses = misses + ? WHERE key = ?");
  SQLite::Statement upsert_miss(*m_db, R"sql(
INSERT INTO misses (key, url, count, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (key) DO UPDATE SET url = excluded.url, count = count + excluded.count,
                                last_seen = max(last_seen, excluded.last_seen))sql");
  for (const auto& [key, miss] : misses) {
    add_artifact_misses.bind(1, to_db(miss.count));
    add_artifact_misses.bind(2, key);
    const int changed = add_artifact_misses.exec();
    add_artifact_misses.reset();
    if (changed == 0) {
      upsert_miss.bind(1, key);
      upsert_miss.bind(2, miss.url);
      upsert_miss.bind(3, to_db(miss.count));
      upsert_miss.bind(4, miss.first);
      upsert_miss.bind(5, miss.last);
      upsert_miss.exec();
      upsert_miss.reset();
    }
  }
}

bool BlobStore::is_full() const noexcept {
  return m_options.max_bytes != 0 && m_stored_bytes.load() + m_reserved_bytes.load() >= m_options.max_bytes;
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
  const fs::path blobs = blob.parent_path();
  std::error_code ec;
  const auto actual = fs::file_size(part, ec);
  if (ec) {
    return unexpected("cannot commit " + artifact.key + ": " + ec.message());
  }
  if (actual != artifact.size) {
    return unexpected("cannot commit " + artifact.key + ": part file has " + std::to_string(actual) +
                      " bytes, expected " + std::to_string(artifact.size));
  }
  if (!is_key_id(artifact.sha256)) {
    return unexpected("cannot commit " + artifact.key + ": not a SHA-256: " + artifact.sha256);
  }
  if (!fsync_path(part, false)) {
    return unexpected("cannot fsync " + part.string() + ": " + std::strerror(errno));
  }

  // No flush first: misses still queued land on the artifact row when the flusher writes them.
  std::lock_guard db_lock(m_db_mutex);
  const std::optional<Artifact> previous = find(artifact.key);
  // Staged beside the blob it replaces: the earlier blob keeps serving until the row says otherwise.
  const fs::path staged = blobs / staged_name(artifact.key, artifact.sha256);
  fs::rename(part, staged, ec);
  if (ec) {
    return unexpected("cannot move " + part.string() + " into blobs/: " + ec.message());
  }
  if (!fsync_path(blobs, true)) {
    const std::string error = std::strerror(errno);
    fs::rename(staged, part, ec); // back where a resumed fill finds it
    return unexpected("cannot fsync " + blobs.string() + ": " + error);
  }

  Artifact stored;
  try {
    SQLite::Transaction tx(*m_db);
    SQLite::Statement upsert(*m_db, R"sql(
INSERT INTO artifacts (key, url, raw_url, size, sha256, content_type, fetched_at, hits, misses, etag,
                       last_modified, cache_control, expires, content_encoding, content_disposition, fresh_until)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, COALESCE((SELECT count FROM misses WHERE key = ?1), 0), ?8, ?9, ?10,
        ?11, ?12, ?13, ?14)
ON CONFLICT (key) DO UPDATE SET url = excluded.url, raw_url = excluded.raw_url, size = excluded.size,
  sha256 = excluded.sha256, content_type = excluded.content_type, fetched_at = excluded.fetched_at,
  misses = misses + excluded.misses, etag = excluded.etag, last_modified = excluded.last_modified,
  cache_control = excluded.cache_control, expires = excluded.expires,
  content_encoding = excluded.content_encoding, content_disposition = excluded.content_disposition,
  fresh_until = excluded.fresh_until)sql");
    upsert.bind(1, artifact.key);
    upsert.bind(2, artifact.url);
    upsert.bind(3, url::strip_userinfo(artifact.raw_url));
    upsert.bind(4, to_db(artifact.size));
    upsert.bind(5, artifact.sha256);
    upsert.bind(6, artifact.content_type);
    upsert.bind(7, now());
    upsert.bind(8, artifact.etag);
    upsert.bind(9, artifact.last_modified);
    upsert.bind(10, artifact.cache_control);
    upsert.bind(11, artifact.expires);
    upsert.bind(12, artifact.content_encoding);
    upsert.bind(13, artifact.content_disposition);
    upsert.bind(14, artifact.fresh_until);
    upsert.exec();
    SQLite::Statement forget_miss(*m_db, "DELETE FROM misses WHERE key = ?");
    forget_miss.bind(1, artifact.key);
    forget_miss.exec();
    SQLite::Statement read(*m_db,
                           std::string("SELECT ") + k_artifact_columns + " FROM artifacts WHERE key = ?");
    read.bind(1, artifact.key);
    read.executeStep();
    stored = artifact_from_row(read);
    tx.commit();
  } catch (const std::exception& e) {
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
    m_index[artifact.key] = stored;
  }
  (void)fsync_path(blobs, true); // a lost rename is redone by open(): the row names the staged SHA-256
  m_stored_bytes += stored.size;
  if (previous) {
    m_stored_bytes -= std::min(previous->size, m_stored_bytes.load());
  }
  {
    std::lock_guard lock(m_counter_mutex);
    m_known_misses.erase(artifact.key);
    m_backoffs.erase(artifact.key);
    m_pending_failures.erase(artifact.key);
  }
  return stored;
}

Expected<Artifact, std::string> BlobStore::refresh(const std::string& key, const Freshness& freshness) {
  std::lock_guard db_lock(m_db_mutex);
  auto updated = guarded("cannot record a revalidation in cache.db", [&]() -> std::optional<Artifact> {
    SQLite::Statement update(*m_db, R"sql(
UPDATE artifacts SET fresh_until = ?2, etag = ?3, last_modified = ?4, cache_control = ?5, expires = ?6
WHERE key = ?1)sql");
    update.bind(1, key);
    update.bind(2, freshness.fresh_until);
    update.bind(3, freshness.etag);
    update.bind(4, freshness.last_modified);
    update.bind(5, freshness.cache_control);
    update.bind(6, freshness.expires);
    if (update.exec() == 0) {
      return std::nullopt;
    }
    std::unique_lock lock(m_index_mutex);
    const auto it = m_index.find(key);
    if (it == m_index.end()) {
      return std::nullopt;
    }
    it->second.fresh_until = freshness.fresh_until;
    it->second.etag = freshness.etag;
    it->second.last_modified = freshness.last_modified;
    it->second.cache_control = freshness.cache_control;
    it->second.expires = freshness.expires;
    return it->second;
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
  return guarded("cannot delete from cache.db", [&]() -> bool {
    SQLite::Statement drop(*m_db, "DELETE FROM artifacts WHERE key = ?");
    drop.bind(1, key);
    if (drop.exec() == 0) {
      return false;
    }
    std::optional<Artifact> previous;
    {
      std::unique_lock lock(m_index_mutex);
      if (auto it = m_index.find(key); it != m_index.end()) {
        previous = std::move(it->second);
        m_index.erase(it);
      }
    }
    if (previous) {
      m_stored_bytes -= std::min(previous->size, m_stored_bytes.load());
    }
    // Readers that already opened the file keep streaming it; unlink is safe.
    std::error_code ec;
    fs::remove(blob_path(key), ec);
    return true;
  });
}

Expected<bool, std::string> BlobStore::dismiss_miss(const std::string& key) {
  std::lock_guard db_lock(m_db_mutex);
  (void)flush_locked(); // on failure the queue is kept for the next round
  return guarded("cannot dismiss from cache.db", [&]() -> bool {
    SQLite::Statement drop(*m_db, "DELETE FROM misses WHERE key = ?");
    drop.bind(1, key);
    const bool removed = drop.exec() > 0;
    std::lock_guard lock(m_counter_mutex);
    m_known_misses.erase(key);
    m_backoffs.erase(key);
    m_pending_failures.erase(key);
    return removed;
  });
}

Expected<Page<Artifact>, std::string> BlobStore::list_artifacts(const ListQuery& query) {
  std::lock_guard db_lock(m_db_mutex);
  (void)flush_locked(); // on failure the queue is kept for the next round
  return guarded("cannot list artifacts", [&]() -> Page<Artifact> {
    const bool filtered = !query.filter.empty();
    const std::string where = filtered ? " WHERE url LIKE ?1 ESCAPE '\\' OR sha256 LIKE ?1 ESCAPE '\\'" : "";
    Page<Artifact> page;
    SQLite::Statement count(*m_db, "SELECT count(*) FROM artifacts" + where);
    if (filtered) {
      count.bind(1, like_pattern(query.filter));
    }
    count.executeStep();
    page.total = from_db(count.getColumn(0).getInt64());
    SQLite::Statement rows(*m_db, std::string("SELECT ") + k_artifact_columns + " FROM artifacts" + where +
                                      " ORDER BY fetched_at DESC, key LIMIT ?2 OFFSET ?3");
    if (filtered) {
      rows.bind(1, like_pattern(query.filter));
    }
    rows.bind(2, to_db(query.limit));
    rows.bind(3, to_db(query.offset));
    while (rows.executeStep()) {
      page.items.push_back(artifact_from_row(rows));
    }
    return page;
  });
}

Expected<Page<Miss>, std::string> BlobStore::list_misses(const ListQuery& query) {
  std::lock_guard db_lock(m_db_mutex);
  (void)flush_locked(); // on failure the queue is kept for the next round
  return guarded("cannot list misses", [&]() -> Page<Miss> {
    const bool filtered = !query.filter.empty();
    const std::string where = filtered ? " WHERE url LIKE ?1 ESCAPE '\\'" : "";
    Page<Miss> page;
    SQLite::Statement count(*m_db, "SELECT count(*) FROM misses" + where);
    if (filtered) {
      count.bind(1, like_pattern(query.filter));
    }
    count.executeStep();
    page.total = from_db(count.getColumn(0).getInt64());
    SQLite::Statement rows(*m_db,
                           "SELECT key, url, count, first_seen, last_seen, last_reason, failures, retry_after "
                           "FROM misses" + where +
                                      " ORDER BY last_seen DESC, key LIMIT ?2 OFFSET ?3");
    if (filtered) {
      rows.bind(1, like_pattern(query.filter));
    }
    rows.bind(2, to_db(query.limit));
    rows.bind(3, to_db(query.offset));
    while (rows.executeStep()) {
      Miss m;
      m.key = rows.getColumn(0).getString();
      m.url = rows.getColumn(1).getString();
      m.count = from_db(rows.getColumn(2).getInt64());
      m.first_seen = rows.getColumn(3).getInt64();
      m.last_seen = rows.getColumn(4).getInt64();
      m.last_reason = rows.getColumn(5).getString();
      m.failures = static_cast<std::uint32_t>(std::max<std::int64_t>(0, rows.getColumn(6).getInt64()));
      m.retry_after = rows.getColumn(7).getInt64();
      page.items.push_back(std::move(m));
    }
    return page;
  });
}

Expected<Totals, std::string> BlobStore::totals() {
  std::lock_guard db_lock(m_db_mutex);
  (void)flush_locked(); // on failure the queue is kept for the next round
  return guarded("cannot read totals", [&]() -> Totals {
    Totals t;
    SQLite::Statement sums(*m_db, "SELECT count(*), COALESCE(sum(size), 0), COALESCE(sum(hits), 0), "
                                  "COALESCE(sum(misses), 0) FROM artifacts");
    sums.executeStep();
    t.artifacts = from_db(sums.getColumn(0).getInt64());
    t.stored_bytes = from_db(sums.getColumn(1).getInt64());
    t.hits = from_db(sums.getColumn(2).getInt64());
    t.misses = from_db(sums.getColumn(3).getInt64());
    SQLite::Statement misses(*m_db, "SELECT count(*), COALESCE(sum(count), 0) FROM misses");
    misses.executeStep();
    t.pending_misses = from_db(misses.getColumn(0).getInt64());
    t.misses += from_db(misses.getColumn(1).getInt64());
    t.max_bytes = m_options.max_bytes;
    return t;
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
  m_pending_job_ops.push_back({true, std::move(job)});
  return id;
}

void BlobStore::remove_pending_job(std::int64_t id) {
  std::lock_guard lock(m_counter_mutex);
  m_pending_job_ops.push_back({false, PendingJob{id, {}, {}, {}, 0}});
}

void BlobStore::write_job_ops(const std::vector<JobOp>& ops) {
  if (ops.empty()) {
    return;
  }
  SQLite::Statement insert(
      *m_db, "INSERT INTO pending_jobs (id, key, url, headers, created_at) VALUES (?, ?, ?, ?, ?)");
  SQLite::Statement drop(*m_db, "DELETE FROM pending_jobs WHERE id = ?");
  for (const auto& op : ops) {
    if (op.insert) {
      insert.bind(1, op.job.id);
      insert.bind(2, op.job.key);
      insert.bind(3, op.job.url);
      insert.bind(4, encode_headers(op.job.headers));
      insert.bind(5, op.job.created_at);
      insert.exec();
      insert.reset();
    } else {
      drop.bind(1, op.job.id);
      drop.exec();
      drop.reset();
    }
  }
}

Expected<std::vector<PendingJob>, std::string> BlobStore::pending_jobs() {
  std::lock_guard db_lock(m_db_mutex);
  (void)flush_locked(); // on failure the queue is kept for the next round
  return guarded("cannot read pending fills", [&]() -> std::vector<PendingJob> {
    std::vector<PendingJob> jobs;
    SQLite::Statement all(*m_db, "SELECT id, key, url, headers, created_at FROM pending_jobs ORDER BY id");
    while (all.executeStep()) {
      PendingJob job;
      job.id = all.getColumn(0).getInt64();
      job.key = all.getColumn(1).getString();
      job.url = all.getColumn(2).getString();
      job.headers = decode_headers(all.getColumn(3).getString());
      job.created_at = all.getColumn(4).getInt64();
      jobs.push_back(std::move(job));
    }
    return jobs;
  });
}

} // namespace withcache::store
