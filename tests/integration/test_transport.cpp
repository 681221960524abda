// The event-driven serving core against clients that misbehave, over real
// sockets to a real withcache-server: slow senders, floods, idle and
// pipelined connections, odd request forms, the per-address cap, a client that
// stops reading, TLS and its reload.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include <sys/stat.h>
#include <sys/wait.h>

#include "support/origin.hpp"
#include "support/process.hpp"
#include "support/raw_client.hpp"
#include "support/server_process.hpp"
#include "withcache/digest.hpp"
#include "withcache/url.hpp"

namespace fs = std::filesystem;
using namespace withcache;
using namespace std::chrono_literals;
using test::curl;
using test::Origin;
using test::RawClient;
using test::Route;
using test::ServerProcess;

namespace {

const std::string k_healthz = "GET /healthz HTTP/1.1\r\nHost: cache\r\n\r\n";

bool healthz_answers(int port) {
  RawClient client(port);
  return client.send(k_healthz) &&
         client.read_until("ok\n", 5s).find("HTTP/1.1 200") != std::string::npos;
}

// A cached blob of `size` bytes on `server`, filled from `origin`.
std::string cached_blob(ServerProcess& server, Origin& origin, const std::string& path, const std::string& body) {
  origin.add(path, Route(body));
  const std::string blob = server.blob(origin.url(path));
  CHECK(curl(blob, {"-I"}).status == 404);
  REQUIRE(test::eventually([&] { return curl(blob, {"-I"}).status == 200; }));
  return blob;
}

} // namespace

TEST_CASE("slowloris: trickled heads are cut at the head deadline and never starve /healthz", "[transport]") {
  ServerProcess server({"--head-timeout", "2s"});
  std::vector<std::unique_ptr<RawClient>> loris;
  for (int i = 0; i < 100; ++i) {
    loris.push_back(std::make_unique<RawClient>(server.port()));
    REQUIRE(loris.back()->send("GET /healthz HTTP/1.1\r\n"));
  }
  // While they trickle, other clients are answered at once.
  for (int round = 0; round < 4; ++round) {
    for (auto& l : loris) {
      l->send("X-A: b\r\n"); // one more header line every round: the head never completes
    }
    CHECK(healthz_answers(server.port()));
  }
  // Every trickling connection is closed by the deadline (2 s from its first byte), not kept alive by trickling.
  int closed = 0;
  for (auto& l : loris) {
    closed += l->closed_within(10s) ? 1 : 0;
  }
  CHECK(closed == 100);
  // Beast closes a timed-out socket before the read's handler counts it: wait for the count.
  CHECK(test::eventually([&] { return server.metric("withcache_connections_timed_out_total") >= 100; }, 10s));
  CHECK(healthz_answers(server.port()));
}

TEST_CASE("header floods by size and by count get 431, and memory does not grow", "[transport]") {
  ServerProcess server;
  const long before = test::rss_kib(server.pid());

  RawClient many(server.port());
  std::string head = "GET /healthz HTTP/1.1\r\nHost: cache\r\n";
  for (int i = 0; i < 101; ++i) {
    head += "X-" + std::to_string(i) + ": v\r\n";
  }
  many.send(head + "\r\n");
  CHECK(many.read_until("\r\n\r\n", 10s).starts_with("HTTP/1.1 431"));
  CHECK(many.closed_within(10s));

  RawClient big(server.port());
  big.send("GET /healthz HTTP/1.1\r\nHost: cache\r\nX-Big: " + std::string(17 * 1024, 'a') + "\r\n\r\n");
  CHECK(big.read_until("\r\n\r\n", 10s).starts_with("HTTP/1.1 431"));

  // Four connections that try to send 150 MB of headers each: refused after 16 KiB, memory stays flat.
  std::vector<std::unique_ptr<RawClient>> floods;
  for (int i = 0; i < 4; ++i) {
    floods.push_back(std::make_unique<RawClient>(server.port()));
    floods.back()->send("GET /healthz HTTP/1.1\r\nHost: cache\r\n");
  }
  const std::string chunk = "X-Flood: " + std::string(64 * 1024, 'f') + "\r\n";
  std::size_t sent = 0;
  for (int round = 0; round < 2400 && sent < 4ULL * 150 * 1024 * 1024; ++round) {
    bool any = false;
    for (auto& f : floods) {
      if (f->send(chunk)) {
        sent += chunk.size();
        any = true;
      }
    }
    if (!any) {
      break; // every flood was cut off
    }
  }
  CHECK(sent < 4ULL * 150 * 1024 * 1024);
  const long after = test::rss_kib(server.pid());
  INFO("RSS before " << before << " KiB, after " << after << " KiB");
  CHECK(after - before < 64 * 1024);
  CHECK(server.metric("withcache_requests_oversized_total") >= 6);
  CHECK(healthz_answers(server.port()));
}

TEST_CASE("an idle keep-alive connection is closed after the idle timeout", "[transport]") {
  ServerProcess server({"--idle-timeout", "1s"});
  RawClient client(server.port());
  client.send(k_healthz);
  CHECK(client.read_until("ok\n", 5s).find("HTTP/1.1 200") != std::string::npos);
  CHECK_FALSE(client.peer_closed()); // kept alive after the answer ...
  CHECK(client.closed_within(10s));  // ... then closed once idle for a second
  // An idle connection that never sent anything is closed by the head deadline.
  ServerProcess quick({"--head-timeout", "1s"});
  RawClient silent(quick.port());
  CHECK(silent.closed_within(10s));
}

TEST_CASE("pipelined requests are all answered, in order", "[transport]") {
  ServerProcess server;
  RawClient client(server.port());
  client.send("GET /healthz HTTP/1.1\r\nHost: c\r\n\r\n"
              "GET /nope HTTP/1.1\r\nHost: c\r\n\r\n"
              "HEAD /healthz HTTP/1.1\r\nHost: c\r\n\r\n"
              "GET /metrics HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n");
  REQUIRE(client.closed_within(10s));
  const std::string& all = client.received();
  const std::size_t a = all.find("HTTP/1.1 200");
  const std::size_t b = all.find("HTTP/1.1 404", a);
  const std::size_t c = all.find("HTTP/1.1 200", b);
  const std::size_t d = all.find("withcache_hits_total", c);
  CHECK(a == 0);
  CHECK(b != std::string::npos);
  CHECK(c != std::string::npos);
  CHECK(d != std::string::npos);
  CHECK(test::count_of(all, "HTTP/1.1 ") == 4);
}

TEST_CASE("absolute-form targets and HTTP/1.0", "[transport]") {
  ServerProcess server;
  RawClient absolute(server.port());
  absolute.send("GET http://127.0.0.1:" + std::to_string(server.port()) +
                "/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  REQUIRE(absolute.closed_within(10s));
  CHECK(absolute.received().starts_with("HTTP/1.1 200"));
  CHECK(absolute.received().ends_with("ok\n"));

  RawClient old(server.port());
  old.send("GET /healthz HTTP/1.0\r\n\r\n");
  REQUIRE(old.closed_within(10s)); // no keep-alive unless asked for
  CHECK(old.received().starts_with("HTTP/1.0 200"));
  CHECK(old.received().find("Content-Length: 3\r\n") != std::string::npos);

  RawClient garbage(server.port());
  garbage.send("NOT-HTTP\r\n\r\n");
  CHECK(garbage.read_until("\r\n", 10s).starts_with("HTTP/1.1 400"));
  CHECK(healthz_answers(server.port()));
}

TEST_CASE("connections per client address are capped, other addresses are served", "[transport]") {
  ServerProcess server({"--max-connections-per-address", "8"});
  std::vector<std::unique_ptr<RawClient>> held;
  for (int i = 0; i < 8; ++i) {
    held.push_back(std::make_unique<RawClient>(server.port()));
  }
  // The held connections are open (they answer); the ninth from the same address is closed at once.
  held.front()->send(k_healthz);
  CHECK(held.front()->read_until("ok\n", 5s).find("HTTP/1.1 200") != std::string::npos);
  RawClient ninth(server.port());
  CHECK(ninth.closed_within(5s));
  CHECK(ninth.received().empty());
  // Another loopback address is its own client.
  RawClient other(server.port(), "127.0.0.2");
  other.send(k_healthz);
  CHECK(other.read_until("ok\n", 5s).find("HTTP/1.1 200") != std::string::npos);
  held.clear();
  CHECK(test::eventually([&] { return healthz_answers(server.port()); }, 10s));
  CHECK(server.metric("withcache_connections_refused_total") >= 1);
}

TEST_CASE("request bodies are limited", "[transport]") {
  ServerProcess server({"--max-body-bytes", "64K"});
  const auto big = curl(server.base() + "/api/v1/downloads",
                        {"-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                         "{\"url\": \"" + std::string(100 * 1024, 'x') + "\"}"});
  CHECK(big.status == 413);
  const auto fine = curl(server.base() + "/api/v1/downloads",
                         {"-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                          "{\"url\": \"ftp://example.invalid/" + std::string(7 * 1024, 'x') + "\"}"});
  CHECK(fine.status == 400); // parsed (curl sent Expect: 100-continue and got the go-ahead), then refused
  CHECK(healthz_answers(server.port()));
}

TEST_CASE("a client that stops reading mid-blob holds no thread: others download, memory stays flat",
          "[transport]") {
  Origin origin;
  ServerProcess server({"--send-timeout", "3s"});
  const std::string body = test::make_bytes(64 * 1024 * 1024, 71);
  const std::string blob = cached_blob(server, origin, "/big.iso", body);
  const std::string target = blob.substr(server.base().size());
  const long before = test::rss_kib(server.pid());

  std::vector<std::unique_ptr<RawClient>> stalled;
  for (int i = 0; i < 16; ++i) {
    stalled.push_back(std::make_unique<RawClient>(server.port()));
    stalled.back()->send("GET " + target + " HTTP/1.1\r\nHost: c\r\n\r\n");
    CHECK(stalled.back()->read_some(256 * 1024, 10s) == 256 * 1024); // then they stop reading
  }
  // Meanwhile whole downloads go through, byte for byte.
  for (int i = 0; i < 3; ++i) {
    const auto r = curl(blob);
    CHECK(r.status == 200);
    CHECK(digest::sha256_hex(r.body) == digest::sha256_hex(body));
  }
  CHECK(healthz_answers(server.port()));
  const long after = test::rss_kib(server.pid());
  INFO("RSS before " << before << " KiB, after " << after << " KiB");
  CHECK(after - before < 32 * 1024); // sendfile: no per-connection copy of the blob
  // A client that reads nothing for the send timeout is dropped: the server closes its side, and
  // what the kernel had buffered ends in EOF.
  REQUIRE(test::eventually([&] { return server.metric("withcache_connections_timed_out_total") >= 16; }, 60s));
  int dropped = 0;
  for (auto& s : stalled) {
    dropped += s->drain(30s) ? 1 : 0;
  }
  CHECK(dropped == 16);
}

TEST_CASE("HTTPS with a self-signed certificate: GET, Range, HEAD, and a reload on SIGHUP", "[transport][tls]") {
  test::TempDir certs;
  const auto make_cert = [&](const std::string& name, const std::string& cn) {
    const auto made =
        test::run({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=" + cn,
                   "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout",
                   (certs / (name + ".key")).string(), "-out", (certs / (name + ".pem")).string()});
    REQUIRE(made.exit_code == 0);
  };
  make_cert("a", "withcache-a");
  make_cert("b", "withcache-b");
  fs::copy_file(certs / "a.pem", certs / "live.pem");
  fs::copy_file(certs / "a.key", certs / "live.key");

  Origin origin;
  ServerProcess server({"--tls-cert", (certs / "live.pem").string(), "--tls-key", (certs / "live.key").string()});
  const std::string body = test::make_bytes(300'000, 72);
  origin.add("/tls.bin", Route(body));
  const std::string blob = server.blob(origin.url("/tls.bin"));
  CHECK(blob.starts_with("https://"));
  const std::vector<std::string> trust_a = {"--cacert", (certs / "a.pem").string()};
  const auto with = [](std::vector<std::string> base, std::vector<std::string> more) {
    base.insert(base.end(), more.begin(), more.end());
    return base;
  };

  CHECK(curl(blob, with(trust_a, {"-I"})).status == 404);
  REQUIRE(test::eventually([&] { return curl(blob, with(trust_a, {"-I"})).status == 200; }));
  const auto whole = curl(blob, trust_a);
  CHECK(whole.status == 200);
  CHECK(whole.body == body);
  const auto range = curl(blob, with(trust_a, {"-H", "Range: bytes=1000-1999"}));
  CHECK(range.status == 206);
  CHECK(range.body == body.substr(1000, 1000));
  auto head = curl(blob, with(trust_a, {"-I"}));
  CHECK(head.headers["content-length"] == "300000");
  CHECK(head.headers["x-withcache-sha256"] == digest::sha256_hex(body));
  CHECK(curl(blob).exit_code != 0); // not trusted without --cacert

  // SIGHUP: new connections get the new certificate.
  fs::copy_file(certs / "b.pem", certs / "live.pem", fs::copy_options::overwrite_existing);
  fs::copy_file(certs / "b.key", certs / "live.key", fs::copy_options::overwrite_existing);
  REQUIRE(::kill(server.pid(), SIGHUP) == 0);
  const std::vector<std::string> trust_b = {"--cacert", (certs / "b.pem").string()};
  REQUIRE(test::eventually([&] { return curl(blob, with(trust_b, {"-I"})).status == 200; }));
  CHECK(curl(blob, with(trust_a, {"-I"})).exit_code != 0);
  CHECK(server.log().find("reloaded the TLS certificate") != std::string::npos);

  // A reload of files that do not load keeps the working pair.
  fs::remove(certs / "live.key");
  REQUIRE(::kill(server.pid(), SIGHUP) == 0);
  REQUIRE(test::eventually([&] { return server.log().find("SIGHUP: cannot load") != std::string::npos; }));
  CHECK(curl(blob, with(trust_b, {"-I"})).status == 200);
}

TEST_CASE("bad limit options are one-line errors", "[transport]") {
  const std::vector<std::vector<std::string>> bad = {
      {"--head-timeout", "soon"}, {"--idle-timeout", "0s"},        {"--max-header-bytes", "10"},
      {"--max-body-bytes", "x"},  {"--max-header-fields", "0"},     {"--tls-cert", "/nonexistent.pem"},
      {"--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"}};
  test::TempDir tmp;
  for (const auto& args : bad) {
    std::vector<std::string> argv = {WITHCACHE_SERVER, "--port", "0", "--data-dir", (tmp / "d").string()};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto r = test::run(argv, {}, 30s);
    INFO(args.front() << " → " << r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.starts_with("withcache-server: "));
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
}

TEST_CASE("passphrase-protected TLS keys are never prompted for: refused, or read from a file",
          "[transport][tls]") {
  test::TempDir certs;
  const std::string passphrase = "pp-7f3a9c-not-in-any-log";
  // A plain pair (a), and a pair whose key is encrypted with `passphrase` (enc).
  REQUIRE(test::run({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                     "/CN=withcache-a", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout",
                     (certs / "a.key").string(), "-out", (certs / "a.pem").string()})
              .exit_code == 0);
  REQUIRE(test::run({"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-aes256", "-pass", "pass:" + passphrase, "-out", (certs / "enc.key").string()})
              .exit_code == 0);
  REQUIRE(test::run({"openssl", "req", "-x509", "-new", "-key", (certs / "enc.key").string(), "-passin",
                     "pass:" + passphrase, "-days", "1", "-subj", "/CN=withcache-enc", "-addext",
                     "subjectAltName=IP:127.0.0.1", "-out", (certs / "enc.pem").string()})
              .exit_code == 0);
  REQUIRE(test::slurp(certs / "enc.key").find("ENCRYPTED") != std::string::npos);
  {
    std::ofstream file(certs / "passphrase");
    file << passphrase << "\n";
  }
  fs::permissions(certs / "passphrase", fs::perms::owner_read | fs::perms::owner_write);

  SECTION("start with an encrypted key and no passphrase: one line, exit 2") {
    test::TempDir data;
    const auto r =
        test::run({WITHCACHE_SERVER, "--port", "0", "--data-dir", (data / "d").string(), "--tls-cert",
                   (certs / "enc.pem").string(), "--tls-key", (certs / "enc.key").string()},
                  {}, 30s);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.starts_with("withcache-server: "));
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find("is encrypted") != std::string::npos);
    CHECK(r.err.find("--tls-key-passphrase-file") != std::string::npos);
    CHECK(r.err.find("pass phrase") == std::string::npos); // OpenSSL's prompt
  }

  SECTION("start with --tls-key-passphrase-file: serves HTTPS; a wrong passphrase is one line, exit 2") {
    ServerProcess server({"--tls-cert", (certs / "enc.pem").string(), "--tls-key",
                          (certs / "enc.key").string(), "--tls-key-passphrase-file",
                          (certs / "passphrase").string()});
    const auto health = curl(server.base() + "/healthz", {"--cacert", (certs / "enc.pem").string()});
    CHECK(health.status == 200);
    CHECK(health.body == "ok\n");
    CHECK(server.log().find(passphrase) == std::string::npos);

    {
      std::ofstream file(certs / "wrong");
      file << "not-the-passphrase\n";
    }
    test::TempDir data;
    const auto r =
        test::run({WITHCACHE_SERVER, "--port", "0", "--data-dir", (data / "d").string(), "--tls-cert",
                   (certs / "enc.pem").string(), "--tls-key", (certs / "enc.key").string(),
                   "--tls-key-passphrase-file", (certs / "wrong").string()},
                  {}, 30s);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find("cannot decrypt") != std::string::npos);
    CHECK(r.err.find("not-the-passphrase") == std::string::npos);
  }

  SECTION(
      "SIGHUP to an encrypted key (or a FIFO) is refused at once; the old pair serves; SIGTERM stops it") {
    fs::copy_file(certs / "a.pem", certs / "live.pem");
    fs::copy_file(certs / "a.key", certs / "live.key");
    ServerProcess server(
        {"--tls-cert", (certs / "live.pem").string(), "--tls-key", (certs / "live.key").string()});
    const std::vector<std::string> trust_a = {"--cacert", (certs / "a.pem").string(), "-I"};
    REQUIRE(curl(server.base() + "/healthz", trust_a).status == 200);

    fs::copy_file(certs / "enc.pem", certs / "live.pem", fs::copy_options::overwrite_existing);
    fs::copy_file(certs / "enc.key", certs / "live.key", fs::copy_options::overwrite_existing);
    REQUIRE(::kill(server.pid(), SIGHUP) == 0);
    CHECK(test::eventually([&] { return server.log().find("is encrypted") != std::string::npos; }, 5s));
    CHECK(server.log().find("SIGHUP: cannot load --tls-cert/--tls-key") != std::string::npos);
    CHECK(server.log().find("still serving the previous certificate and key") != std::string::npos);
    CHECK(server.log().find("pass phrase") == std::string::npos);
    CHECK(curl(server.base() + "/healthz", trust_a).status == 200);

    // A FIFO where the key was: opening it would block until a writer comes; the reload refuses it instead.
    fs::remove(certs / "live.key");
    REQUIRE(::mkfifo((certs / "live.key").c_str(), 0600) == 0);
    REQUIRE(::kill(server.pid(), SIGHUP) == 0);
    CHECK(test::eventually([&] { return server.log().find("is not a regular file") != std::string::npos; },
                           5s));
    CHECK(curl(server.base() + "/healthz", trust_a).status == 200);

    // SIGTERM right after a HUP: the signal thread is free, the server stops promptly and cleanly.
    REQUIRE(::kill(server.pid(), SIGHUP) == 0);
    const auto start = std::chrono::steady_clock::now();
    const int status = server.stop(SIGTERM);
    const auto took = std::chrono::steady_clock::now() - start;
    INFO("stopped in " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
    CHECK(took < 10s);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
}
