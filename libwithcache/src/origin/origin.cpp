#include "withcache/origin.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http/http.hpp"
#include "origin/http_client.hpp"
#include "util/regular_file.hpp"
#include "withcache/digest.hpp"
#include "withcache/url.hpp"
#include "withcache/util/encoding.hpp"
#include "withcache/util/size.hpp"
#include "withcache/util/strings.hpp"
#include "withcache/version.hpp"

namespace withcache::origin {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t k_hash_chunk = 1 << 20;
// The connection hands the body over in pieces of up to 256 KiB (16 KiB over TLS); batching them into
// 1 MiB writes saves syscalls.
constexpr std::size_t k_write_buffer = 1 << 20;

using util::iequals;
using util::to_lower;

// `shown` is the redacted URL; the message is `shown: detail`.
FetchError make_error(FetchErrc reason, std::string_view shown, std::string detail, int status = 0) {
  std::string message = shown.empty() ? detail : std::string(shown) + ": " + detail;
  return FetchError{reason, status, std::move(message), std::move(detail)};
}

// `30 s`, `1.5 s`, `500 ms`: a deadline as the operator configured it.
std::string duration_text(std::chrono::milliseconds duration) {
  const auto ms = duration.count();
  if (ms % 1000 == 0) {
    return std::to_string(ms / 1000) + " s";
  }
  if (ms > 1000) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.1f s", static_cast<double>(ms) / 1000.0);
    return buffer;
  }
  return std::to_string(ms) + " ms";
}

// The part file: an fd opened for appending, its size and the running SHA-256. In stream mode
// (FetchRequest::sink) the bytes go to the sink instead and no file is touched.
class PartFile {
 public:
  using Sink = std::function<bool(const char*, std::size_t)>;
  PartFile(const std::filesystem::path& path, PartObserver* observer, Sink sink = {})
      : m_path(path), m_observer(observer), m_sink(std::move(sink)) {
    if (!m_sink) {
      m_buffer.reserve(k_write_buffer);
    }
  }
  ~PartFile() {
    if (m_fd >= 0) {
      flush(); // keep what arrived, so a resumed fill need not fetch it again
      ::close(m_fd);
    }
  }
  PartFile(const PartFile&) = delete;
  PartFile& operator=(const PartFile&) = delete;

  // Opens (creating) the file and hashes the bytes already in it.
  std::optional<std::string> open() {
    if (m_sink) {
      return std::nullopt;
    }
    // A link, FIFO or hard link planted as the part is refused before a byte is read or appended.
    auto opened = util::open_regular(m_path, O_RDWR | O_CREAT | O_APPEND, 0644);
    if (!opened) {
      return "cannot open " + m_path.string() + ": " + opened.error().message;
    }
    m_fd = opened->fd;
    std::vector<char> buffer(k_hash_chunk);
    for (;;) {
      const ssize_t n = ::pread(m_fd, buffer.data(), buffer.size(), static_cast<off_t>(m_size));
      if (n < 0) {
        return "cannot read " + m_path.string() + ": " + std::strerror(errno);
      }
      if (n == 0) {
        break;
      }
      m_sha.update(buffer.data(), static_cast<std::size_t>(n));
      m_size += static_cast<std::uint64_t>(n);
    }
    m_written = m_size;
    if (m_observer != nullptr) {
      m_observer->opened(m_fd);
    }
    return std::nullopt;
  }

  // Starts over from zero. The file is replaced, not truncated: whoever reads
  // the old one (a client served while filling) keeps its bytes unchanged.
  std::optional<std::string> restart() {
    if (m_sink) {
      if (m_size > 0) {
        return std::string("bytes already streamed cannot be taken back");
      }
      return std::nullopt;
    }
    m_buffer.clear();
    if (m_observer != nullptr) {
      m_observer->restarting();
    }
    if (::unlink(m_path.c_str()) != 0 && errno != ENOENT) {
      return "cannot remove " + m_path.string() + ": " + std::strerror(errno);
    }
    ::close(m_fd);
    // O_EXCL: the name was just removed, so anything there now was planted meanwhile; never truncated.
    auto created = util::open_regular(m_path, O_RDWR | O_CREAT | O_EXCL | O_APPEND, 0644);
    m_fd = created ? created->fd : -1;
    m_size = 0;
    m_written = 0;
    m_sha.reset();
    if (m_fd < 0) {
      return "cannot create " + m_path.string() + ": " + created.error().message;
    }
    if (m_observer != nullptr) {
      m_observer->opened(m_fd);
    }
    return std::nullopt;
  }

  bool append(const char* data, std::size_t length) {
    m_sha.update(data, length);
    m_size += length;
    if (m_sink) {
      return m_sink(data, length);
    }
    if (m_buffer.size() + length > k_write_buffer && !flush()) {
      return false;
    }
    if (length >= k_write_buffer) {
      if (!write_all(data, length)) {
        return false;
      }
      m_written += length;
      notify();
      return true;
    }
    m_buffer.insert(m_buffer.end(), data, data + length);
    // Readers of a growing file should not wait for a whole buffer from a slow origin.
    if (m_observer != nullptr && Clock::now() - m_flushed_at >= std::chrono::milliseconds(50)) {
      return flush();
    }
    return true;
  }

  bool flush() {
    const bool ok = write_all(m_buffer.data(), m_buffer.size());
    if (ok) {
      m_written += m_buffer.size();
    }
    m_buffer.clear();
    m_flushed_at = Clock::now();
    if (ok) {
      notify();
    }
    return ok;
  }

  bool sync() { return m_sink ? true : flush() && ::fsync(m_fd) == 0; }
  [[nodiscard]] bool streaming() const noexcept { return static_cast<bool>(m_sink); }

  // The hex digest of everything appended so far (the context stays usable).
  std::string hex_digest() const { return m_sha.hex(); }

  [[nodiscard]] std::uint64_t size() const noexcept { return m_size; }
  /** Bytes actually in the file (size() less what is still in the write buffer). */
  [[nodiscard]] std::uint64_t written() const noexcept { return m_written; }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return m_path; }

 private:
  void notify() {
    if (m_observer != nullptr) {
      m_observer->written(m_written);
    }
  }

  bool write_all(const char* data, std::size_t length) {
    std::size_t written = 0;
    while (written < length) {
      const ssize_t n = ::write(m_fd, data + written, length - written);
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        return false;
      }
      written += static_cast<std::size_t>(n);
    }
    return true;
  }

  std::filesystem::path m_path;
  PartObserver* m_observer = nullptr;
  Sink m_sink;
  digest::Sha256 m_sha;
  int m_fd = -1;
  std::uint64_t m_size = 0;    // bytes appended (some may still be in the buffer)
  std::uint64_t m_written = 0; // bytes in the file
  std::vector<char> m_buffer;
  Clock::time_point m_flushed_at = Clock::now();
};

std::string address_text(const sockaddr* address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address->sa_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, text, sizeof text);
  } else if (address->sa_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr, text, sizeof text);
  }
  return text;
}

// The caching headers kept from the response the bytes belong to: written to
// the resume state and handed back in FetchResult.
constexpr std::string_view k_kept_headers[] = {"ETag",          "Last-Modified",   "Cache-Control",
                                               "Expires",       "Date",            "Age",
                                               "Content-Type",  "Content-Encoding", "Content-Disposition"};

// What the part file's bytes are: the first (200) response they came from.
struct Representation {
  bool known = false;      // false: part bytes of unknown origin (a blind resume)
  std::uint64_t total = 0; // its declared length; 0 when it declared none
  Headers headers;         // k_kept_headers it carried

  [[nodiscard]] std::string header(std::string_view name) const {
    return std::string(http::find_field(headers, name).value_or(""));
  }
  // The validator If-Range carries: a strong ETag, else Last-Modified; empty when neither.
  [[nodiscard]] std::string if_range() const {
    const std::string etag = header("ETag");
    if (!etag.empty() && !etag.starts_with("W/")) {
      return etag;
    }
    return header("Last-Modified");
  }
};

Headers kept_headers(const ResponseHead& response) {
  Headers kept;
  for (const auto name : k_kept_headers) {
    // A value that is not a valid field value (a bare CR, say) is not kept: it would be replayed to
    // every reader of the artifact, and would tear the resume state's lines.
    if (const auto value = http::find_field(response.fields, name);
        value && !http::check_field(name, *value)) {
      kept.emplace_back(std::string(name), std::string(*value));
    }
  }
  return kept;
}

// The resume state file: a version line, the declared total, the kept
// headers, and an end line, so that a torn write never parses.
constexpr std::string_view k_state_magic = "withcache-resume 1";

std::optional<std::string> write_state(const std::filesystem::path& path, const Representation& rep) {
  if (path.empty()) {
    return std::nullopt;
  }
  std::string text(k_state_magic);
  text += "\ntotal " + std::to_string(rep.total) + "\n";
  for (const auto& [name, value] : rep.headers) {
    text += name + ": " + value + "\n";
  }
  text += "end\n";
  // Truncated only once checked: O_TRUNC would empty a planted hard link's file before the check.
  auto opened = util::open_regular(path, O_WRONLY | O_CREAT, 0600);
  if (!opened) {
    return "cannot write " + path.string() + ": " + opened.error().message;
  }
  const int fd = opened->fd;
  if (::ftruncate(fd, 0) != 0) {
    const std::string error = std::strerror(errno);
    ::close(fd);
    return "cannot write " + path.string() + ": " + error;
  }
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      const std::string error = std::strerror(errno);
      ::close(fd);
      return "cannot write " + path.string() + ": " + error;
    }
    written += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return std::nullopt;
}

std::optional<Representation> read_state(const std::filesystem::path& path) {
  if (path.empty()) {
    return std::nullopt;
  }
  auto opened = util::open_regular(path, O_RDONLY);
  if (!opened) {
    return std::nullopt; // none, or not ours: the part is not trusted
  }
  std::string text;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(opened->fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    text.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(opened->fd);
  const std::string head = std::string(k_state_magic) + "\ntotal ";
  if (!text.starts_with(head) || !text.ends_with("\nend\n")) {
    return std::nullopt;
  }
  std::string_view body(text);
  body.remove_prefix(head.size());
  body.remove_suffix(std::string_view("end\n").size());
  const std::size_t eol = body.find('\n');
  const auto total = http::parse_decimal(body.substr(0, eol));
  auto headers = http::parse_header_lines(eol == std::string_view::npos ? "" : body.substr(eol + 1));
  if (!total || !headers) {
    return std::nullopt;
  }
  Representation rep;
  rep.known = true;
  rep.total = *total;
  rep.headers = std::move(*headers);
  return rep;
}

void remove_state(const std::filesystem::path& path) {
  if (!path.empty()) {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
}

// What one HTTP exchange ended with.
enum class Step { complete, redirect, retry, fail };

struct AttemptResult {
  Step step = Step::fail;
  FetchError error;
  std::string location;
};

struct FetchState {
  const FetchRequest& request;
  const FetchOptions& options;
  PartFile part;
  Representation rep;         // what the part's bytes are
  std::uint64_t declared = 0; // total size when known
  Headers response_headers;   // of the last non-redirect response
  bool not_modified = false;
  Headers not_modified_headers; // the 304's kept headers
};

// Empties the part and forgets what it held: the next request starts from byte zero.
std::optional<std::string> restart(FetchState& state) {
  remove_state(state.request.resume_state_path);
  state.rep = {};
  return state.part.restart();
}

// Resolves the origin host and applies the policy to every address it has
// (one private address among public ones refuses the name: DNS may answer
// either later), and refuses the server's own listening sockets. Returns the
// address to connect to, which the connection is pinned to, so the name is
// never resolved again between the check and the connect.
Expected<std::string, FetchError> resolve_checked(const url::Target& target, const FetchOptions& options,
                                                  bool via_proxy, std::string_view shown) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(target.host.c_str(), nullptr, &hints, &found);
  if (rc != 0) {
    if (via_proxy) {
      return std::string{}; // the proxy resolves names we cannot
    }
    return unexpected(
        make_error(FetchErrc::connect, shown, "cannot resolve " + target.host + ": " + ::gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(found, ::freeaddrinfo);
  std::string chosen;
  for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    if (auto refused = options.policy.check_address(target.host, ai->ai_addr)) {
      return unexpected(make_error(FetchErrc::refused_origin, shown, *refused));
    }
    if (options.own_listeners) {
      if (auto self = options.own_listeners->check(ai->ai_addr, target.port)) {
        return unexpected(make_error(FetchErrc::refused_origin, shown, *self));
      }
    }
    if (chosen.empty()) {
      chosen = address_text(ai->ai_addr);
    }
  }
  return chosen;
}

// The body length the head declares, if any; framing_error() has refused every ambiguous head.
std::optional<std::uint64_t> declared_length(const ResponseHead& response) {
  const auto lengths = response.all("Content-Length");
  if (lengths.empty()) {
    return std::nullopt;
  }
  return http::parse_decimal(util::trim(lengths[0]));
}

// Why the cache must not store this response, when it must not.
std::optional<std::string> unstorable(const ResponseHead& response, const FetchOptions& options) {
  if (!options.only_storable) {
    return std::nullopt;
  }
  for (const auto& value : response.all("Cache-Control")) {
    const auto directives = http::parse_cache_control(value);
    if (http::find_directive(directives, "no-store") != nullptr) {
      return std::string("origin marked it no-store");
    }
    // `private="Set-Cookie"` only keeps those fields out of a shared cache.
    if (const auto* p = http::find_directive(directives, "private"); p != nullptr && !p->has_argument) {
      return std::string("origin marked it private");
    }
  }
  if (!options.cache_html) {
    const std::string type = response.get("Content-Type");
    const std::string media = util::lower(util::trim(std::string_view(type).substr(0, type.find(';'))));
    if (media == "text/html" || media == "application/xhtml+xml") {
      return "an HTML page (" + media + "; start the server with --cache-html to store pages)";
    }
  }
  return std::nullopt;
}

// Watches one attempt from another thread: the cancel flag, the deadline of
// the response head and the minimum rate of the body. It interrupts the connection (whose every wait
// also watches an eventfd) and says why.
class Watchdog {
 public:
  Watchdog(HttpConnection& connection, const FetchOptions& options, const std::atomic<bool>* cancel)
      : m_connection(connection), m_options(options), m_cancel(cancel), m_started(Clock::now()) {
    m_thread = std::thread([this] { watch(); });
  }
  ~Watchdog() { finish(); }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void head_arrived() {
    std::lock_guard lock(m_mutex);
    m_head = true;
    m_samples.clear();
    m_samples.push_back({Clock::now(), m_bytes.load()});
  }
  void add_bytes(std::size_t n) { m_bytes += n; }
  [[nodiscard]] bool head_seen() const {
    std::lock_guard lock(m_mutex);
    return m_head;
  }
  // Ends the watch; afterwards why() is stable.
  void finish() {
    {
      std::lock_guard lock(m_mutex);
      m_finished = true;
    }
    m_cv.notify_all();
    if (m_thread.joinable()) {
      m_thread.join();
    }
  }
  // Why the watchdog stopped the client, if it did.
  [[nodiscard]] std::optional<std::pair<FetchErrc, std::string>> why() const {
    std::lock_guard lock(m_mutex);
    return m_why;
  }

 private:
  struct Sample {
    Clock::time_point time;
    std::uint64_t bytes;
  };

  void watch() {
    std::unique_lock lock(m_mutex);
    while (!m_finished) {
      if (!m_why) {
        m_why = check();
      }
      if (m_why) {
        lock.unlock();
        m_connection.interrupt();
        lock.lock();
      }
      m_cv.wait_for(lock, std::chrono::milliseconds(20));
    }
  }

  // m_mutex held.
  std::optional<std::pair<FetchErrc, std::string>> check() {
    const auto now = Clock::now();
    if (m_cancel != nullptr && m_cancel->load()) {
      return std::pair{FetchErrc::cancelled, std::string("cancelled")};
    }
    if (!m_head) {
      if (m_options.head_timeout.count() > 0 && now - m_started >= m_options.head_timeout) {
        return std::pair{FetchErrc::timeout, "no response head within " + duration_text(m_options.head_timeout)};
      }
      return std::nullopt;
    }
    if (m_options.min_rate == 0 || m_options.rate_window.count() <= 0) {
      return std::nullopt;
    }
    const std::uint64_t bytes = m_bytes.load();
    if (now - m_samples.back().time >= m_options.rate_window / 100) {
      m_samples.push_back({now, bytes});
    }
    // The baseline: the newest sample at least one window old.
    const auto window_start = now - m_options.rate_window;
    std::size_t base = m_samples.size();
    for (std::size_t i = 0; i < m_samples.size() && m_samples[i].time <= window_start; ++i) {
      base = i;
    }
    if (base == m_samples.size()) {
      return std::nullopt; // not one window of body yet
    }
    m_samples.erase(m_samples.begin(), m_samples.begin() + static_cast<std::ptrdiff_t>(base));
    const double seconds = std::chrono::duration<double>(now - m_samples.front().time).count();
    const double moved = static_cast<double>(bytes - m_samples.front().bytes);
    if (moved < static_cast<double>(m_options.min_rate) * seconds) {
      return std::pair{FetchErrc::too_slow, "below the minimum rate: " + std::to_string(bytes - m_samples.front().bytes) +
                                                " bytes in " + duration_text(m_options.rate_window) + " (at least " +
                                                util::format_rate(static_cast<double>(m_options.min_rate)) +
                                                " is required)"};
    }
    return std::nullopt;
  }

  HttpConnection& m_connection;
  const FetchOptions& m_options;
  const std::atomic<bool>* m_cancel;
  const Clock::time_point m_started;
  std::atomic<std::uint64_t> m_bytes{0};
  mutable std::mutex m_mutex;
  std::condition_variable m_cv;
  bool m_finished = false;
  bool m_head = false;
  std::vector<Sample> m_samples;
  std::optional<std::pair<FetchErrc, std::string>> m_why;
  std::thread m_thread;
};

bool outcome_is_redirect(const AttemptResult& result) {
  return result.step == Step::redirect;
}

AttemptResult attempt(FetchState& state, const std::string& current_url, const Headers& headers) {
  const std::string shown = url::redact(current_url);
  const auto target = url::parse_target(current_url);
  if (!target) {
    return {Step::fail, make_error(FetchErrc::refused_origin, shown, target.error().message), {}};
  }
  const util::Getenv getenv = state.options.getenv ? state.options.getenv : util::process_env();
  const auto proxy = proxy_for(target->scheme, target->host, getenv);
  auto address = resolve_checked(*target, state.options, proxy.has_value(), shown);
  if (!address) {
    const FetchError& e = address.error();
    return {e.reason == FetchErrc::connect ? Step::retry : Step::fail, e, {}};
  }

  Endpoint endpoint;
  endpoint.scheme = target->scheme;
  endpoint.host = target->host;
  endpoint.port = target->port;
  endpoint.address = proxy ? std::string() : *address; // pinned: the name is not resolved again
  endpoint.proxy = proxy;
  endpoint.ca_file = state.options.ca_file;
  endpoint.connect_timeout = state.options.connect_timeout;
  endpoint.io_timeout = state.options.read_timeout;
  HttpConnection connection;

  // Part bytes that no validator and no declared length can vouch for are not resumed.
  if (state.part.size() > 0 && state.rep.known && state.rep.if_range().empty() && state.rep.total == 0) {
    if (auto err = restart(state)) {
      return {Step::fail,
              make_error(state.part.streaming() ? FetchErrc::truncated : FetchErrc::io, shown,
                         "the body broke off and nothing vouches for resuming it; " + *err),
              {}};
    }
  }

  Headers request_headers;
  request_headers.emplace_back("User-Agent", k_product);
  request_headers.emplace_back("Accept-Encoding", "identity");
  request_headers.insert(request_headers.end(), headers.begin(), headers.end());
  const std::uint64_t resume_from = state.part.size();
  const bool conditional = resume_from == 0 && !state.request.conditional.empty();
  if (resume_from > 0) {
    request_headers.emplace_back("Range", "bytes=" + std::to_string(resume_from) + "-");
    if (const std::string validator = state.rep.if_range(); state.rep.known && !validator.empty()) {
      request_headers.emplace_back("If-Range", validator);
    }
  } else if (conditional) {
    if (!state.request.conditional.etag.empty()) {
      request_headers.emplace_back("If-None-Match", state.request.conditional.etag);
    }
    if (!state.request.conditional.last_modified.empty()) {
      request_headers.emplace_back("If-Modified-Since", state.request.conditional.last_modified);
    }
  }

  AttemptResult outcome;
  bool decided = false; // a handler settled the outcome
  std::optional<Watchdog> watchdog;

  auto decide = [&](Step step, FetchError error) {
    outcome.step = step;
    outcome.error = std::move(error);
    decided = true;
    return false;
  };
  auto fail = [&](FetchErrc reason, std::string detail, int status = 0) {
    return decide(Step::fail, make_error(reason, shown, std::move(detail), status));
  };
  // Not the continuation of the bytes we hold: start over from zero on the next attempt.
  auto start_over = [&](const std::string& why) {
    if (auto err = restart(state)) {
      return fail(state.part.streaming() ? FetchErrc::truncated : FetchErrc::io, why + "; " + *err);
    }
    return decide(Step::retry, make_error(FetchErrc::truncated, shown, why + "; restarting from zero"));
  };

  auto on_response = [&](const ResponseHead& response) -> bool {
    watchdog->head_arrived();
    const int status = response.status;
    if (status == 301 || status == 302 || status == 303 || status == 307 || status == 308) {
      if (!response.has("Location")) {
        return fail(FetchErrc::http_status, "HTTP " + std::to_string(status) + " without Location", status);
      }
      outcome.location = response.get("Location");
      return decide(Step::redirect, {});
    }
    if (status == 304 && conditional) {
      state.not_modified = true;
      state.not_modified_headers = kept_headers(response);
      return decide(Step::complete, {});
    }
    // read_head() refused every head whose framing is in doubt.
    const std::optional<std::uint64_t> content_length = declared_length(response);
    const bool has_length = content_length.has_value();
    const std::uint64_t length = content_length.value_or(0);
    if (status == 200 || status == 206) {
      if (auto refused = unstorable(response, state.options)) {
        return fail(FetchErrc::not_storable, *refused);
      }
    }

    std::uint64_t declared = 0;
    if (status == 200) {
      // The first response, or a new one: the origin ignored our Range, or
      // If-Range found the representation changed. Its bytes start at zero.
      if (state.part.size() > 0) {
        if (auto err = state.part.restart()) {
          return fail(state.part.streaming() ? FetchErrc::truncated : FetchErrc::io, *err);
        }
      }
      state.rep.known = true;
      state.rep.total = has_length ? length : 0;
      state.rep.headers = kept_headers(response);
      // Written before the first body byte: part bytes always have a state that describes them.
      if (auto err = write_state(state.request.resume_state_path, state.rep)) {
        return fail(FetchErrc::io, *err);
      }
      declared = state.rep.total;
    } else if (status == 206) {
      const auto range = http::parse_content_range(response.get("Content-Range"));
      if (resume_from == 0 || !range || range->unsatisfied || range->first != resume_from || range->total == 0) {
        return start_over("origin answered Range with a different range");
      }
      if (has_length && length != range->last - range->first + 1) {
        return fail(FetchErrc::malformed, "Content-Length " + std::to_string(length) +
                                              " does not match Content-Range " +
                                              response.get("Content-Range"));
      }
      if (state.rep.known) {
        const Representation& first = state.rep;
        if (first.total != 0 && range->total != first.total) {
          return start_over("the resumed response has " + std::to_string(range->total) +
                            " bytes where the first had " + std::to_string(first.total));
        }
        const std::string etag = first.header("ETag");
        const std::string validator = first.if_range();
        if (!validator.empty()) {
          const bool by_etag = validator == etag;
          const std::string now = response.get(by_etag ? "ETag" : "Last-Modified");
          if (now != validator) {
            return start_over(std::string("the resumed response has another ") +
                              (by_etag ? "ETag" : "Last-Modified"));
          }
        }
        const auto coding = [](std::string_view value) {
          const std::string lowered = util::lower(util::trim(value));
          return lowered == "identity" ? std::string{} : lowered;
        };
        if (coding(response.get("Content-Encoding")) != coding(first.header("Content-Encoding"))) {
          return start_over("the resumed response has another Content-Encoding");
        }
        if (first.total == 0) {
          state.rep.total = range->total;
        }
      } else {
        // A blind resume of bytes found on disk: from here on, this response is what they are.
        state.rep.known = true;
        state.rep.total = range->total;
        state.rep.headers = kept_headers(response);
        if (auto err = write_state(state.request.resume_state_path, state.rep)) {
          return fail(FetchErrc::io, *err);
        }
      }
      declared = range->total;
    } else if (status == 416 && resume_from > 0) {
      const auto range = http::parse_content_range(response.get("Content-Range"));
      const bool holds_all = range && range->unsatisfied && range->total == resume_from;
      const std::string etag = state.rep.header("ETag");
      const bool same =
          !state.rep.known || (state.rep.total == resume_from &&
                               (!response.has("ETag") || etag.empty() || response.get("ETag") == etag));
      if (holds_all && same) {
        state.declared = resume_from; // we already hold every byte
        return decide(Step::complete, {});
      }
      return start_over("origin refused our Range (416)");
    } else {
      const Step step = status >= 500 ? Step::retry : Step::fail;
      return decide(step, make_error(FetchErrc::http_status, shown, "origin answered HTTP " + std::to_string(status),
                                     status));
    }
    state.declared = declared;
    if (declared > 0 && state.request.may_store && !state.request.may_store(declared)) {
      return fail(FetchErrc::cache_full, std::to_string(declared) + " bytes do not fit in the cache");
    }
    if (state.request.observer != nullptr) {
      // The bytes in the file (a resume) belong to this representation; more follow.
      state.request.observer->head(declared, state.rep.headers);
      // Only what is in the file: bytes of a broken attempt may still wait in the write buffer.
      state.request.observer->written(state.part.written());
    }
    if (state.request.on_progress) {
      state.request.on_progress(state.part.size(), state.declared);
    }
    return true;
  };

  auto on_content = [&](const char* data, std::size_t length) -> bool {
    if (state.request.cancel != nullptr && state.request.cancel->load()) {
      return fail(FetchErrc::cancelled, "cancelled");
    }
    watchdog->add_bytes(length);
    if (state.declared > 0 && state.part.size() + length > state.declared) {
      return fail(FetchErrc::malformed,
                  "origin sent more than its declared " + std::to_string(state.declared) + " bytes");
    }
    if (state.declared == 0 && state.request.may_store && !state.request.may_store(state.part.size() + length)) {
      return fail(FetchErrc::cache_full, "the cache is full");
    }
    if (!state.part.append(data, length)) {
      if (state.part.streaming()) {
        return fail(FetchErrc::io, "cannot write the output (closed?)");
      }
      return fail(FetchErrc::io, "cannot write " + state.part.path().string() + ": " + std::strerror(errno));
    }
    if (state.request.on_progress) {
      state.request.on_progress(state.part.size(), state.declared);
    }
    return true;
  };

  // The exchange, step by step; `wire` is why it stopped early, `head` what the origin answered.
  enum class Phase { connecting, waiting_head, body } phase = Phase::connecting;
  std::optional<WireError> wire;
  std::optional<ResponseHead> head;
  watchdog.emplace(connection, state.options, state.request.cancel);
  wire = connection.open(endpoint);
  if (!wire) {
    phase = Phase::waiting_head;
    wire = connection.send("GET", target->request, request_headers);
  }
  if (!wire) {
    if (auto got = connection.read_head(k_head_limits)) {
      head = std::move(*got);
    } else {
      wire = got.error();
    }
  }
  if (head && on_response(*head)) {
    phase = Phase::body;
    wire = connection.read_body(on_content);
  }
  watchdog->finish();
  if (head && !outcome_is_redirect(outcome)) {
    state.response_headers = std::move(head->fields); // of the last non-redirect response
  }
  if (decided) {
    return outcome;
  }
  if (state.request.cancel != nullptr && state.request.cancel->load()) {
    return {Step::fail, make_error(FetchErrc::cancelled, shown, "cancelled"), {}};
  }
  const bool whole = !wire && (state.declared == 0 || state.part.size() == state.declared);
  if (const auto why = watchdog->why(); why && !whole) {
    // A stall before the head or a trickle is not retried: the next attempt would do the same.
    return {Step::fail, make_error(why->first, shown, why->second), {}};
  }

  if (wire) {
    switch (wire->code) {
    case WireErrc::tls:
      return {Step::fail, make_error(FetchErrc::tls, shown, wire->message), {}};
    case WireErrc::malformed:
      // An oversized or broken head, bad framing or a bad chunk: the next attempt would get the same.
      return {Step::fail, make_error(FetchErrc::malformed, shown, wire->message), {}};
    case WireErrc::connect:
      if (phase == Phase::connecting) {
        return {Step::retry, make_error(FetchErrc::connect, shown, wire->message), {}};
      }
      break;
    case WireErrc::timeout:
      if (phase == Phase::connecting) {
        return {Step::retry, make_error(FetchErrc::timeout, shown, "connect timed out"), {}};
      }
      if (phase == Phase::waiting_head) {
        // No head at all, like the watchdog's head deadline (which a read timeout as short can beat):
        // the next attempt would wait the same, so it is not retried.
        return {Step::fail,
                make_error(FetchErrc::timeout, shown,
                           "no response head within " + duration_text(state.options.read_timeout)),
                {}};
      }
      return {Step::retry, make_error(FetchErrc::timeout, shown, "read timed out"), {}};
    case WireErrc::closed:
    case WireErrc::interrupted:
    case WireErrc::aborted:
      break;
    }
  }
  if (state.declared > 0 && state.part.size() < state.declared) {
    return {Step::retry,
            make_error(FetchErrc::truncated, shown,
                       "body truncated: declared " + std::to_string(state.declared) + " bytes, received " +
                           std::to_string(state.part.size())),
            {}};
  }
  if (wire) {
    // No declared length: a dropped connection cannot be told from the end.
    return {Step::retry, make_error(FetchErrc::connect, shown, wire->message), {}};
  }
  return {Step::complete, {}, {}};
}

bool same_origin(std::string_view a, std::string_view b) {
  const auto ta = url::parse_target(a);
  const auto tb = url::parse_target(b);
  return ta && tb && ta->scheme == tb->scheme && ta->host == tb->host && ta->port == tb->port;
}

// Waits `delay` unless cancelled first; returns false when cancelled.
bool pause(std::chrono::milliseconds delay, const std::atomic<bool>* cancel) {
  const auto until = Clock::now() + delay;
  while (Clock::now() < until) {
    if (cancel != nullptr && cancel->load()) {
      return false;
    }
    std::this_thread::sleep_for(
        std::min<Clock::duration>(std::chrono::milliseconds(20), until - Clock::now()));
  }
  return cancel == nullptr || !cancel->load();
}

} // namespace

std::string_view to_string(FetchErrc reason) {
  switch (reason) {
  case FetchErrc::http_status:
    return "http_status";
  case FetchErrc::timeout:
    return "timeout";
  case FetchErrc::tls:
    return "tls";
  case FetchErrc::truncated:
    return "truncated";
  case FetchErrc::refused_origin:
    return "refused_origin";
  case FetchErrc::cache_full:
    return "cache_full";
  case FetchErrc::cancelled:
    return "cancelled";
  case FetchErrc::io:
    return "io";
  case FetchErrc::malformed:
    return "malformed";
  case FetchErrc::connect:
    return "connect";
  case FetchErrc::not_storable:
    return "not_storable";
  case FetchErrc::too_slow:
    return "too_slow";
  }
  return "io";
}

bool glob_match(std::string_view pattern, std::string_view text) {
  std::size_t p = 0;
  std::size_t t = 0;
  std::size_t star = std::string_view::npos;
  std::size_t resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (p < pattern.size() && to_lower(pattern[p]) == to_lower(text[t])) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') {
    ++p;
  }
  return p == pattern.size();
}

struct OwnListeners::Listener {
  sockaddr_storage address{}; // port ignored; the listening port is `port`
  int port = 0;
  bool wildcard = false; // 0.0.0.0 or ::
};

namespace {

// An address in a comparable form: IPv4-mapped IPv6 becomes IPv4; the port is dropped.
struct Ip {
  int family = 0;
  std::array<unsigned char, 16> bytes{};
  bool operator==(const Ip&) const = default;
};

std::optional<Ip> ip_of(const sockaddr* address) {
  Ip ip;
  if (address->sa_family == AF_INET) {
    ip.family = AF_INET;
    std::memcpy(ip.bytes.data(), &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, 4);
    return ip;
  }
  if (address->sa_family == AF_INET6) {
    const in6_addr& v6 = reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&v6)) {
      ip.family = AF_INET;
      std::memcpy(ip.bytes.data(), &v6.s6_addr[12], 4);
    } else {
      ip.family = AF_INET6;
      std::memcpy(ip.bytes.data(), &v6, 16);
    }
    return ip;
  }
  return std::nullopt;
}

bool is_unspecified(const Ip& ip) {
  const std::size_t n = ip.family == AF_INET ? 4 : 16;
  return std::all_of(ip.bytes.begin(), ip.bytes.begin() + static_cast<std::ptrdiff_t>(n),
                     [](unsigned char b) { return b == 0; });
}

bool is_loopback(const Ip& ip) {
  if (ip.family == AF_INET) {
    return ip.bytes[0] == 127;
  }
  static constexpr std::array<unsigned char, 16> k_v6_loopback{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  return ip.bytes == k_v6_loopback;
}

// True when `ip` reaches this host: loopback, unspecified, or an address of one of its interfaces.
bool is_local(const Ip& ip) {
  if (is_loopback(ip) || is_unspecified(ip)) {
    return true;
  }
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) {
    return false;
  }
  bool found = false;
  for (const ifaddrs* entry = list; entry != nullptr && !found; entry = entry->ifa_next) {
    if (entry->ifa_addr != nullptr) {
      const auto local = ip_of(entry->ifa_addr);
      found = local && *local == ip;
    }
  }
  ::freeifaddrs(list);
  return found;
}

} // namespace

namespace {

struct Range {
  std::array<unsigned char, 16> bytes;
  unsigned prefix;
  const char* why;
};

bool in_prefix(const unsigned char* address, const unsigned char* network, unsigned prefix) {
  const unsigned whole = prefix / 8;
  if (std::memcmp(address, network, whole) != 0) {
    return false;
  }
  const unsigned rest = prefix % 8;
  if (rest == 0) {
    return true;
  }
  const auto mask = static_cast<unsigned char>(0xFF << (8 - rest));
  return (address[whole] & mask) == (network[whole] & mask);
}

// IANA IPv4 Special-Purpose Address Registry: every range that is not globally reachable unicast.
constexpr Range k_v4_ranges[] = {
    {{0, 0, 0, 0}, 8, "\"this network\" (0.0.0.0/8)"},
    {{10, 0, 0, 0}, 8, "private (RFC 1918)"},
    {{100, 64, 0, 0}, 10, "shared CGNAT (RFC 6598)"},
    {{127, 0, 0, 0}, 8, "loopback"},
    {{169, 254, 0, 0}, 16, "link-local"},
    {{172, 16, 0, 0}, 12, "private (RFC 1918)"},
    {{192, 0, 0, 0}, 24, "IETF protocol assignments (192.0.0.0/24)"},
    {{192, 0, 2, 0}, 24, "documentation (TEST-NET-1)"},
    {{192, 88, 99, 0}, 24, "6to4 relay anycast (deprecated)"},
    {{192, 168, 0, 0}, 16, "private (RFC 1918)"},
    {{198, 18, 0, 0}, 15, "benchmarking (RFC 2544)"},
    {{198, 51, 100, 0}, 24, "documentation (TEST-NET-2)"},
    {{203, 0, 113, 0}, 24, "documentation (TEST-NET-3)"},
    {{224, 0, 0, 0}, 4, "multicast"},
    {{240, 0, 0, 0}, 4, "reserved (240.0.0.0/4)"},
};

// IANA IPv6 Special-Purpose Address Registry, inside and outside global unicast 2000::/3.
constexpr Range k_v6_ranges[] = {
    {{}, 128, "unspecified (::)"},
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128, "loopback"},
    {{0, 0x64, 0xff, 0x9b, 0, 1}, 48, "local-use NAT64 (RFC 8215)"},
    {{0x01, 0x00}, 64, "discard-only (100::/64)"},
    {{0x20, 0x01, 0x0d, 0xb8}, 32, "documentation (2001:db8::/32)"},
    {{0x20, 0x01, 0x00, 0x00}, 23, "IETF protocol assignments (2001::/23)"},
    {{0x3f, 0xff}, 20, "documentation (3fff::/20)"},
    {{0x5f, 0x00}, 16, "SRv6 SIDs (5f00::/16)"},
    {{0xfc}, 7, "unique local (fc00::/7)"},
    {{0xfe, 0x80}, 10, "link-local"},
    {{0xfe, 0xc0}, 10, "site-local (deprecated)"},
    {{0xff}, 8, "multicast"},
};

std::optional<std::string> v4_special(const unsigned char* v4) {
  for (const auto& range : k_v4_ranges) {
    if (in_prefix(v4, range.bytes.data(), range.prefix)) {
      return std::string(range.why);
    }
  }
  return std::nullopt;
}

// The IPv4 address an IPv6 address stands for, where it stands for one: IPv4-mapped ::ffff:a.b.c.d,
// NAT64 64:ff9b::a.b.c.d, 6to4 2002:AABB:CCDD::/48.
std::optional<std::array<unsigned char, 4>> embedded_v4(const unsigned char* v6) {
  static constexpr unsigned char k_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  static constexpr unsigned char k_nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
  std::array<unsigned char, 4> v4{};
  if (std::memcmp(v6, k_mapped, 12) == 0 || std::memcmp(v6, k_nat64, 12) == 0) {
    std::memcpy(v4.data(), v6 + 12, 4);
    return v4;
  }
  if (v6[0] == 0x20 && v6[1] == 0x02) {
    std::memcpy(v4.data(), v6 + 2, 4);
    return v4;
  }
  return std::nullopt;
}

bool is_v4_mapped(const unsigned char* v6) {
  static constexpr unsigned char k_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(v6, k_mapped, 12) == 0;
}

} // namespace

std::optional<std::string> special_purpose_range(const sockaddr* address) {
  if (address->sa_family == AF_INET) {
    return v4_special(
        reinterpret_cast<const unsigned char*>(&reinterpret_cast<const sockaddr_in*>(address)->sin_addr));
  }
  if (address->sa_family != AF_INET6) {
    return std::string("not an IP address");
  }
  const auto* v6 =
      reinterpret_cast<const unsigned char*>(&reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr);
  if (const auto v4 = embedded_v4(v6)) {
    if (auto why = v4_special(v4->data())) {
      return *why + " (as an IPv6 form of an IPv4 address)";
    }
    return std::nullopt;
  }
  for (const auto& range : k_v6_ranges) {
    if (in_prefix(v6, range.bytes.data(), range.prefix)) {
      return std::string(range.why);
    }
  }
  if ((v6[0] & 0xE0) != 0x20) {
    return std::string("reserved (outside global unicast 2000::/3)");
  }
  return std::nullopt;
}

bool is_internal_address(const sockaddr* address) {
  return special_purpose_range(address).has_value();
}

bool is_own_interface_address(const sockaddr* address) {
  const auto ip = ip_of(address);
  return ip && is_local(*ip);
}

bool Network::contains(const sockaddr* address) const {
  const auto ip = ip_of(address);
  return ip && ip->family == family && in_prefix(ip->bytes.data(), bytes.data(), prefix);
}

std::string Network::text() const {
  char buffer[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(family, bytes.data(), buffer, sizeof buffer);
  return std::string(buffer) + "/" + std::to_string(prefix);
}

Expected<std::vector<Network>, std::string> parse_allow_private(std::string_view text) {
  std::string value(util::trim(text));
  std::optional<unsigned> prefix;
  if (const std::size_t slash = value.find('/'); slash != std::string::npos) {
    const auto length = http::parse_decimal(std::string_view(value).substr(slash + 1));
    if (!length || *length > 128) {
      return unexpected("--allow-private " + value + ": the prefix length after '/' must be a number");
    }
    prefix = static_cast<unsigned>(*length);
    value.resize(slash);
  }
  if (value.size() >= 2 && value.front() == '[' && value.back() == ']') {
    value = value.substr(1, value.size() - 2);
  }
  if (value.empty()) {
    return unexpected(std::string("--allow-private needs a CIDR, an address or a host name"));
  }
  Network network;
  if (::inet_pton(AF_INET, value.c_str(), network.bytes.data()) == 1) {
    network.family = AF_INET;
  } else if (::inet_pton(AF_INET6, value.c_str(), network.bytes.data()) == 1) {
    network.family = AF_INET6;
    if (const auto v4 = embedded_v4(network.bytes.data()); v4 && is_v4_mapped(network.bytes.data())) {
      // ::ffff:a.b.c.d is a.b.c.d: store it so (a mapped prefix counts 96 bits less).
      network.family = AF_INET;
      network.bytes = {};
      std::memcpy(network.bytes.data(), v4->data(), 4);
      if (prefix) {
        if (*prefix < 96) {
          return unexpected("--allow-private " + std::string(text) +
                            ": an IPv4-mapped prefix must be at least 96");
        }
        prefix = *prefix - 96;
      }
    }
  }
  if (network.family != 0) {
    const unsigned max = network.family == AF_INET ? 32 : 128;
    network.prefix = prefix.value_or(max);
    if (network.prefix > max) {
      return unexpected("--allow-private " + std::string(text) + ": an IPv" +
                        (network.family == AF_INET ? "4" : "6") + " prefix is at most " +
                        std::to_string(max));
    }
    // Clear the host bits: 192.168.1.1/24 means 192.168.1.0/24.
    for (unsigned bit = network.prefix; bit < max; ++bit) {
      network.bytes[bit / 8] = static_cast<unsigned char>(network.bytes[bit / 8] & ~(0x80U >> (bit % 8)));
    }
    return std::vector<Network>{network};
  }
  if (prefix) {
    return unexpected("--allow-private " + std::string(text) +
                      ": a prefix length needs an address, not a name");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(value.c_str(), nullptr, &hints, &found); rc != 0) {
    return unexpected("--allow-private " + value + ": cannot resolve it (" + ::gai_strerror(rc) + ")");
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(found, ::freeaddrinfo);
  std::vector<Network> networks;
  for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    const auto ip = ip_of(ai->ai_addr);
    if (!ip) {
      continue;
    }
    Network one;
    one.family = ip->family;
    one.bytes = ip->bytes;
    one.prefix = ip->family == AF_INET ? 32 : 128;
    if (std::none_of(networks.begin(), networks.end(),
                     [&](const Network& n) { return n.family == one.family && n.bytes == one.bytes; })) {
      networks.push_back(one);
    }
  }
  return networks;
}

OriginPolicy::OriginPolicy(std::vector<std::string> patterns, std::vector<Network> allowed_private)
    : m_patterns(std::move(patterns)), m_allowed_private(std::move(allowed_private)) {}

OriginPolicy OriginPolicy::any() {
  OriginPolicy policy;
  policy.m_any_address = true;
  return policy;
}

bool OriginPolicy::names(std::string_view host) const {
  return std::any_of(m_patterns.begin(), m_patterns.end(),
                     [&](const std::string& pattern) { return glob_match(pattern, host); });
}

std::optional<std::string> OriginPolicy::check_url(std::string_view origin) const {
  const std::string scheme = url::scheme_of(origin);
  if (!scheme.empty() && scheme != "http" && scheme != "https") {
    return "refusing to fetch a " + scheme + ": URL (only http and https are fetched)";
  }
  const auto target = url::parse_target(origin);
  if (!target) {
    return url::redact(origin) + ": " + target.error().message;
  }
  if (!m_patterns.empty() && !names(target->host)) {
    return url::redact(origin) + ": host " + target->host + " is not allowed by --allow-origin";
  }
  return std::nullopt;
}

std::optional<std::string> OriginPolicy::check_address(std::string_view host, const sockaddr* address) const {
  if (m_any_address) {
    return std::nullopt;
  }
  if (std::any_of(m_allowed_private.begin(), m_allowed_private.end(),
                  [&](const Network& network) { return network.contains(address); })) {
    return std::nullopt;
  }
  std::optional<std::string> why = special_purpose_range(address);
  if (!why && is_own_interface_address(address)) {
    why = "one of this server's own addresses";
  }
  if (!why) {
    return std::nullopt;
  }
  const std::string shown = address_text(address);
  const std::string subject =
      host == shown ? "address " + shown : "host " + std::string(host) + " resolves to " + shown;
  return subject + ": " + *why + ", not a public address; allow it with --allow-private " + shown;
}

std::string OriginPolicy::describe() const {
  if (m_any_address) {
    return "any address";
  }
  std::string out = "public unicast addresses only (private, special-purpose and own addresses refused)";
  if (!m_allowed_private.empty()) {
    out += "; --allow-private";
    for (const auto& network : m_allowed_private) {
      out += " " + network.text();
    }
  }
  if (m_patterns.empty()) {
    out += "; any host name";
  } else {
    out += "; host names matching";
    for (const auto& pattern : m_patterns) {
      out += " " + pattern;
    }
  }
  return out;
}

std::optional<std::string> OwnListeners::add(std::string_view host, int port) {
  if (port <= 0 || port > 65535) {
    return "listening port " + std::to_string(port) + " is not in 1..65535";
  }
  std::string name(host);
  if (name.size() >= 2 && name.front() == '[' && name.back() == ']') {
    name = name.substr(1, name.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(name.empty() ? nullptr : name.c_str(), "0", &hints, &found);
  if (rc != 0) {
    return "cannot resolve listening address " + name + ": " + ::gai_strerror(rc);
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(found, ::freeaddrinfo);
  std::vector<std::shared_ptr<const Listener>> added;
  for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    const auto ip = ip_of(ai->ai_addr);
    if (!ip || ai->ai_addrlen > sizeof(sockaddr_storage)) {
      continue;
    }
    auto listener = std::make_shared<Listener>();
    std::memcpy(&listener->address, ai->ai_addr, ai->ai_addrlen);
    listener->port = port;
    listener->wildcard = is_unspecified(*ip);
    added.push_back(std::move(listener));
  }
  std::lock_guard lock(m_mutex);
  m_listeners.insert(m_listeners.end(), added.begin(), added.end());
  return std::nullopt;
}

std::optional<std::string> OwnListeners::check(const sockaddr* address, int port) const {
  const auto ip = ip_of(address);
  if (!ip) {
    return std::nullopt;
  }
  std::vector<std::shared_ptr<const Listener>> listeners;
  {
    std::lock_guard lock(m_mutex);
    listeners = m_listeners;
  }
  std::optional<bool> local; // getifaddrs at most once per check
  for (const auto& listener : listeners) {
    if (listener->port != port) {
      continue;
    }
    bool self = false;
    if (listener->wildcard) {
      if (!local) {
        local = is_local(*ip);
      }
      self = *local;
    } else {
      self = ip_of(reinterpret_cast<const sockaddr*>(&listener->address)) == ip;
    }
    if (self) {
      return address_text(address) + ":" + std::to_string(port) +
             " is this server's own listening socket (a fill never fetches from the cache itself)";
    }
  }
  return std::nullopt;
}

bool OwnListeners::empty() const {
  std::lock_guard lock(m_mutex);
  return m_listeners.empty();
}

std::optional<Proxy> proxy_for(std::string_view scheme, std::string_view host, const util::Getenv& getenv) {
  const auto get = [&](const char* name) -> std::string {
    const char* value = getenv(name);
    return value == nullptr ? std::string{} : std::string(util::trim(value));
  };
  std::string no_proxy = get("no_proxy");
  if (no_proxy.empty()) {
    no_proxy = get("NO_PROXY");
  }
  std::string_view entries = no_proxy;
  while (!entries.empty()) {
    const std::size_t comma = entries.find(',');
    std::string entry(util::trim(entries.substr(0, comma)));
    entries = comma == std::string_view::npos ? std::string_view{} : entries.substr(comma + 1);
    if (entry == "*") {
      return std::nullopt;
    }
    if (const std::size_t colon = entry.rfind(':');
        colon != std::string::npos && entry.find(']') == std::string::npos && entry.find(':') == colon) {
      entry.resize(colon); // host:port entries match on the host
    }
    if (entry.starts_with('.')) {
      entry.erase(0, 1);
    }
    if (entry.empty()) {
      continue;
    }
    if (iequals(host, entry) || (host.size() > entry.size() && host[host.size() - entry.size() - 1] == '.' &&
                                 iequals(host.substr(host.size() - entry.size()), entry))) {
      return std::nullopt;
    }
  }

  // Like curl, plain http uses only lower-case http_proxy (HTTP_PROXY can be set by CGI requests).
  std::string value = scheme == "https" ? get("https_proxy") : get("http_proxy");
  if (value.empty() && scheme == "https") {
    value = get("HTTPS_PROXY");
  }
  if (value.empty()) {
    return std::nullopt;
  }
  if (value.find("://") == std::string::npos) {
    value = "http://" + value;
  }
  const auto target = url::parse_target(value);
  if (!target) {
    return std::nullopt;
  }
  Proxy proxy;
  proxy.host = target->host;
  // Without a port, parse_target answers 80; curl's proxy default is 1080.
  const std::string_view after_host = std::string_view(value).substr(value.find("://") + 3);
  const std::string_view authority = after_host.substr(0, after_host.find_first_of("/?#"));
  const std::string_view host_and_port = authority.substr(authority.rfind('@') + 1);
  const std::size_t colon = host_and_port.rfind(':');
  const std::size_t bracket = host_and_port.rfind(']');
  const bool explicit_port =
      colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket);
  proxy.port = explicit_port ? target->port : 1080;
  if (const auto userinfo = url::userinfo_of(value)) {
    const std::size_t separator = userinfo->find(':');
    proxy.user = util::percent_decode(userinfo->substr(0, separator));
    if (separator != std::string::npos) {
      proxy.password = util::percent_decode(userinfo->substr(separator + 1));
    }
  }
  return proxy;
}

namespace {

Expected<FetchResult, FetchError> fetch(const FetchRequest& request, const FetchOptions& options) {
  if (auto refused = options.policy.check_url(request.url)) {
    return unexpected(make_error(FetchErrc::refused_origin, "", *refused)); // the text names the URL
  }
  FetchState state{request, options, PartFile(request.part_path, request.observer, request.sink), {}, 0, {}, false, {}};
  if (auto err = state.part.open()) {
    return unexpected(make_error(FetchErrc::io, url::redact(request.url), *err));
  }
  const std::uint64_t resumed_from = state.part.size();
  if (resumed_from > 0 && !request.resume_state_path.empty()) {
    if (auto rep = read_state(request.resume_state_path)) {
      state.rep = std::move(*rep);
    } else if (auto err = restart(state)) {
      // Bytes nothing vouches for (no state, or a torn one) are not resumed.
      return unexpected(make_error(FetchErrc::io, url::redact(request.url), *err));
    }
  }

  std::string current = request.url;
  Headers headers = request.headers;
  int attempts = 0;
  int redirects = 0;
  auto delay = options.backoff;
  for (;;) {
    if (request.cancel != nullptr && request.cancel->load()) {
      return unexpected(make_error(FetchErrc::cancelled, url::redact(current), "cancelled"));
    }
    AttemptResult result = attempt(state, current, headers);
    if (result.step == Step::complete) {
      break;
    }
    if (result.step == Step::fail) {
      if (result.error.reason == FetchErrc::refused_origin && redirects > 0) {
        // Say it was a hop: the URL asked for is public, the one it redirected to is not.
        const std::string hop = "redirected to " + url::redact(current) + ", refused: ";
        return unexpected(
            make_error(FetchErrc::refused_origin, url::redact(request.url), hop + result.error.detail));
      }
      return unexpected(std::move(result.error));
    }
    if (result.step == Step::redirect) {
      const std::string shown = url::redact(request.url);
      if (++redirects > options.max_redirects) {
        return unexpected(make_error(FetchErrc::refused_origin, shown,
                                     "more than " + std::to_string(options.max_redirects) + " redirects"));
      }
      auto next = url::resolve_reference(current, result.location);
      if (!next) {
        return unexpected(make_error(FetchErrc::malformed, url::redact(current), "bad redirect Location"));
      }
      if (auto refused = options.policy.check_url(*next)) {
        return unexpected(make_error(FetchErrc::refused_origin, "", "redirect refused: " + *refused));
      }
      if (!same_origin(current, *next)) {
        // Credentials meant for one host never follow a redirect to another (as curl).
        std::erase_if(headers, [](const auto& h) {
          return iequals(h.first, "Authorization") || iequals(h.first, "Cookie");
        });
      }
      current = std::move(*next);
      continue;
    }
    if (++attempts >= options.max_attempts) {
      FetchError error = std::move(result.error);
      const std::string gave_up = " (gave up after " + std::to_string(attempts) + " attempts)";
      error.message += gave_up;
      error.detail += gave_up;
      return unexpected(std::move(error));
    }
    if (!pause(delay, request.cancel)) {
      return unexpected(make_error(FetchErrc::cancelled, url::redact(current), "cancelled"));
    }
    delay = std::min<std::chrono::milliseconds>(delay * 2, std::chrono::seconds(10));
  }

  FetchResult done;
  done.final_url = current;
  done.resumed_from = resumed_from;
  done.response_headers = std::move(state.response_headers);
  const auto fill_headers = [&done](const Headers& kept) {
    const auto get = [&kept](std::string_view name) {
      return std::string(http::find_field(kept, name).value_or(""));
    };
    done.content_type = get("Content-Type");
    done.etag = get("ETag");
    done.last_modified = get("Last-Modified");
    done.cache_control = get("Cache-Control");
    done.expires = get("Expires");
    done.date = get("Date");
    done.age = get("Age");
    done.content_encoding = get("Content-Encoding");
    done.content_disposition = get("Content-Disposition");
  };
  if (state.not_modified) {
    done.not_modified = true;
    fill_headers(state.not_modified_headers);
    remove_state(request.resume_state_path);
    return done;
  }
  if (!state.part.sync()) {
    return unexpected(make_error(FetchErrc::io, url::redact(request.url),
                                 "cannot fsync " + request.part_path.string() + ": " + std::strerror(errno)));
  }
  done.size = state.part.size();
  done.sha256 = state.part.hex_digest();
  fill_headers(state.rep.headers);
  // The part is complete; the caller commits it. Nothing is left to resume.
  remove_state(request.resume_state_path);
  return done;
}

} // namespace

Expected<FetchResult, FetchError> fetch_to_file(const FetchRequest& request, const FetchOptions& options) {
  try {
    return fetch(request, options);
  } catch (const std::exception& e) {
    // The standard library stops here, as one line.
    return unexpected(make_error(FetchErrc::io, url::redact(request.url), e.what()));
  }
}

void remove_partial(const FetchRequest& request) {
  std::error_code ec;
  std::filesystem::remove(request.part_path, ec);
  remove_state(request.resume_state_path);
}

} // namespace withcache::origin
