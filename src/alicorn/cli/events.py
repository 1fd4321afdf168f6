"""``alicorn events``: the advisory events, the rebuilds they made, and a dry-run plan.

    alicorn events [--json] [--state S] [--limit N]   the events, newest first
    alicorn events show ID [--json]                   one event, its rebuilds, builds, checks
    alicorn events plan [--json]                      what the next tick would rebuild
    alicorn events retry ID...                        plan failed events again

``--json`` prints the command-line contract's form: a list of events with ``id``,
``advisory``, ``state``, ``reason`` and ``builds`` [{``image``, ``old_digest``, ``new_digest``,
``state``, ``tests``, ``gate``, ...}] (see :meth:`alicorn.events.store.EventStore.events_json`).
Exit codes: 0, 2 for bad input or an unknown event.  Advisory text is printed with
``click.echo`` and its control characters replaced, never through rich markup.
"""

from __future__ import annotations

import json
import re
from typing import Any

import click

from alicorn.events.model import EVENT_STATES

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _clean(text: Any) -> str:
    return _CONTROL.sub("\ufffd", "" if text is None else str(text))


def _store() -> Any:
    from alicorn.config import load_settings
    from alicorn.events.store import EventStore

    return EventStore(load_settings().database_url)


def _short(digest: str | None) -> str:
    return digest.split(":", 1)[-1][:12] if digest else "-"


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:-1]))
        click.echo(_clean(f"{line}  {r[-1]}".rstrip()))


@click.group("events", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of events.")
@click.option("--state", type=click.Choice(EVENT_STATES), help="Only events in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="At most this many, newest first.")
@click.pass_context
def events(ctx: click.Context, as_json: bool, state: str | None, limit: int) -> None:
    """Advisory events (new → planned → building → done | failed | skipped) and their
    rebuilds.  Without a subcommand: the events, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    store = _store()
    rows = store.events(state=state, limit=limit)
    listed = store.events_json(rows)
    if as_json:
        click.echo(json.dumps(listed, indent=2, sort_keys=True))
        return
    if not listed:
        click.echo("no events" + (f" in state {state}" if state else ""))
        return
    table = [[e["id"], e["advisory"], e["state"],
              ",".join(b["image"] for b in e["builds"]) or "-", e["reason"] or ""]
             for e in listed]
    _table(table, ["ID", "ADVISORY", "STATE", "IMAGES", "REASON"])


@events.command("show")
@click.argument("ident")
@click.option("--json", "as_json", is_flag=True, help="The event as one JSON object.")
def show(ident: str, as_json: bool) -> None:
    """One event (ID or a unique prefix): its advisory, state, and each rebuild with its
    build, digests, tests, gate and reason."""
    store = _store()
    event = store.get(ident)
    data = store.event_json(event)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    lines = [
        f"event     {data['id']}",
        f"advisory  {data['advisory']} ({data['format']}, {data['type']}, "
        f"severity {data['severity'] or '-'})",
        f"cves      {', '.join(data['cves']) or '-'}",
        f"state     {data['state']}" + (f": {data['reason']}" if data["reason"] else ""),
        f"created   {data['created']}   updated {data['updated']}",
    ]
    if not data["builds"]:
        lines.append("rebuilds  none")
    for b in data["builds"]:
        lines += [
            f"rebuild   {b['image']}: {b['state']}"
            + (f" (layered on {b['parent']})" if b["parent"] else ""),
            f"  build     {b['build_id'] or '-'} (attempt {b['attempt']}), replaces "
            f"{b['old_build_id'] or '-'}",
            f"  digest    {b['old_digest'] or '-'} -> {b['new_digest'] or '-'}",
            f"  tests     {b['tests'] or '-'}   gate {b['gate'] or '-'}",
            f"  fixes     {', '.join(b['advisories']) or '-'}",
        ]
        if b["reason"]:
            lines.append(f"  reason    {b['reason']}")
    for line in lines:
        click.echo(_clean(line))


@events.command("retry")
@click.argument("idents", nargs=-1, required=True)
def retry(idents: tuple[str, ...]) -> None:
    """Plan failed events (IDs or unique prefixes) again, e.g. once the repositories hold the
    fixed version or a broken update has been replaced.  The service takes them up at its
    next tick; the earlier rebuilds and builds stay on record."""
    from alicorn.errors import BadInput
    from alicorn.events.model import FAILED, RETRIED

    store = _store()
    events_ = [store.get(ident) for ident in idents]
    not_failed = [e for e in events_ if e.state != FAILED]
    if not_failed:
        raise BadInput("only failed events are retried: " + ", ".join(
            f"{e.id} is {e.state}" for e in not_failed))
    for event_id in store.retry([e.id for e in events_], why=f"{RETRIED} by hand"):
        click.echo(f"event {event_id}: new again; the service plans it at its next tick")


@events.command("plan")
@click.option("--json", "as_json", is_flag=True, help="The plan as one JSON object.")
def plan_(as_json: bool) -> None:
    """Dry run: for the advisories without a plan yet (no event, or a new one), what would be
    rebuilt, parents first, and what skipped.  Writes nothing."""
    from alicorn.config import load_settings
    from alicorn.events.runner import tick

    report = tick(load_settings(), dry_run=True)
    plan = report.plan
    assert plan is not None
    if as_json:
        click.echo(json.dumps({
            "undiscovered": report.discovered, "planned": report.planned,
            "skipped_count": report.skipped, "deferred": report.deferred,
            "rebuilds": [{"image": r.image, "old_build_id": r.old_build_id,
                          "old_digest": r.old_digest, "advisories": list(r.advisories),
                          "parent": r.parent, "reason": r.reason} for r in plan.rebuilds],
            "affects": {k: list(v) for k, v in sorted(plan.affects.items())},
            "skipped": dict(sorted(plan.skipped.items())),
            "messages": report.messages,
        }, indent=2, sort_keys=True))
        return
    if not plan.rebuilds and not plan.skipped:
        click.echo("nothing to plan: every advisory has its plan already")
        return
    for i, r in enumerate(plan.rebuilds, 1):
        click.echo(_clean(f"{i}. rebuild {r.image} (replaces {_short(r.old_digest)})"
                          + (f" after {r.parent}" if r.parent else "")
                          + f": {r.reason}"))
    for advisory, reason in sorted(plan.skipped.items()):
        click.echo(_clean(f"skip {advisory}: {reason}"))
    for message in report.messages:
        if "would wait" in message:
            click.echo(_clean(message))
