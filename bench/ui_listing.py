#!/usr/bin/env python3
"""Operator listings with 100 000 artifacts, beside serving the same page as a static file.

    bench/ui_listing.py [--build build/test] [--artifacts 100000]

Builds a data dir with N artifacts (1-byte blobs and their rows), starts
withcache-server on it and times the Cached page, a filtered page, a deep page
of the JSON API and the dashboard (median of 20 curl requests each). The
reference is python3 -m http.server sending the same HTML as a file: what is
left is the cost of querying and rendering. Everything on 127.0.0.1, every
process stopped by PID.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import free_port, stop_all, wait_status
from growth import bulk_load






def timed(url, runs=20):
    times = []
    for _ in range(runs):
        out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total} %{http_code}", url],
                             check=True, capture_output=True, text=True).stdout.split()
        if out[1] != "200":
            raise SystemExit(f"{url}: HTTP {out[1]}")
        times.append(float(out[0]) * 1000)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build/test")
    parser.add_argument("--artifacts", type=int, default=100_000)
    args = parser.parse_args()
    server_bin = os.path.join(args.build, "apps", "server", "withcache-server")
    work = tempfile.mkdtemp(prefix="withcache-ui-bench-")
    children = []
    try:
        data = os.path.join(work, "data")
        port = free_port()
        argv = [server_bin, "--host", "127.0.0.1", "--port", str(port), "--data-dir", data, "--log-level", "warn",
                "--scrub-rate", "0"]
        first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_status(f"http://127.0.0.1:{port}/healthz")
        stop_all([first])

        # Rows with the server's own schema, written as a bulk load does (bench/growth.py).
        bulk_load(data, args.artifacts)

        start = time.monotonic()
        children.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        base = f"http://127.0.0.1:{port}"
        wait_status(f"{base}/healthz")
        startup = time.monotonic() - start

        www = os.path.join(work, "www")
        os.mkdir(www)
        with urllib.request.urlopen(f"{base}/ui/artifacts") as r, open(os.path.join(www, "artifacts.html"), "wb") as f:
            f.write(r.read())
        ref_port = free_port()
        children.append(subprocess.Popen([sys.executable, "-m", "http.server", str(ref_port), "--bind", "127.0.0.1",
                                          "--directory", www], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_status(f"http://127.0.0.1:{ref_port}/artifacts.html")

        reference = timed(f"http://127.0.0.1:{ref_port}/artifacts.html")
        cases = [("Cached page (first 50 of all)", f"{base}/ui/artifacts"),
                 ("Cached page, filtered (q=pkg-9999)", f"{base}/ui/artifacts?q=pkg-9999"),
                 (f"JSON API, deep page (offset {args.artifacts - 50})",
                  f"{base}/api/v1/artifacts?offset={args.artifacts - 50}&limit=50"),
                 ("Dashboard (running totals)", f"{base}/")]
        print(f"| {args.artifacts} artifacts (curl, median of 20) | ms | vs static file |")
        print("|---|---|---|")
        print(f"| reference: the same page as a static file (python3 -m http.server) | {reference:.1f} | 1.00x |")
        for name, url in cases:
            ms = timed(url)
            print(f"| {name} | {ms:.1f} | {ms / reference:.2f}x |")
        print(f"\nServer start-up with {args.artifacts} artifacts: {startup:.1f} s")
    finally:
        stop_all(children)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
