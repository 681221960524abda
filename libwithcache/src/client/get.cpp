#include "withcache/client/get.hpp"

#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>

#include "http/http.hpp"
#include "origin/http_client.hpp"
#include "withcache/client/probe.hpp"
#include "withcache/origin.hpp"
#include "withcache/url.hpp"
#include "withcache/util/encoding.hpp"
#include "withcache/util/size.hpp"
#include "withcache/version.hpp"

namespace withcache::client {
namespace {

GetError failure(GetErrc code, std::string message) {
  return GetError{code, std::move(message)};
}

GetErrc code_of(origin::FetchErrc reason) {
  switch (reason) {
  case origin::FetchErrc::http_status:
    return GetErrc::http_status;
  case origin::FetchErrc::malformed:
    return GetErrc::malformed;
  case origin::FetchErrc::io:
  case origin::FetchErrc::cache_full:
    return GetErrc::io;
  default:
    return GetErrc::network;
  }
}

// The SHA-256 the cache states for `cache_url` once its fill has completed, polling HEAD for up to
// `wait`; nothing while it is still filling (or the cache does not answer).
std::optional<std::string> completed_sha(const std::string& cache_url, std::chrono::milliseconds wait,
                                         std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    const auto res = origin::request_small("HEAD", cache_url, {{"User-Agent", k_product}}, {}, timeout, 0);
    if (res && res->head.status == 200 && res->head.get("X-Withcache-Status") != "filling") {
      const std::string sha = res->head.get("X-Withcache-Sha256");
      return sha.empty() ? std::nullopt : std::optional<std::string>(sha);
    }
    if (std::chrono::steady_clock::now() + std::chrono::milliseconds(100) >= deadline) {
      return std::nullopt;
    }
    // Polling a fill's end, bounded by `wait`: there is no push channel to the client.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// A failed attempt keeps the bytes it got for the next run, but never an empty file.
void drop_if_empty(const std::filesystem::path& part) {
  std::error_code ec;
  if (std::filesystem::file_size(part, ec) == 0 && !ec) {
    std::filesystem::remove(part, ec);
  }
}

// `sink` set: stream mode, `file` unused.
Expected<GetResult, GetError> run(const std::string& origin_url, const std::filesystem::path& file,
                                  const GetOptions& options,
                                  const std::function<bool(const char*, std::size_t)>& sink = {}) {
  GetResult result;
  result.file = file;
  std::string source = origin_url;
  if (!options.server.empty()) {
    if (auto cached = serve_url(options.server, origin_url, {options.probe_timeout, {}})) {
      source = *cached;
      result.from_cache = true;
    }
  }
  const std::string shown = url::redact(source);
  const std::string scheme = url::scheme_of(source);
  if (scheme != "http" && scheme != "https") {
    return unexpected(failure(GetErrc::network, shown + ": not an http or https URL"));
  }

  const std::filesystem::path part =
      sink ? std::filesystem::path() : std::filesystem::path(file.string() + ".part");
  origin::FetchRequest request;
  request.url = source;
  request.part_path = part;
  request.sink = sink;
  request.on_progress = options.on_progress;
  origin::FetchOptions fetch_options;
  fetch_options.policy = origin::OriginPolicy::any(); // the user's own download, wherever it points
  fetch_options.connect_timeout = options.connect_timeout;
  fetch_options.read_timeout = options.read_timeout;
  fetch_options.head_timeout = options.head_timeout;
  fetch_options.max_attempts = 3;
  auto fetched = origin::fetch_to_file(request, fetch_options);
  if (!fetched && !sink && result.from_cache && fetched.error().reason == origin::FetchErrc::http_status &&
      fetched.error().status == 428) {
    // A `.part` from an earlier run is resumed with a bare Range, which the cache refuses (428) while
    // the artifact is filling or can change: those bytes may be another version's. Start over.
    std::error_code removed;
    std::filesystem::remove(part, removed);
    fetched = origin::fetch_to_file(request, fetch_options);
  }
  if (!fetched) {
    if (sink) {
      return unexpected(failure(code_of(fetched.error().reason), fetched.error().message));
    }
    drop_if_empty(part);
    std::string message = fetched.error().message;
    if (code_of(fetched.error().reason) == GetErrc::network) {
      message += " (run again to resume)";
    }
    return unexpected(failure(code_of(fetched.error().reason), std::move(message)));
  }
  result.size = fetched->size;
  result.sha256 = fetched->sha256;
  result.resumed = fetched->resumed_from > 0;
  std::error_code ec;
  std::optional<std::string> expected_sha;
  if (const auto sha = http::find_field(fetched->response_headers, "X-Withcache-Sha256")) {
    expected_sha = std::string(*sha);
  } else if (result.from_cache && http::find_field(fetched->response_headers, "X-Withcache-Status") == "filling") {
    // Served while the cache was still filling it: the SHA-256 exists once the fill completes.
    result.filling = true;
    expected_sha = completed_sha(source, options.verify_wait, options.probe_timeout);
  }
  if (const auto& expected = expected_sha) {
    if (*expected != result.sha256) {
      if (!sink) {
        std::filesystem::remove(part, ec);
      }
      return unexpected(failure(GetErrc::checksum, shown + ": SHA-256 mismatch: the cache says " +
                                                       std::string(*expected) + ", the bytes hash to " +
                                                       result.sha256));
    }
    result.verified = true;
  }
  if (sink) {
    result.file.clear();
    return result;
  }
  std::filesystem::rename(part, file, ec);
  if (ec) {
    return unexpected(failure(GetErrc::io, "cannot rename " + part.string() + ": " + ec.message()));
  }
  return result;
}

} // namespace

std::string progress_line(std::uint64_t done, std::uint64_t total, double seconds) {
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
  std::string line;
  if (total > 0) {
    const std::uint64_t filled = std::min<std::uint64_t>(20, done * 20 / total);
    line = "[" + std::string(filled, '#') + std::string(20 - filled, '-') + "]  " + util::format_size(done) +
           " / " + util::format_size(total) + "  " + std::to_string(done * 100 / total) + "%";
  } else {
    line = util::format_size(done);
  }
  line += "  " + util::format_size(static_cast<std::uint64_t>(rate)) + "/s";
  if (total > done && rate > 0) {
    line += "  ETA " + std::to_string(static_cast<std::uint64_t>(static_cast<double>(total - done) / rate)) +
            " s";
  }
  return line;
}

std::string file_name_for(std::string_view origin_url) {
  const std::string name = util::percent_decode(url::basename_of(origin_url));
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos) {
    return "download";
  }
  return name;
}

Expected<GetResult, GetError> get(const std::string& origin_url, const std::filesystem::path& file,
                                  const GetOptions& options) {
  try {
    return run(origin_url, file, options);
  } catch (const std::exception& e) {
    return unexpected(failure(GetErrc::io, url::redact(origin_url) + ": " + e.what()));
  }
}

Expected<GetResult, GetError> stream(const std::string& origin_url,
                                     const std::function<bool(const char*, std::size_t)>& sink,
                                     const GetOptions& options) {
  if (!sink) {
    return unexpected(failure(GetErrc::io, "stream() needs a sink"));
  }
  try {
    return run(origin_url, {}, options, sink);
  } catch (const std::exception& e) {
    return unexpected(failure(GetErrc::io, url::redact(origin_url) + ": " + e.what()));
  }
}

} // namespace withcache::client
