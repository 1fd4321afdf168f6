"""A steady HTTP load that counts every failed request: the witness of "zero downtime".

Open loop, as a client population behaves: request *i* is due at ``start + i / rate`` whether
or not the earlier ones have been answered, and its latency runs from that due time (a slow
server cannot slow the load down and hide its own slowness — "coordinated omission").  The
requests go over ``connections`` keep-alive HTTP/1.1 connections from one asyncio loop in a
thread of its own (raw sockets: http.client's header parsing costs more CPU than the 2-core
hosts this runs on can spare at 600 req/s).  When a request is due and every connection is
busy, another one is opened (up to ``max_connections``), as another client would: a few
stalled requests must not hold up the rest behind them at the client (head-of-line blocking
that no real population of clients has).  Idle connections take requests in turn, so none
stays idle long enough for a server's keep-alive timeout to close it under a request.

Nothing is retried.  A request fails when its connection is refused, reset or closed under it
(a keep-alive connection the server closed counts: that is what a client sees), when it takes
longer than ``timeout``, when the status is not 2xx, or when the body lacks ``contains``.
Requests still waiting for a free connection when the load stops count as failed too
("not sent"), so that every request the load meant to send is accounted for.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from alicorn.errors import BadInput

NOT_SENT = "not sent (every connection busy until the load stopped)"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q ≤ 100) of already sorted values; 0.0 when
    there are none.  (Nearest rank: the p99 of 100 values is the 99th smallest, a value that
    was actually measured.)"""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


@dataclass(frozen=True)
class Record:
    """One request: when it was due (POSIX time), how long until it was answered or failed,
    and why it failed (None when it did not)."""

    due: float
    latency: float                     # seconds from ``due`` to the end of the response
    error: str | None = None
    header: str | None = None          # the value of Load's ``record_header``, if asked


@dataclass(frozen=True)
class Bucket:
    """The requests due within one second (``at`` is that second's start, POSIX time)."""

    at: float
    requests: int
    failed: int
    p99_ms: float

    def as_json(self) -> dict[str, Any]:
        return {"at": round(self.at, 3), "requests": self.requests, "failed": self.failed,
                "p99_ms": round(self.p99_ms, 2)}


@dataclass(frozen=True)
class LoadResult:
    requests: int
    failed: int                        # connection errors, timeouts, non-2xx, wrong body
    errors: dict[str, int]             # why, counted ("HTTP 404", "connection refused", …)
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    p90_ms: float = 0.0
    first_failure: float | None = None  # POSIX time the first failed request was due
    last_failure: float | None = None
    longest_outage_s: float = 0.0      # longest run of consecutive failed requests (due times)
    buckets: tuple[Bucket, ...] = field(default=(), repr=False)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_json(self) -> dict[str, Any]:
        """The figures (buckets included) as JSON values."""
        return {"requests": self.requests, "failed": self.failed, "errors": self.errors,
                "seconds": round(self.seconds, 3), "rate": round(self.rate, 1),
                "p50_ms": round(self.p50_ms, 2), "p90_ms": round(self.p90_ms, 2),
                "p99_ms": round(self.p99_ms, 2), "max_ms": round(self.max_ms, 2),
                "first_failure": self.first_failure, "last_failure": self.last_failure,
                "longest_outage_s": round(self.longest_outage_s, 3),
                "buckets": [b.as_json() for b in self.buckets]}


def summarize(records: Sequence[Record], start: float, end: float) -> LoadResult:
    """The figures of the requests in ``records`` (sorted by due time) due in
    ``[start, end)``."""
    chosen = [r for r in records if start <= r.due < end]
    latencies = sorted(r.latency * 1000 for r in chosen if r.error is None)
    errors: dict[str, int] = collections.Counter(r.error for r in chosen if r.error)
    failures = [r.due for r in chosen if r.error]
    longest = 0.0
    run_start: float | None = None
    for r in chosen:
        if r.error:
            if run_start is None:
                run_start = r.due
            longest = max(longest, r.due - run_start)
        else:
            run_start = None
    per_second: dict[int, list[Record]] = collections.defaultdict(list)
    for r in chosen:
        per_second[int(r.due - start)].append(r)
    buckets = []
    for second in sorted(per_second):
        rows = per_second[second]
        lat = sorted(r.latency * 1000 for r in rows if r.error is None)
        buckets.append(Bucket(at=start + second, requests=len(rows),
                              failed=sum(1 for r in rows if r.error),
                              p99_ms=percentile(lat, 99)))
    return LoadResult(
        requests=len(chosen), failed=len(failures), errors=dict(sorted(errors.items())),
        seconds=max(0.0, end - start), p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90), p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else 0.0,
        first_failure=failures[0] if failures else None,
        last_failure=failures[-1] if failures else None,
        longest_outage_s=longest, buckets=tuple(buckets))


class _Failed(Exception):
    """A request failed; ``args[0]`` says why, in the words of :attr:`LoadResult.errors`."""

    def __init__(self, why: str, *, close: bool = True):
        super().__init__(why)
        self.why = why
        self.close = close


def _why(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ConnectionResetError):
        return "connection reset"
    if isinstance(e, BrokenPipeError):
        return "connection closed (broken pipe)"
    if isinstance(e, asyncio.IncompleteReadError):
        return "connection closed"
    if isinstance(e, TimeoutError):
        return "timeout"
    if isinstance(e, OSError):
        # e.g. "EHOSTUNREACH: connect failed" (asyncio words every connect error with the
        # address, which would make one kind of failure per port)
        name = errno.errorcode.get(e.errno or 0, type(e).__name__)
        return f"{name}: {os.strerror(e.errno) if e.errno else e}"
    return f"{type(e).__name__}: {e}"


class Load:
    """``with Load(url, rate=600, contains="Hello") as load: …; result = load.result()``:
    requests ``url`` at ``rate`` per second (open loop, several connections) from a thread
    until stopped; ``mark(label)`` notes a moment so :meth:`window` can give the figures
    between two marks.

    ``record_header``: keep that response header's value per request (e.g. a proxy's
    "which server answered"), see :meth:`records`.  Every method is thread-safe."""

    def __init__(self, url: str, *, rate: float = 600.0, contains: str | None = None,
                 connections: int = 8, timeout: float = 5.0,
                 record_header: str | None = None, max_connections: int = 256):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise BadInput(f"load: {url!r} is not an http:// URL")
        if rate <= 0 or connections < 1 or timeout <= 0 or max_connections < connections:
            raise BadInput(f"load: rate ({rate}), connections ({connections}) and timeout "
                           f"({timeout}) must be positive, max_connections "
                           f"({max_connections}) at least connections")
        self.url = url
        self.rate = float(rate)
        self.contains = contains.encode() if contains is not None else None
        self.connections = connections
        self.max_connections = max_connections
        self.timeout = float(timeout)
        self.record_header = record_header.lower() if record_header else None
        self._host = parts.hostname
        self._port = parts.port or 80
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self._request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                         "User-Agent: alicorn-load\r\nAccept: */*\r\n\r\n").encode()
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self._marks: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._start: float | None = None   # POSIX time of request 0
        self._end: float | None = None
        self._mono0 = 0.0                  # monotonic clock at ``_start``
        self._backlog_max = 0
        self._idle = 0                     # workers waiting for a request
        self._workers: list[asyncio.Task[None]] = []
        self._crash: BaseException | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Start sending (returns once the first request is due)."""
        if self._thread is not None:
            raise RuntimeError("this Load was started already")
        self._thread = threading.Thread(target=self._run, name="alicorn-load", daemon=True)
        self._thread.start()
        self._started.wait()

    def stop(self) -> LoadResult:
        """Stop scheduling requests, let the ones under way finish (at most ``timeout``),
        and give :meth:`result`.  Idempotent."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):   # the loop closed meanwhile
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(self.timeout + 10)
        if self._crash is not None:
            raise RuntimeError(f"the load generator crashed: {self._crash!r}") from self._crash
        return self.result()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- figures -------------------------------------------------------------------------------

    def now(self) -> float:
        """The load's clock (POSIX seconds; monotonic between ``start`` and ``stop``)."""
        return time.time() if self._start is None else self._start + (
            time.monotonic() - self._mono0)

    def mark(self, label: str) -> float:
        """Note this moment as ``label`` (for :meth:`window`); returns it (POSIX time)."""
        t = self.now()
        with self._lock:
            self._marks[label] = t
        return t

    def marks(self) -> dict[str, float]:
        with self._lock:
            return dict(self._marks)

    def result(self) -> LoadResult:
        """Every request so far (while running: the ones that are done)."""
        return self.window(None, None)

    def window(self, a: str | float | None, b: str | float | None) -> LoadResult:
        """The requests due between mark ``a`` and mark ``b`` (labels, POSIX times, or None
        for the load's start / end or now)."""
        start, end = self._time(a, start=True), self._time(b, start=False)
        return summarize(self.records(), start, end)

    def records(self) -> list[Record]:
        """Every finished request, in due order."""
        with self._lock:
            return sorted(self._records, key=lambda r: r.due)

    @property
    def backlog_max(self) -> int:
        """The most requests that were ever due but waiting for a free connection."""
        return self._backlog_max

    @property
    def connections_opened(self) -> int:
        """How many connection workers the load has had (``connections`` at first, more when
        every one was busy as a request came due)."""
        return len(self._workers)

    def _time(self, x: str | float | None, *, start: bool) -> float:
        if isinstance(x, (int, float)):
            return float(x)
        if isinstance(x, str):
            with self._lock:
                if x not in self._marks:
                    raise KeyError(f"load: no mark {x!r} (marks: {sorted(self._marks)})")
                return self._marks[x]
        if start:
            return self._start if self._start is not None else time.time()
        return self._end if self._end is not None else self.now()

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:   # any crash: reported by stop()
            self._crash = e
        finally:
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        queue: asyncio.Queue[float | None] = asyncio.Queue()
        self._workers = [asyncio.create_task(self._worker(queue))
                         for _ in range(self.connections)]
        self._mono0 = time.monotonic()
        self._start = time.time()
        self._started.set()
        sent = 0
        interval = 1.0 / self.rate
        while not self._stopping.is_set():
            elapsed = time.monotonic() - self._mono0
            due = int(elapsed * self.rate) + 1
            while sent < due:
                queue.put_nowait(sent * interval)
                sent += 1
            waiting = queue.qsize()
            for _ in range(min(waiting - self._idle, self.max_connections - len(self._workers))):
                self._workers.append(asyncio.create_task(self._worker(queue)))
            self._backlog_max = max(self._backlog_max, waiting)
            # A plain sleep (not a wait on the event: that costs a task per request); stop()
            # is noticed within one interval.
            await asyncio.sleep(max(0.0, sent * interval - (time.monotonic() - self._mono0)))
        self._end = self.now()
        # What is due is sent; whatever still waits for a connection after ``timeout`` is
        # counted as not sent rather than waited for without end.
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(queue.join(), self.timeout)
        while not queue.empty():
            offset = queue.get_nowait()
            queue.task_done()
            if offset is not None:
                self._add(Record(self._start + offset, self.now() - self._start - offset,
                                 NOT_SENT))
        for _ in self._workers:
            queue.put_nowait(None)
        await asyncio.gather(*self._workers, return_exceptions=True)

    def _add(self, record: Record) -> None:
        with self._lock:
            self._records.append(record)

    async def _worker(self, queue: asyncio.Queue[float | None]) -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                self._idle += 1
                try:
                    offset = await queue.get()
                finally:
                    self._idle -= 1
                if offset is None:
                    queue.task_done()
                    return
                header: str | None = None
                error: str | None = None
                try:
                    async with asyncio.timeout(self.timeout):
                        if conn is None:
                            conn = await asyncio.open_connection(self._host, self._port)
                        keep, header = await self._exchange(*conn)
                    if not keep:
                        self._close(conn)
                        conn = None
                except _Failed as e:
                    error = e.why
                    if e.close:
                        self._close(conn)
                        conn = None
                except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError,
                        asyncio.LimitOverrunError, ValueError) as e:
                    error = _why(e)
                    self._close(conn)
                    conn = None
                assert self._start is not None
                latency = time.monotonic() - self._mono0 - offset
                self._add(Record(self._start + offset, latency, error, header))
                queue.task_done()
        finally:
            self._close(conn)

    @staticmethod
    def _close(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        if conn is not None:
            with contextlib.suppress(Exception):
                conn[1].close()

    async def _exchange(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> tuple[bool, str | None]:
        """Send the request, read the response; ``(keep the connection, header value)``."""
        writer.write(self._request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/"):
            raise _Failed("bad response")
        status = int(status_line[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        keep = "close" not in connection and (status_line[0] != "HTTP/1.0"
                                              or "keep-alive" in connection)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:                      # the body runs to the end of the connection
            body = await reader.read()
            keep = False
        header = headers.get(self.record_header) if self.record_header else None
        if not 200 <= status < 300:
            raise _Failed(f"HTTP {status}", close=not keep)
        if self.contains is not None and self.contains not in body:
            raise _Failed("wrong body", close=not keep)
        return keep, header

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":   # trailers
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
