/* A provisioner in C: for each origin URL, print the URL to download it from
 * (the cache when it holds it, else the origin), using the C ABI.
 *   example-provisioner SERVER ORIGIN... */
#include <stdio.h>

#include "withcache.h"

int main(int argc, char** argv) {
  withcache_client* client = NULL;
  withcache_client_options options = WITHCACHE_CLIENT_OPTIONS_INIT;
  int i;
  int status = 0;
  if (argc < 3) {
    fprintf(stderr, "usage: example-provisioner SERVER ORIGIN...\n");
    return 2;
  }
  options.timeout_ms = 2000;
  if (withcache_client_new(&client, argv[1], &options) != WITHCACHE_OK) {
    fprintf(stderr, "example-provisioner: %s\n", withcache_last_error());
    return 2;
  }
  for (i = 2; i < argc; ++i) {
    char* url = NULL;
    const int rc = withcache_client_serve_url(&url, client, argv[i]);
    if (rc == WITHCACHE_OK) {
      printf("cache  %s\n", url);
      withcache_string_free(url);
    } else if (rc == WITHCACHE_ENOTFOUND) {
      printf("origin %s\n", argv[i]);
    } else {
      fprintf(stderr, "example-provisioner: %s: %s\n", withcache_strerror(rc), withcache_last_error());
      status = 1;
    }
  }
  withcache_client_free(client);
  return status;
}
