#pragma once

// One HTTP exchange as the route code sees it — a transport-neutral request
// and response — and the router that picks a route's handler. The transport
// (transport.cpp, Boost.Beast) fills a Request, calls the handler and writes
// the Response; no route file includes Beast. Internal to withcache::server.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace withcache::server {

/** Header fields or form/query parameters, in order. */
using Fields = std::vector<std::pair<std::string, std::string>>;

/** A request, parsed and size-limited by the transport. */
struct Request {
  std::string method;         ///< upper-case as sent (`GET`, `HEAD`, `POST`, …)
  std::string target;         ///< the request target as sent (origin-form, or absolute-form)
  std::string path;           ///< the target's path, percent-decoded (`/b/<token>/name`)
  std::string raw_path;       ///< the target's path as sent
  std::string query;          ///< the raw query string, without `?`
  Fields headers;             ///< every field as sent
  std::string body;           ///< at most the body limit
  std::string remote_address; ///< the peer's address, without port
  bool tls = false;           ///< the request came over TLS (HTTPS)
  bool head = false; ///< a HEAD: the transport sends headers only

  /** The first field named `name` (ASCII case-insensitive), or empty. */
  [[nodiscard]] std::string_view header(std::string_view name) const;
  /** True when a field named `name` was sent. */
  [[nodiscard]] bool has_header(std::string_view name) const;
  /** Query parameters, then (for an `application/x-www-form-urlencoded` body) form fields, decoded. */
  [[nodiscard]] const Fields& params() const;
  /** The first parameter named `name`, or empty. */
  [[nodiscard]] std::string param(std::string_view name) const;
  /** True when a parameter named `name` was sent. */
  [[nodiscard]] bool has_param(std::string_view name) const;

 private:
  mutable std::optional<Fields> m_params;
};

/**
 * A file that grows while it is sent (a fill in progress): the transport sends
 * what is available and waits, costing no thread, for the rest. Implementations
 * are thread-safe.
 */
class GrowingBody {
 public:
  virtual ~GrowingBody() = default;
  struct Now {
    std::uint64_t available = 0; ///< bytes from the file's start that may be sent
    bool cut = false;            ///< send nothing more: close the connection (the client sees a short read)
    std::uint64_t version = 0;   ///< for wait()
  };
  [[nodiscard]] virtual Now now() const = 0;
  /** Calls `wake` once, from any thread, when now() no longer has `version` (at once if it already has not). */
  virtual void wait(std::uint64_t version, std::function<void()> wake) = 0;
};

/** A blob file to send as the body: `length` bytes from `offset` of an open descriptor (owned). */
struct FileBody {
  int fd = -1; ///< -1 for a HEAD, which needs no file
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  /** Set when the file is still being written: bytes are sent as they become available. */
  std::shared_ptr<GrowingBody> growing;
  FileBody() = default;
  FileBody(int fd_, std::uint64_t offset_, std::uint64_t length_) : fd(fd_), offset(offset_), length(length_) {}
  ~FileBody();
  FileBody(const FileBody&) = delete;
  FileBody& operator=(const FileBody&) = delete;
  FileBody(FileBody&& other) noexcept;
  FileBody& operator=(FileBody&& other) noexcept;
};

struct Response;

/**
 * An answer that is not ready yet (the miss that waits for the origin's head):
 * the transport calls `wait` and, when it wakes or `timeout` passes (whichever
 * is first), `answer(timed_out)` on the connection's thread, then sends that.
 * The connection holds no thread while it waits.
 */
struct Deferred {
  std::chrono::milliseconds timeout{0};
  std::function<void(std::function<void()> wake)> wait;
  std::function<Response(bool timed_out)> answer;
};

/** A response; the transport adds `Server`, `Date`, `Content-Length` and `Connection`. */
struct Response {
  int status = 200;
  Fields headers;
  std::string body;              ///< a body held in memory …
  std::optional<FileBody> file;  ///< … or a file, sent with sendfile(2) on plain TCP
  bool close = false;            ///< close the connection after this response
  /** What the access log shows for the request target (default: its path); never a token or query. */
  std::string log_target;
  /** When set, nothing else here is sent: the answer comes later (see Deferred). */
  std::shared_ptr<Deferred> deferred;
  /** Called with the body bytes actually written (for metrics); may be empty. */
  std::function<void(std::uint64_t)> on_body_bytes;

  /** Sets (replacing) a header. */
  Response& set(std::string name, std::string value);
  /** Adds a header, keeping any of the same name (a second `Set-Cookie`). */
  Response& add(std::string name, std::string value);
  /** The value of header `name`, or empty. */
  [[nodiscard]] std::string_view header(std::string_view name) const;
  /** The body's length, whichever kind it is. */
  [[nodiscard]] std::uint64_t content_length() const;
};

/** `text` as a `text/plain; charset=utf-8` response. */
Response plain(int status, std::string text);
/** `html` as a `text/html; charset=utf-8` response that is never cached. */
Response html(int status, std::string html);
/** `json` (already serialised) as an `application/json` response that is never cached. */
Response json_text(int status, std::string json);
/** A redirect to `location` (303 See Other unless told otherwise). */
Response redirect(std::string location, int status = 303);

/** Where a handler runs: on the I/O thread (memory only, never blocks) or on the worker pool (SQLite). */
enum class Runs { io, worker };

using Handler = std::function<Response(const Request&)>;

/**
 * Routes by method and path: an exact path, or a prefix (`/b/`, `/api/v1/artifacts/`).
 * A GET route also answers HEAD. Registration happens before serving starts;
 * lookups are then read-only and thread-safe.
 */
class Router {
 public:
  struct Route {
    std::string method;
    std::string path;
    bool prefix = false;
    Runs runs = Runs::worker;
    Handler handler;
  };

  void add(std::string method, std::string path, Runs runs, Handler handler);
  void add_prefix(std::string method, std::string prefix, Runs runs, Handler handler);
  /** Replaces the handler of every route `which` selects with `wrap(handler)` (e.g. to add headers). */
  void wrap(const std::function<bool(const Route&)>& which, const std::function<Handler(Handler)>& wrap);
  /** What to answer when no route matches (a plain 404 unless set). */
  void set_not_found(Handler handler);

  /** The route for a request; nullptr when none matches its path and method. */
  [[nodiscard]] const Route* find(std::string_view method, std::string_view path) const;
  /** True when some route matches the path with another method. */
  [[nodiscard]] bool path_known(std::string_view path) const;
  [[nodiscard]] const Handler& not_found() const { return m_not_found; }

 private:
  std::vector<Route> m_routes;
  Handler m_not_found;
};

} // namespace withcache::server
