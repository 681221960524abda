// withcache-client's command line: parses options, calls the client library (probe, get, Api), maps
// outcomes to the documented exit codes. apps/client/main.cpp only calls cli_main().
#include "withcache/client/cli.hpp"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <unistd.h>

#include <cxxopts.hpp>

#include "withcache/client.hpp"
#include "withcache/url.hpp"
#include "withcache/util/env.hpp"
#include "withcache/util/size.hpp"
#include "withcache/util/time.hpp"
#include "withcache/version.hpp"

namespace withcache::client {
namespace {

// Exit codes (also in --help).
constexpr int k_ok = 0;
constexpr int k_miss = 1;        // probe: not cached; rm: no such artifact
constexpr int k_unreachable = 2; // the server did not answer
constexpr int k_failed = 3;      // get: download failed or checksum mismatch
constexpr int k_refused = 4;     // the API said no (401/403/400/409)
constexpr int k_usage = 64;      // bad command line

constexpr const char* k_footer = R"HELP(
Commands:
  url ORIGIN            print the cache URL of ORIGIN
  probe ORIGIN          exit 0 when cached, 1 when not, 2 when the server does not answer
  serve-url ORIGIN      print the cache URL when cached, else ORIGIN (for scripts: curl "$(...)")
  health                exit 0 when the server answers /healthz
  get ORIGIN [-o FILE]  download from the cache when warm, else from ORIGIN; verifies the cache's
                        SHA-256, writes FILE.part and renames it, resumes an interrupted FILE.part.
                        -o - streams the bytes to stdout as they arrive (the SHA-256 is checked at
                        the end: on a mismatch the exit status is 3). With --timeout, it bounds the
                        connect, the wait for the response head and every silence in the body
                        (default: 10 s, 30 s and 60 s)
  ls [-q FILTER]        cached artifacts            (operator API: --token or WITHCACHE_API_TOKEN)
  misses [-q FILTER]    URLs asked for and not cached
  fetch URL [-H 'Name: Value']...   queue a fill
  rm KEY                delete an artifact
  stats                 counts and sizes

Exit status: 0 ok, 1 miss / not found, 2 server unreachable, 3 download failed or checksum mismatch,
4 refused by the server, 64 bad command line.
)HELP";

int usage(const std::string& message) {
  std::cerr << "withcache-client: " << message << " (see --help)\n";
  return k_usage;
}

int api_failure(const withcache::client::ApiError& e) {
  std::cerr << "withcache-client: " << e.message << '\n';
  switch (e.code) {
  case withcache::client::ApiErrc::unreachable:
    return k_unreachable;
  case withcache::client::ApiErrc::not_found:
    return k_miss;
  default:
    return k_refused;
  }
}

int run(int argc, char** argv) {
  cxxopts::Options options("withcache-client", "Probes a withcache server and downloads through it.");
  options.custom_help("[OPTIONS] COMMAND [ARGS]").positional_help("");
  // clang-format off
  options.add_options()
      ("server", "The cache server (default: $WITHCACHE_SERVER)", cxxopts::value<std::string>())
      ("token", "API token for operator commands (default: $WITHCACHE_API_TOKEN)", cxxopts::value<std::string>())
      ("timeout", "Seconds to wait: probes, health and operator commands; get uses it for the probe and, when "
                  "given, for the connect, the response head and each silence in the body",
       cxxopts::value<double>()->default_value("3"))
      ("o,output", "get: the file to write (default: the artifact's name); '-' streams to stdout",
       cxxopts::value<std::string>())
      ("H,header", "fetch: a request header 'Name: Value' for the origin (repeatable)",
       cxxopts::value<std::vector<std::string>>())
      ("q,filter", "ls/misses: only URLs containing this", cxxopts::value<std::string>()->default_value(""))
      ("limit", "ls/misses: how many", cxxopts::value<unsigned>()->default_value("100"))
      ("json", "Operator commands: print the server's JSON")
      ("version", "Print the version and exit")
      ("h,help", "Print this help and exit")
      ("command", "", cxxopts::value<std::string>())
      ("args", "", cxxopts::value<std::vector<std::string>>());
  // clang-format on
  options.parse_positional({"command", "args"});

  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    return usage(e.what());
  }
  if (args.count("help") != 0) {
    std::cout << options.help({""}) << k_footer;
    return k_ok;
  }
  if (args.count("version") != 0) {
    std::cout << withcache::k_product << '\n';
    return k_ok;
  }
  if (args.count("command") == 0) {
    return usage("no command given");
  }
  const std::string command = args["command"].as<std::string>();
  const std::vector<std::string> rest =
      args.count("args") != 0 ? args["args"].as<std::vector<std::string>>() : std::vector<std::string>{};
  const util::Getenv getenv = util::process_env();
  const auto env = [&getenv](const char* name) {
    const char* value = getenv(name);
    return std::string(value == nullptr ? "" : value);
  };
  const std::string server =
      args.count("server") != 0 ? args["server"].as<std::string>() : env("WITHCACHE_SERVER");
  const std::string token =
      args.count("token") != 0 ? args["token"].as<std::string>() : env("WITHCACHE_API_TOKEN");
  const double timeout_s = args["timeout"].as<double>();
  if (!(timeout_s > 0) || timeout_s > 3600) {
    return usage("--timeout must be between 0 and 3600 seconds");
  }
  withcache::client::ProbeOptions probe{std::chrono::milliseconds(static_cast<long long>(timeout_s * 1000)),
                                        {}};
  const auto one_argument = [&]() -> const std::string* {
    return rest.size() == 1 ? &rest[0] : nullptr;
  };
  const bool needs_server = command != "get";
  if (needs_server && server.empty()) {
    return usage("no server: use --server or set WITHCACHE_SERVER");
  }

  if (command == "url" || command == "probe" || command == "serve-url") {
    const std::string* origin = one_argument();
    if (origin == nullptr) {
      return usage(command + " takes one ORIGIN URL");
    }
    if (auto key = withcache::url::normalize_key(*origin); !key) {
      return usage("ORIGIN: " + key.error().message);
    }
    if (command == "url") {
      std::cout << withcache::url::blob_url(server, *origin) << '\n';
      return k_ok;
    }
    const int status = withcache::client::head_status(withcache::url::blob_url(server, *origin), probe);
    if (command == "serve-url") {
      std::cout << (status == 200 ? withcache::url::blob_url(server, *origin) : *origin) << '\n';
      return k_ok;
    }
    if (status == 0) {
      std::cerr << "withcache-client: " << withcache::url::cache_base(server) << " did not answer\n";
      return k_unreachable;
    }
    std::cout << (status == 200 ? "hit" : "miss") << '\n';
    return status == 200 ? k_ok : k_miss;
  }
  if (command == "health") {
    if (!rest.empty()) {
      return usage("health takes no arguments");
    }
    if (withcache::client::is_healthy(server, probe)) {
      std::cout << "ok\n";
      return k_ok;
    }
    std::cerr << "withcache-client: " << withcache::url::cache_base(server)
              << " is not healthy or did not answer\n";
    return k_unreachable;
  }
  if (command == "get") {
    const std::string* origin = one_argument();
    if (origin == nullptr) {
      return usage("get takes one ORIGIN URL");
    }
    const std::string file = args.count("output") != 0 ? args["output"].as<std::string>()
                                                       : withcache::client::file_name_for(*origin);
    const bool to_stdout = file == "-";
    withcache::client::GetOptions download;
    download.server = server;
    download.probe_timeout = probe.timeout;
    if (args.count("timeout") != 0) {
      download.connect_timeout = probe.timeout;
      download.head_timeout = probe.timeout;
      download.read_timeout = probe.timeout;
    }
    const bool tty = ::isatty(STDERR_FILENO) == 1;
    const auto start = std::chrono::steady_clock::now();
    auto last = start - std::chrono::seconds(1);
    if (tty) {
      download.on_progress = [&](std::uint64_t done, std::uint64_t total) {
        const auto now = std::chrono::steady_clock::now();
        if (now - last >= std::chrono::milliseconds(100) || done == total) {
          last = now;
          const double seconds = std::chrono::duration<double>(now - start).count();
          std::fprintf(stderr, "\r%s\x1b[K", withcache::client::progress_line(done, total, seconds).c_str());
        }
      };
    }
    const auto write_out = [](const char* data, std::size_t length) {
      // Straight to the descriptor, unbuffered: the reader sees bytes as they arrive.
      while (length > 0) {
        const ssize_t n = ::write(STDOUT_FILENO, data, length);
        if (n < 0 && errno == EINTR) {
          continue;
        }
        if (n <= 0) {
          return false; // EPIPE: the reader went away
        }
        data += n;
        length -= static_cast<std::size_t>(n);
      }
      return true;
    };
    if (to_stdout) {
      std::signal(SIGPIPE, SIG_IGN);
    }
    const auto result = to_stdout ? withcache::client::stream(*origin, write_out, download)
                                  : withcache::client::get(*origin, file, download);
    if (tty) {
      std::fputs("\n", stderr);
    }
    if (!result) {
      std::cerr << "withcache-client: " << result.error().message << '\n';
      return k_failed;
    }
    std::cerr << "withcache-client: " << file << ": " << result->size << " bytes from "
              << (result->from_cache ? "the cache" : "the origin")
              << (result->verified  ? ", SHA-256 verified"
                  : result->filling ? ", not verified (still filling)"
                                    : "")
              << (result->resumed ? ", resumed" : "") << '\n';
    if (to_stdout) {
      std::cerr << "withcache-client: sha256 " << result->sha256 << '\n';
    } else {
      std::cout << result->sha256 << "  " << file << '\n';
    }
    return k_ok;
  }

  const withcache::client::Api api(server, token, probe.timeout);
  const bool as_json = args.count("json") != 0;
  const withcache::client::ApiListQuery query{0, args["limit"].as<unsigned>(),
                                              args["filter"].as<std::string>()};
  if (command == "ls") {
    if (!rest.empty()) {
      return usage(command + " takes no arguments (filter with -q)");
    }
    const auto page = api.artifacts(query);
    if (!page) {
      return api_failure(page.error());
    }
    if (as_json) {
      std::cout << page->json << '\n';
      return k_ok;
    }
    std::printf("%-64s  %10s  %6s  %s\n", "KEY", "SIZE", "HITS", "URL");
    for (const auto& a : page->items) {
      std::printf("%-64s  %10s  %6llu  %s\n", a.key.c_str(), withcache::util::format_size(a.size).c_str(),
                  static_cast<unsigned long long>(a.hits), a.url.c_str());
    }
    std::cerr << page->total << " in all\n";
    return k_ok;
  }
  if (command == "misses") {
    if (!rest.empty()) {
      return usage(command + " takes no arguments (filter with -q)");
    }
    const auto page = api.misses(query);
    if (!page) {
      return api_failure(page.error());
    }
    if (as_json) {
      std::cout << page->json << '\n';
      return k_ok;
    }
    std::printf("%-64s  %6s  %-20s  %s\n", "KEY", "COUNT", "LAST SEEN", "URL");
    for (const auto& m : page->items) {
      std::printf("%-64s  %6llu  %-20s  %s\n", m.key.c_str(), static_cast<unsigned long long>(m.count),
                  withcache::util::format_rfc3339(m.last_seen).c_str(), m.url.c_str());
    }
    std::cerr << page->total << " in all\n";
    return k_ok;
  }
  if (command == "stats") {
    const auto stats = api.stats();
    if (!stats) {
      return api_failure(stats.error());
    }
    if (as_json) {
      std::cout << stats->json << '\n';
      return k_ok;
    }
    const auto& s = stats->value;
    const auto size = withcache::util::format_size;
    std::cout << "artifacts      " << s.artifacts << '\n'
              << "stored         " << size(s.stored_bytes) << '\n'
              << "capacity       " << (s.capacity == 0 ? std::string("unlimited") : size(s.capacity)) << '\n'
              << "hits           " << s.hits << '\n'
              << "misses         " << s.misses << '\n'
              << "served         " << size(s.bytes_served) << '\n'
              << "fetched        " << size(s.bytes_fetched) << '\n'
              << "queue depth    " << s.queue_depth << '\n';
    return k_ok;
  }
  if (command == "fetch") {
    const std::string* origin = one_argument();
    if (origin == nullptr) {
      return usage("fetch takes one URL");
    }
    std::vector<std::pair<std::string, std::string>> headers;
    if (args.count("header") != 0) {
      for (const auto& line : args["header"].as<std::vector<std::string>>()) {
        auto field = withcache::client::parse_header_line(line);
        if (!field) {
          return usage("-H takes 'Name: Value' (a header name, a colon, a value without line breaks)");
        }
        headers.push_back(std::move(*field));
      }
    }
    const auto job = api.fetch(*origin, headers);
    if (!job) {
      return api_failure(job.error());
    }
    if (as_json) {
      std::cout << job->json << '\n';
      return k_ok;
    }
    std::cout << "queued " << job->value.id << ' ' << withcache::url::redact(job->value.url) << '\n';
    return k_ok;
  }
  if (command == "rm") {
    const std::string* key = one_argument();
    if (key == nullptr || key->size() != 64 ||
        key->find_first_not_of("0123456789abcdef") != std::string::npos) {
      return usage("rm takes one KEY: the 64-hex-digit key that ls prints");
    }
    const auto removed = api.remove(*key);
    if (!removed) {
      return api_failure(removed.error());
    }
    std::cout << "deleted " << *key << '\n';
    return k_ok;
  }
  return usage("unknown command '" + command + "'");
}

} // namespace

int cli_main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "withcache-client: " << e.what() << '\n';
    return k_failed;
  }
}

} // namespace withcache::client
