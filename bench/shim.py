#!/usr/bin/env python3
"""What the shim adds to a curl call, with hyperfine, in one run.

    bench/shim.py [--build build/test] [--runs 300]

A small artifact is served by python3 -m http.server (the origin) and cached
in a withcache-server; both on 127.0.0.1, both stopped by PID. Each case runs
the shim as `curl` (a curl -> withcache-shim symlink first on PATH) beside the
plain curl command it stands for, and reports the added milliseconds.
"""
import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchlib import free_port, stop_all, wait_status






def hyperfine(commands, runs, env):
    out = tempfile.NamedTemporaryFile(suffix=".json", delete=False)
    out.close()
    subprocess.run(["hyperfine", "-N", "--warmup", "20", "--runs", str(runs), "--export-json", out.name, *commands],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    with open(out.name) as f:
        results = json.load(f)["results"]
    os.unlink(out.name)
    return [r["mean"] * 1000 for r in results]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build/test")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3,
                        help="hyperfine rounds per case, alternating order; the median is reported")
    args = parser.parse_args()
    shim = os.path.abspath(os.path.join(args.build, "apps", "shim", "withcache-shim"))
    floor = os.path.abspath(os.path.join(args.build, "bench", "withcache-bench-exec-floor"))
    server_bin = os.path.join(args.build, "apps", "server", "withcache-server")
    if shutil.which("hyperfine") is None:
        raise SystemExit("hyperfine not found (apt-get install hyperfine)")

    work = tempfile.mkdtemp(prefix="withcache-shim-bench-")
    children = []
    try:
        os.makedirs(os.path.join(work, "www"))
        os.makedirs(os.path.join(work, "bin"))
        with open(os.path.join(work, "www", "small.tgz"), "wb") as f:
            f.write(os.urandom(64 * 1024))
        os.symlink(shim, os.path.join(work, "bin", "curl"))
        origin_port, cache_port = free_port(), free_port()
        children.append(subprocess.Popen(
            [sys.executable, "-m", "http.server", str(origin_port), "--bind", "127.0.0.1", "--directory",
             os.path.join(work, "www")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        children.append(subprocess.Popen(
            [server_bin, "--host", "127.0.0.1", "--port", str(cache_port), "--data-dir", os.path.join(work, "data"),
             "--allow-private", "127.0.0.1", "--allow-origin", "127.0.0.1", "--log-level", "warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        cache = f"http://127.0.0.1:{cache_port}"
        origin = f"http://127.0.0.1:{origin_port}/small.tgz"
        # The miss case asks through `localhost`, a host name --allow-origin does not match: the miss is
        # recorded on every probe but never filled, so it stays a miss for the whole run.
        missing = f"http://localhost:{origin_port}/small.tgz"
        wait_status(f"{cache}/healthz", 200)
        wait_status(origin, 200)
        token = base64.urlsafe_b64encode(origin.encode()).decode().rstrip("=")
        blob = f"{cache}/b/{token}/small.tgz"
        subprocess.run(["curl", "-s", "-o", "/dev/null", blob])
        wait_status(blob, 200, method="HEAD")

        base_env = {k: v for k, v in os.environ.items() if "WITHCACHE" not in k}
        shim_path = os.path.join(work, "bin") + ":" + base_env.get("PATH", "/usr/bin:/bin")
        closed = f"http://127.0.0.1:{free_port()}"
        cases = [
            ("unset (no server)", {}, f"curl -s {origin} -o /dev/null", f"/usr/bin/curl -s {origin} -o /dev/null"),
            ("hit", {"WITHCACHE_SERVER": cache}, f"curl -s {origin} -o /dev/null",
             f"/usr/bin/curl -s {blob} -o /dev/null"),
            ("miss", {"WITHCACHE_SERVER": cache}, f"curl -s {missing} -o /dev/null",
             f"/usr/bin/curl -s {missing} -o /dev/null"),
            ("unreachable (closed port)", {"WITHCACHE_SERVER": closed}, f"curl -s {origin} -o /dev/null",
             f"/usr/bin/curl -s {origin} -o /dev/null"),
        ]
        cases.append(("reference: a C program that only execs curl", {}, f"{floor} -s {origin} -o /dev/null",
                      f"/usr/bin/curl -s {origin} -o /dev/null"))

        def compare(plain_cmd, shim_cmd, env):
            rounds = []
            for i in range(args.rounds):  # alternate the order: process start-up here drifts by milliseconds
                if i % 2 == 0:
                    plain_ms, shim_ms = hyperfine([plain_cmd, shim_cmd], args.runs, env)
                else:
                    shim_ms, plain_ms = hyperfine([shim_cmd, plain_cmd], args.runs, env)
                rounds.append((shim_ms - plain_ms, plain_ms, shim_ms))
            return sorted(rounds)[len(rounds) // 2]

        print(f"| case (hyperfine -N, {args.runs} runs x {args.rounds} rounds, median) | plain curl ms | "
              f"shim ms | added ms |")
        print("|---|---|---|---|")
        for name, extra, shim_cmd, plain_cmd in cases:
            added, plain_ms, shim_ms = compare(plain_cmd, shim_cmd, dict(base_env, PATH=shim_path, **extra))
            print(f"| {name} | {plain_ms:.2f} | {shim_ms:.2f} | {added:+.2f} |")
    finally:
        stop_all(children)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
