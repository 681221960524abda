// withcache-client: probe and download CLI for scripts and installers.
// The commands land in libwithcache (withcache::client) with their own milestone.
#include <iostream>

#include <cxxopts.hpp>

#include "withcache/version.hpp"

int main(int argc, char** argv) {
  cxxopts::Options options("withcache-client",
                           "Probes a withcache server and downloads through it.\n"
                           "This build only prints this help: the client lands with its own milestone.");
  options.add_options()("version", "Print the version and exit")("h,help", "Print this help and exit");
  try {
    if (options.parse(argc, argv).count("version") != 0) {
      std::cout << withcache::k_product << '\n';
      return 0;
    }
  } catch (const cxxopts::exceptions::exception& e) {
    std::cerr << "withcache-client: " << e.what() << " (see --help)\n";
    return 2;
  }
  std::cout << options.help();
  return 0;
}
