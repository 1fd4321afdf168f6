"""Database tables. The database is the single source of truth for builds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class BuildRow(Base):
    __tablename__ = "builds"
    # Newest-first pages (migration 0008).
    __table_args__ = (Index("ix_builds_created_at_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)   # queued running done failed
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    argv: Mapped[list[str]] = mapped_column(JSON)
    submitter: Mapped[str] = mapped_column(String(128))
    source_kind: Mapped[str] = mapped_column(String(8))           # file | git
    source_url: Mapped[str | None] = mapped_column(Text)
    source_ref: Mapped[str | None] = mapped_column(String(256))
    source_commit: Mapped[str | None] = mapped_column(String(64))
    recipe_path: Mapped[str] = mapped_column(Text)
    recipe_name: Mapped[str | None] = mapped_column(String(128))
    recipe_digest: Mapped[str | None] = mapped_column(String(71))
    recipe_content: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    input_key: Mapped[str | None] = mapped_column(String(71), index=True)
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    digest: Mapped[str | None] = mapped_column(String(71), index=True)
    image_ref: Mapped[str | None] = mapped_column(Text)
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    cached_from: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(128))
    log_digest: Mapped[str | None] = mapped_column(String(71))
    published: Mapped[bool] = mapped_column(Boolean, default=False)
    record_digest: Mapped[str | None] = mapped_column(String(71))
    record_index: Mapped[int | None] = mapped_column(Integer)
    inputs_index: Mapped[int | None] = mapped_column(Integer)
    provenance_digest: Mapped[str | None] = mapped_column(String(71))
    # Why the build ran when the rebuild service asked for it: {"advisories": [...],
    # "events": [...], "rebuild": id, "previous_build": id, "previous_digest": sha256:...}.
    trigger: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    base_digest: Mapped[str | None] = mapped_column(String(71))   # a layered build's base
    # {"tests": "passed"|"failed"|"skipped"|None, "gate": ..., "fixed": ...}: the checks run
    # before publishing (details in the build's sealed files).
    checks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Migration 0008: the API token (its id) that submitted the build, and a cancel request
    # (when, by whom); the worker running the build stops at once when it sees one.
    submitted_token: Mapped[str | None] = mapped_column(String(16))
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime)
    cancel_requested_by: Mapped[str | None] = mapped_column(String(128))
    # Migration 0009 (scale-out): which attempt of its submission this build is (a worker
    # that died mid-build fails its attempt; the reaper submits the next one, retry_of ->
    # retried_as), the queue it was sent to, and the running worker's heartbeat.
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    retry_of: Mapped[str | None] = mapped_column(String(32))
    retried_as: Mapped[str | None] = mapped_column(String(32))
    queue: Mapped[str | None] = mapped_column(String(64))
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime)
    dispatches: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)

    packages: Mapped[list[PackageRow]] = relationship(
        back_populates="build", cascade="all, delete-orphan", order_by="PackageRow.id")


class PackageRow(Base):
    __tablename__ = "build_packages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"), index=True)
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(256), index=True)
    version: Mapped[str] = mapped_column(String(256))
    arch: Mapped[str] = mapped_column(String(32))
    source: Mapped[str | None] = mapped_column(String(256))
    checksum: Mapped[str | None] = mapped_column(String(71))
    purl: Mapped[str] = mapped_column(Text)

    build: Mapped[BuildRow] = relationship(back_populates="packages")


class BuildFileRow(Base):
    """A build's file kept in the database (migration 0009): written while the build runs,
    sealed (read-only, by trigger) with its SHA-256 when it ends."""

    __tablename__ = "build_files"

    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(71))
    sealed: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class SigningKeyRow(Base):
    """The public half of a builder's signing key (migration 0009)."""

    __tablename__ = "signing_keys"

    key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))          # ecdsa | gpg
    public: Mapped[str] = mapped_column(Text)
    created: Mapped[int] = mapped_column(BigInteger)
    retired: Mapped[int | None] = mapped_column(BigInteger)
    host: Mapped[str] = mapped_column(String(256))
    published_at: Mapped[datetime] = mapped_column(DateTime)
