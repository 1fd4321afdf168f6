"""Progress goes through a monitor, not through log lines (the osbuild way).

The worker reports to a :class:`FileMonitor`, which appends JSON lines to the build's
``progress.jsonl``; the submitter follows that file and renders it with rich in a terminal or as
JSON lines otherwise.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Monitor:
    """Receives progress of a build. The base class ignores everything."""

    def step(self, name: str, total: int | None = None) -> None:
        """A new step of the build begins."""

    def progress(self, done: int, total: int | None = None, detail: str | None = None) -> None:
        """Progress within the current step."""

    def message(self, text: str) -> None:
        """A line worth showing to the person waiting."""

    def finish(self, state: str, **result: Any) -> None:
        """The build is over."""


class FileMonitor(Monitor):
    """Appends progress events as JSON lines to a file that others follow.

    ``before_step`` is called with the name of each step before it begins; it may raise to
    stop the work there (a cancelled build stops at its next step boundary).
    """

    def __init__(self, path: Path, *, before_step: Callable[[str], None] | None = None):
        self.path = path
        self.before_step = before_step
        self._lock = threading.Lock()
        self._last_progress = 0.0
        self._f = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (lives with self)

    def _emit(self, event: dict[str, Any]) -> None:
        event["t"] = round(time.time(), 3)
        with self._lock:
            self._f.write(json.dumps(event, sort_keys=True) + "\n")

    def step(self, name: str, total: int | None = None) -> None:
        if self.before_step is not None:
            self.before_step(name)
        self._emit({"event": "step", "name": name, "total": total})

    def progress(self, done: int, total: int | None = None, detail: str | None = None) -> None:
        now = time.monotonic()
        if now - self._last_progress < 0.2 and (total is None or done < total):
            return
        self._last_progress = now
        self._emit({"event": "progress", "done": done, "total": total, "detail": detail})

    def message(self, text: str) -> None:
        self._emit({"event": "message", "text": text})

    def finish(self, state: str, **result: Any) -> None:
        self._emit({"event": "finish", "state": state, **result})
        self._f.close()
