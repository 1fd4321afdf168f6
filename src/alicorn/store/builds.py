"""The build records: submit, claim, finish, look up.

A build's record is written by the submitter (inputs it knows: argv, source, recipe) and then only
by the worker that claimed it.  Claiming is one conditional UPDATE, so two workers never run the
same build.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, select, update

from alicorn.compose.interface import Package
from alicorn.errors import BadInput, Conflict, NotFound
from alicorn.store.db import session_factory
from alicorn.store.models import BuildRow, PackageRow

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
FINAL = (DONE, FAILED)


def new_build_id() -> str:
    """Sortable by submission time, unique without coordination."""
    return f"{int(time.time() * 1000):011x}{secrets.token_hex(3)}"


def _successor(prefix: str) -> str:
    """The least string greater than every string that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\uffff"


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Submission:
    argv: list[str]
    source_kind: str
    recipe_path: str
    source_url: str | None = None
    source_ref: str | None = None
    recipe_content: str | None = None
    options: dict[str, Any] | None = None
    # Why the rebuild service asked for it (BuildRow.trigger), written with the row.
    trigger: dict[str, Any] | None = None
    # Who asks (default: the local user@host); through the API, the token's name ...
    submitter: str | None = None
    # ... and the token's id (BuildRow.submitted_token: whose build it is to cancel).
    token: str | None = None


class BuildStore:
    def __init__(self, database_url: str):
        self._sessions = session_factory(database_url)

    def submit(self, sub: Submission) -> BuildRow:
        user = os.environ.get("SUDO_USER") or os.environ.get("USER") or str(os.getuid())
        row = BuildRow(
            id=new_build_id(), state=QUEUED, created_at=now(), argv=sub.argv,
            submitter=sub.submitter or f"{user}@{os.uname().nodename}",
            submitted_token=sub.token, source_kind=sub.source_kind,
            source_url=sub.source_url, source_ref=sub.source_ref,
            recipe_path=sub.recipe_path, recipe_content=sub.recipe_content,
            options=sub.options or {}, published=False, trigger=sub.trigger,
        )
        with self._sessions.begin() as s:
            s.add(row)
        return row

    def claim_next(self, worker: str) -> BuildRow | None:
        """Take the oldest queued build for ``worker``; None when there is none."""
        with self._sessions() as s:
            ids = s.scalars(select(BuildRow.id).where(BuildRow.state == QUEUED)
                            .order_by(BuildRow.created_at, BuildRow.id).limit(5)).all()
        for build_id in ids:
            with self._sessions.begin() as s:
                claimed = s.execute(  # type: ignore[attr-defined]
                    update(BuildRow).where(BuildRow.id == build_id, BuildRow.state == QUEUED)
                    .values(state=RUNNING, worker=worker, started_at=now())
                ).rowcount
            if claimed == 1:
                return self.get(build_id)
        return None

    def update(self, build_id: str, **values: Any) -> None:
        with self._sessions.begin() as s:
            s.execute(update(BuildRow).where(BuildRow.id == build_id).values(**values))

    def finish(self, build_id: str, state: str, *, packages: Iterable[Package] = (),
               **values: Any) -> None:
        assert state in FINAL
        with self._sessions.begin() as s:
            row = s.get(BuildRow, build_id)
            if row is None:
                raise NotFound(f"no build {build_id}")
            if row.state in FINAL:
                raise BadInput(f"build {build_id} is already {row.state}; records are final")
            row.state = state
            row.finished_at = now()
            for k, v in values.items():
                setattr(row, k, v)
            for p in packages:
                row.packages.append(PackageRow(
                    type=p.type, name=p.name, version=p.version, arch=p.arch, source=p.source,
                    checksum=p.checksum, purl=p.purl))

    def request_cancel(self, build_id: str, by: str) -> BuildRow:
        """Cancel a build on behalf of ``by``: a queued one ends at once (failed, "cancelled
        by BY before it started"; no worker will claim it), a running one gets its cancel
        request recorded and the worker running it stops within a second or two and records
        it as failed ("cancelled by BY").  A build that has ended raises Conflict (its record
        is sealed).  Returns the row as it is after the request.

        Only the first request on a running build counts: a second returns the row as it is.
        ``build_id`` is an exact id (resolve() first for a prefix or a digest).
        """
        # Each step is one conditional UPDATE, so a claim (conditional on queued too) and a
        # cancel never both win; whichever lost sees the other's state on the next turn.
        for _ in range(3):
            row = self.get(build_id)
            stamp = now()
            where: tuple[ColumnElement[bool], ...]
            if row.state == QUEUED:
                where = (BuildRow.id == build_id, BuildRow.state == QUEUED)
                values: dict[str, Any] = dict(
                    state=FAILED, finished_at=stamp,
                    error=f"cancelled by {by} before it started",
                    cancel_requested_at=stamp, cancel_requested_by=by)
            elif row.state == RUNNING:
                if row.cancel_requested_at is not None:
                    return row
                where = (BuildRow.id == build_id, BuildRow.state == RUNNING,
                         BuildRow.cancel_requested_at.is_(None))
                values = dict(cancel_requested_at=stamp, cancel_requested_by=by)
            else:
                entry = (f"; its record is sealed in the transparency log (entry "
                         f"{row.record_index}) and cannot change"
                         if row.record_index is not None else "; its record is final")
                raise Conflict(f"build {build_id} has ended ({row.state}){entry}",
                               hint="only a queued or running build can be cancelled")
            with self._sessions.begin() as s:
                changed = s.execute(  # type: ignore[attr-defined]
                    update(BuildRow).where(*where).values(**values)).rowcount
            if changed == 1:
                return self.get(build_id)
        raise BadInput(f"build {build_id} keeps changing state; try again")

    def cancel_request(self, build_id: str) -> tuple[datetime, str] | None:
        """When and by whom a cancel of the build was requested (None: not requested); a light
        query for the worker that polls it."""
        with self._sessions() as s:
            got = s.execute(select(BuildRow.cancel_requested_at, BuildRow.cancel_requested_by)
                            .where(BuildRow.id == build_id)).first()
        if got is None or got[0] is None:
            return None
        return got[0], got[1] or "someone"

    def get(self, build_id: str) -> BuildRow:
        with self._sessions() as s:
            row = s.get(BuildRow, build_id)
            if row is None:
                raise NotFound(f"no build {build_id}", hint="alicorn builds lists them")
            _ = row.packages  # load while the session is open
            return row

    def resolve(self, ident: str) -> BuildRow:
        """A build by id, id prefix, or image digest (the newest build that produced it)."""
        ident = ident.strip()
        with self._sessions() as s:
            if ident.startswith("sha256:") or len(ident) == 64:
                digest = ident if ident.startswith("sha256:") else "sha256:" + ident
                # A build its checks failed keeps its candidate's digest: a finished build
                # of the same image, if there is one, is the one the digest stands for.
                row = s.scalars(select(BuildRow).where(BuildRow.digest == digest)
                                .order_by((BuildRow.state == DONE).desc(),
                                          BuildRow.created_at.desc())).first()
            else:
                # A range on the primary key, not LIKE 'x%' (which SQLite cannot answer from
                # the index): a lookup stays one index probe with 10k builds or 10M.
                rows = [exact] if (exact := s.get(BuildRow, ident)) is not None else \
                    s.scalars(select(BuildRow).where(BuildRow.id >= ident,
                                                     BuildRow.id < _successor(ident))
                              .order_by(BuildRow.id).limit(2)).all()
                if len(rows) > 1:
                    raise BadInput(f"build id prefix {ident!r} is ambiguous")
                row = rows[0] if rows else None
            if row is None:
                raise NotFound(f"no build or image {ident!r} in this store",
                               hint="alicorn builds lists them")
            _ = row.packages
            return row

    def recent(self, limit: int = 50) -> list[BuildRow]:
        with self._sessions() as s:
            return list(s.scalars(select(BuildRow).order_by(BuildRow.created_at.desc())
                                  .limit(limit)).all())

    def find_cached(self, input_key: str, exclude: str) -> BuildRow | None:
        """The newest successful build with the same inputs."""
        with self._sessions() as s:
            row = s.scalars(
                select(BuildRow).where(BuildRow.input_key == input_key, BuildRow.state == DONE,
                                       BuildRow.id != exclude, BuildRow.digest.is_not(None))
                .order_by(BuildRow.finished_at.desc())).first()
            if row is not None:
                _ = row.packages
            return row

    def latest_published(self, recipe_name: str) -> BuildRow | None:
        """The newest done, published build of the recipe named ``recipe_name`` (what a
        layered recipe's ``base: NAME`` means); None when there is none."""
        with self._sessions() as s:
            row = s.scalars(
                select(BuildRow).where(BuildRow.recipe_name == recipe_name,
                                       BuildRow.state == DONE, BuildRow.published.is_(True),
                                       BuildRow.digest.is_not(None))
                .order_by(BuildRow.finished_at.desc(), BuildRow.id.desc())).first()
            if row is not None:
                _ = row.packages
            return row

    def running(self) -> list[BuildRow]:
        with self._sessions() as s:
            return list(s.scalars(select(BuildRow).where(BuildRow.state == RUNNING)).all())
