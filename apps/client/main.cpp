// withcache-client: the client library's command line (withcache::client::cli_main).
#include "withcache/client/cli.hpp"

int main(int argc, char** argv) {
  return withcache::client::cli_main(argc, argv);
}
