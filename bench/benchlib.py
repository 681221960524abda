"""Helpers shared by the benchmark scripts: free ports, bounded waits, stopping children by PID
(the last from tests/support/procs.py, which the Python tests use too)."""
import os
import socket
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "support"))
from procs import stop as stop_all  # noqa: E402,F401  (re-exported for the benchmark scripts)


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


