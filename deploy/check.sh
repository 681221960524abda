#!/bin/sh
# Checks the deploy/ artefacts that can be checked here: the systemd unit with
# systemd-analyze verify (when available) and the two .deb packages from cpack.
#   check.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
source=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if command -v systemd-analyze >/dev/null 2>&1; then
  sed "s|/usr/bin/withcache-server|$build/apps/server/withcache-server|" \
    "$source/deploy/withcache-server.service" > "$work/withcache-server.service"
  systemd-analyze verify --man=no "$work/withcache-server.service"
  echo "deploy: systemd unit verified"
else
  echo "deploy: systemd-analyze not found, unit not verified"
fi

sh -n "$source/deploy/withcache-shim.sh"
(cd "$build" && cpack -G DEB -B "$work/debs" >/dev/null)
server_deb=$(ls "$work"/debs/withcache-server_*.deb)
shim_deb=$(ls "$work"/debs/withcache-shim_*.deb)
dpkg-deb -c "$server_deb" | grep -q ' ./usr/bin/withcache-server$'
dpkg-deb -c "$server_deb" | grep -q ' ./usr/lib/systemd/system/withcache-server.service$'
depends=$(dpkg-deb -f "$server_deb" Depends)
echo "$depends" | grep -q libssl3
echo "$depends" | grep -q libsqlite3
# Outbound HTTP is libwithcache's own (origin/http_client.cpp): cpp-httplib is a test dependency only.
if echo "$depends" | grep -q libcpp-httplib; then echo "deploy: the server should not need libcpp-httplib" >&2; exit 1; fi
dpkg-deb -c "$shim_deb" | grep -q ' ./usr/bin/curlwithcache -> withcache-shim$'
dpkg-deb -c "$shim_deb" | grep -q ' ./usr/bin/wgetwithcache -> withcache-shim$'
dpkg-deb -c "$shim_deb" | grep -q ' ./usr/lib/withcache/bin/curl -> ../../../bin/withcache-shim$'
dpkg-deb -c "$shim_deb" | grep -q ' ./etc/profile.d/withcache.sh$'
echo "deploy: withcache-server and withcache-shim packages built and checked"
