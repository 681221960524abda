// Uses only the client component: the probe, get, the operator Api and the helpers they expose.
#include <iostream>

#include "withcache/client.hpp"
#include "withcache/util/size.hpp"
#include "withcache/version.hpp"

int main() {
  const withcache::client::Api api("127.0.0.1:1", "", std::chrono::milliseconds(200));
  const auto stats = api.stats(); // nothing listens on port 1: unreachable, never a throw
  std::cout << withcache::k_version << ' ' << withcache::client::blob_url("cache:3000", "https://h/x.tgz") << ' '
            << withcache::client::file_name_for("https://h/a%20b.tgz") << ' '
            << withcache::util::format_size(*withcache::util::parse_size("1.5T")) << ' '
            << (stats ? "reached" : "unreachable") << '\n';
  return 0;
}
