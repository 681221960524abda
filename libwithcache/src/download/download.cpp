#include "withcache/download.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include <httplib.h>

#include "withcache/client.hpp"
#include "withcache/url.hpp"
#include "withcache/version.hpp"

namespace withcache::download {
namespace {

DownloadError failure(DownloadErrc code, std::string message) {
  return DownloadError{code, std::move(message)};
}

} // namespace

std::string progress_line(std::uint64_t done, std::uint64_t total, double seconds) {
  const auto size = [](double bytes) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int unit = 0;
    while (bytes >= 1024 && unit < 4) {
      bytes /= 1024;
      ++unit;
    }
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, unit == 0 ? "%.0f %s" : "%.1f %s", bytes, units[unit]);
    return std::string(buffer);
  };
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
  std::string line;
  if (total > 0) {
    const std::uint64_t filled = std::min<std::uint64_t>(20, done * 20 / total);
    line = "[" + std::string(filled, '#') + std::string(20 - filled, '-') + "]  " +
           size(static_cast<double>(done)) + " / " + size(static_cast<double>(total)) + "  " +
           std::to_string(done * 100 / total) + "%";
  } else {
    line = size(static_cast<double>(done));
  }
  line += "  " + size(rate) + "/s";
  if (total > done && rate > 0) {
    line += "  ETA " + std::to_string(static_cast<std::uint64_t>(static_cast<double>(total - done) / rate)) +
            " s";
  }
  return line;
}

std::string file_name_for(std::string_view origin) {
  const std::string name = url::percent_decode(url::basename_of(origin));
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos) {
    return "download";
  }
  return name;
}

Expected<DownloadResult, DownloadError> get(const std::string& origin, const std::filesystem::path& file,
                                            const DownloadOptions& options) {
  DownloadResult result;
  result.file = file;
  std::string source = origin;
  if (!options.server.empty()) {
    if (auto cached = client::serve_url(options.server, origin, {options.probe_timeout, {}})) {
      source = *cached;
      result.from_cache = true;
    }
  }
  const std::string shown = url::redact(source);
  const auto target = url::parse_target(source);
  if (!target || (target->scheme != "http" && target->scheme != "https")) {
    return unexpected(failure(DownloadErrc::network, shown + ": not an http or https URL"));
  }

  const std::filesystem::path part = file.string() + ".part";
  std::error_code ec;
  std::uint64_t have = std::filesystem::exists(part, ec) ? std::filesystem::file_size(part, ec) : 0;
  url::Sha256 sha;
  if (have > 0) {
    std::ifstream existing(part, std::ios::binary);
    std::vector<char> buffer(1 << 20);
    while (existing) {
      existing.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      sha.update(buffer.data(), static_cast<std::size_t>(existing.gcount()));
    }
    result.resumed = true;
  }
  std::ofstream out(part, std::ios::binary | std::ios::app);
  if (!out) {
    return unexpected(
        failure(DownloadErrc::io, "cannot write " + part.string() + ": " + std::strerror(errno)));
  }

  const bool ipv6 = target->host.find(':') != std::string::npos;
  httplib::Client http(target->scheme + "://" + (ipv6 ? "[" + target->host + "]" : target->host) + ":" +
                       std::to_string(target->port));
  http.set_follow_location(true);
  http.set_url_encode(false);
  http.set_decompress(false);
  http.set_connection_timeout(std::chrono::seconds(10));
  http.set_read_timeout(options.read_timeout);
  http.enable_server_certificate_verification(true);
  httplib::Headers headers = {{"User-Agent", k_product}, {"Accept-Encoding", "identity"}};
  if (have > 0) {
    headers.emplace("Range", "bytes=" + std::to_string(have) + "-");
  }

  int status = 0;
  std::uint64_t total = 0;
  std::string expected_sha;
  bool restart = false;
  bool write_failed = false;
  const auto response = http.Get(
      target->request, headers,
      [&](const httplib::Response& r) {
        status = r.status;
        expected_sha = r.get_header_value("X-Withcache-Sha256"); // withcache sends it with 416 too
        if (status == 200 && have > 0) {
          restart = true; // no Range support: start over
        } else if (status == 416 && have > 0) {
          return false; // we may already hold everything; checked below
        } else if (status != 200 && status != 206) {
          return false;
        }
        const std::string length = r.get_header_value("Content-Length");
        total = (length.empty() ? 0 : std::stoull(length)) + (status == 206 ? have : 0);
        if (restart) {
          out.close();
          out.open(part, std::ios::binary | std::ios::trunc);
          sha.reset();
          have = 0;
        }
        return true;
      },
      [&](const char* data, std::size_t length) {
        out.write(data, static_cast<std::streamsize>(length));
        if (!out) {
          write_failed = true;
          return false;
        }
        sha.update(data, length);
        have += length;
        if (options.on_progress) {
          options.on_progress(have, total);
        }
        return true;
      });
  out.close();
  if (write_failed) {
    return unexpected(
        failure(DownloadErrc::io, "cannot write " + part.string() + ": " + std::strerror(errno)));
  }
  if (status == 416 && have > 0) {
    // Asked past the end: the part may be complete (a previous run died before the rename).
    total = have;
  } else if (status != 200 && status != 206) {
    if (status == 0) {
      return unexpected(failure(DownloadErrc::network, shown + ": " + httplib::to_string(response.error()) +
                                                           " (partial bytes kept in " + part.string() + ")"));
    }
    return unexpected(failure(DownloadErrc::http_status, shown + ": HTTP " + std::to_string(status)));
  }
  if (response.error() != httplib::Error::Success && status != 416) {
    return unexpected(
        failure(DownloadErrc::network,
                shown + ": connection lost after " + std::to_string(have) + " bytes (run again to resume)"));
  }
  if (total > 0 && have != total) {
    return unexpected(failure(DownloadErrc::network, shown + ": received " + std::to_string(have) + " of " +
                                                         std::to_string(total) +
                                                         " bytes (run again to resume)"));
  }
  result.size = have;
  result.sha256 = sha.hex();
  if (!expected_sha.empty()) {
    if (expected_sha != result.sha256) {
      std::filesystem::remove(part, ec);
      return unexpected(failure(DownloadErrc::checksum, shown + ": SHA-256 mismatch: the cache says " +
                                                            expected_sha + ", the bytes hash to " +
                                                            result.sha256));
    }
    result.verified = true;
  }
  std::filesystem::rename(part, file, ec);
  if (ec) {
    return unexpected(failure(DownloadErrc::io, "cannot rename " + part.string() + ": " + ec.message()));
  }
  return result;
}

} // namespace withcache::download
