// withcache::client and withcache-client against a real server and origin on 127.0.0.1.
#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <thread>
#include <fstream>
#include <optional>

#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/origin.hpp"
#include "support/process.hpp"
#include "support/raw_origin.hpp"
#include "support/server_process.hpp"
#include "withcache/client.hpp"
#include "withcache/digest.hpp"
#include "withcache/url.hpp"

namespace fs = std::filesystem;
using namespace withcache;
using namespace std::chrono_literals;
using test::Origin;
using test::Route;

namespace {

// A socket that accepts connections (the kernel does, from its backlog) but never answers.
class SilentServer {
 public:
  SilentServer() : m_fd(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(m_fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(m_fd, 16) == 0);
    socklen_t length = sizeof address;
    ::getsockname(m_fd, reinterpret_cast<sockaddr*>(&address), &length);
    m_port = ntohs(address.sin_port);
  }
  ~SilentServer() { ::close(m_fd); }
  [[nodiscard]] std::string base() const { return "http://127.0.0.1:" + std::to_string(m_port); }

 private:
  int m_fd;
  int m_port = 0;
};

test::CommandResult cli(std::vector<std::string> args, std::vector<std::string> env = {}) {
  args.insert(args.begin(), WITHCACHE_CLIENT);
  env.emplace_back("WITHCACHE_SERVER");
  env.emplace_back("WITHCACHE_API_TOKEN");
  return test::run(args, env);
}

} // namespace

TEST_CASE("client library: is_cached, serve_url, is_healthy", "[client]") {
  Origin origin;
  origin.add("/lib.tgz", Route("library bytes"));
  test::ServerProcess server;
  const std::string url = origin.url("/lib.tgz");
  CHECK(client::is_healthy(server.base()));
  CHECK_FALSE(client::is_cached(server.base(), url)); // a miss, which also warms the cache
  REQUIRE(server.fills_completed(1));
  CHECK(client::is_cached(server.base(), url));
  CHECK(client::serve_url(server.base(), url) ==
        std::optional<std::string>(url::blob_url(server.base(), url)));
  CHECK_FALSE(client::serve_url(server.base(), origin.url("/other")).has_value());
  CHECK(client::head_status(server.blob(origin.url("/other"))) == 404);

  // Unreachable: a refused connection answers at once (an hour's timeout would trip ctest's).
  const test::ClosedPort refusing;
  const std::string closed = refusing.authority();
  CHECK_FALSE(client::is_cached(closed, url, {std::chrono::hours(1), {}}));
  CHECK_FALSE(client::is_healthy(closed, {std::chrono::hours(1), {}}));
  // A server that accepts but never answers: bounded by the timeout.
  SilentServer silent;
  CHECK_FALSE(client::is_cached(silent.base(), url, {300ms, {}}));
  CHECK(client::head_status(silent.base() + "/healthz", {300ms, {}}) == 0);
}

TEST_CASE("withcache-client: url, probe, serve-url, health", "[client]") {
  Origin origin;
  origin.add("/cli.run", Route("cli bytes"));
  test::ServerProcess server;
  const std::string url = origin.url("/cli.run");
  const std::vector<std::string> env = {"WITHCACHE_SERVER=" + server.base()};

  CHECK(cli({"url", url}, env).out == url::blob_url(server.base(), url) + "\n");
  auto miss = cli({"probe", url}, env);
  CHECK(miss.exit_code == 1);
  CHECK(miss.out == "miss\n");
  REQUIRE(server.fills_completed(1));
  CHECK(cli({"probe", url}, env).exit_code == 0);
  CHECK(cli({"serve-url", url}, env).out == url::blob_url(server.base(), url) + "\n");
  CHECK(cli({"serve-url", origin.url("/cold")}, env).out == origin.url("/cold") + "\n");
  CHECK(cli({"health"}, env).exit_code == 0);

  const test::ClosedPort refusing;
  const std::string closed = "--server=" + refusing.authority();
  CHECK(cli({closed, "probe", url}).exit_code == 2);
  CHECK(cli({closed, "health"}).exit_code == 2);
  auto no_server = cli({"probe", url});
  CHECK(no_server.exit_code == 64);
  CHECK(no_server.err.find("WITHCACHE_SERVER") != std::string::npos);
  CHECK(cli({"probe"}, env).exit_code == 64);
  CHECK(cli({"probe", "not a url"}, env).exit_code == 64);
  CHECK(cli({"frobnicate"}, env).exit_code == 64);
  CHECK(cli({"--help"}).out.find("Exit status") != std::string::npos);
}

TEST_CASE("withcache-client get: from the cache with the sha checked, from the origin, resumed", "[client]") {
  Origin origin;
  const std::string body = test::make_bytes(700'000, 61);
  origin.add("/pkg.deb", Route(body));
  test::ServerProcess server;
  test::TempDir tmp;
  const std::vector<std::string> env = {"WITHCACHE_SERVER=" + server.base()};
  const std::string url = origin.url("/pkg.deb");

  // Cold: from the origin (and the probe warms the cache).
  auto cold = cli({"get", url, "-o", (tmp / "cold.deb").string()}, env);
  CHECK(cold.exit_code == 0);
  CHECK(cold.err.find("from the origin") != std::string::npos);
  CHECK(test::slurp(tmp / "cold.deb") == body);
  REQUIRE(server.fills_completed(1));

  auto warm = cli({"get", url, "-o", (tmp / "warm.deb").string()}, env);
  CHECK(warm.exit_code == 0);
  CHECK(warm.err.find("from the cache, SHA-256 verified") != std::string::npos);
  CHECK(warm.out == digest::sha256_hex(body) + "  " + (tmp / "warm.deb").string() + "\n");
  CHECK_FALSE(fs::exists(tmp / "warm.deb.part"));

  // An interrupted earlier run left a .part: it is resumed and still verified.
  {
    std::ofstream part(tmp / "resumed.deb.part", std::ios::binary);
    part << body.substr(0, 300'000);
  }
  auto resumed = cli({"get", url, "-o", (tmp / "resumed.deb").string()}, env);
  CHECK(resumed.exit_code == 0);
  CHECK(resumed.err.find("resumed") != std::string::npos);
  CHECK(test::slurp(tmp / "resumed.deb") == body);

  // Without -o the artifact's own name is used.
  auto named = test::run(
      {"sh", "-c", "cd '" + tmp.path().string() + "' && " + WITHCACHE_CLIENT + " get '" + url + "'"}, env);
  CHECK(named.exit_code == 0);
  CHECK(test::slurp(tmp / "pkg.deb") == body);

  CHECK(cli({"get", origin.url("/missing.iso"), "-o", (tmp / "m.iso").string()}, env).exit_code == 3);
  CHECK_FALSE(fs::exists(tmp / "m.iso"));
}

TEST_CASE("withcache-client get refuses bytes that do not match the cache's SHA-256", "[client]") {
  // A "cache" that lies: it serves /b/<token>/name with a wrong X-Withcache-Sha256.
  Origin liar;
  const std::string origin_url = "http://origin.invalid/x.bin";
  Route lie("these are not the bytes");
  lie.headers = {{"X-Withcache-Sha256", std::string(64, '0')}};
  liar.add("/b/" + url::encode_token(origin_url) + "/x.bin", lie);
  test::TempDir tmp;
  auto r = cli({"--server", liar.url(""), "get", origin_url, "-o", (tmp / "x.bin").string()});
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("SHA-256 mismatch") != std::string::npos);
  CHECK_FALSE(fs::exists(tmp / "x.bin"));
  CHECK_FALSE(fs::exists(tmp / "x.bin.part"));
  // Streamed, the bytes are out before the check: the exit status is what says they are wrong.
  auto streamed = cli({"--server", liar.url(""), "get", origin_url, "-o", "-"});
  CHECK(streamed.exit_code == 3);
  CHECK(streamed.out == "these are not the bytes");
  CHECK(streamed.err.find("SHA-256 mismatch") != std::string::npos);
}

TEST_CASE("withcache-client operator commands over the JSON API", "[client]") {
  Origin origin;
  origin.add("/op.iso", Route(test::make_bytes(5000, 62)));
  test::ServerProcess server({"--curate"}, {"WITHCACHE_API_TOKEN=cli-token", "WITHCACHE_ADMIN_PASSWORD=pw"});
  const std::vector<std::string> env = {"WITHCACHE_SERVER=" + server.base(), "WITHCACHE_API_TOKEN=cli-token"};

  auto unauthorized = cli({"--token", "wrong", "ls"}, {"WITHCACHE_SERVER=" + server.base()});
  CHECK(unauthorized.exit_code == 4);
  CHECK(unauthorized.err.find("--token") != std::string::npos);

  auto queued = cli({"fetch", origin.url("/op.iso"), "-H", "X-Lab: yes"}, env);
  CHECK(queued.exit_code == 0);
  CHECK(queued.out.starts_with("queued "));
  REQUIRE(server.fills_completed(1));
  CHECK(cli({"fetch", origin.url("/op.iso")}, env).exit_code == 4); // already cached: 409

  auto listed = cli({"ls"}, env);
  CHECK(listed.exit_code == 0);
  const std::string key = *url::key_id(origin.url("/op.iso"));
  // A header row, then the key, a human size, the hits and the URL.
  CHECK(listed.out.starts_with("KEY "));
  CHECK(listed.out.find("\n" + key + "     4.9 KiB       0  " + origin.url("/op.iso") + "\n") != std::string::npos);
  CHECK(cli({"ls", "--json"}, env).out.find("\"total\":1") != std::string::npos);
  const auto stats = cli({"stats"}, env).out;
  CHECK(stats.find("artifacts      1\n") != std::string::npos);
  CHECK(stats.find("stored         4.9 KiB\n") != std::string::npos);
  CHECK(cli({"stats", "--json"}, env).out.find("\"stored_bytes\":5000") != std::string::npos);

  test::curl(server.blob(origin.url("/wanted.iso")));
  CHECK(cli({"misses"}, env).out.find(origin.url("/wanted.iso")) != std::string::npos);

  CHECK(cli({"rm", key}, env).exit_code == 0);
  CHECK(cli({"rm", key}, env).exit_code == 1);
  CHECK(cli({"rm", "not-a-key"}, env).exit_code == 64);
}

TEST_CASE("withcache-client get: a malformed Content-Length is one line on stderr and exit 3", "[client]") {
  test::TempDir tmp;
  for (const std::string length : {"abc", "12345678901234567890123", "x12", "-5", "1 2"}) {
    INFO("Content-Length: " << length);
    test::RawOrigin hostile("HTTP/1.1 200 OK\r\nContent-Length: " + length + "\r\nConnection: close\r\n\r\nbody");
    const auto r = cli({"get", hostile.url("/evil.bin"), "-o", (tmp / "evil.bin").string()});
    CHECK(r.exit_code == 3);
    CHECK(r.err.starts_with("withcache-client: "));
    CHECK(r.err.find("Content-Length") != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_FALSE(fs::exists(tmp / "evil.bin"));
    CHECK_FALSE(fs::exists(tmp / "evil.bin.part")); // a failure leaves no empty part file
  }
}

TEST_CASE("withcache-client get -o - streams to stdout as the bytes arrive", "[client][stream]") {
  Origin origin;
  const std::string body = test::make_bytes(1024 * 1024, 63);
  Route slow(body);
  slow.chunk_size = 64 * 1024;
  slow.chunk_delay = 150ms; // 16 chunks: about 2.4 s from the first byte to the last
  origin.add("/stream.iso", slow);
  origin.add("/fast.iso", Route(body));
  test::TempDir tmp;
  const fs::path fifo = tmp / "stdout";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);

  // The reader end first (non-blocking), so the child's open of the writer end does not wait.
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  REQUIRE(reader >= 0);
  const pid_t pid = test::spawn({WITHCACHE_CLIENT, "get", origin.url("/stream.iso"), "-o", "-"},
                                {"WITHCACHE_SERVER"}, fifo, tmp / "stderr");
  REQUIRE(pid > 0);
  std::string received;
  std::optional<std::chrono::steady_clock::time_point> first;
  const auto started = std::chrono::steady_clock::now();
  bool writer_seen = false;
  const bool ended = test::eventually(
      [&] {
        char buffer[65536];
        const ssize_t n = ::read(reader, buffer, sizeof buffer);
        if (n > 0) {
          writer_seen = true;
          first = first.value_or(std::chrono::steady_clock::now());
          received.append(buffer, static_cast<std::size_t>(n));
        }
        return n == 0 && writer_seen; // EOF once the writer has been there
      },
      60s);
  const auto last = std::chrono::steady_clock::now();
  ::close(reader);
  int status = 0;
  REQUIRE(test::eventually([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 30s));
  CHECK(ended);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(received == body);
  REQUIRE(first.has_value());
  // Streamed: the first bytes came long before the last, not all at once at the end.
  CHECK(last - *first > 1s);
  CHECK(*first - started < last - *first);
  const std::string err = test::slurp(tmp / "stderr");
  CHECK(err.find("withcache-client: sha256 " + digest::sha256_hex(body)) != std::string::npos);
  CHECK_FALSE(fs::exists("-"));
  CHECK_FALSE(fs::exists("-.part"));

  // Through a pipe, from a warm cache, SHA-256 verified; and a reader that goes away ends it (exit 3).
  test::ServerProcess server;
  const std::vector<std::string> env = {"WITHCACHE_SERVER=" + server.base()};
  CHECK(cli({"probe", origin.url("/fast.iso")}, env).exit_code == 1);
  REQUIRE(server.fills_completed(1));
  const auto piped = test::run(
      {"bash", "-c", "\"$0\" get \"$1\" -o - | sha256sum", WITHCACHE_CLIENT, origin.url("/fast.iso")}, env);
  CHECK(piped.out == digest::sha256_hex(body) + "  -\n");
  CHECK(piped.err.find("from the cache, SHA-256 verified") != std::string::npos);
  const auto cut =
      test::run({"bash", "-c", "\"$0\" get \"$1\" -o - | head -c 100 | wc -c; echo \"${PIPESTATUS[0]}\"",
                 WITHCACHE_CLIENT, origin.url("/stream.iso")},
                {"WITHCACHE_SERVER"}, 30s);
  CHECK(cut.out == "100\n3\n");
}

// A server that accepts every connection (a thread calls accept(2)) and never sends a byte.
class HungServer {
 public:
  HungServer() : m_fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(m_fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(m_fd, 128) == 0);
    socklen_t length = sizeof address;
    ::getsockname(m_fd, reinterpret_cast<sockaddr*>(&address), &length);
    m_port = ntohs(address.sin_port);
    m_thread = std::thread([this] {
      while (!m_stop) {
        pollfd p{m_fd, POLLIN, 0};
        if (::poll(&p, 1, 50) == 1) {
          const int fd = ::accept4(m_fd, nullptr, nullptr, SOCK_CLOEXEC);
          if (fd >= 0) {
            m_accepted.push_back(fd); // held open, never answered
          }
        }
      }
    });
  }
  ~HungServer() {
    m_stop = true;
    m_thread.join();
    for (const int fd : m_accepted) {
      ::close(fd);
    }
    ::close(m_fd);
  }
  HungServer(const HungServer&) = delete;
  HungServer& operator=(const HungServer&) = delete;
  [[nodiscard]] std::string base() const { return "http://127.0.0.1:" + std::to_string(m_port); }

 private:
  int m_fd;
  int m_port = 0;
  std::atomic<bool> m_stop{false};
  std::vector<int> m_accepted; // only the accepting thread touches it until the join
  std::thread m_thread;
};

TEST_CASE("withcache-client: every command honours --timeout against a server that never answers",
          "[client][timeout]") {
  HungServer silent;
  test::TempDir tmp;
  const std::string key(64, 'a');
  const std::vector<std::pair<std::vector<std::string>, int>> commands = {
      {{"probe", "http://h/x"}, 2},
      {{"health"}, 2},
      {{"ls"}, 2},
      {{"misses"}, 2},
      {{"stats"}, 2},
      {{"fetch", "http://h/x"}, 2},
      {{"rm", key}, 2},
      // get: the probe times out, then the origin (the same silent socket) never sends a head.
      {{"get", silent.base() + "/x.iso", "-o", (tmp / "x.iso").string()}, 3},
      {{"get", silent.base() + "/x.iso", "-o", "-"}, 3},
  };
  for (const auto& [args, expected] : commands) {
    std::vector<std::string> argv = {"--server", silent.base(), "--timeout", "1"};
    argv.insert(argv.end(), args.begin(), args.end());
    INFO(args.front() << " " << (args.size() > 1 ? args[1] : ""));
    const auto started = std::chrono::steady_clock::now();
    const auto r = cli(argv);
    const auto took = std::chrono::steady_clock::now() - started;
    CHECK(r.exit_code == expected);
    CHECK(took < 5s); // one second for the probe, one for the origin's head, and slack
    INFO("took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
  CHECK_FALSE(fs::exists(tmp / "x.iso"));
  CHECK_FALSE(fs::exists(tmp / "x.iso.part"));
}
