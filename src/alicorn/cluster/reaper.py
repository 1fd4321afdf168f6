"""Builds whose worker is gone, and queued builds whose message is lost.

- :func:`reap_stale`: running builds whose heartbeat is older than the lease (or, on this
  host, whose worker process is dead, or whose worker noted that it stopped them) are failed
  with the reason and, below ``max_attempts``, retried as a new attempt
  (:meth:`BuildStore.abandon`) that is dispatched at once.  What a dead worker on this host
  left behind goes too: the tools it ran and its build's private root.
- :func:`redispatch_lost`: queued builds not dispatched for ``redispatch_after`` seconds are
  sent again (claiming is idempotent, so a duplicate message is harmless).
- :class:`Janitor`: a daemon thread doing both every ``lease / 4`` seconds, started by every
  Celery worker and by ``alicorn serve`` in the cluster.  Several janitors (one per worker
  host) may act at once: abandoning is one conditional UPDATE, so a build is retried once.

A worker that stopped a build because it could not reach the database writes why into its
home (:func:`note_lost`); the janitor of that home, once the database answers again, ends the
build with that reason at once instead of waiting for the lease.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

from alicorn import daemon
from alicorn.cluster.config import QueueConfig
from alicorn.config import Settings
from alicorn.errors import Error
from alicorn.fs import remove_tree
from alicorn.store.builds import FINAL, BuildStore
from alicorn.store.models import BuildRow

log = logging.getLogger("alicorn.reaper")

_LOST_DIR = "lost-builds"


def note_lost(settings: Settings, build_id: str, reason: str) -> None:
    """Record in this home why its worker stopped ``build_id`` without recording it (the
    database could not be reached): the reason the janitor gives when it ends the build."""
    path = settings.run_dir / _LOST_DIR
    path.mkdir(parents=True, exist_ok=True)
    (path / build_id).write_text(reason + "\n")


def _noted(settings: Settings, build_id: str) -> str | None:
    try:
        return (settings.run_dir / _LOST_DIR / build_id).read_text().strip() or None
    except OSError:
        return None


def _forget(settings: Settings, build_id: str) -> None:
    (settings.run_dir / _LOST_DIR / build_id).unlink(missing_ok=True)


def _local_pid(worker: str | None) -> tuple[int, bool] | None:
    """``(pid, leads its group)`` of a worker named ``host:pid[:group]`` on this host."""
    if not worker:
        return None
    parts = worker.split(":")
    if len(parts) < 2 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    return int(parts[1]), parts[2:] == ["group"]


def _stamp(at: datetime | None) -> str:
    return at.replace(tzinfo=UTC).isoformat(timespec="seconds") if at else "never"


def _stop_named(path: Path, timeout: float = 10.0) -> int:
    """TERM, then KILL, the live processes whose command line names ``path`` (the tools a
    dead worker ran in a build's private root: dnf --installroot=..., mmdebstrap ...);
    returns how many there were."""
    needle = str(path).encode()

    def named() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                cmdline = (Path("/proc") / entry / "cmdline").read_bytes()
            except OSError:
                continue
            if needle in cmdline and daemon.alive(int(entry)):
                found.append(int(entry))
        return found

    first = named()
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        pids = named()
        if not pids:
            break
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while named() and time.monotonic() < deadline:
            time.sleep(0.1)
    return len(first)


def _clean_up_after(settings: Settings, row: BuildRow, pid: int, group: bool) -> None:
    """Stop what the dead worker ``pid`` left running for ``row`` and remove its private
    root, when it is in this home."""
    if group:
        from alicorn.worker.local import _stop_group
        _stop_group(pid)
    work = settings.work_dir / row.id
    if work.exists():
        stopped = _stop_named(work)
        if stopped:
            log.info("build %s: stopped %d process(es) its dead worker left", row.id, stopped)
        remove_tree(work)


def reap_stale(settings: Settings, store: BuildStore, config: QueueConfig) -> list[str]:
    """End the builds of dead workers; returns their ids.

    A build is its worker's while the worker writes its heartbeat; one whose heartbeat is
    older than the lease is ended wherever its worker is.  On this host a worker whose
    process is gone, or that noted it stopped the build (:func:`note_lost`), needs no lease
    to pass.  Each ended build below ``max_attempts`` gets a new attempt, sent to the broker
    at once (or by :func:`redispatch_lost` when the broker is away)."""
    ended: list[str] = []
    stale = {r.id for r in store.stale(config.lease)}
    for row in store.running():
        local = _local_pid(row.worker)
        noted = _noted(settings, row.id)
        dead = local is not None and local[0] != os.getpid() and not daemon.alive(local[0])
        if row.id not in stale and not dead and noted is None:
            continue
        if noted is not None:
            reason = noted
        elif dead:
            reason = (f"the worker {row.worker} died during the build (its process is gone; "
                      f"last heartbeat {_stamp(row.heartbeat_at)})")
        else:
            reason = (f"the worker {row.worker} stopped answering: no heartbeat since "
                      f"{_stamp(row.heartbeat_at)} (lease {config.lease:g} s)")
        if row.cancel_requested_by:
            # It was being cancelled: that is why it ended, whatever stopped the worker.
            reason = f"cancelled by {row.cancel_requested_by} ({reason})"
        if dead and local is not None:
            _clean_up_after(settings, row, *local)
        new = store.abandon(row.id, reason=reason, worker=row.worker, retry=True,
                            max_attempts=config.max_attempts)
        # The row may have ended meanwhile (its worker finished, another janitor took it):
        # abandon changed nothing then.
        after = store.get(row.id)
        if after.state in FINAL and (after.error or "").startswith(reason):
            ended.append(row.id)
            log.warning("build %s: %s", row.id, after.error)
        _forget(settings, row.id)
        if new is not None:
            _dispatch(settings, store, new)
    _collect_ended(settings, store)
    return ended


def _dispatch(settings: Settings, store: BuildStore, row: BuildRow) -> None:
    """Send ``row`` to its workers; a broker that is away is logged (the row stays queued and
    undispatched, for :func:`redispatch_lost`)."""
    from alicorn.cluster.dispatch import dispatcher_for
    try:
        dispatcher_for(settings, store).redispatch(row)
    except Error as e:
        log.warning("build %s: not dispatched now: %s", row.id, e.message)


def _collect_ended(settings: Settings, store: BuildStore) -> None:
    """Remove the private roots in this home whose build has ended (a worker killed before
    it removed its own); a directory that is not a build's is left alone."""
    if not settings.work_dir.is_dir():
        return
    for path in settings.work_dir.iterdir():
        try:
            state = store.get(path.name).state
        except Error:
            continue
        if state in FINAL:
            _stop_named(path)
            remove_tree(path)


def redispatch_lost(settings: Settings, store: BuildStore, config: QueueConfig) -> list[str]:
    """Send again the queued builds whose message may be lost; returns their ids.

    A queued build nobody claimed for ``redispatch_after`` seconds may have lost its message
    (a broker that restarted without its data); another message costs a claim that fails
    at worst.  A broker that is still away is logged and tried again on the next round."""
    from alicorn.cluster.dispatch import dispatcher_for
    rows = store.undispatched(config.redispatch_after)
    if not rows:
        return []
    dispatcher = dispatcher_for(settings, store)
    sent = []
    for row in rows:
        try:
            dispatcher.redispatch(row)
        except Error as e:
            log.warning("queued builds not sent again now: %s", e.message)
            break
        sent.append(row.id)
    if sent:
        log.info("sent again %d queued build(s) no worker had claimed: %s", len(sent),
                 ", ".join(sent))
    return sent


class Janitor:
    """A daemon thread running :func:`reap_stale` and :func:`redispatch_lost` every
    ``lease / 4`` seconds until :meth:`stop`; a database or broker that is away is logged
    and the round tried again later."""

    def __init__(self, settings: Settings, config: QueueConfig):
        self.settings = settings
        self.config = config
        self.every = max(config.lease / 4, 0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="alicorn-janitor")
        self.rounds = 0

    def start(self) -> Janitor:
        self._thread.start()
        return self

    def round(self) -> None:
        """One pass: dead workers' builds, then lost messages."""
        store = BuildStore(self.settings.database_url)
        for step in (reap_stale, redispatch_lost):
            if self._stop.is_set():
                return
            try:
                step(self.settings, store, self.config)
            except Exception as e:  # a database away for a while: the next round retries
                log.warning("%s: %s: %s", step.__name__, type(e).__name__,
                            str(e).splitlines()[0] if str(e) else "")
        self.rounds += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.round()
            except Exception as e:  # BuildStore() itself: the database is not there
                log.warning("janitor: %s: %s", type(e).__name__, e)
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
