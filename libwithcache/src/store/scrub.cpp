#include "withcache/scrub.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>

#include "store/index.hpp"
#include "util/regular_file.hpp"
#include "withcache/digest.hpp"
#include "withcache/util/time.hpp"

namespace withcache::store {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t k_chunk = 1024 * 1024;
// The position is persisted at most this often (and at the end of a pass).
constexpr auto k_save_every = std::chrono::seconds(5);

// Reads `fd` to its end in chunks, hashing; `between` runs after each chunk and may stop the read.
template <class Between> std::optional<std::string> hash_fd(int fd, std::uint64_t& bytes, Between between) {
  digest::Sha256 sha;
  std::vector<char> buffer(k_chunk);
  bytes = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, buffer.data(), buffer.size(), static_cast<off_t>(bytes));
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return std::nullopt;
    }
    if (n == 0) {
      return sha.hex();
    }
    sha.update(buffer.data(), static_cast<std::size_t>(n));
    bytes += static_cast<std::uint64_t>(n);
    if (!between(static_cast<std::uint64_t>(n))) {
      return std::nullopt;
    }
  }
}

} // namespace

Scrubber::Scrubber(BlobStore& store, ScrubOptions options) : m_store(store), m_options(std::move(options)) {
  m_state = m_store.scrub_state().value_or(ScrubState{});
  m_status.passes = m_state.passes;
  m_status.pass_started_at = m_state.pass_started_at;
  m_status.last_pass_finished_at = m_state.last_pass_finished_at;
  m_status.running = m_state.running;
  m_status.rate = m_options.rate == 0 ? k_default_scrub_rate : m_options.rate;
  m_thread = std::thread([this] { run(); });
}

Scrubber::~Scrubber() {
  stop();
}

void Scrubber::stop() {
  {
    std::lock_guard lock(m_mutex);
    if (m_stopping && !m_thread.joinable()) {
      return;
    }
    m_stopping = true;
  }
  m_wake.notify_all();
  if (m_thread.joinable()) {
    m_thread.join();
  }
  save(true);
}

void Scrubber::start_pass() {
  {
    std::lock_guard lock(m_mutex);
    m_start_requested = true;
  }
  m_wake.notify_all();
}

ScrubStatus Scrubber::status() const {
  std::lock_guard lock(m_mutex);
  return m_status;
}

bool Scrubber::wait(Clock::duration how_long) {
  std::unique_lock lock(m_mutex);
  m_wake.wait_for(lock, how_long, [this] { return m_stopping || m_start_requested; });
  return !m_stopping;
}

void Scrubber::save(bool now) {
  const auto t = Clock::now();
  ScrubState state;
  {
    std::lock_guard lock(m_mutex);
    if (!now && t - m_saved_at < k_save_every) {
      return;
    }
    m_saved_at = t;
    state = m_state;
  }
  m_store.save_scrub_state(state);
}

// Keeps reading under `rate` bytes a second: a token bucket that forgets time spent paused.
bool Scrubber::throttle(std::uint64_t bytes) {
  const std::uint64_t rate = m_options.rate == 0 ? k_default_scrub_rate : m_options.rate;
  m_bucket_bytes += bytes;
  const auto due = m_bucket_start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                                        static_cast<double>(m_bucket_bytes) / static_cast<double>(rate)));
  for (;;) {
    {
      std::unique_lock lock(m_mutex);
      if (m_stopping || m_start_requested) {
        return false; // a new pass starts over: this blob is not finished
      }
      const auto now = Clock::now();
      if (now < due) {
        m_wake.wait_until(lock, due, [this] { return m_stopping || m_start_requested; });
        continue;
      }
    }
    if (!m_options.busy || !m_options.busy()) {
      break;
    }
    {
      std::lock_guard lock(m_mutex);
      m_status.paused = true;
    }
    if (!wait(m_options.poll)) {
      return false;
    }
    std::lock_guard lock(m_mutex);
    if (m_start_requested) {
      return false;
    }
    m_status.paused = false;
    m_bucket_start = Clock::now();
    m_bucket_bytes = 0;
  }
  // A bucket that has been idle does not store up a burst.
  if (Clock::now() - due > std::chrono::seconds(1)) {
    m_bucket_start = Clock::now();
    m_bucket_bytes = 0;
  }
  return true;
}

void Scrubber::check(const std::string& key) {
  const auto artifact = m_store.find(key);
  if (!artifact) {
    return; // deleted meanwhile
  }
  // Never through a link, never blocking on a FIFO: what is hashed (and named in events) is a file
  // of the data dir, and SIGTERM finds the scrub between two chunks.
  auto opened = util::open_regular(m_store.blob_path(key), O_RDONLY);
  if (!opened && opened.error().reason == util::FileRefusal::failed) {
    return; // cannot tell (out of descriptors?): the next pass looks again
  }
  if (!opened || static_cast<std::uint64_t>(opened->info.st_size) != artifact->size) {
    if (opened) {
      ::close(opened->fd);
    }
    // Missing, of another size, or not a regular file of one name: find_present() drops it by the
    // same rules, without opening it.
    // The row, for the re-fill, before the drop forgets it.
    const auto row = m_store.describe(key);
    Presence presence = Presence::hit;
    (void)m_store.find_present(key, &presence);
    if (presence == Presence::dropped) {
      {
        std::lock_guard lock(m_mutex);
        ++m_status.missing;
      }
      if (row && *row && m_options.on_damaged) {
        m_options.on_damaged(**row, {});
      }
    }
    return;
  }
  const int fd = opened->fd;
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::uint64_t read = 0;
  const auto found = hash_fd(fd, read, [&](std::uint64_t n) {
    {
      std::lock_guard lock(m_mutex);
      m_status.pass_bytes += n;
      m_status.bytes_checked += n;
    }
    return throttle(n);
  });
  if (found && *found != artifact->sha256) {
    const auto row = m_store.describe(key);
    const std::string url = row && *row ? (*row)->url : std::string();
    const std::string details = url + " (" + key + "): sha256 " + *found + " instead of " + artifact->sha256 +
                                "; moved to quarantine/";
    const auto quarantined = m_store.quarantine(key, artifact->sha256, fd, details);
    if (quarantined && *quarantined) {
      {
        std::lock_guard lock(m_mutex);
        ++m_status.mismatches;
      }
      if (row && *row && m_options.on_damaged) {
        m_options.on_damaged(**row, *found);
      }
    }
  }
  ::close(fd);
  if (found) {
    std::lock_guard lock(m_mutex);
    ++m_status.pass_blobs;
    ++m_status.blobs_checked;
    m_status.last_key = key;
  }
}

void Scrubber::run() {
  for (;;) {
    bool start = false;
    bool in_pass = false;
    Clock::duration idle = m_options.poll;
    {
      std::lock_guard lock(m_mutex);
      if (m_stopping) {
        return;
      }
      start = m_start_requested;
      m_start_requested = false;
      in_pass = m_state.running;
      if (!start && !in_pass && m_options.rate > 0) {
        // The next background pass is due `pass_interval` after the last one started.
        const UnixTime due =
            m_state.pass_started_at == 0 ? 0 : m_state.pass_started_at + m_options.pass_interval.count();
        const UnixTime t = util::now();
        start = t >= due;
        idle = std::chrono::seconds(std::clamp<UnixTime>(due - t, 1, 3600));
      } else if (!start && !in_pass) {
        idle = std::chrono::hours(1); // background passes off: only start_pass() wakes us
      }
      if (start) {
        m_state.cursor.clear();
        m_state.running = true;
        m_state.pass_started_at = util::now();
        m_status.running = true;
        m_status.paused = false;
        m_status.pass_started_at = m_state.pass_started_at;
        m_status.pass_blobs = 0;
        m_status.pass_bytes = 0;
        m_bucket_start = Clock::now();
        m_bucket_bytes = 0;
        in_pass = true;
      }
      m_status.running = in_pass;
    }
    if (start) {
      save(true);
    }
    if (!in_pass) {
      if (!wait(idle)) {
        return;
      }
      continue;
    }
    std::string cursor;
    {
      std::lock_guard lock(m_mutex);
      cursor = m_state.cursor;
    }
    const auto key = m_store.next_key(cursor);
    if (!key) {
      const std::uint64_t orphans = m_store.sweep_orphans();
      {
        std::lock_guard lock(m_mutex);
        m_state.cursor.clear();
        m_state.running = false;
        m_state.last_pass_finished_at = std::max(util::now(), m_state.pass_started_at);
        ++m_state.passes;
        m_status.running = false;
        m_status.passes = m_state.passes;
        m_status.last_pass_finished_at = m_state.last_pass_finished_at;
        m_status.orphans_removed += orphans;
      }
      save(true);
      continue;
    }
    check(*key);
    {
      std::lock_guard lock(m_mutex);
      if (m_stopping || m_start_requested) {
        continue; // the blob was cut short: not checked
      }
      m_state.cursor = *key;
    }
    save(false);
  }
}

Expected<VerifyReport, std::string> verify_data_dir(const fs::path& data_dir,
                                                    const std::function<void(const VerifyProgress&)>& progress) {
  const fs::path db_path = data_dir / "cache.db";
  std::error_code ec;
  if (!fs::exists(db_path, ec)) {
    return unexpected("no cache.db in " + data_dir.string());
  }
  VerifyReport report;
  VerifyProgress at;
  std::vector<detail::Digest> keys;
  try {
    SQLite::Database db(db_path.string(), SQLite::OPEN_READONLY, 5000);
    {
      SQLite::Statement totals(db, "SELECT count(*), COALESCE(sum(size), 0) FROM artifacts");
      totals.executeStep();
      at.artifacts_total = static_cast<std::uint64_t>(std::max<std::int64_t>(0, totals.getColumn(0).getInt64()));
      at.bytes_total = static_cast<std::uint64_t>(std::max<std::int64_t>(0, totals.getColumn(1).getInt64()));
    }
    keys.reserve(at.artifacts_total);
    SQLite::Statement rows(db, "SELECT key, url, size, sha256 FROM artifacts ORDER BY key");
    auto last_report = Clock::now();
    while (rows.executeStep()) {
      const std::string key = rows.getColumn(0).getString();
      const std::string url = rows.getColumn(1).getString();
      const auto size = static_cast<std::uint64_t>(std::max<std::int64_t>(0, rows.getColumn(2).getInt64()));
      const std::string sha = rows.getColumn(3).getString();
      if (const auto digest = detail::digest_from_hex(key)) {
        keys.push_back(*digest);
      }
      ++report.artifacts;
      report.bytes += size;
      const fs::path blob = data_dir / "blobs" / key;
      // Nothing outside the data dir is hashed or named, and nothing planted blocks the check.
      auto opened = util::open_regular(blob, O_RDONLY);
      const int fd = opened ? opened->fd : -1;
      if (!opened) {
        const auto& failure = opened.error();
        report.problems.push_back({key, url,
                                   failure.reason == util::FileRefusal::failed
                                       ? "cannot open: " + failure.message
                                       : failure.message});
      } else if (static_cast<std::uint64_t>(opened->info.st_size) != size) {
        report.problems.push_back(
            {key, url,
             "size " + std::to_string(opened->info.st_size) + " instead of " + std::to_string(size)});
      } else {
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        std::uint64_t read = 0;
        const auto found = hash_fd(fd, read, [&](std::uint64_t n) {
          at.bytes_done += n;
          if (progress && Clock::now() - last_report >= std::chrono::milliseconds(200)) {
            last_report = Clock::now();
            progress(at);
          }
          return true;
        });
        if (!found) {
          report.problems.push_back({key, url, std::string("cannot read: ") + std::strerror(errno)});
        } else if (*found != sha) {
          report.problems.push_back({key, url, "sha256 " + *found + " instead of " + sha});
        }
      }
      if (fd >= 0) {
        ::close(fd);
      }
      ++at.artifacts_done;
      if (progress && Clock::now() - last_report >= std::chrono::milliseconds(200)) {
        last_report = Clock::now();
        progress(at);
      }
    }
  } catch (const std::exception& e) {
    return unexpected("cannot read " + db_path.string() + ": " + e.what());
  }
  std::sort(keys.begin(), keys.end());
  for (fs::directory_iterator it(data_dir / "blobs", ec), end; !ec && it != end; it.increment(ec)) {
    const auto digest = detail::digest_from_hex(it->path().filename().string());
    if (digest && !std::binary_search(keys.begin(), keys.end(), *digest)) {
      ++report.orphans;
    }
  }
  if (progress) {
    progress(at);
  }
  return report;
}

} // namespace withcache::store
