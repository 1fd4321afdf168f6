"""The rollout's tables (created by migration 0007): modules, their replicas, history, events,
and the journal of operations.

Datetimes are naive UTC, as elsewhere in the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from alicorn.store.models import Base


class ModuleRow(Base):
    """One module on this host: what ``deploy`` was asked for and what serves now."""

    __tablename__ = "modules"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)             # ModuleSpec.to_json()
    digest: Mapped[str | None] = mapped_column(String(71))        # serving now
    image: Mapped[str | None] = mapped_column(Text)               # addr/name@sha256:…
    previous_digest: Mapped[str | None] = mapped_column(String(71))
    content_image: Mapped[str | None] = mapped_column(Text)       # pinned content image ref
    readiness: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the serving image's
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class ModuleReplicaRow(Base):
    """One replica (its web container's name) and the containers that make it."""

    __tablename__ = "module_replicas"

    name: Mapped[str] = mapped_column(String(160), primary_key=True)
    module: Mapped[str] = mapped_column(ForeignKey("modules.name"), index=True)
    digest: Mapped[str] = mapped_column(String(71))
    image: Mapped[str] = mapped_column(Text)
    host_port: Mapped[int] = mapped_column(Integer)
    containers: Mapped[list[str]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    healthy: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class ModuleHistoryRow(Base):
    """What one operation left: the digest it moved to (or tried to) and how it ended."""

    __tablename__ = "module_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    module: Mapped[str] = mapped_column(ForeignKey("modules.name"), index=True)
    digest: Mapped[str] = mapped_column(String(256))
    from_digest: Mapped[str | None] = mapped_column(String(71))
    at: Mapped[datetime] = mapped_column(DateTime)
    result: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    op_id: Mapped[str | None] = mapped_column(String(32))


class ModuleEventRow(Base):
    """One thing worth telling that happened to a module (most during an operation)."""

    __tablename__ = "module_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    module: Mapped[str] = mapped_column(ForeignKey("modules.name"), index=True)
    op_id: Mapped[str | None] = mapped_column(String(32), index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)


class ModuleOpRow(Base):
    """The journal: one deploy, update or rollback, its phase written before it is acted on."""

    __tablename__ = "module_ops"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    module: Mapped[str] = mapped_column(ForeignKey("modules.name"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    from_digest: Mapped[str | None] = mapped_column(String(71))
    to_digest: Mapped[str] = mapped_column(String(256))
    phase: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime)
    deadline_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    result: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    # What resume needs beyond the phase: the target's ref, the new and old replicas' names.
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


__all__ = ["ModuleEventRow", "ModuleHistoryRow", "ModuleOpRow", "ModuleReplicaRow",
           "ModuleRow"]
