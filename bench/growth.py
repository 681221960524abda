#!/usr/bin/env python3
"""Growth: the cache-host at 10k, 100k and 1M artifacts.

    bench/growth.py [--build build/test] [--sizes 10000,100000,1000000] [--baseline BUILD_DIR]

For each size: a data dir with the server's own schema (the server creates it,
then the rows are written with sqlite3 in one transaction, as a bulk load does:
triggers off, rows in, the trigram index rebuilt, the totals set, triggers
back) and a 1-byte blob per artifact (hard links, 60 000 to a file). Then
withcache-server starts on it and the script measures:

- start: from spawn until /healthz answers (median of 3 starts), RSS after
  the run (VmRSS) and its peak (VmHWM);
- HEAD: sequential keep-alive HEADs of random cached artifacts over a raw
  socket, p50 and p99;
- pages (curl, median of 20): the Cached page, a filtered one (selective),
  a broad filter, a 2-character filter, the JSON API's deep page by offset
  and by cursor, the dashboard page and its fragment;
- 8 tabs: the JSON API's first page while 8 dashboard tabs poll their
  fragment every second (as the UI does), against none, and the server's
  CPU with the tabs.

`--baseline BUILD_DIR` runs the same against another build's withcache-server
(e.g. the commit before, built from `git archive`), for the HEAD figures side
by side. Everything on 127.0.0.1, every process stopped by PID.
"""
import argparse
import base64
import hashlib
import http.client
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import free_port, stop_all, wait_status

LINKS_PER_FILE = 60_000  # ext4 allows 65 000 links to one inode
CONTENT_TYPE = "application/vnd.debian.binary-package"


def url_of(i):
    return f"https://repo.example.org/pool/main/p/pkg-{i}/pkg-{i}_1.0_amd64.deb"


def token(url):
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def server_argv(server_bin, data, port):
    argv = [server_bin, "--host", "127.0.0.1", "--port", str(port), "--data-dir", data, "--log-level", "warn"]
    help_text = subprocess.run([server_bin, "--help"], capture_output=True, text=True).stdout
    if "--scrub-rate" in help_text:
        argv += ["--scrub-rate", "0"]  # measured alone; a scrub pauses under load anyway
    return argv


def make_schema(server_bin, data):
    port = free_port()
    first = subprocess.Popen(server_argv(server_bin, data, port), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    wait_status(f"http://127.0.0.1:{port}/healthz")
    stop_all([first])


def bulk_load(data, n):
    """Rows with the server's schema, in one transaction; 1-byte blobs as hard links."""
    started = time.monotonic()
    db = sqlite3.connect(os.path.join(data, "cache.db"), isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    triggers = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                          "AND tbl_name = 'artifacts'").fetchall()
    sha = hashlib.sha256(b"x").hexdigest()
    now = int(time.time())

    def rows():
        for i in range(n):
            u = url_of(i)
            yield (hashlib.sha256(u.encode()).hexdigest(), u, u, 1, sha, CONTENT_TYPE, now - i, i % 7, 0)

    db.execute("BEGIN")
    for name, _ in triggers:
        db.execute(f"DROP TRIGGER {name}")
    db.executemany("INSERT INTO artifacts (key, url, raw_url, size, sha256, content_type, fetched_at, hits, misses) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows())
    if "artifacts_fts" in tables:
        db.execute("INSERT INTO artifacts_fts (artifacts_fts) VALUES ('rebuild')")
    if "totals" in tables:
        db.execute("UPDATE totals SET artifacts = (SELECT count(*) FROM artifacts), "
                   "stored_bytes = (SELECT COALESCE(sum(size), 0) FROM artifacts), "
                   "hits = (SELECT COALESCE(sum(hits), 0) FROM artifacts), "
                   "artifact_misses = (SELECT COALESCE(sum(misses), 0) FROM artifacts)")
    for _, sql in triggers:
        db.execute(sql)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    rows_s = time.monotonic() - started

    blobs = os.path.join(data, "blobs")
    source = None
    for i in range(n):
        if i % LINKS_PER_FILE == 0:
            source = os.path.join(data, f"one-byte-{i // LINKS_PER_FILE}")
            with open(source, "wb") as f:
                f.write(b"x")
        os.link(source, os.path.join(blobs, hashlib.sha256(url_of(i).encode()).hexdigest()))
    return rows_s, time.monotonic() - started - rows_s


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # MiB
    return 0.0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(server_bin, data, port):
    started = time.monotonic()
    proc = subprocess.Popen(server_argv(server_bin, data, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_status(f"http://127.0.0.1:{port}/healthz", deadline_s=300)
    return proc, time.monotonic() - started


def head_latencies(port, n, count):
    """Sequential keep-alive HEADs of random artifacts over one raw socket; seconds each."""
    rng = random.Random(7)
    paths = [f"/b/{token(url_of(rng.randrange(n)))}/x.deb" for _ in range(count)]
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for path in paths:
        request = f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        t = time.perf_counter()
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise SystemExit("HEAD: connection closed")
            head += chunk
        times.append(time.perf_counter() - t)
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"HEAD {path}: {head.splitlines()[0]!r}")
    sock.close()
    return times


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def timed(url, runs=20, headers=()):
    times = []
    for _ in range(runs):
        argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total} %{http_code}"]
        for h in headers:
            argv += ["-H", h]
        out = subprocess.run(argv + [url], check=True, capture_output=True, text=True).stdout.split()
        if out[1] != "200":
            raise SystemExit(f"{url}: HTTP {out[1]}")
        times.append(float(out[0]) * 1000)
    return statistics.median(times)


def deep_cursor(data, n):
    """The cursor of the page 50 rows before the end (what `next` links lead to), from cache.db."""
    db = sqlite3.connect(f"file:{os.path.join(data, 'cache.db')}?mode=ro", uri=True)
    row = db.execute("SELECT fetched_at, id FROM artifacts ORDER BY fetched_at DESC, id DESC LIMIT 1 OFFSET ?",
                     (n - 51,)).fetchone()
    db.close()
    return f"{row[0]}.{row[1]}"


def poll_tabs(port, stop, tabs):
    """Each tab: one keep-alive connection asking for the dashboard fragment every second, as HTMX does."""
    def tab():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not stop.is_set():
            conn.request("GET", "/admin/dash", headers={"HX-Request": "true"})
            conn.getresponse().read()
            stop.wait(1.0)
        conn.close()
    threads = [threading.Thread(target=tab, daemon=True) for _ in range(tabs)]
    for t in threads:
        t.start()
    return threads


def measure(server_bin, n, work, baseline):
    data = os.path.join(work, f"data-{n}")
    make_schema(server_bin, data)
    rows_s, blobs_s = bulk_load(data, n)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    result = {"n": n, "rows_s": rows_s, "blobs_s": blobs_s}
    starts = []
    proc = None
    for _ in range(3):
        if proc:
            stop_all([proc])
        proc, seconds = start_server(server_bin, data, port)
        starts.append(seconds)
    try:
        result["start_s"] = statistics.median(starts)
        result["rss_start"] = proc_status(proc.pid, "VmRSS")
        head = head_latencies(port, n, 20_000)
        result["head_p50_us"] = percentile(head, 0.5) * 1e6
        result["head_p99_us"] = percentile(head, 0.99) * 1e6
        if not baseline:
            result["first_ms"] = timed(f"{base}/ui/artifacts")
            result["filtered_ms"] = timed(f"{base}/ui/artifacts?q=pkg-9999")
            result["broad_ms"] = timed(f"{base}/ui/artifacts?q=amd64")
            result["short_ms"] = timed(f"{base}/ui/artifacts?q=zq")
            result["deep_offset_ms"] = timed(f"{base}/api/v1/artifacts?offset={n - 50}&limit=50")
            result["deep_cursor_ms"] = timed(f"{base}/api/v1/artifacts?after={deep_cursor(data, n)}&limit=50")
            result["dashboard_ms"] = timed(f"{base}/")
            result["fragment_ms"] = timed(f"{base}/admin/dash", headers=["HX-Request: true"])
            api = f"{base}/api/v1/artifacts?limit=50"
            result["api_alone_ms"] = timed(api, runs=30)
            stop = threading.Event()
            threads = poll_tabs(port, stop, 8)
            time.sleep(2)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            result["api_tabs_ms"] = timed(api, runs=30)
            time.sleep(max(0.0, 10 - (time.monotonic() - t0)))
            result["tabs_cores"] = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
            stop.set()
            for t in threads:
                t.join()
        result["rss_end"] = proc_status(proc.pid, "VmRSS")
        result["rss_peak"] = proc_status(proc.pid, "VmHWM")
    finally:
        stop_all([proc])
        shutil.rmtree(data, ignore_errors=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build/test")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--baseline", help="another build dir whose withcache-server to measure beside")
    parser.add_argument("--work", help="where to build the data dirs (default: a temp dir)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    server_bin = os.path.join(args.build, "apps", "server", "withcache-server")
    work = tempfile.mkdtemp(prefix="withcache-growth-", dir=args.work)
    try:
        results = [measure(server_bin, n, work, False) for n in sizes]
        baseline = []
        if args.baseline:
            other = os.path.join(args.baseline, "apps", "server", "withcache-server")
            baseline = [measure(other, n, work, True) for n in sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def row(label, key, fmt, source=results):
        print(f"| {label} | " + " | ".join(fmt.format(r[key]) for r in source) + " |")

    print("| | " + " | ".join(f"{r['n']:,}" for r in results) + " |")
    print("|---|" + "---|" * len(results))
    row("start (median of 3)", "start_s", "{:.2f} s")
    row("RSS after start", "rss_start", "{:.0f} MiB")
    row("RSS at the end / peak", "rss_end", "{:.0f} MiB")
    print("| RSS peak | " + " | ".join(f"{r['rss_peak']:.0f} MiB" for r in results) + " |")
    row("HEAD p50 (keep-alive, random artifacts)", "head_p50_us", "{:.0f} µs")
    row("HEAD p99", "head_p99_us", "{:.0f} µs")
    if baseline:
        row("baseline: start", "start_s", "{:.2f} s", baseline)
        row("baseline: RSS", "rss_end", "{:.0f} MiB", baseline)
        row("baseline: HEAD p50", "head_p50_us", "{:.0f} µs", baseline)
        row("baseline: HEAD p99", "head_p99_us", "{:.0f} µs", baseline)
    row("Cached page, first 50", "first_ms", "{:.1f} ms")
    row("filtered (`q=pkg-9999`)", "filtered_ms", "{:.1f} ms")
    row("broad filter (`q=amd64`, every row)", "broad_ms", "{:.1f} ms")
    row("2-character filter matching nothing (`q=zq`: 10 000 rows scanned)", "short_ms", "{:.1f} ms")
    row("API deep page by offset (last 50)", "deep_offset_ms", "{:.1f} ms")
    row("API deep page by cursor (last 50)", "deep_cursor_ms", "{:.1f} ms")
    row("dashboard page", "dashboard_ms", "{:.1f} ms")
    row("dashboard fragment (what a tab polls)", "fragment_ms", "{:.1f} ms")
    row("API first page, no tabs", "api_alone_ms", "{:.1f} ms")
    row("API first page, 8 tabs polling", "api_tabs_ms", "{:.1f} ms")
    print("| 8 tabs: slowdown | " + " | ".join(f"{r['api_tabs_ms'] / r['api_alone_ms']:.2f}x" for r in results) + " |")
    row("8 tabs: server CPU", "tabs_cores", "{:.3f} cores")
    print("\n(bulk load: " + ", ".join(f"{r['n']:,} rows {r['rows_s']:.1f} s + blobs {r['blobs_s']:.1f} s"
                                        for r in results) + ")")


if __name__ == "__main__":
    main()
