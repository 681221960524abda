#!/usr/bin/env python3
"""What the shim adds to a curl call, measured in interleaved pairs, in one run.

    bench/shim.py [--build build/test] [--pairs 300] [--baseline-shim PATH] [--hyperfine]

A small artifact is served by python3 -m http.server (the origin) and cached
in a withcache-server; both on 127.0.0.1, both stopped by PID. Each case runs
the shim as `curl` (a curl -> withcache-shim symlink first on PATH) beside the
plain curl command it stands for:

  unset                  no server set: the shim execs curl at once
  hit                    probe (200), then curl from the cache; plain = curl of the cache URL
  miss                   probe (404), then curl from the origin
  pass-through POST      curl -d: parsed, not probed
  dead cache, remembered a cache that never answers, already in the memo: no probe
  exec floor             a C program that only execs curl (this machine's exec cost)

The two commands of a case run alternately, one pair at a time, and what is
reported is the median of the pairs' differences: wall time from spawn to
reap, and CPU time (user + system, from wait4). On a shared 2-core machine the
load drifts by more than the effect within the seconds one hyperfine block
takes, and pairing cancels that drift. --hyperfine adds hyperfine's means
(200 runs, alternating order) for comparison with older reports.

--baseline-shim adds the same unset and hit rows for another withcache-shim
binary (e.g. the previous commit's), measured in the same run.
"""
import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import free_port, stop_all, wait_status


def run_once(argv, env):
    """Spawn to reap: (wall ms, CPU ms) of one run, its output discarded."""
    # As a shell would: argv[0] looked up on the command's own PATH (posix_spawnp would use ours).
    program = shutil.which(argv[0], path=env["PATH"])
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        start = time.perf_counter_ns()
        pid = os.posix_spawn(program, argv, env, file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)])
        _, status, usage = os.wait4(pid, 0)
        wall = (time.perf_counter_ns() - start) / 1e6
    finally:
        os.close(devnull)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} exited {os.waitstatus_to_exitcode(status)}")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def paired(plain, shim, env, pairs, prepare=None):
    """Medians over interleaved pairs: plain wall, shim wall, added wall, added CPU."""
    for _ in range(10):  # warm up caches and the servers
        run_once(plain, env)
        run_once(shim, env)
    prepared = 0.0
    plain_wall, shim_wall, added_wall, added_cpu = [], [], [], []
    for i in range(pairs):
        if prepare and time.monotonic() - prepared > 20:  # the memo lasts 30 s
            run_once(prepare, env)
            prepared = time.monotonic()
        if i % 2 == 0:
            p, s = run_once(plain, env), run_once(shim, env)
        else:
            s, p = run_once(shim, env), run_once(plain, env)
        plain_wall.append(p[0])
        shim_wall.append(s[0])
        added_wall.append(s[0] - p[0])
        added_cpu.append(s[1] - p[1])
    m = statistics.median
    return m(plain_wall), m(shim_wall), m(added_wall), m(added_cpu)


def hyperfine(commands, runs, env):
    out = tempfile.NamedTemporaryFile(suffix=".json", delete=False)
    out.close()
    subprocess.run(["hyperfine", "-N", "--warmup", "20", "--runs", str(runs), "--export-json", out.name, *commands],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out.name) as f:
        results = json.load(f)["results"]
    os.unlink(out.name)
    return [r["mean"] * 1000 for r in results]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build/test")
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--baseline-shim", help="another withcache-shim to measure beside this one (unset, hit)")
    parser.add_argument("--hyperfine", action="store_true", help="also report hyperfine's means (200 runs)")
    args = parser.parse_args()
    shim = os.path.abspath(os.path.join(args.build, "apps", "shim", "withcache-shim"))
    floor = os.path.abspath(os.path.join(args.build, "bench", "withcache-bench-exec-floor"))
    server_bin = os.path.join(args.build, "apps", "server", "withcache-server")
    if args.hyperfine and shutil.which("hyperfine") is None:
        raise SystemExit("hyperfine not found (apt-get install hyperfine)")

    work = tempfile.mkdtemp(prefix="withcache-shim-bench-")
    children = []
    hung = socket.socket()
    try:
        os.makedirs(os.path.join(work, "www"))
        os.makedirs(os.path.join(work, "bin"))
        os.makedirs(os.path.join(work, "run"), mode=0o700)  # the shim's memo lives here, not in the user's
        with open(os.path.join(work, "www", "small.tgz"), "wb") as f:
            f.write(os.urandom(64 * 1024))
        os.symlink(shim, os.path.join(work, "bin", "curl"))
        if args.baseline_shim:
            os.makedirs(os.path.join(work, "baseline"))
            os.symlink(os.path.abspath(args.baseline_shim), os.path.join(work, "baseline", "curl"))
        origin_port, cache_port = free_port(), free_port()
        children.append(subprocess.Popen(
            [sys.executable, "-m", "http.server", str(origin_port), "--bind", "127.0.0.1", "--directory",
             os.path.join(work, "www")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        children.append(subprocess.Popen(
            [server_bin, "--host", "127.0.0.1", "--port", str(cache_port), "--data-dir", os.path.join(work, "data"),
             "--allow-private", "127.0.0.1", "--allow-origin", "127.0.0.1", "--min-free", "0", "--log-level", "warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # A cache that accepts connections (the kernel completes them from the backlog) and never answers.
        hung.bind(("127.0.0.1", 0))
        hung.listen(1024)
        dead = f"http://127.0.0.1:{hung.getsockname()[1]}"
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

        base_env = {k: v for k, v in os.environ.items() if "WITHCACHE" not in k and k not in ("REAL_CURL",)}
        base_env["XDG_RUNTIME_DIR"] = os.path.join(work, "run")
        shim_path = os.path.join(work, "bin") + ":" + base_env.get("PATH", "/usr/bin:/bin")
        baseline_path = os.path.join(work, "baseline") + ":" + base_env.get("PATH", "/usr/bin:/bin")
        get = f"curl -s {origin} -o /dev/null".split()
        plain_get = f"/usr/bin/curl -s {origin} -o /dev/null".split()
        plain_blob = f"/usr/bin/curl -s {blob} -o /dev/null".split()
        # (name, extra env, PATH, shim command, plain command, prepare)
        cases = [
            ("unset (no server)", {}, shim_path, get, plain_get, None),
            ("hit", {"WITHCACHE_SERVER": cache}, shim_path, get, plain_blob, None),
            ("miss", {"WITHCACHE_SERVER": cache}, shim_path, f"curl -s {missing} -o /dev/null".split(),
             f"/usr/bin/curl -s {missing} -o /dev/null".split(), None),
            ("pass-through POST (curl -d)", {"WITHCACHE_SERVER": cache}, shim_path,
             f"curl -s -d x=1 {origin} -o /dev/null".split(), f"/usr/bin/curl -s -d x=1 {origin} -o /dev/null".split(),
             None),
            # The memo lasts 30 s: every 20 s one command times out (0.2 s here) and sets it again.
            ("dead cache, already remembered", {"WITHCACHE_SERVER": dead, "WITHCACHE_PROBE_TIMEOUT": "0.2"},
             shim_path, get, plain_get, get),
            ("reference: a C program that only execs curl", {}, shim_path, [floor] + plain_get[1:], plain_get, None),
        ]
        if args.baseline_shim:
            cases.insert(1, ("unset, baseline shim", {}, baseline_path, get, plain_get, None))
            cases.insert(3, ("hit, baseline shim", {"WITHCACHE_SERVER": cache}, baseline_path, get, plain_blob, None))

        header = (f"| case ({args.pairs} interleaved pairs, medians) | plain curl ms | shim ms | added ms | "
                  f"added CPU ms |")
        if args.hyperfine:
            header += " hyperfine: added ms |"
        print(header)
        print("|---" * (header.count("|") - 1) + "|")
        for name, extra, path, shim_cmd, plain_cmd, prepare in cases:
            env = dict(base_env, PATH=path, **extra)
            plain_ms, shim_ms, added, cpu = paired(plain_cmd, shim_cmd, env, args.pairs, prepare)
            row = f"| {name} | {plain_ms:.2f} | {shim_ms:.2f} | {added:+.2f} | {cpu:+.2f} |"
            if args.hyperfine:
                if prepare:
                    run_once(prepare, env)
                plain_mean, shim_mean = hyperfine([" ".join(plain_cmd), " ".join(shim_cmd)], 200, env)
                row += f" {shim_mean - plain_mean:+.2f} |"
            print(row, flush=True)
    finally:
        hung.close()
        stop_all(children)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
