"""The ctypes binding against a real server (run under tests/run_with_server.py)."""
import os
import unittest

import withcache


class Binding(unittest.TestCase):
    def setUp(self):
        try:
            self.server = os.environ["WITHCACHE_TEST_SERVER"]
            self.cached = os.environ["WITHCACHE_TEST_CACHED"]
            self.cold = os.environ["WITHCACHE_TEST_COLD"]
            self.closed = os.environ["WITHCACHE_TEST_CLOSED"]
        except KeyError as missing:
            self.fail(f"{missing} is not set: run under tests/run_with_server.py")

    def test_pure_functions(self):
        self.assertTrue(withcache.version())
        self.assertEqual(withcache.normalize_key("HTTPS://H:443/a/../b?t=1"), "https://h/b?t=1")
        self.assertEqual(withcache.normalize_key("HTTPS://H:443/a/../b?t=1&token=x"), "https://h/b?t=1")
        self.assertEqual(withcache.normalize_key("https://h/b?token=1", keep_query=True), "https://h/b?token=1")
        self.assertEqual(withcache.blob_url("cache:3000", "https://h/x.tgz"),
                         "http://cache:3000/b/aHR0cHM6Ly9oL3gudGd6/x.tgz")
        self.assertEqual(withcache.blob_url("cache:3000", "https://h/a+b(1),v=2.tar?sig=abc"),
                         "http://cache:3000/b/aHR0cHM6Ly9oL2ErYigxKSx2PTIudGFyP3NpZz1hYmM/a+b(1),v=2.tar?sig=abc")
        with self.assertRaises(withcache.WithcacheError) as raised:
            withcache.normalize_key("not a url")
        self.assertEqual(raised.exception.code, withcache.EURL)

    def test_serve_url_with_fallback(self):
        self.assertEqual(withcache.serve_url(self.server, self.cached), withcache.blob_url(self.server, self.cached))
        self.assertIsNone(withcache.serve_url(self.server, self.cold))
        self.assertEqual(withcache.serve_url(self.server, self.cold) or self.cold, self.cold)

    def test_client(self):
        with withcache.Client(self.server, timeout_ms=5000, headers={"X-Provisioner": "python"}) as client:
            self.assertTrue(client.is_cached(self.cached))
            self.assertFalse(client.is_cached(self.cold))
            self.assertTrue(client.is_healthy())
        self.assertFalse(withcache.is_healthy(self.closed))
        self.assertFalse(withcache.is_cached(self.closed, self.cached))
        with self.assertRaises(withcache.WithcacheError) as raised:
            withcache.Client("")
        self.assertEqual(raised.exception.code, withcache.EINVAL)


if __name__ == "__main__":
    unittest.main()
