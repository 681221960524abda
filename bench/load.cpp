// withcache-bench-load: holds K connections of one kind open against a server
// and meanwhile times HEAD probes of another URL, or fires a burst of probes.
// One process, one thread, Boost.Asio: it can hold thousands of connections
// on a 2-core machine. Prints one JSON line. Loopback only.
//
//   withcache-bench-load --port P --kind download|idle|slowloris|none --connections K
//                        --target /path --rate BYTES_PER_S --probe /path --probes N
//                        [--probe-interval-ms 20] [--timeout-ms 5000] [--sources 8]
//   withcache-bench-load --port P --kind burst --connections K --probe /path
//
// Connections are spread over --sources loopback addresses (127.0.0.2 …) the way a
// lab's clients come from many machines.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <utility> // before Asio: Boost 1.74's awaitable.hpp uses std::exchange without it

#include <sys/resource.h>

#include <boost/asio.hpp>

namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

namespace {

struct Options {
  int port = 0;
  std::string kind = "none";
  int connections = 0;
  std::string target = "/";
  double rate = 1024 * 1024;
  std::string probe = "/healthz";
  int probes = 200;
  int probe_interval_ms = 20;
  int timeout_ms = 5000;
  int sources = 8;
};

tcp::endpoint source(const Options& o, int i) {
  const int n = 2 + (i % std::max(1, o.sources));
  return {net::ip::make_address_v4("127.0.0." + std::to_string(n)), 0};
}

// A connection that downloads `target` and reads at most `rate` bytes/s, again and again.
class Downloader : public std::enable_shared_from_this<Downloader> {
 public:
  Downloader(net::io_context& io, const Options& o, int i) : m_socket(io), m_timer(io), m_o(o), m_i(i) {}
  void start() {
    m_socket.open(tcp::v4());
    m_socket.bind(source(m_o, m_i));
    m_socket.async_connect({net::ip::make_address_v4("127.0.0.1"), static_cast<unsigned short>(m_o.port)},
                           [self = shared_from_this()](error_code ec) {
                             if (!ec) {
                               self->request();
                             }
                           });
  }

 private:
  void request() {
    m_request = "GET " + m_o.target + " HTTP/1.1\r\nHost: bench\r\n\r\n";
    net::async_write(m_socket, net::buffer(m_request), [self = shared_from_this()](error_code ec, std::size_t) {
      if (!ec) {
        self->read();
      }
    });
  }
  void read() {
    // 64 KiB a tick, ticks spaced to keep the rate: a slow reader, as curl --limit-rate is.
    m_socket.async_read_some(net::buffer(m_buffer), [self = shared_from_this()](error_code ec, std::size_t n) {
      if (ec) {
        return; // the server closed (end of the blob without keep-alive, or a timeout): stop
      }
      const auto pause = std::chrono::microseconds(static_cast<long long>(1e6 * static_cast<double>(n) / self->m_o.rate));
      self->m_timer.expires_after(pause);
      self->m_timer.async_wait([self](error_code) { self->read(); });
    });
  }
  tcp::socket m_socket;
  net::steady_timer m_timer;
  const Options& m_o;
  int m_i;
  std::string m_request;
  char m_buffer[64 * 1024];
};

// A connection that asks once (keep-alive) and then stays idle, or trickles a head forever.
class Holder : public std::enable_shared_from_this<Holder> {
 public:
  Holder(net::io_context& io, const Options& o, int i, bool slowloris)
      : m_socket(io), m_timer(io), m_o(o), m_i(i), m_slowloris(slowloris) {}
  void start() {
    m_socket.open(tcp::v4());
    m_socket.bind(source(m_o, m_i));
    m_socket.async_connect({net::ip::make_address_v4("127.0.0.1"), static_cast<unsigned short>(m_o.port)},
                           [self = shared_from_this()](error_code ec) {
                             if (ec) {
                               return;
                             }
                             self->m_line = self->m_slowloris ? "GET " + self->m_o.probe + " HTTP/1.1\r\n"
                                                              : "HEAD " + self->m_o.probe +
                                                                    " HTTP/1.1\r\nHost: bench\r\n\r\n";
                             self->send();
                           });
  }

 private:
  void send() {
    net::async_write(m_socket, net::buffer(m_line), [self = shared_from_this()](error_code ec, std::size_t) {
      if (ec) {
        return;
      }
      if (self->m_slowloris) {
        // One more header byte every second: a head that never completes.
        self->m_line = "X";
        self->m_timer.expires_after(std::chrono::seconds(1));
        self->m_timer.async_wait([self](error_code) { self->send(); });
      } else {
        self->drain();
      }
    });
  }
  void drain() {
    m_socket.async_read_some(net::buffer(m_buffer), [self = shared_from_this()](error_code ec, std::size_t) {
      if (!ec) {
        self->drain();
      }
    });
  }
  tcp::socket m_socket;
  net::steady_timer m_timer;
  const Options& m_o;
  int m_i;
  bool m_slowloris;
  std::string m_line;
  char m_buffer[4096];
};

// One HEAD probe on a fresh connection (as the shim does), timed, bounded by the timeout.
class Probe : public std::enable_shared_from_this<Probe> {
 public:
  Probe(net::io_context& io, const Options& o, int i, std::vector<double>& latencies, int& timeouts, int& errors)
      : m_socket(io), m_timer(io), m_o(o), m_i(i), m_latencies(latencies), m_timeouts(timeouts), m_errors(errors) {}
  void start() {
    m_started = Clock::now();
    m_timer.expires_after(std::chrono::milliseconds(m_o.timeout_ms));
    m_timer.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec && !self->m_done) {
        self->m_done = true;
        ++self->m_timeouts;
        error_code ignored;
        self->m_socket.close(ignored);
      }
    });
    m_socket.open(tcp::v4());
    m_socket.bind(source(m_o, m_i));
    m_socket.async_connect({net::ip::make_address_v4("127.0.0.1"), static_cast<unsigned short>(m_o.port)},
                           [self = shared_from_this()](error_code ec) {
                             if (ec) {
                               return self->fail();
                             }
                             self->m_request = "HEAD " + self->m_o.probe + " HTTP/1.1\r\nHost: bench\r\n\r\n";
                             net::async_write(self->m_socket, net::buffer(self->m_request),
                                              [self](error_code wec, std::size_t) {
                                                if (wec) {
                                                  return self->fail();
                                                }
                                                self->read();
                                              });
                           });
  }

 private:
  void read() {
    m_socket.async_read_some(net::buffer(m_buffer), [self = shared_from_this()](error_code ec, std::size_t n) {
      if (ec) {
        return self->fail();
      }
      self->m_head.append(self->m_buffer, n);
      if (self->m_head.find("\r\n\r\n") == std::string::npos) {
        return self->read();
      }
      if (!self->m_done) {
        self->m_done = true;
        self->m_timer.cancel();
        if (self->m_head.starts_with("HTTP/1.1 200")) {
          self->m_latencies.push_back(std::chrono::duration<double, std::milli>(Clock::now() - self->m_started).count());
        } else {
          ++self->m_errors;
        }
      }
    });
  }
  void fail() {
    if (!m_done) {
      m_done = true;
      m_timer.cancel();
      ++m_errors;
    }
  }
  tcp::socket m_socket;
  net::steady_timer m_timer;
  const Options& m_o;
  int m_i;
  std::vector<double>& m_latencies;
  int& m_timeouts;
  int& m_errors;
  Clock::time_point m_started;
  bool m_done = false;
  std::string m_request;
  std::string m_head;
  char m_buffer[4096];
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) {
    return 0;
  }
  std::sort(v.begin(), v.end());
  const auto at = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(at, v.size() - 1)];
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string name = argv[i];
    const std::string value = argv[i + 1];
    if (name == "--port") o.port = std::stoi(value);
    else if (name == "--kind") o.kind = value;
    else if (name == "--connections") o.connections = std::stoi(value);
    else if (name == "--target") o.target = value;
    else if (name == "--rate") o.rate = std::stod(value);
    else if (name == "--probe") o.probe = value;
    else if (name == "--probes") o.probes = std::stoi(value);
    else if (name == "--probe-interval-ms") o.probe_interval_ms = std::stoi(value);
    else if (name == "--timeout-ms") o.timeout_ms = std::stoi(value);
    else if (name == "--sources") o.sources = std::stoi(value);
    else {
      std::cerr << "withcache-bench-load: unknown option " << name << '\n';
      std::exit(2);
    }
  }
  if (o.port <= 0) {
    std::cerr << "usage: withcache-bench-load --port P --kind KIND --connections K ... (see bench/load.cpp)\n";
    std::exit(2);
  }
  return o;
}

} // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
  net::io_context io;
  std::vector<double> latencies;
  int timeouts = 0;
  int errors = 0;

  if (o.kind == "burst") {
    // Every probe at once: what a lab re-imaging its machines does to the cache.
    for (int i = 0; i < o.connections; ++i) {
      std::make_shared<Probe>(io, o, i, latencies, timeouts, errors)->start();
    }
    io.run();
  } else {
    for (int i = 0; i < o.connections; ++i) {
      if (o.kind == "download") {
        std::make_shared<Downloader>(io, o, i)->start();
      } else if (o.kind == "idle" || o.kind == "slowloris") {
        std::make_shared<Holder>(io, o, i, o.kind == "slowloris")->start();
      }
    }
    // Let the load settle (every connection established and busy), then probe at a steady pace.
    net::steady_timer settle(io, std::chrono::seconds(2));
    auto next = std::make_shared<net::steady_timer>(io);
    auto fired = std::make_shared<int>(0);
    std::function<void()> fire = [&, next, fired] {
      if (*fired >= o.probes) {
        // Wait out the last probes, then stop everything.
        next->expires_after(std::chrono::milliseconds(o.timeout_ms + 100));
        next->async_wait([&](error_code) { io.stop(); });
        return;
      }
      std::make_shared<Probe>(io, o, o.connections + *fired, latencies, timeouts, errors)->start();
      ++*fired;
      next->expires_after(std::chrono::milliseconds(o.probe_interval_ms));
      next->async_wait([&fire](error_code) { fire(); });
    };
    settle.async_wait([&](error_code) { fire(); });
    io.run();
  }
  std::printf("{\"kind\": \"%s\", \"connections\": %d, \"probes\": %zu, \"timeouts\": %d, \"errors\": %d, "
              "\"p50_ms\": %.2f, \"p99_ms\": %.2f, \"max_ms\": %.2f}\n",
              o.kind.c_str(), o.connections, latencies.size() + static_cast<std::size_t>(timeouts + errors), timeouts,
              errors, percentile(latencies, 0.5), percentile(latencies, 0.99), percentile(latencies, 1.0));
  return 0;
}
