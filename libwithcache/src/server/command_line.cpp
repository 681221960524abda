// withcache-server's command line: option parsing and meaning (options_from_args) and what the program
// does with them (run_command_line: --verify, or serve until SIGINT/SIGTERM). apps/server/main.cpp only
// calls these two.
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string_view>
#include <thread>

#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cxxopts.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "withcache/server.hpp"
#include "withcache/url.hpp"
#include "withcache/util/env.hpp"
#include "withcache/util/size.hpp"
#include "withcache/util/strings.hpp"
#include "withcache/util/time.hpp"
#include "withcache/version.hpp"

namespace withcache::server {
namespace {

constexpr int k_exit_usage = 2;
constexpr const char* k_help_footer =
    "\nDurations are a number and a unit: 500ms, 10s, 30m, 12h, 7d. Sizes are 1024-based: 16K, 1M.\n"
    "Environment: WITHCACHE_ADMIN_PASSWORD, WITHCACHE_SESSION_SECRET and WITHCACHE_API_TOKEN are read by "
    "the\n"
    "operator UI and API. Signals: SIGINT/SIGTERM stop accepting, keep queued and running fills for the\n"
    "next start, and exit 0; SIGHUP reloads --tls-cert and --tls-key (a pair that does not load is\n"
    "refused and the previous one kept). Exit status 2: bad option or value, unusable data dir, port in\n"
    "use, certificate or key that cannot be loaded (an encrypted key needs --tls-key-passphrase-file).\n"
    "--verify exits 0 when every artifact is intact, 1 when one is damaged, 2 when it cannot check (a\n"
    "server holds the data dir).\n";

// A bad command line: its one-line reason (main prints it and exits 2).
Unexpected<std::string> fail(std::string message) {
  return unexpected(std::move(message));
}

int fail_exit(const std::string& message) {
  std::cerr << "withcache-server: " << message << '\n';
  return k_exit_usage;
}

// `--min-free`: `10G`, `5%`, or both comma-separated (the smaller applies); `0` turns the guard off.
void parse_min_free(const std::string& text, ServerOptions& config) {
  config.min_free_bytes.reset();
  config.min_free_percent.reset();
  std::string_view rest = text;
  while (!rest.empty()) {
    const std::size_t comma = rest.find(',');
    const std::string part(util::trim(rest.substr(0, comma)));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    if (part.ends_with('%')) {
      char* end = nullptr;
      const double percent = std::strtod(part.c_str(), &end);
      if (end != part.c_str() + part.size() - 1 || !(percent >= 0) || percent > 100 ||
          config.min_free_percent) {
        throw std::invalid_argument("--min-free: '" + part + "' is not a percentage between 0% and 100%");
      }
      config.min_free_percent = percent;
      continue;
    }
    const auto bytes = util::parse_size(part);
    if (!bytes || config.min_free_bytes) {
      throw std::invalid_argument("--min-free: " +
                                  (bytes ? "give one size and one percentage at most" : bytes.error()));
    }
    config.min_free_bytes = *bytes;
  }
  if (config.min_free_bytes == 0ULL && !config.min_free_percent) {
    config.min_free_bytes.reset(); // `0`: no guard
  }
}

// --verify: progress on a terminal, one line per damaged artifact, a summary; 0 clean, 1 damaged, 2 error.
int verify_command(const std::filesystem::path& data_dir) {
  const bool terminal = ::isatty(STDERR_FILENO) != 0;
  const auto progress = [terminal](const store::VerifyProgress& p) {
    if (terminal) {
      std::cerr << "\rverified " << p.artifacts_done << " of " << p.artifacts_total << " artifacts, "
                << util::format_size(p.bytes_done) << " of " << util::format_size(p.bytes_total) << "   "
                << std::flush;
    }
  };
  try {
    const auto report = verify_data_dir(data_dir, progress);
    if (terminal) {
      std::cerr << '\n';
    }
    if (!report) {
      return fail_exit(report.error());
    }
    for (const auto& problem : report->problems) {
      std::cout << "damaged " << problem.key << ' ' << url::redact(problem.url) << ": " << problem.problem
                << '\n';
    }
    std::cout << data_dir.string() << ": " << report->artifacts << " artifacts, "
              << util::format_size(report->bytes) << " checked; " << report->problems.size() << " damaged";
    if (report->orphans > 0) {
      std::cout << "; " << report->orphans << " files in blobs/ without a row (the server removes them)";
    }
    std::cout << '\n';
    if (!report->problems.empty()) {
      std::cout << "Start the server: a damaged artifact is dropped when it is served or scrubbed (POST "
                   "/api/v1/scrub) and filled again; or delete it.\n";
      return 1;
    }
    return 0;
  } catch (const StartupError& e) {
    return fail_exit(e.what());
  }
}

} // namespace

Expected<CommandLine, std::string> options_from_args(int argc, const char* const* argv) {
  cxxopts::Options options("withcache-server",
                           "The withcache cache-host. Serves cached artifacts at /b/<token>/<name> (and "
                           "/blob?url=), records misses and fills them in the background.");
  // clang-format off
  options.add_options()
      ("host", "Address to listen on", cxxopts::value<std::string>()->default_value("0.0.0.0"))
      ("port", "Port to listen on (0 picks a free one)", cxxopts::value<int>()->default_value("3000"))
      ("data-dir", "Where blobs/, tmp/ and cache.db live (created if missing)",
       cxxopts::value<std::string>()->default_value("./data"))
      ("workers", "Fills that run at once (one more thread runs only operator-added fills)",
       cxxopts::value<unsigned>()->default_value("2"))
      ("curate", "Do not fetch misses automatically; an operator approves each fill")
      ("keep-query", "Keep the whole query string in the cache key, signing parameters included (by "
                     "default the key keeps the query except signing and credential parameters: X-Amz-*, "
                     "X-Goog-*, Expires, Signature, Key-Pair-Id, Policy, Azure SAS sv ss srt sp se st spr sig "
                     "sr sdd skoid sktid skt ske sks skv, __token__, hdnts, token, access_token)")
      ("drop-query", "Drop the whole query string from the cache key, as withcache 0.3 did: "
                     "'?file=a' and '?file=b' are then one artifact, whoever asked first")
      ("query-drop", "Also leave query parameter NAME out of the cache key (repeatable; case-insensitive; "
                     "'NAME*' for every name with that prefix)", cxxopts::value<std::vector<std::string>>(), "NAME")
      ("cache-html", "Store text/html responses too. By default a fill refuses HTML (often a vendor's login "
                     "or error page), like responses marked Cache-Control no-store or private")
      ("max-age", "Revalidate every artifact this long after it was fetched (e.g. 30m, 12h, 7d), instead "
                  "of following the origin's max-age/Expires; by default an artifact without an explicit "
                  "lifetime, or marked immutable, is never revalidated", cxxopts::value<std::string>(), "DURATION")
      ("min-rate", "A fill that moves less than SIZE per second, averaged over 60 s, fails (curl's "
                   "--speed-limit); 0 = no minimum", cxxopts::value<std::string>()->default_value("1K"), "SIZE")
      ("max-bytes", "Capacity, e.g. 50M, 20G, 1.5T (1024-based); 0 = unlimited. Fills that would not fit are "
                    "refused; nothing is evicted", cxxopts::value<std::string>()->default_value("0"))
      ("allow-origin", "Host glob that may be fetched, e.g. '*.nvidia.com' (repeatable). When given, only "
                       "matching host names are fetched. It never opens a private address: see --allow-private",
       cxxopts::value<std::vector<std::string>>(), "GLOB")
      ("allow-private", "A non-public network fills may reach: a CIDR (10.0.0.0/8), an address (10.1.2.3, "
                        "fd00::5) or a host name resolved at start (repeatable). By default fills reach public "
                        "unicast addresses only: loopback, 0/8, RFC 1918, CGNAT 100.64/10, link-local, ULA "
                        "fc00::/7, multicast, documentation and reserved ranges and this host's own addresses "
                        "are refused after DNS and at every redirect", cxxopts::value<std::vector<std::string>>(),
       "CIDR|HOST")
      ("forward-auth", "Let an automatic fill use a missed read's Authorization header and user:password@ in "
                       "its URL. The bytes fetched with those credentials are then served to EVERYONE who asks. "
                       "Without it such a miss is recorded as 'carries credentials' and not fetched; add gated "
                       "artifacts as the operator instead (Add from URI, with headers)")
      ("queue-max", "Queued fills at most; a miss over it is counted, not queued (0 = no cap)",
       cxxopts::value<std::size_t>()->default_value("1000"), "N")
      ("queue-max-per-client", "Queued automatic fills one client address (IPv6: one /64) may cause; operator-"
                               "added fills are not capped and run first (0 = no cap)",
       cxxopts::value<std::size_t>()->default_value("50"), "N")
      ("min-free", "Refuse fills that would leave less free space than this on the data dir's filesystem: a "
                   "size (10G), a percentage (5%), or both comma-separated for the smaller; 0 = no guard",
       cxxopts::value<std::string>()->default_value("5%,10G"), "SIZE|N%")
      ("miss-wait", "How long a miss that starts a fill may wait for the origin's response head, to be "
                    "served at once while the fill runs (keep it under the shim's 3 s probe deadline); 0 = never",
       cxxopts::value<std::string>()->default_value("1s"))
      ("tls-cert", "PEM certificate chain: serve HTTPS (with --tls-key); SIGHUP reloads it",
       cxxopts::value<std::string>())
      ("tls-key", "PEM private key of --tls-cert. An encrypted key needs --tls-key-passphrase-file (the server "
                  "never prompts)", cxxopts::value<std::string>())
      ("tls-key-passphrase-file", "A file (mode 0600) whose first line is the passphrase of an encrypted "
                                  "--tls-key; read at start and at each SIGHUP, never logged",
       cxxopts::value<std::string>(), "FILE")
      ("io-threads", "Threads serving connections (0 = one per core)", cxxopts::value<unsigned>()->default_value("0"))
      ("head-timeout", "A request's head must arrive within this (slow senders are cut)",
       cxxopts::value<std::string>()->default_value("10s"))
      ("idle-timeout", "An idle keep-alive connection is closed after this",
       cxxopts::value<std::string>()->default_value("15s"))
      ("body-timeout", "A request body (forms, API) must arrive within this",
       cxxopts::value<std::string>()->default_value("30s"))
      ("send-timeout", "A client that reads nothing of a response for this long is dropped",
       cxxopts::value<std::string>()->default_value("60s"))
      ("max-header-bytes", "Request line and header fields together, at most (431 beyond)",
       cxxopts::value<std::string>()->default_value("16K"))
      ("max-header-fields", "Header fields per request, at most (431 beyond)",
       cxxopts::value<unsigned>()->default_value("100"))
      ("max-body-bytes", "Request body (forms, API), at most (413 beyond)",
       cxxopts::value<std::string>()->default_value("1M"))
      ("max-connections-per-address", "Open connections from one client address, at most (closed beyond)",
       cxxopts::value<unsigned>()->default_value("256"))
      ("scrub-rate", "MiB a second the background scrub re-reads cached blobs at to check their SHA-256 (a "
                     "suffix gives another unit: 512K); it pauses while fills run or blobs are sent fast, and a "
                     "mismatch is moved to quarantine/ and filled again. 0 = no background scrub (POST "
                     "/api/v1/scrub still starts a pass)", cxxopts::value<std::string>()->default_value("20"), "RATE")
      ("verify", "Check the data dir offline and exit: every artifact's blob is there with its size and "
                 "SHA-256. Refuses while a server uses the dir. Exit 0 clean, 1 damaged, 2 error")
      ("log-level", "trace, debug, info, warn, error or off", cxxopts::value<std::string>()->default_value("info"))
      ("version", "Print the version and exit")
      ("h,help", "Print this help and exit");
  // clang-format on
  options.custom_help("[OPTIONS]");

  CommandLine command;
  ServerOptions& config = command.options;
  try {
    const auto args = options.parse(argc, argv);
    if (args.count("help") != 0) {
      command.action = CommandLine::Action::print;
      command.print = options.help() + k_help_footer;
      return command;
    }
    if (args.count("version") != 0) {
      command.action = CommandLine::Action::print;
      command.print = std::string(k_product) + "\n";
      return command;
    }
    if (!args.unmatched().empty()) {
      return fail("unexpected argument '" + args.unmatched().front() + "' (see --help)");
    }
    config.host = args["host"].as<std::string>();
    config.port = args["port"].as<int>();
    if (config.port < 0 || config.port > 65535) {
      return fail("--port must be between 0 and 65535");
    }
    config.data_dir = args["data-dir"].as<std::string>();
    if (args.count("verify") != 0) {
      command.action = CommandLine::Action::verify;
    }
    {
      const std::string rate = args["scrub-rate"].as<std::string>();
      if (!rate.empty() && rate.find_first_not_of("0123456789.") == std::string::npos) {
        const double mib = std::strtod(rate.c_str(), nullptr);
        if (!(mib >= 0) || mib > 1e6) {
          return fail("--scrub-rate: '" + rate + "' is not a rate in MiB/s");
        }
        config.scrub_rate = static_cast<std::uint64_t>(mib * 1024 * 1024);
      } else {
        const auto bytes = util::parse_size(rate);
        if (!bytes) {
          return fail("--scrub-rate: " + bytes.error());
        }
        config.scrub_rate = *bytes;
      }
    }
    config.workers = args["workers"].as<unsigned>();
    if (config.workers == 0 || config.workers > 64) {
      return fail("--workers must be between 1 and 64");
    }
    config.curate = args.count("curate") != 0;
    config.keep_query = args.count("keep-query") != 0;
    config.drop_query = args.count("drop-query") != 0;
    if (config.keep_query && config.drop_query) {
      return fail("--keep-query and --drop-query cannot be used together");
    }
    if (args.count("query-drop") != 0) {
      for (const auto& name : args["query-drop"].as<std::vector<std::string>>()) {
        if (name.empty() || name == "*" || name.find_first_of("&=#? \t") != std::string::npos) {
          return fail("--query-drop: '" + name + "' is not a query parameter name");
        }
        config.query_drop.push_back(name);
      }
    }
    config.cache_html = args.count("cache-html") != 0;
    if (args.count("max-age") != 0) {
      const auto max_age = util::parse_duration(args["max-age"].as<std::string>());
      if (!max_age) {
        return fail("--max-age: " + max_age.error());
      }
      if (*max_age < std::chrono::seconds(1)) {
        return fail("--max-age must be at least 1s (leave it out to follow the origin)");
      }
      config.max_age = std::chrono::duration_cast<std::chrono::seconds>(*max_age);
    }
    const auto min_rate = util::parse_size(args["min-rate"].as<std::string>());
    if (!min_rate) {
      return fail("--min-rate: " + min_rate.error());
    }
    config.min_rate = *min_rate;
    config.forward_auth = args.count("forward-auth") != 0;
    const auto max_bytes = util::parse_size(args["max-bytes"].as<std::string>());
    if (!max_bytes) {
      return fail("--max-bytes: " + max_bytes.error());
    }
    config.max_bytes = *max_bytes;
    if (args.count("allow-origin") != 0) {
      config.allow_origins = args["allow-origin"].as<std::vector<std::string>>();
    }
    if (args.count("allow-private") != 0) {
      config.allow_private = args["allow-private"].as<std::vector<std::string>>();
    }
    config.queue_max = args["queue-max"].as<std::size_t>();
    config.queue_max_per_client = args["queue-max-per-client"].as<std::size_t>();
    command.min_free = args["min-free"].as<std::string>();
    parse_min_free(command.min_free, config);
    const auto duration = [&](const char* name, std::chrono::milliseconds& out) {
      const auto parsed = util::parse_duration(args[name].as<std::string>());
      if (!parsed || parsed->count() == 0) {
        throw std::invalid_argument(std::string("--") + name + ": " +
                                    (parsed ? "must be more than zero" : parsed.error()));
      }
      out = *parsed;
    };
    const auto size = [&](const char* name, std::size_t& out, std::uint64_t min, std::uint64_t max) {
      const auto parsed = util::parse_size(args[name].as<std::string>());
      if (!parsed || *parsed < min || *parsed > max) {
        throw std::invalid_argument(
            std::string("--") + name + ": " +
            (parsed ? "must be between " + util::format_size(min) + " and " + util::format_size(max)
                    : parsed.error()));
      }
      out = static_cast<std::size_t>(*parsed);
    };
    {
      const auto wait = util::parse_duration(args["miss-wait"].as<std::string>());
      if (!wait || *wait > std::chrono::seconds(30)) {
        throw std::invalid_argument("--miss-wait: " + (wait ? std::string("at most 30s") : wait.error()));
      }
      config.miss_wait = *wait;
    }
    duration("head-timeout", config.head_timeout);
    duration("idle-timeout", config.idle_timeout);
    duration("body-timeout", config.body_timeout);
    duration("send-timeout", config.send_timeout);
    size("max-header-bytes", config.max_header_bytes, 1024, 1024 * 1024);
    size("max-body-bytes", config.max_body_bytes, 1024, 256ULL * 1024 * 1024);
    config.max_header_fields = args["max-header-fields"].as<unsigned>();
    config.max_connections_per_address = args["max-connections-per-address"].as<unsigned>();
    if (config.max_header_fields == 0 || config.max_connections_per_address == 0) {
      return fail("--max-header-fields and --max-connections-per-address must be at least 1");
    }
    config.io_threads = args["io-threads"].as<unsigned>();
    if (config.io_threads > 256) {
      return fail("--io-threads must be between 0 and 256");
    }
    if (args.count("tls-cert") != 0) {
      config.tls_cert = args["tls-cert"].as<std::string>();
    }
    if (args.count("tls-key") != 0) {
      config.tls_key = args["tls-key"].as<std::string>();
    }
    if (config.tls_cert.empty() != config.tls_key.empty()) {
      return fail("--tls-cert and --tls-key go together");
    }
    if (args.count("tls-key-passphrase-file") != 0) {
      config.tls_key_passphrase_file = args["tls-key-passphrase-file"].as<std::string>();
      if (config.tls_key.empty()) {
        return fail("--tls-key-passphrase-file needs --tls-cert and --tls-key");
      }
    }
    command.log_level = args["log-level"].as<std::string>();
    const auto level = spdlog::level::from_str(command.log_level);
    if (level == spdlog::level::off && command.log_level != "off") {
      return fail("--log-level must be trace, debug, info, warn, error or off");
    }
  } catch (const cxxopts::exceptions::exception& e) {
    return fail(std::string(e.what()) + " (see --help)");
  } catch (const std::invalid_argument& e) {
    return fail(e.what());
  }
  const util::Getenv getenv = util::process_env();
  const auto env = [&getenv](const char* name) {
    const char* value = getenv(name);
    return std::string(value == nullptr ? "" : value);
  };
  config.admin_password = env("WITHCACHE_ADMIN_PASSWORD");
  config.session_secret = env("WITHCACHE_SESSION_SECRET");
  config.api_token = env("WITHCACHE_API_TOKEN");
  return command;
}

int run_command_line(const CommandLine& command) {
  if (command.action == CommandLine::Action::print) {
    std::cout << command.print;
    return 0;
  }
  spdlog::set_default_logger(spdlog::stderr_color_mt("withcache"));
  spdlog::set_level(spdlog::level::from_str(command.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
  const ServerOptions& config = command.options;
  if (command.action == CommandLine::Action::verify) {
    return verify_command(config.data_dir);
  }

  // Every connection holds a descriptor: take all the kernel allows this process (the hard limit).
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  ::getrlimit(RLIMIT_NOFILE, &files);

  // Signals are taken by one thread with sigwait, never by a handler that
  // would have to be async-signal-safe; every other thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  try {
    Server server(config);
    server.bind();
    spdlog::info("{} listening on {}://{} (data dir {}, {} workers, {}, capacity {})", k_product,
                 server.tls() ? "https" : "http", server.local_endpoint(), config.data_dir.string(),
                 config.workers, config.curate ? "curated" : "auto-fetch",
                 config.max_bytes == 0 ? "unlimited" : util::format_size(config.max_bytes));
    spdlog::info("fills reach {}", server.origin_policy());
    spdlog::info("open files: up to {} (RLIMIT_NOFILE)", static_cast<unsigned long long>(files.rlim_cur));
    if (config.max_bytes == 0 && !config.curate) {
      const std::string guard = !config.min_free_bytes && !config.min_free_percent
                                    ? std::string("with --min-free 0 nothing stops them short of a full disk")
                                    : "only --min-free " + command.min_free + " stops them";
      spdlog::warn(
          "--max-bytes is unlimited and misses are fetched automatically: anonymous readers can fill "
          "the disk ({}; set --max-bytes or --curate)",
          guard);
    }
    if (config.admin_password.empty()) {
      spdlog::warn("WITHCACHE_ADMIN_PASSWORD is not set: the operator UI and its actions (fetch, delete, "
                   "cancel) are OPEN to anyone who can reach this port");
    }
    if (config.forward_auth) {
      spdlog::warn("--forward-auth: bytes fetched with a client's credentials are served to everyone");
    }
    std::thread signal_waiter([&server, stop_signals] {
      for (;;) {
        int signal = 0;
        sigwait(&stop_signals, &signal);
        if (signal == SIGHUP) {
          // Off this thread: it must stay free to take SIGTERM whatever the reload does.
          server.reload_tls_async([](const std::string& error) {
            if (error.empty()) {
              spdlog::info("SIGHUP: reloaded the TLS certificate and key");
            } else {
              spdlog::warn("SIGHUP: {}; still serving the previous certificate and key", error);
            }
          });
          continue;
        }
        spdlog::info("received {}, stopping", signal == SIGINT ? "SIGINT" : "SIGTERM");
        server.stop();
        return;
      }
    });
    server.run();
    // run() returned because of a signal, or because listening failed.
    pthread_kill(signal_waiter.native_handle(), SIGTERM);
    signal_waiter.join();
    spdlog::info("stopped; queued and running fills resume on the next start");
  } catch (const StartupError& e) {
    return fail_exit(e.what());
  }
  return 0;
}

} // namespace withcache::server
