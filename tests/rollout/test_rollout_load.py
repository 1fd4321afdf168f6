"""The load generator against a local HTTP server (in a process of its own, so that its GIL
is not the load's): steady state, a dying server, wrong bodies, the rate, percentiles."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from alicorn.errors import BadInput
from alicorn.rollout.load import NOT_SENT, Load, Record, percentile, summarize

SERVER = textwrap.dedent("""
    # http.server's handler tops out near 500 req/s on this kind of host (its header
    # parsing and thread hand-offs), below the rate under test: a minimal asyncio
    # HTTP/1.1 server with keep-alive instead.
    import asyncio, sys

    count = 0

    async def handle(reader, writer):
        global count
        try:
            while True:
                head = await reader.readuntil(b"\\r\\n\\r\\n")
                path = head.split(b" ", 2)[1].decode()
                count += 1
                status, reason, body, close = 200, "OK", b"Hello from pony\\n", False
                if path == "/wrong":
                    body = b"Goodbye\\n"
                elif path == "/missing":
                    status, reason, body = 404, "Not Found", b"not found\\n"
                elif path == "/slow" and count % 50 == 0:   # 2 % of the requests: 300 ms
                    await asyncio.sleep(0.3)
                elif path in ("/close", "/drop"):
                    close = True
                writer.write(
                    f"HTTP/1.1 {status} {reason}\\r\\nContent-Type: text/plain\\r\\n"
                    f"Content-Length: {len(body)}\\r\\nX-Server: s1\\r\\n"
                    f"{'Connection: close' + chr(13) + chr(10) if path == '/close' else ''}"
                    "\\r\\n"
                    .encode() + body)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]),
                                            backlog=256)
        print("ready", flush=True)
        await server.serve_forever()

    asyncio.run(main())
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(self.port)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.kill()


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 99) == 0.0


def test_summarize_windows_buckets_and_outages() -> None:
    recs = [Record(due=100 + i / 10, latency=0.001 * (i + 1),
                   error="connection refused" if 20 <= i < 25 else None) for i in range(40)]
    r = summarize(recs, 100.0, 104.0)
    assert (r.requests, r.failed, r.errors) == (40, 5, {"connection refused": 5})
    assert r.first_failure == pytest.approx(102.0)
    assert r.last_failure == pytest.approx(102.4)
    assert r.longest_outage_s == pytest.approx(0.4)
    assert [b.requests for b in r.buckets] == [10, 10, 10, 10]
    assert [b.failed for b in r.buckets] == [0, 0, 5, 0]
    assert r.max_ms == pytest.approx(40.0)
    # only [101, 102): requests 10..19
    w = summarize(recs, 101.0, 102.0)
    assert (w.requests, w.failed) == (10, 0)
    assert w.p50_ms == pytest.approx(15.0)


def test_steady_state_counts_no_failure_and_reaches_the_rate(server: Server) -> None:
    with Load(server.url(), rate=600, contains="Hello from pony", connections=8,
              record_header="X-Server") as load:
        time.sleep(0.5)
        load.mark("a")
        time.sleep(3)
        load.mark("b")
        time.sleep(0.5)
    result = load.result()
    window = load.window("a", "b")
    assert result.failed == 0, result.errors
    assert result.requests >= 0.8 * 600 * 4
    assert window.requests >= 0.8 * 600 * 3
    assert window.rate >= 0.8 * 600
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    assert {r.header for r in load.records()} == {"s1"}
    # One bucket a second of the ~3 s window; time.sleep(3) lasts a little longer than 3 s,
    # so a fourth bucket may hold the few requests due in that last fraction of a second.
    assert len(window.buckets) in (3, 4)
    assert all(b.requests >= 0.8 * 600 for b in window.buckets[:3])
    assert sum(b.requests for b in window.buckets[3:]) <= 0.1 * 600
    # keep-alive: connections are reused (a busy host may make the load open a few more)
    assert load.connections_opened <= 64 < result.requests / 20


def test_wrong_body_and_non_2xx_are_failures(server: Server) -> None:
    with Load(server.url("/wrong"), rate=200, contains="Hello from pony") as load:
        time.sleep(1)
    r = load.result()
    assert r.requests >= 150 and r.failed == r.requests
    assert r.errors == {"wrong body": r.requests}
    with Load(server.url("/missing"), rate=200, contains="not found") as load:
        time.sleep(1)
    r = load.result()
    assert r.failed == r.requests >= 150
    assert r.errors == {"HTTP 404": r.requests}


def test_server_closing_after_each_response_is_not_a_failure(server: Server) -> None:
    with Load(server.url("/close"), rate=200, contains="Hello") as load:
        time.sleep(1)
    r = load.result()
    assert r.requests >= 150 and r.failed == 0, r.errors


def test_a_keep_alive_connection_closed_under_a_request_is_a_failure(server: Server) -> None:
    # /drop closes the connection after each response without saying so: the next request
    # on it finds it closed.  That is what a client sees; nothing is retried.
    with Load(server.url("/drop"), rate=100, contains="Hello", connections=1,
              max_connections=1) as load:
        time.sleep(1.5)
    r = load.result()
    assert r.requests >= 120
    assert 0.3 * r.requests <= r.failed <= 0.7 * r.requests, r.errors
    assert set(r.errors) <= {"connection closed", "connection reset",
                             "connection closed (broken pipe)"}, r.errors


def test_a_dying_server_gives_refused_connections(server: Server) -> None:
    with Load(server.url(), rate=400, contains="Hello from pony") as load:
        time.sleep(1)
        load.mark("kill")
        server.kill()
        time.sleep(1)
        load.mark("dead")
    # (a request due just before the kill may be in flight when it happens)
    before = load.window(None, load.marks()["kill"] - 0.05)
    after = load.window("dead", None)
    during = load.window("kill", "dead")
    assert before.failed == 0, before.errors
    assert during.failed >= 0.8 * 400 * 0.9
    assert after.requests == 0 or after.failed == after.requests
    # Requests in flight or on a keep-alive connection when the server died fail as
    # "closed"/"reset"; every later one is refused (nothing retried, nothing hidden).
    assert during.errors.get("connection refused", 0) >= during.failed - 8 * 2
    assert load.result().first_failure is not None
    assert load.result().first_failure >= load.marks()["kill"] - 0.01  # type: ignore[operator]


def test_p99_on_known_delays(server: Server) -> None:
    # 2 % of the requests take 300 ms, the rest about a millisecond: the nearest-rank p99
    # (rank 0.99 n) falls among the slow ones, the p90 among the fast.  Two connections to
    # begin with: the load opens more rather than queue fast requests behind slow ones.
    with Load(server.url("/slow"), rate=300, contains="Hello", connections=2) as load:
        time.sleep(3)
    r = load.result()
    assert r.failed == 0, r.errors
    assert load.connections_opened > 2
    assert r.p99_ms >= 290
    assert r.max_ms < 600
    assert r.p90_ms < 100
    assert r.p50_ms < 50


def test_timeouts_and_not_sent_are_counted() -> None:
    # A listener that never accepts nor answers: every request times out, and the ones still
    # queued behind the two connections at the end count as not sent.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        port = s.getsockname()[1]
        with Load(f"http://127.0.0.1:{port}/", rate=50, connections=2, max_connections=2,
                  timeout=0.3) as load:
            time.sleep(1.2)
        r = load.result()
    assert r.failed == r.requests >= 40
    assert r.errors.get("timeout", 0) >= 4
    assert r.errors.get(NOT_SENT, 0) >= 20
    assert load.backlog_max >= 20


def test_bad_arguments() -> None:
    with pytest.raises(BadInput):
        Load("https://example.org/")
    with pytest.raises(BadInput):
        Load("http://127.0.0.1:1/", rate=0)
    with pytest.raises(BadInput):
        Load("http://127.0.0.1:1/", connections=8, max_connections=4)
