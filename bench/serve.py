#!/usr/bin/env python3
"""Serving speed of withcache-server beside nginx and python3 http.server, in one run.

    bench/serve.py [--build build/test] [--size-mib 1024] [--parallel-size-mib 256]

All traffic stays on 127.0.0.1. Every server started here is stopped by PID.
Needs curl, nginx and ab (Debian packages nginx-light, apache2-utils). Prints Markdown
tables for docs/benchmarks.md.
"""
import argparse
import base64
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from benchlib import free_port, stop_all, wait_status

TICK = os.sysconf("SC_CLK_TCK")






def pids_of(root):
    """The process and its children (nginx workers)."""
    found = [root]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == root:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def cpu_seconds(root):
    total = 0
    for pid in pids_of(root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / TICK


def peak_rss_mib(root):
    peak = 0
    for pid in pids_of(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
    return peak / 1024


def download(url, copies=1):
    procs = [subprocess.Popen(["curl", "-sS", "-f", "-o", "/dev/null", url]) for _ in range(copies)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"curl failed on {url}: {codes}")


def measure(name, pid, url, size_mib, copies, runs):
    times = []
    cpu_before = cpu_seconds(pid)
    for _ in range(runs):
        start = time.monotonic()
        download(url, copies)
        times.append(time.monotonic() - start)
    cpu = cpu_seconds(pid) - cpu_before
    seconds = statistics.median(times)
    gib = size_mib * copies * runs / 1024
    return {"name": name, "mib_s": size_mib * copies / seconds, "cpu_per_gib": cpu / gib,
            "rss": peak_rss_mib(pid)}


def head_load(url, seconds):
    """ab -i (HEAD) with keep-alive and 16 connections; wrk mishandles HEAD responses."""
    out = subprocess.run(["ab", "-i", "-k", "-c", "16", "-t", str(seconds), "-n", "10000000", url],
                         check=True, capture_output=True, text=True).stdout
    if not re.search(r"Failed requests:\s+0\b", out) or "Non-2xx" in out:
        raise SystemExit(f"ab saw failures against {url}")
    rps = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))
    p99 = float(re.search(r"\n\s+99%\s+(\d+)", out).group(1))
    return rps, p99


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build/test")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--parallel-size-mib", type=int, default=256)
    parser.add_argument("--parallel", type=int, default=64, help="concurrent downloads of the parallel case")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--head-seconds", type=int, default=5)
    args = parser.parse_args()
    server_bin = os.path.join(args.build, "apps", "server", "withcache-server")
    for tool in ("curl", "nginx", "ab"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"{tool} not found (apt-get install curl nginx-light apache2-utils)")

    work = tempfile.mkdtemp(prefix="withcache-serve-bench-")
    os.chmod(work, 0o755)  # nginx workers run as www-data when started by root
    children = []
    try:
        www = os.path.join(work, "www")
        os.mkdir(www)
        files = {"big.bin": args.size_mib, "par.bin": args.parallel_size_mib}
        block = os.urandom(1 << 20)
        for name, mib in files.items():
            with open(os.path.join(www, name), "wb") as f:
                for _ in range(mib):
                    f.write(block)

        def start(argv, **kw):
            p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
            children.append(p)
            return p

        py_port = free_port()
        python = start([sys.executable, "-m", "http.server", str(py_port), "--bind", "127.0.0.1", "--directory", www])
        wait_status(f"http://127.0.0.1:{py_port}/")

        ng_port = free_port()
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 2; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 1024; }}
http {{ sendfile on; tcp_nopush on; access_log off; keepalive_requests 100000;
  client_body_temp_path {work}/nb; proxy_temp_path {work}/np; fastcgi_temp_path {work}/nf;
  uwsgi_temp_path {work}/nu; scgi_temp_path {work}/ns;
  server {{ listen 127.0.0.1:{ng_port}; root {www}; }} }}
""")
        nginx = start(["nginx", "-p", work, "-c", conf, "-g", "daemon off;"])
        wait_status(f"http://127.0.0.1:{ng_port}/par.bin")

        wc_port = free_port()
        withcache = start([server_bin, "--host", "127.0.0.1", "--port", str(wc_port), "--data-dir",
                           os.path.join(work, "data"), "--allow-private", "127.0.0.1", "--min-free", "0", "--log-level", "warn"])
        wait_status(f"http://127.0.0.1:{wc_port}/healthz")

        def blob(name):
            origin = f"http://127.0.0.1:{py_port}/{name}"
            token = base64.urlsafe_b64encode(origin.encode()).decode().rstrip("=")
            return f"http://127.0.0.1:{wc_port}/b/{token}/{urllib.parse.quote(name)}"

        for name in files:  # fill the cache from the python origin, wait for the hit
            subprocess.run(["curl", "-s", "-o", "/dev/null", blob(name)])
            deadline = time.monotonic() + 300
            while subprocess.run(["curl", "-s", "-f", "-I", "-o", "/dev/null", blob(name)]).returncode != 0:
                if time.monotonic() > deadline:
                    raise SystemExit("fill did not complete")
                time.sleep(0.2)

        servers = [("withcache-server", withcache.pid, blob), ("nginx (sendfile on)", nginx.pid,
                   lambda n: f"http://127.0.0.1:{ng_port}/{n}"),
                   ("python3 -m http.server", python.pid, lambda n: f"http://127.0.0.1:{py_port}/{n}")]

        for copies, name, mib, label in ((1, "big.bin", args.size_mib, f"one {args.size_mib} MiB download"),
                                         (args.parallel, "par.bin", args.parallel_size_mib,
                                          f"{args.parallel} parallel {args.parallel_size_mib} MiB downloads")):
            rows = [measure(s, pid, url(name), mib, copies, args.runs) for s, pid, url in servers]
            ref = rows[1]
            print(f"\n| {label} (curl -o /dev/null, median of {args.runs}) | MiB/s | vs nginx | "
                  f"server CPU s/GiB | vs nginx | server peak RSS |")
            print("|---|---|---|---|---|---|")
            for r in rows:
                print(f"| {r['name']} | {r['mib_s']:.0f} | {r['mib_s'] / ref['mib_s']:.2f}x | "
                      f"{r['cpu_per_gib']:.2f} | {r['cpu_per_gib'] / max(ref['cpu_per_gib'], 1e-9):.2f}x | "
                      f"{r['rss']:.1f} MiB |")

        print(f"\n| HEAD of a cached blob (ab -i -k -c16 -t{args.head_seconds}) | requests/s | vs nginx | p99 ms |")
        print("|---|---|---|---|")
        head = {}
        for s, pid, url in servers[:2]:
            head[s] = head_load(url("par.bin"), args.head_seconds)
        for s, (rps, p99) in head.items():
            print(f"| {s} | {rps:.0f} | {rps / head['nginx (sendfile on)'][0]:.2f}x | {p99:.2f} |")
    finally:
        stop_all(children)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
