"""Running one build: the code path the embedded worker and the Celery task share.

:func:`run_build` claims the build by id (one conditional UPDATE: of two workers, or two
deliveries of one message, exactly one runs it) and runs it (:class:`alicorn.build.pipeline.
Build`) while a :class:`Heartbeat` thread writes the worker's heartbeat into the build's row
every few seconds.  A build whose heartbeat stops (the worker was killed, its host lost) is
ended by the reaper (:mod:`alicorn.cluster.reaper`) once the lease has passed.  When a beat
finds the build is no longer this worker's (the reaper took it), the build is stopped.

Hooks run on every beat (``on_beat``): in the cluster, the build's files are copied into the
shared store there (:mod:`alicorn.cluster.files`), so readers on other hosts follow the logs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from alicorn.build.pipeline import Build, Outcome
from alicorn.cluster import files
from alicorn.cluster.config import QueueConfig
from alicorn.config import Settings
from alicorn.store.builds import BuildStore
from alicorn.store.models import BuildRow

# Seconds between heartbeats in the embedded default (the cluster's come from QueueConfig).
DEFAULT_HEARTBEAT = 5.0


class Heartbeat:
    """Writes ``worker``'s heartbeat for ``build`` every ``every`` seconds until stopped; on a
    beat that finds the build taken from the worker it calls ``lost`` once."""

    def __init__(self, store: BuildStore, build_id: str, worker: str, every: float, *,
                 lost: Callable[[], None] | None = None,
                 on_beat: Sequence[Callable[[], None]] = ()):
        self.store = store
        self.build_id = build_id
        self.worker = worker
        self.every = every
        self.lost = lost
        self.on_beat = list(on_beat)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"heartbeat-{build_id}")
        self.taken = False

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                ours = self.store.heartbeat(self.build_id, self.worker)
            except Exception:  # a database that is away for a moment: beat again
                continue
            for hook in self.on_beat:
                with suppress(Exception):  # a hook's failure must not stop the heartbeat
                    hook()
            if not ours and not self.taken:
                self.taken = True
                if self.lost is not None:
                    self.lost()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 5)


def run_claimed(settings: Settings, store: BuildStore, row: BuildRow, *,
                heartbeat: float = DEFAULT_HEARTBEAT,
                on_beat: Sequence[Callable[[], None]] = (), shared: bool = False) -> Outcome:
    """Run the build ``row`` (claimed by ``row.worker``) to its end, with its heartbeat;
    ``shared``: its files go to the shared store too (:mod:`alicorn.cluster.files`)."""
    build = Build(settings, store, row)

    def lost() -> None:
        build.stopper.stop("the build was taken from this worker (its lease ran out)",
                           log=None)

    assert row.worker is not None
    hooks = list(on_beat)
    if shared:
        hooks.append(lambda: files.live_sync(settings, store, row.id))
    with Heartbeat(store, row.id, row.worker, heartbeat, lost=lost, on_beat=hooks):
        outcome = build.run()
    if shared:
        files.seal_files(settings, store, row.id)
    return outcome


def run_build(settings: Settings, store: BuildStore, build_id: str, worker: str, *,
              heartbeat: float = DEFAULT_HEARTBEAT,
              on_beat: Sequence[Callable[[], None]] = (),
              shared: bool = False) -> Outcome | None:
    """Claim ``build_id`` for ``worker`` and run it; None when it was not queued (another
    worker has it, or it was cancelled or ended)."""
    row = store.claim(build_id, worker)
    if row is None:
        return None
    return run_claimed(settings, store, row, heartbeat=heartbeat, on_beat=on_beat,
                       shared=shared)


def build_task(settings: Settings, config: QueueConfig, build_id: str,
               worker: str) -> dict[str, Any]:
    """The body of the Celery task ``alicorn.build``: claim and run the build through the
    same code path as the local worker, its files going to the shared store."""
    store = BuildStore(settings.database_url)
    outcome = run_build(settings, store, build_id, worker, heartbeat=config.heartbeat,
                        shared=True)
    if outcome is None:
        return {"build_id": build_id, "ran": False}
    return {"build_id": build_id, "ran": True, "state": outcome.state,
            "digest": outcome.digest, "error": outcome.error}
