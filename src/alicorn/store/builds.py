"""The build records: submit, claim, finish, look up.

A build's record is written by the submitter (inputs it knows: argv, source, recipe) and then only
by the worker that claimed it.  Claiming is one conditional UPDATE, so two workers never run the
same build.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select, update

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

    def submit(self, sub: Submission, *, queue: str | None = None,
               publish: Callable[[BuildRow], None] | None = None) -> BuildRow:
        """Record the submission as a queued build.

        With ``publish`` (the Celery dispatcher's: send the build's message to ``queue``) the
        row is written and the message sent in one transaction: if sending fails, the row is
        rolled back and the error raised, so that nothing is recorded as submitted that no
        worker will ever hear of.  (A message whose row then fails to commit names a build
        that does not exist; the worker drops it.)
        """
        row = self._new_row(sub, attempt=1, retry_of=None, queue=queue)
        with self._sessions.begin() as s:
            s.add(row)
            if publish is not None:
                s.flush()
                row.dispatched_at, row.dispatches = now(), 1
                publish(row)
        return row

    def _new_row(self, sub: Submission, *, attempt: int, retry_of: str | None,
                 queue: str | None) -> BuildRow:
        user = os.environ.get("SUDO_USER") or os.environ.get("USER") or str(os.getuid())
        return BuildRow(
            id=new_build_id(), state=QUEUED, created_at=now(), argv=sub.argv,
            submitter=sub.submitter or f"{user}@{os.uname().nodename}",
            submitted_token=sub.token, source_kind=sub.source_kind,
            source_url=sub.source_url, source_ref=sub.source_ref,
            recipe_path=sub.recipe_path, recipe_content=sub.recipe_content,
            options=sub.options or {}, published=False, trigger=sub.trigger,
            attempt=attempt, retry_of=retry_of, queue=queue, dispatches=0,
        )

    # -- scale-out: claiming by id, heartbeats, the reaper's and the dispatcher's queries ----
    def claim(self, build_id: str, worker: str) -> BuildRow | None:
        """Claim the queued build ``build_id`` for ``worker``: one conditional UPDATE, so of
        two workers (or two deliveries of one message) exactly one wins.  None when the build
        is not queued (another worker has it, it was cancelled, it ended, or it does not
        exist)."""
        stamp = now()
        with self._sessions.begin() as s:
            claimed = s.execute(  # type: ignore[attr-defined]
                update(BuildRow).where(BuildRow.id == build_id, BuildRow.state == QUEUED)
                .values(state=RUNNING, worker=worker, started_at=stamp, heartbeat_at=stamp)
            ).rowcount
        return self.get(build_id) if claimed == 1 else None

    def wait_for(self, build_id: str, timeout: float = 10.0) -> BuildRow:
        """The build ``build_id``, waiting up to ``timeout`` seconds for it to exist: a broker
        message is sent inside the submitter's transaction, just before it commits, so a
        worker can hear of a build a moment before it can read it.  NotFound after that (a
        submission that was rolled back)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.get(build_id)
            except NotFound:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def heartbeat(self, build_id: str, worker: str) -> bool:
        """Record that ``worker`` still runs ``build_id``; False when the build is no longer
        its own running build (the reaper failed it, say): the worker must stop it."""
        with self._sessions.begin() as s:
            changed = s.execute(  # type: ignore[attr-defined]
                update(BuildRow).where(BuildRow.id == build_id, BuildRow.state == RUNNING,
                                       BuildRow.worker == worker)
                .values(heartbeat_at=now())).rowcount
        return bool(changed == 1)

    def stale(self, lease: float) -> list[BuildRow]:
        """Running builds whose worker has not written a heartbeat for ``lease`` seconds."""
        cutoff = now() - timedelta(seconds=lease)
        with self._sessions() as s:
            return list(s.scalars(select(BuildRow).where(
                BuildRow.state == RUNNING,
                func.coalesce(BuildRow.heartbeat_at, BuildRow.started_at) < cutoff)).all())

    def abandon(self, build_id: str, *, reason: str, worker: str | None = None,
                retry: bool = True, max_attempts: int = 2) -> BuildRow | None:
        """End a running build whose worker is gone: failed with ``reason`` and, when
        ``retry`` and it was not the last of ``max_attempts``, a new queued attempt of the
        same submission (``retry_of`` it; the failed one names it in ``retried_as``), both in
        one transaction.  Only a build still running (by ``worker``, when given) is ended, so
        two reapers never both retry one build.  Returns the new attempt (to be dispatched),
        or None (no retry, or the build was not running any more)."""
        with self._sessions.begin() as s:
            where = [BuildRow.id == build_id, BuildRow.state == RUNNING]
            if worker is not None:
                where.append(BuildRow.worker == worker)
            # Locked: a second caller waits for this one's commit, then finds it ended.
            old = s.scalars(select(BuildRow).where(*where).with_for_update()).first()
            if old is None:
                return None
            attempt = (old.attempt or 1) + 1
            nxt = None
            if retry and attempt <= max_attempts and old.cancel_requested_at is None:
                nxt = self._retry_row(old, attempt)
                s.add(nxt)
                s.flush()
                reason += f"; retried as build {nxt.id} (attempt {attempt} of {max_attempts})"
            elif retry and old.cancel_requested_at is None:
                reason += f"; not retried: attempt {attempt - 1} of {max_attempts} was the last"
            changed = s.execute(  # type: ignore[attr-defined]
                update(BuildRow).where(*where).values(
                    state=FAILED, finished_at=now(), error=reason,
                    retried_as=nxt.id if nxt is not None else None)).rowcount
            if changed != 1:
                raise Conflict(f"build {build_id} changed state while it was being ended")
        return nxt

    def retry_failed(self, build_id: str, *, worker: str, max_attempts: int = 2) -> BuildRow | None:
        """Queue the next attempt of a build ``worker`` recorded as failed for a reason that
        was not the build's (the database was away, so the worker stopped it), as
        :meth:`abandon` does for a running one: the failed row names it in ``retried_as``
        (its error, sealed in its record, stays).  None when it is the last of
        ``max_attempts``, was cancelled, or was retried already (one transaction, conditional
        on that: two callers never both retry it)."""
        with self._sessions.begin() as s:
            where = [BuildRow.id == build_id, BuildRow.state == FAILED,
                     BuildRow.worker == worker, BuildRow.retried_as.is_(None),
                     BuildRow.cancel_requested_at.is_(None)]
            # Locked: a second caller waits for this one's commit, then finds it ended.
            old = s.scalars(select(BuildRow).where(*where).with_for_update()).first()
            if old is None or (old.attempt or 1) + 1 > max_attempts:
                return None
            nxt = self._retry_row(old, (old.attempt or 1) + 1)
            s.add(nxt)
            s.flush()
            changed = s.execute(  # type: ignore[attr-defined]
                update(BuildRow).where(*where).values(retried_as=nxt.id)).rowcount
            if changed != 1:
                raise Conflict(f"build {build_id} changed while its retry was queued")
        return nxt

    def _retry_row(self, old: BuildRow, attempt: int) -> BuildRow:
        """The queued row of attempt ``attempt`` of ``old``'s submission."""
        return self._new_row(Submission(
            argv=list(old.argv), source_kind=old.source_kind, recipe_path=old.recipe_path,
            source_url=old.source_url, source_ref=old.source_ref,
            recipe_content=old.recipe_content, options=dict(old.options or {}),
            trigger=old.trigger, submitter=old.submitter, token=old.submitted_token),
            attempt=attempt, retry_of=old.id, queue=old.queue)

    def undispatched(self, older_than: float) -> list[BuildRow]:
        """Queued builds not sent to a broker in the last ``older_than`` seconds (never sent,
        or their message lost): the dispatcher sends them again."""
        cutoff = now() - timedelta(seconds=older_than)
        with self._sessions() as s:
            return list(s.scalars(select(BuildRow).where(
                BuildRow.state == QUEUED,
                func.coalesce(BuildRow.dispatched_at, BuildRow.created_at) < cutoff)
                .order_by(BuildRow.created_at, BuildRow.id)).all())

    def mark_dispatched(self, build_id: str, queue: str) -> None:
        """Record that the build's message was sent (again) to ``queue``."""
        with self._sessions.begin() as s:
            s.execute(update(BuildRow).where(BuildRow.id == build_id).values(
                queue=queue, dispatched_at=now(), dispatches=BuildRow.dispatches + 1))

    def latest_attempt(self, build_id: str) -> BuildRow:
        """The build that stands for ``build_id``'s submission now: itself, or the last of
        the attempts it was retried as."""
        row = self.get(build_id)
        for _ in range(100):
            if not row.retried_as:
                break
            row = self.get(row.retried_as)
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
                    .values(state=RUNNING, worker=worker, started_at=(t := now()), heartbeat_at=t)
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
