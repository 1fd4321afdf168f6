"""HAProxy in front of a module: real haproxy, real sockets, small Python backends, a steady
threaded load that counts every failed request."""

from __future__ import annotations

import collections
import contextlib
import http.client
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alicorn.rollout.haproxy import HAProxy
from alicorn.rollout.interface import ProxyError
from alicorn.rollout.model import Backend, Readiness
from conftest import free_port, require

pytestmark = pytest.mark.integration


# -- backends ------------------------------------------------------------------------------------

class Quiet(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a check or client that hangs up early is not the test's business


class Web:
    """A small HTTP server in a thread that answers its own name and counts its requests."""

    def __init__(self, name: str):
        self.name = name
        self.hits = 0
        self.lock = threading.Lock()
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/":          # health checks (GET /ready) do not count
                    with web.lock:
                        web.hits += 1
                if self.path == "/slow":
                    time.sleep(2.0)
                body = f"hello from {web.name}\n".encode()
                if web.broken:                # a bad version: its web server answers errors
                    body = b"oops"
                self.send_response(500 if web.broken else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = Quiet(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.closed = False
        self.broken = False

    @property
    def backend(self) -> Backend:
        return Backend(name=self.name, host="127.0.0.1", port=self.port)

    def count(self) -> int:
        with self.lock:
            return self.hits

    def close(self) -> None:
        """Stop listening: new connections are refused (as when a replica's web server dies)."""
        if not self.closed:
            self.closed = True
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def webs() -> Iterator[Callable[[str], Web]]:
    made: list[Web] = []

    def make(name: str) -> Web:
        w = Web(name)
        made.append(w)
        return w

    try:
        yield make
    finally:
        for w in made:
            w.close()


# -- the proxy -----------------------------------------------------------------------------------

def haproxy_pids(directory: Path) -> list[int]:
    """Every haproxy process whose working directory is ``directory``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # comm from stat, not cmdline: an exiting process loses its cmdline (exit_mm)
            # before it closes its sockets (exit_files), its cwd only after.
            comm, _, rest = (entry / "stat").read_text().partition(" (")[2].rpartition(") ")
            if comm != "haproxy":
                continue
            if Path(os.readlink(entry / "cwd")) != directory.resolve():
                continue
            state = rest[:1]
        except OSError:
            continue
        if state != "Z":
            out.append(int(entry.name))
    return out


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[Callable[..., HAProxy]]:
    require("haproxy")
    made: list[HAProxy] = []

    def make(name: str = "m", port: int | None = None) -> HAProxy:
        p = HAProxy(tmp_path / name, module=name, address="127.0.0.1",
                    port=port or free_port(),
                    readiness=Readiness(path="/ready", interval=0.5, timeout=1.0, retries=2),
                    drain_timeout=5.0)
        made.append(p)
        return p

    try:
        yield make
    finally:
        for p in made:
            with contextlib.suppress(Exception):
                p.stop()
            for pid in haproxy_pids(p.directory):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


Proxies = Callable[..., HAProxy]
Webs = Callable[[str], Web]


def get(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read().decode()
    finally:
        conn.close()


class Loop:
    """A steady load: ``threads`` keep-alive clients at ``rate`` requests per second in all,
    counting every failure (error, non-200, wrong body)."""

    def __init__(self, port: int, *, rate: float = 400, threads: int = 8):
        self.port = port
        self.interval = threads / rate
        self.ok = 0
        self.failed = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Loop:
        self.started = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(10)
        self.seconds = time.monotonic() - self.started

    @property
    def rate(self) -> float:
        return (self.ok + self.failed) / self.seconds if self.seconds else 0.0

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        due = time.monotonic()
        while not self.stopping.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                good = resp.status == 200 and body.startswith(b"hello from")
                why = f"HTTP {resp.status}"
            except (OSError, http.client.HTTPException) as e:
                good, why = False, type(e).__name__
                conn.close()
                conn = None
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors[why] += 1
            due += self.interval
            time.sleep(max(0.0, due - time.monotonic()))
        if conn is not None:
            conn.close()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- tests ---------------------------------------------------------------------------------------

def test_serves_through_the_proxy_and_reports_servers(proxies: Proxies, webs: Webs) -> None:
    a1, a2 = webs("a1"), webs("a2")
    p = proxies()
    p.start()
    p.start()  # idempotent
    assert p.is_running()
    p.set_backends([a1.backend, a2.backend])
    bodies = {get(p.port) for _ in range(6)}
    assert bodies == {"hello from a1\n", "hello from a2\n"}
    states = {s.name: s for s in p.servers()}
    assert set(states) == {"a1", "a2"}
    assert all(s.status == "UP" and not s.backup and s.port in (a1.port, a2.port)
               for s in states.values())
    wait_for(lambda: all((s.check or "").startswith("L7OK") for s in p.servers()))
    assert "server a1 127.0.0.1:" in p.config.read_text()


def test_shift_to_new_servers_under_load_fails_nothing(proxies: Proxies, webs: Webs) -> None:
    a = [webs("a1"), webs("a2")]
    b = [webs("b1"), webs("b2")]
    p = proxies()
    p.start()
    p.set_backends([w.backend for w in a])
    with Loop(p.port, rate=400) as load:
        time.sleep(1.5)
        p.set_backends([w.backend for w in b], backup=[w.backend for w in a])
        time.sleep(1.5)
        states = {(s.name, s.backup) for s in p.servers()}
        assert states == {("b1", False), ("b2", False), ("a1", True), ("a2", True)}
        p.set_backends([w.backend for w in b])
        before_a = sum(w.count() for w in a)
        before_b = sum(w.count() for w in b)
        time.sleep(1.5)
    print(f"shift: {load.ok + load.failed} requests, {load.failed} failed, {load.rate:.0f} req/s")
    assert load.failed == 0, load.errors
    assert load.rate >= 300
    assert sum(w.count() for w in a) == before_a          # A gets nothing at the end
    assert sum(w.count() for w in b) - before_b > 300     # B gets the traffic
    assert {s.name for s in p.servers()} == {"b1", "b2"}
    assert "a1" not in p.config.read_text()


@pytest.mark.parametrize("how", ["refuse", "http-500"])
def test_active_servers_failing_fail_over_to_backups_without_a_failure(
        proxies: Proxies, webs: Webs, how: str) -> None:
    a = [webs("a1"), webs("a2")]
    b = [webs("b1"), webs("b2")]
    p = proxies()
    p.start()
    p.set_backends([w.backend for w in a], backup=[w.backend for w in b])
    with Loop(p.port, rate=500) as load:
        time.sleep(1.5)
        assert sum(w.count() for w in b) == 0             # backups idle while actives are up
        for w in a:
            if how == "refuse":
                w.close()
            else:
                w.broken = True
        time.sleep(0.5)
        before_b = sum(w.count() for w in b)
        time.sleep(2.0)
    print(f"failover ({how}): {load.ok + load.failed} requests, {load.failed} failed, "
          f"{load.rate:.0f} req/s")
    if how == "refuse":
        assert load.failed == 0, load.errors
    else:
        # HAProxy 2.6 retries a 5xx (retry-on) before `observe layer7` sees it, so only the
        # 5xx a client gets marks a server down: a few failed requests per bad server (the
        # ones in flight on it then), measured 2-7 of ~2000 here.
        assert load.failed <= 8 * len(a), load.errors
    assert load.rate >= 300
    assert sum(w.count() for w in b) - before_b > 500
    status = {s.name: s.status for s in p.servers()}
    assert status["a1"] == status["a2"] == "DOWN"
    assert status["b1"] == status["b2"] == "UP"


def test_removed_server_finishes_its_requests(proxies: Proxies, webs: Webs) -> None:
    a1, b1 = webs("a1"), webs("b1")
    p = proxies()
    p.start()
    p.set_backends([a1.backend])
    answers: list[str] = []

    def slow() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
        conn.request("GET", "/slow")
        answers.append(conn.getresponse().read().decode())
        conn.close()

    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: any(s.sessions for s in p.servers()))
    started = time.monotonic()
    p.set_backends([b1.backend])                          # waits for a1's request to finish
    assert time.monotonic() - started > 1.0
    t.join(10)
    assert answers == ["hello from a1\n"]
    assert [s.name for s in p.servers()] == ["b1"]
    assert get(p.port) == "hello from b1\n"


def test_port_in_use_is_refused_and_nothing_runs(proxies: Proxies) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        p = proxies(port=port)
        with pytest.raises(ProxyError, match=f"port {port} on 127.0.0.1 is already in use"):
            p.start()
        assert not p.is_running()
        assert haproxy_pids(p.directory) == []


def test_comes_back_with_its_servers_after_kill_9(proxies: Proxies, webs: Webs) -> None:
    a1, b1 = webs("a1"), webs("b1")
    p = proxies()
    p.start()
    p.set_backends([a1.backend], backup=[b1.backend])
    before = sorted((s.name, s.host, s.port, s.backup) for s in p.servers())
    pids = haproxy_pids(p.directory)
    assert len(pids) >= 2                                 # master and worker
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: haproxy_pids(p.directory) == [])
    assert not p.is_running()
    p.start()
    assert sorted((s.name, s.host, s.port, s.backup) for s in p.servers()) == before
    assert get(p.port) == "hello from a1\n"
    # The servers HAProxy read from its configuration change at runtime like the others.
    p.set_backends([b1.backend])
    assert [(s.name, s.backup) for s in p.servers()] == [("b1", False)]
    assert get(p.port) == "hello from b1\n"


def test_refused_change_keeps_the_old_servers_serving(proxies: Proxies, webs: Webs) -> None:
    a1 = webs("a1")
    p = proxies()
    p.start()
    p.set_backends([a1.backend])
    config = p.config.read_text()
    bad = Backend(name="b1", host="no-such-host.invalid", port=8080)
    with pytest.raises(ProxyError, match="refuses the configuration") as e:
        p.set_backends([bad])
    assert "no-such-host.invalid" in str(e.value)
    with pytest.raises(ProxyError, match="not valid"):
        p.set_backends([Backend(name="bad name", host="127.0.0.1", port=1)])
    assert p.config.read_text() == config
    assert [s.name for s in p.servers()] == ["a1"]
    assert get(p.port) == "hello from a1\n"


def test_stop_leaves_no_process(proxies: Proxies, webs: Webs) -> None:
    p = proxies()
    p.start()
    p.set_backends([webs("a1").backend])
    assert haproxy_pids(p.directory)
    p.stop()
    assert haproxy_pids(p.directory) == []
    assert not p.is_running()
    assert not p.admin_socket.exists() and not p.pidfile.exists()
    p.stop()  # idempotent
    assert [s.name for s in p.servers()] == ["a1"]        # the configuration stays
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", p.port), timeout=2).close()


def test_a_server_moved_to_another_port_follows_it(proxies: Proxies, webs: Webs) -> None:
    first, second = webs("first"), webs("second")
    p = proxies()
    p.start()
    p.set_backends([first.backend])
    assert get(p.port) == "hello from first\n"
    # The same server name, now at the second web server's port: HAProxy answers "no need to
    # change the addr, port changed from …", which is a success.
    p.set_backends([Backend(name=first.backend.name, host="127.0.0.1", port=second.port)])
    assert {get(p.port) for _ in range(4)} == {"hello from second\n"}
    assert [s.port for s in p.servers()] == [second.port]
    assert f"127.0.0.1:{second.port}" in p.config.read_text()
