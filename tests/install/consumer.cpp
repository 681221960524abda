// Uses the server-side library: the store's sizes and the client's URLs.
#include <iostream>

#include "withcache/client/probe.hpp"
#include "withcache/store.hpp"
#include "withcache/util/size.hpp"
#include "withcache/version.hpp"

int main() {
  std::cout << withcache::k_version << ' ' << withcache::client::blob_url("cache:3000", "https://h/x.tgz") << ' '
            << *withcache::util::parse_size("1.5T") << ' ' << sizeof(withcache::store::ListQuery) << '\n';
  return 0;
}
