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
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from alicorn.build.pipeline import Build, Outcome
from alicorn.cluster import files
from alicorn.cluster.config import QueueConfig
from alicorn.config import Settings
from alicorn.errors import StoreError, Unavailable
from alicorn.fs import remove_tree
from alicorn.store.builds import FAILED, BuildStore
from alicorn.store.models import BuildRow

# Seconds between heartbeats in the embedded default (the cluster's come from QueueConfig).
DEFAULT_HEARTBEAT = 5.0


class Heartbeat:
    """Writes ``worker``'s heartbeat for ``build`` every ``every`` seconds until stopped.

    On a beat that finds the build taken from the worker it calls ``lost`` once (with why);
    with a ``lease``, so it does too when no beat got through for that long (the database
    cannot be reached): the reaper may end the build any time now, so the worker must not
    go on with it, let alone publish it."""

    def __init__(self, store: BuildStore, build_id: str, worker: str, every: float, *,
                 lost: Callable[[str], None] | None = None,
                 on_beat: Sequence[Callable[[], None]] = (), lease: float | None = None):
        self.store = store
        self.build_id = build_id
        self.worker = worker
        self.every = every
        self.lost = lost
        self.lease = lease
        self.on_beat = list(on_beat)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"heartbeat-{build_id}")
        self.taken = False
        # Why the database was given up on ("the database ... could not be reached"), if it was.
        self.unreachable: str | None = None

    def _lose(self, why: str) -> None:
        if not self.taken:
            self.taken = True
            if self.lost is not None:
                self.lost(why)

    def _run(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.every):
            try:
                ours = self.store.heartbeat(self.build_id, self.worker)
            except Exception as e:  # a database that is away for a moment: beat again
                away = time.monotonic() - last_ok
                if self.lease is not None and away >= self.lease and not self.taken:
                    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    self.unreachable = (
                        f"the database could not be reached from the worker {self.worker} "
                        f"for {away:.0f} s ({type(e).__name__}: {first}); the worker "
                        f"stopped the build")
                    self._lose(self.unreachable)
                continue
            last_ok = time.monotonic()
            for hook in self.on_beat:
                with suppress(Exception):  # a hook's failure must not stop the heartbeat
                    hook()
            if not ours:
                self._lose("the build was taken from this worker (its lease ran out)")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 5)


def run_claimed(settings: Settings, store: BuildStore, row: BuildRow, *,
                heartbeat: float = DEFAULT_HEARTBEAT,
                on_beat: Sequence[Callable[[], None]] = (), shared: bool = False,
                queue: QueueConfig | None = None) -> Outcome:
    """Run the build ``row`` (claimed by ``row.worker``) to its end, with its heartbeat;
    ``shared``: its files go to the shared store too (:mod:`alicorn.cluster.files`).

    With the cluster's ``queue`` settings, a database that cannot be reached for the lease stops
    the build (its tools stopped, its private root removed).  A build that could not be
    recorded (the database away, or the reaper ended it meanwhile) ends here all the same:
    its outcome is failed, and the reaper records it once the database answers (with the
    reason noted in this home, :func:`alicorn.cluster.reaper.note_lost`)."""
    build = Build(settings, store, row)

    def lost(why: str) -> None:
        build.stopper.stop(why, log=None)

    assert row.worker is not None
    hooks = list(on_beat)
    if shared:
        hooks.append(lambda: files.live_sync(settings, store, row.id))
    beat = Heartbeat(store, row.id, row.worker, heartbeat, lost=lost, on_beat=hooks,
                     lease=queue.lease if queue is not None else None)
    if queue is not None:
        worker = row.worker

        def still_ours() -> bool:
            # Asked just before the tag moves: a build the reaper took (and retried) must not
            # publish beside its retry.
            ours = store.heartbeat(row.id, worker)
            if not ours:
                beat.taken = True
            return ours

        build.still_ours = still_ours
    try:
        with beat:
            outcome = build.run()
    except Exception as e:
        if not (beat.taken or _database_error(e)):
            raise
        # The record could not be written: stop what may still run, free the space, and
        # leave the row to the reaper (or to whoever took it).
        build.stopper.stop("the build could not be recorded", log=None)
        remove_tree(build.work)
        why = beat.unreachable or (
            f"the worker {row.worker} could not record the build: {type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}")
        if not beat.taken or beat.unreachable:
            from alicorn.cluster.reaper import note_lost
            note_lost(settings, row.id, why)
        return Outcome(FAILED, error=why)
    if beat.unreachable is not None and outcome.state == FAILED:
        # The database came back before the record was written: the build is recorded
        # failed (by the reason the heartbeat stopped it for); its next attempt is queued.
        store.retry_failed(row.id, worker=row.worker,
                           max_attempts=queue.max_attempts if queue is not None else 2)
    if shared:
        files.seal_files(settings, store, row.id)
    return outcome


def _database_error(e: BaseException) -> bool:
    """Whether ``e`` is the database's (unreachable, connection lost), not the build's."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
    return isinstance(e, OperationalError | InterfaceError) or (
        isinstance(e, DBAPIError) and bool(e.connection_invalidated))


def run_build(settings: Settings, store: BuildStore, build_id: str, worker: str, *,
              heartbeat: float = DEFAULT_HEARTBEAT,
              on_beat: Sequence[Callable[[], None]] = (),
              shared: bool = False, queue: QueueConfig | None = None) -> Outcome | None:
    """Claim ``build_id`` for ``worker`` and run it; None when it was not queued (another
    worker has it, or it was cancelled or ended)."""
    row = store.claim(build_id, worker)
    if row is None:
        return None
    return run_claimed(settings, store, row, heartbeat=heartbeat, on_beat=on_beat,
                       shared=shared, queue=queue)


def build_task(settings: Settings, config: QueueConfig, build_id: str,
               worker: str) -> dict[str, Any]:
    """The body of the Celery task ``alicorn.build``: claim and run the build through the
    same code path as the local worker, its files going to the shared store.

    A database that cannot be reached when the message arrives is :class:`Unavailable`
    (the task fails, the build stays queued, and the janitor sends it again); one lost during
    the build ends it on this worker and leaves it to the reaper (:func:`run_claimed`)."""
    try:
        store = BuildStore(settings.database_url)
        outcome = run_build(settings, store, build_id, worker, heartbeat=config.heartbeat,
                            shared=True, queue=config)
    except Exception as e:
        if not _database_error(e) and not isinstance(e, StoreError):
            raise
        raise Unavailable(f"build {build_id} not started: the database cannot be reached "
                          f"({type(e).__name__})",
                          hint="the janitor sends the build again once it answers") from e
    if outcome is None:
        return {"build_id": build_id, "ran": False}
    if outcome.state == FAILED:
        _dispatch_retry(settings, store, build_id)
    return {"build_id": build_id, "ran": True, "state": outcome.state,
            "digest": outcome.digest, "error": outcome.error}


def _dispatch_retry(settings: Settings, store: BuildStore, build_id: str) -> None:
    """Send the next attempt of ``build_id``, if it was retried (the database came back
    before the failed attempt was recorded); the janitor does when this cannot."""
    with suppress(Exception):
        row = store.get(build_id)
        if row.retried_as:
            nxt = store.get(row.retried_as)
            if nxt.state == "queued" and not nxt.dispatches:
                from alicorn.cluster.dispatch import dispatcher_for
                dispatcher_for(settings, store).redispatch(nxt)
