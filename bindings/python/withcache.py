"""withcache from Python, through the C ABI (libwithcache_c) with ctypes. No pip installs.

    import withcache
    url = withcache.serve_url("cache.lab:3000", origin) or origin

The library is found through $WITHCACHE_C_LIBRARY, else the system loader
(libwithcache_c.so.0 installed by cmake --install).
"""
import ctypes
import ctypes.util
import os

__all__ = ["WithcacheError", "Client", "version", "normalize_key", "blob_url", "serve_url", "is_cached",
           "is_healthy"]

OK, EINVAL, EURL, ENOTFOUND, ENOMEM, EINTERNAL, EVERSION = 0, -1, -2, -3, -4, -5, -6


def _load():
    path = os.environ.get("WITHCACHE_C_LIBRARY") or ctypes.util.find_library("withcache_c") or "libwithcache_c.so.0"
    lib = ctypes.CDLL(path)
    c_char_pp = ctypes.POINTER(ctypes.c_void_p)
    lib.withcache_version.restype = ctypes.c_char_p
    lib.withcache_strerror.restype = ctypes.c_char_p
    lib.withcache_strerror.argtypes = [ctypes.c_int]
    lib.withcache_last_error.restype = ctypes.c_char_p
    lib.withcache_string_free.argtypes = [ctypes.c_void_p]
    lib.withcache_normalize_key.argtypes = [c_char_pp, ctypes.c_char_p, ctypes.c_int]
    lib.withcache_blob_url.argtypes = [c_char_pp, ctypes.c_char_p, ctypes.c_char_p]
    lib.withcache_client_new.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_void_p]
    lib.withcache_client_free.argtypes = [ctypes.c_void_p]
    lib.withcache_client_is_cached.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_void_p, ctypes.c_char_p]
    lib.withcache_client_serve_url.argtypes = [c_char_pp, ctypes.c_void_p, ctypes.c_char_p]
    lib.withcache_client_is_healthy.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_void_p]
    return lib


_lib = _load()


_OPTIONS_VERSION = 1  # WITHCACHE_CLIENT_OPTIONS_VERSION


class _Options(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("timeout_ms", ctypes.c_uint),
                ("headers", ctypes.POINTER(ctypes.c_char_p))]


class WithcacheError(Exception):
    """A failure of the C library: .code is a WITHCACHE_E* value."""

    def __init__(self, code, message):
        super().__init__(f"{message} ({_lib.withcache_strerror(code).decode()})")
        self.code = code


def _check(code):
    if code != OK:
        raise WithcacheError(code, _lib.withcache_last_error().decode("utf-8", "replace"))


def _take_string(pointer):
    try:
        return ctypes.string_at(pointer.value).decode("utf-8")
    finally:
        _lib.withcache_string_free(pointer)


def version():
    return _lib.withcache_version().decode()


def normalize_key(url, keep_query=False):
    out = ctypes.c_void_p()
    _check(_lib.withcache_normalize_key(ctypes.byref(out), url.encode(), 1 if keep_query else 0))
    return _take_string(out)


def blob_url(server, origin):
    out = ctypes.c_void_p()
    _check(_lib.withcache_blob_url(ctypes.byref(out), server.encode(), origin.encode()))
    return _take_string(out)


class Client:
    """A cache server plus probe options; use as a context manager or call close()."""

    def __init__(self, server, timeout_ms=3000, headers=None):
        lines = [f"{name}: {value}".encode() for name, value in (headers or {}).items()]
        array = (ctypes.c_char_p * (len(lines) + 1))(*lines, None)
        options = _Options(_OPTIONS_VERSION, timeout_ms, ctypes.cast(array, ctypes.POINTER(ctypes.c_char_p)))
        self._handle = ctypes.c_void_p()
        _check(_lib.withcache_client_new(ctypes.byref(self._handle), server.encode(), ctypes.byref(options)))

    def close(self):
        if self._handle:
            _lib.withcache_client_free(self._handle)
            self._handle = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def is_cached(self, origin):
        flag = ctypes.c_int()
        _check(_lib.withcache_client_is_cached(ctypes.byref(flag), self._handle, origin.encode()))
        return bool(flag.value)

    def serve_url(self, origin):
        """The cache URL when the cache holds origin, else None."""
        out = ctypes.c_void_p()
        code = _lib.withcache_client_serve_url(ctypes.byref(out), self._handle, origin.encode())
        if code == ENOTFOUND:
            return None
        _check(code)
        return _take_string(out)

    def is_healthy(self):
        flag = ctypes.c_int()
        _check(_lib.withcache_client_is_healthy(ctypes.byref(flag), self._handle))
        return bool(flag.value)


def serve_url(server, origin, timeout_ms=3000):
    with Client(server, timeout_ms) as client:
        return client.serve_url(origin)


def is_cached(server, origin, timeout_ms=3000):
    with Client(server, timeout_ms) as client:
        return client.is_cached(origin)


def is_healthy(server, timeout_ms=3000):
    with Client(server, timeout_ms) as client:
        return client.is_healthy()
