// Prints the cache URL and the cache key of each origin URL given:
//   example-blob-url http://cache:3000 https://example.com/cuda.run
// An installer uses the same calls to point its downloads at the cache.
#include <iostream>

#include "withcache/digest.hpp"
#include "withcache/url.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: example-blob-url SERVER ORIGIN...\n";
    return 2;
  }
  int status = 0;
  for (int i = 2; i < argc; ++i) {
    const auto key = withcache::url::normalize_key(argv[i]);
    if (!key) {
      std::cerr << "example-blob-url: " << key.error().message << '\n';
      status = 1;
      continue;
    }
    std::cout << withcache::url::blob_url(argv[1], argv[i]) << "\n  key " << *key << "\n  id  "
              << withcache::digest::sha256_hex(*key) << '\n';
  }
  return status;
}
