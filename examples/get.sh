#!/bin/sh
# Download artifacts through withcache with withcache-client: from the cache
# when warm, else from the origin; the cache's SHA-256 is checked on the way.
#   WITHCACHE_SERVER=cache.lab:3000 examples/get.sh DEST_DIR URL...
set -eu
client=${WITHCACHE_CLIENT:-withcache-client}
dest=$1
shift
mkdir -p "$dest"
for url in "$@"; do
  name=$(basename "${url%%\?*}")
  "$client" get "$url" -o "$dest/$name"
done
