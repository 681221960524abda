#!/bin/sh
# Installs the build tree into a temp prefix, then builds tiny consumers with
# find_package (CMake) and with pkg-config, and runs them.
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

cmake -S "$source/tests/install" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
"$work/consumer/consumer_cxx"
LD_LIBRARY_PATH="$work/prefix/lib" "$work/consumer/consumer_c"

export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
# shellcheck disable=SC2046
cc -std=c99 -Wall -Werror -o "$work/consumer_pc" "$source/tests/install/consumer.c" $(pkg-config --cflags --libs withcache)
LD_LIBRARY_PATH="$work/prefix/lib" "$work/consumer_pc"
echo "install: find_package and pkg-config consumers built and ran"
