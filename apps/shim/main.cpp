// curlwithcache / wgetwithcache: the shim placed ahead of curl and wget on PATH.
// The decision logic lands in libwithcache (withcache::shim) with its own milestone.
#include <iostream>

#include <cxxopts.hpp>

#include "withcache/version.hpp"

int main(int argc, char** argv) {
  cxxopts::Options options("withcache-shim",
                           "Runs curl or wget, re-pointing the URL at a withcache server when it holds it.\n"
                           "This build only prints this help: the shim lands with its own milestone.");
  options.add_options()("version", "Print the version and exit")("h,help", "Print this help and exit");
  try {
    if (options.parse(argc, argv).count("version") != 0) {
      std::cout << withcache::k_product << '\n';
      return 0;
    }
  } catch (const cxxopts::exceptions::exception& e) {
    std::cerr << "withcache-shim: " << e.what() << " (see --help)\n";
    return 2;
  }
  std::cout << options.help();
  return 0;
}
