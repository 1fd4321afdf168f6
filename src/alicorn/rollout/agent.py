"""The agent: follows the registry and applies new signed images to the modules it watches.

Each :meth:`Agent.tick` looks, for every module, at the digest its tag names in the registry
now (:meth:`Controller.latest`) and at the digest it serves; when they differ it updates the
module (:meth:`Controller.update`, which verifies, starts, shifts, soaks, and rolls back by
itself).  A digest that was refused (it failed verification, did not exist, or was rolled
back) is not tried again until the tag names another one: the agent remembers it for as long
as it runs, and the module's history (the controller records a ``failed`` or ``rolled_back``
entry naming it) keeps it across restarts — the same rule keeps a rollback made by hand from
being undone by the next tick.  A rollback by hand is thus undone only by a new image.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alicorn.config import Settings
from alicorn.errors import Error
from alicorn.monitor import Monitor
from alicorn.rollout.interface import ModuleBusy, NoSuchImage, UntrustedImage
from alicorn.rollout.model import FAILED, ROLLED_BACK, UPDATED

#: Outcome.result of a resume that found nothing open (alicorn.rollout.controller.UNCHANGED;
#: the controller module is imported only when an agent is made).
UNCHANGED = "unchanged"

if TYPE_CHECKING:
    from alicorn.rollout.controller import Controller, Outcome

#: Outcome.kind of what the agent reports itself (the registry could not be asked, …).
AGENT = "agent"
#: The longest the loop sleeps in one go, so that a stop is noticed even with a long interval.
MAX_NAP = 5.0
#: Results that make a digest refused until the tag moves.
REFUSED_RESULTS = (FAILED, ROLLED_BACK)


def short(digest: str | None) -> str:
    """``sha256:0123456789ab`` (or ``-``): enough of a digest to tell it in a line.  What is
    no digest (a reference an update was refused for) is given whole: cut, it would misname."""
    if not digest:
        return "-"
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{12,64}", hexpart):
        return digest
    return f"{algo}:{hexpart[:12]}"


class Agent:
    """Keeps ``modules`` (every module of this home when empty) on the digest their tag names.

    ``controller`` defaults to one on ``settings`` reporting to ``monitor``; ``keys`` are given
    to it (trust only these public keys instead of the host's)."""

    def __init__(self, settings: Settings, controller: Controller | None = None, *,
                 modules: Sequence[str] = (), monitor: Monitor | None = None,
                 keys: Sequence[Path] = ()):
        self.settings = settings
        self.monitor = monitor or Monitor()
        if controller is None:
            from alicorn.rollout.controller import Controller

            controller = Controller(settings, monitor=self.monitor, keys=keys)
        self.controller = controller
        self.modules = tuple(modules)
        #: module → the digest refused last (not tried again while its tag names it).
        self.refused: dict[str, str] = {}
        self._resumed = False

    # -- one pass ------------------------------------------------------------------------------
    def resume(self) -> list[Outcome]:
        """Finish or roll back what a reboot or a killed run left open (once per agent)."""
        self._resumed = True
        names = self.modules or (None,)
        outcomes: list[Outcome] = []
        for name in names:
            try:
                outcomes += self.controller.resume(name)
            except Error as e:
                self.monitor.message(f"resume{' ' + name if name else ''}: {e.diagnostics()}")
        for o in outcomes:
            if o.result == UNCHANGED:  # nothing was open: its replicas were running already
                continue
            self.monitor.message(f"{o.module}: resumed ({o.result}"
                                 + (f": {o.reason}" if o.reason else "") + ")")
        return outcomes

    def tick(self) -> list[Outcome]:
        """Look at every module once and update those whose tag moved.  Returns what was done
        (an update's outcome, or a failed one when the registry could not be asked); modules
        already on their tag's digest, or whose tag still names a refused digest, give none."""
        if not self._resumed:
            self.resume()
        serving = self._serving()
        outcomes: list[Outcome] = []
        for name in self.modules or sorted(serving):
            if name not in serving:
                outcomes.append(self._outcome(name, None, FAILED,
                                              f"no module named {name!r} on this host"))
                continue
            outcome = self._follow(name, serving[name])
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def _serving(self) -> dict[str, str | None]:
        return {str(m["name"]): m.get("digest") for m in self.controller.modules()}

    def _follow(self, name: str, digest: str | None) -> Outcome | None:
        try:
            latest = self.controller.latest(name)
        except Error as e:
            self.monitor.message(f"{name}: cannot ask the registry: {e.diagnostics()}")
            return self._outcome(name, digest, FAILED,
                                 f"cannot ask the registry: {e.diagnostics()}")
        if latest is None:
            self.monitor.message(f"{name}: its tag names no image in the registry")
            return None
        if latest == digest:
            self.refused.pop(name, None)  # the tag came back to what serves: nothing to hold
            return None
        if self._is_refused(name, latest):
            return None
        self.monitor.step(f"{name}: {short(digest)} → {short(latest)}")
        try:
            outcome = self.controller.update(name, to=latest)
        except ModuleBusy as e:
            # Another operation (a person's `alicorn update`) holds the module: look again
            # at the next tick rather than count it as this image's fault.
            self.monitor.message(f"{name}: busy, tried again at the next tick: {e.message}")
            return None
        except (UntrustedImage, NoSuchImage) as e:
            self._refuse(name, latest, e.diagnostics())
            return self._outcome(name, digest, FAILED, e.diagnostics(), to=latest)
        except Error as e:
            # Not the image's fault as far as we know (podman, the proxy, the registry):
            # tried again at the next tick.
            self.monitor.message(f"{name}: the update to {short(latest)} failed: "
                                 f"{e.diagnostics()}")
            return self._outcome(name, digest, FAILED, e.diagnostics(), to=latest)
        if outcome.result in REFUSED_RESULTS:
            self._refuse(name, latest, outcome.reason or outcome.result, outcome.op_id)
        elif outcome.result == UPDATED:
            self.refused.pop(name, None)
            self.monitor.message(f"{name}: updated to {short(outcome.digest)}")
        return outcome

    def _is_refused(self, name: str, latest: str) -> bool:
        if self.refused.get(name) == latest:
            return True
        # What another run of the agent, or a person, left: the module's newest history entry
        # refused this digest (a failed update to it, a rollback from it).
        try:
            history = self.controller.status(name).get("history") or []
        except Error as e:
            self.monitor.message(f"{name}: cannot read its history: {e.diagnostics()}")
            return False
        newest = _newest(history)
        if newest is not None and newest.get("result") in REFUSED_RESULTS and latest in (
                newest.get("digest"), newest.get("from")):
            self.refused[name] = latest
            self.monitor.message(f"{name}: not trying {short(latest)} again, its last "
                                 f"operation ended {newest.get('result')}"
                                 + (f" ({newest['reason']})" if newest.get("reason") else "")
                                 + "; waiting for the tag to move")
            return True
        return False

    def _refuse(self, name: str, digest: str, why: str, op_id: str | None = None) -> None:
        self.refused[name] = digest
        text = f"refused {short(digest)}, not tried again until its tag moves: {why}"
        self.monitor.message(f"{name}: {text}")
        # In the module's events too, beside the operation that failed (`alicorn status`
        # shows the last operation's events).
        try:
            store = self.controller.store
            if op_id is None:
                last = store.last_op(name)
                op_id = last.id if last is not None else None
            store.add_event(name, AGENT, f"agent: {text}", op_id)
        except Error as e:
            self.monitor.message(f"{name}: cannot record the refusal: {e.diagnostics()}")

    def _outcome(self, name: str, digest: str | None, result: str, reason: str, *,
                 to: str | None = None) -> Outcome:
        from alicorn.rollout.controller import Outcome

        return Outcome(module=name, kind=AGENT, result=result, digest=digest,
                       from_digest=digest, to_digest=to, reason=reason)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, interval: float, stop: threading.Event, *,
            report: Any = None) -> list[Outcome]:
        """Resume, then tick every ``interval`` seconds until ``stop`` is set (a tick in
        progress finishes first; its operation is journalled either way).  ``report`` is
        called with each tick's outcomes (and with resume's).  Returns the failed ones."""
        kept: list[Outcome] = []
        resumed = self.resume()
        if report is not None and resumed:
            report(resumed)
        while not stop.is_set():
            try:
                outcomes = self.tick()
            except Error as e:
                # The store or the registry is unusable this once: say so, try again later.
                self.monitor.message(f"the agent's pass failed: {e.diagnostics()}")
                outcomes = []
            if report is not None and outcomes:
                report(outcomes)
            kept += failed(outcomes)
            _nap(stop, interval)
        return kept


def failed(outcomes: Iterable[Outcome]) -> list[Outcome]:
    """The outcomes that are failures (an update refused, rolled back, or not done)."""
    return [o for o in outcomes if o.result in REFUSED_RESULTS]


def _newest(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    # status() gives the history oldest first; sort by time anyway so the order is not assumed.
    if not history:
        return None
    return max(enumerate(history), key=lambda item: (str(item[1].get("at") or ""), item[0]))[1]


def _nap(stop: threading.Event, seconds: float) -> None:
    remaining = seconds
    while remaining > 0 and not stop.is_set():
        step = min(remaining, MAX_NAP)
        stop.wait(step)
        remaining -= step
