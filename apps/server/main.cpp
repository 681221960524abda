// withcache-server: the cache-host. Options are parsed here; the service
// itself lives in libwithcache (withcache::server, a later milestone).
#include <iostream>

#include <cxxopts.hpp>

#include "withcache/version.hpp"

int main(int argc, char** argv) {
  cxxopts::Options options("withcache-server",
                           "The withcache cache-host: serves cached artifacts at /b/<token>/<name>.\n"
                           "This build only prints this help: the server lands with its own milestone.");
  options.add_options()("host", "Address to listen on",
                        cxxopts::value<std::string>()->default_value("0.0.0.0"))(
      "port", "Port to listen on",
      cxxopts::value<int>()->default_value("3000"))("data-dir", "Where blobs/, tmp/ and cache.db live",
                                                    cxxopts::value<std::string>()->default_value("./data"))(
      "version", "Print the version and exit")("h,help", "Print this help and exit");
  try {
    const auto result = options.parse(argc, argv);
    if (result.count("version") != 0) {
      std::cout << withcache::k_product << '\n';
      return 0;
    }
  } catch (const cxxopts::exceptions::exception& e) {
    std::cerr << "withcache-server: " << e.what() << " (see --help)\n";
    return 2;
  }
  std::cout << options.help();
  return 0;
}
