"""Builds whose worker is gone, and queued builds whose message is lost.

CONTRACT (implemented by the fault-handling work of issue 8):

- :func:`reap_stale`: running builds whose heartbeat is older than the lease (or, on this
  host, whose worker process is dead) are failed with the reason and, below ``max_attempts``,
  retried as a new attempt (BuildStore.abandon) that is dispatched at once;
- :func:`redispatch_lost`: queued builds not dispatched for ``redispatch_after`` seconds are
  sent again (claiming is idempotent);
- :class:`Janitor`: a daemon thread doing both every ``lease / 4`` seconds, started by every
  Celery worker and by ``alicorn serve`` in the cluster.
"""

from __future__ import annotations

import threading

from alicorn.cluster.config import QueueConfig
from alicorn.config import Settings
from alicorn.store.builds import BuildStore


def reap_stale(settings: Settings, store: BuildStore, config: QueueConfig) -> list[str]:
    """End the builds of dead workers; returns their ids."""
    return []


def redispatch_lost(settings: Settings, store: BuildStore, config: QueueConfig) -> list[str]:
    """Send again the queued builds whose message may be lost; returns their ids."""
    return []


class Janitor:
    def __init__(self, settings: Settings, config: QueueConfig):
        self.settings = settings
        self.config = config
        self._stop = threading.Event()

    def start(self) -> Janitor:
        return self

    def stop(self) -> None:
        self._stop.set()
