"""Child processes for the Python tests: started with their output in a log file, their
bound port read back from that log, stopped by PID; every wait bounded."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

DEADLINE_S = 60.0


def eventually(check, timeout=DEADLINE_S):
    """Polls check() until it is true; False when the timeout passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def start(argv, log_path, env=None):
    """Starts argv with stdout and stderr appended to log_path."""
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    finally:
        log.close()


def port_from_log(log_path, pattern, timeout=DEADLINE_S):
    """The first group of `pattern` in the log as an int, once it appears; raises when it does not."""
    regex = re.compile(pattern)
    found = []

    def check():
        try:
            with open(log_path, "r", errors="replace") as f:
                match = regex.search(f.read())
        except FileNotFoundError:
            return False
        if match:
            found.append(int(match.group(1)))
        return bool(match)

    if not eventually(check, timeout):
        raise RuntimeError(f"no port in {log_path} in time")
    return found[0]


def start_server(binary, data_dir, log_path, extra=()):
    """withcache-server on 127.0.0.1 with --port 0; returns (process, port)."""
    proc = start([binary, "--host", "127.0.0.1", "--port", "0", "--data-dir", data_dir, *extra], log_path)
    return proc, port_from_log(log_path, r"listening on http://127\.0\.0\.1:(\d+)")


def start_origin(directory, log_path):
    """python3 -m http.server on 127.0.0.1 with port 0, serving `directory`; returns (process, port)."""
    proc = start([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", directory],
                 log_path)
    return proc, port_from_log(log_path, r"Serving HTTP on \S+ port (\d+)")


class ClosedPort:
    """A 127.0.0.1 port that refuses connections while this object lives (bound, never listening)."""

    def __init__(self):
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]

    def close(self):
        self._socket.close()


def stop(procs, grace_s=15):
    """SIGTERM each process, then SIGKILL those still running after the grace period."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
