"""A steady HTTP load that counts every failed request: the witness of "zero downtime"."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoadResult:
    requests: int
    failed: int                        # connection errors, timeouts, non-2xx, wrong body
    errors: dict[str, int]             # why, counted ("HTTP 404", "connection refused", …)
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class Load:
    """``with Load(url, rate=600, contains="Hello") as load: …; result = load.result()``:
    requests ``url`` at ``rate`` per second (open loop, several connections) from a thread
    until stopped; ``mark(label)`` notes a moment so :meth:`window` can give the figures
    between two marks."""

    def __init__(self, url: str, *, rate: float = 600.0, contains: str | None = None,
                 connections: int = 8, timeout: float = 5.0):
        raise NotImplementedError
