#!/usr/bin/env python3
"""Probes under connection load, bursts, idle memory and header floods: withcache-server beside nginx.

    bench/connections.py [--build build/test] [--ks 64,256,1024] [--probes 200]

For each K and each kind of load (K downloads read at --rate bytes/s, K idle keep-alive connections,
K slowloris sockets trickling a head), withcache-bench-load holds the load and times HEAD probes of
another cached URL on fresh connections (as the shim does), each bounded by 5 s. Then a burst of 256
simultaneous probes (listen-queue drops from /proc/net/netstat), the RSS of 1024 idle connections, and
the RSS during a header flood. nginx 1.22 (sendfile on, 2 workers) serves the same files in the same run.
Loopback only; every process is stopped by PID. Prints Markdown for docs/benchmarks.md.
"""
import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from benchlib import free_port, stop_all, wait_status


def rss_kib(pid):
    total = 0
    for p in pids_of(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def pids_of(root):
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


def listen_drops():
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], (int(v) for v in values.split()[1:])))
            return table.get("ListenDrops", 0) + table.get("ListenOverflows", 0)
    return 0


def load(tool, port, kind, k, target, probe, probes, rate):
    out = subprocess.run([tool, "--port", str(port), "--kind", kind, "--connections", str(k), "--target", target,
                          "--probe", probe, "--probes", str(probes), "--rate", str(rate)],
                         check=True, capture_output=True, text=True, timeout=600).stdout
    return json.loads(out)


def header_flood(port, connections=4, megabytes=150):
    """Four connections each try to send `megabytes` of header lines; returns the bytes the server took."""
    sent = [0] * connections

    def flood(i):
        s = socket.create_connection(("127.0.0.1", port))
        chunk = b"X-Flood: " + b"f" * 65536 + b"\r\n"
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n")
            while sent[i] < megabytes * 1024 * 1024:
                s.sendall(chunk)
                sent[i] += len(chunk)
        except OSError:
            pass
        finally:
            s.close()

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    return threads, sent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build/test")
    parser.add_argument("--ks", default="64,256,1024")
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--rate", type=int, default=1024 * 1024, help="bytes/s each downloading connection reads")
    args = parser.parse_args()
    server_bin = os.path.join(args.build, "apps", "server", "withcache-server")
    tool = os.path.join(args.build, "bench", "withcache-bench-load")
    ks = [int(k) for k in args.ks.split(",")]

    work = tempfile.mkdtemp(prefix="withcache-conn-bench-")
    os.chmod(work, 0o755)
    children = []
    try:
        www = os.path.join(work, "www")
        os.mkdir(www)
        with open(os.path.join(www, "big.bin"), "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(256):
                f.write(block)
        with open(os.path.join(www, "probe.bin"), "wb") as f:
            f.write(os.urandom(64 * 1024))

        def start(argv):
            p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            children.append(p)
            return p

        py_port = free_port()
        start([sys.executable, "-m", "http.server", str(py_port), "--bind", "127.0.0.1", "--directory", www])
        wait_status(f"http://127.0.0.1:{py_port}/probe.bin")

        ng_port = free_port()
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 2; worker_rlimit_nofile 65536; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 16384; }}
http {{ sendfile on; tcp_nopush on; access_log off; keepalive_requests 100000;
  client_body_temp_path {work}/nb; proxy_temp_path {work}/np; fastcgi_temp_path {work}/nf;
  uwsgi_temp_path {work}/nu; scgi_temp_path {work}/ns;
  server {{ listen 127.0.0.1:{ng_port} backlog=4096; root {www}; }} }}
""")
        nginx = start(["nginx", "-p", work, "-c", conf, "-g", "daemon off;"])
        wait_status(f"http://127.0.0.1:{ng_port}/probe.bin")

        wc_port = free_port()
        withcache = start([server_bin, "--host", "127.0.0.1", "--port", str(wc_port), "--data-dir",
                           os.path.join(work, "data"), "--allow-private", "127.0.0.1", "--min-free", "0", "--log-level", "warn"])
        wait_status(f"http://127.0.0.1:{wc_port}/healthz")

        def blob(name):
            origin = f"http://127.0.0.1:{py_port}/{name}"
            token = base64.urlsafe_b64encode(origin.encode()).decode().rstrip("=")
            return f"/b/{token}/{urllib.parse.quote(name)}"

        for name in ("big.bin", "probe.bin"):
            subprocess.run(["curl", "-s", "-o", "/dev/null", "-I", f"http://127.0.0.1:{wc_port}{blob(name)}"])
            wait_status(f"http://127.0.0.1:{wc_port}{blob(name)}", 200, method="HEAD", deadline_s=300)

        servers = [("withcache-server", wc_port, withcache.pid, blob("big.bin"), blob("probe.bin")),
                   ("nginx (sendfile on)", ng_port, nginx.pid, "/big.bin", "/probe.bin")]

        print(f"\n| load (K connections) | server | probes | timeouts | p50 ms | p99 ms | p99 vs nginx |")
        print("|---|---|---|---|---|---|---|")
        for kind in ("download", "idle", "slowloris"):
            for k in ks:
                rows = {}
                for name, port, pid, big, probe in servers:
                    rows[name] = load(tool, port, kind, k, big, probe, args.probes, args.rate)
                    time.sleep(1)  # let the closed connections drain before the next server's run
                ref = rows["nginx (sendfile on)"]["p99_ms"]
                label = {"download": f"{k} downloads at {args.rate // 1024} KiB/s", "idle": f"{k} idle keep-alive",
                         "slowloris": f"{k} slowloris"}[kind]
                for name, r in rows.items():
                    print(f"| {label} | {name} | {r['probes']} | {r['timeouts']} | {r['p50_ms']:.1f} | "
                          f"{r['p99_ms']:.1f} | {r['p99_ms'] / max(ref, 0.01):.2f}x |")

        print("\n| a burst of 256 simultaneous probes | probes | timeouts | errors | p50 ms | p99 ms | p99 vs nginx | "
              "listen drops |")
        print("|---|---|---|---|---|---|---|---|")
        burst = {}
        for name, port, pid, big, probe in servers:
            before = listen_drops()
            r = load(tool, port, "burst", 256, big, probe, 0, args.rate)
            r["drops"] = listen_drops() - before
            burst[name] = r
            time.sleep(1)
        for name, r in burst.items():
            print(f"| {name} | {r['probes']} | {r['timeouts']} | {r['errors']} | {r['p50_ms']:.1f} | "
                  f"{r['p99_ms']:.1f} | {r['p99_ms'] / max(burst['nginx (sendfile on)']['p99_ms'], 0.01):.2f}x | "
                  f"{r['drops']} |")

        print("\n| memory | server | RSS before | RSS with the load | per connection |")
        print("|---|---|---|---|---|")
        for name, port, pid, big, probe in servers:
            before = rss_kib(pid)
            holder = subprocess.Popen([tool, "--port", str(port), "--kind", "idle", "--connections", "1024",
                                       "--probe", probe, "--probes", "50"], stdout=subprocess.DEVNULL)
            time.sleep(3)  # the tool settles for 2 s before probing; sample while all 1024 are open
            during = rss_kib(pid)
            holder.wait(timeout=120)
            print(f"| 1024 idle keep-alive connections | {name} | {before / 1024:.1f} MiB | {during / 1024:.1f} MiB | "
                  f"{(during - before) / 1024:.1f} KiB |")
        for name, port, pid, big, probe in servers:
            before = rss_kib(pid)
            threads, sent = header_flood(port)
            peak = before
            while any(t.is_alive() for t in threads):
                peak = max(peak, rss_kib(pid))
                time.sleep(0.05)
            print(f"| 4 connections sending 150 MB of headers each | {name} | {before / 1024:.1f} MiB | "
                  f"{peak / 1024:.1f} MiB (peak) | {sum(sent) / 4 / 1024:.0f} KiB accepted per connection |")
    finally:
        stop_all(children)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
