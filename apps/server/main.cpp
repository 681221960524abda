// withcache-server: the command line of withcache::server (options_from_args, run_command_line).
#include <iostream>

#include "withcache/server.hpp"

int main(int argc, char** argv) {
  auto command = withcache::server::options_from_args(argc, argv);
  if (!command) {
    std::cerr << "withcache-server: " << command.error() << '\n';
    return 2;
  }
  return withcache::server::run_command_line(*command);
}
