#!/usr/bin/env python3
"""A herd of first downloads: how much origin egress N clients of a cold artifact cost, beside nginx.

    bench/herd.py [--build build/test] [--sizes-mib 1024,4096] [--ns 1,5,20,50] [--rate 50m] [--spread 10]

The origin is nginx with limit_rate (default 50 MB/s) serving the files. For each size and each N, N
shim-like clients start together (and again spread evenly over --spread seconds): each HEADs the cache
URL with a 3 s deadline and downloads from the cache on a 200, else from the origin, hashing what it gets.
The peer is nginx proxy_cache with proxy_cache_lock (lock timeout long enough to cover the download, so
waiting clients get the cached file rather than going to the origin after 5 s). Every run uses a fresh URL
(a query the origin ignores), so each starts cold for both caches. Reported per case: origin GETs, origin
bytes / size, each client's time / one lone download from the origin (max and median), and whether every
SHA-256 matches. Loopback only; every process is stopped by PID. Prints Markdown for docs/benchmarks.md.
"""
import argparse
import base64
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from benchlib import free_port, stop_all, wait_status


def head_status(url, timeout=3.0):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def fetch_sha(url):
    """Streams url through curl and hashes it; (sha256 hex, bytes)."""
    curl = subprocess.Popen(["curl", "-sS", "-f", url], stdout=subprocess.PIPE)
    sha = hashlib.sha256()
    size = 0
    while True:
        chunk = curl.stdout.read(1 << 20)
        if not chunk:
            break
        sha.update(chunk)
        size += len(chunk)
    curl.wait()
    return (sha.hexdigest() if curl.returncode == 0 else "curl exit %d" % curl.returncode), size


def origin_log(path, name):
    """(GETs, body bytes) the origin's access log records for files named `name`."""
    gets = sent = 0
    with open(path) as f:
        for line in f:
            if f"/{name}?" in line or f"/{name} " in line:
                gets += 1
                sent += int(line.rsplit(" ", 1)[1])
    return gets, sent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build/test")
    parser.add_argument("--sizes-mib", default="1024,4096")
    parser.add_argument("--ns", default="1,5,20,50")
    parser.add_argument("--rate", default="50m", help="nginx limit_rate of the origin, per connection")
    parser.add_argument("--spread", type=float, default=10.0)
    args = parser.parse_args()
    server_bin = os.path.join(args.build, "apps", "server", "withcache-server")
    sizes = [int(s) for s in args.sizes_mib.split(",")]
    ns = [int(n) for n in args.ns.split(",")]

    work = tempfile.mkdtemp(prefix="withcache-herd-")
    os.chmod(work, 0o755)
    children = []
    try:
        www = os.path.join(work, "www")
        os.mkdir(www)
        expected = {}
        for mib in sizes:
            sha = hashlib.sha256()
            with open(os.path.join(www, f"{mib}.bin"), "wb") as f:
                block = os.urandom(1 << 20)
                for i in range(mib):
                    chunk = block[:-8] + i.to_bytes(8, "little")  # not one block repeated
                    f.write(chunk)
                    sha.update(chunk)
            expected[mib] = sha.hexdigest()

        origin_port, proxy_port, wc_port = free_port(), free_port(), free_port()
        os.makedirs(os.path.join(work, "proxy-cache"))
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 2; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 4096; }}
http {{ sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path {work}/nb; proxy_temp_path {work}/np; fastcgi_temp_path {work}/nf;
  uwsgi_temp_path {work}/nu; scgi_temp_path {work}/ns;
  log_format bytes '$request $body_bytes_sent';
  proxy_cache_path {work}/proxy-cache keys_zone=herd:10m max_size=100g inactive=1d use_temp_path=off;
  server {{ listen 127.0.0.1:{origin_port}; root {www}; access_log {work}/origin.log bytes;
           location / {{ limit_rate {args.rate}; }} }}
  server {{ listen 127.0.0.1:{proxy_port}; access_log off;
           location / {{ proxy_pass http://127.0.0.1:{origin_port}; proxy_cache herd; proxy_cache_valid 200 1d;
                        proxy_cache_lock on; proxy_cache_lock_timeout 1h; proxy_cache_lock_age 1h;
                        proxy_buffering on; }} }} }}
""")
        children.append(subprocess.Popen(["nginx", "-p", work, "-c", conf, "-g", "daemon off;"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_status(f"http://127.0.0.1:{origin_port}/{sizes[0]}.bin", method="HEAD")
        children.append(subprocess.Popen(
            [server_bin, "--host", "127.0.0.1", "--port", str(wc_port), "--data-dir", os.path.join(work, "data"),
             "--allow-private", "127.0.0.1", "--workers", "4", "--min-free", "0", "--log-level", "warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_status(f"http://127.0.0.1:{wc_port}/healthz")

        run = [0]

        def withcache_client(origin):
            token = base64.urlsafe_b64encode(origin.encode()).decode().rstrip("=")
            name = urllib.parse.urlsplit(origin).path.rsplit("/", 1)[-1]
            query = urllib.parse.urlsplit(origin).query
            cache = f"http://127.0.0.1:{wc_port}/b/{token}/{name}" + (f"?{query}" if query else "")
            return fetch_sha(cache if head_status(cache) == 200 else origin)

        def nginx_client(origin):
            # The proxy is the cache: a GET through it (proxy_cache_lock makes later ones wait for the first).
            return fetch_sha(origin.replace(f":{origin_port}/", f":{proxy_port}/"))

        def herd(client, mib, n, spread):
            run[0] += 1
            name = f"{mib}.bin"
            origin = f"http://127.0.0.1:{origin_port}/{name}?run={run[0]}"
            before = origin_log(os.path.join(work, "origin.log"), name)
            times, shas = [None] * n, [None] * n

            def one(i):
                time.sleep(spread * i / max(1, n - 1) if n > 1 else 0)
                start = time.monotonic()
                shas[i], _ = client(origin)
                times[i] = time.monotonic() - start

            threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(1)  # nginx writes its access-log line when a response ends; let the last land
            after = origin_log(os.path.join(work, "origin.log"), name)
            return {"gets": after[0] - before[0], "bytes": after[1] - before[1], "times": times,
                    "ok": all(s == expected[mib] for s in shas)}

        print(f"\nOrigin: nginx, limit_rate {args.rate} per connection. Clients: HEAD the cache URL (3 s), download "
              "from the cache on 200, else from the origin.\n")
        print("| size | N | start | cache | origin GETs | origin bytes ÷ size | client time ÷ lone (max) | "
              "(median) | all SHA-256 match |")
        print("|---|---|---|---|---|---|---|---|---|")
        for mib in sizes:
            lone = herd(lambda o: fetch_sha(o), mib, 1, 0)
            lone_time = lone["times"][0]
            for n in ns:
                for start, spread in (("together", 0.0), (f"over {args.spread:g} s", args.spread)):
                    if n == 1 and spread > 0:
                        continue
                    for label, client in (("withcache", withcache_client), ("nginx proxy_cache_lock", nginx_client)):
                        r = herd(client, mib, n, spread)
                        print(f"| {mib} MiB | {n} | {start} | {label} | {r['gets']} | "
                              f"{r['bytes'] / (mib << 20):.2f} | {max(r['times']) / lone_time:.2f} | "
                              f"{statistics.median(r['times']) / lone_time:.2f} | {'yes' if r['ok'] else 'NO'} |",
                              flush=True)
            print(f"| {mib} MiB | lone download from the origin: {lone_time:.1f} s |||||||| ")
    finally:
        stop_all(children)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
