#include <iostream>

#include "withcache/client.hpp"
#include "withcache/store.hpp"
#include "withcache/version.hpp"

int main() {
  std::cout << withcache::k_version << ' ' << withcache::client::blob_url("cache:3000", "https://h/x.tgz")
            << ' ' << *withcache::store::parse_size("1.5T") << '\n';
  return 0;
}
