// The outbound HTTP client (origin::HttpConnection) through its real users: bounded response heads
// (issue 19, item 1) — everything we read a response head from — the fetcher
// (fills and `withcache-client get`), the client's JSON API calls and HEADs, the shim's probe — stops at
// 64 KiB or 100 fields, whatever the peer sends, with a clear error; TLS verification; proxies.
#include <catch2/catch.hpp>

#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include <sys/resource.h>
#include <sys/wait.h>

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <httplib.h>

#include "origin/http_client.hpp"
#include "support/eventually.hpp"
#include "support/forward_proxy.hpp"
#include "support/loopback.hpp"
#include "support/process.hpp"
#include "support/raw_origin.hpp"
#include "support/server_process.hpp"
#include "support/temp_dir.hpp"
#include "withcache/client/probe.hpp"
#include "withcache/digest.hpp"
#include "withcache/origin.hpp"
#include "withcache/util/encoding.hpp"

namespace fs = std::filesystem;
using namespace withcache;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t k_flood = 160ull << 20; // what the attack sent: 160 MB of header lines

std::string fields(std::size_t n) {
  std::string text;
  for (std::size_t i = 0; i < n; ++i) {
    text += "X-Field-" + std::to_string(i) + ": v\r\n";
  }
  return text;
}

// kB of the peak resident set of a process (VmHWM), from /proc.
long peak_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("VmHWM:")) {
      return std::stol(line.substr(6));
    }
  }
  return -1;
}

// Runs a command to its end (bounded) and reports its exit code, stderr and peak RSS (from wait4). The
// peak includes this test's own (posix_spawn shares our memory until the exec), so `own_kib` is that
// part: what the command itself held is at most max_rss_kib - own_kib.
struct Measured {
  int exit_code = -1;
  std::string err;
  long max_rss_kib = 0;
  long own_kib = 0;
};

Measured run_measured(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = 60s) {
  test::TempDir tmp;
  Measured m;
  m.own_kib = peak_kib(::getpid());
  const pid_t pid = test::spawn(argv, {"no_proxy=*"}, tmp / "out", tmp / "err"); // never CI's proxy
  REQUIRE(pid > 0);
  int status = 0;
  rusage usage{};
  const bool done = test::eventually([&] { return ::wait4(pid, &status, WNOHANG, &usage) == pid; }, timeout);
  if (!done) {
    ::kill(pid, SIGKILL);
    ::wait4(pid, &status, 0, &usage);
  } else if (WIFEXITED(status)) {
    m.exit_code = WEXITSTATUS(status);
  }
  m.err = test::slurp(tmp / "err");
  m.max_rss_kib = usage.ru_maxrss;
  return m;
}

} // namespace

TEST_CASE("response heads: what a peer sends, and what request_small makes of it", "[heads]") {
  struct Case {
    const char* name;
    std::string response;
    int status;      // 0: an error is expected
    const char* has; // the body (status != 0) or a phrase of the error
  };
  const std::string ok = "HTTP/1.1 200 OK\r\n";
  const Case cases[] = {
      {"content-length", ok + "Content-Length: 5\r\n\r\nhello", 200, "hello"},
      {"chunked", ok + "Transfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3;x=y\r\nllo\r\n0\r\n\r\n", 200,
       "hello"},
      {"until close", ok + "\r\nhello", 200, "hello"},
      {"interim 100 first", "HTTP/1.1 100 Continue\r\n\r\n" + ok + "Content-Length: 2\r\n\r\nok", 200, "ok"},
      {"a storm of interim heads",
       [] {
         std::string storm;
         while (storm.size() < 70'000) {
           storm += "HTTP/1.1 100 Continue\r\n\r\n";
         }
         return storm;
       }() +
           ok + "Content-Length: 2\r\n\r\nok",
       0, "over 65536 bytes"},
      {"HTTP/1.0", "HTTP/1.0 404 Not Found\r\nContent-Length: 4\r\n\r\nnope", 404, "nope"},
      {"100 fields", ok + fields(99) + "Content-Length: 1\r\n\r\n!", 200, "!"},
      {"101 fields", ok + fields(100) + "Content-Length: 1\r\n\r\n!", 0, "more than 100 header fields"},
      {"a 70 000-byte field", ok + "X-Big: " + std::string(70'000, 'a') + "\r\n\r\n", 0, "over 65536 bytes"},
      {"conflicting lengths", ok + "Content-Length: 5\r\nContent-Length: 10\r\n\r\nhello", 0,
       "conflicting Content-Length headers (5 and 10)"},
      {"duplicate lengths", ok + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 0,
       "duplicate Content-Length headers (5)"},
      {"length and chunked", ok + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 0,
       "both Content-Length and Transfer-Encoding"},
      {"chunked then length", ok + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 0,
       "both Content-Length and Transfer-Encoding"},
      {"gzip transfer coding", ok + "Transfer-Encoding: gzip\r\n\r\nhello", 0,
       "unsupported Transfer-Encoding"},
      {"bad length", ok + "Content-Length: 1O\r\n\r\nhello", 0, "malformed Content-Length (1O)"},
      {"not HTTP", "SSH-2.0-OpenSSH_9.2\r\n\r\n", 0, "malformed response"},
      {"a status under 100", "HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n", 0,
       "malformed response (status 99)"},
      {"short body", ok + "Content-Length: 10\r\n\r\nhello", 0, "closed before the body ended"},
      {"short chunked body", ok + "Transfer-Encoding: chunked\r\n\r\n5\r\nhel", 0,
       "closed before the body ended"},
      {"nothing at all", "", 0, "closed before a response head"},
      {"half a head", ok + "Content-Le", 0, "closed inside the response head"},
      {"a chunk-size line of 100 000 bytes",
       ok + "Transfer-Encoding: chunked\r\n\r\n5;" + std::string(100'000, 'a'), 0, "over 65536 bytes"},
      {"101 trailer fields", ok + "Transfer-Encoding: chunked\r\n\r\n0\r\n" + fields(101) + "\r\n", 0,
       "more than 100 header fields"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    test::RawOrigin raw(c.response);
    const auto got = origin::request_small("GET", raw.url("/x"), {}, {}, 5s, 1 << 20);
    if (c.status != 0) {
      REQUIRE(got.has_value());
      CHECK(got->head.status == c.status);
      CHECK(got->body == c.has);
    } else {
      REQUIRE_FALSE(got.has_value());
      CHECK_THAT(got.error().message, Catch::Contains(c.has));
    }
  }
}

TEST_CASE("response heads: a body over the caller's bound is refused", "[heads]") {
  test::RawOrigin raw("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world");
  const auto got = origin::request_small("GET", raw.url("/x"), {}, {}, 5s, 10);
  REQUIRE_FALSE(got.has_value());
  CHECK(got.error().code == origin::WireErrc::malformed);
  CHECK_THAT(got.error().message, Catch::Contains("over 10 bytes"));
}

TEST_CASE("response heads: a request header that would split the request is never sent", "[heads]") {
  test::RawOrigin raw("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  const auto got = origin::request_small("GET", raw.url("/x"), {{"X-Evil", "a\r\nHost: other"}}, {}, 5s, 10);
  REQUIRE_FALSE(got.has_value());
  CHECK((raw.requests().empty() || raw.requests().front().find("other") == std::string::npos));
}

TEST_CASE("a fill stops a 160 MB header flood at the limit and does not retry it", "[heads][fills]") {
  for (const std::string& line :
       {std::string("X-Flood: a\r\n"), "X-Flood-Long: " + std::string(4000, 'b') + "\r\n"}) {
    INFO("line of " << line.size() << " bytes");
    test::RawOrigin raw("HTTP/1.1 200 OK\r\n\r\nbody", k_flood, line);
    test::TempDir dir;
    origin::FetchRequest request;
    request.url = raw.url("/flood.bin");
    request.part_path = dir / "flood.part";
    origin::FetchOptions options;
    options.policy = origin::OriginPolicy::any();
    options.getenv = [](const char*) -> const char* {
      return nullptr;
    }; // no proxy from CI's environment
    const auto got = origin::fetch_to_file(request, options);
    REQUIRE_FALSE(got.has_value());
    CHECK(got.error().reason == origin::FetchErrc::malformed);
    const bool says = got.error().detail.find("more than 100 header fields") != std::string::npos ||
                      got.error().detail.find("over 65536 bytes") != std::string::npos;
    CHECK(says);
    CHECK(raw.requests().size() == 1); // refused, not retried
    // What the origin pushed before we hung up: the limit plus what the socket buffers held.
    CHECK(raw.flooded() < (16u << 20));
  }
}

#ifdef WITHCACHE_SERVER
TEST_CASE("the server's memory stays flat under an origin's header flood", "[heads][server]") {
  test::RawOrigin raw("HTTP/1.1 200 OK\r\n\r\nbody", k_flood);
  test::ServerProcess server({"--allow-private", "127.0.0.1"}, {"WITHCACHE_API_TOKEN=t0ken", "no_proxy=*"});
  const long before = peak_kib(server.pid());
  REQUIRE(before > 0);
  const auto miss = test::curl(server.base() + "/blob?url=" + raw.url("/flood.bin"));
  CHECK(miss.status == 404);
  REQUIRE(test::eventually(
      [&] {
        const auto list =
            test::curl(server.base() + "/api/v1/downloads", {"-H", "Authorization: Bearer t0ken"});
        return list.body.find("\"failed\"") != std::string::npos;
      },
      30s));
  const auto list = test::curl(server.base() + "/api/v1/downloads", {"-H", "Authorization: Bearer t0ken"});
  CHECK((list.body.find("header fields") != std::string::npos ||
         list.body.find("65536 bytes") != std::string::npos));
  const long after = peak_kib(server.pid());
  INFO("peak RSS " << before << " kB before, " << after << " kB after");
  CHECK(after - before < 8 * 1024);
  CHECK(raw.requests().size() == 1);
}
#endif

#ifdef WITHCACHE_CLIENT
TEST_CASE("withcache-client get: a header flood is one line and flat memory", "[heads][client]") {
  test::RawOrigin raw("HTTP/1.1 200 OK\r\n\r\nbody", k_flood);
  test::TempDir dir;
  const auto got = run_measured({WITHCACHE_CLIENT, "get", raw.url("/flood.bin"), "-o", (dir / "f").string()});
  INFO(got.err);
  CHECK(got.exit_code != 0);
  CHECK(got.exit_code != -1);
  CHECK(std::count(got.err.begin(), got.err.end(), '\n') == 1);
  CHECK((got.err.find("header fields") != std::string::npos ||
         got.err.find("65536 bytes") != std::string::npos));
  INFO("peak RSS " << got.max_rss_kib << " kB, of which this test's " << got.own_kib << " kB");
  CHECK(got.max_rss_kib < got.own_kib + 40 * 1024);
  CHECK_FALSE(fs::exists(dir / "f"));
}

TEST_CASE("withcache-client's API calls stop a flooding server's head", "[heads][client]") {
  test::RawOrigin raw("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{}", k_flood);
  const std::string server = raw.url("");
  const auto got = run_measured({WITHCACHE_CLIENT, "--server", server, "stats"});
  INFO(got.err);
  CHECK(got.exit_code != 0);
  CHECK(got.exit_code != -1);
  CHECK(std::count(got.err.begin(), got.err.end(), '\n') == 1);
  CHECK(got.max_rss_kib < got.own_kib + 40 * 1024);
}
#endif

TEST_CASE("the probe reads a status line, never a flood behind it", "[heads][probe]") {
  test::RawOrigin raw("HTTP/1.1 200 OK\r\n\r\n", k_flood);
  const auto start = std::chrono::steady_clock::now();
  const int status = client::head_status(raw.url("/b/aHR0cHM6Ly9leGFtcGxlLm9yZy9hLmJpbg/a.bin"), {3s, {}});
  CHECK(status == 200);
  CHECK(std::chrono::steady_clock::now() - start < 3s);
  CHECK(raw.flooded() < (16u << 20));
}

namespace {

// An HTTPS origin on 127.0.0.1 with the given certificate, serving `/a.bin`.
class TlsOrigin {
 public:
  TlsOrigin(const fs::path& cert, const fs::path& key) : m_server(cert.c_str(), key.c_str()) {
    m_server.Get("/a.bin", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("bytes over TLS", "application/octet-stream");
    });
    m_port = m_server.bind_to_any_port("127.0.0.1");
    m_thread = std::thread([this] { m_server.listen_after_bind(); });
    REQUIRE(test::eventually([this] { return m_server.is_running(); }));
  }
  ~TlsOrigin() {
    m_server.stop();
    m_thread.join();
  }
  TlsOrigin(const TlsOrigin&) = delete;
  TlsOrigin& operator=(const TlsOrigin&) = delete;
  [[nodiscard]] int port() const { return m_port; }

 private:
  httplib::SSLServer m_server;
  int m_port = 0;
  std::thread m_thread;
};

// A self-signed pair for `names` (a subjectAltName value such as `DNS:localhost,IP:127.0.0.1`).
void make_pair(const fs::path& dir, const std::string& names) {
  const auto made = test::run({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                               "-subj", "/CN=withcache-test", "-addext", "subjectAltName=" + names, "-keyout",
                               (dir / "key.pem").string(), "-out", (dir / "cert.pem").string()});
  REQUIRE(made.exit_code == 0);
}

// A fetch with no proxy from the environment unless `env` names one.
Expected<origin::FetchResult, origin::FetchError> fetch(const std::string& url, const fs::path& dir,
                                                        const std::string& ca_file,
                                                        std::map<std::string, std::string> env = {}) {
  origin::FetchRequest request;
  request.url = url;
  request.part_path = dir / "a.part";
  origin::FetchOptions options;
  options.policy = origin::OriginPolicy::any();
  options.ca_file = ca_file;
  options.max_attempts = 1;
  options.getenv = [env = std::move(env)](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  return origin::fetch_to_file(request, options);
}

} // namespace

TEST_CASE("fills over TLS verify the chain and the name", "[http_client][tls]") {
  test::TempDir dir;
  make_pair(dir.path(), "DNS:localhost,IP:127.0.0.1");
  TlsOrigin server(dir / "cert.pem", dir / "key.pem");
  const std::string port = std::to_string(server.port());
  const std::string ca = (dir / "cert.pem").string();

  SECTION("trusted, by name and by address") {
    for (const std::string host : {"localhost", "127.0.0.1"}) {
      INFO(host);
      const auto got = fetch("https://" + host + ":" + port + "/a.bin", dir.path(), ca);
      REQUIRE(got.has_value());
      CHECK(got->sha256 == digest::sha256_hex("bytes over TLS"));
      fs::remove(dir / "a.part");
    }
  }
  SECTION("not trusted: the system store does not know a self-signed certificate") {
    const auto got = fetch("https://localhost:" + port + "/a.bin", dir.path(), "");
    REQUIRE_FALSE(got.has_value());
    CHECK(got.error().reason == origin::FetchErrc::tls);
    CHECK_THAT(got.error().detail, Catch::Contains("certificate"));
  }
  SECTION("another name") {
    test::TempDir other;
    make_pair(other.path(), "DNS:other.invalid");
    TlsOrigin wrong(other / "cert.pem", other / "key.pem");
    const auto got = fetch("https://localhost:" + std::to_string(wrong.port()) + "/a.bin", dir.path(),
                           (other / "cert.pem").string());
    REQUIRE_FALSE(got.has_value());
    CHECK(got.error().reason == origin::FetchErrc::tls);
    CHECK_THAT(got.error().detail, Catch::Contains("mismatch"));
  }
}

TEST_CASE("fills go through the proxy the environment names", "[http_client][proxy]") {
  test::ForwardProxy proxy;
  const std::string proxy_url = "http://lab:s3cret@127.0.0.1:" + std::to_string(proxy.port());
  const std::string basic = "Proxy-Authorization: Basic " + util::base64_encode("lab:s3cret");

  SECTION("https: a CONNECT tunnel, then TLS to the origin's name") {
    test::TempDir dir;
    make_pair(dir.path(), "DNS:localhost,IP:127.0.0.1");
    TlsOrigin server(dir / "cert.pem", dir / "key.pem");
    const auto got = fetch("https://localhost:" + std::to_string(server.port()) + "/a.bin", dir.path(),
                           (dir / "cert.pem").string(), {{"https_proxy", proxy_url}});
    REQUIRE(got.has_value());
    CHECK(got->sha256 == digest::sha256_hex("bytes over TLS"));
    const auto seen = proxy.requests();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].starts_with("CONNECT localhost:" + std::to_string(server.port()) + " HTTP/1.1\r\n"));
    CHECK_THAT(seen[0], Catch::Contains(basic));
  }
  SECTION("http: the absolute form") {
    test::RawOrigin raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    test::TempDir dir;
    const auto got = fetch(raw.url("/p.bin?x=1"), dir.path(), "", {{"http_proxy", proxy_url}});
    REQUIRE(got.has_value());
    CHECK(got->sha256 == digest::sha256_hex("hello"));
    const auto seen = proxy.requests();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].starts_with("GET " + raw.url("/p.bin?x=1") + " HTTP/1.1\r\n"));
    CHECK_THAT(seen[0], Catch::Contains(basic));
    REQUIRE(raw.requests().size() == 1);
    CHECK(raw.requests()[0].starts_with("GET /p.bin?x=1 HTTP/1.1\r\n"));
  }
  SECTION("no_proxy names the host: straight to the origin") {
    test::RawOrigin raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    test::TempDir dir;
    const auto got =
        fetch(raw.url("/p.bin"), dir.path(), "", {{"http_proxy", proxy_url}, {"no_proxy", "127.0.0.1"}});
    REQUIRE(got.has_value());
    CHECK(proxy.requests().empty());
  }
  SECTION("a proxy that refuses the tunnel is a connect error") {
    const auto got =
        fetch("https://localhost:1/a.bin", fs::temp_directory_path(), "", {{"https_proxy", proxy_url}});
    REQUIRE_FALSE(got.has_value());
    CHECK_THAT(got.error().detail, Catch::Contains("proxy refused the tunnel"));
    CHECK_THAT(got.error().detail, Catch::Contains("502"));
  }
}

// ---- Red-team regressions (h-redteam): each failed on the HttpConnection of 34a7b8d. ----

namespace {

// A listener on 127.0.0.1 that hands every accepted connection to `handle` on its own thread.
class HostilePeer {
 public:
  explicit HostilePeer(std::function<void(int)> handle) : m_handle(std::move(handle)) {
    m_fd = test::listen_loopback(m_port, "HostilePeer");
    m_thread = std::thread([this] {
      while (!m_stopping) {
        pollfd p{m_fd, POLLIN, 0};
        if (::poll(&p, 1, 20) != 1) {
          continue;
        }
        const int client = ::accept4(m_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (client >= 0) {
          m_handle(client);
        }
      }
    });
  }
  ~HostilePeer() {
    m_stopping = true;
    m_thread.join();
    ::close(m_fd);
  }
  HostilePeer(const HostilePeer&) = delete;
  HostilePeer& operator=(const HostilePeer&) = delete;
  [[nodiscard]] int port() const { return m_port; }

  // Closes with a TCP reset (SO_LINGER 0), never a FIN.
  static void reset(int fd) {
    const linger hard{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    ::close(fd);
  }

 private:
  std::function<void(int)> m_handle;
  int m_fd = -1;
  int m_port = 0;
  std::atomic<bool> m_stopping{false};
  std::thread m_thread;
};

std::shared_ptr<SSL_CTX> server_tls(const fs::path& dir) {
  std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  REQUIRE(SSL_CTX_use_certificate_chain_file(ctx.get(), (dir / "cert.pem").c_str()) == 1);
  REQUIRE(SSL_CTX_use_PrivateKey_file(ctx.get(), (dir / "key.pem").c_str(), SSL_FILETYPE_PEM) == 1);
  return ctx;
}

} // namespace

TEST_CASE("redteam: an until-close body cut off by a TCP reset is not a complete artifact", "[redteam]") {
  // No Content-Length, no chunking: only a clean close (FIN) ends the body. A reset is a failure
  // (cpp-httplib failed the read); HttpConnection's read_some() maps ECONNRESET to end-of-file.
  HostilePeer peer([](int fd) {
    test::read_request_head(fd);
    test::send_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" +
                                  std::string(100'000, 'a'));
    std::this_thread::sleep_for(200ms); // the client has read it all and waits for more
    HostilePeer::reset(fd);
  });
  test::TempDir dir;
  const auto got = fetch("http://127.0.0.1:" + std::to_string(peer.port()) + "/cut.bin", dir.path(), "");
  INFO((got ? "stored " + std::to_string(got->size) + " bytes as complete" : got.error().detail));
  CHECK_FALSE(got.has_value());
}

TEST_CASE("redteam: an https until-close body that ends without close_notify is not complete",
          "[redteam][tls]") {
  // Over TLS only close_notify proves the end of an until-close body; a bare FIN can be forged by
  // anyone on the path (the truncation attack). SSL_OP_IGNORE_UNEXPECTED_EOF turns it into a clean end.
  test::TempDir dir;
  make_pair(dir.path(), "DNS:localhost,IP:127.0.0.1");
  const auto ctx = server_tls(dir.path());
  HostilePeer peer([&ctx](int fd) {
    SSL* ssl = SSL_new(ctx.get());
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
      char buffer[4096];
      std::string head;
      while (head.find("\r\n\r\n") == std::string::npos) {
        const int n = SSL_read(ssl, buffer, sizeof buffer);
        if (n <= 0) {
          break;
        }
        head.append(buffer, static_cast<std::size_t>(n));
      }
      const std::string response =
          "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + std::string(50'000, 'b');
      SSL_write(ssl, response.data(), static_cast<int>(response.size()));
    }
    ::shutdown(fd, SHUT_WR); // a FIN, no close_notify: what an attacker on the path can inject
    SSL_free(ssl);
    ::close(fd);
  });
  const auto got = fetch("https://localhost:" + std::to_string(peer.port()) + "/cut.bin", dir.path(),
                         (dir / "cert.pem").string());
  INFO((got ? "stored " + std::to_string(got->size) + " bytes as complete" : got.error().detail));
  CHECK_FALSE(got.has_value());
}

#ifdef WITHCACHE_CLIENT
TEST_CASE("redteam: a TLS peer that hangs up mid-handshake never kills withcache-client with SIGPIPE",
          "[redteam][tls][client]") {
  // The peer answers the ClientHello with its whole flight, then FIN and RST, while the client is stopped
  // (SIGSTOP), so all of it is queued when the client resumes: it reads the flight, and its next write
  // (an alert for the untrusted certificate, or its Finished) meets EPIPE. OpenSSL's socket BIO write()s
  // without MSG_NOSIGNAL, and `withcache-client get -o FILE` does not ignore SIGPIPE (probe.cpp has its
  // own MSG_NOSIGNAL BIO for exactly this reason).
  test::TempDir dir;
  make_pair(dir.path(), "DNS:localhost,IP:127.0.0.1");
  const auto ctx = server_tls(dir.path());
  std::atomic<pid_t> client{0};
  HostilePeer peer([&ctx, &client](int fd) {
    char hello[16384];
    pollfd c{fd, POLLIN, 0};
    const ssize_t n = ::poll(&c, 1, 5000) == 1 ? ::recv(fd, hello, sizeof hello, 0) : -1;
    const pid_t pid = client.load();
    if (pid > 0) {
      ::kill(pid, SIGSTOP);
    }
    if (n > 0) {
      SSL* ssl = SSL_new(ctx.get());
      BIO* in = BIO_new(BIO_s_mem());
      BIO* out = BIO_new(BIO_s_mem());
      SSL_set_bio(ssl, in, out);
      BIO_write(in, hello, static_cast<int>(n));
      SSL_accept(ssl); // wants the client's Finished: the flight is in `out`
      char* flight = nullptr;
      const long size = BIO_get_mem_data(out, &flight);
      test::send_all(fd, std::string_view(flight, static_cast<std::size_t>(size)));
      SSL_free(ssl);
    }
    ::shutdown(fd, SHUT_WR);
    std::this_thread::sleep_for(50ms);
    HostilePeer::reset(fd);
    std::this_thread::sleep_for(50ms);
    if (pid > 0) {
      ::kill(pid, SIGCONT);
    }
  });
  const pid_t pid = test::spawn({WITHCACHE_CLIENT, "--server", "http://127.0.0.1:1", "get",
                                 "https://127.0.0.1:" + std::to_string(peer.port()) + "/a.bin", "-o",
                                 (dir / "out").string()},
                                {"no_proxy=*"}, dir / "stdout", dir / "stderr");
  REQUIRE(pid > 0);
  client = pid;
  int status = 0;
  const bool done = test::eventually([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 30s);
  if (!done) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  INFO("stderr: " << test::slurp(dir / "stderr"));
  REQUIRE(done);
  INFO("signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0) << " (SIGPIPE is " << SIGPIPE << ")");
  CHECK_FALSE(WIFSIGNALED(status)); // killed by SIGPIPE (141 in a shell) instead of one line and exit 3
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 3));
}
#endif

TEST_CASE("redteam: interim heads count against the head budget even when they arrive in one read",
          "[redteam][heads]") {
  // http_client.hpp: "interim 1xx responses are skipped, their bytes and fields counted". The byte budget
  // is only checked when the parser needs more input, so 2 600 `100 Continue` heads (65 000 bytes) and a
  // final head of 60 000 bytes that arrive together are accepted: 125 000 bytes of heads under a 65 536
  // limit.
  std::string response;
  for (int i = 0; i < 2600; ++i) {
    response += "HTTP/1.1 100 Continue\r\n\r\n";
  }
  response += "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Big: " + std::string(60'000, 'a') + "\r\n\r\nhello";
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  int buffer = 1 << 20;
  ::setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
  test::send_all(fds[1], response);
  ::close(fds[1]);
  origin::HttpConnection connection;
  origin::Endpoint endpoint;
  endpoint.scheme = "http";
  endpoint.host = "example.invalid";
  endpoint.port = 80;
  endpoint.io_timeout = 2s;
  connection.adopt(fds[0], endpoint);
  const auto head = connection.read_head();
  INFO("heads of " << response.size() - 5 << " bytes in all");
  CHECK_FALSE(head.has_value());
}

TEST_CASE("redteam: a status code below 100 is a malformed response", "[redteam][heads]") {
  // Beast takes any three digits; read_head() returns `HTTP/1.1 000` or `099` as a final response, which
  // fuzz/fuzz_response.cpp's own invariant (100..999) forbids: `make fuzz` stops on it within minutes.
  for (const char* line : {"HTTP/1.1 000 Zero\r\n", "HTTP/1.1 099 Continue\r\n"}) {
    INFO(line);
    test::RawOrigin raw(std::string(line) + "Content-Length: 5\r\n\r\nhello");
    const auto got = origin::request_small("GET", raw.url("/x"), {}, {}, 5s, 1 << 20);
    REQUIRE_FALSE(got.has_value());
    CHECK(got.error().code == origin::WireErrc::malformed);
  }
}
