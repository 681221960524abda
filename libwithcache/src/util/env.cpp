#include "withcache/util/env.hpp"

#include <cstdlib>

namespace withcache::util {

Getenv process_env() {
  return [](const char* name) { return static_cast<const char*>(std::getenv(name)); };
}

} // namespace withcache::util
