"""The embedded default's worker: one local process that takes queued builds from the database.

Builds never run in the submitter's process.  ``alicorn build`` queues the build and makes sure a
worker runs (:func:`ensure_worker`); the worker holds a lock file for its whole life, so there is
at most one per ``ALICORN_HOME`` unless more are started on purpose.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType

from alicorn import daemon
from alicorn.build.pipeline import Build
from alicorn.config import Settings
from alicorn.fs import remove_tree
from alicorn.store.builds import FAILED, BuildStore


def _lock_path(settings: Settings) -> Path:
    return settings.run_dir / "worker.lock"


def worker_running(settings: Settings) -> bool:
    """True when a worker holds the lock of this ALICORN_HOME."""
    path = _lock_path(settings)
    if not path.exists():
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def ensure_worker(settings: Settings) -> None:
    """Start a local worker in the background unless one is running."""
    if worker_running(settings):
        return
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    daemon.spawn([sys.executable, "-m", "alicorn", "worker", "--idle-exit", "900"],
                 pidfile=settings.run_dir / "worker.pid",
                 logfile=settings.run_dir / "worker.log",
                 env={"ALICORN_HOME": str(settings.home)})


def stop_worker(settings: Settings) -> bool:
    return daemon.stop(settings.run_dir / "worker.pid", timeout=30)


def reap(settings: Settings, store: BuildStore) -> int:
    """Mark builds whose local worker died as failed; returns how many."""
    host = socket.gethostname()
    reaped = 0
    for row in store.running():
        if not row.worker or not row.worker.startswith(host + ":"):
            continue
        pid = int(row.worker.rsplit(":", 1)[1])
        if pid != os.getpid() and not daemon.alive(pid):
            store.finish(row.id, FAILED, error=f"the worker ({row.worker}) died during the build")
            remove_tree(settings.work_dir / row.id)
            reaped += 1
    return reaped


class _Stop(Exception):
    pass


def serve(settings: Settings, *, once: bool = False, idle_exit: float | None = None,
          poll: float = 0.3) -> int:
    """Run queued builds until stopped; returns the number of builds run."""
    store = BuildStore(settings.database_url)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(_lock_path(settings), "a")  # noqa: SIM115 (held for the worker's life)
    if not once:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("another worker is running for this ALICORN_HOME", file=sys.stderr)
            return 0
        (settings.run_dir / "worker.pid").write_text(f"{os.getpid()}\n")

    stopping = False

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    name = f"{socket.gethostname()}:{os.getpid()}"
    done = 0
    idle_since = time.monotonic()
    reap(settings, store)
    while not stopping:
        row = store.claim_next(name)
        if row is None:
            if once:
                break
            if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                break
            time.sleep(poll)
            continue
        outcome = Build(settings, store, row).run()
        print(f"build {row.id}: {outcome.state} {outcome.digest or outcome.error or ''}",
              flush=True)
        done += 1
        idle_since = time.monotonic()
        if once:
            break
    lock.close()
    return done
