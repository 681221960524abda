// The event-driven transport on Boost.Asio and Boost.Beast, shaped after
// Beast's example/advanced/server: one session object per connection, on a
// strand, with every read and write under a deadline. A connection costs a
// socket and a few KiB, never a thread: handlers that may block (SQLite) run on
// a separate worker pool and hand their response back to the connection.
#include "server/transport.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include "http/http.hpp"
#include "withcache/util/encoding.hpp"
#include "withcache/util/strings.hpp"

namespace withcache::server {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using beast::error_code;

// sendfile(2) hands at most this much to the kernel per call, and a session
// yields its I/O thread to others after this many bytes in one turn, so a
// fast client of a large blob cannot monopolise a thread.
constexpr std::size_t k_sendfile_chunk = 4 * 1024 * 1024;
constexpr std::uint64_t k_bytes_per_turn = 16 * 1024 * 1024;
// pread+write over TLS, per response.
constexpr std::size_t k_tls_chunk = 256 * 1024;

// Connections per client address, bounded (SPEC §3: a cap per address).
class ConnectionLimiter {
 public:
  explicit ConnectionLimiter(std::size_t cap) : m_cap(cap) {}
  bool acquire(const std::string& address) {
    std::lock_guard lock(m_mutex);
    auto& n = m_open[address];
    if (n >= m_cap) {
      if (n == 0) {
        m_open.erase(address);
      }
      return false;
    }
    ++n;
    return true;
  }
  void release(const std::string& address) {
    std::lock_guard lock(m_mutex);
    const auto it = m_open.find(address);
    if (it != m_open.end() && --it->second == 0) {
      m_open.erase(it);
    }
  }

 private:
  std::mutex m_mutex;
  std::unordered_map<std::string, std::size_t> m_open;
  std::size_t m_cap;
};

// Everything a session needs from the transport.
struct Shared {
  Shared(TransportOptions opts, const Router& r, unsigned workers)
      : options(std::move(opts)), router(r), pool(workers), limiter(options.max_connections_per_address) {}
  TransportOptions options;
  const Router& router;
  net::thread_pool pool;
  ConnectionLimiter limiter;
  std::atomic<std::uint64_t> open{0};
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::uint64_t> timed_out{0};
  std::atomic<std::uint64_t> oversized{0};
  std::atomic<std::uint64_t> accept_errors{0};
  std::uint64_t file_limit = 0;           // RLIMIT_NOFILE when bound
  std::atomic<std::int64_t> last_warning{0}; // steady seconds of the last "near the limit" log

  // Logs at most once a minute: a descriptor shortage must be seen, not flood the log.
  bool may_warn() {
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch()).count();
    auto last = last_warning.load();
    return now - last >= 60 && last_warning.compare_exchange_strong(last, now);
  }

  std::mutex tls_mutex;
  std::shared_ptr<ssl::context> tls_context; // replaced whole on reload

  std::shared_ptr<ssl::context> current_tls() {
    std::lock_guard lock(tls_mutex);
    return tls_context;
  }
};

// A PEM file (certificate, key, passphrase) read whole. O_NONBLOCK and the regular-file check: a FIFO or a
// device planted at the path is refused at once instead of blocking the reload (or the start) forever.
std::string read_pem_file(const std::string& path) {
  constexpr std::size_t k_max_pem_bytes = 1024 * 1024;
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  }
  struct FdCloser {
    int owned;
    ~FdCloser() { ::close(owned); }
  } closer{fd};
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    throw std::runtime_error(path + " is not a regular file");
  }
  if (static_cast<std::uint64_t>(info.st_size) > k_max_pem_bytes) {
    throw std::runtime_error(path + " is larger than 1 MiB");
  }
  std::string text(static_cast<std::size_t>(info.st_size), '\0');
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::read(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      throw std::runtime_error("cannot read " + path +
                               (n < 0 ? ": " + std::string(std::strerror(errno)) : ""));
    }
    done += static_cast<std::size_t>(n);
  }
  return text;
}

// The first line of the passphrase file, as `openssl -passin file:` reads it.
std::string read_passphrase(const std::string& path) {
  std::string text = read_pem_file(path);
  const std::size_t end = text.find_first_of("\r\n");
  std::string line = text.substr(0, end);
  OPENSSL_cleanse(text.data(), text.size());
  return line;
}

std::shared_ptr<ssl::context> load_tls(const TransportOptions& o) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                       ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  const std::string cert = read_pem_file(o.tls_cert);
  std::string key = read_pem_file(o.tls_key);
  std::string passphrase =
      o.tls_key_passphrase_file.empty() ? std::string() : read_passphrase(o.tls_key_passphrase_file);
  // Without a callback OpenSSL prompts "Enter PEM pass phrase:" on the terminal and blocks until someone
  // types: at start that hangs the server, on SIGHUP the thread that reloads. This one answers at once.
  bool asked = false;
  context->set_password_callback([&](std::size_t, ssl::context::password_purpose) {
    asked = true;
    return passphrase;
  });
  const auto forget = [&] {
    // The context keeps its callback: leave it one that knows no passphrase and touches no local.
    context->set_password_callback([](std::size_t, ssl::context::password_purpose) { return std::string(); });
    OPENSSL_cleanse(passphrase.data(), passphrase.size());
    OPENSSL_cleanse(key.data(), key.size());
  };
  try {
    context->use_certificate_chain(net::buffer(cert));
    context->use_private_key(net::buffer(key), ssl::context::pem);
  } catch (const boost::system::system_error& e) {
    const bool had_passphrase = !passphrase.empty();
    forget();
    if (asked && !had_passphrase) {
      throw std::runtime_error(o.tls_key +
                               " is encrypted: give its passphrase with --tls-key-passphrase-file");
    }
    if (asked) {
      throw std::runtime_error("cannot decrypt " + o.tls_key +
                               " with the passphrase in --tls-key-passphrase-file");
    }
    throw std::runtime_error(e.code().message());
  }
  forget();
  return context;
}

// The request target's path and query. Absolute-form (`GET http://host/b/…`) is reduced to its path.
std::pair<std::string_view, std::string_view> split_target(std::string_view target) {
  if (target.starts_with("http://") || target.starts_with("https://")) {
    const std::size_t slash = target.find('/', target.find("://") + 3);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  const std::size_t question = target.find('?');
  return {target.substr(0, question),
          question == std::string_view::npos ? std::string_view{} : target.substr(question + 1)};
}

// One connection. Derived is PlainSession or TlsSession (CRTP, as in Beast's advanced server).
template <class Derived> class Session {
 public:
  Session(std::shared_ptr<Shared> shared, std::string address)
      : m_shared(std::move(shared)), m_address(std::move(address)),
        m_buffer(m_shared->options.max_header_bytes + 64 * 1024) {
    ++m_shared->open;
  }
  ~Session() {
    --m_shared->open;
    m_shared->limiter.release(m_address);
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

 protected:
  Derived& derived() { return static_cast<Derived&>(*this); }
  auto& lowest() { return beast::get_lowest_layer(derived().stream()); }
  const TransportOptions& options() const { return m_shared->options; }

  // Reads the next request: the idle wait for its first byte (a new connection
  // waits no longer than for a head), then the head under one deadline that
  // trickling bytes cannot extend.
  void read_request(bool first) {
    m_parser.emplace();
    m_parser->header_limit(static_cast<std::uint32_t>(options().max_header_bytes));
    m_parser->body_limit(options().max_body_bytes);
    if (m_buffer.size() > 0) {
      return read_head(Clock::now() + options().head_timeout);
    }
    m_buffer.shrink_to_fit(); // an idle connection keeps no buffer
    const auto wait = first ? options().head_timeout : options().idle_timeout;
    lowest().expires_after(wait);
    derived().stream().async_read_some(
        m_buffer.prepare(1024),
        [self = derived().shared_from_this(), first](error_code ec, std::size_t n) {
          if (ec) {
            if (ec == beast::error::timeout) {
              ++self->m_shared->timed_out;
            }
            return self->derived().close();
          }
          self->m_buffer.commit(n);
          // The head's deadline runs from the first byte (from the accept for a new connection).
          self->read_head(first ? self->m_accepted + self->options().head_timeout
                                : Clock::now() + self->options().head_timeout);
        });
  }

  void read_head(Clock::time_point deadline) {
    m_started = Clock::now();
    lowest().expires_at(deadline);
    http::async_read_header(derived().stream(), m_buffer, *m_parser,
                            [self = derived().shared_from_this()](error_code ec, std::size_t) {
                              self->on_head(ec);
                            });
  }

  void on_head(error_code ec) {
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset) {
      return derived().close();
    }
    if (ec == beast::error::timeout) {
      ++m_shared->timed_out;
      return derived().close();
    }
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      ++m_shared->oversized;
      return refuse(431, "request header too large\n");
    }
    if (ec == http::error::body_limit) { // a declared Content-Length over the limit
      ++m_shared->oversized;
      return refuse(413, "request body too large\n");
    }
    if (ec) {
      spdlog::debug("{}: refused a malformed request head: {}", m_address, ec.message());
      return refuse(400, "malformed request\n");
    }
    const auto& head = m_parser->get();
    if (static_cast<std::size_t>(std::distance(head.begin(), head.end())) > options().max_header_fields) {
      ++m_shared->oversized;
      return refuse(431, "too many header fields\n");
    }
    if (m_parser->is_done()) {
      return dispatch();
    }
    if (const auto length = m_parser->content_length(); length && *length > options().max_body_bytes) {
      ++m_shared->oversized;
      return refuse(413, "request body too large\n");
    }
    // curl sends Expect: 100-continue before larger bodies and waits for the go-ahead.
    if (util::iequals(std::string_view(head[http::field::expect]), "100-continue")) {
      auto go_ahead = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
      lowest().expires_after(options().body_timeout);
      http::async_write(derived().stream(), *go_ahead,
                        [self = derived().shared_from_this(), go_ahead](error_code write_ec, std::size_t) {
                          if (write_ec) {
                            return self->derived().close();
                          }
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    lowest().expires_after(options().body_timeout);
    http::async_read(derived().stream(), m_buffer, *m_parser,
                     [self = derived().shared_from_this()](error_code ec, std::size_t) {
                       if (ec == http::error::body_limit) {
                         ++self->m_shared->oversized;
                         return self->refuse(413, "request body too large\n");
                       }
                       if (ec == beast::error::timeout) {
                         ++self->m_shared->timed_out;
                         return self->derived().close();
                       }
                       if (ec) {
                         return self->derived().close();
                       }
                       self->dispatch();
                     });
  }

  // A limit was crossed: answer and close, reading nothing more.
  void refuse(int status, std::string text) {
    Request request;
    request.remote_address = m_address;
    request.tls = Derived::k_tls;
    Response response = plain(status, std::move(text));
    response.close = true;
    m_version = 11;
    m_keep_alive = false;
    write(std::move(request), std::move(response));
  }

  Request to_request() {
    auto message = m_parser->release();
    Request request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    const auto [path, query] = split_target(request.target);
    request.raw_path = std::string(path);
    request.path = util::percent_decode(path);
    request.query = std::string(query);
    for (const auto& field : message) {
      request.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    request.body = std::move(message.body());
    request.remote_address = m_address;
    request.tls = Derived::k_tls;
    request.head = message.method() == http::verb::head;
    m_version = message.version();
    m_keep_alive = message.keep_alive();
    return request;
  }

  void dispatch() {
    Request request = to_request();
    const Router& router = m_shared->router;
    const Router::Route* route = router.find(request.method, request.path);
    if (route == nullptr) {
      Response response = router.path_known(request.path) ? plain(405, "method not allowed\n")
                          : router.not_found()            ? router.not_found()(request)
                                                          : plain(404, "not found\n");
      return write(std::move(request), std::move(response));
    }
    if (route->runs == Runs::io) {
      Response response = call(route->handler, request);
      return write(std::move(request), std::move(response));
    }
    // SQLite work goes to the worker pool; the answer comes back to this connection's strand.
    net::post(m_shared->pool, [self = derived().shared_from_this(), route, request = std::move(request)]() mutable {
      Response response = call(route->handler, request);
      net::post(self->derived().stream().get_executor(),
                [self, request = std::move(request), response = std::move(response)]() mutable {
                  self->write(std::move(request), std::move(response));
                });
    });
  }

  static Response call(const Handler& handler, const Request& request) {
    try {
      return handler(request);
    } catch (const std::exception& e) {
      spdlog::error("internal error on {} {}: {}", request.method, util::escape_control(request.path), e.what());
    } catch (...) {
      spdlog::error("internal error on {} {}", request.method, util::escape_control(request.path));
    }
    return plain(500, "internal error\n");
  }

  // A deferred answer: wait (holding no thread) for its wake-up or its timeout, whichever is first,
  // then compute the answer on this connection's strand and write it.
  void defer(Request request, std::shared_ptr<Deferred> deferred) {
    auto self = derived().shared_from_this();
    auto executor = derived().stream().get_executor();
    auto done = std::make_shared<bool>(false); // touched on the strand only
    auto timer = std::make_shared<net::steady_timer>(executor, deferred->timeout);
    auto shared_request = std::make_shared<Request>(std::move(request));
    auto answer = [self, deferred, done, timer, shared_request](bool timed_out) {
      if (*done) {
        return;
      }
      *done = true;
      timer->cancel();
      Response response = call([&](const Request&) { return deferred->answer(timed_out); }, *shared_request);
      if (response.deferred) {
        response = plain(500, "internal error\n"); // one deferral per request
      }
      self->write(std::move(*shared_request), std::move(response));
    };
    timer->async_wait([answer](error_code ec) {
      if (!ec) {
        answer(true);
      }
    });
    deferred->wait([executor, answer] { net::post(executor, [answer] { answer(false); }); });
  }

  // How much of a file body may be sent now: all that is left, or for a file still being written
  // what has landed. 0: a waker is set and sending resumes when more lands; -1: cut (closed).
  std::int64_t sendable() {
    auto& file = *m_response.file;
    if (!file.growing) {
      return static_cast<std::int64_t>(m_body_left);
    }
    const auto now = file.growing->now();
    if (now.cut) {
      derived().close(); // a short read: never a byte that will not be in the blob
      return -1;
    }
    const std::uint64_t end = std::min(file.offset + m_body_left, now.available);
    if (end > file.offset) {
      return static_cast<std::int64_t>(end - file.offset);
    }
    file.growing->wait(now.version, [self = derived().shared_from_this()] {
      net::post(self->derived().stream().get_executor(), [self] { self->derived().send_file(); });
    });
    return 0;
  }

  // Writes the head, then the body: from memory, from a file with sendfile
  // (plain TCP) or pread+write (TLS), or nothing for HEAD and bodiless statuses.
  void write(Request request, Response response) {
    if (response.deferred) {
      auto deferred = std::move(response.deferred);
      return defer(std::move(request), std::move(deferred));
    }
    m_request = std::move(request);
    m_response = std::move(response);
    m_in_response = true;
    auto& res = m_head;
    res = {};
    res.version(m_version == 10 ? 10 : 11);
    res.result(static_cast<unsigned>(m_response.status));
    res.set(http::field::server, options().server_header);
    res.set(http::field::date, withcache::http::http_date(std::time(nullptr)));
    for (const auto& [name, value] : m_response.headers) {
      res.insert(name, value);
    }
    const bool bodiless = m_response.status == 304 || m_response.status == 204 || m_response.status < 200;
    if (!bodiless) {
      res.set(http::field::content_length, std::to_string(m_response.content_length()));
    }
    m_keep_alive = m_keep_alive && !m_response.close;
    res.keep_alive(m_keep_alive);
    m_body_left = bodiless || m_request.head ? 0 : m_response.content_length();
    m_serializer.emplace(res);
    lowest().expires_after(options().send_timeout);
    http::async_write_header(derived().stream(), *m_serializer,
                             [self = derived().shared_from_this()](error_code ec, std::size_t) {
                               if (ec) {
                                 return self->derived().close();
                               }
                               self->write_body();
                             });
  }

  void write_body() {
    if (m_body_left == 0) {
      return finish();
    }
    if (m_response.file) {
      return derived().send_file();
    }
    lowest().expires_after(options().send_timeout);
    net::async_write(derived().stream(), net::buffer(m_response.body),
                     [self = derived().shared_from_this()](error_code ec, std::size_t n) {
                       if (ec) {
                         return self->derived().close();
                       }
                       self->count(n);
                       self->finish();
                     });
  }

  void count(std::uint64_t n) {
    if (n > 0 && m_response.on_body_bytes) {
      m_response.on_body_bytes(n);
    }
  }

  // pread into a buffer and write it: for TLS, where the kernel cannot send the file for us.
  void send_file_copying() {
    if (m_body_left == 0) {
      return finish();
    }
    const std::int64_t can = sendable();
    if (can <= 0) {
      return; // waiting for the fill, or cut
    }
    if (m_copy.empty()) {
      m_copy.resize(k_tls_chunk);
    }
    auto& file = *m_response.file;
    const std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(static_cast<std::uint64_t>(can), m_copy.size()));
    const ssize_t got = ::pread(file.fd, m_copy.data(), want, static_cast<off_t>(file.offset));
    if (got <= 0) {
      // The file shrank under us: drop the connection rather than send wrong bytes.
      return derived().close();
    }
    lowest().expires_after(options().send_timeout);
    net::async_write(derived().stream(), net::buffer(m_copy.data(), static_cast<std::size_t>(got)),
                     [self = derived().shared_from_this()](error_code ec, std::size_t n) {
                       if (ec) {
                         if (ec == beast::error::timeout) {
                           ++self->m_shared->timed_out;
                         }
                         return self->derived().close();
                       }
                       self->m_response.file->offset += n;
                       self->m_body_left -= n;
                       self->count(n);
                       self->send_file_copying();
                     });
  }

  // One access-log line per response: when its last byte is written, or when the connection closes first.
  void log_response(bool complete) {
    if (!m_in_response) {
      return;
    }
    m_in_response = false;
    if (options().access_log) {
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - m_started).count();
      options().access_log(m_request, m_response, ms, complete);
    }
  }

  void finish() {
    log_response(true);
    m_response = Response{};
    m_copy.clear();
    m_copy.shrink_to_fit();
    if (!m_keep_alive) {
      return derived().close();
    }
    read_request(false);
  }

  std::shared_ptr<Shared> m_shared;
  std::string m_address;
  Clock::time_point m_accepted = Clock::now();
  Clock::time_point m_started = Clock::now();
  beast::flat_buffer m_buffer;
  std::optional<http::request_parser<http::string_body>> m_parser;
  unsigned m_version = 11;
  bool m_keep_alive = true;
  Request m_request;
  Response m_response;
  http::response<http::empty_body> m_head;
  std::optional<http::response_serializer<http::empty_body>> m_serializer;
  std::uint64_t m_body_left = 0;
  bool m_in_response = false; // a response is being written (for its access-log line)
  std::vector<char> m_copy;
};

class PlainSession : public Session<PlainSession>, public std::enable_shared_from_this<PlainSession> {
 public:
  static constexpr bool k_tls = false;

  PlainSession(tcp::socket&& socket, std::shared_ptr<Shared> shared, std::string address)
      : Session(std::move(shared), std::move(address)), m_stream(std::move(socket)),
        m_stall(m_stream.get_executor()) {}

  beast::tcp_stream& stream() { return m_stream; }

  void start() {
    net::dispatch(m_stream.get_executor(), [self = shared_from_this()] { self->read_request(true); });
  }

  // Zero-copy: the kernel sends the blob from the page cache. The socket is
  // non-blocking; when it is full we wait for it to drain, under the send deadline.
  void send_file() {
    auto& socket = m_stream.socket();
    if (!socket.non_blocking()) {
      error_code ec;
      socket.non_blocking(true, ec);
    }
    auto& file = *m_response.file;
    std::uint64_t this_turn = 0;
    while (m_body_left > 0) {
      const std::int64_t can = sendable();
      if (can <= 0) {
        return; // waiting for the fill, or cut
      }
      off_t offset = static_cast<off_t>(file.offset);
      const auto want = static_cast<std::size_t>(
          std::min<std::uint64_t>(static_cast<std::uint64_t>(can), k_sendfile_chunk));
      const ssize_t n = ::sendfile(socket.native_handle(), file.fd, &offset, want);
      if (n > 0) {
        const auto sent = static_cast<std::uint64_t>(n);
        file.offset += sent;
        m_body_left -= sent;
        this_turn += sent;
        count(sent);
        if (this_turn >= k_bytes_per_turn && m_body_left > 0) {
          // Let the other connections of this thread have their turn.
          return net::post(m_stream.get_executor(), [self = shared_from_this()] { self->send_file(); });
        }
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return wait_writable();
      }
      if (n < 0 && errno == EINTR) {
        continue;
      }
      // 0: the file shrank under us; < 0: the client went away. Never send a wrong byte: close.
      return close();
    }
    finish();
  }

  void close() {
    log_response(false);
    error_code ec;
    m_stall.cancel();
    m_stream.socket().shutdown(tcp::socket::shutdown_both, ec);
    m_stream.close();
  }

 private:
  void wait_writable() {
    m_stall.expires_after(options().send_timeout);
    m_stall.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec) {
        ++self->m_shared->timed_out; // the client stopped reading
        self->close();
      }
    });
    m_stream.socket().async_wait(tcp::socket::wait_write, [self = shared_from_this()](error_code ec) {
      self->m_stall.cancel();
      if (ec) {
        return self->close();
      }
      self->send_file();
    });
  }

  beast::tcp_stream m_stream;
  net::steady_timer m_stall;
};

class TlsSession : public Session<TlsSession>, public std::enable_shared_from_this<TlsSession> {
 public:
  static constexpr bool k_tls = true;

  TlsSession(tcp::socket&& socket, std::shared_ptr<ssl::context> context, std::shared_ptr<Shared> shared,
             std::string address)
      : Session(std::move(shared), std::move(address)), m_context(std::move(context)),
        m_stream(std::move(socket), *m_context) {}

  beast::ssl_stream<beast::tcp_stream>& stream() { return m_stream; }

  void start() {
    net::dispatch(m_stream.get_executor(), [self = shared_from_this()] {
      // The handshake is part of the first head's deadline.
      beast::get_lowest_layer(self->m_stream).expires_after(self->options().head_timeout);
      self->m_stream.async_handshake(ssl::stream_base::server, [self](error_code ec) {
        if (ec) {
          if (ec == beast::error::timeout) {
            ++self->m_shared->timed_out;
          }
          return self->close();
        }
        self->read_request(true);
      });
    });
  }

  void send_file() { send_file_copying(); }

  void close() {
    if (m_closing) {
      return;
    }
    m_closing = true;
    log_response(false);
    beast::get_lowest_layer(m_stream).expires_after(std::chrono::seconds(2));
    m_stream.async_shutdown([self = shared_from_this()](error_code) { beast::get_lowest_layer(self->m_stream).close(); });
  }

 private:
  std::shared_ptr<ssl::context> m_context; // keeps the certificate this connection was accepted with
  beast::ssl_stream<beast::tcp_stream> m_stream;
  bool m_closing = false;
};

unsigned cores() {
  return std::max(1U, std::thread::hardware_concurrency());
}

} // namespace

struct Transport::Impl {
  Impl(TransportOptions options, const Router& router)
      : io(static_cast<int>(options.io_threads == 0 ? cores() : options.io_threads)),
        shared(std::make_shared<Shared>(std::move(options), router,
                                        options.worker_threads == 0 ? std::max(2U, cores())
                                                                    : options.worker_threads)),
        acceptor(net::make_strand(io)) {}

  void accept() {
    acceptor.async_accept(net::make_strand(io), [this](error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor.is_open()) {
        return;
      }
      if (ec) {
        // Out of descriptors (EMFILE/ENFILE) or a transient error: log it and try again shortly.
        ++shared->accept_errors;
        if (shared->may_warn()) {
          spdlog::warn("cannot accept connections: {} ({} open, open-files limit {}); raise LimitNOFILE",
                       ec.message(), shared->open.load(), shared->file_limit);
        }
        auto timer = std::make_shared<net::steady_timer>(acceptor.get_executor(), std::chrono::milliseconds(50));
        timer->async_wait([this, timer](error_code) { accept(); });
        return;
      }
      start_session(std::move(socket));
      accept();
    });
  }

  void start_session(tcp::socket socket) {
    if (shared->file_limit > 0 && shared->open.load() * 10 > shared->file_limit * 9 && shared->may_warn()) {
      spdlog::warn("{} connections open, near the open-files limit of {}", shared->open.load(), shared->file_limit);
    }
    error_code ec;
    const auto peer = socket.remote_endpoint(ec);
    if (ec) {
      return;
    }
    std::string address = peer.address().to_string();
    if (!shared->limiter.acquire(address)) {
      ++shared->refused;
      socket.close(ec);
      return;
    }
    socket.set_option(tcp::no_delay(true), ec);
    if (auto context = shared->current_tls()) {
      std::make_shared<TlsSession>(std::move(socket), std::move(context), shared, std::move(address))->start();
    } else {
      std::make_shared<PlainSession>(std::move(socket), shared, std::move(address))->start();
    }
  }

  net::io_context io;
  std::shared_ptr<Shared> shared;
  tcp::acceptor acceptor;
  int bound_port = 0;
  std::string bound_endpoint;
  std::atomic<bool> stopped{false};
};

Transport::Transport(TransportOptions options, const Router& router)
    : m_impl(std::make_unique<Impl>(std::move(options), router)) {}

Transport::~Transport() {
  stop();
  m_impl->shared->pool.join();
}

void Transport::bind() {
  const auto& o = m_impl->shared->options;
  if (!o.tls_cert.empty() || !o.tls_key.empty()) {
    if (o.tls_cert.empty() || o.tls_key.empty()) {
      throw std::runtime_error("--tls-cert and --tls-key go together");
    }
    try {
      m_impl->shared->tls_context = load_tls(o);
    } catch (const std::exception& e) {
      throw std::runtime_error("cannot load --tls-cert/--tls-key: " + std::string(e.what()));
    }
  }
  const std::string where = o.host + ":" + std::to_string(o.port);
  error_code ec;
  auto address = net::ip::make_address(o.host, ec);
  if (ec) {
    tcp::resolver resolver(m_impl->io);
    const auto found = resolver.resolve(o.host, std::to_string(o.port), ec);
    if (ec || found.empty()) {
      throw std::runtime_error("cannot listen on " + where + ": " + (ec ? ec.message() : "no address"));
    }
    address = found.begin()->endpoint().address();
  }
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(o.port));
  auto& acceptor = m_impl->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    // SO_REUSEADDR only (a quick restart), never SO_REUSEPORT (a second server would share our port).
    acceptor.set_option(net::socket_base::reuse_address(true), ec);
  }
  if (!ec) {
    acceptor.bind(endpoint, ec);
  }
  if (!ec) {
    acceptor.listen(net::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    throw std::runtime_error("cannot listen on " + where + ": " + ec.message());
  }
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0) {
    m_impl->shared->file_limit = files.rlim_cur;
  }
  const auto local = acceptor.local_endpoint(ec);
  m_impl->bound_port = local.port();
  const std::string shown = local.address().is_v6() ? "[" + local.address().to_string() + "]"
                                                    : local.address().to_string();
  m_impl->bound_endpoint = shown + ":" + std::to_string(local.port());
}

int Transport::port() const noexcept {
  return m_impl->bound_port;
}

std::string Transport::local_endpoint() const {
  return m_impl->bound_endpoint;
}

bool Transport::tls() const noexcept {
  return m_impl->shared->tls_context != nullptr;
}

void Transport::run() {
  if (m_impl->stopped) {
    return;
  }
  net::dispatch(m_impl->acceptor.get_executor(), [this] { m_impl->accept(); });
  const unsigned threads =
      m_impl->shared->options.io_threads == 0 ? cores() : m_impl->shared->options.io_threads;
  std::vector<std::thread> extra;
  for (unsigned i = 1; i < threads; ++i) {
    extra.emplace_back([this] { m_impl->io.run(); });
  }
  m_impl->io.run();
  for (auto& t : extra) {
    t.join();
  }
}

void Transport::stop() {
  if (m_impl->stopped.exchange(true)) {
    return;
  }
  net::post(m_impl->acceptor.get_executor(), [this] {
    error_code ec;
    m_impl->acceptor.close(ec);
  });
  m_impl->io.stop();
}

std::string Transport::reload_tls() {
  const auto& o = m_impl->shared->options;
  if (o.tls_cert.empty()) {
    return "TLS is not configured (--tls-cert, --tls-key)";
  }
  try {
    auto context = load_tls(o);
    std::lock_guard lock(m_impl->shared->tls_mutex);
    m_impl->shared->tls_context = std::move(context);
    return {};
  } catch (const std::exception& e) {
    return std::string("cannot load --tls-cert/--tls-key: ") + e.what();
  }
}

void Transport::reload_tls_async(std::function<void(const std::string&)> done) {
  // On the worker pool, never on the caller's thread: the signal thread must stay free for SIGTERM.
  net::post(m_impl->shared->pool, [this, done = std::move(done)] {
    const std::string error = reload_tls();
    if (done) {
      done(error);
    }
  });
}

TransportStats Transport::stats() const {
  const auto& s = *m_impl->shared;
  std::uint64_t descriptors = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    ++descriptors;
  }
  return TransportStats{s.open.load(),    s.refused.load(), s.timed_out.load(), s.oversized.load(),
                        s.accept_errors.load(), descriptors, s.file_limit};
}

} // namespace withcache::server
