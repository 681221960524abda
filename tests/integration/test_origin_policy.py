#!/usr/bin/env python3
"""The origin policy against server-side request forgery (issue 14, SPEC section 3 "Fills"), end to end.

Everything runs in network namespaces this test creates, so no packet can leave the machine:

  server namespace (unshare --net --mount):  lo with 127.0.0.1, ::1 and the private addresses
      10.1.2.3, 172.16.0.5, 192.168.1.7, 100.64.0.9, 169.254.7.7, fd00::5, plus 11.9.9.9 (a
      public-looking address of the server's own); a "private" origin listening on all of them;
      withcache-server; /etc/hosts bind-mounted with names that resolve to those addresses.
  origin namespace (unshare --net), joined by a veth pair: a "public" origin at 11.1.2.3 (the
      server's end is 11.1.2.1), which also redirects on request.

With the default policy every private, special-purpose or own address is refused after DNS (names,
IPv4-mapped, decimal, octal and hex spellings, a redirect), the private origin sees no request, and
the public origin is fetched. --allow-private 10.1.2.3 opens exactly that address. --allow-origin '*'
opens none. Skipped (exit 77, which ctest reports as a skip) when network namespaces cannot be made.

    WITHCACHE_SERVER_BIN=build/test/apps/server/withcache-server python3 test_origin_policy.py
"""
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support"))
import procs  # noqa: E402

SKIP = 77
PRIVATE_ADDRESSES = ["10.1.2.3/32", "172.16.0.5/32", "192.168.1.7/32", "100.64.0.9/32", "169.254.7.7/32",
                     "11.9.9.9/32"]
HOSTS = """127.0.0.1 localhost
::1 localhost
10.1.2.3 mirror.test
192.168.1.7 evil.test
100.64.0.9 cgnat.test
fd00::5 v6.test
11.9.9.9 self.test
11.1.2.3 public.test
11.1.2.3 mixed.test
10.1.2.3 mixed.test
"""


def sh(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)


def wait_for_file(path, timeout=procs.DEADLINE_S):
    if not procs.eventually(lambda: os.path.exists(path), timeout):
        raise RuntimeError(f"{path} did not appear in time")


# --- the origins: files by name, /redirect?to=URL, every request line logged ---------------------------

class OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's name)
        with open(self.server.request_log, "a") as log:
            log.write(self.path + "\n")
        parsed = urllib.parse.urlsplit(self.path)
        if parsed.path == "/redirect":
            target = urllib.parse.parse_qs(parsed.query)["to"][0]
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = f"{self.server.name} bytes of {parsed.path}\n".encode() * 100
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class DualStackServer(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def serve(name, work, dual_stack):
    """Runs an origin until killed; writes its port to <work>/<name>.port."""
    server_class = DualStackServer if dual_stack else http.server.ThreadingHTTPServer
    server = server_class(("::" if dual_stack else "0.0.0.0", 0), OriginHandler)
    server.name = name
    server.request_log = os.path.join(work, name + ".requests")
    open(server.request_log, "w").close()
    with open(os.path.join(work, name + ".port.tmp"), "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(os.path.join(work, name + ".port.tmp"), os.path.join(work, name + ".port"))
    server.serve_forever()


def public_origin(work):
    """In its own network namespace: wait for the veth end, configure it, serve."""
    open(os.path.join(work, "public.unshared"), "w").close()
    wait_for_file(os.path.join(work, "public.link"))
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "addr", "add", "11.1.2.3/24", "dev", "vpub")
    sh("ip", "link", "set", "vpub", "up")
    serve("public", work, dual_stack=False)


# --- the test, inside the server namespace -------------------------------------------------------------

class Case:
    def __init__(self, work, server_bin):
        self.work = work
        self.server_bin = server_bin
        self.failures = []
        self.children = []

    def check(self, condition, what):
        print(("ok    " if condition else "FAIL  ") + what, flush=True)
        if not condition:
            self.failures.append(what)

    def requests(self, origin):
        with open(os.path.join(self.work, origin + ".requests")) as f:
            return [line.strip() for line in f if line.strip()]

    def start_server(self, name, extra):
        data = os.path.join(self.work, name + "-data")
        log = os.path.join(self.work, name + ".log")
        proc = procs.start([self.server_bin, "--host", "0.0.0.0", "--port", "0", "--data-dir", data, *extra], log)
        self.children.append(proc)
        port = procs.port_from_log(log, r"listening on http://0\.0\.0\.0:(\d+)")
        base = f"http://127.0.0.1:{port}"
        if not procs.eventually(lambda: status(base + "/healthz")[0] == 200):
            raise RuntimeError("the server did not start")
        return proc, port, base, log


def status(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def blob(base, origin):
    return base + "/blob?url=" + urllib.parse.quote(origin, safe="")


def refused(case, base, origin, reason, label):
    """The miss is answered 404 and, once the fill was refused, says why in the body."""
    bodies = []

    def said_why():
        code, body = status(blob(base, origin))
        bodies.append(body)
        return code == 404 and "not fetched:" in body

    answered = procs.eventually(said_why, 30)
    last = bodies[-1] if bodies else ""
    case.check(answered and reason in last, f"{label}: refused, 404 says '{reason}' (got {last.strip()!r})")


def fetched(case, base, origin, label):
    ok = procs.eventually(lambda: status(blob(base, origin))[0] == 200, 30)
    case.check(ok, f"{label}: fetched")


def inside(server_bin):
    work = tempfile.mkdtemp(prefix="withcache-ssrf-")
    case = Case(work, server_bin)
    try:
        # The server namespace: loopback and the private addresses on lo, names for them in /etc/hosts.
        sh("ip", "link", "set", "lo", "up")
        for address in PRIVATE_ADDRESSES:
            sh("ip", "addr", "add", address, "dev", "lo")
        sh("ip", "-6", "addr", "add", "fd00::5/128", "dev", "lo")
        hosts = os.path.join(work, "hosts")
        with open(hosts, "w") as f:
            f.write(HOSTS)
        sh("mount", "--bind", hosts, "/etc/hosts")

        # The public origin in a namespace of its own, joined by a veth pair.
        public = subprocess.Popen(["unshare", "--net", "--", sys.executable, os.path.abspath(__file__),
                                   "--public-origin", work], stdin=subprocess.DEVNULL)
        case.children.append(public)
        wait_for_file(os.path.join(work, "public.unshared"))
        sh("ip", "link", "add", "vsrv", "type", "veth", "peer", "name", "vpub", "netns", str(public.pid))
        sh("ip", "addr", "add", "11.1.2.1/24", "dev", "vsrv")
        sh("ip", "link", "set", "vsrv", "up")
        open(os.path.join(work, "public.link"), "w").close()

        private = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--private-origin", work],
                                   stdin=subprocess.DEVNULL)
        case.children.append(private)
        wait_for_file(os.path.join(work, "private.port"))
        wait_for_file(os.path.join(work, "public.port"))
        p = int(open(os.path.join(work, "private.port")).read())
        q = int(open(os.path.join(work, "public.port")).read())
        if not procs.eventually(lambda: status(f"http://11.1.2.3:{q}/ping")[0] == 200, 30):
            raise RuntimeError("the public origin does not answer over the veth pair")
        if not procs.eventually(lambda: status(f"http://10.1.2.3:{p}/ping")[0] == 200, 30):
            raise RuntimeError("the private origin does not answer")
        open(os.path.join(work, "public.requests"), "w").close()
        open(os.path.join(work, "private.requests"), "w").close()

        # 1. The default policy.
        proc, port, base, log = case.start_server("default", [])
        with open(log) as f:
            startup = f.read()
        case.check("fills reach public unicast addresses only" in startup and "any host name" in startup,
                   "the start-up line states the policy")
        refusals = [
            (f"http://10.1.2.3:{p}/a.bin", "private (RFC 1918)", "10.1.2.3"),
            (f"http://172.16.0.5:{p}/a.bin", "private (RFC 1918)", "172.16.0.5"),
            (f"http://192.168.1.7:{p}/a.bin", "private (RFC 1918)", "192.168.1.7"),
            (f"http://100.64.0.9:{p}/a.bin", "shared CGNAT", "100.64.0.9"),
            (f"http://169.254.7.7:{p}/a.bin", "link-local", "169.254.7.7"),
            (f"http://[fd00::5]:{p}/a.bin", "unique local", "fd00::5"),
            (f"http://127.0.0.1:{p}/a.bin", "loopback", "127.0.0.1"),
            (f"http://[::1]:{p}/a.bin", "loopback", "::1"),
            (f"http://11.9.9.9:{p}/a.bin", "one of this server's own addresses", "own public-looking address"),
            (f"http://11.1.2.1:{port}/metrics", "one of this server's own addresses", "the server's own veth end"),
            (f"http://mirror.test:{p}/a.bin", "host mirror.test resolves to 10.1.2.3", "a name for 10.1.2.3"),
            (f"http://evil.test:{p}/a.bin", "resolves to 192.168.1.7", "a name for 192.168.1.7"),
            (f"http://cgnat.test:{p}/a.bin", "resolves to 100.64.0.9", "a name for 100.64.0.9"),
            (f"http://v6.test:{p}/a.bin", "resolves to fd00::5", "a name for fd00::5"),
            (f"http://self.test:{p}/a.bin", "own addresses", "a name for the server's own address"),
            (f"http://mixed.test:{p}/a.bin", "resolves to 10.1.2.3", "a name with a public and a private address"),
            (f"http://localhost:{p}/a.bin", "loopback", "localhost"),
            (f"http://[::ffff:10.1.2.3]:{p}/a.bin", "private (RFC 1918)", "IPv4-mapped 10.1.2.3"),
            (f"http://[::ffff:127.0.0.1]:{p}/a.bin", "loopback", "IPv4-mapped 127.0.0.1"),
            (f"http://167838211:{p}/a.bin", "private (RFC 1918)", "10.1.2.3 in decimal"),
            (f"http://012.1.2.3:{p}/a.bin", "private (RFC 1918)", "10.1.2.3 in octal"),
            (f"http://0x0a.1.2.3:{p}/a.bin", "private (RFC 1918)", "10.1.2.3 in hex"),
            (f"http://0:{p}/a.bin", "this network", "0 (0.0.0.0)"),
            (f"http://11.1.2.3:{q}/redirect?to=" + urllib.parse.quote(f"http://10.1.2.3:{p}/a.bin", safe=""),
             f"redirected to http://10.1.2.3:{p}/a.bin, refused: address 10.1.2.3: private (RFC 1918)",
             "a public origin redirecting to 10.1.2.3"),
            (f"http://11.1.2.3:{q}/redirect?to=" + urllib.parse.quote(f"http://mirror.test:{p}/b.bin", safe=""),
             "resolves to 10.1.2.3", "a redirect to a name for 10.1.2.3"),
        ]
        for origin, reason, label in refusals:
            refused(case, base, origin, reason, "default policy, " + label)
        case.check(case.requests("private") == [], "the private origin received no request "
                   f"(got {case.requests('private')})")
        fetched(case, base, f"http://11.1.2.3:{q}/pub.bin", "default policy, a public address")
        fetched(case, base, f"http://public.test:{q}/pub2.bin", "default policy, a name for a public address")
        # One line in the log per refused URL, however often it was asked for.
        procs.stop([proc])
        with open(log) as f:
            text = f.read()
        # Every refused URL was asked for at least twice; each is logged once.
        case.check(text.count("fill failed:") == len(refusals),
                   f"each refusal is logged once ({text.count('fill failed:')} lines for {len(refusals)} URLs)")

        # 2. --allow-private 10.1.2.3 opens exactly that address (and the names and forms of it).
        proc, port, base, log = case.start_server("allow-private", ["--allow-private", "10.1.2.3"])
        fetched(case, base, f"http://10.1.2.3:{p}/one.bin", "--allow-private 10.1.2.3, 10.1.2.3")
        fetched(case, base, f"http://mirror.test:{p}/two.bin", "--allow-private 10.1.2.3, a name for it")
        fetched(case, base, f"http://167838211:{p}/three.bin", "--allow-private 10.1.2.3, it in decimal")
        for origin, reason, label in [
                (f"http://172.16.0.5:{p}/a.bin", "private (RFC 1918)", "172.16.0.5"),
                (f"http://192.168.1.7:{p}/a.bin", "private (RFC 1918)", "192.168.1.7"),
                (f"http://10.1.2.4:{p}/a.bin", "private (RFC 1918)", "10.1.2.4 (the next address)"),
                (f"http://[fd00::5]:{p}/a.bin", "unique local", "fd00::5"),
                (f"http://127.0.0.1:{p}/a.bin", "loopback", "127.0.0.1"),
                (f"http://10.1.2.3:{port}/metrics", "this server's own listening socket", "the server itself"),
        ]:
            refused(case, base, origin, reason, "--allow-private 10.1.2.3, " + label)
        got = case.requests("private")
        case.check(sorted(got) == ["/one.bin", "/three.bin", "/two.bin"],
                   f"the private origin saw only the opened fills (got {got})")
        code, body = status(base + "/api/v1/misses?q=172.16.0.5")
        misses = json.loads(body).get("items", []) if code == 200 else []
        case.check(any("not a public address" in m.get("last_reason", "") for m in misses),
                   "the refusal is recorded on the miss")
        procs.stop([proc])

        # 3. --allow-origin '*' only narrows names: it opens no address.
        open(os.path.join(work, "private.requests"), "w").close()
        proc, port, base, log = case.start_server("allow-origin", ["--allow-origin", "*"])
        for origin, reason, label in [
                (f"http://10.1.2.3:{p}/a.bin", "private (RFC 1918)", "10.1.2.3"),
                (f"http://mirror.test:{p}/a.bin", "resolves to 10.1.2.3", "mirror.test"),
                (f"http://127.0.0.1:{p}/a.bin", "loopback", "127.0.0.1"),
                (f"http://[fd00::5]:{p}/a.bin", "unique local", "fd00::5"),
        ]:
            refused(case, base, origin, reason, "--allow-origin '*', " + label)
        case.check(case.requests("private") == [], "--allow-origin '*': the private origin received no request")
        fetched(case, base, f"http://11.1.2.3:{q}/star.bin", "--allow-origin '*', a public address")
        procs.stop([proc])

        # 4. --allow-origin public.test: other names, and literals, are not even looked up.
        proc, port, base, log = case.start_server("narrowed", ["--allow-origin", "public.test"])
        code, body = status(blob(base, f"http://11.1.2.3:{q}/narrow.bin"))
        case.check(code == 404 and "is not allowed by --allow-origin" in body,
                   f"--allow-origin public.test: 11.1.2.3 refused at once ({body.strip()!r})")
        fetched(case, base, f"http://public.test:{q}/narrow.bin", "--allow-origin public.test, public.test")
        procs.stop([proc])
    finally:
        procs.stop(case.children)
        shutil.rmtree(work, ignore_errors=True)
    if case.failures:
        print(f"{len(case.failures)} checks failed", flush=True)
        return 1
    print("all checks passed", flush=True)
    return 0


def namespaces_unavailable():
    """Why this test cannot make network namespaces, or None when it can."""
    if os.geteuid() != 0:
        return "not root: creating network namespaces needs CAP_SYS_ADMIN"
    for tool in ("unshare", "ip", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    probe = subprocess.run(["unshare", "--net", "--mount", "--", "ip", "link", "add", "vprobe", "type", "veth",
                            "peer", "name", "vprobe2"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return "unshare --net --mount or a veth pair failed: " + (probe.stderr.strip() or str(probe.returncode))
    return None


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--public-origin":
        public_origin(sys.argv[2])
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "--private-origin":
        serve("private", sys.argv[2], dual_stack=True)
        return 0
    server_bin = os.environ.get("WITHCACHE_SERVER_BIN")
    if not server_bin:
        print("set WITHCACHE_SERVER_BIN", file=sys.stderr)
        return 2
    if len(sys.argv) == 2 and sys.argv[1] == "--inside":
        return inside(server_bin)
    why = namespaces_unavailable()
    if why:
        print(f"SKIP: network namespaces are not available here ({why})", flush=True)
        return SKIP
    started = time.monotonic()
    rc = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "--", sys.executable,
                         os.path.abspath(__file__), "--inside"], timeout=600).returncode
    print(f"done in {time.monotonic() - started:.1f} s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
