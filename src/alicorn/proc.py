"""Every external command Alicorn runs goes through here.

The argv is logged (to the build log when there is one), the output is captured into that log
line by line, and a failure raises a typed :class:`~alicorn.errors.ToolError` that carries the
argv, the exit status and the tail of the output.

Work that may be cancelled from another thread (a build: ``alicorn cancel``) runs inside a
:class:`Stopper` (``with stopper.active(): ...``): every command started meanwhile is registered
with it, and :meth:`Stopper.stop` terminates them (SIGTERM, so that mmdebstrap and dnf undo
their mounts; SIGKILL a few seconds later) and makes the interrupted :func:`run` raise
:class:`Cancelled` instead of a tool failure.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO

from alicorn.errors import Error, ToolError, ToolMissing

_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


class BuildLog:
    """An append-only text log with a timestamp on each line.

    Thread safe: several commands may write to it at once (stdout and stderr readers).
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] = open(  # noqa: SIM115 (lives with self)
            path, "a", encoding="utf-8", errors="replace", buffering=1)
        self._lock = threading.Lock()

    def write(self, line: str, *, stream: str = "alicorn") -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._lock:
            self._f.write(f"{stamp} [{stream}] {line.rstrip()}\n")

    @property
    def closed(self) -> bool:
        return self._f.closed

    def close(self) -> None:
        with self._lock:
            self._f.close()

    def __enter__(self) -> BuildLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Cancelled(Error):
    """The work was cancelled on someone's request; the message says by whom."""


class Stopper:
    """The commands :func:`run` started for one piece of work (a build), so that another
    thread can stop them all.  Thread safe."""

    def __init__(self, grace: float = 5.0):
        self.grace = grace
        self.reason: str | None = None
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    @contextmanager
    def active(self) -> Iterator[Stopper]:
        """Register the commands this thread starts meanwhile with this stopper."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    def _add(self, proc: subprocess.Popen[bytes]) -> bool:
        """Register ``proc``; False (and it is terminated) when the stopper has stopped."""
        with self._lock:
            if self.reason is None:
                self._procs.add(proc)
                return True
        proc.terminate()  # a no-op once it has ended
        return False

    def _discard(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.discard(proc)

    def check(self) -> None:
        """Raise :class:`Cancelled` once the work is stopped."""
        if self.reason is not None:
            raise Cancelled(self.reason)

    def stop(self, reason: str, *, log: BuildLog | None = None) -> int:
        """Stop the work: SIGTERM every command running now, SIGKILL those still alive after
        ``grace`` seconds; returns how many there were.  Later commands are not started."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
            procs = list(self._procs)
        for proc in procs:
            if log is not None and proc.poll() is None:
                argv = proc.args if isinstance(proc.args, list) else [proc.args]
                log.write(f"stopping pid {proc.pid}: {shlex.join(str(a) for a in argv)}")
            proc.terminate()  # a no-op once it has ended
        deadline = time.monotonic() + self.grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                if log is not None:
                    log.write(f"pid {proc.pid} is still running after {self.grace:g} s: "
                              f"killing it")
                proc.kill()
        return len(procs)


_current: ContextVar[Stopper | None] = ContextVar("alicorn_stopper", default=None)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent (the worker) dies, so that a killed worker
    does not leave mmdebstrap or dnf writing into a build nobody records; SIGTERM lets them
    undo their mounts."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def which(tool: str, *, package: str | None = None) -> str:
    """The full path of ``tool``, or :class:`ToolMissing` naming the package that provides it."""
    path = shutil.which(tool)
    if path is None:
        hint = f"install the Debian package {package or tool} (scripts/bootstrap does)"
        raise ToolMissing(f"{tool} is not installed", argv=[tool], hint=hint)
    return path


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: BuildLog | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: bytes | None = None,
    timeout: float | None = None,
    check: bool = True,
    on_line: Callable[[str], None] | None = None,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and return its completed process with stdout and stderr as text.

    ``what`` names the step for error messages ("mmdebstrap", "push to the registry").
    ``on_line`` sees every output line as it arrives (for progress).
    """
    args = [os.fspath(a) for a in argv]
    what = what or Path(args[0]).name
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    stopper = _current.get()
    if stopper is not None:
        stopper.check()  # a cancelled build starts nothing more
    if log:
        log.write("$ " + shlex.join(args))
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            preexec_fn=_die_with_parent,
        )
    except FileNotFoundError as e:
        raise ToolMissing(f"{args[0]} is not installed", argv=args,
                          hint="run scripts/bootstrap to install what Alicorn needs") from e

    if stopper is not None:
        stopper._add(proc)
    out: list[str] = []
    err: list[str] = []
    tail: deque[str] = deque(maxlen=_TAIL_LINES)

    def pump(stream: IO[bytes], sink: list[str], name: str) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            sink.append(line)
            tail.append(line.rstrip("\n"))
            if log:
                log.write(line, stream=f"{what}:{name}")
            if on_line:
                on_line(line.rstrip("\n"))
        stream.close()

    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=pump, args=(proc.stdout, out, "out"), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, err, "err"), daemon=True),
    ]
    for t in readers:
        t.start()
    if input is not None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(input)
            proc.stdin.close()
        except BrokenPipeError:
            pass
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        proc.kill()
        proc.wait()
        for t in readers:
            t.join()
        raise ToolError(f"{what} did not finish within {timeout:.0f} s", argv=args,
                        output="\n".join(tail)) from e
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if stopper is not None:
            stopper._discard(proc)
    for t in readers:
        t.join()
    if log:
        log.write(f"exit status {rc}", stream=what)
    if stopper is not None and stopper.stopped and rc != 0:
        # It was stopped, not broken: say so rather than report a tool failure.
        assert stopper.reason is not None
        raise Cancelled(stopper.reason, hint=f"{what} was stopped (exit status {rc})")
    result = subprocess.CompletedProcess(args, rc, "".join(out), "".join(err))
    if check and rc != 0:
        output = "\n".join(tail)
        raise ToolError(f"{what} failed (exit status {rc}): {_last_meaningful(tail)}",
                        argv=args, returncode=rc, output=output, hint=_hint_for(output))
    return result


def _last_meaningful(lines: deque[str]) -> str:
    """The most telling line of a failed command's output: its last error line, else its last."""
    for line in reversed(lines):
        low = line.lower()
        if any(w in low for w in ("error", "e: ", "unable", "cannot", "failed", "no match")):
            return line.strip()
    for line in reversed(lines):
        if line.strip():
            return line.strip()
    return "no output"


def _hint_for(output: str) -> str | None:
    low = output.lower()
    if "no space left on device" in low:
        return "the disk is full: free space under ALICORN_HOME and build again"
    if "temporary failure resolving" in low or "could not resolve" in low:
        return "a repository host cannot be resolved: check the recipe's repository URLs"
    return None
