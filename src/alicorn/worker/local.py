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
from typing import IO

from alicorn import daemon
from alicorn.build.pipeline import Outcome
from alicorn.config import Settings
from alicorn.errors import Error
from alicorn.fs import remove_tree
from alicorn.store.builds import FAILED, RUNNING, BuildStore
from alicorn.worker.run import run_claimed


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
    """Start the service in the background unless one is running: it runs the queued builds,
    and meanwhile watches the images' repositories and acts on the advisories that land
    (alicorn.events.service); it exits after 15 idle minutes."""
    if worker_running(settings) or daemon.read_pid(settings.run_dir / "worker.pid") is not None:
        return
    # Started for a build: no HTTP API (`alicorn serve` serves one when asked).
    start_service(settings, idle_exit=900, api=False)


def start_service(settings: Settings, *, idle_exit: float | None = None,
                  interval: float | None = None, api: bool = True,
                  listen: str | None = None) -> int:
    """Start ``alicorn serve`` detached (pid file ``run/worker.pid``, log ``run/worker.log``);
    returns its pid."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "alicorn", "serve"]
    if not api:
        argv.append("--no-api")
    elif listen is not None:
        argv += ["--listen", listen]
    if idle_exit is not None:
        argv += ["--idle-exit", f"{idle_exit:g}"]
    if interval is not None:
        argv += ["--interval", f"{interval:g}"]
    return daemon.spawn(argv, pidfile=settings.run_dir / "worker.pid",
                        logfile=settings.run_dir / "worker.log",
                        env={"ALICORN_HOME": str(settings.home)})


def lock_holder(settings: Settings) -> int | None:
    """The pid the running worker wrote into the lock file, if it is alive."""
    try:
        pid = int(_lock_path(settings).read_text().strip() or "0")
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and daemon.alive(pid) else None


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
        died = f"the worker ({host}:{pid}) died during the build"
        if row.cancel_requested_by:
            # It was being cancelled: that is why it ended, whatever stopped the worker.
            died = f"cancelled by {row.cancel_requested_by} ({died})"
        store.finish(row.id, FAILED, error=died)
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


def acquire_lock(settings: Settings) -> IO[str] | None:
    """The worker lock of this ALICORN_HOME, held until the returned file is closed (or the
    process ends, however it ends); None when another process holds it."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(_lock_path(settings), "a")  # noqa: SIM115 (held for the caller's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    # Who holds it, for whoever finds it held (a second service started by a race names the
    # first one in the pid file instead of itself).
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


class BuildLoop:
    """Claiming and running queued builds, one at a time: the part of a worker that the
    long-running service (alicorn.events.service) shares with ``alicorn worker``.

    :meth:`start` reaps the builds of a dead worker and removes the private roots a crash
    left; :meth:`step` runs the next queued build, if any, to its end.
    """

    def __init__(self, settings: Settings, store: BuildStore | None = None):
        self.settings = settings
        self.store = store if store is not None else BuildStore(settings.database_url)
        self.name = worker_name()

    def start(self) -> int:
        """Clean up after a dead worker; returns how many of its builds were failed."""
        reaped = reap(self.settings, self.store)
        collect_garbage(self.settings, self.store)
        return reaped

    def step(self) -> tuple[str, Outcome] | None:
        """Run the next queued build; ``(build id, outcome)``, or None when none is queued."""
        row = self.store.claim_next(self.name)
        if row is None:
            return None
        return row.id, run_claimed(self.settings, self.store, row)


def build_line(build_id: str, outcome: Outcome) -> str:
    """One log line for a finished build."""
    return f"build {build_id}: {outcome.state} {outcome.digest or outcome.error or ''}".rstrip()


def serve(settings: Settings, *, once: bool = False, idle_exit: float | None = None,
          poll: float = 0.1) -> int:
    """Run queued builds until stopped; returns the number of builds run."""
    lock = None
    if not once:
        lock = acquire_lock(settings)
        if lock is None:
            print("another worker is running for this ALICORN_HOME", file=sys.stderr)
            return 0
        (settings.run_dir / "worker.pid").write_text(f"{os.getpid()}\n")

    stopping = False

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    loop = BuildLoop(settings)
    done = 0
    idle_since = time.monotonic()
    loop.start()
    while not stopping:
        ran = loop.step()
        if ran is None:
            if once:
                break
            if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                break
            time.sleep(poll)
            continue
        print(build_line(*ran), flush=True)
        done += 1
        idle_since = time.monotonic()
        if once:
            break
    if lock is not None:
        lock.close()
    return done
