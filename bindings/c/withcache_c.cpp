// The extern "C" layer: every body catches everything, so no C++ exception
// crosses the ABI; failures become WITHCACHE_E* codes plus a thread-local message.
#define WITHCACHE_C_BUILDING
#include "withcache.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "withcache/client/probe.hpp"
#include "withcache/url.hpp"
#include "withcache/version.hpp"

struct withcache_client {
  std::string server;
  withcache::client::ProbeOptions options;
};

namespace {

thread_local std::string t_last_error;

int fail(int code, std::string message) {
  t_last_error = std::move(message);
  return code;
}

int ok() {
  t_last_error.clear();
  return WITHCACHE_OK;
}

// A malloc'd copy, so that withcache_string_free() is free().
char* duplicate(const std::string& text) {
  char* copy = static_cast<char*>(std::malloc(text.size() + 1));
  if (copy != nullptr) {
    std::memcpy(copy, text.c_str(), text.size() + 1);
  }
  return copy;
}

template <class Body> int guarded(Body&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(WITHCACHE_ENOMEM, "out of memory");
  } catch (const std::exception& e) {
    return fail(WITHCACHE_EINTERNAL, e.what());
  } catch (...) {
    return fail(WITHCACHE_EINTERNAL, "unknown internal error");
  }
}

int give(char** out, const std::string& text) {
  *out = duplicate(text);
  return *out == nullptr ? fail(WITHCACHE_ENOMEM, "out of memory") : ok();
}

} // namespace

extern "C" {

const char* withcache_version(void) {
  return withcache::k_version;
}

const char* withcache_strerror(int error) {
  switch (error) {
  case WITHCACHE_OK:
    return "success";
  case WITHCACHE_EINVAL:
    return "invalid argument";
  case WITHCACHE_EURL:
    return "malformed URL";
  case WITHCACHE_ENOTFOUND:
    return "not cached";
  case WITHCACHE_ENOMEM:
    return "out of memory";
  case WITHCACHE_EINTERNAL:
    return "internal error";
  case WITHCACHE_EVERSION:
    return "unknown options version";
  default:
    return "unknown error code";
  }
}

const char* withcache_last_error(void) {
  return t_last_error.c_str();
}

void withcache_string_free(char* string) {
  std::free(string);
}

int withcache_client_options_init(withcache_client_options* options, unsigned int version) {
  return guarded([&] {
    if (options == nullptr) {
      return fail(WITHCACHE_EINVAL, "withcache_client_options_init: options must not be NULL");
    }
    if (version != WITHCACHE_CLIENT_OPTIONS_VERSION) {
      return fail(WITHCACHE_EVERSION, "withcache_client_options_init: version " + std::to_string(version) +
                                          " is not one this library knows (" +
                                          std::to_string(WITHCACHE_CLIENT_OPTIONS_VERSION) + ")");
    }
    *options = withcache_client_options WITHCACHE_CLIENT_OPTIONS_INIT;
    return ok();
  });
}

int withcache_normalize_key(char** out, const char* url, int keep_query) {
  return guarded([&] {
    if (out == nullptr || url == nullptr) {
      return fail(WITHCACHE_EINVAL, "withcache_normalize_key: out and url must not be NULL");
    }
    *out = nullptr;
    const auto key = withcache::url::normalize_key(url, {keep_query != 0});
    if (!key) {
      return fail(WITHCACHE_EURL, key.error().message);
    }
    return give(out, *key);
  });
}

int withcache_blob_url(char** out, const char* server, const char* origin) {
  return guarded([&] {
    if (out == nullptr || server == nullptr || origin == nullptr) {
      return fail(WITHCACHE_EINVAL, "withcache_blob_url: out, server and origin must not be NULL");
    }
    *out = nullptr;
    return give(out, withcache::url::blob_url(server, origin));
  });
}

int withcache_client_new(withcache_client** out, const char* server,
                         const withcache_client_options* options) {
  return guarded([&] {
    if (out == nullptr || server == nullptr || withcache::url::cache_base(server).empty()) {
      return fail(WITHCACHE_EINVAL, "withcache_client_new: out and a non-empty server are required");
    }
    *out = nullptr;
    auto client = std::make_unique<withcache_client>();
    client->server = server;
    if (options != nullptr) {
      // Version 0 is also withcache 0.4's unversioned struct, zero-initialised: its timeout_ms (where
      // `version` is now) was 0 and its headers pointer sits where ours does.
      if (options->version != 0 && options->version != WITHCACHE_CLIENT_OPTIONS_VERSION) {
        return fail(
            WITHCACHE_EVERSION,
            "withcache_client_new: options->version is " + std::to_string(options->version) +
                ", this library knows " + std::to_string(WITHCACHE_CLIENT_OPTIONS_VERSION) +
                " (initialise options with WITHCACHE_CLIENT_OPTIONS_INIT; a withcache 0.4 struct with a "
                "timeout set needs rebuilding against this header)");
      }
      if (options->timeout_ms != 0) {
        client->options.timeout = std::chrono::milliseconds(options->timeout_ms);
      }
      for (const char* const* h = options->headers; h != nullptr && *h != nullptr; ++h) {
        const std::string line = *h;
        const std::size_t colon = line.find(':');
        if (colon == std::string::npos || colon == 0) {
          return fail(WITHCACHE_EINVAL, "withcache_client_new: headers must look like 'Name: Value'");
        }
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(" \t"));
        client->options.headers.emplace_back(line.substr(0, colon), value);
      }
    }
    *out = client.release();
    return ok();
  });
}

void withcache_client_free(withcache_client* client) {
  delete client;
}

int withcache_client_is_cached(int* out_cached, withcache_client* client, const char* origin) {
  return guarded([&] {
    if (out_cached == nullptr || client == nullptr || origin == nullptr) {
      return fail(WITHCACHE_EINVAL,
                  "withcache_client_is_cached: out_cached, client and origin must not be NULL");
    }
    *out_cached = withcache::client::is_cached(client->server, origin, client->options) ? 1 : 0;
    return ok();
  });
}

int withcache_client_serve_url(char** out, withcache_client* client, const char* origin) {
  return guarded([&] {
    if (out == nullptr || client == nullptr || origin == nullptr) {
      return fail(WITHCACHE_EINVAL, "withcache_client_serve_url: out, client and origin must not be NULL");
    }
    *out = nullptr;
    const auto url = withcache::client::serve_url(client->server, origin, client->options);
    if (!url) {
      return fail(WITHCACHE_ENOTFOUND, "not cached: download from the origin");
    }
    return give(out, *url);
  });
}

int withcache_client_is_healthy(int* out_healthy, withcache_client* client) {
  return guarded([&] {
    if (out_healthy == nullptr || client == nullptr) {
      return fail(WITHCACHE_EINVAL, "withcache_client_is_healthy: out_healthy and client must not be NULL");
    }
    *out_healthy = withcache::client::is_healthy(client->server, client->options) ? 1 : 0;
    return ok();
  });
}

} // extern "C"
