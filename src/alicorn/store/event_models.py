"""The rebuild service's tables (created by migration 0006): events, rebuilds, watched sources.

Datetimes are naive UTC, as elsewhere in the database.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from alicorn.store.models import Base


class EventRow(Base):
    """One advisory that landed: new → planned → building → done | failed | skipped."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("advisory_id", "advisory_format", "advisory_digest",
                                       name="uq_events_advisory"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    advisory_id: Mapped[str] = mapped_column(String(256))
    advisory_format: Mapped[str] = mapped_column(String(32))
    advisory_digest: Mapped[str] = mapped_column(String(71))
    advisory_type: Mapped[str | None] = mapped_column(String(32))
    severity: Mapped[str | None] = mapped_column(String(32))
    cves: Mapped[list[str] | None] = mapped_column(JSON)
    source: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class RebuildRow(Base):
    """One rebuild of one image, shared by every event that needs it.

    planned → queued (build submitted) → done | failed | skipped.  ``parent_id`` is the
    rebuild of the image this one is layered on; it must be done before this one is queued.
    """

    __tablename__ = "rebuilds"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    image: Mapped[str] = mapped_column(String(256), index=True)     # recipe name
    old_build_id: Mapped[str | None] = mapped_column(String(32))
    old_digest: Mapped[str | None] = mapped_column(String(71))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("rebuilds.id"))
    build_id: Mapped[str | None] = mapped_column(ForeignKey("builds.id"))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    new_digest: Mapped[str | None] = mapped_column(String(71))
    state: Mapped[str] = mapped_column(String(16), index=True)
    tests: Mapped[str | None] = mapped_column(String(16))           # passed | failed | None
    gate: Mapped[str | None] = mapped_column(String(16))            # passed | failed | None
    reason: Mapped[str | None] = mapped_column(Text)
    advisories: Mapped[list[str] | None] = mapped_column(JSON)      # ids it must fix
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class EventRebuildRow(Base):
    __tablename__ = "event_rebuilds"

    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"), primary_key=True)
    rebuild_id: Mapped[str] = mapped_column(ForeignKey("rebuilds.id"), primary_key=True)


class WatchSourceRow(Base):
    """A repository or feed the service polls, and what it saw there last."""

    __tablename__ = "watch_sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))        # rpm-repo | debian-repo | feed
    url: Mapped[str] = mapped_column(Text, unique=True)
    origin: Mapped[str] = mapped_column(String(16))      # builds (found in them) | user
    digest: Mapped[str | None] = mapped_column(String(71))
    checked_at: Mapped[datetime | None] = mapped_column(DateTime)
    changed_at: Mapped[datetime | None] = mapped_column(DateTime)
    error: Mapped[str | None] = mapped_column(Text)


__all__ = ["EventRebuildRow", "EventRow", "RebuildRow", "WatchSourceRow"]
