# /etc/profile.d/withcache.sh — installed by the withcache-shim .deb. Inert until a server is
# configured: put WITHCACHE_SERVER=cache.lab:3000 in /etc/withcache/client.env (or export it in a
# user's shell), and curl/wget in login shells go through the cache.
if [ -r /etc/withcache/client.env ]; then
  . /etc/withcache/client.env
  export WITHCACHE_SERVER
fi
if [ -n "${WITHCACHE_SERVER:-}" ] && [ -d /usr/lib/withcache/bin ]; then
  case ":$PATH:" in
    *":/usr/lib/withcache/bin:"*) ;;
    *) PATH="/usr/lib/withcache/bin:$PATH" ;;
  esac
fi
