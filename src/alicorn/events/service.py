"""``alicorn serve``: the long-running service of one ALICORN_HOME.

One process, one loop, three parts, each step run to its end before the next:

1. the watcher (every ``interval`` seconds): looks at the watched repositories and feeds and
   imports what changed (alicorn.events.watch);
2. a tick of the events' state machine (on the turn after anything happened, else every
   ``interval`` seconds): new advisories become events, events are planned, rebuilds are
   submitted as builds and their builds observed (:func:`alicorn.events.runner.tick`);
3. the local worker (every turn): the next queued build, run to its end
   (:class:`alicorn.worker.local.BuildLoop`).

With the Celery backend (``queue.backend`` "celery") the builds run on the builder hosts
(``alicorn worker``), so the service runs no build loop: it watches, runs the ticks itself (in
this process: the database is all a tick needs, and the tick's PostgreSQL advisory lock keeps
it to one tick at a time across every ``alicorn serve`` of the cluster; the tick sends the
rebuilds' builds to the broker), and runs the reaper's janitor
(:class:`alicorn.cluster.reaper.Janitor`: dead workers' builds, lost messages).  The same tick
is the Celery task ``alicorn.tick`` for a deployment that schedules rounds elsewhere.

It holds the worker lock, so there is one service (or plain worker) per ALICORN_HOME.  It logs
one line per thing that happened to stdout (the run directory's ``worker.log`` when started in
the background).  SIGTERM (and SIGINT) stop it between steps.  A crash, even ``kill -9``
mid-build, leaves nothing half-published (publishing is a build's last step); on restart the
worker fails the dead build (:func:`alicorn.worker.local.reap`) and the next tick resubmits
or fails its rebuild.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import IO, Any

from alicorn.config import Settings
from alicorn.errors import Error

DEFAULT_INTERVAL = 10.0
# How long the loop sleeps when a turn did nothing (it wakes early on SIGTERM).
_NAP = 0.5


def _log(text: str, out: IO[str]) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for line in text.splitlines() or [""]:
        print(f"{stamp} {line}", file=out, flush=True)


def tick_lines(report: Any) -> list[str]:
    """The log lines of a :class:`~alicorn.events.runner.TickReport`: its messages, and in a
    dry run the plan's rebuilds, parents first."""
    lines = [str(x) for x in getattr(report, "messages", None) or ()]
    plan = getattr(report, "plan", None)
    for rebuild in getattr(plan, "rebuilds", None) or ():
        lines.append(f"plan: rebuild {rebuild.image} (now {rebuild.old_digest}, build "
                     f"{rebuild.old_build_id})"
                     + (f" after {rebuild.parent}" if rebuild.parent else "")
                     + f": {rebuild.reason}")
    return lines


def tick_activity(report: Any) -> int:
    """How many things the tick did (events found, planned, skipped; builds submitted and
    finished): what keeps an idle-exiting service alive."""
    return sum(int(getattr(report, name, 0) or 0)
               for name in ("discovered", "planned", "skipped", "submitted", "finished"))


class Service:
    """The loop of :func:`serve`, one turn at a time."""

    def __init__(self, settings: Settings, *, interval: float = DEFAULT_INTERVAL,
                 dry_run: bool = False, watch: bool = True, out: IO[str] | None = None):
        from alicorn.cluster.config import load_queue_config
        from alicorn.events.watch import Watcher
        from alicorn.worker.local import BuildLoop

        self.settings = settings
        self.queue = load_queue_config(settings)
        # The Celery backend's builds run on the builder hosts, not here.
        self.cluster = self.queue.celery
        self.interval = interval
        self.dry_run = dry_run
        self.watch = watch
        self.out = out if out is not None else sys.stdout
        self.watcher = Watcher(settings) if watch else None
        self.builds = None if dry_run or self.cluster else BuildLoop(settings)
        self.janitor: Any = None
        self._last_poll: float | None = None
        self.stopping = False
        self._errors: dict[str, str] = {}
        self._last_tick: list[str] = []
        self._last_tick_at: float | None = None
        self._tick_soon = False

    def log(self, text: str) -> None:
        _log(text, self.out)

    def start(self) -> None:
        if self.builds is not None:
            reaped = self.builds.start()
            if reaped:
                self.log(f"worker: {reaped} build(s) of a dead worker marked failed")
        if self.cluster and not self.dry_run:
            from alicorn.cluster.dispatch import _redacted
            from alicorn.cluster.reaper import Janitor

            self.janitor = Janitor(self.settings, self.queue).start()
            self.log(f"builds run on the Celery workers of {_redacted(self.queue.broker)}; "
                     "this service watches, ticks and reaps")

    def stop(self) -> None:
        if self.janitor is not None:
            self.janitor.stop()
            self.janitor = None

    def pending(self) -> bool:
        """Whether a rebuild is still to be submitted or finished, or an event to be
        planned: what ``--once`` waits for when the builds run elsewhere."""
        from alicorn.events.model import PLANNED, QUEUED
        from alicorn.events.store import EventStore

        events = EventStore(self.settings.database_url)
        return bool(events.rebuilds(states=[PLANNED, QUEUED]) or events.new_events())

    def _guarded(self, what: str, step: Callable[[], bool]) -> bool:
        """Run one step; an error is logged, never the end of the service."""
        try:
            done = step()
        except Error as e:
            self._failed(what, f"{what}: error: {e.diagnostics()}")
        except Exception:   # a bug: logged with its traceback, and the service goes on
            self._failed(what, f"{what}: internal error:\n{traceback.format_exc().rstrip()}")
        else:
            if self._errors.pop(what, None) is not None:
                self.log(f"{what}: working again")
            return done
        return False

    def _failed(self, what: str, text: str) -> None:
        # The same error turn after turn is logged once (a database that is down, say).
        if self._errors.get(what) != text:
            self._errors[what] = text
            self.log(text)

    def poll(self, *, force: bool = False) -> bool:
        """Look at the watched sources when ``interval`` has passed (or ``force``); True if
        something changed there."""
        if self.watcher is None:
            return False
        now = time.monotonic()
        if not force and self._last_poll is not None and now - self._last_poll < self.interval:
            return False
        self._last_poll = now
        watcher = self.watcher

        def step() -> bool:
            report = watcher.poll(record=not self.dry_run)
            for url in report.added_sources:
                self.log(f"watch {url}: watching (an image's recipe uses it)")
            for url in report.dropped_sources:
                self.log(f"watch {url}: no longer watched (no current image uses it)")
            for source in report.changed:
                self.log(source.line())
            for event_id in report.retried:
                self.log(f"event {event_id}: planned again (it lacked a fixed version; a "
                         f"repository changed)")
            return bool(report.changed or report.added_sources or report.retried)
        return self._guarded("watch", step)

    def tick(self) -> bool:
        """One tick of the events; True if it did something."""
        def step() -> bool:
            from alicorn.events.runner import tick

            report = tick(self.settings, dry_run=self.dry_run)
            lines = tick_lines(report)
            # What a tick waits for is said again every tick: logged when it changes.
            if lines != self._last_tick:
                for line in lines:
                    self.log(line)
                self._last_tick = lines
            elif self.dry_run:
                return False
            if self.dry_run:
                return bool(lines)
            return bool(tick_activity(report))
        return self._guarded("events", step)

    def build(self) -> bool:
        """Run the next queued build to its end; True if there was one."""
        if self.builds is None:
            return False
        loop = self.builds

        def step() -> bool:
            from alicorn.worker.local import build_line

            ran = loop.step()
            if ran is None:
                return False
            self.log(build_line(*ran))
            return True
        return self._guarded("worker", step)

    def turn(self) -> tuple[bool, bool]:
        """Watch (if due), tick (if due), build: ``(anything happened, a build ran)``.

        The tick is due right after something happened (a source changed, a build ended, the
        last tick moved something on) and otherwise every ``interval`` seconds, which is how
        soon an ``alicorn advisories import`` made outside the service is noticed.
        """
        active = self.poll()
        if self.stopping:
            return active, False
        now = time.monotonic()
        if active or self._tick_soon or self._last_tick_at is None \
                or now - self._last_tick_at >= self.interval:
            self._last_tick_at = now
            self._tick_soon = self.tick()
            active = self._tick_soon or active
        if self.stopping:
            return active, False
        built = self.build()
        self._tick_soon = self._tick_soon or built
        return active or built, built


def serve(settings: Settings, *, interval: float = DEFAULT_INTERVAL, once: bool = False,
          dry_run: bool = False, watch: bool = True, idle_exit: float | None = None,
          out: IO[str] | None = None) -> int:
    """Run the service until SIGTERM (or ``idle_exit`` seconds without activity); returns the
    exit code.

    ``once``: look once, then work until nothing is left (no queued build after a tick), and
    exit.  ``dry_run``: watch and plan, log the plan; no event is written and nothing built
    (the watched sources' digests are not recorded either, so a real run imports them again).
    ``watch=False``: events and builds only (advisories come from ``alicorn advisories
    import``).
    """
    from alicorn.worker.local import acquire_lock, lock_holder

    stream = out if out is not None else sys.stdout
    lock = None
    pidfile = settings.run_dir / "worker.pid"
    if not dry_run:
        lock = acquire_lock(settings)
        if lock is None:
            holder = lock_holder(settings)
            if holder is not None and holder != os.getpid():
                pidfile.write_text(f"{holder}\n")
            print(f"another alicorn service (or worker) is running for {settings.home}"
                  + (f" (pid {holder})" if holder else "") + "; `alicorn down` stops it",
                  file=sys.stderr)
            return 1
        pidfile.write_text(f"{os.getpid()}\n")

    service = Service(settings, interval=interval, dry_run=dry_run, watch=watch, out=stream)

    def on_term(signum: int, _frame: FrameType | None) -> None:
        service.stopping = True

    previous = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGINT)}
    mode = ", ".join(x for x in ("dry run" if dry_run else "", "no watch" if not watch else "",
                                 "once" if once else "") if x)
    service.log(f"alicorn service started (pid {os.getpid()}, {settings.home}"
                + (f", {mode}" if mode else "")
                + (f", watching every {interval:g} s" if watch else "")
                + (f", exits after {idle_exit:g} idle seconds" if idle_exit is not None
                   else "") + ")")
    try:
        service.start()
        if once:
            _once(service)
        else:
            _forever(service, idle_exit)
    finally:
        service.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if lock is not None:
            if pidfile.exists() and pidfile.read_text().strip() == str(os.getpid()):
                pidfile.unlink(missing_ok=True)
            lock.close()
    service.log("alicorn service stopped" + (" (SIGTERM)" if service.stopping else ""))
    return 0


def _once(service: Service) -> None:
    service.poll(force=True)
    if service.cluster and not service.dry_run:
        # The builds run on the workers: tick until every rebuild has ended.
        while not service.stopping:
            service.tick()
            if service.stopping or not service._guarded("events", service.pending):
                break
            _nap(service, min(service.interval, 2.0))
        return
    while not service.stopping:
        service.tick()
        if service.stopping or not service.build():
            break


def _nap(service: Service, seconds: float) -> None:
    """Sleep ``seconds``, waking early on SIGTERM."""
    deadline = time.monotonic() + seconds
    while not service.stopping and time.monotonic() < deadline:
        time.sleep(0.05)


def _forever(service: Service, idle_exit: float | None) -> None:
    last_active = time.monotonic()
    while not service.stopping:
        active, built = service.turn()
        if active:
            last_active = time.monotonic()
        if built:
            continue    # the queue may hold more, and the tick has a build to observe
        if idle_exit is not None and time.monotonic() - last_active > idle_exit:
            service.log(f"idle for {idle_exit:g} s; exiting")
            return
        _nap(service, _NAP)


__all__ = ["DEFAULT_INTERVAL", "Service", "serve", "tick_activity", "tick_lines"]
