"""Helpers shared by the benchmark scripts: free ports, bounded waits, stopping children by PID."""
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url, method="GET", timeout=2):
    """The status of one request, or 0 when nothing answered."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def wait_status(url, status=200, method="GET", deadline_s=60):
    """Polls url until it answers `status`; exits with a message when the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if http_status(url, method) == status:
            return
        time.sleep(0.05)
    raise SystemExit(f"{url} did not answer {status} within {deadline_s} s")


def stop_all(children, grace_s=15):
    """SIGTERM every child, then SIGKILL what is still running after the grace period."""
    for p in children:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in children:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
