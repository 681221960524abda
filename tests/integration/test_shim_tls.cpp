// The shim's probe against an HTTPS cache server: verified against the CA
// store OpenSSL is told about (SSL_CERT_FILE stands in for the system store).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <thread>

#include <httplib.h>

#include "support/process.hpp"
#include "support/stub_servers.hpp"
#include "support/temp_dir.hpp"
#include "withcache/shim.hpp"

using namespace withcache;

namespace {

class TlsServer {
 public:
  TlsServer(const std::string& cert, const std::string& key) : m_server(cert.c_str(), key.c_str()) {
    m_server.Get(".*", [](const httplib::Request& req, httplib::Response& res) {
      res.status = req.path.starts_with("/b/hit") ? 200 : 404;
    });
    m_port = m_server.bind_to_any_port("127.0.0.1");
    m_thread = std::thread([this] { m_server.listen_after_bind(); });
    REQUIRE(test::eventually([this] { return m_server.is_running(); }));
  }
  ~TlsServer() {
    m_server.stop();
    m_thread.join();
  }
  [[nodiscard]] int port() const { return m_port; }

 private:
  httplib::SSLServer m_server;
  int m_port = 0;
  std::thread m_thread;
};

} // namespace

TEST_CASE("the probe speaks TLS and verifies the certificate and host", "[shim][tls]") {
  test::TempDir dir;
  const auto made =
      test::run({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                 "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout",
                 (dir / "key.pem").string(), "-out", (dir / "cert.pem").string()});
  REQUIRE(made.exit_code == 0);
  TlsServer server((dir / "cert.pem").string(), (dir / "key.pem").string());
  const std::string base = "https://localhost:" + std::to_string(server.port());
  const auto timeout = std::chrono::seconds(30);

  ::setenv("SSL_CERT_FILE", "/nonexistent", 1);
  CHECK_FALSE(shim::head_is_200(base + "/b/hit/x", timeout)); // not trusted

  ::setenv("SSL_CERT_FILE", (dir / "cert.pem").c_str(), 1);
  CHECK(shim::head_is_200(base + "/b/hit/x", timeout));
  CHECK_FALSE(shim::head_is_200(base + "/b/miss/x", timeout));
  CHECK(shim::head_is_200("https://127.0.0.1:" + std::to_string(server.port()) + "/b/hit/x", timeout));
  // The certificate names localhost and 127.0.0.1, not this name (which also resolves to loopback).
  CHECK_FALSE(shim::head_is_200("https://127.0.0.2:" + std::to_string(server.port()) + "/b/hit/x", timeout));
  ::unsetenv("SSL_CERT_FILE");
}

TEST_CASE("an https cache that trickles its TLS handshake is cut at the deadline", "[shim][tls]") {
  // A TLS record header announcing 16 KiB, then one byte every 50 ms: OpenSSL keeps waiting for the
  // rest of the record. With blocking reads and SO_RCVTIMEO each byte restarted the timeout and the
  // probe took 30 s; poll() against one deadline ends it at the timeout (plus scheduling slack, the
  // issue's 0.2 s: poll() wakes at the deadline and nothing after it blocks).
  const std::string record = std::string("\x16\x03\x03\x40\x00", 5) + std::string(16384, '\0');
  test::TrickleServer trickle(record, std::chrono::milliseconds(50));
  const auto timeout = std::chrono::seconds(1);
  const auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(shim::head_is_200("https://" + trickle.authority() + "/b/x/y", timeout));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(elapsed <= timeout + std::chrono::milliseconds(200));
  CHECK(trickle.connections() == 1);
}
