#!/usr/bin/env python3
"""Peak memory and throughput of a fill, side by side with curl, in one run.

    bench/fill_rss.py [--size-mib 1024] [--build build/test]

Serves one generated file from 127.0.0.1 (python3 -m http.server, a child
process stopped by PID), then downloads it with `curl -o` and fills it with
withcache-bench-fill (the real DownloadPool into a temp store). Prints a
Markdown table of seconds, MiB/s and peak RSS with the ratio to curl.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchlib import free_port, stop_all, wait_status






def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(cmd):
    """Runs cmd; returns (seconds, peak RSS KiB, stdout).

    The peak is VmHWM sampled every 5 ms until exit: getrusage's ru_maxrss is
    useless here because Linux carries the parent's RSS across fork+exec."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, vm_hwm_kib(proc.pid))
        time.sleep(0.005)
    out = proc.stdout.read()
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with exit code {proc.returncode}")
    return seconds, peak, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--build", default="build/test")
    args = parser.parse_args()
    tool = os.path.join(args.build, "bench", "withcache-bench-fill")
    if not os.access(tool, os.X_OK):
        raise SystemExit(f"{tool} not built (cmake --build {args.build})")

    work = tempfile.mkdtemp(prefix="withcache-bench-")
    origin = None
    try:
        served = os.path.join(work, "www")
        os.mkdir(served)
        path = os.path.join(served, "artifact.bin")
        digest = hashlib.sha256()
        block = os.urandom(1 << 20)
        with open(path, "wb") as f:
            for _ in range(args.size_mib):
                f.write(block)
                digest.update(block)
        port = free_port()
        origin = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", served],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_status(f"http://127.0.0.1:{port}/")
        url = f"http://127.0.0.1:{port}/artifact.bin"

        curl_s, curl_rss, _ = run_measured(["curl", "-sS", "-o", os.path.join(work, "curl.out"), url])
        os.remove(os.path.join(work, "curl.out"))
        _, sampled_rss, out = run_measured([tool, url, os.path.join(work, "data")])
        fill = json.loads(out)
        fill["max_rss_kib"] = max(fill["max_rss_kib"], sampled_rss)
        blob = os.path.join(work, "data", "blobs")
        stored = [os.path.join(blob, n) for n in os.listdir(blob)]
        assert len(stored) == 1 and os.path.getsize(stored[0]) == args.size_mib << 20
        with open(stored[0], "rb") as f:
            assert hashlib.file_digest(f, "sha256").hexdigest() == digest.hexdigest()

        mib = args.size_mib
        print(f"| {mib} MiB fill from python3 http.server | seconds | MiB/s | peak RSS | RSS vs curl |")
        print("|---|---|---|---|---|")
        print(f"| curl -o (reference) | {curl_s:.2f} | {mib / curl_s:.0f} | {curl_rss / 1024:.1f} MiB | 1.00 |")
        print(f"| withcache DownloadPool | {fill['seconds']:.2f} | {mib / fill['seconds']:.0f} | "
              f"{fill['max_rss_kib'] / 1024:.1f} MiB | {fill['max_rss_kib'] / curl_rss:.2f} |")
    finally:
        stop_all([origin] if origin is not None else [])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
