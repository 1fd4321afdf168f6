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
from alicorn.errors import Error
from alicorn.fs import remove_tree
from alicorn.store.builds import FAILED, RUNNING, BuildStore


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
    if worker_running(settings) or daemon.read_pid(settings.run_dir / "worker.pid") is not None:
        return
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    daemon.spawn([sys.executable, "-m", "alicorn", "worker", "--idle-exit", "900"],
                 pidfile=settings.run_dir / "worker.pid",
                 logfile=settings.run_dir / "worker.log",
                 env={"ALICORN_HOME": str(settings.home)})


def stop_worker(settings: Settings) -> bool:
    return daemon.stop(settings.run_dir / "worker.pid", timeout=30)


def worker_name() -> str:
    """``host:pid``, and ``host:pid:group`` when the worker leads its own process group, so
    that whoever finds it dead can stop the tools it left running."""
    pid = os.getpid()
    name = f"{socket.gethostname()}:{pid}"
    return name + ":group" if os.getpgid(0) == pid else name


def _stop_group(pgid: int, timeout: float = 15.0) -> None:
    """TERM, then KILL, the process group a dead worker led (its mmdebstrap, dnf, ...)."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def reap(settings: Settings, store: BuildStore) -> int:
    """Mark builds whose local worker died as failed, stop what it left running and remove
    their private roots; returns how many."""
    host = socket.gethostname()
    reaped = 0
    for row in store.running():
        if not row.worker or not row.worker.startswith(host + ":"):
            continue
        parts = row.worker.split(":")
        pid = int(parts[1])
        if pid == os.getpid() or daemon.alive(pid):
            continue
        if parts[2:] == ["group"]:
            _stop_group(pid)
        store.finish(row.id, FAILED, error=f"the worker ({host}:{pid}) died during the build")
        remove_tree(settings.work_dir / row.id)
        reaped += 1
    return reaped


def collect_garbage(settings: Settings, store: BuildStore) -> None:
    """Remove private build roots whose build is over (left by a crash)."""
    if not settings.work_dir.is_dir():
        return
    for path in settings.work_dir.iterdir():
        try:
            state = store.get(path.name).state
        except Error:
            state = None
        if state != RUNNING:
            remove_tree(path)


def serve(settings: Settings, *, once: bool = False, idle_exit: float | None = None,
          poll: float = 0.1) -> int:
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
    name = worker_name()
    done = 0
    idle_since = time.monotonic()
    reap(settings, store)
    collect_garbage(settings, store)
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
