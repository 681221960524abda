#pragma once

/**
 * @file
 * withcache::util — environment lookups that tests can replace.
 */

#include <functional>

namespace withcache::util {

/** Reads an environment variable; nullptr when unset. */
using Getenv = std::function<const char*(const char*)>;

/** The process environment (std::getenv). */
Getenv process_env();

} // namespace withcache::util
