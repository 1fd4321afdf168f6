"""Modules, replicas, history, events and the operations journal in the database.

Every method is one short transaction: the controller writes a phase before it acts on it, and
a kill at any point must leave the journal saying what was half done.  The per-module lock is
a file lock (``modules_dir/NAME/lock``), held by the process running an operation; the kernel
releases it when that process dies, so a killed run never leaves a module locked.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from alicorn.errors import NotFound, StoreError
from alicorn.rollout.interface import ModuleBusy
from alicorn.rollout.model import (
    RESULTS,
    HistoryEntry,
    ModuleEvent,
    ModuleSpec,
    Operation,
    Readiness,
    Replica,
)
from alicorn.store.db import session_factory
from alicorn.store.rollout_models import (
    ModuleEventRow,
    ModuleHistoryRow,
    ModuleOpRow,
    ModuleReplicaRow,
    ModuleRow,
)

__all__ = ["Module", "ModuleStore", "new_op_id"]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def new_op_id() -> str:
    """Sortable by start time, unique without coordination."""
    return f"{int(time.time() * 1000):011x}{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Module:
    """One module as stored: its spec and what serves now."""

    spec: ModuleSpec
    digest: str | None
    image: str | None                  # addr/name@sha256:… of ``digest``
    previous_digest: str | None
    content_image: str | None          # the pinned content image, when spec.content.image
    readiness: Readiness
    created_at: datetime
    updated_at: datetime

    @property
    def name(self) -> str:
        return self.spec.name


def _readiness_json(r: Readiness) -> dict[str, Any]:
    return {"path": r.path, "port": r.port, "interval": r.interval, "timeout": r.timeout,
            "retries": r.retries, "command": list(r.command) if r.command else None}


def _readiness(data: dict[str, Any] | None) -> Readiness:
    if not data:
        return Readiness()
    command = data.get("command")
    return Readiness(path=data.get("path", "/"), port=data.get("port"),
                     interval=float(data.get("interval", 1.0)),
                     timeout=float(data.get("timeout", 2.0)),
                     retries=int(data.get("retries", 3)),
                     command=tuple(command) if command else None)


def _module(row: ModuleRow) -> Module:
    return Module(spec=ModuleSpec.from_json(row.spec), digest=row.digest, image=row.image,
                  previous_digest=row.previous_digest, content_image=row.content_image,
                  readiness=_readiness(row.readiness), created_at=_aware(row.created_at),
                  updated_at=_aware(row.updated_at))


def _replica(row: ModuleReplicaRow) -> Replica:
    return Replica(name=row.name, digest=row.digest, host_port=row.host_port,
                   containers=tuple(row.containers), state=row.state, healthy=row.healthy)


def _op(row: ModuleOpRow) -> Operation:
    return Operation(id=row.id, module=row.module, kind=row.kind, from_digest=row.from_digest,
                     to_digest=row.to_digest, phase=row.phase,
                     started_at=_aware(row.started_at), deadline_at=_aware(row.deadline_at),
                     finished_at=_aware(row.finished_at) if row.finished_at else None,
                     result=row.result, reason=row.reason, dry_run=row.dry_run)


class ModuleStore:
    """The rollout's state in the database at ``database_url``; locks under ``modules_dir``."""

    def __init__(self, database_url: str, modules_dir: Path):
        self.database_url = database_url
        self.modules_dir = modules_dir
        self._sessions = session_factory(database_url)

    # -- the lock -------------------------------------------------------------------------

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold module ``name``'s lock for the block; :class:`ModuleBusy` if another process
        (or another lock in this one) holds it."""
        directory = self.modules_dir / name
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"cannot open the lock of module {name}: {e.strerror}",
                             where=str(directory / "lock")) from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
                raise ModuleBusy(
                    f"module {name} is busy: another operation holds its lock"
                    + (f" (process {holder})" if holder else ""),
                    where=str(directory / "lock"),
                    hint="wait for it to finish (alicorn status shows its phase)") from e
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)   # releases the flock

    def locked(self, name: str) -> bool:
        """Whether a process holds module ``name``'s lock now (an operation runs).  Asked by
        taking the lock for an instant: an unfinished journal entry nobody holds was
        interrupted."""
        path = self.modules_dir / name / "lock"
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)   # releases it, if taken
        return False

    # -- modules --------------------------------------------------------------------------

    def create(self, spec: ModuleSpec, *, readiness: Readiness | None = None,
               content_image: str | None = None) -> Module:
        """A new module, serving nothing yet; StoreError if one has ``spec.name``."""
        stamp = _now()
        with self._sessions.begin() as s:
            if s.get(ModuleRow, spec.name) is not None:
                raise StoreError(f"module {spec.name} exists already")
            row = ModuleRow(name=spec.name, spec=spec.to_json(), digest=None, image=None,
                            previous_digest=None, content_image=content_image,
                            readiness=_readiness_json(readiness or Readiness()),
                            created_at=stamp,
                            updated_at=stamp)
            s.add(row)
            return _module(row)

    def get(self, name: str) -> Module | None:
        """Module ``name``, None when there is none."""
        with self._sessions.begin() as s:
            row = s.get(ModuleRow, name)
            return _module(row) if row else None

    def require(self, name: str) -> Module:
        """Module ``name``; NotFound (naming it) when there is none."""
        module = self.get(name)
        if module is None:
            raise NotFound(f"no module named {name} on this host",
                           hint="alicorn modules lists them; alicorn deploy makes one")
        return module

    def all(self) -> list[Module]:
        """Every module, by name."""
        with self._sessions.begin() as s:
            return [_module(r) for r in s.scalars(select(ModuleRow).order_by(ModuleRow.name))]

    def set_serving(self, name: str, *, digest: str | None, image: str | None,
                    previous_digest: str | None, readiness: Readiness | None = None,
                    content_image: str | None = None) -> None:
        """Record what serves now (and what served before it)."""
        with self._sessions.begin() as s:
            row = s.get(ModuleRow, name)
            if row is None:
                raise NotFound(f"no module named {name} on this host")
            row.digest, row.image, row.previous_digest = digest, image, previous_digest
            if readiness is not None:
                row.readiness = _readiness_json(readiness)
            if content_image is not None:
                row.content_image = content_image
            row.updated_at = _now()

    def delete(self, name: str) -> None:
        """Forget the module: its replicas, history, events and journal too."""
        with self._sessions.begin() as s:
            for table in (ModuleReplicaRow, ModuleHistoryRow, ModuleEventRow, ModuleOpRow):
                s.execute(delete(table).where(table.module == name))
            s.execute(delete(ModuleRow).where(ModuleRow.name == name))

    # -- replicas -------------------------------------------------------------------------

    def put_replica(self, module: str, replica: Replica, *, image: str) -> None:
        """Add or replace one replica's row."""
        stamp = _now()
        with self._sessions.begin() as s:
            row = s.get(ModuleReplicaRow, replica.name)
            if row is None:
                row = ModuleReplicaRow(name=replica.name, module=module, created_at=stamp)
                s.add(row)
            row.digest, row.image, row.host_port = replica.digest, image, replica.host_port
            row.containers = list(replica.containers)
            row.state, row.healthy, row.updated_at = replica.state, replica.healthy, stamp

    def set_replicas(self, names: list[str] | tuple[str, ...], *, state: str | None = None,
                     healthy: bool | None = None) -> None:
        """Set the state and/or health of the replicas ``names`` (unknown names are skipped)."""
        with self._sessions.begin() as s:
            for name in names:
                row = s.get(ModuleReplicaRow, name)
                if row is None:
                    continue
                if state is not None:
                    row.state = state
                if healthy is not None:
                    row.healthy = healthy
                row.updated_at = _now()

    def replicas(self, module: str, *, digest: str | None = None) -> list[Replica]:
        """The module's replicas (only ``digest``'s when given), by name."""
        query = select(ModuleReplicaRow).where(ModuleReplicaRow.module == module)
        if digest is not None:
            query = query.where(ModuleReplicaRow.digest == digest)
        with self._sessions.begin() as s:
            return [_replica(r) for r in s.scalars(query.order_by(ModuleReplicaRow.name))]

    def replica_image(self, name: str) -> str | None:
        """The image reference replica ``name`` runs."""
        with self._sessions.begin() as s:
            row = s.get(ModuleReplicaRow, name)
            return row.image if row else None

    def delete_replicas(self, names: list[str] | tuple[str, ...]) -> None:
        """Forget the replicas ``names`` (their containers are the caller's to remove)."""
        if not names:
            return
        with self._sessions.begin() as s:
            s.execute(delete(ModuleReplicaRow).where(ModuleReplicaRow.name.in_(list(names))))

    # -- history and events ---------------------------------------------------------------

    def add_history(self, module: str, entry: HistoryEntry) -> None:
        """Append ``entry`` to the module's history (its result one of model.RESULTS)."""
        if entry.result not in RESULTS:
            raise ValueError(f"history result {entry.result!r} is not one of {RESULTS}")
        with self._sessions.begin() as s:
            s.add(ModuleHistoryRow(module=module, digest=entry.digest,
                                   from_digest=entry.from_digest, at=_naive(entry.at),
                                   result=entry.result, reason=entry.reason,
                                   op_id=entry.op_id))

    def history(self, module: str) -> list[HistoryEntry]:
        """Oldest first."""
        query = (select(ModuleHistoryRow).where(ModuleHistoryRow.module == module)
                 .order_by(ModuleHistoryRow.id))
        with self._sessions.begin() as s:
            return [HistoryEntry(digest=r.digest, at=_aware(r.at), result=r.result,
                                 from_digest=r.from_digest, reason=r.reason, op_id=r.op_id)
                    for r in s.scalars(query)]

    def add_event(self, module: str, kind: str, message: str,
                  op_id: str | None = None) -> ModuleEvent:
        """Record one event of the module (of operation ``op_id``)."""
        stamp = _now()
        with self._sessions.begin() as s:
            s.add(ModuleEventRow(module=module, op_id=op_id, at=stamp, kind=kind,
                                 message=message))
        return ModuleEvent(at=_aware(stamp), kind=kind, message=message, op_id=op_id)

    def events(self, module: str, op_id: str | None = None) -> list[ModuleEvent]:
        """Oldest first; only ``op_id``'s when given."""
        query = select(ModuleEventRow).where(ModuleEventRow.module == module)
        if op_id is not None:
            query = query.where(ModuleEventRow.op_id == op_id)
        with self._sessions.begin() as s:
            return [ModuleEvent(at=_aware(r.at), kind=r.kind, message=r.message, op_id=r.op_id)
                    for r in s.scalars(query.order_by(ModuleEventRow.id))]

    # -- the journal ----------------------------------------------------------------------

    def open_op(self, op: Operation, data: dict[str, Any] | None = None) -> Operation:
        """Journal a new operation (before any of it is done)."""
        with self._sessions.begin() as s:
            s.add(ModuleOpRow(id=op.id, module=op.module, kind=op.kind,
                              from_digest=op.from_digest, to_digest=op.to_digest,
                              phase=op.phase, started_at=_naive(op.started_at),
                              deadline_at=_naive(op.deadline_at), finished_at=None,
                              result=None, reason=None, dry_run=op.dry_run, data=data or {}))
        return op

    def set_phase(self, op_id: str, phase: str, *, to_digest: str | None = None,
                  **data: Any) -> None:
        """Record ``phase`` (and merge ``data``) before the controller acts on it."""
        with self._sessions.begin() as s:
            row = s.get(ModuleOpRow, op_id)
            if row is None:
                raise NotFound(f"no operation {op_id}")
            row.phase = phase
            if to_digest is not None:
                row.to_digest = to_digest
            if data:
                row.data = {**(row.data or {}), **data}

    def finish_op(self, op_id: str, *, phase: str, result: str,
                  reason: str | None = None) -> None:
        """Close operation ``op_id`` with ``result``."""
        with self._sessions.begin() as s:
            row = s.get(ModuleOpRow, op_id)
            if row is None:
                raise NotFound(f"no operation {op_id}")
            row.phase, row.result, row.reason = phase, result, reason
            row.finished_at = _now()

    def op(self, op_id: str) -> tuple[Operation, dict[str, Any]] | None:
        """Operation ``op_id`` and its journal data."""
        with self._sessions.begin() as s:
            row = s.get(ModuleOpRow, op_id)
            return (_op(row), dict(row.data or {})) if row else None

    def open_operation(self, module: str) -> tuple[Operation, dict[str, Any]] | None:
        """The operation the journal has unfinished for ``module`` (the newest), if any."""
        query = (select(ModuleOpRow).where(ModuleOpRow.module == module,
                                           ModuleOpRow.finished_at.is_(None))
                 .order_by(ModuleOpRow.started_at.desc(), ModuleOpRow.id.desc()))
        with self._sessions.begin() as s:
            row = s.scalars(query).first()
            return (_op(row), dict(row.data or {})) if row else None

    def last_op(self, module: str) -> Operation | None:
        """The module's newest operation, finished or not."""
        query = (select(ModuleOpRow).where(ModuleOpRow.module == module)
                 .order_by(ModuleOpRow.started_at.desc(), ModuleOpRow.id.desc()))
        with self._sessions.begin() as s:
            row = s.scalars(query).first()
            return _op(row) if row else None
