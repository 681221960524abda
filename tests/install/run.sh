#!/bin/sh
# Installs the build tree into a temp prefix, then builds tiny consumers with
# find_package (CMake) and with pkg-config, and runs them:
#  - one that uses only the client component, with SQLiteCpp, spdlog, cpp-httplib (pkg-config),
#    nlohmann-json and Boost hidden from CMake, and checks the installed client headers include
#    no third-party header;
#  - one that uses the whole server-side library and the C ABI;
#  - a C program built with pkg-config.
#   run.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
source=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
test -x "$work/prefix/bin/withcache-server"
test "$(readlink "$work/prefix/bin/curlwithcache")" = withcache-shim
test "$(readlink "$work/prefix/bin/wgetwithcache")" = withcache-shim
# Internal headers are not installed.
for internal in auth.hpp http.hpp json.hpp http/http.hpp auth/auth.hpp; do
  test ! -e "$work/prefix/include/withcache/$internal" || { echo "installed an internal header: $internal"; exit 1; }
done
# The client's headers include only the standard library and each other.
for header in client.hpp client/probe.hpp client/get.hpp client/api.hpp url.hpp digest.hpp expected.hpp \
              records.hpp util/strings.hpp util/time.hpp util/size.hpp util/encoding.hpp util/env.hpp; do
  if grep -E '^#include <(httplib|SQLiteCpp|spdlog|nlohmann|boost|openssl)' "$work/prefix/include/withcache/$header"; then
    echo "client header $header includes a third-party header"
    exit 1
  fi
done
# The installed withcache-client finds its library wherever the prefix is.
"$work/prefix/bin/withcache-client" --version >/dev/null

cmake -S "$source/tests/install" -B "$work/client" -DWITHCACHE_CONSUMER=client -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_DISABLE_FIND_PACKAGE_SQLiteCpp=ON -DCMAKE_DISABLE_FIND_PACKAGE_spdlog=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON -DCMAKE_DISABLE_FIND_PACKAGE_nlohmann_json=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_Boost=ON -DCMAKE_DISABLE_FIND_PACKAGE_fmt=ON >/dev/null
cmake --build "$work/client" >/dev/null
LD_LIBRARY_PATH="$work/prefix/lib" "$work/client/consumer_client"

cmake -S "$source/tests/install" -B "$work/consumer" -DWITHCACHE_CONSUMER=full -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
"$work/consumer/consumer_cxx"
LD_LIBRARY_PATH="$work/prefix/lib" "$work/consumer/consumer_c"

export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
# shellcheck disable=SC2046
cc -std=c99 -Wall -Werror -o "$work/consumer_pc" "$source/tests/install/consumer.c" $(pkg-config --cflags --libs withcache)
LD_LIBRARY_PATH="$work/prefix/lib" "$work/consumer_pc"
echo "install: client-only, find_package and pkg-config consumers built and ran"
