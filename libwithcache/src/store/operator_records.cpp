// What the operator surface keeps in cache.db besides the cache itself: server-side sessions, the
// server's own settings, and a miss looked up by key. Every call waits for SQLite under the database
// lock, so only worker threads call them (logins, logouts, form actions) and start-up.
#include "withcache/store.hpp"

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>

namespace withcache::store {
namespace {

// No SQLite exception leaves the store: a failure comes back as one line.
template <class F> auto guarded(std::string_view what, F&& body) -> Expected<decltype(body()), std::string> {
  try {
    return body();
  } catch (const std::exception& e) {
    return unexpected(std::string(what) + ": " + e.what());
  }
}

} // namespace

Expected<std::optional<Miss>, std::string> BlobStore::find_miss(const std::string& key) {
  std::lock_guard db_lock(m_db_mutex);
  (void)flush_locked(); // a miss recorded a moment ago is found too
  return guarded("cannot read a miss from cache.db", [&]() -> std::optional<Miss> {
    SQLite::Statement row(*m_db, "SELECT key, url, count, first_seen, last_seen, last_reason FROM misses "
                                 "WHERE key = ?");
    row.bind(1, key);
    if (!row.executeStep()) {
      return std::nullopt;
    }
    Miss m;
    m.key = row.getColumn(0).getString();
    m.url = row.getColumn(1).getString();
    m.count = static_cast<std::uint64_t>(std::max<std::int64_t>(0, row.getColumn(2).getInt64()));
    m.first_seen = row.getColumn(3).getInt64();
    m.last_seen = row.getColumn(4).getInt64();
    m.last_reason = row.getColumn(5).getString();
    return m;
  });
}

Expected<std::vector<SessionRow>, std::string> BlobStore::load_sessions(UnixTime now) {
  std::lock_guard db_lock(m_db_mutex);
  return guarded("cannot read sessions from cache.db", [&]() -> std::vector<SessionRow> {
    SQLite::Statement purge(*m_db, "DELETE FROM sessions WHERE expires_at <= ?");
    purge.bind(1, static_cast<std::int64_t>(now));
    purge.exec();
    SQLite::Statement rows(*m_db, "SELECT id_hash, user, created_at, expires_at, address FROM sessions");
    std::vector<SessionRow> sessions;
    while (rows.executeStep()) {
      sessions.push_back(SessionRow{rows.getColumn(0).getString(), rows.getColumn(1).getString(),
                                    rows.getColumn(2).getInt64(), rows.getColumn(3).getInt64(),
                                    rows.getColumn(4).getString()});
    }
    return sessions;
  });
}

Expected<Ok, std::string> BlobStore::save_session(const SessionRow& session) {
  std::lock_guard db_lock(m_db_mutex);
  return guarded("cannot write a session to cache.db", [&]() -> Ok {
    SQLite::Statement insert(*m_db, "INSERT OR REPLACE INTO sessions (id_hash, user, created_at, expires_at, "
                                    "address) VALUES (?, ?, ?, ?, ?)");
    insert.bind(1, session.id_hash);
    insert.bind(2, session.user);
    insert.bind(3, static_cast<std::int64_t>(session.created_at));
    insert.bind(4, static_cast<std::int64_t>(session.expires_at));
    insert.bind(5, session.address);
    insert.exec();
    return Ok{};
  });
}

Expected<bool, std::string> BlobStore::delete_session(const std::string& id_hash) {
  std::lock_guard db_lock(m_db_mutex);
  return guarded("cannot delete a session from cache.db", [&]() -> bool {
    SQLite::Statement drop(*m_db, "DELETE FROM sessions WHERE id_hash = ?");
    drop.bind(1, id_hash);
    return drop.exec() > 0;
  });
}

Expected<std::size_t, std::string> BlobStore::delete_sessions(std::optional<UnixTime> expired_at) {
  std::lock_guard db_lock(m_db_mutex);
  return guarded("cannot delete sessions from cache.db", [&]() -> std::size_t {
    if (expired_at) {
      SQLite::Statement drop(*m_db, "DELETE FROM sessions WHERE expires_at <= ?");
      drop.bind(1, static_cast<std::int64_t>(*expired_at));
      return static_cast<std::size_t>(drop.exec());
    }
    return static_cast<std::size_t>(m_db->exec("DELETE FROM sessions"));
  });
}

Expected<std::string, std::string> BlobStore::setting(const std::string& name) {
  std::lock_guard db_lock(m_db_mutex);
  return guarded("cannot read a setting from cache.db", [&]() -> std::string {
    SQLite::Statement row(*m_db, "SELECT value FROM settings WHERE name = ?");
    row.bind(1, name);
    return row.executeStep() ? row.getColumn(0).getString() : std::string{};
  });
}

Expected<Ok, std::string> BlobStore::set_setting(const std::string& name, const std::string& value) {
  std::lock_guard db_lock(m_db_mutex);
  return guarded("cannot write a setting to cache.db", [&]() -> Ok {
    SQLite::Statement upsert(*m_db, "INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)");
    upsert.bind(1, name);
    upsert.bind(2, value);
    upsert.exec();
    return Ok{};
  });
}

} // namespace withcache::store
