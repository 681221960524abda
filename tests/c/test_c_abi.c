/* Exercises every function of withcache.h from C against a real server
 * (tests/run_with_server.py provides it), including NULL and invalid arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "withcache.h"

static int passed = 0;
static int failed = 0;

#define CHECK(cond)                                                                                          \
  do {                                                                                                       \
    if (cond) {                                                                                              \
      ++passed;                                                                                              \
    } else {                                                                                                 \
      ++failed;                                                                                              \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);                               \
    }                                                                                                        \
  } while (0)

static const char* env(const char* name) {
  const char* value = getenv(name);
  if (value == NULL) {
    fprintf(stderr, "%s is not set (run under tests/run_with_server.py)\n", name);
    exit(2);
  }
  return value;
}

int main(void) {
  const char* server = env("WITHCACHE_TEST_SERVER");
  const char* cached = env("WITHCACHE_TEST_CACHED");
  const char* cold = env("WITHCACHE_TEST_COLD");
  const char* closed = env("WITHCACHE_TEST_CLOSED");
  char* text = NULL;
  withcache_client* client = NULL;
  withcache_client* nowhere = NULL;
  int flag = -1;
  const char* headers[] = {"X-Provisioner: c-test", NULL};
  const char* bad_headers[] = {"no colon here", NULL};
  withcache_client_options options;

  CHECK(strlen(withcache_version()) > 0);
  CHECK(strcmp(withcache_strerror(WITHCACHE_OK), "success") == 0);
  CHECK(strcmp(withcache_strerror(WITHCACHE_ENOTFOUND), "not cached") == 0);
  CHECK(strcmp(withcache_strerror(12345), "unknown error code") == 0);
  withcache_string_free(NULL);
  withcache_client_free(NULL);

  CHECK(withcache_normalize_key(&text, "HTTPS://Example.COM:443/a/./b?token=1", 0) == WITHCACHE_OK);
  CHECK(text != NULL && strcmp(text, "https://example.com/a/b") == 0);
  withcache_string_free(text);
  CHECK(withcache_normalize_key(&text, "https://h/a?x=1", 1) == WITHCACHE_OK);
  CHECK(text != NULL && strcmp(text, "https://h/a?x=1") == 0);
  withcache_string_free(text);
  CHECK(withcache_normalize_key(&text, "not a url", 0) == WITHCACHE_EURL);
  CHECK(text == NULL);
  CHECK(strlen(withcache_last_error()) > 0);
  CHECK(withcache_normalize_key(NULL, "https://h/", 0) == WITHCACHE_EINVAL);
  CHECK(withcache_normalize_key(&text, NULL, 0) == WITHCACHE_EINVAL);

  CHECK(withcache_blob_url(&text, "cache:3000", "https://h/x.tgz") == WITHCACHE_OK);
  CHECK(text != NULL && strcmp(text, "http://cache:3000/b/aHR0cHM6Ly9oL3gudGd6/x.tgz") == 0);
  withcache_string_free(text);
  /* The name is the origin's own, byte for byte, and its query follows (SPEC section 2). */
  CHECK(withcache_blob_url(&text, "cache:3000", "https://h/a+b(1),v=2.tar?sig=abc") == WITHCACHE_OK);
  CHECK(text != NULL &&
        strcmp(text,
               "http://cache:3000/b/aHR0cHM6Ly9oL2ErYigxKSx2PTIudGFyP3NpZz1hYmM/a+b(1),v=2.tar?sig=abc") ==
            0);
  withcache_string_free(text);
  CHECK(withcache_last_error()[0] == '\0');
  CHECK(withcache_blob_url(NULL, "s", "o") == WITHCACHE_EINVAL);
  CHECK(withcache_blob_url(&text, NULL, "o") == WITHCACHE_EINVAL);
  CHECK(withcache_blob_url(&text, "s", NULL) == WITHCACHE_EINVAL);

  CHECK(withcache_client_options_init(NULL, WITHCACHE_CLIENT_OPTIONS_VERSION) == WITHCACHE_EINVAL);
  CHECK(withcache_client_options_init(&options, 99) == WITHCACHE_EVERSION);
  CHECK(strstr(withcache_last_error(), "99") != NULL);
  CHECK(withcache_client_options_init(&options, WITHCACHE_CLIENT_OPTIONS_VERSION) == WITHCACHE_OK);
  CHECK(options.version == WITHCACHE_CLIENT_OPTIONS_VERSION && options.timeout_ms == 0 &&
        options.headers == NULL);
  {
    const withcache_client_options by_macro = WITHCACHE_CLIENT_OPTIONS_INIT;
    CHECK(by_macro.version == WITHCACHE_CLIENT_OPTIONS_VERSION && by_macro.timeout_ms == 0);
  }
  CHECK(strcmp(withcache_strerror(WITHCACHE_EVERSION), "unknown options version") == 0);

  /* A caller built against withcache 0.4's header: its struct had no version field. Zero-initialised it
   * keeps working (its headers are read); with a timeout it gets a clear error, never a wrong timeout. */
  {
    struct legacy_options {
      unsigned int timeout_ms;
      const char* const* headers;
    } legacy;
    memset(&legacy, 0, sizeof legacy);
    legacy.headers = bad_headers; /* read: so the version-0 struct is understood */
    CHECK(withcache_client_new(&client, server, (const withcache_client_options*)(const void*)&legacy) ==
          WITHCACHE_EINVAL);
    legacy.headers = headers;
    CHECK(withcache_client_new(&client, server, (const withcache_client_options*)(const void*)&legacy) ==
          WITHCACHE_OK);
    CHECK(client != NULL);
    withcache_client_free(client);
    client = NULL;
    legacy.timeout_ms = 5000;
    CHECK(withcache_client_new(&client, server, (const withcache_client_options*)(const void*)&legacy) ==
          WITHCACHE_EVERSION);
    CHECK(client == NULL);
    CHECK(strstr(withcache_last_error(), "WITHCACHE_CLIENT_OPTIONS_INIT") != NULL);
  }

  CHECK(withcache_client_new(NULL, server, NULL) == WITHCACHE_EINVAL);
  CHECK(withcache_client_new(&client, NULL, NULL) == WITHCACHE_EINVAL);
  CHECK(withcache_client_new(&client, "  ", NULL) == WITHCACHE_EINVAL);
  options.headers = bad_headers;
  CHECK(withcache_client_new(&client, server, &options) == WITHCACHE_EINVAL);
  CHECK(client == NULL);
  options.timeout_ms = 5000;
  options.headers = headers;
  CHECK(withcache_client_new(&client, server, &options) == WITHCACHE_OK);
  CHECK(client != NULL);

  CHECK(withcache_client_is_cached(&flag, client, cached) == WITHCACHE_OK);
  CHECK(flag == 1);
  CHECK(withcache_client_is_cached(&flag, client, cold) == WITHCACHE_OK);
  CHECK(flag == 0);
  CHECK(withcache_client_is_cached(NULL, client, cached) == WITHCACHE_EINVAL);
  CHECK(withcache_client_is_cached(&flag, NULL, cached) == WITHCACHE_EINVAL);
  CHECK(withcache_client_is_cached(&flag, client, NULL) == WITHCACHE_EINVAL);

  CHECK(withcache_client_serve_url(&text, client, cached) == WITHCACHE_OK);
  CHECK(text != NULL && strncmp(text, server, strlen(server)) == 0 && strstr(text, "/b/") != NULL);
  withcache_string_free(text);
  CHECK(withcache_client_serve_url(&text, client, cold) == WITHCACHE_ENOTFOUND);
  CHECK(text == NULL);
  CHECK(withcache_client_serve_url(NULL, client, cached) == WITHCACHE_EINVAL);

  CHECK(withcache_client_is_healthy(&flag, client) == WITHCACHE_OK);
  CHECK(flag == 1);
  CHECK(withcache_client_is_healthy(NULL, client) == WITHCACHE_EINVAL);
  CHECK(withcache_client_new(&nowhere, closed, NULL) == WITHCACHE_OK);
  CHECK(withcache_client_is_healthy(&flag, nowhere) == WITHCACHE_OK);
  CHECK(flag == 0);
  CHECK(withcache_client_is_cached(&flag, nowhere, cached) == WITHCACHE_OK);
  CHECK(flag == 0);

  withcache_client_free(nowhere);
  withcache_client_free(client);
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
