/* Compiled alone with -std=c99 -Wall -Wextra -pedantic -Werror: withcache.h is strict C. */
#include "withcache.h"

int withcache_header_is_c99(void);
int withcache_header_is_c99(void) {
  return WITHCACHE_OK;
}
