"""Background processes Alicorn starts itself (the local registry, the local worker).

There is no service manager on every host Alicorn runs on, so each process gets a pid file and a
log file under ``$ALICORN_HOME/run`` and is started in its own session so it outlives the CLI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def read_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    state: str      # R, S, D, Z, ...
    ppid: int
    pgid: int


def processes() -> Iterator[ProcessInfo]:
    """Every process /proc shows now (one that ends while being read is left out)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name in parentheses may hold spaces and parentheses: split after it.
        fields = stat.rsplit(")", 1)[1].split()
        yield ProcessInfo(int(entry.name), fields[0], int(fields[1]), int(fields[2]))


def spawn(argv: list[str], *, pidfile: Path, logfile: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> int:
    """Start ``argv`` detached from this process; returns its pid."""
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, env={**os.environ, **(env or {})},
                                cwd=cwd, close_fds=True)
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def stop(pidfile: Path, *, timeout: float = 10.0) -> bool:
    """Stop the process named by ``pidfile``; True if one was running."""
    pid = read_pid(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    return True
