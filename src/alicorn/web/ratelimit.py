"""Rate limits on submissions: a token bucket per principal.

Each principal (by name) has a bucket of ``per_minute`` submissions that refills at
``per_minute / 60`` a second: a burst of up to ``per_minute``, then one every ``60 /
per_minute`` seconds.  The buckets live in the serving process (a restart fills them).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from alicorn.web.model import Principal, RateLimited


class SubmissionLimiter:
    """Counts submissions per principal; thread-safe."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic):
        """``per_minute`` submissions a minute per token, in bursts of up to that many;
        0 turns submissions off.  ``clock``: seconds, monotonic (tests pass their own)."""
        if per_minute < 0:
            raise ValueError(f"per_minute must be 0 or more, not {per_minute}")
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}    # name -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, who: Principal) -> None:
        """Count one submission; RateLimited (with retry_after) when over the limit."""
        if self.per_minute == 0:
            raise RateLimited("submissions are off (api.submissions_per_minute is 0)",
                              retry_after=3600,
                              hint="an admin turns them on with `alicorn api config "
                                   "submissions_per_minute 10`")
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(who.name, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + max(0.0, now - at) * self._rate)
            if tokens >= 1.0:
                self._buckets[who.name] = (tokens - 1.0, now)
                return
            self._buckets[who.name] = (tokens, now)
            wait = (1.0 - tokens) / self._rate
        raise RateLimited(f"too many submissions from {who.name}: the limit is "
                          f"{self.per_minute} a minute (api.submissions_per_minute); try "
                          f"again in {math.ceil(wait)} s", retry_after=wait)

    def remaining(self, who: Principal) -> int:
        """Submissions ``who`` may make at once now."""
        if self.per_minute == 0:
            return 0
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(who.name, (float(self.per_minute), now))
        return int(min(float(self.per_minute), tokens + max(0.0, now - at) * self._rate))
