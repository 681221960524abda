#!/usr/bin/env python3
"""Runs a command next to a real withcache-server and origin on 127.0.0.1.

    run_with_server.py --server-bin PATH -- COMMAND [ARGS...]

Starts python3 -m http.server (the origin) and withcache-server (allowing
127.0.0.1 by address, not `localhost` by name), fills one artifact, then runs COMMAND with:
  WITHCACHE_TEST_SERVER   the cache's base URL
  WITHCACHE_TEST_CACHED   an origin URL the cache holds
  WITHCACHE_TEST_COLD     an origin URL it does not (its host is not allowed, so it stays cold)
  WITHCACHE_TEST_CLOSED   a base URL on which nothing listens
Exits with COMMAND's status. Both servers are stopped by PID; every wait is bounded.
"""
import argparse
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
import procs  # noqa: E402


def status(url, method="GET"):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def wait_for(check, what):
    if not procs.eventually(check):
        raise SystemExit(f"run_with_server: {what} did not happen in time")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server-bin", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise SystemExit("run_with_server: no command")
    work = tempfile.mkdtemp(prefix="withcache-run-")
    children = []
    closed = procs.ClosedPort()
    try:
        www = os.path.join(work, "www")
        os.makedirs(www)
        with open(os.path.join(www, "driver.run"), "wb") as f:
            f.write(b"driver bytes " * 1000)
        origin, origin_port = procs.start_origin(www, os.path.join(work, "origin.log"))
        children.append(origin)
        server, port = procs.start_server(args.server_bin, os.path.join(work, "data"), os.path.join(work, "server.log"),
                                          ["--allow-private", "127.0.0.1", "--allow-origin", "127.0.0.1",
                                           "--miss-wait", "0", "--min-free", "0"])
        children.append(server)
        base = f"http://127.0.0.1:{port}"
        cached = f"http://127.0.0.1:{origin_port}/driver.run"
        wait_for(lambda: status(cached) == 200, "the origin start")
        wait_for(lambda: status(f"{base}/healthz") == 200, "the server start")
        token = base64.urlsafe_b64encode(cached.encode()).decode().rstrip("=")
        status(f"{base}/b/{token}/driver.run", "HEAD")  # the miss queues the fill
        wait_for(lambda: status(f"{base}/b/{token}/driver.run", "HEAD") == 200, "the fill")
        env = dict(os.environ, WITHCACHE_TEST_SERVER=base, WITHCACHE_TEST_CACHED=cached,
                   WITHCACHE_TEST_COLD=f"http://localhost:{origin_port}/driver.run",
                   WITHCACHE_TEST_CLOSED=f"http://127.0.0.1:{closed.port}")
        return subprocess.run(command, env=env, timeout=600).returncode
    finally:
        procs.stop(children)
        closed.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
