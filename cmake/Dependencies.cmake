# Every third-party dependency is found here, once, and exposed as one target:
#   OpenSSL::Crypto OpenSSL::SSL   SQLiteCpp   PkgConfig::CPP_HTTPLIB (tests only)
#   spdlog::spdlog   fmt::fmt   cxxopts::cxxopts   nlohmann_json::nlohmann_json   Boost::headers
#   Catch2::Catch2WithMain
# All of them are Debian 12 packages (see scripts/setup); nothing is downloaded.

find_package(Threads REQUIRED)
find_package(OpenSSL 3 REQUIRED COMPONENTS Crypto SSL)
find_package(PkgConfig REQUIRED)

# cpp-httplib: the test origins and test clients only (libwithcache's outbound HTTP is its own,
# origin/http_client.cpp, so that every response head is bounded). It ships no CMake package on Debian.
# Its pkg-config file carries the CPPHTTPLIB_OPENSSL_SUPPORT / ZLIB / BROTLI defines the shared library
# was built with; compiling without them changes class layouts and crashes.
if(WITHCACHE_BUILD_TESTS)
  pkg_check_modules(CPP_HTTPLIB REQUIRED IMPORTED_TARGET GLOBAL cpp-httplib>=0.11)
  set_property(TARGET PkgConfig::CPP_HTTPLIB APPEND PROPERTY
    INTERFACE_LINK_LIBRARIES OpenSSL::SSL OpenSSL::Crypto Threads::Threads)
endif()

# The shim links OpenSSL statically when libssl-dev ships the archives, so its
# start-up does not pay for loading libssl/libcrypto (about 4 ms measured here).
find_library(WITHCACHE_LIBSSL_STATIC NAMES libssl.a)
find_library(WITHCACHE_LIBCRYPTO_STATIC NAMES libcrypto.a)

find_package(SQLiteCpp 3 REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(cxxopts REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
# Boost.Asio and Boost.Beast (header-only) for the server's event-driven core.
find_package(Boost 1.74 REQUIRED)

if(WITHCACHE_BUILD_TESTS)
  find_package(Catch2 2 REQUIRED)
  include(Catch)
endif()
