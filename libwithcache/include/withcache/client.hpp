#pragma once

/**
 * @file
 * withcache::client (SPEC §5): everything a client of a cache-host calls —
 * the probe (is_cached, serve_url, …), `get`, and the operator `Api`. Link
 * `withcache::client` (find_package(withcache COMPONENTS client)); it needs
 * no SQLite, spdlog or cpp-httplib headers. The probe alone is also in the
 * smaller static `withcache::probe`.
 */

#include "withcache/client/api.hpp"
#include "withcache/client/get.hpp"
#include "withcache/client/probe.hpp"
