#!/usr/bin/env python3
"""Wire compatibility with withcache 0.3's stdlib-only clients.

withcache 0.3's shims and client are Python and use only the standard
library: they build the cache URL with base64.urlsafe_b64encode(origin)
stripped of '=' plus urllib.parse.quote(basename), probe it with one HEAD
through urllib, and download it with urllib or by handing it to curl/wget.
This test is such a client, written from SPEC section 2, run against the
real withcache-server and an origin (python3 -m http.server), both on
127.0.0.1 and both stopped by PID.

    WITHCACHE_SERVER_BIN=build/test/apps/server/withcache-server python3 -m unittest test_wire_compat
"""
import base64
import hashlib
import os
import shutil
import sys
import tempfile
import unittest
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support"))
import procs  # noqa: E402


eventually = procs.eventually


# --- the 0.3 client, as SPEC section 2 describes it -------------------------

def cache_base(server):
    server = server.strip().rstrip("/")
    return server if "://" in server else "http://" + server


def blob_url(server, origin):
    token = base64.urlsafe_b64encode(origin.encode("utf-8")).decode("ascii").rstrip("=")
    name = urllib.parse.quote(urllib.parse.urlsplit(origin).path.rsplit("/", 1)[-1]) or "download"
    return f"{cache_base(server)}/b/{token}/{name}"


def is_cached(server, origin, timeout=3):
    request = urllib.request.Request(blob_url(server, origin), method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


# -----------------------------------------------------------------------------

class WireCompat(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = os.environ.get("WITHCACHE_SERVER_BIN")
        if not binary or not os.access(binary, os.X_OK):
            raise unittest.SkipTest("set WITHCACHE_SERVER_BIN to withcache-server")
        cls.work = tempfile.mkdtemp(prefix="withcache-compat-")
        www = os.path.join(cls.work, "www")
        os.makedirs(os.path.join(www, "dir"))
        cls.body = os.urandom(300_000)
        with open(os.path.join(www, "dir", "my file+1.tgz"), "wb") as f:
            f.write(cls.body)
        cls.origin_proc, origin_port = procs.start_origin(www, os.path.join(cls.work, "origin.log"))
        cls.origin = f"http://127.0.0.1:{origin_port}/dir/my%20file%2B1.tgz"
        cls.server_proc, port = procs.start_server(binary, os.path.join(cls.work, "data"),
                                                   os.path.join(cls.work, "server.log"), ["--allow-private", "127.0.0.1"])
        cls.server = f"127.0.0.1:{port}"  # 0.3 users often give host:port without a scheme

        def healthy():
            try:
                with urllib.request.urlopen(f"http://{cls.server}/healthz", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False
        if not eventually(healthy):
            cls.tearDownClass()
            raise RuntimeError("withcache-server did not start")

    @classmethod
    def tearDownClass(cls):
        procs.stop([p for p in (getattr(cls, "server_proc", None), getattr(cls, "origin_proc", None)) if p])
        shutil.rmtree(cls.work, ignore_errors=True)

    def test_probe_warms_then_hits_and_downloads_verified_bytes(self):
        # The first probe records the miss and warms the cache (it may even be answered at once, from the
        # running fill: --miss-wait); soon it is a hit.
        is_cached(self.server, self.origin)
        self.assertTrue(eventually(lambda: is_cached(self.server, self.origin)))
        # Whether it came from the running fill or the finished blob, the bytes are the origin's.
        with urllib.request.urlopen(blob_url(self.server, self.origin), timeout=10) as response:
            self.assertEqual(response.read(), self.body)

        def verified():
            request = urllib.request.Request(blob_url(self.server, self.origin), method="HEAD")
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.headers["X-Withcache-Sha256"]
        # Once the fill has completed the cache states the SHA-256 (not while it was still filling).
        self.assertTrue(eventually(lambda: verified() is not None))
        with urllib.request.urlopen(blob_url(self.server, self.origin), timeout=10) as response:
            data = response.read()
            sha = response.headers["X-Withcache-Sha256"]
        self.assertEqual(data, self.body)
        self.assertEqual(sha, hashlib.sha256(self.body).hexdigest())
        self.assertTrue(blob_url(self.server, self.origin).endswith("/my%2520file%252B1.tgz"))

        query = urllib.parse.urlencode({"url": self.origin})
        with urllib.request.urlopen(f"http://{self.server}/blob?{query}", timeout=10) as response:
            self.assertEqual(response.read(), self.body)

    def test_unreachable_server_is_not_a_hit(self):
        closed = procs.ClosedPort()
        try:
            self.assertFalse(is_cached(f"127.0.0.1:{closed.port}", self.origin, timeout=1))
        finally:
            closed.close()


if __name__ == "__main__":
    unittest.main()
