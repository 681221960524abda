// An installer that downloads a list of artifacts, each from the cache when it
// holds it (serve_url) and from its origin otherwise:
//   example-installer DEST_DIR ORIGIN...      (server from $WITHCACHE_SERVER)
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "withcache/client.hpp"
#include "withcache/client/get.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: example-installer DEST_DIR ORIGIN...\n";
    return 2;
  }
  const char* server = std::getenv("WITHCACHE_SERVER");
  const std::filesystem::path dest = argv[1];
  int failures = 0;
  for (int i = 2; i < argc; ++i) {
    const std::string origin = argv[i];
    // The one call an installer needs: the cache URL when warm, else nothing.
    const std::string from =
        server != nullptr ? withcache::client::serve_url(server, origin).value_or(origin) : origin;
    const auto file = dest / withcache::client::file_name_for(origin);
    const auto result = withcache::client::get(from, file, {});
    if (!result) {
      std::cerr << "example-installer: " << result.error().message << '\n';
      ++failures;
      continue;
    }
    std::cout << (from == origin ? "origin " : "cache  ") << result->sha256 << "  " << file.string() << '\n';
  }
  return failures == 0 ? 0 : 1;
}
