#include "withcache/origin.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <httplib.h>

#include "http/http.hpp"
#include "withcache/digest.hpp"
#include "withcache/url.hpp"
#include "withcache/util/encoding.hpp"
#include "withcache/util/strings.hpp"
#include "withcache/version.hpp"

namespace withcache::origin {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t k_hash_chunk = 1 << 20;
// cpp-httplib hands the body over in 4 KiB pieces; batching them into 1 MiB
// writes saves ~250 000 syscalls per GiB.
constexpr std::size_t k_write_buffer = 1 << 20;
constexpr const char* k_system_ca_bundle = "/etc/ssl/certs/ca-certificates.crt";

using util::iequals;
using util::to_lower;

FetchError make_error(FetchErrc reason, std::string message, int status = 0) {
  return FetchError{reason, status, std::move(message)};
}

// The part file: an fd opened for appending, its size and the running SHA-256.
class PartFile {
 public:
  explicit PartFile(const std::filesystem::path& path) : m_path(path) { m_buffer.reserve(k_write_buffer); }
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
    m_fd = ::open(m_path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (m_fd < 0) {
      return "cannot open " + m_path.string() + ": " + std::strerror(errno);
    }
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
    return std::nullopt;
  }

  std::optional<std::string> restart() {
    m_buffer.clear();
    if (::ftruncate(m_fd, 0) != 0) {
      return "cannot truncate " + m_path.string() + ": " + std::strerror(errno);
    }
    m_size = 0;
    m_sha.reset();
    return std::nullopt;
  }

  bool append(const char* data, std::size_t length) {
    m_sha.update(data, length);
    m_size += length;
    if (m_buffer.size() + length > k_write_buffer && !flush()) {
      return false;
    }
    if (length >= k_write_buffer) {
      return write_all(data, length);
    }
    m_buffer.insert(m_buffer.end(), data, data + length);
    return true;
  }

  bool flush() {
    const bool ok = write_all(m_buffer.data(), m_buffer.size());
    m_buffer.clear();
    return ok;
  }

  bool sync() { return flush() && ::fsync(m_fd) == 0; }

  // The hex digest of everything appended so far (the context stays usable).
  std::string hex_digest() const { return m_sha.hex(); }

  [[nodiscard]] std::uint64_t size() const noexcept { return m_size; }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return m_path; }

 private:
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
  digest::Sha256 m_sha;
  int m_fd = -1;
  std::uint64_t m_size = 0;
  std::vector<char> m_buffer;
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
  std::uint64_t declared = 0; // total size when known
  std::string content_type;
  Headers response_headers; // of the last non-redirect response
};

// Resolves the origin host and applies the policy to every address, so a
// name cannot smuggle a loopback or link-local target past --allow-origin.
// Returns the address to connect to.
Expected<std::string, FetchError> resolve_checked(const url::Target& target, const OriginPolicy& policy,
                                                  bool via_proxy) {
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
        make_error(FetchErrc::connect, "cannot resolve " + target.host + ": " + ::gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(found, ::freeaddrinfo);
  std::string chosen;
  for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    if (auto refused = policy.check_address(target.host, ai->ai_addr)) {
      return unexpected(make_error(FetchErrc::refused_origin, *refused));
    }
    if (chosen.empty()) {
      chosen = address_text(ai->ai_addr);
    }
  }
  return chosen;
}

AttemptResult attempt(FetchState& state, const std::string& current_url, const Headers& headers) {
  const std::string shown = url::redact(current_url);
  const auto target = url::parse_target(current_url);
  if (!target) {
    return {Step::fail, make_error(FetchErrc::refused_origin, shown + ": " + target.error().message), {}};
  }
  const util::Getenv getenv = state.options.getenv ? state.options.getenv : util::process_env();
  const auto proxy = proxy_for(target->scheme, target->host, getenv);
  auto address = resolve_checked(*target, state.options.policy, proxy.has_value());
  if (!address) {
    FetchError e = address.error();
    e.message = shown + ": " + e.message;
    return {e.reason == FetchErrc::connect ? Step::retry : Step::fail, e, {}};
  }

  const bool ipv6 = target->host.find(':') != std::string::npos;
  const std::string host_for_client = ipv6 ? "[" + target->host + "]" : target->host;
  httplib::Client client(target->scheme + "://" + host_for_client + ":" + std::to_string(target->port));
  client.set_connection_timeout(state.options.connect_timeout);
  client.set_read_timeout(state.options.read_timeout);
  client.set_write_timeout(state.options.read_timeout);
  client.set_follow_location(false);
  client.set_decompress(false);
  client.set_url_encode(false);
  client.set_keep_alive(false);
  client.enable_server_certificate_verification(true);
  if (target->scheme == "https") {
    std::error_code ec;
    if (!state.options.ca_file.empty()) {
      client.set_ca_cert_path(state.options.ca_file);
    } else if (std::filesystem::exists(k_system_ca_bundle, ec)) {
      client.set_ca_cert_path(k_system_ca_bundle);
    }
  }
  if (proxy) {
    client.set_proxy(proxy->host, proxy->port);
    if (!proxy->user.empty()) {
      client.set_proxy_basic_auth(proxy->user, proxy->password);
    }
  } else if (!address->empty()) {
    client.set_hostname_addr_map({{target->host, *address}});
  }

  httplib::Headers request_headers;
  request_headers.emplace("User-Agent", k_product);
  request_headers.emplace("Accept-Encoding", "identity");
  for (const auto& [name, value] : headers) {
    request_headers.emplace(name, value);
  }
  const std::uint64_t resume_from = state.part.size();
  if (resume_from > 0) {
    request_headers.emplace("Range", "bytes=" + std::to_string(resume_from) + "-");
  }

  AttemptResult outcome;
  bool decided = false; // a handler settled the outcome
  auto last_byte = Clock::now();

  auto decide = [&](Step step, FetchError error) {
    outcome.step = step;
    outcome.error = std::move(error);
    decided = true;
    return false;
  };

  auto on_response = [&](const httplib::Response& response) -> bool {
    const int status = response.status;
    if (status == 301 || status == 302 || status == 303 || status == 307 || status == 308) {
      if (!response.has_header("Location")) {
        return decide(Step::fail,
                      make_error(FetchErrc::http_status,
                                 shown + ": HTTP " + std::to_string(status) + " without Location", status));
      }
      outcome.location = response.get_header_value("Location");
      return decide(Step::redirect, {});
    }
    state.response_headers.assign(response.headers.begin(), response.headers.end());
    std::uint64_t declared = 0;
    if (status == 200) {
      if (state.part.size() > 0) {
        // The origin ignored our Range: start over from byte 0.
        if (auto err = state.part.restart()) {
          return decide(Step::fail, make_error(FetchErrc::io, *err));
        }
      }
      if (response.has_header("Content-Length")) {
        const auto length = http::parse_decimal(response.get_header_value("Content-Length"));
        if (!length) {
          return decide(Step::fail, make_error(FetchErrc::malformed, shown + ": malformed Content-Length"));
        }
        declared = *length;
      }
    } else if (status == 206) {
      const auto range = http::parse_content_range(response.get_header_value("Content-Range"));
      if (!range || range->unsatisfied || range->first != state.part.size()) {
        // Not the continuation we asked for; start over without Range.
        if (auto err = state.part.restart()) {
          return decide(Step::fail, make_error(FetchErrc::io, *err));
        }
        return decide(Step::retry, make_error(FetchErrc::truncated, shown + ": origin answered Range with a "
                                                                            "different range; restarting"));
      }
      declared = range->total;
    } else if (status == 416 && state.part.size() > 0) {
      const auto range = http::parse_content_range(response.get_header_value("Content-Range"));
      if (range && range->unsatisfied && range->total == state.part.size()) {
        state.declared = range->total; // we already hold every byte
        return decide(Step::complete, {});
      }
      if (auto err = state.part.restart()) {
        return decide(Step::fail, make_error(FetchErrc::io, *err));
      }
      return decide(Step::retry,
                    make_error(FetchErrc::truncated, shown + ": origin refused our Range; restarting"));
    } else {
      const Step step = status >= 500 ? Step::retry : Step::fail;
      return decide(step,
                    make_error(FetchErrc::http_status, shown + ": HTTP " + std::to_string(status), status));
    }
    state.declared = declared;
    state.content_type = response.get_header_value("Content-Type");
    if (declared > 0 && state.request.may_store && !state.request.may_store(declared)) {
      return decide(Step::fail, make_error(FetchErrc::cache_full, shown + ": " + std::to_string(declared) +
                                                                      " bytes do not fit in the cache"));
    }
    if (state.request.on_progress) {
      state.request.on_progress(state.part.size(), state.declared);
    }
    return true;
  };

  auto on_content = [&](const char* data, std::size_t length) -> bool {
    if (state.request.cancel != nullptr && state.request.cancel->load()) {
      return decide(Step::fail, make_error(FetchErrc::cancelled, shown + ": cancelled"));
    }
    last_byte = Clock::now();
    if (state.declared > 0 && state.part.size() + length > state.declared) {
      return decide(Step::fail, make_error(FetchErrc::malformed, shown + ": origin sent more than its declared " +
                                                              std::to_string(state.declared) + " bytes"));
    }
    if (state.declared == 0 && state.request.may_store &&
        !state.request.may_store(state.part.size() + length)) {
      return decide(Step::fail, make_error(FetchErrc::cache_full, shown + ": the cache is full"));
    }
    if (!state.part.append(data, length)) {
      return decide(Step::fail, make_error(FetchErrc::io, "cannot write " + state.part.path().string() +
                                                              ": " + std::strerror(errno)));
    }
    if (state.request.on_progress) {
      state.request.on_progress(state.part.size(), state.declared);
    }
    return true;
  };

  // A silent origin would hold a cancel (or a shutdown) until the read timeout:
  // a watchdog closes the connection as soon as the cancel flag is set.
  std::mutex watch_mutex;
  std::condition_variable watch_cv;
  bool finished = false;
  std::thread watchdog;
  if (state.request.cancel != nullptr) {
    watchdog = std::thread([&] {
      std::unique_lock lock(watch_mutex);
      while (!finished) {
        if (state.request.cancel->load()) {
          client.stop();
          return;
        }
        watch_cv.wait_for(lock, std::chrono::milliseconds(50));
      }
    });
  }
  const auto result = client.Get(target->request, request_headers, on_response, on_content);
  if (watchdog.joinable()) {
    {
      std::lock_guard lock(watch_mutex);
      finished = true;
    }
    watch_cv.notify_all();
    watchdog.join();
  }
  if (!decided && state.request.cancel != nullptr && state.request.cancel->load()) {
    return {Step::fail, make_error(FetchErrc::cancelled, shown + ": cancelled"), {}};
  }
  if (decided) {
    return outcome;
  }

  const httplib::Error err = result.error();
  if (err != httplib::Error::Success) {
    switch (err) {
    case httplib::Error::SSLConnection:
    case httplib::Error::SSLLoadingCerts:
    case httplib::Error::SSLServerVerification:
      return {Step::fail,
              make_error(FetchErrc::tls, shown + ": TLS failed (" + httplib::to_string(err) + ")"),
              {}};
    case httplib::Error::Connection:
      return {
          Step::retry, make_error(FetchErrc::connect, shown + ": cannot connect to " + host_for_client), {}};
    case httplib::Error::ConnectionTimeout:
      return {Step::retry, make_error(FetchErrc::timeout, shown + ": connect timed out"), {}};
    default:
      break;
    }
    if (Clock::now() - last_byte >= state.options.read_timeout) {
      return {Step::retry, make_error(FetchErrc::timeout, shown + ": read timed out"), {}};
    }
  }
  if (state.declared > 0 && state.part.size() < state.declared) {
    return {Step::retry,
            make_error(FetchErrc::truncated, shown + ": body truncated: declared " +
                                                 std::to_string(state.declared) + " bytes, received " +
                                                 std::to_string(state.part.size())),
            {}};
  }
  if (err != httplib::Error::Success) {
    // No declared length: a dropped connection cannot be told from the end.
    return {Step::retry, make_error(FetchErrc::connect, shown + ": " + httplib::to_string(err)), {}};
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

bool is_internal_address(const sockaddr* address) {
  if (address->sa_family == AF_INET) {
    const auto ip = ntohl(reinterpret_cast<const sockaddr_in*>(address)->sin_addr.s_addr);
    return (ip >> 24) == 127 || (ip >> 16) == 0xA9FE || ip == 0;
  }
  if (address->sa_family == AF_INET6) {
    const in6_addr& ip = reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&ip) || IN6_IS_ADDR_UNSPECIFIED(&ip) || IN6_IS_ADDR_LINKLOCAL(&ip)) {
      return true;
    }
    if (IN6_IS_ADDR_V4MAPPED(&ip)) {
      sockaddr_in v4{};
      v4.sin_family = AF_INET;
      std::memcpy(&v4.sin_addr, &ip.s6_addr[12], 4);
      return is_internal_address(reinterpret_cast<const sockaddr*>(&v4));
    }
    return false;
  }
  return true; // not an IP address we know how to judge
}

OriginPolicy::OriginPolicy(std::vector<std::string> patterns) : m_patterns(std::move(patterns)) {}

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
  if (!m_any_address && is_internal_address(address) && !names(host)) {
    return "host " + std::string(host) + " resolves to " + address_text(address) +
           " (loopback, link-local or unspecified); allow it with --allow-origin " + std::string(host);
  }
  return std::nullopt;
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
    return unexpected(make_error(FetchErrc::refused_origin, *refused));
  }
  FetchState state{request, options, PartFile(request.part_path), 0, {}, {}};
  if (auto err = state.part.open()) {
    return unexpected(make_error(FetchErrc::io, *err));
  }
  const std::uint64_t resumed_from = state.part.size();

  std::string current = request.url;
  Headers headers = request.headers;
  int attempts = 0;
  int redirects = 0;
  auto delay = options.backoff;
  for (;;) {
    if (request.cancel != nullptr && request.cancel->load()) {
      return unexpected(make_error(FetchErrc::cancelled, url::redact(current) + ": cancelled"));
    }
    AttemptResult result = attempt(state, current, headers);
    if (result.step == Step::complete) {
      break;
    }
    if (result.step == Step::fail) {
      return unexpected(std::move(result.error));
    }
    if (result.step == Step::redirect) {
      if (++redirects > options.max_redirects) {
        return unexpected(make_error(FetchErrc::refused_origin, url::redact(request.url) + ": more than " +
                                                                    std::to_string(options.max_redirects) +
                                                                    " redirects"));
      }
      auto next = url::resolve_reference(current, result.location);
      if (!next) {
        return unexpected(
            make_error(FetchErrc::malformed, url::redact(current) + ": bad redirect Location"));
      }
      if (auto refused = options.policy.check_url(*next)) {
        return unexpected(make_error(FetchErrc::refused_origin, "redirect refused: " + *refused));
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
      error.message += " (gave up after " + std::to_string(attempts) + " attempts)";
      return unexpected(std::move(error));
    }
    if (!pause(delay, request.cancel)) {
      return unexpected(make_error(FetchErrc::cancelled, url::redact(current) + ": cancelled"));
    }
    delay = std::min<std::chrono::milliseconds>(delay * 2, std::chrono::seconds(10));
  }

  if (!state.part.sync()) {
    return unexpected(make_error(FetchErrc::io,
                                 "cannot fsync " + request.part_path.string() + ": " + std::strerror(errno)));
  }
  FetchResult done;
  done.size = state.part.size();
  done.sha256 = state.part.hex_digest();
  done.content_type = state.content_type;
  done.resumed_from = resumed_from;
  done.response_headers = std::move(state.response_headers);
  done.final_url = current;
  return done;
}

} // namespace

Expected<FetchResult, FetchError> fetch_to_file(const FetchRequest& request, const FetchOptions& options) {
  try {
    return fetch(request, options);
  } catch (const std::exception& e) {
    // cpp-httplib and the standard library stop here, as one line.
    return unexpected(make_error(FetchErrc::io, url::redact(request.url) + ": " + e.what()));
  }
}

} // namespace withcache::origin
