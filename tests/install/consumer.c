#include <stdio.h>

#include "withcache.h"

int main(void) {
  char* url = NULL;
  if (withcache_blob_url(&url, "cache:3000", "https://h/x.tgz") != WITHCACHE_OK) {
    return 1;
  }
  printf("%s %s\n", withcache_version(), url);
  withcache_string_free(url);
  return 0;
}
