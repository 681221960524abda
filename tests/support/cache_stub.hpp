#pragma once

// A stand-in for a withcache server that holds everything: it answers 200 to
// every HEAD (so a shim's probe WOULD hit) and to every GET with a fixed body,
// and logs every request with its headers, so a test can show what reached
// the cache — and, above all, what never did.

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "support/eventually.hpp"
#include "support/origin.hpp"

namespace withcache::test {

class CacheStub {
 public:
  static constexpr const char* k_body = "bytes from the cache stub\n";

  CacheStub() {
    const auto any = [this](const httplib::Request& req, httplib::Response& res) {
      LoggedRequest entry{req.method, req.path, {}, {req.headers.begin(), req.headers.end()}, req.body};
      if (const auto q = req.target.find('?'); q != std::string::npos) {
        entry.query = req.target.substr(q + 1);
      }
      {
        std::lock_guard lock(m_mutex);
        m_log.push_back(std::move(entry));
      }
      res.set_content(k_body, "application/octet-stream");
    };
    m_server.Get(".*", any); // GET and HEAD
    m_server.Post(".*", any);
    m_server.Put(".*", any);
    m_server.Delete(".*", any);
    m_port = m_server.bind_to_any_port("127.0.0.1");
    if (m_port <= 0) {
      throw std::runtime_error("cache stub: cannot bind 127.0.0.1");
    }
    m_thread = std::thread([this] { m_server.listen_after_bind(); });
    if (!eventually([this] { return m_server.is_running(); }, std::chrono::seconds(10))) {
      throw std::runtime_error("cache stub: did not start");
    }
  }
  ~CacheStub() {
    m_server.stop();
    m_thread.join();
  }
  CacheStub(const CacheStub&) = delete;
  CacheStub& operator=(const CacheStub&) = delete;

  [[nodiscard]] std::string base() const { return "http://127.0.0.1:" + std::to_string(m_port); }
  [[nodiscard]] std::vector<LoggedRequest> log() const {
    std::lock_guard lock(m_mutex);
    return m_log;
  }
  void clear() {
    std::lock_guard lock(m_mutex);
    m_log.clear();
  }

 private:
  httplib::Server m_server;
  int m_port = 0;
  std::thread m_thread;
  mutable std::mutex m_mutex;
  std::vector<LoggedRequest> m_log;
};

} // namespace withcache::test
