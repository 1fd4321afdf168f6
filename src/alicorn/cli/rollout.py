"""Running modules: deploy, update, rollback, status, modules, resume, undeploy, agent.

    alicorn deploy MODULE --image REF --port P [--replicas N] [--address A] [--content …]
    alicorn update MODULE [--to DIGEST|REF] [--deadline S] [--soak S] [--dry-run]
    alicorn rollback MODULE [--to DIGEST] [--dry-run]
    alicorn status MODULE            alicorn modules            alicorn resume [MODULE]
    alicorn undeploy MODULE          alicorn agent [MODULE...] [--interval S] [--once]

Every command that prints a result takes ``--json``: progress as JSON lines on stdout, the
last line the result (an :class:`~alicorn.rollout.controller.Outcome`, ``status``'s object, a
list for ``modules`` and ``resume``).  Exit codes: 0 done (or nothing to do), 1 the operation
failed or rolled back (the previous digest serves), 2 bad input (an unknown module, a busy
port, no such image).  The controller (and with it the database layer) is imported only when a
command runs, so that ``alicorn --help`` stays quick.
"""

from __future__ import annotations

import errno
import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from alicorn.errors import EXIT_FAILED, BadInput
from alicorn.monitor import Monitor
from alicorn.rollout.agent import short
from alicorn.rollout.model import (
    DEPLOYED,
    FAILED,
    ROLLBACK,
    ROLLED_BACK,
    UPDATED,
    ContentSpec,
    check_module_name,
)

if TYPE_CHECKING:
    from alicorn.config import Settings
    from alicorn.rollout.controller import Controller, Outcome

# No emoji: ":abc:" in a refused reference ("sha256:abc:") must not print as a picture.
out = Console(soft_wrap=True, highlight=False, emoji=False)
err = Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)

#: How many history entries and events ``status`` shows in text (JSON has them all).
HISTORY_SHOWN = 5
EVENTS_SHOWN = 8


class CliMonitor(Monitor):
    """Progress of an operation: JSON lines on stdout with ``--json``, else short lines on
    stderr (stdout keeps the result)."""

    def __init__(self, json_lines: bool):
        self.json_lines = json_lines

    def _emit(self, event: dict[str, Any]) -> None:
        print(json.dumps({**event, "t": round(time.time(), 3)}, sort_keys=True), flush=True)

    def step(self, name: str, total: int | None = None) -> None:
        if self.json_lines:
            self._emit({"event": "step", "name": name, "total": total})
        else:
            err.print(escape(name))

    def progress(self, done: int, total: int | None = None, detail: str | None = None) -> None:
        if self.json_lines:
            self._emit({"event": "progress", "done": done, "total": total, "detail": detail})

    def message(self, text: str) -> None:
        if self.json_lines:
            self._emit({"event": "message", "text": text})
        else:
            err.print(f"  {escape(text)}")

    def finish(self, state: str, **result: Any) -> None:
        """The command prints the result itself."""


def _settings() -> Settings:
    from alicorn.config import load_settings

    return load_settings()


def _controller(settings: Settings, as_json: bool, keys: tuple[Path, ...] = ()) -> Controller:
    from alicorn.rollout.controller import Controller

    return Controller(settings, monitor=CliMonitor(as_json), keys=keys)


def _name(name: str) -> str:
    return check_module_name(name)


def _check_port(address: str, port: int, controller: Controller) -> None:
    """BadInput naming the port when something listens on ``address:port`` already: said
    before any image is verified or pulled, so nothing starts.  (The proxy checks again when it
    starts, for a port taken in between.)"""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            s.bind((address, port))
            return
        except OSError as e:
            problem = e
    if problem.errno == errno.EADDRNOTAVAIL:
        raise BadInput(f"--address {address} is not an address of this host",
                       hint="give one of this host's addresses, or 0.0.0.0 for all")
    if problem.errno != errno.EADDRINUSE:
        raise BadInput(f"cannot listen on {address}:{port}: {problem.strerror}")
    owners = [str(m["name"]) for m in controller.modules() if m.get("port") == port]
    raise BadInput(f"port {port} on {address} is already in use"
                   + (f" (by module {', '.join(owners)})" if owners else ""),
                   hint=f"choose another --port, or stop what listens there "
                        f"(ss -ltnp 'sport = :{port}')")


def _print_json(data: Any) -> None:
    print(json.dumps(data, sort_keys=True), flush=True)


def _finish(outcome: Outcome, as_json: bool, *, port: int | None = None,
            address: str | None = None) -> None:
    """Print the outcome; exit 1 when it failed, or rolled back an update."""
    if as_json:
        _print_json(outcome.as_json())
    else:
        _say(outcome, port=port, address=address)
    if _is_failure(outcome):
        sys.exit(EXIT_FAILED)


def _is_failure(outcome: Outcome) -> bool:
    return outcome.result == FAILED or (outcome.result == ROLLED_BACK
                                        and outcome.kind != ROLLBACK)


def _say(o: Outcome, *, port: int | None = None, address: str | None = None) -> None:
    name = escape(o.module)
    took = f" ({o.seconds:.1f} s)" if o.seconds else ""
    why = escape(o.reason or "no reason given")
    from alicorn.rollout.controller import PLANNED, UNCHANGED

    if o.result == PLANNED:
        out.print(f"dry run: {o.kind} {name} {short(o.from_digest)} → {short(o.to_digest)}"
                  "; nothing was changed")
        for i, step in enumerate(o.plan, 1):
            out.print(f"  {i}. {escape(step)}")
    elif o.result == DEPLOYED:
        where = f" on http://{_host(address)}:{port}/" if port else ""
        count = len(o.extra.get("replicas") or [])
        out.print(f"[green]deployed[/] {name}: "
                  + (f"{count} replica(s) of " if count else "")
                  + f"{short(o.digest)}{where}{took}")
    elif o.result == UPDATED:
        out.print(f"[green]updated[/] {name}: {short(o.from_digest)} → {short(o.digest)}{took}")
    elif o.result == UNCHANGED:
        out.print(f"{name} already runs {short(o.digest)}; nothing to do")
    elif o.result == ROLLED_BACK and o.kind == ROLLBACK:
        out.print(f"[green]rolled back[/] {name}: {short(o.from_digest)} → "
                  f"{short(o.digest)}{took}")
    elif o.result == ROLLED_BACK:
        err.print(f"[red]rolled back[/] {name}: {short(o.to_digest)} failed, "
                  f"{short(o.digest)} serves again{took}\n  why: {why}")
    elif o.result == FAILED:
        err.print(f"[red]failed[/] {o.kind} {name}"
                  + (f" to {short(o.to_digest)}" if o.to_digest else "")
                  + f": {why}"
                  + (f"\n  {short(o.digest)} keeps serving" if o.digest else ""))
    else:
        out.print(f"{o.kind} {name}: {escape(o.result)} {short(o.digest)}{took}")


def _when(value: Any) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS`` (UTC), or as given when it is not one."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(value)


def _host(address: str | None) -> str:
    if not address or address in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{address}]" if ":" in address else address


_JSON = click.option("--json", "as_json", is_flag=True,
                     help="Progress as JSON lines; the last line is the result.")
_KEYS = click.option("--key", "keys", multiple=True,
                     type=click.Path(path_type=Path, dir_okay=False, exists=True),
                     help="Trust only this public key (PEM) instead of the host's; repeatable.")
_DRY = click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")


@click.command("deploy")
@click.argument("module")
@click.option("--image", required=True,
              help="The image: addr/name:tag (the agent follows the tag), addr/name@sha256:…, "
                   "a build id or a digest built here.")
@click.option("--replicas", type=click.IntRange(1, 64), default=2, show_default=True,
              help="How many containers serve it.")
@click.option("--port", type=click.IntRange(1, 65535), required=True,
              help="Where the proxy listens.")
@click.option("--address", default="0.0.0.0", show_default=True, help="The proxy's address.")
@click.option("--content", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Serve this host directory.")
@click.option("--content-volume", help="Serve this podman volume.")
@click.option("--content-image", help="Serve the files of this (verified) image.")
@click.option("--deadline", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Seconds every replica has to become ready.")
@click.option("--soak", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds new replicas must stay healthy after an update's switch.")
@_KEYS
@_DRY
@_JSON
def deploy(module: str, image: str, replicas: int, port: int, address: str,
           content: Path | None, content_volume: str | None, content_image: str | None,
           deadline: float, soak: float, keys: tuple[Path, ...], dry_run: bool,
           as_json: bool) -> None:
    """Run IMAGE as MODULE: REPLICAS verified containers behind a proxy on ADDRESS:PORT."""
    name = _name(module)
    given = [x for x in (content, content_volume, content_image) if x is not None]
    if len(given) > 1:
        raise BadInput("give at most one of --content, --content-volume, --content-image")
    spec = ContentSpec(directory=str(content.resolve()) if content else None,
                       volume=content_volume, image=content_image)
    controller = _controller(_settings(), as_json, keys)
    _check_port(address, port, controller)
    outcome = controller.deploy(name, image, port=port, replicas=replicas, address=address,
                                content=None if spec.empty() else spec, deadline=deadline,
                                soak=soak, dry_run=dry_run)
    _finish(outcome, as_json, port=port, address=address)


@click.command("update")
@click.argument("module")
@click.option("--to", "to", metavar="DIGEST|REF",
              help="The image to move to (default: what the module's tag names now).")
@click.option("--deadline", type=click.FloatRange(min=1),
              help="Seconds the new replicas have to become ready (default: the deploy's).")
@click.option("--soak", type=click.FloatRange(min=0),
              help="Seconds they must stay healthy after the switch (default: the deploy's).")
@_DRY
@_KEYS
@_JSON
def update(module: str, to: str | None, deadline: float | None, soak: float | None,
           dry_run: bool, keys: tuple[Path, ...], as_json: bool) -> None:
    """Move MODULE to a new image with no dropped request; roll back by itself when the new
    replicas fail.  Exit 1 (with the reason) when it rolled back."""
    from alicorn.digest import is_digest

    name = _name(module)
    if to is not None and not to.strip():
        raise BadInput("--to is empty", hint="give a digest (sha256:…) or an image reference")
    if to is not None and to.strip().startswith("sha256:") and not is_digest(to.strip()):
        raise BadInput(f"--to {to!r} is not a digest",
                       hint="a digest is sha256: and 64 hex digits; alicorn status "
                            f"{name} lists the digests of its history")
    controller = _controller(_settings(), as_json, keys)
    _finish(controller.update(name, to=to, deadline=deadline, soak=soak, dry_run=dry_run),
            as_json)


@click.command("rollback")
@click.argument("module")
@click.option("--to", "to", metavar="DIGEST",
              help="A digest of the module's history (default: the one it ran before).")
@_DRY
@_JSON
def rollback(module: str, to: str | None, dry_run: bool, as_json: bool) -> None:
    """Move MODULE back to the digest it ran before, with no dropped request."""
    from alicorn.digest import is_digest

    name = _name(module)
    if to is not None and not is_digest(to):
        raise BadInput(f"--to {to!r} is not a digest",
                       hint=f"alicorn status {name} lists the digests of its history")
    controller = _controller(_settings(), as_json)
    _finish(controller.rollback(name, to=to, dry_run=dry_run), as_json)


@click.command("status")
@click.argument("module")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status(module: str, as_json: bool) -> None:
    """MODULE's digest, image, port, replicas and their health, its last operation and its
    history (newest first)."""
    name = _name(module)
    data = _controller(_settings(), as_json).status(name)
    if as_json:
        print(json.dumps(data, sort_keys=True, default=str))
        return
    _print_status(data)


def _print_status(data: dict[str, Any]) -> None:
    spec = data.get("spec") or {}
    port = data.get("port") or spec.get("port")
    address = data.get("address") or spec.get("address")
    replicas = list(data.get("replicas") or [])
    healthy = sum(1 for r in replicas if r.get("healthy"))
    lines = [f"module    {data.get('module')}",
             f"digest    {data.get('digest') or '-'}",
             f"image     {data.get('image') or spec.get('repository') or '-'}"]
    proxy = data.get("proxy") or {}
    if port and proxy.get("running") is False:
        lines.append(f"serves    nothing: its proxy for port {port} is not running"
                     f" (alicorn resume {data.get('module')} starts it)")
    elif port:
        lines.append(f"serves    http://{_host(address)}:{port}/"
                     + (f" (listening on {address})" if address else ""))
    lines.append(f"replicas  {len(replicas)}, {healthy} healthy")
    for line in lines:
        out.print(escape(line))
    for r in replicas:
        mark = ("[green]healthy[/]" if r.get("healthy") else
                "[yellow]unchecked[/]" if r.get("healthy") is None else "[red]unhealthy[/]")
        out.print(f"  {escape(str(r.get('name')))}  {short(r.get('digest'))}  {mark}"
                  + (f"  {escape(str(r['state']))}" if r.get("state") else ""))
    op = data.get("operation") or data.get("last_operation")
    if isinstance(op, dict):
        result = op.get("result") or (
            f"interrupted while {op.get('phase')} (alicorn resume {data.get('module')} "
            "finishes or rolls it back)" if op.get("interrupted")
            else f"in progress ({op.get('phase')})")
        color = ({ROLLED_BACK: "red", FAILED: "red"}.get(str(result), "green")
                 if op.get("result") else "yellow")
        out.print(f"last op   {escape(str(op.get('kind')))} {short(op.get('from'))} → "
                  f"{short(op.get('to'))}: [{color}]{escape(str(result))}[/]"
                  + (f" at {_when(op.get('finished_at') or op.get('started_at'))}"
                     if op.get("finished_at") or op.get("started_at") else ""))
        if op.get("reason"):
            out.print(f"  why: {escape(str(op['reason']))}")
    history = list(data.get("history") or [])
    if history:
        out.print("history   (newest first, UTC)")
    for h in list(reversed(history))[:HISTORY_SHOWN]:
        color = {ROLLED_BACK: "red", FAILED: "red"}.get(str(h.get("result")), "green")
        out.print(f"  {_when(h.get('at'))}  [{color}]{escape(str(h.get('result')))}[/]  "
                  f"{short(h.get('digest'))}"
                  + (f" (from {short(h['from'])})" if h.get("from") else "")
                  + (f": {escape(str(h['reason']))}" if h.get("reason") else ""))
    if len(history) > HISTORY_SHOWN:
        out.print(f"  … {len(history) - HISTORY_SHOWN} older (--json has them all)")
    events = list(data.get("events") or [])
    if events:
        out.print("events    (last operation, newest last)")
    for ev in events[-EVENTS_SHOWN:]:
        out.print(f"  {_when(ev.get('at'))}  {escape(str(ev.get('kind')))}: "
                  f"{escape(str(ev.get('message')))}")


@click.command("modules")
@click.option("--json", "as_json", is_flag=True, help="A JSON list.")
def modules(as_json: bool) -> None:
    """Every module on this host, one line each: digest, healthy replicas, port."""
    rows = _controller(_settings(), as_json).modules()
    if as_json:
        print(json.dumps(rows, sort_keys=True, default=str))
        return
    if not rows:
        err.print("no modules (alicorn deploy runs one)")
    for m in rows:
        replicas = m.get("replicas")
        total = len(replicas) if isinstance(replicas, list) else replicas
        healthy = m.get("healthy")
        if isinstance(replicas, list) and healthy is None:
            healthy = sum(1 for r in replicas if r.get("healthy"))
        out.print(escape(f"{m.get('name')}  {short(m.get('digest'))}  "
                         f"{healthy if healthy is not None else '?'}/{total} healthy  "
                         f"port {m.get('port') or '-'}"))


@click.command("resume")
@click.argument("module", required=False)
@click.option("--json", "as_json", is_flag=True,
              help="Progress as JSON lines; the last line is a list of outcomes.")
def resume(module: str | None, as_json: bool) -> None:
    """After a reboot or a killed run: start the proxies and replicas that should run, and
    finish or roll back the operation each module's journal has open."""
    name = _name(module) if module is not None else None
    outcomes = _controller(_settings(), as_json).resume(name)
    if as_json:
        _print_json([o.as_json() for o in outcomes])
    elif not outcomes:
        out.print("nothing to resume")
    for o in outcomes if not as_json else ():
        out.print(escape(f"{o.module}: {o.result} {short(o.digest)}"
                         + (f" ({o.reason})" if o.reason else "")))
    if any(o.result == FAILED for o in outcomes):
        sys.exit(EXIT_FAILED)


@click.command("undeploy")
@click.argument("module")
def undeploy(module: str) -> None:
    """Stop MODULE's proxy and containers and forget it (its history goes too)."""
    name = _name(module)
    controller = _controller(_settings(), False)
    controller.remove(name)
    out.print(f"{escape(name)} removed: its proxy and replicas are stopped, its history gone")


@click.command("agent")
@click.argument("module_names", metavar="[MODULE]...", nargs=-1)
@click.option("--interval", type=click.FloatRange(1, 86400), default=30.0, show_default=True,
              help="Seconds between two looks at the registry.")
@click.option("--once", is_flag=True,
              help="Look once, update what moved, exit (0 if nothing failed).")
@_KEYS
@click.option("--json", "as_json", is_flag=True,
              help="Progress and outcomes as JSON lines (with --once the last is a summary).")
def agent(module_names: tuple[str, ...], interval: float, once: bool, keys: tuple[Path, ...],
          as_json: bool) -> None:
    """Follow the registry: when a module's tag names a new image, update the module to it
    (verified, with no dropped request, rolled back if it fails).  A refused image is not tried
    again until the tag moves.  Every module by default; SIGTERM or ^C stops it."""
    from alicorn.rollout.agent import UNCHANGED, Agent, failed

    names = [_name(m) for m in module_names]
    monitor = CliMonitor(as_json)
    follower = Agent(_settings(), modules=names, monitor=monitor, keys=keys)

    def report(outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if as_json:
                _print_json({"event": "outcome", **o.as_json()})
            elif _is_failure(o):
                _say(o)
            elif o.result == UNCHANGED:
                continue  # a resume that found everything running
            else:
                out.print(escape(f"{o.module}: {o.result} {short(o.digest)}"))

    if once:
        resumed = follower.resume()
        report(resumed)
        outcomes = follower.tick()
        report(outcomes)
        bad = failed(outcomes) + [o for o in resumed if o.result == FAILED]
        updated = [o for o in outcomes if o.result == UPDATED]
        if as_json:
            _print_json({"event": "summary", "updated": len(updated), "failed": len(bad),
                         "refused": dict(sorted(follower.refused.items())),
                         "outcomes": [o.as_json() for o in outcomes]})
        else:
            out.print(f"agent: {len(updated)} updated, {len(bad)} failed")
        if bad:
            sys.exit(EXIT_FAILED)
        return

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            # A second ^C: interrupt the update in progress (the controller rolls it back).
            raise KeyboardInterrupt
        err.print(f"{signal.Signals(signum).name}: stopping after the current step"
                  + (" (^C again interrupts it)" if signum == signal.SIGINT else ""))
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        err.print(escape(f"agent: following {', '.join(names) or 'every module'} every "
                         f"{interval:g} s (SIGTERM stops it)"))
        follower.run(interval, stop, report=report)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    err.print("agent stopped")


COMMANDS: list[click.Command] = [deploy, update, rollback, status, modules, resume, undeploy,
                                 agent]
