"""Events and rebuilds in the database: discovery, transitions, links, and their JSON view.

Every method is one transaction unless it is handed a session (``session=``), in which case it
only adds to that session's transaction; the runner composes several steps that way so that a
crash leaves either all of a step or none of it.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Select, Table, and_, bindparam, delete, exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from alicorn.errors import BadInput, NotFound
from alicorn.events.model import (
    EVENT_STATES,
    EVENT_TYPES,
    FAILED,
    MISSING_FIX,
    NEW,
    REBUILD_STATES,
)
from alicorn.store.advisory_models import AdvisoryCveRow, AdvisoryPackageRow, AdvisoryRow
from alicorn.store.builds import now
from alicorn.store.db import session_factory
from alicorn.store.event_models import EventRebuildRow, EventRow, RebuildRow
from alicorn.store.models import BuildRow, PackageRow

__all__ = ["EventKey", "EventStore", "new_event_id"]

_EVENTS = cast(Table, EventRow.__table__)
# Rows per executemany and keys per IN (...) (SQLite allows 32766 bound parameters).
_CHUNK = 2000
_counter = itertools.count()


def new_event_id() -> str:
    """Sortable by creation time; unique without coordination even for 100k made at once
    (milliseconds, a per-process sequence, then randomness)."""
    return f"{int(time.time() * 1000):011x}{next(_counter) % 0x1000000:06x}{secrets.token_hex(4)}"


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class EventStore:
    """The events and rebuilds in the database at ``database_url`` (migrated on open)."""

    def __init__(self, database_url: str):
        self.database_url = database_url
        self._sessions = session_factory(database_url)

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def _use(self, session: Session | None) -> Iterator[Session]:
        if session is not None:
            yield session
            return
        with self._sessions.begin() as own:
            yield own

    # -- discovery ------------------------------------------------------------------------

    def undiscovered(self, types: Collection[str] = EVENT_TYPES, *,
                     session: Session | None = None) -> list[tuple[str, str, str]]:
        """The (id, format, digest) of every stored advisory of ``types`` without an event,
        ordered by id and format: what :meth:`discover` would turn into events."""
        adv = AdvisoryRow
        query = _without_event(select(adv.id, adv.format, adv.digest), types)
        with self._use(session) as s:
            return [(r.id, r.format, r.digest) for r in s.execute(query)]

    def discover(self, types: Collection[str] = EVENT_TYPES, *,
                 session: Session | None = None) -> list[EventRow]:
        """:meth:`discover_values` as (transient) :class:`EventRow` objects."""
        return [EventRow(**values) for values in self.discover_values(types, session=session)]

    def discover_values(self, types: Collection[str] = EVENT_TYPES, *,
                        session: Session | None = None) -> list[dict[str, Any]]:
        """One NEW event for every stored advisory of ``types`` that has none for its id,
        format and content digest (the same advisory imported again is the same event; a newer
        version of it, a new one).  Returns the events made, in advisory order.

        Set-based: one anti-join finds what is missing, CVEs come from the advisory store's
        index, rows are inserted in batches; a concurrent discovery that made some of them
        first is not an error (the unique key drops the duplicates).  Returns each event's
        column values (building 100k ORM objects would cost more than the discovery).
        """
        adv = AdvisoryRow
        query = _without_event(
            select(adv.id, adv.format, adv.digest, adv.type, adv.severity, adv.source), types)
        with self._use(session) as s:
            missing = list(s.execute(query))
            if not missing:
                return []
            cves = self._cves(s, [(r.id, r.format) for r in missing])
            stamp = now()
            rows = []
            for r in missing:
                rows.append({
                    "id": new_event_id(), "advisory_id": r.id, "advisory_format": r.format,
                    "advisory_digest": r.digest, "advisory_type": r.type,
                    "severity": r.severity, "cves": cves.get((r.id, r.format), []),
                    "source": r.source, "state": NEW, "reason": None, "dry_run": False,
                    "created_at": stamp, "updated_at": stamp})
            insert = self._insert_ignoring_duplicates(s)
            conn = s.connection()
            for chunk in _chunks(rows):
                conn.execute(insert, list(chunk))
            # What was inserted (a concurrent discovery may have made some first), read as
            # ids only: building the rows from their values is cheaper than loading them.
            ids = [r["id"] for r in rows]
            stored: set[str] = set()
            for chunk in _chunks(ids):
                stored.update(conn.execute(select(_EVENTS.c.id)
                                           .where(_EVENTS.c.id.in_(chunk))).scalars())
        return [r for r in rows if r["id"] in stored]

    @staticmethod
    def _insert_ignoring_duplicates(session: Session) -> Any:
        dialect = session.get_bind().dialect.name
        if dialect == "sqlite":
            return sqlite.insert(_EVENTS).on_conflict_do_nothing()
        if dialect == "postgresql":
            return postgresql.insert(_EVENTS).on_conflict_do_nothing()
        return _EVENTS.insert()

    @staticmethod
    def _cves(session: Session, keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
        out: dict[tuple[str, str], list[str]] = defaultdict(list)
        ids = sorted({k[0] for k in keys})
        wanted = set(keys)
        for chunk in _chunks(ids):
            query = (select(AdvisoryCveRow.advisory_id, AdvisoryCveRow.advisory_format,
                            AdvisoryCveRow.cve)
                     .where(AdvisoryCveRow.advisory_id.in_(chunk))
                     .order_by(AdvisoryCveRow.pk))
            for row in session.execute(query):
                key = (row.advisory_id, row.advisory_format)
                if key in wanted:
                    out[key].append(row.cve)
        return out

    # -- events ---------------------------------------------------------------------------

    def events(self, *, state: str | None = None, states: Collection[str] | None = None,
               limit: int | None = None, session: Session | None = None) -> list[EventRow]:
        """Events, newest first; only those in ``state`` (or ``states``) when given."""
        query = select(EventRow).order_by(EventRow.created_at.desc(), EventRow.id.desc())
        wanted = ([state] if state else []) + list(states or ())
        for s_ in wanted:
            if s_ not in EVENT_STATES:
                raise BadInput(f"no event state {s_!r}",
                               hint=f"one of {', '.join(EVENT_STATES)}")
        if wanted:
            query = query.where(EventRow.state.in_(wanted))
        if limit is not None:
            if limit < 0:
                raise BadInput(f"--limit must not be negative (got {limit})")
            query = query.limit(limit)
        with self._use(session) as s:
            return list(s.scalars(query))

    def get(self, ident: str, *, session: Session | None = None) -> EventRow:
        """The event ``ident`` (an id or a unique prefix of one)."""
        ident = ident.strip()
        if not ident:
            raise BadInput("an event id must not be empty", hint="alicorn events lists them")
        with self._use(session) as s:
            row = s.get(EventRow, ident)
            if row is not None:
                return row
            rows = list(s.scalars(select(EventRow).where(
                EventRow.id.startswith(ident, autoescape=True)).limit(2)))
        if len(rows) > 1:
            raise BadInput(f"event id prefix {ident!r} is ambiguous",
                           hint="give more of the id")
        if not rows:
            raise NotFound(f"no event {ident!r} in this store", hint="alicorn events lists them")
        return rows[0]

    def new_events(self, *, session: Session | None = None) -> list[EventKey]:
        """The NEW events' ids and advisory keys, oldest first (a light query: the planner
        may take 100k of them at once)."""
        query = (select(_EVENTS.c.id, _EVENTS.c.advisory_id, _EVENTS.c.advisory_format,
                        _EVENTS.c.advisory_digest, _EVENTS.c.reason)
                 .where(_EVENTS.c.state == NEW)
                 .order_by(_EVENTS.c.created_at, _EVENTS.c.id))
        with self._use(session) as s:
            return [EventKey(*row) for row in s.execute(query)]

    def unheld(self, keys: Collection[tuple[str, str]], *, session: Session | None = None
               ) -> dict[tuple[str, str], list[str]]:
        """Of the advisories ``keys`` (id, format), those that name only rpm packages no
        build of this store holds by name, with those names: they cannot affect any image,
        so the planner need not read them.  One indexed look-up per chunk; every other
        advisory (an ecosystem package, whose name a scan normalises) is left to the planner.
        """
        wanted = set(keys)
        names: dict[tuple[str, str], set[str]] = defaultdict(set)
        candidate: dict[tuple[str, str], bool] = {}
        held = exists().where(PackageRow.type == "rpm", PackageRow.name == AdvisoryPackageRow.name)
        with self._use(session) as s:
            for chunk in _chunks(sorted({k[0] for k in wanted})):
                query = (select(AdvisoryPackageRow.advisory_id, AdvisoryPackageRow.advisory_format,
                                AdvisoryPackageRow.kind, AdvisoryPackageRow.name,
                                held.label("held"))
                         .where(AdvisoryPackageRow.advisory_id.in_(chunk)))
                for row in s.execute(query):
                    key = (row.advisory_id, row.advisory_format)
                    if key not in wanted:
                        continue
                    names[key].add(row.name)
                    if row.kind != "rpm" or row.held:
                        candidate[key] = True
                    else:
                        candidate.setdefault(key, False)
        return {k: sorted(names[k]) for k, c in candidate.items() if not c}

    def set_state(self, event_ids: Iterable[str], state: str, reason: str | None = None, *,
                  only_from: Collection[str] | None = None,
                  session: Session | None = None) -> int:
        """Move events to ``state`` (with ``reason``), stamping ``updated``; with
        ``only_from``, only those currently in one of those states.  Returns how many moved."""
        if state not in EVENT_STATES:
            raise ValueError(f"no event state {state!r}")
        ids = list(event_ids)
        moved = 0
        with self._use(session) as s:
            for chunk in _chunks(ids):
                query = update(EventRow).where(EventRow.id.in_(chunk))
                if only_from is not None:
                    query = query.where(EventRow.state.in_(list(only_from)))
                result = s.execute(query.values(state=state, reason=reason, updated_at=now()))
                moved += int(result.rowcount)  # type: ignore[attr-defined]
        return moved

    def set_states(self, changes: Iterable[tuple[str, str, str | None]], *,
                   only_from: Collection[str], session: Session | None = None) -> None:
        """Move each event ``(id, state, reason)`` of ``changes`` that is in one of the states
        ``only_from``: one executemany, so planning 100k events at once stays quick."""
        params = []
        for event_id, state, reason in changes:
            if state not in EVENT_STATES:
                raise ValueError(f"no event state {state!r}")
            params.append({"b_id": event_id, "b_state": state, "b_reason": reason})
        if not params:
            return
        # No IN (...) here: an expanding parameter cannot go into an executemany.
        query = (update(_EVENTS)
                 .where(_EVENTS.c.id == bindparam("b_id"),
                        or_(*(_EVENTS.c.state == state for state in only_from)))
                 .values(state=bindparam("b_state"), reason=bindparam("b_reason"),
                         updated_at=now()))
        with self._use(session) as s:
            conn = s.connection()
            for chunk in _chunks(params):
                conn.execute(query, list(chunk))

    def retry(self, event_ids: Iterable[str], *, why: str,
              session: Session | None = None) -> list[str]:
        """Plan failed events again: each FAILED one of ``event_ids`` loses its links to the
        rebuilds that failed it (the rebuilds and their builds stay on record) and is NEW
        again, its reason saying ``why`` and what failed before.  Returns the ids moved."""
        moved: list[str] = []
        with self._use(session) as s:
            for chunk in _chunks(list(event_ids)):
                rows = s.scalars(select(EventRow).where(EventRow.id.in_(chunk),
                                                        EventRow.state == FAILED)).all()
                for row in rows:
                    s.execute(delete(EventRebuildRow).where(EventRebuildRow.event_id == row.id))
                    row.reason = f"{why}; before: {row.reason or 'failed'}"[:4000]
                    row.state = NEW
                    row.updated_at = now()
                    moved.append(row.id)
        return moved

    def failed_for_missing_fixes(self, *, session: Session | None = None) -> list[str]:
        """The FAILED events whose reason is that the repositories lacked the fixed version
        (the advisory came before the update reached the mirror): worth planning again
        when a repository changes."""
        with self._use(session) as s:
            return list(s.scalars(select(EventRow.id).where(
                EventRow.state == FAILED,
                EventRow.reason.contains(MISSING_FIX))).all())

    # -- rebuilds -------------------------------------------------------------------------

    def add_rebuild(self, session: Session, *, image: str, old_build_id: str | None,
                    old_digest: str | None, advisories: Sequence[str],
                    parent_id: str | None, reason: str | None) -> RebuildRow:
        """A new PLANNED rebuild of ``image`` (added to ``session``'s transaction)."""
        from alicorn.events.model import PLANNED

        stamp = now()
        row = RebuildRow(id=new_event_id(), image=image, old_build_id=old_build_id,
                         old_digest=old_digest, parent_id=parent_id, build_id=None, attempt=0,
                         new_digest=None, state=PLANNED, tests=None, gate=None, reason=reason,
                         advisories=list(advisories), created_at=stamp, updated_at=stamp)
        session.add(row)
        session.flush()
        return row

    def set_rebuild(self, session: Session, rebuild: RebuildRow, state: str, **values: Any) -> None:
        """Move ``rebuild`` to ``state``, setting ``values`` (columns) and ``updated``."""
        if state not in REBUILD_STATES:
            raise ValueError(f"no rebuild state {state!r}")
        rebuild.state = state
        for key, value in values.items():
            setattr(rebuild, key, value)
        rebuild.updated_at = now()

    def link(self, session: Session, pairs: Iterable[tuple[str, str]]) -> None:
        """Link each event to its rebuild, ``(event_id, rebuild_id)`` (links already there
        are kept)."""
        wanted = set(pairs)
        if not wanted:
            return
        have: set[tuple[str, str]] = set()
        for chunk in _chunks(sorted({e for e, _ in wanted})):
            have.update((r.event_id, r.rebuild_id) for r in session.execute(
                select(EventRebuildRow.event_id, EventRebuildRow.rebuild_id)
                .where(EventRebuildRow.event_id.in_(chunk))))
        session.flush()
        rows = [{"event_id": e, "rebuild_id": r} for e, r in sorted(wanted - have)]
        table = cast(Table, EventRebuildRow.__table__)
        for chunk in _chunks(rows):
            session.connection().execute(table.insert(), list(chunk))

    def rebuilds(self, *, states: Collection[str] | None = None,
                 images: Collection[str] | None = None, ids: Collection[str] | None = None,
                 session: Session | None = None) -> list[RebuildRow]:
        """Rebuilds (in ``states``, of ``images``, with ``ids`` when given), oldest first."""
        query = select(RebuildRow).order_by(RebuildRow.created_at, RebuildRow.id)
        if states is not None:
            query = query.where(RebuildRow.state.in_(list(states)))
        if images is not None:
            query = query.where(RebuildRow.image.in_(list(images)))
        if ids is None:
            with self._use(session) as s:
                return list(s.scalars(query))
        out: list[RebuildRow] = []
        with self._use(session) as s:
            for chunk in _chunks(sorted(ids)):
                out.extend(s.scalars(query.where(RebuildRow.id.in_(chunk))))
        return sorted(out, key=lambda r: (r.created_at, r.id))

    def rebuilds_of(self, event_ids: Collection[str], *, session: Session | None = None
                    ) -> dict[str, list[RebuildRow]]:
        """The rebuilds linked to each of ``event_ids``, parents first then by creation."""
        out: dict[str, list[RebuildRow]] = defaultdict(list)
        ids = sorted(event_ids)
        with self._use(session) as s:
            for chunk in _chunks(ids):
                query = (select(EventRebuildRow.event_id, RebuildRow)
                         .join(RebuildRow, RebuildRow.id == EventRebuildRow.rebuild_id)
                         .where(EventRebuildRow.event_id.in_(chunk))
                         .order_by(RebuildRow.created_at, RebuildRow.id))
                for event_id, rebuild in s.execute(query):
                    out[event_id].append(rebuild)
        return out

    def events_of(self, rebuild_ids: Collection[str], *, session: Session | None = None
                  ) -> dict[str, list[str]]:
        """The ids of the events linked to each of ``rebuild_ids``."""
        out: dict[str, list[str]] = defaultdict(list)
        ids = sorted(rebuild_ids)
        with self._use(session) as s:
            for chunk in _chunks(ids):
                query = (select(EventRebuildRow.rebuild_id, EventRebuildRow.event_id)
                         .where(EventRebuildRow.rebuild_id.in_(chunk))
                         .order_by(EventRebuildRow.event_id))
                for rebuild_id, event_id in s.execute(query):
                    out[rebuild_id].append(event_id)
        return out

    def advisory_bodies(self, keys: Collection[tuple[str, str, str]], *,
                        session: Session | None = None) -> dict[tuple[str, str, str], str]:
        """The stored body of each advisory (id, format, digest) that is still stored at that
        digest (a newer version replaces the row, so an old digest finds nothing)."""
        out: dict[tuple[str, str, str], str] = {}
        wanted = set(keys)
        ids = sorted({k[0] for k in keys})
        with self._use(session) as s:
            for chunk in _chunks(ids):
                query = (select(AdvisoryRow.id, AdvisoryRow.format, AdvisoryRow.digest,
                                AdvisoryRow.body).where(AdvisoryRow.id.in_(chunk)))
                for row in s.execute(query):
                    key = (row.id, row.format, row.digest)
                    if key in wanted:
                        out[key] = row.body
        return out

    # -- the JSON view --------------------------------------------------------------------

    def event_json(self, event: EventRow, *, rebuilds: Sequence[RebuildRow] | None = None,
                   session: Session | None = None) -> dict[str, Any]:
        """``event`` as the command line prints it (see :meth:`events_json`)."""
        if rebuilds is None:
            rebuilds = self.rebuilds_of([event.id], session=session).get(event.id, [])
        return _event_json(event, rebuilds, self._parents(rebuilds, session=session))

    def events_json(self, events: Sequence[EventRow], *, session: Session | None = None
                    ) -> list[dict[str, Any]]:
        """Each event as a dict: ``id``, ``advisory``, ``format``, ``digest``, ``type``,
        ``state``, ``reason``, ``created``, ``updated``, ``cves``, ``severity``, ``source``
        and ``builds`` [{``image``, ``old_digest``, ``new_digest``, ``state``, ``tests``,
        ``gate`` (``passed``/``failed``/null), ``build_id``, ``old_build_id``, ``attempt``,
        ``parent`` (the base image's name when layered on a rebuilt image), ``advisories``,
        ``reason``, ``rebuild``}], parents before children.  Two queries for any number."""
        linked = self.rebuilds_of([e.id for e in events], session=session)
        parents = self._parents([r for rs in linked.values() for r in rs], session=session)
        return [_event_json(e, linked.get(e.id, []), parents) for e in events]

    def _parents(self, rebuilds: Sequence[RebuildRow], *, session: Session | None
                 ) -> dict[str, str]:
        ids = sorted({r.parent_id for r in rebuilds if r.parent_id})
        if not ids:
            return {}
        out: dict[str, str] = {}
        with self._use(session) as s:
            for chunk in _chunks(ids):
                for rid, image in s.execute(select(RebuildRow.id, RebuildRow.image)
                                            .where(RebuildRow.id.in_(chunk))):
                    out[rid] = image
        return out

    def builds(self, build_ids: Collection[str], *, session: Session | None = None
               ) -> dict[str, BuildRow]:
        """The build rows of ``build_ids`` (those that exist)."""
        out: dict[str, BuildRow] = {}
        with self._use(session) as s:
            for chunk in _chunks(sorted(build_ids)):
                for row in s.scalars(select(BuildRow).where(BuildRow.id.in_(chunk))):
                    out[row.id] = row
        return out

    def build_for_attempt(self, rebuild_id: str, attempt: int, *,
                          session: Session | None = None) -> BuildRow | None:
        """The build submitted for attempt ``attempt`` of rebuild ``rebuild_id``, if one was
        (a crash between submitting it and recording it leaves it unrecorded)."""
        trigger = BuildRow.trigger
        query = (select(BuildRow)
                 .where(and_(trigger["rebuild"].as_string() == rebuild_id,
                             trigger["attempt"].as_integer() == attempt))
                 .order_by(BuildRow.created_at))
        with self._use(session) as s:
            return s.scalars(query).first()


@dataclass(frozen=True)
class EventKey:
    """An event's id and the advisory it is for."""

    id: str
    advisory_id: str
    advisory_format: str
    advisory_digest: str
    reason: str | None = None


_Query = TypeVar("_Query", bound="Select[*tuple[Any, ...]]")


def _without_event(query: _Query, types: Collection[str]) -> _Query:
    """``query`` over the stored advisories of ``types`` narrowed to those with no event for
    their id, format and content digest, ordered by id and format."""
    adv = AdvisoryRow
    return (query.where(adv.type.in_(list(types)))
            .where(~exists().where(EventRow.advisory_id == adv.id,
                                   EventRow.advisory_format == adv.format,
                                   EventRow.advisory_digest == adv.digest))
            .order_by(adv.id, adv.format))


def _stamp(value: Any) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def parents_first(rebuilds: Sequence[RebuildRow]) -> list[RebuildRow]:
    """Parents before children, else by creation."""
    by_id = {r.id: r for r in rebuilds}

    def depth(r: RebuildRow) -> int:
        d, seen = 0, {r.id}
        while r.parent_id in by_id and r.parent_id not in seen:
            seen.add(r.parent_id)
            r = by_id[r.parent_id]
            d += 1
        return d

    return sorted(rebuilds, key=lambda r: (depth(r), r.created_at, r.id))


def _event_json(event: EventRow, rebuilds: Sequence[RebuildRow],
                parents: dict[str, str]) -> dict[str, Any]:
    return {
        "id": event.id, "advisory": event.advisory_id, "format": event.advisory_format,
        "digest": event.advisory_digest, "type": event.advisory_type,
        "severity": event.severity, "cves": list(event.cves or []), "source": event.source,
        "state": event.state, "reason": event.reason,
        "created": _stamp(event.created_at), "updated": _stamp(event.updated_at),
        "builds": [{
            "rebuild": r.id, "image": r.image, "old_build_id": r.old_build_id,
            "old_digest": r.old_digest, "new_digest": r.new_digest, "state": r.state,
            "tests": r.tests, "gate": r.gate, "build_id": r.build_id, "attempt": r.attempt,
            "parent": parents.get(r.parent_id) if r.parent_id else None,
            "advisories": list(r.advisories or []), "reason": r.reason,
        } for r in parents_first(rebuilds)],
    }

